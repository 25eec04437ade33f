#!/usr/bin/env python3
"""An independent verifier of panvault's audit evidence, written from
docs/audit-log.md alone (no panvault code): the hash chain of an export, the
checkpoint and prune-record signatures, and erasure receipts; a multi-node
export (v3): each node's chain, from its cut in the latest cluster prune
record, against every signed cluster checkpoint.

Usage:
    verify.py export PUBKEY EXPORT [KEPT_CHECKPOINTS]
    verify.py receipt PUBKEY RECEIPT

Exit 0: accepted. Exit 1: rejected (the reason on standard error).
Exit 2: usage. Needs Python 3 and the `cryptography` package.
"""
import calendar
import hashlib
import json
import re
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Reject(Exception):
    pass


GENESIS = bytes(32)
EVENT_TEXT_KEYS = [
    "actor", "actor_fingerprint", "action", "tenant", "token", "purpose",
    "outcome", "code", "request_id", "peer", "details",
]
EXPORT_KEYS = {
    "header": {"type", "format", "from_seq"},
    "prune": {"type", "id", "first_seq", "prev_hash", "checkpoint_id", "cutoff",
              "deleted", "time", "signature"},
    "checkpoint": {"type", "id", "seq", "head", "time", "signature"},
    "event": {"type", "seq", "time", "prev_hash", "hash"} | set(EVENT_TEXT_KEYS),
}
RECEIPT_KEYS = {"format", "subject_hash", "tenant", "tokens_erased", "time",
                "audit_seq", "signature"}

RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$")


def time_ns(text):
    """RFC 3339 -> Unix nanoseconds, exactly (fractions to the nanosecond)."""
    if not isinstance(text, str):
        raise Reject("a time is not a string")
    m = RFC3339.match(text)
    if not m:
        raise Reject(f"not an RFC 3339 time: {text!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if off not in ("Z", "z"):
        sign = 1 if off[0] == "+" else -1
        secs -= sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    ns = int((frac or "").ljust(9, "0"))
    return secs * 1_000_000_000 + ns


def unhex(text, n, what):
    if not isinstance(text, str) or len(text) != 2 * n or not re.fullmatch(r"[0-9a-fA-F]*", text):
        raise Reject(f"{what} is not {2 * n} hex digits")
    return bytes.fromhex(text)


def u64(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
        raise Reject(f"{what} is not an unsigned 64-bit integer")
    return struct.pack(">Q", v)


def i64(v):
    if not -(2**63) <= v < 2**63:
        raise Reject("a time is out of range")
    return struct.pack(">q", v)


def lp(data):
    """0x01 ‖ u32 big-endian length ‖ bytes (a non-NULL text value)."""
    return b"\x01" + struct.pack(">I", len(data)) + data


def read_pubkey(path):
    with open(path, encoding="utf-8") as f:
        words = f.read().split()
    if len(words) != 2 or words[0] != "panvault-audit-ed25519":
        raise Reject("the public key file is not 'panvault-audit-ed25519 <64 hex>'")
    return Ed25519PublicKey.from_public_bytes(unhex(words[1], 32, "the public key"))


def check_sig(key, sig_hex, message, what):
    sig = unhex(sig_hex, 64, f"the signature of {what}")
    try:
        key.verify(sig, message)
    except InvalidSignature:
        raise Reject(f"bad signature: {what}") from None


def checkpoint_message(c):
    return (b"panvault-audit checkpoint v1\x00" + u64(c["id"], "checkpoint id")
            + u64(c["seq"], "checkpoint seq") + unhex(c["head"], 32, "a head")
            + i64(time_ns(c["time"])))


def event_encoding(e):
    """Version 1 of the canonical encoding."""
    out = b"\x01" + u64(e["seq"], "seq") + i64(time_ns(e["time"]))
    for k in EVENT_TEXT_KEYS:
        v = e[k]
        if v is None:
            out += b"\x00"
        elif isinstance(v, str):
            out += lp(v.encode("utf-8"))
        else:
            raise Reject(f"event {e['seq']}: {k} is neither a string nor null")
    return out


def verify_export(key, path, kept=()):
    lines = []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                raise Reject(f"line {n} is not JSON") from None
            if not isinstance(obj, dict):
                raise Reject(f"line {n} is not an object")
            lines.append((n, obj))
    if not lines or lines[0][1].get("type") != "header":
        raise Reject("the first line is not the header")
    if lines[0][1].get("format") == "panvault-audit-export-v3":
        if kept:
            raise Reject("kept checkpoints are single-log checkpoints; not for a v3 export")
        return verify_cluster_export(key, lines)
    for n, obj in lines:
        if obj.get("type") not in EXPORT_KEYS:
            raise Reject(f"line {n} has no known type")
        if set(obj) != EXPORT_KEYS[obj["type"]]:
            raise Reject(f"line {n}: keys differ from the documented ones")
    header = lines[0][1]
    if header["format"] != "panvault-audit-export-v2":
        raise Reject("unknown export format")
    order = {"prune": 1, "checkpoint": 2, "event": 3}
    prunes, checkpoints, events = [], [], []
    last = 0
    for n, obj in lines[1:]:
        t = obj["type"]
        if t == "header" or order[t] < last:
            raise Reject(f"line {n}: sections out of order")
        last = order[t]
        {"prune": prunes, "checkpoint": checkpoints, "event": events}[t].append(obj)

    # Prune records and checkpoints: ids 1, 2, 3 ..., valid signatures.
    for i, p in enumerate(prunes, 1):
        if p["id"] != i:
            raise Reject(f"prune record ids are not 1, 2, 3 ... (found {p['id']} at {i})")
        msg = (b"panvault-audit prune v1\x00" + u64(p["id"], "id") + u64(p["first_seq"], "first_seq")
               + unhex(p["prev_hash"], 32, "prev_hash") + u64(p["checkpoint_id"], "checkpoint_id")
               + i64(time_ns(p["cutoff"])) + u64(p["deleted"], "deleted") + i64(time_ns(p["time"])))
        check_sig(key, p["signature"], msg, f"prune record #{p['id']}")
    for i, c in enumerate(checkpoints, 1):
        if c["id"] != i:
            raise Reject(f"checkpoint ids are not 1, 2, 3 ... (found {c['id']} at {i}): a checkpoint is missing")
        check_sig(key, c["signature"], checkpoint_message(c), f"checkpoint #{c['id']}")
    by_id = {c["id"]: c for c in checkpoints}
    for p in prunes:
        c = by_id.get(p["checkpoint_id"])
        if c is None or c["seq"] != p["first_seq"] - 1 or c["head"].lower() != p["prev_hash"].lower():
            raise Reject(f"prune record #{p['id']} does not match checkpoint #{p['checkpoint_id']}")

    # Kept checkpoints (held elsewhere): same key, consistent with the export.
    for k in kept:
        check_sig(key, k["signature"], checkpoint_message(k), f"kept checkpoint #{k['id']}")
        mine = by_id.get(k["id"])
        if mine is not None and checkpoint_message(mine) != checkpoint_message(k):
            raise Reject(f"kept checkpoint #{k['id']} differs from the export's: rolled back")
        if mine is None:
            raise Reject(f"kept checkpoint #{k['id']} is not in the export: truncated")

    # The chain.
    if prunes:
        start, prev = prunes[-1]["first_seq"], unhex(prunes[-1]["prev_hash"], 32, "prev_hash")
    else:
        start, prev = 1, GENESIS
    if header["from_seq"] > start:
        raise Reject("a partial export cannot be verified alone")
    heads = {start - 1: prev}
    seq = start
    for e in events:
        if e["seq"] != seq:
            raise Reject(f"expected event {seq}, found {e['seq']}: missing, inserted or reordered")
        if unhex(e["prev_hash"], 32, "prev_hash") != prev:
            raise Reject(f"event {seq}: prev_hash is not the previous event's hash")
        h = hashlib.sha256(prev + event_encoding(e)).digest()
        if h != unhex(e["hash"], 32, "hash"):
            raise Reject(f"event {seq}: hash does not match its contents (modified)")
        heads[seq] = h
        prev = h
        seq += 1
    last_seq = seq - 1
    for c in list(checkpoints) + list(kept):
        s = c["seq"]
        if s < start - 1:
            continue  # pruned: nothing left to compare
        if s > last_seq:
            raise Reject(f"checkpoint #{c['id']} covers seq {s} but the events end at {last_seq}: truncated")
        expected = GENESIS if s == 0 else heads[s]
        if unhex(c["head"], 32, "head") != expected:
            raise Reject(f"checkpoint #{c['id']}: the chain at seq {s} differs from the signed head (modified)")
    if events and not checkpoints:
        raise Reject("events but no checkpoint: checkpoint #1 is missing")
    return f"{len(events)} events, {len(checkpoints)} checkpoints, {len(prunes)} prune records"


# A log shared by several nodes (format v3): one chain per node, anchored by
# cluster checkpoints, each listing every registered node's head.
CLUSTER_KEYS = {
    "header": {"type", "format"},
    "node": {"type", "node", "registered"},
    "checkpoint": {"type", "node", "id", "time", "heads", "signature"},
    "prune": {"type", "id", "checkpoint_node", "checkpoint_id", "cuts", "cutoff", "deleted",
              "time", "signature"},
    "event": {"type", "node", "seq", "time", "prev_hash", "hash"} | set(EVENT_TEXT_KEYS),
}
NODE_NAME = re.compile(r"[a-z0-9._-]{1,64}")


def node_name(v, what):
    if not isinstance(v, str) or not NODE_NAME.fullmatch(v):
        raise Reject(f"{what} is not a node id (1 to 64 of a-z 0-9 . _ -)")
    return v


def heads_bytes(heads, what):
    """count u64 ‖ (lp(node) ‖ seq u64 ‖ head [32])..., in name order, one each."""
    if not isinstance(heads, list):
        raise Reject(f"{what}: its heads are not a list")
    names = []
    out = u64(len(heads), "count")
    for h in heads:
        if not isinstance(h, dict) or set(h) != {"node", "seq", "head"}:
            raise Reject(f"{what}: a head's keys differ from the documented ones")
        name = node_name(h["node"], "a head's node")
        names.append(name.encode("ascii"))
        out += lp(name.encode("ascii")) + u64(h["seq"], "a head's seq") + unhex(h["head"], 32, "a head")
    if names != sorted(set(names)):
        raise Reject(f"{what}: heads not in name order")
    return out, names


def cluster_checkpoint_message(c):
    """The signed bytes of a cluster checkpoint; its heads must be in name order."""
    signer = node_name(c["node"], "a checkpoint's node")
    what = f"node {signer}: checkpoint #{c['id']}"
    heads, names = heads_bytes(c["heads"], what)
    if signer.encode("ascii") not in names:
        raise Reject(f"{what}: heads without the signer")
    return (b"panvault-audit cluster-checkpoint v1\x00" + lp(signer.encode("ascii"))
            + u64(c["id"], "checkpoint id") + i64(time_ns(c["time"])) + heads)


def cluster_prune_message(p):
    """The signed bytes of a cluster prune record (its cuts as a checkpoint's heads)."""
    signer = node_name(p["checkpoint_node"], "a prune record's checkpoint_node")
    cuts, _ = heads_bytes(p["cuts"], f"prune record #{p['id']}")
    return (b"panvault-audit cluster-prune v1\x00" + u64(p["id"], "prune record id")
            + lp(signer.encode("ascii")) + u64(p["checkpoint_id"], "checkpoint id")
            + i64(time_ns(p["cutoff"])) + u64(p["deleted"], "deleted")
            + i64(time_ns(p["time"])) + cuts)


def same_heads(a, b):
    return [(h["node"], h["seq"], h["head"].lower()) for h in a] == \
        [(h["node"], h["seq"], h["head"].lower()) for h in b]


def verify_cluster_export(key, lines):
    order = {"node": 1, "checkpoint": 2, "prune": 3, "event": 4}
    registered, checkpoints, prunes, events = [], [], [], {}
    last, last_key = 0, None
    for n, obj in lines[1:]:
        t = obj.get("type")
        if t not in order:
            raise Reject(f"line {n} has no known type")
        if set(obj) != CLUSTER_KEYS[t]:
            raise Reject(f"line {n}: keys differ from the documented ones")
        if order[t] < last:
            raise Reject(f"line {n}: sections out of order")
        if order[t] > last:
            last, last_key = order[t], None
        name = "" if t == "prune" else node_name(obj["node"], f"line {n}: the node")
        key_ = (name.encode("ascii"), obj.get("id", obj.get("seq", 0)))
        if last_key is not None and key_ <= last_key:
            raise Reject(f"line {n}: records out of order or repeated")
        last_key = key_
        if t == "node":
            time_ns(obj["registered"])
            registered.append(name)
        elif t == "checkpoint":
            checkpoints.append(obj)
        elif t == "prune":
            prunes.append(obj)
        else:
            events.setdefault(name, []).append(obj)

    # Every checkpoint's signature; each signer's ids 1, 2, 3 ...
    expected = {}
    marks = {}
    for c in checkpoints:
        check_sig(key, c["signature"], cluster_checkpoint_message(c), f"node {c['node']}'s checkpoint #{c['id']}")
        want = expected.get(c["node"], 1)
        if c["id"] != want:
            raise Reject(f"node {c['node']}: its checkpoint #{want} is missing")
        expected[c["node"]] = want + 1
        for h in c["heads"]:
            marks.setdefault(h["node"], []).append((h["seq"], unhex(h["head"], 32, "a head"), c["node"], c["id"]))

    # Prune records: ids 1, 2, 3 ..., signed, each repeating the heads of the
    # checkpoint it names (never deleted), never behind an earlier cut.
    by_key = {(c["node"], c["id"]): c for c in checkpoints}
    cuts = {}
    for i, p in enumerate(prunes, 1):
        if p["id"] != i:
            raise Reject(f"prune record #{i} is missing")
        check_sig(key, p["signature"], cluster_prune_message(p), f"prune record #{p['id']}")
        c = by_key.get((p["checkpoint_node"], p["checkpoint_id"]))
        if c is None:
            raise Reject(f"node {p['checkpoint_node']}: its checkpoint #{p['checkpoint_id']}, whose "
                         f"heads prune record #{p['id']} names as the cuts, is missing")
        if not same_heads(c["heads"], p["cuts"]):
            raise Reject(f"prune record #{p['id']}: its cuts are not the heads of node "
                         f"{p['checkpoint_node']}'s checkpoint #{p['checkpoint_id']}")
        named = {h["node"]: h for h in p["cuts"]}
        for name, (s, _) in cuts.items():
            if name not in named or named[name]["seq"] < s:
                raise Reject(f"prune record #{p['id']}: it goes back on node {name}'s earlier cut")
        for h in p["cuts"]:
            cuts[h["node"]] = (h["seq"], unhex(h["head"], 32, "a cut's head"))

    # Each node's chain from its cut, against every head any checkpoint states for it.
    total, tail = 0, 0
    for name in sorted(set(registered) | set(marks) | set(events), key=lambda s: s.encode("ascii")):
        start, prev = cuts.get(name, (0, GENESIS))
        heads, seq = {start: prev}, start + 1
        for e in events.get(name, []):
            if e["seq"] != seq:
                raise Reject(f"node {name}: expected event {seq}, found {e['seq']}: missing, inserted or reordered")
            if unhex(e["prev_hash"], 32, "prev_hash") != prev:
                raise Reject(f"node {name}: event {seq}: prev_hash is not the previous event's hash")
            h = hashlib.sha256(prev + event_encoding(e)).digest()
            if h != unhex(e["hash"], 32, "hash"):
                raise Reject(f"node {name}: event {seq}: hash does not match its contents (modified)")
            heads[seq] = h
            prev = h
            seq += 1
        last_seq = seq - 1
        mine = marks.get(name, [])
        for s, head, signer, cid in mine:
            if s < start:
                continue  # pruned: nothing left to compare
            if s > last_seq:
                raise Reject(f"node {name}: node {signer}'s checkpoint #{cid} names its event {s}, "
                             f"but its events end at {last_seq}: truncated or deleted")
            if heads[s] != head:
                raise Reject(f"node {name}: the chain at seq {s} differs from the head signed in "
                             f"node {signer}'s checkpoint #{cid} (modified)")
        if last_seq and not mine:
            raise Reject(f"node {name}: events but no checkpoint names the node")
        if name in registered and not last_seq:
            raise Reject(f"node {name}: registered, but its chain holds no event")
        total += last_seq - start
        tail += last_seq - max((s for s, *_ in mine if s >= start), default=start)
    nodes = len(set(registered) | set(marks) | set(events))
    return (f"{total} events on {nodes} nodes, {len(checkpoints)} checkpoints, "
            f"{len(prunes)} prune records, {tail} unanchored")


def read_kept(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for text in f:
            text = text.strip()
            if not text:
                continue
            if text.startswith("{"):
                obj = json.loads(text)
                if obj.get("format") != "panvault-audit-checkpoint-v1":
                    raise Reject("a kept checkpoint has an unknown format")
                out.append(obj)
            else:
                words = text.split()
                if words[:2] != ["panvault-audit-checkpoint", "v1"] or len(words) != 7:
                    raise Reject("a kept checkpoint line is not in the text form")
                kv = dict(w.split("=", 1) for w in words[2:])
                out.append({"id": int(kv["id"]), "seq": int(kv["seq"]), "head": kv["head"],
                            "time": kv["time"], "signature": kv["sig"]})
    return out


def verify_receipt(key, path):
    with open(path, encoding="utf-8") as f:
        r = json.load(f)
    if isinstance(r, dict) and "format" not in r and "receipt" in r:
        r = r["receipt"]
    if not isinstance(r, dict):
        raise Reject("the receipt is not an object")
    # v1: the base keys; v2: + engine, residue; v3: + audit_node as well.
    versions = {
        "panvault-erasure-receipt-v1": (1, RECEIPT_KEYS),
        "panvault-erasure-receipt-v2": (2, RECEIPT_KEYS | {"engine", "residue"}),
        "panvault-erasure-receipt-v3": (3, RECEIPT_KEYS | {"engine", "residue", "audit_node"}),
    }
    if r.get("format") not in versions:
        raise Reject("unknown receipt format")
    version, keys = versions[r["format"]]
    if set(r) != keys:
        raise Reject("the receipt's keys differ from the documented ones")
    if not isinstance(r["subject_hash"], str) or not isinstance(r["tenant"], str):
        raise Reject("subject_hash and tenant must be strings")
    domain = b"panvault-audit erasure-receipt v%d\x00" % version
    msg = (domain + lp(r["subject_hash"].encode("utf-8"))
           + lp(r["tenant"].encode("utf-8")) + u64(r["tokens_erased"], "tokens_erased")
           + i64(time_ns(r["time"])) + u64(r["audit_seq"], "audit_seq"))
    if version >= 2:
        if not isinstance(r["engine"], str) or not isinstance(r["residue"], str):
            raise Reject("engine and residue must be strings")
        msg += lp(r["engine"].encode("utf-8")) + lp(r["residue"].encode("utf-8"))
    event = f"audit event {r['audit_seq']}"
    if version >= 3:
        node = node_name(r["audit_node"], "the receipt's audit_node")
        msg += lp(node.encode("utf-8"))
        event += f" of node {node}"
    check_sig(key, r["signature"], msg, "the erasure receipt")
    return f"receipt for {event}, {r['tokens_erased']} tokens erased"


def main(argv):
    try:
        if len(argv) in (4, 5) and argv[1] == "export":
            kept = read_kept(argv[4]) if len(argv) == 5 else ()
            what = verify_export(read_pubkey(argv[2]), argv[3], kept)
        elif len(argv) == 4 and argv[1] == "receipt":
            what = verify_receipt(read_pubkey(argv[2]), argv[3])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Reject, KeyError, ValueError, TypeError) as e:
        print(f"REJECTED: {type(e).__name__ if not isinstance(e, Reject) else ''}{e}", file=sys.stderr)
        return 1
    print(f"ACCEPTED: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

//! The canonical encoding of an event, the chain hash, and small hex helpers.
//!
//! Version 1 of the encoding, hashed as `SHA-256(prev_hash ‖ encoding)`:
//!
//! ```text
//! 0x01                      format version
//! seq       u64 big-endian
//! time_ns   i64 big-endian  (Unix time in nanoseconds, UTC)
//! 11 text fields, in this order:
//!   actor, actor_fp, action, tenant, token, purpose,
//!   outcome, code, request_id, peer, details
//! each encoded as 0x00 (NULL) or 0x01 ‖ u32 big-endian byte length ‖ UTF-8 bytes
//! ```
//!
//! The encoding is computed over the column values exactly as stored, so
//! verification needs no interpretation of the values and any change to any
//! stored byte changes the hash.
use std::fmt;

use ring::digest;

/// Version byte that starts every encoded event.
pub const ENCODING_VERSION: u8 = 1;

/// A SHA-256 value of the chain (an event hash, a checkpoint head).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the very first event: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChainHash> {
        hex_decode_array(s).map(ChainHash)
    }

    /// From a stored blob; `None` unless it is exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<ChainHash> {
        <[u8; 32]>::try_from(b).ok().map(ChainHash)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", hex_encode(&self.0))
    }
}

/// Starts an encoding at the end of `buf`: version, seq, time.
pub(crate) fn begin(buf: &mut Vec<u8>, seq: u64, time_ns: i64) {
    buf.push(ENCODING_VERSION);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&time_ns.to_be_bytes());
}

/// Appends one text field (NULL or a string) to an encoding.
///
/// Lengths above `u32::MAX` cannot be stored by the appender (fields are
/// limited far below); should one be read from a database, its length is
/// saturated, which only makes the row fail verification.
pub(crate) fn push_text(buf: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => buf.push(0),
        Some(bytes) => {
            let [a, b, c, d] = u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes();
            buf.extend_from_slice(&[1, a, b, c, d]);
            buf.extend_from_slice(bytes);
        }
    }
}

/// `SHA-256(prev ‖ encoding)`.
pub(crate) fn chain_hash(prev: &ChainHash, encoding: &[u8]) -> ChainHash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&prev.0);
    ctx.update(encoding);
    to_hash(ctx.finish())
}

/// The hash of an encoding whose `seq` is replaced by `seq` (used to find where
/// a displaced row came from). `encoding` must be a full encoding.
pub(crate) fn chain_hash_with_seq(prev: &ChainHash, seq: u64, encoding: &[u8]) -> ChainHash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&prev.0);
    ctx.update(&[ENCODING_VERSION]);
    ctx.update(&seq.to_be_bytes());
    ctx.update(encoding.get(9..).unwrap_or_default());
    to_hash(ctx.finish())
}

fn to_hash(d: digest::Digest) -> ChainHash {
    let mut out = [0u8; 32];
    let bytes = d.as_ref();
    if bytes.len() == out.len() {
        out.copy_from_slice(bytes);
    }
    ChainHash(out)
}

/// SHA-256 of arbitrary bytes, as hex (used for report digests in details).
pub fn sha256_hex(data: &[u8]) -> String {
    hex_encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// Lower-case hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(d));
            }
        }
    }
    s
}

/// Decodes hex (either case) into exactly `N` bytes.
pub(crate) fn hex_decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return None,
        };
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Appends a length-prefixed byte string to a signed message: `0x01 ‖ u32
/// big-endian length ‖ bytes`, the encoding of a non-NULL text field (what
/// `docs/audit-log.md` calls `lp`).
pub(crate) fn push_lp(buf: &mut Vec<u8>, bytes: &[u8]) {
    push_text(buf, Some(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 4] = [0x00, 0xab, 0x10, 0xff];
        assert_eq!(hex_encode(&bytes), "00ab10ff");
        assert_eq!(hex_decode_array::<4>("00AB10ff"), Some(bytes));
        assert_eq!(hex_decode_array::<4>("00ab10f"), None);
        assert_eq!(hex_decode_array::<4>("00ab10fg"), None);
    }

    #[test]
    fn null_and_empty_differ() {
        let mut a = Vec::new();
        push_text(&mut a, None);
        let mut b = Vec::new();
        push_text(&mut b, Some(b""));
        assert_ne!(a, b);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // ("ab", "c") and ("a", "bc") must encode differently.
        let mut a = Vec::new();
        push_text(&mut a, Some(b"ab"));
        push_text(&mut a, Some(b"c"));
        let mut b = Vec::new();
        push_text(&mut b, Some(b"a"));
        push_text(&mut b, Some(b"bc"));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_with_seq_matches_plain_hash() {
        let mut buf = Vec::new();
        begin(&mut buf, 7, 1);
        push_text(&mut buf, Some(b"x"));
        let prev = ChainHash([3; 32]);
        let h = chain_hash(&prev, &buf);
        assert_eq!(chain_hash_with_seq(&prev, 7, &buf), h);
        assert_ne!(chain_hash_with_seq(&prev, 8, &buf), h);
    }
}

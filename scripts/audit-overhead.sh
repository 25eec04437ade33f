#!/usr/bin/env bash
# What the audit log costs: the same code built twice, as it stands and from a
# scratch copy with scripts/unaudited.patch applied (no event is written; reads
# skip their writer job), then run alternately on the same store, tokenize and
# detokenize, ROUNDS times each. Prints every run and the medians.
#
#   scripts/audit-overhead.sh lib  DIR [ROUNDS=3] [SECONDS=10]
#       the library, through vault/examples/probe.rs with 32 callers. DIR is a probe
#       store; make one with
#       cargo run --release -p panvault-vault --example probe -- DIR 1000000 32 1
#   scripts/audit-overhead.sh http CONFIG PASSFILE TOKENS [ROUNDS=3] [SECONDS=10]
#       the HTTP API, through `panvault serve` and `panvault bench` at 64
#       connections (the benchmark of the API issue). CONFIG is a quickstart
#       configuration with the clients storefront and payments, PASSFILE its
#       passphrase file, TOKENS a tokens file written by `panvault bench --preload N
#       --tokens-file TOKENS`.
#   OPS=detokenize (or tokenize) measures only that operation.
#
# The unaudited build exists only in a temporary git worktree (deleted at the end)
# and in target/unaudited (kept, so the next run builds incrementally); it never
# ships. The first run builds the dependencies a second time (a few minutes). Run
# it on a quiet machine: a busy core moves the figures more than the audit log does.
set -euo pipefail

usage() { sed -n '7,17p' "$0" >&2; exit 2; }
mode=${1:-}
case "$mode" in
    lib) [ $# -ge 2 ] || usage; dir=$2; rounds=${3:-3}; secs=${4:-10} ;;
    http) [ $# -ge 4 ] || usage; config=$2; passfile=$3; tokens=$4; rounds=${5:-3}; secs=${6:-10} ;;
    *) usage ;;
esac
ops=${OPS:-tokenize detokenize} # OPS=detokenize measures only that
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
wt="$work/unaudited"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Builds tree $1 into target dir $2 and copies the binaries to $work/*-$3.
# Separate target directories: cargo names a workspace member's artifacts by its
# path relative to the workspace, so two checkouts sharing one target directory
# would take each other's builds for fresh.
build() {
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --quiet --release \
        -p panvault-vault --example probe -p panvault-cli --bin panvault)
    cp "$2/release/examples/probe" "$work/probe-$3"
    cp "$2/release/panvault" "$work/panvault-$3"
}

echo "building the unaudited variant (HEAD + uncommitted changes + scripts/unaudited.patch)"
git -C "$repo" worktree add --quiet --detach "$wt" HEAD
(cd "$repo" && git diff HEAD) | (cd "$wt" && git apply --allow-empty)
(cd "$wt" && git apply "$repo/scripts/unaudited.patch")
build "$wt" "$repo/target/unaudited" unaudited
echo "building the audited variant (the code as it stands)"
build "$repo" "$repo/target" audited

# One measurement: prints requests/s of $op with variant $variant.
measure_lib() {
    "$work/probe-$2" "$dir" 0 32 "$secs" "$1" 2>/dev/null | tail -n 1 | sed -E 's/.*= ([0-9]+)\/s$/\1/'
}
measure_http() {
    local op=$1 variant=$2 log="$work/serve.log" client=storefront extra=()
    "$work/panvault-$variant" serve --allow-noncompliant --config "$config" \
        --passphrase-file "$passfile" >/dev/null 2>"$log" &
    server=$!
    # A big store takes a while to open (serve runs a full integrity check).
    for _ in $(seq 1 3000); do
        grep -q "panvault: serving" "$log" && break
        kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    grep -q "panvault: serving" "$log" || { echo "server not ready after 300 s" >&2; exit 1; }
    if [ "$op" = detokenize ]; then
        client=payments
        extra=(--preload-client storefront --tokens-file "$tokens")
    fi
    "$work/panvault-$variant" bench --config "$config" --client "$client" --op "$op" \
        --connections 64 --duration "${secs}s" "${extra[@]}" 2>/dev/null |
        awk -v op="$op" '$1 == op { print $4 } $1 == "errors" && $2 != "0" { print "errors: " $0 > "/dev/stderr" }'
    [ "${PIPESTATUS[0]}" -eq 0 ] || echo "bench failed" >&2
    kill -TERM "$server"
    wait "$server" || true
    server=""
}

[ "$rounds" -ge 1 ] || { echo "built (ROUNDS=0: nothing measured)"; exit 0; }
declare -A results
for round in $(seq 1 "$rounds"); do
    for op in $ops; do
        for variant in audited unaudited; do
            rate=$("measure_$mode" "$op" "$variant")
            echo "round $round  $op  $variant  $rate/s"
            results[$op-$variant]+="$rate "
        done
    done
done

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
for op in $ops; do
    a=$(median "${results[$op-audited]}")
    u=$(median "${results[$op-unaudited]}")
    awk -v op="$op" -v a="$a" -v u="$u" -v m="$mode" \
        'BEGIN { printf "%s %-10s median audited %.0f/s, unaudited %.0f/s: the audit log costs %.1f%%\n", m, op, a, u, (u - a) * 100 / u }'
done

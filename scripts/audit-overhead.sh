#!/usr/bin/env bash
# What the audit log costs the library: the throughput probe (vault/examples/probe.rs)
# built twice, as the code stands and from a scratch copy with scripts/unaudited.patch
# applied (no event is written; reads skip their writer job), then run alternately on
# the same store, tokenize and detokenize, ROUNDS times each.
#
#   scripts/audit-overhead.sh DIR [ROUNDS=3] [SECONDS=10] [CALLERS=32]
#
# DIR is a probe store; make one with
#   cargo run --release -p panvault-vault --example probe -- DIR 1000000 32 1
# The unaudited build exists only in a temporary git worktree (deleted at the end)
# and in target/unaudited (kept, so the next run builds incrementally); it never
# ships. The first run builds the dependencies a second time (a few minutes). Run it on a quiet machine: a busy core moves the figures more
# than the audit log does.
set -euo pipefail

dir=${1:?usage: scripts/audit-overhead.sh DIR [ROUNDS] [SECONDS] [CALLERS]}
rounds=${2:-3}
secs=${3:-10}
callers=${4:-32}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
wt="$work/unaudited"
cleanup() {
    git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

build() { # build the probe of tree $1 into target dir $2 and copy it to $3
    # Separate target directories: cargo names a workspace member's artifacts by its
    # path relative to the workspace, so two checkouts sharing one target directory
    # would take each other's builds for fresh.
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --quiet --release -p panvault-vault --example probe)
    cp "$2/release/examples/probe" "$3"
}

echo "building the unaudited probe (HEAD + your uncommitted changes + scripts/unaudited.patch)"
git -C "$repo" worktree add --quiet --detach "$wt" HEAD
(cd "$repo" && git diff HEAD) | (cd "$wt" && git apply --allow-empty)
(cd "$wt" && git apply "$repo/scripts/unaudited.patch")
build "$wt" "$repo/target/unaudited" "$work/probe-unaudited"
echo "building the audited probe (the code as it stands)"
build "$repo" "$repo/target" "$work/probe-audited"

declare -A results
for round in $(seq 1 "$rounds"); do
    for op in tokenize detokenize; do
        for variant in audited unaudited; do
            line=$("$work/probe-$variant" "$dir" 0 "$callers" "$secs" "$op" 2>/dev/null | tail -n 1)
            rate=$(sed -E 's/.*= ([0-9]+)\/s$/\1/' <<<"$line")
            echo "round $round  $op  $variant  $rate/s"
            results[$op-$variant]+="$rate "
        done
    done
done

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
for op in tokenize detokenize; do
    a=$(median "${results[$op-audited]}")
    u=$(median "${results[$op-unaudited]}")
    awk -v op="$op" -v a="$a" -v u="$u" \
        'BEGIN { printf "%-10s median audited %.0f/s, unaudited %.0f/s: the audit log costs %.1f%%\n", op, a, u, (u - a) * 100 / u }'
done

#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 20) on its committed
# seed corpus, if cargo-fuzz is installed; otherwise says fuzzing was skipped.
# Called from .ci/run, which installs cargo-fuzz first if it is missing.
#
# Exit status: 0 when every target ran clean, or when fuzzing could not run here
# (no cargo-fuzz, a toolchain that cannot build the targets: said, and skipped);
# 1 when a target found something (a crash, leak, timeout or out-of-memory input
# is left in fuzz/artifacts/<target>/). .ci/run fails on 1.
#
# cargo-fuzz needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them. FUZZ_SANITIZER=address (the default) needs the ASan runtime; set
# FUZZ_SANITIZER=none where it is missing (libFuzzer's coverage still works).
set -euo pipefail

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz not installed, fuzzing skipped (cargo install cargo-fuzz --locked)"
    exit 0
fi

seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

targets=$(cargo fuzz list)
echo "fuzz: building targets (sanitizer: $sanitizer)"
if ! cargo fuzz build -O -a --sanitizer "$sanitizer"; then
    echo "fuzz: the targets do not build with this toolchain, fuzzing skipped"
    exit 0
fi

for t in $targets; do
    echo "fuzz: $t for ${seconds}s"
    # Fuzz into a scratch copy so CI never changes the committed corpus.
    scratch=$(mktemp -d)
    cp -R "corpus/$t/." "$scratch/"
    log="$scratch.log"
    before=$(find "artifacts/$t" -type f 2>/dev/null | sort || true)
    status=0
    cargo fuzz run -O -a --sanitizer "$sanitizer" "$t" "$scratch" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
    fi
    rm -f "$log"
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        after=$(find "artifacts/$t" -type f 2>/dev/null | sort || true)
        if [ "$after" != "$before" ]; then
            echo "fuzz: $t FOUND A BUG (exit $status); reproducer in fuzz/artifacts/$t/:"
            comm -13 <(echo "$before") <(echo "$after")
            exit 1
        fi
        echo "fuzz: $t could not run here (exit $status, no finding), fuzzing skipped"
        exit 0
    fi
done
echo "fuzz: all targets ran ${seconds}s without a finding"

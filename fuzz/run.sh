#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and prints one
# line per target. Needs a nightly toolchain (`rustup toolchain list`) and
# installs cargo-fuzz when it is missing. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
status=0
for target in $(cargo +nightly fuzz list); do
    log="target/$target.log"
    mkdir -p target
    if cargo +nightly fuzz run "$target" -- -max_total_time="$secs" >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1)
        echo "$target: ok, ${runs:-?} in ${secs} s"
    else
        echo "$target: FAILED, see fuzz/$log and fuzz/artifacts/$target"
        status=1
    fi
done
exit "$status"

#!/usr/bin/env bash
# End-to-end cost of each layer of the server stack (manual, not run in CI).
# examples/hello_server.rs is served in each MODE in turn, pinned to one core
# (taskset -c 0) and loaded by wrk pinned to the other (taskset -c 1), so the
# server's core is the bottleneck and 1e6 / (req/s) is the server's time per
# request in µs. Prints, per mode, the median over ROUNDS rounds and the
# difference from `bare`. Needs 2 cores, wrk (installed as e2e_wrk.sh does)
# and taskset; bounded: every server exits by itself after DURATION + 10 s.
#
# Usage: benches/e2e_layers.sh   (env: DURATION=5 ROUNDS=3 PORT=18180
#        MODES="bare handle_errors request_id tower_request_id echo_header
#               drain deadline limit stacked")
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18180}
MODES=${MODES:-bare handle_errors request_id tower_request_id echo_header drain deadline limit stacked}

if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk
fi
cargo build --release --example hello_server
BIN="${CARGO_TARGET_DIR:-target}/release/examples/hello_server"

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "port $PORT is already in use; set PORT" >&2
            exit 1
        fi
        taskset -c 0 "$BIN" "$mode" "$PORT" $(( DURATION + 10 )) >/dev/null &
        pid=$!
        up=0
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then up=1; break; fi
            sleep 0.1
        done
        if [ "$up" -ne 1 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "hello_server $mode did not start on port $PORT" >&2
            exit 1
        fi
        rps=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/" |
            awk '/^Requests\/sec:/ {print $2}')
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -z "$rps" ]; then
            echo "wrk printed no req/s for $mode" >&2
            exit 1
        fi
        RESULTS[$mode]+="$rps "
        echo "round $round $mode $rps req/s" >&2
    done
done

median() { printf '%s\n' $1 | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
base=$(median "${RESULTS[bare]:-}")
printf '%-14s %10s %12s %10s\n' mode "req/s" "µs/request" "Δ µs"
for mode in $MODES; do
    rps=$(median "${RESULTS[$mode]}")
    awk -v m="$mode" -v r="$rps" -v b="$base" 'BEGIN {
        if (r <= 0) { printf "%-14s %10s\n", m, "no requests"; exit }
        printf "%-14s %10.0f %12.3f %+10.3f\n", m, r, 1e6 / r, (b > 0) ? 1e6 / r - 1e6 / b : 0 }'
done

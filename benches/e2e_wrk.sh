#!/usr/bin/env bash
# End-to-end load bench (manual, not run in CI): an axum hello-world served
# bare and behind rampart's full server stack (request id → handle errors →
# cancel scope → deadline from headers → concurrency limit), see
# examples/hello_server.rs, each loaded in turn by wrk on loopback:
#   wrk -t2 -c64 -d10s --latency http://127.0.0.1:PORT/
# Alternates bare and stacked ROUNDS times and prints the median req/s
# and p99 of each and the ratios stacked/bare.
# Installs wrk with apt-get when missing (Debian/Ubuntu; uses sudo when not root).
# Bounded in time: every server exits by itself after SERVER_SECS.
#
# Usage: benches/e2e_wrk.sh      (env: DURATION=10s CONNS=64 THREADS=2 ROUNDS=3
#                                       BARE_PORT=18080 STACKED_PORT=18081
#                                       STACKED_MODE=stacked; `stacked_service`
#                                       puts the same stack around the whole
#                                       router instead of `Router::layer`)
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
BARE_PORT=${BARE_PORT:-18080}
STACKED_PORT=${STACKED_PORT:-18081}
STACKED_MODE=${STACKED_MODE:-stacked}
# Seconds each server lives at most: the load plus start-up and slack.
SERVER_SECS=$(( ${DURATION%s} + 20 ))

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing it with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk
fi

echo "building examples/hello_server (release)"
cargo build --release --example hello_server
BIN="${CARGO_TARGET_DIR:-target}/release/examples/hello_server"

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

# wait_port PORT: until the server answers (10 s at most).
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

# to_ms "1.23ms" | "456.00us" | "1.02s" → milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000
        else if (v ~ /ms$/) n = n
        else if (v ~ /m$/) n = n * 60000
        else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n
    }'
}

# run MODE PORT: serve, load, set RESULT to "REQS P99_MS".
run() {
    local mode=$1 port=$2 out
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use; set BARE_PORT / STACKED_PORT" >&2
        exit 1
    fi
    "$BIN" "$mode" "$port" "$SERVER_SECS" >/dev/null &
    PIDS+=("$!")
    wait_port "$port"
    out=$(timeout $(( SERVER_SECS + 10 )) \
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
    echo "---- $mode ----" >&2
    echo "$out" >&2
    local reqs p99 errs
    reqs=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    errs=$(echo "$out" | awk '/Non-2xx or 3xx responses:/ {print $5}')
    if [ -n "$errs" ]; then echo "$mode: $errs non-2xx responses" >&2; fi
    kill "${PIDS[-1]}" 2>/dev/null || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    if [ -z "$reqs" ] || [ -z "$p99" ]; then echo "$mode: could not read wrk output" >&2; exit 1; fi
    RESULT="$reqs $(to_ms "$p99")"
}

# Alternate bare and stacked ROUNDS times, so a machine whose speed drifts
# (other jobs) touches both alike; report each one's median.
BARE=()
STACKED=()
for round in $(seq 1 "$ROUNDS"); do
    run bare "$BARE_PORT"
    BARE+=("$RESULT")
    run "$STACKED_MODE" "$STACKED_PORT"
    STACKED+=("$RESULT")
    echo "round $round: bare ${BARE[-1]}, stacked ${STACKED[-1]} (req/s, p99 ms)" >&2
done
# median FIELD "a b" "c d" ...: the median of field FIELD (1 = req/s, 2 = p99).
median() {
    local field=$1
    shift
    printf '%s\n' "$@" | awk -v f="$field" '{print $f}' | sort -g |
        awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
BARE_RPS=$(median 1 "${BARE[@]}")
BARE_P99=$(median 2 "${BARE[@]}")
STACK_RPS=$(median 1 "${STACKED[@]}")
STACK_P99=$(median 2 "${STACKED[@]}")

echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, loopback, median of $ROUNDS alternating rounds"
printf '%-8s %12s %10s\n' "server" "req/s" "p99 ms"
printf '%-8s %12s %10s\n' "bare" "$BARE_RPS" "$BARE_P99"
printf '%-8s %12s %10s\n' "stacked" "$STACK_RPS" "$STACK_P99"
awk -v br="$BARE_RPS" -v sr="$STACK_RPS" -v bp="$BARE_P99" -v sp="$STACK_P99" 'BEGIN {
    printf "stacked/bare: throughput %.1f %% (target >= 95 %%), p99 %.2fx (target <= 1.10x)\n",
        100 * sr / br, sp / bp
}'

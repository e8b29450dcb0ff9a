#!/usr/bin/env python3
"""What the `metrics` feature costs each rampart layer, in instructions per request.

Usage: python3 benches/metrics_cost.py [BENCH:GROUP/PARAM ...]

For each case (default: the current-thread, ready-inner, 1-caller case of every
layer's bench, and the yield case where the layer waits), this builds the bench
binary twice -- without and with the facade's `metrics` feature -- and runs the
`rampart` id in the benches' probe mode (RAMPART_BENCH_PROBE) under
`valgrind --tool=callgrind` at n = 1000 and n = 3000 requests (50 000 and 150 000 with a recorder).
Instructions per request = (I(hi) - I(lo)) / (hi - lo), which cancels
set-up costs. Three
columns:
  off        the feature off (the default build);
  on         the feature on, no recorder installed (handles are no-ops);
  recorder   the feature on with metrics-exporter-prometheus's recorder
             installed before the layers are built (RAMPART_BENCH_RECORDER=1).
Deltas are against `off`. Needs valgrind (apt-get install valgrind).
"""
import json, os, subprocess, sys, tempfile

DEFAULT = [
    "timeout:timeout/ct/ready/1",
    "timeout:timeout/ct/yield/1",
    "limit:limit/ct/ready/1",
    "limit:limit/ct/yield/64",
    "retry:retry/ct/ready/1",
    "request_id:request_id_accepted/ct/ready/1",
    "cancel:cancel/ct/ready/1",
    "queue:queue/ct/ready/1",
    "rate:rate/ct/ready/1",
    "sync:keyed_lock/ct/ready/1",
    "sync:coalesce/ct/ready/1",
    "fanout:fanout/ct/ready/1000",
    "breaker:breaker/ct/ready/1",
    "stack:stack/ct/ready/1",
]


def exe(bench, features):
    cmd = ["cargo", "bench", "--bench", bench, "--no-run", "--message-format=json"]
    if features:
        cmd += ["--features", features]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("executable") and "bench" in (m.get("target") or {}).get("kind", []):
            return m["executable"]
    raise SystemExit(f"no executable for bench {bench}")


def instructions(path, case, n, tmp, recorder):
    out = os.path.join(tmp, "cg.out")
    env = dict(os.environ, RAMPART_BENCH_PROBE=case, RAMPART_BENCH_PROBE_N=str(n))
    env.pop("RAMPART_BENCH_RECORDER", None)
    if recorder:
        env["RAMPART_BENCH_RECORDER"] = "1"
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}", path],
        env=env, capture_output=True, text=True)
    if "PROBE" not in p.stderr:
        return None
    for line in open(out):
        if line.startswith("summary:"):
            return int(line.split()[1])
    return None


def per_request(path, case, tmp, recorder=False):
    # With a recorder the first requests also fill the exporter's histogram
    # buckets and maps; larger runs make the difference stable to the
    # instruction.
    n_lo, n_hi = (50000, 150000) if recorder else (1000, 3000)
    lo = instructions(path, case, n_lo, tmp, recorder)
    hi = instructions(path, case, n_hi, tmp, recorder)
    if lo is None or hi is None:
        return None
    return (hi - lo) / float(n_hi - n_lo)


def main():
    cases = sys.argv[1:] or DEFAULT
    print("| case (rampart id) | off | on, no recorder | on, Prometheus recorder |")
    print("|---|---:|---:|---:|")
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in cases:
            bench, rest = spec.split(":", 1)
            group, param = rest.split("/", 1)
            case = f"{group}/rampart/{param}"
            off = per_request(exe(bench, ""), case, tmp)
            on_exe = exe(bench, "metrics")
            on = per_request(on_exe, case, tmp)
            rec = per_request(on_exe, case, tmp, recorder=True)
            if None in (off, on, rec):
                print(f"| {case} | no probe answered | | |")
                status = 1
                continue
            print(f"| {case} | {off:.0f} | {on:.0f} ({on - off:+.0f}) | {rec:.0f} ({rec - off:+.0f}) |",
                  flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

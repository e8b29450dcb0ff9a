#!/usr/bin/env python3
"""Instructions per request of single bench cases, by callgrind on the probe mode.

Usage: benches/ir.py BENCH_BINARY CASE...   (CASE = group/id/param, e.g.
queue/rampart/ct/ready/64, including the probe-only `abl_*` ids)

Runs BENCH_BINARY (from `cargo bench --bench NAME --no-run`) under
`valgrind --tool=callgrind` with RAMPART_BENCH_PROBE=CASE at N1 and N2
requests (env, default 1000 and 3000) and prints (I(N2) - I(N1)) / (N2 - N1),
the method of the workplace's bench-instructions tool, for any case.
"""
import os, re, shutil, subprocess, sys, tempfile
if len(sys.argv) < 3:
    sys.exit(__doc__)
if shutil.which("valgrind") is None:
    sys.exit("benches/ir.py needs valgrind (Debian: apt-get install valgrind)")
exe = sys.argv[1]
n1 = int(os.environ.get("N1", "1000")); n2 = int(os.environ.get("N2", "3000"))
def ir(case, n):
    with tempfile.TemporaryDirectory() as t:
        f = os.path.join(t, "cg.out")
        env = dict(os.environ, RAMPART_BENCH_PROBE=case, RAMPART_BENCH_PROBE_N=str(n))
        p = subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={f}", exe],
                           env=env, capture_output=True, text=True)
        if "PROBE" not in p.stderr:
            sys.exit(f"probe {case} did not run:\n{p.stderr[-2000:]}")
        for line in open(f):
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
        sys.exit(f"no instruction total in callgrind's output for {case}")
for case in sys.argv[2:]:
    a, b = ir(case, n1), ir(case, n2)
    print(f"{case}\t{(b - a) / (n2 - n1):.0f}", flush=True)

#!/usr/bin/env python3
"""End to end in instructions: the server's user-space instructions per HTTP request, by callgrind.

Usage: benches/e2e_ir.py [--functions K] [MODE...]
       (MODE: a mode of examples/hello_server.rs; default: all of them,
       bare, handle_errors, request_id, tower_request_id, echo_header, drain,
       deadline, limit, stacked, stacked_service; bare is always run, as the
       baseline)
       env: N1=2000 N2=6000 requests, CONNS=1 keep-alive connections,
            WORKERS=1 tokio worker threads (TOKIO_WORKER_THREADS; 0: tokio's
            default, one per core),
            ROUNDS=1 (run every mode this many times, to check the figures
            repeat), BIN=path of a built hello_server (default: cargo build
            --release --example hello_server), KEEP=DIR to keep callgrind's
            output files (MODE.rROUND.N.out)

Each MODE is served by the release `hello_server MODE 0 SECS` (port 0: the
kernel picks a free loopback port, read from the server's first line) under
`valgrind --tool=callgrind`, and driven from this script, outside valgrind,
by N HTTP/1.1 keep-alive `GET /` requests over loopback: one connection by
default, sequential (write a request, read its whole response, next); with
CONNS=k, one request on each of the k connections, then the k responses, so
k requests are in flight at once. The client then half-closes each
connection and reads until the server closes it (so the server has seen the
end of every connection), and sends SIGINT: the server drains and exits, and
callgrind writes its total. The server runs on one tokio worker by default,
as in benches/e2e_layers.sh (pinned to one core by taskset, tokio starts one
worker): with two, tasks move between workers and glibc's per-thread malloc
arenas, which moves the figures by 0.5-2 % between runs (one worker: 0.03 %).
Bounded: the server exits by itself after SECS
(120) seconds, and is killed after 180.

Prints, per mode, (I(N2) - I(N1)) / (N2 - N1), the method of benches/ir.py:
what the server spends per request once start-up and shutdown cancel out;
the difference from bare; and bare / mode, the throughput the mode would keep
if the server's time followed its user-space instructions (callgrind counts
no kernel work: the socket reads and writes, which cost every mode alike,
are left out, so this ratio understates the share of a wall-time throughput
a mode keeps).

With --functions K, also prints for every mode but bare the K functions
whose self cost per request grew the most over bare (callgrind_annotate of
the four runs of the first round: (S_mode(N2) - S_mode(N1) - S_bare(N2) +
S_bare(N1)) / (N2 - N1)), the K that shrank the most, and the added
instructions summed by crate.
"""
import os, re, shutil, signal, socket, subprocess, sys, tempfile, threading

ALL_MODES = ["bare", "handle_errors", "request_id", "tower_request_id", "echo_header",
             "drain", "deadline", "limit", "stacked", "stacked_service"]
SECS, KILL_AFTER = 120, 180
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

args = sys.argv[1:]
funcs = 0
if args[:1] == ["--functions"]:
    if len(args) < 2 or not args[1].isdigit():
        sys.exit(__doc__)
    funcs, args = int(args[1]), args[2:]
if any(a.startswith("-") or a not in ALL_MODES for a in args):
    sys.exit(__doc__)
modes = ["bare"] + [m for m in (args or ALL_MODES) if m != "bare"]
for tool in ["valgrind"] + (["callgrind_annotate"] if funcs else []):
    if shutil.which(tool) is None:
        sys.exit(f"benches/e2e_ir.py needs {tool} (Debian: apt-get install valgrind)")
n1 = int(os.environ.get("N1", "2000")); n2 = int(os.environ.get("N2", "6000"))
conns = int(os.environ.get("CONNS", "1")); workers = int(os.environ.get("WORKERS", "1"))
server_env = dict(os.environ)
if workers > 0:
    server_env["TOKIO_WORKER_THREADS"] = str(workers)
rounds = int(os.environ.get("ROUNDS", "1"))
if not 0 < n1 < n2 or conns < 1 or rounds < 1 or workers < 0:
    sys.exit("need 0 < N1 < N2, CONNS >= 1, ROUNDS >= 1, WORKERS >= 0")
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
exe = os.environ.get("BIN")
if not exe:
    subprocess.run(["cargo", "build", "--release", "--example", "hello_server"], cwd=root, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    exe = os.path.join(target, "release", "examples", "hello_server")
keep = os.environ.get("KEEP")
outdir = keep or tempfile.mkdtemp(prefix="e2e_ir.")
os.makedirs(outdir, exist_ok=True)


def read_response(sock, buf):
    """Reads one whole response (headers + Content-Length body) from sock; returns the rest."""
    while True:
        h = buf.find(b"\r\n\r\n")
        if h >= 0:
            head = buf[:h].split(b"\r\n")
            if not head[0].startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"unexpected response {head[0]!r}")
            length = [int(l.split(b":", 1)[1]) for l in head[1:] if l.lower().startswith(b"content-length:")]
            if len(length) != 1:
                raise RuntimeError(f"no content-length in {buf[:h]!r}")
            end = h + 4 + length[0]
            if len(buf) >= end:
                return buf[end:]
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection mid-response")
        buf += data


def drive(port, n):
    """n requests over `conns` keep-alive connections, then a clean close of each."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bufs = [b""] * conns
    sent = 0
    while sent < n:
        batch = socks[: min(conns, n - sent)]
        for s in batch:
            s.sendall(REQUEST)
        for i, s in enumerate(batch):
            bufs[i] = read_response(s, bufs[i])
        sent += len(batch)
    for s in socks:  # half-close, then wait for the server to close its side
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()


def total(path):
    for line in open(path):
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    sys.exit(f"no instruction total in {path}")


def run(mode, n, rnd):
    out = os.path.join(outdir, f"{mode}.r{rnd}.{n}.out")
    err = open(out + ".log", "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
                          exe, mode, "0", str(SECS)], stdout=subprocess.PIPE, stderr=err, text=True, env=server_env)
    killer = threading.Timer(KILL_AFTER, p.kill)
    killer.start()
    try:
        first = p.stdout.readline()
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", first)
        if not m:
            sys.exit(f"hello_server {mode} did not start: {first!r}; see {out}.log")
        drive(int(m.group(1)), n)
        p.send_signal(signal.SIGINT)
        rest = p.stdout.read()
        code = p.wait()
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
    if code != 0 or "drained" not in rest:
        sys.exit(f"hello_server {mode} did not exit cleanly (status {code}): {rest!r}; see {out}.log")
    return out


LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*\S)\s+\[(.*)\]\s*$")


def self_costs(path):
    """Self instructions per function name (instances of one generic summed), from callgrind_annotate."""
    p = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
                       capture_output=True, text=True, check=True)
    costs = {}
    for line in p.stdout.splitlines():
        m = LINE.match(line)
        if m:
            name = m.group(2)
            name = name.split(":", 1)[1] if name.startswith("???:") else name
            if ":" in name and "/" in name.split(":", 1)[0]:  # libc: file:function
                name = name.split(":", 1)[1]
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def crate(name):
    """The crate a (demangled) function belongs to, roughly: the type's crate for drop_in_place."""
    m = re.match(r"core::ptr::drop_in_place<&?(?:mut )?(.*)>$", name)
    if m:
        name = m.group(1)
    m = re.match(r"[<&\s]*(?:dyn |mut )?([A-Za-z_][A-Za-z0-9_]*)::", name)
    return m.group(1) if m else "libc/other"


results = {m: [] for m in modes}
files = {}
for rnd in range(1, rounds + 1):
    for mode in modes:
        a, b = run(mode, n1, rnd), run(mode, n2, rnd)
        files.setdefault(mode, (a, b))
        per = (total(b) - total(a)) / (n2 - n1)
        results[mode].append(per)
        print(f"round {rnd} {mode}: {per:.0f} instructions/request", file=sys.stderr, flush=True)

print(f"server instructions per request, (I({n2}) - I({n1})) / {n2 - n1}, CONNS={conns}, WORKERS={workers or 'default'}, "
      f"{rounds} round(s){'' if rounds == 1 else ' (mean; spread = (max - min) / mean)'}")
print(f"{'mode':<17}{'instr/request':>14}{'Δ over bare':>13}{'bare/mode':>11}" + ("" if rounds == 1 else f"{'spread':>9}  rounds"))
base = sum(results["bare"]) / rounds
for mode in modes:
    v = results[mode]
    mean = sum(v) / rounds
    row = f"{mode:<17}{mean:>14.0f}{mean - base:>+13.0f}{100 * base / mean:>10.1f}%"
    if rounds > 1:
        row += f"{100 * (max(v) - min(v)) / mean:>8.2f}%  " + " ".join(f"{x:.0f}" for x in v)
    print(row)

if funcs:
    costs = {m: [self_costs(f) for f in files[m]] for m in modes}
    def per_request(m):
        a, b = costs[m]
        return {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    bare = per_request("bare")
    for mode in modes[1:]:
        cur = per_request(mode)
        added = {k: cur.get(k, 0) - bare.get(k, 0) for k in set(cur) | set(bare)}
        added = {k: v for k, v in added.items() if abs(v) >= 0.5}
        print(f"\n{mode}: self instructions per request over bare, by function "
              f"(sum of all functions {sum(added.values()):+.0f})")
        top = sorted(added.items(), key=lambda kv: -kv[1])
        for k, v in top[:funcs]:
            print(f"{v:>+9.0f}  {k}")
        print("  ...")
        for k, v in sorted(top[-funcs:], key=lambda kv: kv[1]):
            if v < 0:
                print(f"{v:>+9.0f}  {k}")
        by_crate = {}
        for k, v in added.items():
            by_crate[crate(k)] = by_crate.get(crate(k), 0) + v
        print(f"{mode}: by crate: " + ", ".join(f"{c} {v:+.0f}" for c, v in
                                                sorted(by_crate.items(), key=lambda kv: -abs(kv[1])) if abs(v) >= 1))
if not keep:
    shutil.rmtree(outdir)

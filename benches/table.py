#!/usr/bin/env python3
"""Print a markdown table of the last criterion run: per group and parameter,
the medians of floor / tower / rampart, the ratio (rampart − floor) /
(tower − floor), and allocations per request from target/criterion/allocs.txt.

Usage (from the workspace root, after `cargo bench`): python3 benches/table.py [PREFIX]
"""
import glob, json, os, re, sys

prefix = sys.argv[1] if len(sys.argv) > 1 else ""
med = {}
for bj in glob.glob("target/criterion/**/new/benchmark.json", recursive=True):
    b = json.load(open(bj))
    e = json.load(open(os.path.join(os.path.dirname(bj), "estimates.json")))
    g = b.get("group_id") or ""
    if g.startswith(prefix):
        med[(g, b.get("value_str") or "", b.get("function_id"))] = e["median"]["point_estimate"]
allocs = {}
if os.path.exists("target/criterion/allocs.txt"):
    for line in open("target/criterion/allocs.txt"):
        m = re.match(r"ALLOCS (\S+?)/(floor|tower|rampart)/(\S+): ([\d.]+)", line)
        if m:
            allocs[(m.group(1), m.group(3), m.group(2))] = float(m.group(4))  # last run wins

def ns(x):
    return "" if x is None else (f"{x / 1e6:.2f} ms" if x > 1e6 else f"{x:.0f}")

def al(k):
    return "" if k not in allocs else f"{allocs[k]:.2f}"

print("| group | param | floor ns | tower ns | rampart ns | ratio | allocs floor / tower / rampart |")
print("|---|---|---:|---:|---:|---:|---|")
for g, p in sorted({(g, p) for g, p, _ in med}):
    f, t, r = (med.get((g, p, i)) for i in ("floor", "tower", "rampart"))
    ratio = "" if None in (f, t, r) else f"{(r - f) / max(t - f, 2.0):.2f}"
    a = " / ".join(al((g, p, i)) or "–" for i in ("floor", "tower", "rampart"))
    print(f"| {g} | {p} | {ns(f)} | {ns(t)} | {ns(r)} | {ratio} | {a} |")

#!/usr/bin/env python3
"""Chart of the `stack` benchmark: time per request against concurrent callers
(1, 64, 1 000, 10 000) for floor, tower and rampart, from criterion's results.

Reads <criterion>/<group>/<id>/<rt>_<inner>_<callers>/new/{benchmark,estimates}.json
for the groups `stack` (1 and 64 callers) and `stack_callers` (1 000 and
10 000), takes each case's median, writes one SVG panel per runtime and inner
service measured at the most caller counts, and prints for those the same figures as
a markdown table (with rampart / tower and the ratio of what each adds over
floor, (rampart - floor) / (tower - floor)).

Usage, from the workspace root, after
`cargo bench --bench stack -- --warm-up-time 1 --measurement-time 2`:

    python3 benches/chart.py [--criterion DIR] [--out benches/stack_callers.svg]

DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion.
Standard library only.
"""
import argparse
import glob
import json
import os
import sys
from xml.sax.saxutils import escape

GROUPS = ("stack", "stack_callers")
IDS = ("floor", "tower", "rampart")
COLOURS = {"floor": "#7f7f7f", "tower": "#d62728", "rampart": "#1f77b4"}


def load(criterion_dir):
    """{(rt, inner): {callers: {id: median ns}}} for the stack groups."""
    data = {}
    pattern = os.path.join(criterion_dir, "**", "new", "benchmark.json")
    for path in glob.glob(pattern, recursive=True):
        with open(path) as f:
            bench = json.load(f)
        if bench.get("group_id") not in GROUPS or bench.get("function_id") not in IDS:
            continue
        parts = (bench.get("value_str") or "").split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        rt, inner, callers = parts[0], parts[1], int(parts[2])
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        data.setdefault((rt, inner), {}).setdefault(callers, {})[bench["function_id"]] = median
    return data


def fmt_ns(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 10_000 else f"{ns:.0f} ns"


def table(data):
    out = [
        "| runtime / inner | callers | floor ns | tower ns | rampart ns | rampart / tower | ratio (over floor) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (rt, inner) in sorted(data):
        for callers in sorted(data[(rt, inner)]):
            row = data[(rt, inner)][callers]
            f, t, r = (row.get(i) for i in IDS)
            cell = lambda x: "" if x is None else f"{x:.0f}"
            rel = "" if None in (t, r) else f"{r / t:.2f}"
            ratio = "" if None in (f, t, r) else f"{(r - f) / max(t - f, 2.0):.2f}"
            out.append(
                f"| {rt}/{inner} | {callers:,} | {cell(f)} | {cell(t)} | {cell(r)} | {rel} | {ratio} |".replace(",", " ")
            )
    return "\n".join(out)


def nice_max(v):
    """A round axis maximum at or above v: 4 ticks of 1, 2, 2.5 or 5 × 10^k."""
    if v <= 0:
        return 1.0
    quarter = v / 4
    mag = 10 ** (len(str(int(quarter))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= quarter:
            return 4 * step * mag
    return 40 * mag


def panel(x0, y0, w, h, title, series_by_callers):
    """One chart panel as SVG elements; x = callers (evenly spaced, log-like)."""
    callers = sorted(series_by_callers)
    top = max(v for row in series_by_callers.values() for v in row.values())
    ymax = nice_max(top * 1.05)
    left, right, upper, lower = 62, 12, 28, 42
    pw, ph = w - left - right, h - upper - lower
    px = lambda i: x0 + left + (pw * (i + 0.5) / len(callers))
    py = lambda v: y0 + upper + ph * (1 - v / ymax)
    el = [
        f'<text x="{x0 + w / 2}" y="{y0 + 18}" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{x0 + left}" y1="{y0 + upper + ph}" x2="{x0 + left + pw}" y2="{y0 + upper + ph}" stroke="#000"/>',
        f'<line x1="{x0 + left}" y1="{y0 + upper}" x2="{x0 + left}" y2="{y0 + upper + ph}" stroke="#000"/>',
    ]
    for k in range(5):
        v = ymax * k / 4
        y = py(v)
        el.append(f'<line x1="{x0 + left}" y1="{y:.1f}" x2="{x0 + left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        el.append(f'<text x="{x0 + left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    el.append(
        f'<text x="{x0 + 14}" y="{y0 + upper + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 14} {y0 + upper + ph / 2})">ns per request</text>'
    )
    for i, c in enumerate(callers):
        el.append(f'<text x="{px(i):.1f}" y="{y0 + upper + ph + 16}" text-anchor="middle">{c:,}</text>'.replace(",", " "))
    el.append(f'<text x="{x0 + left + pw / 2}" y="{y0 + h - 6}" text-anchor="middle">concurrent callers</text>')
    for ident in IDS:
        pts = [(px(i), py(series_by_callers[c][ident])) for i, c in enumerate(callers) if ident in series_by_callers[c]]
        if not pts:
            continue
        colour = COLOURS[ident]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            el.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), c in zip(pts, [c for c in callers if ident in series_by_callers[c]]):
            v = series_by_callers[c][ident]
            el.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{ident} {c} callers: {v:.0f} ns</title></circle>')
    return el


def charted(data):
    """The runtimes and inners measured at the most caller counts (the
    others are left over from runs of the `stack` group alone)."""
    most = max(len(v) for v in data.values())
    return {k: v for k, v in data.items() if len(v) == most}


def svg(data):
    panels = sorted(data.items())
    if len(panels[0][1]) < 2:
        return None
    w, h, cols = 420, 280, 2
    rows = (len(panels) + cols - 1) // cols
    legend_h = 30
    width, height = w * min(cols, len(panels)), h * rows + legend_h
    el = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    for n, ((rt, inner), series) in enumerate(panels):
        x0, y0 = (n % cols) * w, legend_h + (n // cols) * h
        el += panel(x0, y0, w, h, f"stack: {rt}, {inner} inner (median, lower is better)", series)
    x = 10
    for ident in IDS:
        el.append(f'<rect x="{x}" y="10" width="14" height="4" fill="{COLOURS[ident]}"/>')
        el.append(f'<text x="{x + 20}" y="16">{ident}</text>')
        x += 90
    el.append("</svg>")
    return "\n".join(el) + "\n"


def main():
    default_dir = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", default=default_dir, help="criterion output directory")
    ap.add_argument("--out", default="benches/stack_callers.svg", help="SVG file to write")
    args = ap.parse_args()
    data = load(args.criterion)
    if not data:
        sys.exit(f"no `stack` / `stack_callers` results under {args.criterion}: run the stack bench first")
    data = charted(data)
    print(table(data))
    image = svg(data)
    if image:
        with open(args.out, "w") as f:
            f.write(image)
        print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

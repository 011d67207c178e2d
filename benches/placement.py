#!/usr/bin/env python3
"""Tables and charts of benches/placement.sh's runs: python3 benches/placement.py DIR.

Reads DIR/mix-P, DIR/frag-P, DIR/wl-P and DIR/heapmap-P for each placement policy P
and writes, in DIR:
  summary.csv            one row per (workload, policy): ops/s, peak RSS, mean
                         resident/allocated, free spans and largest free span
  series.csv             placement_mix and fragmentation samples of every policy
  throughput.svg         ops/s relative to best fit, per workload
  peak_rss.svg           peak RSS relative to best fit, per workload
  resident_ratio.svg     resident / allocated over time, placement_mix
  resident_ratio_frag.svg  the same for the fragmentation example
  free_spans.svg         free spans in the page heap over time, placement_mix
  largest_free_span.svg  the largest free span over time, placement_mix
  heap-maps.svg          the heap maps side by side
The SVG helpers are benches/compare.py's.
"""

import csv
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from compare import esc, nice_ticks, svg_doc, tick, write_svg  # noqa: E402

POLICIES = ["best", "first", "next"]
compare.COLORS.update({"best": "#d62728", "first": "#1f77b4", "next": "#2ca02c"})
RESULT = re.compile(r"(\w+)=(\S+)")
FREE_SPANS = re.compile(r"free spans (\d+), the largest ([\d.]+) (B|KiB|MiB|GiB)")
UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def result_line(path):
    """The key=value pairs of the last RESULT line of a file."""
    last = None
    with open(path) as f:
        for line in f:
            if line.startswith("RESULT "):
                last = line
    return dict(RESULT.findall(last)) if last else {}


def last_free_spans(path):
    """(free spans, largest free bytes) from the last stats table in a file."""
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            m = FREE_SPANS.search(line)
            if m:
                found = (int(m.group(1)), float(m.group(2)) * UNIT[m.group(3)])
    return found or (None, None)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def time_plot(path, title, ylabel, series, fmt=tick):
    """series[policy] = [(t, y)]: one line per policy."""
    W, H, left, right, top, bottom = 720, 380, 70, 110, 40, 50
    pw, ph = W - left - right, H - top - bottom
    tmax = max((t for s in series.values() for t, _ in s), default=1) or 1
    ticks = nice_ticks(max((y for s in series.values() for _, y in s), default=1))
    ymax = ticks[-1] or 1

    def X(t):
        return left + pw * t / tmax

    def Y(v):
        return top + ph - ph * v / ymax

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in ticks:
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    for t in nice_ticks(tmax):
        if t <= tmax:
            body.append(f'<text x="{X(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{tick(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{H - 10}" text-anchor="middle">seconds</text>')
    body.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" '
                f'text-anchor="middle">{esc(ylabel)}</text>')
    for p, pts in series.items():
        if pts:
            d = " ".join(f"{'M' if i == 0 else 'L'}{X(t):.1f},{Y(y):.1f}" for i, (t, y) in enumerate(pts))
            body.append(f'<path d="{d}" fill="none" stroke="{compare.COLORS[p]}" stroke-width="1.5"/>')
    body += compare.legend(list(series), W - right + 16, top + 14)
    write_svg(path, svg_doc(W, H, body, title))


def mib(x):
    return f"{x / (1 << 20):.0f} MiB" if x else "0"


def heap_maps(out):
    """The policies' heap maps side by side in one SVG (nested <svg> elements)."""
    parts, x, height = [], 0, 0
    for p in POLICIES:
        path = os.path.join(out, f"heapmap-{p}", "heap-map.svg")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        m = re.search(r'<svg[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', text)
        w, h = (float(m.group(1)), float(m.group(2))) if m else (800.0, 600.0)
        inner = re.sub(r"^<\?xml[^>]*>\s*", "", text)
        inner = re.sub(r"<svg\b", f'<svg x="{x}" y="40"', inner, count=1)
        parts.append(f'<text x="{x + w / 2}" y="28" text-anchor="middle" font-size="16" '
                     f'font-weight="bold">{p} fit</text>')
        parts.append(inner)
        x += w + 20
        height = max(height, h)
    if parts:
        write_svg(os.path.join(out, "heap-maps.svg"),
                  svg_doc(int(x), int(height) + 50, parts, ""))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/placement"
    rows, series = [], []
    mix_ratio, frag_ratio, spans, largest = {}, {}, {}, {}
    for p in POLICIES:
        # placement_mix
        r = result_line(os.path.join(out, f"mix-{p}", "stdout.txt"))
        samples = read_csv(os.path.join(out, f"mix-{p}", "series.csv"))
        last = samples[-1] if samples else {}
        rows.append({"workload": "placement_mix", "policy": p,
                     "ops_per_sec": r.get("ops_per_sec"), "peak_rss_kib": r.get("peak_rss_kib"),
                     "mean_resident_ratio": r.get("mean_resident_ratio"),
                     "free_spans": last.get("free_spans"),
                     "largest_free_kib": int(last["largest_free_span"]) >> 10 if last else None})
        mix_ratio[p], spans[p], largest[p] = [], [], []
        for s in samples:
            t, a = float(s["t_s"]), int(s["allocated"])
            series.append({"workload": "placement_mix", "policy": p, "t_s": t, "allocated": a,
                           "resident": s["resident"], "free_spans": s["free_spans"],
                           "largest_free_span": s["largest_free_span"]})
            if a:
                mix_ratio[p].append((t, int(s["resident"]) / a))
            spans[p].append((t, int(s["free_spans"])))
            largest[p].append((t, int(s["largest_free_span"])))
        # fragmentation
        fdir = os.path.join(out, f"frag-{p}")
        with open(os.path.join(fdir, "time.txt")) as f:
            peak_kib = f.read().split()[0]
        samples = read_csv(os.path.join(fdir, "samples.csv"))
        n_spans, big = last_free_spans(os.path.join(fdir, "stdout.txt"))
        ratios = [(float(s["t_s"]), int(s["resident_bytes"]) / int(s["allocated_bytes"]))
                  for s in samples if int(s["allocated_bytes"])]
        frag_ratio[p] = ratios
        rows.append({"workload": "fragmentation", "policy": p, "ops_per_sec": None,
                     "peak_rss_kib": peak_kib,
                     "mean_resident_ratio": f"{sum(r for _, r in ratios) / max(len(ratios), 1):.3f}",
                     "free_spans": n_spans, "largest_free_kib": int(big) >> 10 if big else None})
        for s in samples:
            series.append({"workload": "fragmentation", "policy": p, "t_s": s["t_s"],
                           "allocated": s["allocated_bytes"], "resident": s["resident_bytes"],
                           "free_spans": "", "largest_free_span": ""})
        # workloads
        wdir = os.path.join(out, f"wl-{p}")
        for name in sorted(os.listdir(wdir)):
            if not name.endswith(".out"):
                continue
            w = name[:-4]
            r = result_line(os.path.join(wdir, name))
            n_spans, big = last_free_spans(os.path.join(wdir, w + ".err"))
            rows.append({"workload": w, "policy": p, "ops_per_sec": r.get("ops_per_sec"),
                         "peak_rss_kib": r.get("peak_rss_kib"), "mean_resident_ratio": None,
                         "free_spans": n_spans,
                         "largest_free_kib": int(big) >> 10 if big else None})

    fields = ["workload", "policy", "ops_per_sec", "peak_rss_kib", "mean_resident_ratio",
              "free_spans", "largest_free_kib"]
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "series.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["workload", "policy", "t_s", "allocated", "resident",
                                          "free_spans", "largest_free_span"])
        w.writeheader()
        w.writerows(series)

    # Ratios to best fit, per workload.
    by = {(r["workload"], r["policy"]): r for r in rows}
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    for key, fname, title in [
        ("ops_per_sec", "throughput.svg", "throughput relative to best fit (higher is faster)"),
        ("peak_rss_kib", "peak_rss.svg", "peak RSS relative to best fit (lower is smaller)"),
    ]:
        stats, groups = {}, []
        for wl in workloads:
            base = by.get((wl, "best"), {}).get(key)
            if not base or not float(base):
                continue
            groups.append(wl)
            for p in POLICIES:
                v = by.get((wl, p), {}).get(key)
                if v:
                    x = float(v) / float(base)
                    stats[(wl, p)] = (x, x, x, 1)
        compare.bar_plot(os.path.join(out, fname), title, "ratio to best fit", groups, POLICIES,
                         stats, ref=1.0)

    time_plot(os.path.join(out, "resident_ratio.svg"),
              "placement_mix: resident / allocated over time", "resident / allocated", mix_ratio,
              fmt=lambda v: f"{v:g}")
    time_plot(os.path.join(out, "resident_ratio_frag.svg"),
              "fragmentation example: resident / allocated over time", "resident / allocated",
              frag_ratio, fmt=lambda v: f"{v:g}")
    time_plot(os.path.join(out, "free_spans.svg"), "placement_mix: free spans in the page heap",
              "free spans", spans)
    time_plot(os.path.join(out, "largest_free_span.svg"),
              "placement_mix: the largest free span", "bytes", largest, fmt=mib)
    heap_maps(out)

    print(f"{'workload':<16} {'policy':<6} {'ops/s':>12} {'peak RSS MiB':>13} "
          f"{'res/alloc':>9} {'free spans':>10} {'largest KiB':>11}")
    for r in rows:
        def f(k, conv=str):
            v = r.get(k)
            return "-" if v in (None, "") else conv(v)
        print(f"{r['workload']:<16} {r['policy']:<6} {f('ops_per_sec', lambda v: f'{float(v):.0f}'):>12} "
              f"{f('peak_rss_kib', lambda v: f'{int(v) / 1024:.1f}'):>13} "
              f"{f('mean_resident_ratio'):>9} {f('free_spans'):>10} {f('largest_free_kib'):>11}")
    print(f"written: {out}/summary.csv, series.csv, *.svg")


if __name__ == "__main__":
    main()

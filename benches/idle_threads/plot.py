#!/usr/bin/env python3
"""Tables and SVG charts of benches/idle_threads/run.sh results.

Reads the raw lines `allocator threads churn_ms mops rss_idle_mib rss_exit_mib`
(one per run), prints a Markdown table of medians, and writes three line charts
(throughput, resident while idle, resident after exit, against the thread
count; the bar on each point spans the runs' min to max) into OUT_DIR.

Usage: plot.py RAW_FILE OUT_DIR
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import compare  # noqa: E402  (the SVG helpers of the workload comparison)

compare.COLORS.setdefault("strata-percpu", "#9467bd")
compare.COLORS.setdefault("strata-auto", "#e377c2")
compare.COLORS.setdefault("strata-tc", "#8c564b")


def main():
    raw, out = sys.argv[1], sys.argv[2]
    rows = [line.split() for line in open(raw) if line.strip()]
    allocators = list(dict.fromkeys(r[0] for r in rows))
    threads = sorted({int(r[1]) for r in rows})
    figures = [
        (3, "Mops", "idle-threads-throughput.svg", "Churn throughput (M malloc+free / s)"),
        (4, "rss idle MiB", "idle-threads-rss-idle.svg", "Resident while the threads idle (MiB)"),
        (5, "rss exit MiB", "idle-threads-rss-exit.svg", "Resident after every thread exited (MiB)"),
    ]
    stats = {}
    for col, _, _, _ in figures:
        for a in allocators:
            for t in threads:
                v = [float(r[col]) for r in rows if r[0] == a and int(r[1]) == t]
                if v:
                    stats[(col, t, a)] = (statistics.median(v), min(v), max(v), len(v))
    print("| threads | allocator | Mops | RSS idle MiB | RSS after exit MiB |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for t in threads:
        for a in allocators:
            cells = [stats.get((col, t, a)) for col, _, _, _ in figures]
            if all(cells):
                print(f"| {t} | {a} | {cells[0][0]:.1f} | {cells[1][0]:.1f} | {cells[2][0]:.1f} |")
    os.makedirs(out, exist_ok=True)
    for col, _, name, title in figures:
        per = {(t, a): s for (c, t, a), s in stats.items() if c == col}
        compare.line_plot(os.path.join(out, name), title, title, threads, allocators, per)


if __name__ == "__main__":
    main()

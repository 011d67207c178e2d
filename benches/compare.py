#!/usr/bin/env python3
"""Compare strata with glibc, mimalloc, jemalloc and tcmalloc on the workload
runner (benches/workloads/), one process per cell, and write the results.

    benches/compare.sh                       # full run: threads 1,2,4,8, 3 reps
    benches/compare.sh --threads 1,2,4,8,16 --reps 5
    benches/compare.sh --quick               # smoke test: 1 rep, short runs, threads 1,2
    benches/compare.sh --workloads larson,xmalloc --allocators strata,glibc
    benches/compare.sh --workloads mstress --merge   # re-measure one workload in place
    benches/compare.sh --report                      # rewrite table, plots, note from results

It installs the Debian packages of the peers if they are missing
(libmimalloc2.0, libjemalloc2, libtcmalloc-minimal4), builds the runner
(`cargo bench --no-run --bench workloads`) and libstrata.so
(`cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi`),
copies both to target/compare/,
then runs every (workload, threads, allocator, repetition) cell as

    LD_PRELOAD=<library> target/compare/workloads --workload W --threads T --expect A

(glibc: no LD_PRELOAD) with a timeout, and writes into --out (default
benches/results; with --quick, target/compare/quick):

    results.csv              every run (raw)
    runs.json                when, how and under what load each run was made
    table.md                 medians and [min-max] spreads, ratios, machine, date, commands
    throughput-<w>.svg       ops/s against threads, a line per allocator (bars if single-threaded)
    peak-rss.svg             peak RSS per workload and allocator (largest thread count)
    relative.svg             throughput relative to glibc per workload (largest thread count)

and, on a full run into the default folder, replaces the generated results block
of BENCHMARKS.md (between its marker comments) with the new table.

Python 3 standard library only; the plots are written as plain SVG.
"""

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = {
    # allocator: (library, Debian package)
    "mimalloc": (f"{LIBDIR}/libmimalloc.so.2", "libmimalloc2.0"),
    "jemalloc": (f"{LIBDIR}/libjemalloc.so.2", "libjemalloc2"),
    "tcmalloc": (f"{LIBDIR}/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
# strata: the default (thread caches for the first max(128, 8 x CPUs) threads live
# at a time, per-CPU caches after them); strata-percpu: the same libstrata.so with
# every thread served per CPU (STRATA_PERCPU=1); strata-auto: thread caches for the
# first thread per CPU, per-CPU caches after (STRATA_PERCPU=auto); strata-tc:
# thread caches only (STRATA_PERCPU=0). The last two are not in the default list.
STRATA_VARIANTS = {"strata-percpu": "1", "strata-auto": "auto", "strata-tc": "0"}
ALL_ALLOCATORS = ["strata", "strata-percpu", "glibc", "mimalloc", "jemalloc", "tcmalloc"]
KNOWN_ALLOCATORS = ALL_ALLOCATORS + ["strata-auto", "strata-tc"]
COLORS = {
    "strata": "#d62728",
    "strata-percpu": "#9467bd",
    "strata-auto": "#e377c2",
    "strata-tc": "#8c564b",
    "glibc": "#7f7f7f",
    "mimalloc": "#1f77b4",
    "jemalloc": "#2ca02c",
    "tcmalloc": "#ff7f0e",
}
EXIT_VERIFY = 1


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log(f"compare: {msg}")
    sys.exit(1)


def sh(cmd, **kw):
    """Runs a command, echoing it; returns its stdout."""
    log("+ " + " ".join(shlex.quote(c) for c in cmd))
    return subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout


def capture(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Setup: packages, build
# ---------------------------------------------------------------------------

def digest(paths):
    """Short sha256 over the files' contents (in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def strata_build(lib):
    """Which strata a run measures: the library's and the sources' digests
    (src/ may hold uncommitted work that changes between runs)."""
    src = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, "src"))
                 for f in fs if f.endswith(".rs"))
    rev = capture(["git", "rev-parse", "--short", "HEAD"]) or "?"
    dirty = capture(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"])
    return (f"libstrata.so sha256 {digest([lib])}, built from {rev}"
            + (f" + uncommitted src/ changes (src digest {digest(src)})" if dirty else ""))


def ensure_packages(allocators):
    missing = [PEERS[a][1] for a in allocators if a in PEERS and not os.path.exists(PEERS[a][0])]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(missing)}")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                   check=True, env=env)
    for a in allocators:
        if a in PEERS and not os.path.exists(PEERS[a][0]):
            die(f"{PEERS[a][0]} still missing after installing {PEERS[a][1]}")


def build(need_strata):
    """Builds the runner and libstrata.so; returns their copies in target/compare/."""
    meta = json.loads(sh(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
    outdir = os.path.join(meta["target_directory"], "compare")
    os.makedirs(outdir, exist_ok=True)
    exe = None
    for line in sh(["cargo", "bench", "--no-run", "--bench", "workloads",
                    "--message-format=json-render-diagnostics"]).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "workloads" \
                and msg.get("executable"):
            exe = msg["executable"]
    if not exe:
        die("cargo did not report the workloads executable")
    runner = os.path.join(outdir, "workloads")
    shutil.copy2(exe, runner)
    lib = None
    if need_strata:
        # In its own target directory (as tests/c_abi.rs does): a build of the
        # benches or tests in target/ rewrites target/release/libstrata.so
        # without the C ABI.
        cabi = os.path.join(meta["target_directory"], "c-abi")
        sh(["cargo", "build", "--release", "--manifest-path", "capi/Cargo.toml", "--target-dir", cabi])
        built = os.path.join(cabi, "release", "libstrata.so")
        lib = os.path.join(outdir, "libstrata.so")
        shutil.copy2(built, lib)
    return runner, lib


# ---------------------------------------------------------------------------
# Running cells
# ---------------------------------------------------------------------------

def list_workloads(runner):
    out = subprocess.run([runner, "--list"], check=True, stdout=subprocess.PIPE, text=True).stdout
    workloads = []
    for line in out.splitlines():
        name, kind, op, about = line.split("\t")
        workloads.append({"name": name, "multi": kind == "multi", "op": op, "about": about})
    return workloads


def cell_command(runner, lib, workload, threads, allocator, args):
    expect = "strata" if allocator in STRATA_VARIANTS else allocator
    cmd = [runner, "--workload", workload, "--threads", str(threads), "--expect", expect]
    if args.quick:
        cmd.append("--quick")
    if args.seconds:
        cmd += ["--seconds", str(args.seconds)]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("STRATA_PERCPU", None)
    if allocator in STRATA_VARIANTS:
        env["STRATA_PERCPU"] = STRATA_VARIANTS[allocator]
    if lib:
        env["LD_PRELOAD"] = lib
    return cmd, env


def run_cell(cmd, env, timeout):
    """Returns (status, fields, wall seconds, output tail)."""
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        err = (e.stderr or b"")
        tail = (out.decode(errors="replace") if isinstance(out, bytes) else out) + \
               (err.decode(errors="replace") if isinstance(err, bytes) else err)
        return "timeout", {}, time.monotonic() - start, tail[-2000:]
    wall = time.monotonic() - start
    tail = (p.stdout + p.stderr)[-2000:]
    if p.returncode != 0:
        status = "verify-failed" if "VERIFY FAILED" in p.stderr else f"exit-{p.returncode}"
        if p.returncode < 0:
            status = f"signal-{-p.returncode}"
        return status, {}, wall, tail
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return "no-result", {}, wall, tail
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    return "ok", fields, wall, tail


def fmt_duration(s):
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------

def si(x, digits=3):
    """12345678 -> '12.3M'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.{max(digits - len(str(int(x / scale))), 0)}f}{suffix}"
    return f"{x:.{max(digits - len(str(int(x))), 0)}f}"


def tick(x):
    """Axis label: 25000000 -> '25M', 2500000 -> '2.5M', 0 -> '0'."""
    if x == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}".rstrip("0").rstrip(".") + suffix
    return f"{x:.3g}"


def summarize(rows, key):
    """{(workload, threads, allocator): (median, min, max, n)} of field `key` over ok rows."""
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["workload"], r["threads"], r["allocator"]), []).append(float(r[key]))
    return {k: (statistics.median(v), min(v), max(v), len(v)) for k, v in groups.items()}


def failures(rows):
    bad = {}
    for r in rows:
        if r["status"] != "ok":
            bad.setdefault((r["workload"], r["threads"], r["allocator"]), []).append(r["status"])
    return bad


def machine_info():
    model = ""
    for line in capture(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    glibc = " ".join(platform.libc_ver()) or capture(["getconf", "GNU_LIBC_VERSION"])
    return {
        "cpu": model or platform.processor() or "?",
        "nproc": capture(["nproc"]) or str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "glibc": glibc,
        "mem": mem,
        "host_virt": capture(["systemd-detect-virt"]) if shutil.which("systemd-detect-virt") else "",
    }


def versions(allocators):
    out = {}
    for a in allocators:
        if a in STRATA_VARIANTS:
            out[a] = f"the same library with `STRATA_PERCPU={STRATA_VARIANTS[a]}`"
        elif a == "strata":
            rev = capture(["git", "rev-parse", "--short", "HEAD"]) or "?"
            # Only the library's sources count: by now this run has rewritten the
            # tracked results files and BENCHMARKS.md itself.
            dirty = (" + uncommitted src/ changes"
                     if capture(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"])
                     else "")
            out[a] = (f"strata at {rev}{dirty} (`target/c-abi/release/libstrata.so`, C ABI; "
                      "per run, above)")
        elif a == "glibc":
            out[a] = f"glibc {platform.libc_ver()[1]} (no LD_PRELOAD)"
        else:
            lib, pkg = PEERS[a]
            ver = capture(["dpkg-query", "-W", "-f=${Version}", pkg]) or "?"
            out[a] = f"Debian {pkg} {ver} (`{os.path.realpath(lib)}`)"
    return out


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return float("nan")


def cell_text(stat, bad, rss=False):
    if stat is None:
        return "**" + "/".join(sorted(set(bad))) + "**" if bad else "-"
    med, lo, hi, n = stat
    if rss:
        text = f"{med / 1024:.1f} [{lo / 1024:.1f}–{hi / 1024:.1f}]"
    else:
        text = f"{si(med)} [{si(lo)}–{si(hi)}]"
    if bad:
        text += f" ({len(bad)} failed)"
    return text


def write_table(path, args, info, vers, allocators, workloads, threads_of, tp, rss, bad,
                runs, runner_rel, lib_rel):
    L = []
    L.append("# Workload comparison: strata, glibc, mimalloc, jemalloc, tcmalloc")
    L.append("")
    L.append(f"- Machine: {info['cpu']}, {info['nproc']} CPUs, {info['mem']}, {info['kernel']}, "
             f"{info['glibc']}" + (f", virtualised ({info['host_virt']})" if info['host_virt'] not in ("", "none") else "") + ".")
    L.append("- Each cell is one process; the figure is the median over the repetitions, with "
             "[min–max]; the allocators take turns going first. The machine is shared: other jobs "
             "add noise, and the load average counts the benchmark's own threads too.")
    L.append("- " + ("Run" if len(runs) == 1 else "Runs (each row comes from the last run that measured its workload)") + ":")
    for run in runs:
        what = "all workloads" if run.get("all") else ", ".join(run.get("workloads", []))
        load = lambda x: "?" if x is None else f"{x:.2f}"  # noqa: E731
        L.append(f"  - {run['date']}: `{run['command']}`: {what}; {run['cells']} cells, {run['mode']}, "
                 f"{run['took']}; load average (1 min) {load(run['load_start'])} at the start, "
                 f"{load(run['load_end'])} at the end."
                 + (f" strata: {run['strata']}." if run.get("strata") else ""))
    L.append("- Per cell, exactly:")
    L.append("")
    L.append("  ```sh")
    for a in allocators:
        pre = lib_rel if a == "strata" or a in STRATA_VARIANTS else (
            None if a == "glibc" else PEERS.get(a, (None,))[0])
        env = (f"STRATA_PERCPU={STRATA_VARIANTS[a]} " if a in STRATA_VARIANTS else "") + (
            f"LD_PRELOAD={pre} " if pre else "")
        L.append(f"  {env}{runner_rel} --workload W --threads T --expect {a.split('-')[0]}"
                 + (" --quick" if args.quick else "") + (f" --seconds {args.seconds}" if args.seconds else ""))
    L.append("  ```")
    L.append("")
    L.append("  where the runner is built by `cargo bench --no-run --bench workloads` and libstrata.so by "
             "`cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi`, "
             "both copied to target/compare/.")
    L.append("- Allocators:")
    for a in allocators:
        L.append(f"  - {a}: {vers[a]}")
    L.append("")

    pairs = (("strata", "glibc"), ("strata", "mimalloc"))
    ratios = [(a, b) for a, b in pairs
              if a in allocators and b in allocators]
    # Each strata setting against the best of the peers in the same row (the
    # highest throughput, the lowest peak RSS), and their geometric mean.
    ours = [a for a in allocators if a == "strata" or a in STRATA_VARIANTS]
    peers = [a for a in allocators if a not in ours]

    def table(title, data, is_rss):
        L.append(f"## {title}")
        L.append("")
        head = (["workload", "threads"] + allocators + [f"{a}/{b}" for a, b in ratios]
                + [f"{a}/best peer" for a in ours if peers])
        logs = {a: [] for a in ours}
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "|".join([" --- ", " ---: "] + [" ---: "] * (len(head) - 2)) + "|")
        for w in workloads:
            for t in threads_of[w["name"]]:
                meds = {a: data.get((w["name"], t, a)) for a in allocators}
                present = {a: s[0] for a, s in meds.items() if s}
                best = (min if is_rss else max)(present, key=present.get) if present else None
                cells = []
                for a in allocators:
                    text = cell_text(meds[a], bad.get((w["name"], t, a)), is_rss)
                    if a == best and len(present) > 1:
                        text = f"**{text}**"
                    cells.append(text)
                for a, b in ratios:
                    if a in present and b in present and present[b] > 0:
                        cells.append(f"{present[a] / present[b]:.2f}×")
                    else:
                        cells.append("-")
                peer_vals = [present[b] for b in peers if b in present and present[b] > 0]
                for a in ours if peers else []:
                    if a in present and present[a] > 0 and len(peer_vals) == len(peers):
                        r = present[a] / (min if is_rss else max)(peer_vals)
                        logs[a].append(math.log(r))
                        cells.append(f"{r:.2f}×")
                    else:
                        cells.append("-")
                L.append("| " + " | ".join([w["name"], str(t)] + cells) + " |")
        L.append("")
        means = [f"{a} {math.exp(sum(v) / len(v)):.2f}× over {len(v)} rows"
                 for a, v in logs.items() if v]
        if means:
            L.append("Geometric mean against the best peer of each row (rows where every "
                     "peer finished): " + "; ".join(means) + ".")
            L.append("")

    L.append("## Plots")
    L.append("")
    L.append("![Throughput relative to glibc](relative.svg)")
    L.append("")
    L.append("![Peak RSS](peak-rss.svg)")
    L.append("")
    L.append("Throughput against threads: " + ", ".join(
        f"[{w['name']}](throughput-{w['name']}.svg)" for w in workloads) + ".")
    L.append("")
    table("Throughput (operations per second, higher is better)", tp, False)
    L.append("Bold: the best median of the row. Ratios are of medians; for throughput above 1 "
             "means strata is faster, for peak RSS below 1 means strata uses less memory.")
    L.append("")
    table("Peak RSS (MiB, VmHWM at exit, lower is better)", rss, True)
    if bad:
        L.append("## Failed cells")
        L.append("")
        for (w, t, a), statuses in sorted(bad.items()):
            L.append(f"- {w} t={t} {a}: {', '.join(statuses)}")
        L.append("")
    L.append("## Workloads")
    L.append("")
    L.append("| workload | one operation | what it does |")
    L.append("| --- | --- | --- |")
    for w in workloads:
        threads_note = "" if w["multi"] else " (single-threaded)"
        L.append(f"| {w['name']}{threads_note} | {w['op']} | {w['about']} |")
    L.append("")
    L.append("xmalloc at `--threads N` runs N allocating and N freeing threads.")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


# ---------------------------------------------------------------------------
# SVG plots
# ---------------------------------------------------------------------------

def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(hi, n=5):
    """Ticks 0..>=hi at a 1/2/5 step."""
    if hi <= 0:
        return [0, 1]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    top = math.ceil(hi / step) * step
    return [i * step for i in range(int(round(top / step)) + 1)]


def svg_doc(width, height, body, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{esc(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def legend(allocators, x, y):
    out = []
    for i, a in enumerate(allocators):
        yy = y + i * 18
        out.append(f'<rect x="{x}" y="{yy - 9}" width="12" height="12" fill="{COLORS[a]}"/>')
        out.append(f'<text x="{x + 18}" y="{yy + 1}">{esc(a)}</text>')
    return out


def write_svg(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def line_plot(path, title, ylabel, threads, allocators, stats):
    """stats[(threads, allocator)] = (median, min, max, n)."""
    W, H, left, right, top, bottom = 640, 400, 70, 120, 40, 50
    pw, ph = W - left - right, H - top - bottom
    hi = max([s[2] for s in stats.values()] or [1])
    ticks = nice_ticks(hi)
    ymax = ticks[-1] or 1

    def X(i):
        return left + (pw * (i + 0.5) / len(threads))

    def Y(v):
        return top + ph - ph * v / ymax

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in ticks:
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{tick(t)}</text>')
    for i, t in enumerate(threads):
        body.append(f'<text x="{X(i):.1f}" y="{top + ph + 18}" text-anchor="middle">{t}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{H - 10}" text-anchor="middle">threads</text>')
    body.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    for a in allocators:
        pts = [(X(i), stats[(t, a)]) for i, t in enumerate(threads) if (t, a) in stats]
        if not pts:
            continue
        path_d = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{Y(s[0]):.1f}" for j, (x, s) in enumerate(pts))
        width = 2.5 if a == "strata" else 1.5
        body.append(f'<path d="{path_d}" fill="none" stroke="{COLORS[a]}" stroke-width="{width}"/>')
        for x, s in pts:
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{Y(s[1]):.1f}" y2="{Y(s[2]):.1f}" '
                        f'stroke="{COLORS[a]}" stroke-width="1"/>')
            body.append(f'<circle cx="{x:.1f}" cy="{Y(s[0]):.1f}" r="3" fill="{COLORS[a]}">'
                        f'<title>{esc(a)}: {si(s[0])} [{si(s[1])}–{si(s[2])}]</title></circle>')
    body += legend(allocators, W - right + 16, top + 14)
    write_svg(path, svg_doc(W, H, body, title))


def bar_plot(path, title, ylabel, groups, allocators, stats, log_scale=False, unit=1.0, ref=None):
    """Grouped bars: stats[(group, allocator)] = (median, min, max, n), divided by `unit`.
    `ref`: draw a horizontal reference line at this value (e.g. 1.0)."""
    W = max(480, 90 + len(groups) * (18 * len(allocators) + 22) + 120)
    H, left, right, top, bottom = 420, 70, 120, 40, 110
    pw, ph = W - left - right, H - top - bottom
    vals = [v / unit for s in stats.values() for v in (s[0], s[2]) if v > 0]
    if log_scale:
        lo_exp = math.floor(math.log10(min(vals or [1])))
        hi_exp = math.ceil(math.log10(max(vals or [10])))
        if hi_exp == lo_exp:
            hi_exp += 1
        ticks = [10 ** e for e in range(lo_exp, hi_exp + 1)]
        if ref is not None and len(ticks) <= 3:
            ticks = sorted(set(ticks + [10 ** (e + 0.5) for e in range(lo_exp, hi_exp)]))

        def Y(v):
            v = max(v, 10 ** lo_exp)
            return top + ph - ph * (math.log10(v) - lo_exp) / (hi_exp - lo_exp)
        base = top + ph
    else:
        ticks = nice_ticks(max(vals or [1]))

        def Y(v):
            return top + ph - ph * v / (ticks[-1] or 1)
        base = Y(0)
    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in ticks:
        label = tick(t)
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{label}</text>')
    if ref is not None:
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(ref):.1f}" y2="{Y(ref):.1f}" '
                    f'stroke="#444" stroke-dasharray="4 3"/>')
    slot = pw / max(len(groups), 1)
    bw = min(18, (slot - 10) / max(len(allocators), 1))
    for gi, g in enumerate(groups):
        x0 = left + gi * slot + (slot - bw * len(allocators)) / 2
        for ai, a in enumerate(allocators):
            s = stats.get((g, a))
            if not s:
                continue
            med, lo, hi = s[0] / unit, s[1] / unit, s[2] / unit
            x = x0 + ai * bw
            y = Y(med)
            body.append(f'<rect x="{x:.1f}" y="{min(y, base):.1f}" width="{bw - 1:.1f}" '
                        f'height="{abs(base - y):.1f}" fill="{COLORS[a]}">'
                        f'<title>{esc(g)} {esc(a)}: {med:.3g} [{lo:.3g}–{hi:.3g}]</title></rect>')
            body.append(f'<line x1="{x + bw / 2 - 0.5:.1f}" x2="{x + bw / 2 - 0.5:.1f}" '
                        f'y1="{Y(lo):.1f}" y2="{Y(hi):.1f}" stroke="#222" stroke-width="1"/>')
        cx = left + gi * slot + slot / 2
        body.append(f'<text transform="translate({cx:.1f} {top + ph + 12}) rotate(35)" '
                    f'text-anchor="start">{esc(g)}</text>')
    body.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    body += legend(allocators, W - right + 16, top + 14)
    write_svg(path, svg_doc(W, H, body, title))


def write_plots(out, info, allocators, workloads, threads_of, tp, rss):
    machine = f"{info['nproc']} CPUs"
    files = []
    for w in workloads:
        name = w["name"]
        ts = threads_of[name]
        path = os.path.join(out, f"throughput-{name}.svg")
        ylabel = f"{w['op']} per second"
        if len(ts) > 1:
            stats = {(t, a): tp[(name, t, a)] for t in ts for a in allocators if (name, t, a) in tp}
            line_plot(path, f"{name}: throughput vs threads ({machine})", ylabel, ts, allocators, stats)
        else:
            stats = {(name, a): tp[(name, ts[0], a)] for a in allocators if (name, ts[0], a) in tp}
            bar_plot(path, f"{name}: throughput, 1 thread", ylabel, [name], allocators, stats)
        files.append(path)
    # Peak RSS and relative throughput at each workload's largest thread count.
    groups, rss_stats, rel_stats = [], {}, {}
    for w in workloads:
        t = threads_of[w["name"]][-1]
        g = f"{w['name']} t={t}"
        groups.append(g)
        for a in allocators:
            if (w["name"], t, a) in rss:
                rss_stats[(g, a)] = rss[(w["name"], t, a)]
            base = tp.get((w["name"], t, "glibc"))
            if base and (w["name"], t, a) in tp:
                s = tp[(w["name"], t, a)]
                rel_stats[(g, a)] = (s[0] / base[0], s[1] / base[0], s[2] / base[0], s[3])
    path = os.path.join(out, "peak-rss.svg")
    bar_plot(path, f"Peak RSS per workload, largest thread count ({machine})", "MiB (log scale)",
             groups, allocators, rss_stats, log_scale=True, unit=1024.0)
    files.append(path)
    if rel_stats:
        path = os.path.join(out, "relative.svg")
        bar_plot(path, f"Throughput relative to glibc, largest thread count ({machine})",
                 "× glibc (log scale)", groups, allocators, rel_stats, log_scale=True, ref=1.0)
        files.append(path)
    return files


def load_previous(csv_path, runs_path):
    """Rows and runs of an earlier result (for --merge)."""
    rows, runs = [], []
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        pass
    try:
        with open(runs_path) as f:
            runs = json.load(f)
    except (OSError, ValueError):
        pass
    for r in rows:
        r["threads"] = int(r["threads"])
        r["run"] = int(r.get("run") or 1)
    missing = {"date": "?", "command": "?", "all": False, "workloads": [], "cells": 0,
               "mode": "?", "took": "?", "load_start": None, "load_end": None}
    while len(runs) < max([r["run"] for r in rows] or [0]):
        runs.append(dict(missing))
    return rows, runs


# ---------------------------------------------------------------------------
# BENCHMARKS.md
# ---------------------------------------------------------------------------

NOTE = os.path.join(ROOT, "BENCHMARKS.md")
BEGIN = "<!-- compare.sh results: begin (generated from benches/results/table.md) -->"
END = "<!-- compare.sh results: end -->"


def update_note(table_path):
    """Replaces the generated block of BENCHMARKS.md with the new table (the
    hand-written reading around it is left alone)."""
    try:
        with open(NOTE) as f:
            note = f.read()
    except OSError:
        return
    if BEGIN not in note or END not in note:
        return
    with open(table_path) as f:
        table = f.read().split("\n", 1)[1].strip()  # without the title line
    # One heading level down (the note's sections are "##"), and the plots
    # linked from the repository root.
    table = "\n".join("#" + l if l.startswith("## ") else l for l in table.splitlines())
    table = re.sub(r"\]\(([\w.-]+\.svg)\)", r"](benches/results/\1)", table)
    head, rest = note.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(NOTE, "w") as f:
        f.write(f"{head}{BEGIN}\n\n{table}\n\n{END}{tail}")
    log(f"updated the results in {os.path.relpath(NOTE, ROOT)}; re-read its analysis against them")


def report(args, out, rows, runs, all_workloads, runner, lib, note):
    """Writes table.md and the plots (and, if `note`, BENCHMARKS.md's block)."""
    # What the results hold (with --merge, more than the last run measured).
    present = {(r["workload"], r["allocator"]) for r in rows}
    workloads = [w for w in all_workloads if any(p[0] == w["name"] for p in present)]
    allocators = [a for a in KNOWN_ALLOCATORS if any(p[1] == a for p in present)]
    threads_of = {w["name"]: sorted({r["threads"] for r in rows if r["workload"] == w["name"]})
                  for w in workloads}
    info = machine_info()
    tp = summarize(rows, "ops_per_sec")
    rss = summarize(rows, "peak_rss_kib")
    bad = failures(rows)
    table_path = os.path.join(out, "table.md")
    write_table(table_path, args, info, versions(allocators), allocators, workloads, threads_of,
                tp, rss, bad, runs, relpath(runner), relpath(lib))
    plots = write_plots(out, info, allocators, workloads, threads_of, tp, rss)
    if note:
        update_note(table_path)
    return table_path, plots


def relpath(p):
    return os.path.relpath(p, ROOT) if p else p


def report_only(args):
    out = args.out or os.path.join(ROOT, "benches", "results")
    rows, runs = load_previous(os.path.join(out, "results.csv"), os.path.join(out, "runs.json"))
    if not rows:
        die(f"no results in {out}")
    meta = json.loads(capture(["cargo", "metadata", "--format-version", "1", "--no-deps"]) or "{}")
    cdir = os.path.join(meta.get("target_directory", os.path.join(ROOT, "target")), "compare")
    runner, lib = os.path.join(cdir, "workloads"), os.path.join(cdir, "libstrata.so")
    if not os.path.exists(runner):
        die(f"{runner} is missing: run a measurement first")
    table_path, plots = report(args, out, rows, runs, list_workloads(runner), runner, lib,
                               note=not args.out)
    log(f"wrote {relpath(table_path)} and {len(plots)} plots from {len(rows)} recorded runs")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_list(text, allowed=None, cast=str):
    items = [cast(x.strip()) for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            die(f"unknown: {', '.join(map(str, bad))} (choose from {', '.join(allowed)})")
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", help="thread counts for multi-threaded workloads (default 1,2,4,8; quick: 1,2)")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3; quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: runner --quick, 1 rep, threads 1,2")
    ap.add_argument("--seconds", type=float, help="seconds per run (runner default: 1.0, quick 0.15)")
    ap.add_argument("--allocators", default=",".join(ALL_ALLOCATORS))
    ap.add_argument("--workloads", help="comma-separated subset (default: all)")
    ap.add_argument("--timeout", type=float, help="seconds before a cell is killed (default 60; quick 30)")
    ap.add_argument("--out", help="output folder (default benches/results; quick: target/compare/quick)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other workloads' rows of the existing results in --out and "
                         "replace only those of the workloads measured now")
    ap.add_argument("--report", action="store_true",
                    help="measure nothing: rewrite table.md, the plots and BENCHMARKS.md "
                         "from the results.csv and runs.json already in --out")
    ap.add_argument("--wait-load", type=float, metavar="LOAD",
                    help="first wait (up to 15 minutes) until the 1-minute load average is below LOAD")
    args = ap.parse_args()
    argv = "benches/compare.sh" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])

    threads = parse_list(args.threads or ("1,2" if args.quick else "1,2,4,8"), cast=int)
    if not threads or min(threads) < 1:
        die("--threads needs positive counts")
    threads = sorted(set(threads))
    args.reps = args.reps or (1 if args.quick else 3)
    timeout = args.timeout or (30 if args.quick else 60)
    allocators = parse_list(args.allocators, KNOWN_ALLOCATORS)

    if args.report:
        report_only(args)
        return
    ensure_packages(allocators)
    runner, lib = build(any(a == "strata" or a in STRATA_VARIANTS for a in allocators))
    workloads = all_workloads = list_workloads(runner)
    if args.workloads:
        names = parse_list(args.workloads, [w["name"] for w in workloads])
        workloads = [w for w in workloads if w["name"] in names]
    out = args.out or (os.path.join(os.path.dirname(runner), "quick") if args.quick
                       else os.path.join(ROOT, "benches", "results"))
    os.makedirs(out, exist_ok=True)
    libs = {"strata": lib, "glibc": None}
    libs.update({a: lib for a in STRATA_VARIANTS})
    libs.update({a: PEERS[a][0] for a in PEERS})
    threads_of = {w["name"]: (threads if w["multi"] else [1]) for w in workloads}

    if args.wait_load:
        deadline = time.monotonic() + 15 * 60
        while loadavg() >= args.wait_load and time.monotonic() < deadline:
            log(f"load average {loadavg():.2f} >= {args.wait_load}; waiting")
            time.sleep(30)

    # Allocators take turns going first, to spread slow drift over all of them.
    cells = []
    group = 0
    for rep in range(1, args.reps + 1):
        for w in workloads:
            for t in threads_of[w["name"]]:
                k = (rep + group) % len(allocators)
                group += 1
                for a in allocators[k:] + allocators[:k]:
                    cells.append((w["name"], t, a, rep))

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    t0 = time.monotonic()
    tty = sys.stderr.isatty()
    rows = []
    interrupted = False
    try:
        for i, (w, t, a, rep) in enumerate(cells, 1):
            done = time.monotonic() - t0
            eta = f", ~{fmt_duration(done / (i - 1) * (len(cells) - i + 1))} left" if i > 1 else ""
            line = f"[{i}/{len(cells)}] {w} t={t} {a} rep {rep} ...{eta}"
            if tty:
                sys.stderr.write("\r\033[K" + line)
                sys.stderr.flush()
            else:
                log(line)
            cmd, env = cell_command(runner, libs[a], w, t, a, args)
            status, f, wall, tail = run_cell(cmd, env, timeout)
            if status != "ok":
                if tty:
                    sys.stderr.write("\n")
                log(f"  {status}: {' '.join(shlex.quote(c) for c in cmd)}"
                    + (f"  (LD_PRELOAD={libs[a]})" if libs[a] else "") + "\n" + tail.rstrip())
            rows.append({
                "workload": w, "threads": t, "allocator": a, "rep": rep, "status": status,
                "ops": f.get("ops", ""), "seconds": f.get("seconds", ""),
                "ops_per_sec": f.get("ops_per_sec", ""), "peak_rss_kib": f.get("peak_rss_kib", ""),
                "verified": f.get("verified", ""), "wall_s": f"{wall:.3f}",
            })
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted; writing what was measured")
    if tty:
        sys.stderr.write("\r\033[K")
    elapsed = time.monotonic() - t0
    load_end = loadavg()

    measured_cells = len(rows)
    run_info = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": argv,
        "all": not args.workloads,
        "workloads": [w["name"] for w in workloads],
        "cells": len(rows),
        "mode": ("quick mode" if args.quick else f"{args.seconds or 1.0:g} s per run")
        + f", {args.reps} repetition(s)",
        "took": fmt_duration(elapsed),
        "load_start": load_start,
        "load_end": load_end,
    }
    if lib:
        run_info["strata"] = strata_build(lib)
    csv_path = os.path.join(out, "results.csv")
    runs_path = os.path.join(out, "runs.json")
    runs = []
    if args.merge:
        old_rows, runs = load_previous(csv_path, runs_path)
        measured = {w["name"] for w in workloads}
        old_rows = [r for r in old_rows if r["workload"] not in measured]
        used = sorted({int(r["run"]) for r in old_rows})
        runs = [runs[u - 1] for u in used]
        for r in old_rows:
            r["run"] = used.index(int(r["run"])) + 1
        rows = old_rows + rows
    runs.append(run_info)
    for r in rows:
        r.setdefault("run", len(runs))
    with open(csv_path, "w", newline="") as f:
        cols = ["workload", "threads", "allocator", "rep", "status", "ops", "seconds",
                "ops_per_sec", "peak_rss_kib", "verified", "wall_s", "run"]
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)
    with open(runs_path, "w") as f:
        json.dump(runs, f, indent=1)
        f.write("\n")

    table_path, plots = report(args, out, rows, runs, all_workloads, runner, lib,
                               note=not args.out and not args.quick and not interrupted)
    log(f"{measured_cells} runs in {fmt_duration(elapsed)}; wrote {relpath(csv_path)}, "
        f"{relpath(table_path)} and {len(plots)} plots in {relpath(out)}")
    bad = failures([r for r in rows if int(r["run"]) == len(runs)])
    if bad:
        log("FAILED cells:")
        for (w, t, a), statuses in sorted(bad.items()):
            log(f"  {w} t={t} {a}: {', '.join(statuses)}")
        sys.exit(1)
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()

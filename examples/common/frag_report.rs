//! fragmentation.rs's output: the samples as CSV and the chart as SVG (MiB over
//! seconds, one line per figure, phases as dashed lines). Included with `#[path]`.

use super::{MIB, PHASES, Sample};
use std::fmt::Write as _;

pub fn write_csv(path: &std::path::Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut s = String::from(
        "t_s,phase,allocated_bytes,active_bytes,resident_bytes,mapped_bytes,\
         thread_cached_bytes,central_cached_bytes,span_free_bytes,page_free_bytes,\
         page_purged_bytes,rss_bytes\n",
    );
    for x in samples {
        let _ = writeln!(
            s,
            "{:.4},{},{},{},{},{},{},{},{},{},{},{}",
            x.t,
            PHASES[x.phase],
            x.allocated,
            x.active,
            x.resident,
            x.mapped,
            x.thread_cached,
            x.central_cached,
            x.span_free,
            x.page_free,
            x.page_purged,
            x.rss
        );
    }
    std::fs::write(path, s)
}

/// A round tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `range`.
fn tick_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    mag * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// Draws the chart: MiB over seconds, one line per figure, phases as dashed lines.
pub fn svg(samples: &[Sample], phase_starts: &[f64], release_t: f64, title: &str) -> String {
    let (w, h) = (960.0, 520.0);
    let (x0, x1, y0, y1) = (70.0, 930.0, 420.0, 70.0); // plot box; y0 is the bottom
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1e-3);
    let v_max = samples
        .iter()
        .map(|s| s.mapped.max(s.rss).max(s.resident) as f64 / MIB)
        .fold(1.0, f64::max);
    let (tx, ty) = (tick_step(t_max, 10.0), tick_step(v_max, 6.0));
    let v_top = (v_max / ty).ceil() * ty;
    let px = |t: f64| x0 + (x1 - x0) * t / t_max;
    let py = |v: f64| y0 - (y0 - y1) * v / v_top;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>"#,
        w / 2.0
    );
    // Grid and ticks.
    let mut v = 0.0;
    while v <= v_top + ty / 2.0 {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
        v += ty;
    }
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#444"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 5.0,
            y0 + 19.0,
            fmt_tick(t, tx)
        );
        t += tx;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds</text><text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">MiB</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    // Phases.
    for (i, &t) in phase_starts.iter().enumerate() {
        let x = px(t);
        if i > 0 {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#888" stroke-dasharray="5,4"/>"##
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" fill="#555">{} {}</text>"##,
            x + 4.0,
            y1 - 8.0,
            i + 1,
            PHASES[i]
        );
    }
    if release_t > 0.0 {
        let x = px(release_t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#9467bd" stroke-dasharray="2,3"/><text x="{:.1}" y="{}" fill="#9467bd">release_memory()</text>"##,
            x + 4.0,
            y1 + 14.0
        );
    }
    // Lines, downsampled to at most ~600 points (the max of each bucket, so peaks
    // survive).
    type Get = fn(&Sample) -> u64;
    let series: [(&str, &str, &str, Get); 5] = [
        ("mapped", "#7f7f7f", "", |s| s.mapped),
        ("RSS (/proc/self/statm)", "#ff7f0e", "6,3", |s| s.rss),
        ("resident (strata estimate)", "#d62728", "", |s| s.resident),
        ("active", "#2ca02c", "", |s| s.active),
        ("allocated", "#1f77b4", "", |s| s.allocated),
    ];
    let bucket = samples.len().div_ceil(600).max(1);
    for (name, color, dash, get) in series {
        let mut pts = String::new();
        for chunk in samples.chunks(bucket) {
            let t = chunk[chunk.len() / 2].t;
            let v = chunk.iter().map(get).max().unwrap_or(0) as f64 / MIB;
            let _ = write!(pts, "{:.1},{:.1} ", px(t), py(v));
        }
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{}"><title>{name}</title></polyline>"#,
            pts.trim_end()
        );
    }
    // Legend, one row under the axis.
    let mut lx = x0;
    let ly = h - 28.0;
    for (name, color, dash, _) in series.iter().rev() {
        let d = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5"{d}/><text x="{}" y="{}">{name}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
        lx += 36.0 + 7.0 * name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else if step >= 0.1 {
        format!("{t:.1}")
    } else {
        format!("{t:.2}")
    }
}

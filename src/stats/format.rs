//! How a [`Stats`] snapshot prints: the table (`Display`), the JSON object
//! (`Stats::write_json`), and the byte figures with binary units they use (also
//! used by the heap map). None of it allocates.

use super::Stats;
use core::fmt::{self, Write as _};

/// Bytes with a binary unit, for humans: `512 B`, `96.0 KiB`, `12.3 MiB`; honours
/// width and alignment (`{:>12}`) without allocating. Also used by the heap map.
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        // In integers (no float formatting in the library): tenths of the unit,
        // rounded half to even, as `{:.1}` of the quotient would print it.
        let x = u128::from(self.0);
        let mut u = 0;
        while u + 1 < UNITS.len() && x >> (10 * (u + 1)) > 0 {
            u += 1;
        }
        let mut s = SmallStr {
            buf: [0; 32],
            len: 0,
        };
        if u == 0 {
            write!(s, "{} {}", self.0, UNITS[0])?;
        } else {
            let d = 1u128 << (10 * u);
            let (mut tenths, rest) = (x * 10 / d, x * 10 % d);
            if rest * 2 > d || (rest * 2 == d && tenths % 2 == 1) {
                tenths += 1;
            }
            write!(s, "{}.{} {}", tenths / 10, tenths % 10, UNITS[u])?;
        }
        f.pad(s.as_str())
    }
}

/// A formatted value in a fixed buffer, so that `Display` needs no allocation (it
/// runs at exit and from the C ABI).
struct SmallStr {
    buf: [u8; 32],
    len: usize,
}

impl SmallStr {
    fn as_str(&self) -> &str {
        // Only whole `str`s are copied in (see write_str), so this is UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl fmt::Write for SmallStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Display for Stats {
    /// A table for humans: totals, then one line per size class in use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = Bytes;
        writeln!(f, "heap statistics")?;
        let rows: [(&str, u64, &str); 12] = [
            (
                "allocated",
                self.allocated_bytes,
                "live blocks, rounded to their size class",
            ),
            (
                "active",
                self.active_bytes,
                "pages of spans in use + huge blocks",
            ),
            (
                "resident",
                self.resident_bytes,
                "mapped minus purged/untouched free pages",
            ),
            (
                "mapped",
                self.mapped_bytes,
                "chunks + huge blocks + metadata arena",
            ),
            (
                "metadata",
                self.metadata_bytes,
                "chunk headers + metadata arena",
            ),
            (
                "thread-cached",
                self.thread_cached_bytes,
                "free objects in thread heaps",
            ),
            (
                "central-cached",
                self.central_cached_bytes,
                "free objects in central batches",
            ),
            (
                "span-free",
                self.span_free_bytes,
                "unused slots inside small spans",
            ),
            (
                "page-free",
                self.page_free_bytes,
                "free pages in the page heap",
            ),
            ("  of which purged", self.page_purged_bytes, "not resident"),
            ("peak resident", self.peak_resident_bytes, ""),
            (
                "peak allocated",
                self.peak_allocated_bytes,
                "live + thread-cached, ±256 KiB/thread",
            ),
        ];
        for (name, v, what) in rows {
            writeln!(f, "  {name:<18} {:>12}  {what}", b(v))?;
        }
        if let Some(r) = self.requested_bytes {
            writeln!(
                f,
                "  {:<18} {:>12}  exact sizes asked for (checked mode)",
                "requested",
                b(r)
            )?;
        }
        writeln!(
            f,
            "  purged ever {}, unmapped ever {}",
            b(self.purged_bytes_total),
            b(self.unmapped_bytes_total)
        )?;
        writeln!(
            f,
            "  free spans {}, the largest {}",
            self.free_spans,
            b(self.largest_free_span_bytes)
        )?;
        writeln!(
            f,
            "  allocs {}  frees {}  reallocs {} ({} in place)",
            self.allocs, self.frees, self.reallocs, self.reallocs_in_place
        )?;
        writeln!(
            f,
            "  chunks {}  large blocks {} ({})  huge blocks {} ({}, {} cached)  thread heaps {} live / {} created",
            self.chunks,
            self.large_blocks,
            b(self.large_bytes),
            self.huge_blocks,
            b(self.huge_bytes),
            b(self.huge_cached_bytes),
            self.thread_heaps_live,
            self.thread_heaps_created
        )?;
        writeln!(
            f,
            "  thread caches: {} borrowed of a pool of {}",
            b(self.thread_cache_lent_bytes),
            b(self.thread_cache_pool_bytes)
        )?;
        if self.percpu_budget_bytes > 0 {
            writeln!(
                f,
                "  per-CPU caches: capacity {} of a budget of {}",
                b(self.percpu_capacity_bytes),
                b(self.percpu_budget_bytes)
            )?;
        }
        writeln!(
            f,
            "  {:>7} {:>10} {:>7} {:>11} {:>11} {:>11} {:>11}",
            "class", "live", "spans", "span bytes", "thread$", "central$", "span-free"
        )?;
        for c in self.classes.iter().filter(|c| c.spans > 0) {
            writeln!(
                f,
                "  {:>7} {:>10} {:>7} {:>11} {:>11} {:>11} {:>11}",
                c.size,
                c.live_objects,
                c.spans,
                b(c.span_bytes),
                c.thread_cached,
                c.central_cached,
                b(c.span_free_bytes())
            )?;
        }
        Ok(())
    }
}

impl Stats {
    /// Writes the snapshot as one JSON object (no allocation, so it works into a
    /// fixed buffer). Bytes are integers; `requested_bytes` is `null` when unknown;
    /// `classes` lists every class, smallest first.
    pub fn write_json(&self, w: &mut impl fmt::Write) -> fmt::Result {
        w.write_char('{')?;
        let fields: [(&str, u64); 33] = [
            ("allocated_bytes", self.allocated_bytes),
            ("active_bytes", self.active_bytes),
            ("resident_bytes", self.resident_bytes),
            ("mapped_bytes", self.mapped_bytes),
            ("metadata_bytes", self.metadata_bytes),
            ("thread_cached_bytes", self.thread_cached_bytes),
            ("central_cached_bytes", self.central_cached_bytes),
            ("span_free_bytes", self.span_free_bytes),
            ("page_free_bytes", self.page_free_bytes),
            ("page_purged_bytes", self.page_purged_bytes),
            ("free_spans", self.free_spans),
            ("largest_free_span_bytes", self.largest_free_span_bytes),
            ("purged_bytes_total", self.purged_bytes_total),
            ("unmapped_bytes_total", self.unmapped_bytes_total),
            ("peak_resident_bytes", self.peak_resident_bytes),
            ("peak_allocated_bytes", self.peak_allocated_bytes),
            ("allocs", self.allocs),
            ("frees", self.frees),
            ("reallocs", self.reallocs),
            ("reallocs_in_place", self.reallocs_in_place),
            ("thread_heaps_live", self.thread_heaps_live),
            ("thread_heaps_created", self.thread_heaps_created),
            ("chunks", self.chunks),
            ("large_blocks", self.large_blocks),
            ("large_bytes", self.large_bytes),
            ("huge_blocks", self.huge_blocks),
            ("huge_bytes", self.huge_bytes),
            ("huge_cached_bytes", self.huge_cached_bytes),
            ("percpu_capacity_bytes", self.percpu_capacity_bytes),
            ("percpu_budget_bytes", self.percpu_budget_bytes),
            ("thread_cache_pool_bytes", self.thread_cache_pool_bytes),
            ("thread_cache_lent_bytes", self.thread_cache_lent_bytes),
            (
                "classes_in_use",
                self.classes.iter().filter(|c| c.spans > 0).count() as u64,
            ),
        ];
        for (name, v) in fields {
            write!(w, "\"{name}\":{v},")?;
        }
        match self.requested_bytes {
            Some(r) => write!(w, "\"requested_bytes\":{r},")?,
            None => w.write_str("\"requested_bytes\":null,")?,
        }
        w.write_str("\"classes\":[")?;
        for (i, c) in self.classes.iter().enumerate() {
            if i > 0 {
                w.write_char(',')?;
            }
            write!(
                w,
                "{{\"size\":{},\"live_objects\":{},\"spans\":{},\"span_bytes\":{},\
                 \"thread_cached\":{},\"central_cached\":{},\"allocs\":{}}}",
                c.size,
                c.live_objects,
                c.spans,
                c.span_bytes,
                c.thread_cached,
                c.central_cached,
                c.allocs
            )?;
        }
        w.write_str("]}")
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn bytes_print_in_the_largest_fitting_unit_and_pad() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(96 << 10).to_string(), "96.0 KiB");
        assert_eq!(Bytes(12 << 20 | 300 << 10).to_string(), "12.3 MiB");
        assert_eq!(format!("{:>10}", Bytes(2048)), "   2.0 KiB");
        // As `{:.1}` of the quotient: ties to even, carries into the next digit.
        for x in [
            1024 + 51,
            1024 + 102,
            1024 + 1023,
            3 << 19,
            (5 << 20) / 4,
            u64::MAX,
        ] {
            let (mut v, mut u) = (x as f64, 0);
            while v >= 1024.0 && u < 4 {
                v /= 1024.0;
                u += 1;
            }
            let unit = ["B", "KiB", "MiB", "GiB", "TiB"][u];
            assert_eq!(Bytes(x).to_string(), format!("{v:.1} {unit}"), "{x}");
        }
    }
}

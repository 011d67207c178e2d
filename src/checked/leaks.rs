//! Checked mode: walking every block (the validator's canary checks, the leak
//! report) and the configuration read at load time.

use super::CANARY;
use super::block::{Block, Kind, Trailer, decode, first_not, generation, next_generation, secret};
use super::quarantine::{QUARANTINE_BYTES, validate_quarantine};
use crate::Violation;
use crate::backend::Locks;
use crate::chunk::SpanKind;
use crate::env::{parse_size, truthy};
use crate::global::BACKEND;
use crate::report::Stderr;
use crate::size_class::{NUM_CLASSES, SizeClass};
use crate::sync::{AtomicU8, Ordering};
use core::ffi::c_char;
use core::fmt::{self, Write};
use core::sync::atomic::fence;

// ---- walking every block: validation and leak report ------------------------------

/// Calls `f` on every block the tiers may have handed out: each carved object of every
/// Small span, every Large span, every huge mapping. Holds every class lock and, in
/// turn, the page-heap and huge-registry locks (the order of `Backend::validate`).
fn for_each_block(mut f: impl FnMut(Block)) {
    BACKEND.with_locked(Locks::CLASSES, || {
        BACKEND.page_heap.for_each_span(|s| match s.kind() {
            SpanKind::Small => {
                let c = s.class();
                let size = c.size_bytes();
                // `carved` is read under the class lock (held).
                for i in 0..s.carved() as usize {
                    f(Block {
                        // SAFETY: object i < carved lies inside the span.
                        p: unsafe { s.base().add(i * size) },
                        slot: size,
                        kind: Kind::Small(c),
                    });
                }
            }
            SpanKind::Large => f(Block {
                p: s.base(),
                slot: s.bytes(),
                kind: Kind::Large,
            }),
            _ => {}
        });
    });
    BACKEND.huge.for_each(|p, len| {
        f(Block {
            p,
            slot: len,
            kind: Kind::Huge,
        })
    });
}

/// Block invariants 1 and 2 (see the module docs), for `validate_heap`.
pub(crate) fn validate_blocks() -> Result<(), Violation> {
    let mut res = Ok(());
    for_each_block(|b| {
        if res.is_err() {
            return;
        }
        let word = b.trailer().load(Ordering::Acquire);
        let Trailer::Live(n) = decode(b.p, word) else {
            return;
        };
        if n > b.capacity() {
            return;
        }
        // SAFETY: [n, capacity) lies in the block's mapped slot.
        if unsafe { first_not(b.p.add(n), b.capacity() - n, CANARY) }.is_some() {
            // A concurrent free marks the trailer before it fills the block, and a
            // realloc in place rewrites it before the caller writes the grown part:
            // a changed trailer means the block moved on, not that it is damaged.
            fence(Ordering::Acquire);
            if b.trailer().load(Ordering::Relaxed) == word {
                res = Err(Violation {
                    structure: "Block",
                    invariant: 1,
                    what: "canary damaged: a write past the end of the block",
                    addr: b.p as usize,
                });
            }
        }
    });
    res?;
    validate_quarantine()
}

/// A number of live blocks and the bytes their owners asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakCount {
    /// Live blocks.
    pub blocks: usize,
    /// Bytes requested for them (not counting class rounding).
    pub bytes: usize,
}

impl LeakCount {
    fn add(&mut self, n: usize) {
        self.blocks += 1;
        self.bytes += n;
    }
}

/// Live blocks by size class: what [`crate::leak_report`] found (checked mode).
/// Blocks in quarantine are freed, so not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakReport {
    small: [LeakCount; NUM_CLASSES],
    large: LeakCount,
    huge: LeakCount,
}

impl LeakReport {
    /// All live blocks.
    pub fn total(&self) -> LeakCount {
        let mut t = LeakCount::default();
        for c in self.small.iter().chain([&self.large, &self.huge]) {
            t.blocks += c.blocks;
            t.bytes += c.bytes;
        }
        t
    }

    /// The size classes with live blocks: (class index, object bytes, count).
    pub fn by_class(&self) -> impl Iterator<Item = (usize, usize, LeakCount)> + '_ {
        self.small
            .iter()
            .enumerate()
            .filter(|(_, c)| c.blocks > 0)
            .map(|(i, c)| (i, SizeClass(i as u8).size_bytes(), *c))
    }

    /// Live Large blocks (whole-page spans, 256 KiB to 1 MiB).
    pub fn large(&self) -> LeakCount {
        self.large
    }

    /// Live huge blocks (own mappings, above 1 MiB).
    pub fn huge(&self) -> LeakCount {
        self.huge
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.total();
        if t.blocks == 0 {
            return f.write_str("leak report: no live blocks");
        }
        write!(
            f,
            "leak report: {} live block{}, {} bytes requested",
            t.blocks,
            plural(t.blocks),
            t.bytes
        )?;
        for (i, size, c) in self.by_class() {
            write!(
                f,
                "\n  size class {i} ({size}-byte objects): {} block{}, {} bytes",
                c.blocks,
                plural(c.blocks),
                c.bytes
            )?;
        }
        for (name, c) in [("large blocks", self.large), ("huge blocks", self.huge)] {
            if c.blocks > 0 {
                write!(
                    f,
                    "\n  {name}: {} block{}, {} bytes",
                    c.blocks,
                    plural(c.blocks),
                    c.bytes
                )?;
            }
        }
        Ok(())
    }
}

/// A point in the program's run, from [`crate::leak_mark`]: a later
/// [`crate::leak_report_since`] counts only the blocks allocated (or reallocated)
/// after it that are still live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakMark {
    generation: u8,
}

/// Whether another mark was taken since the process started (the exit report then
/// also counts the blocks allocated since the last one).
static MARKED: AtomicU8 = AtomicU8::new(0);

/// See [`crate::leak_mark`].
pub(crate) fn leak_mark() -> LeakMark {
    MARKED.store(1, Ordering::Relaxed);
    LeakMark {
        generation: next_generation(),
    }
}

/// The live blocks whose generation passes `keep`.
fn live_blocks(keep: impl Fn(u8) -> bool) -> LeakReport {
    let mut r = LeakReport {
        small: [LeakCount::default(); NUM_CLASSES],
        large: LeakCount::default(),
        huge: LeakCount::default(),
    };
    for_each_block(|b| {
        if let Some((n, g)) = b.live_size_and_generation() {
            if !keep(g) {
                return;
            }
            match b.kind {
                Kind::Small(c) => r.small[c.index()].add(n),
                Kind::Large => r.large.add(n),
                Kind::Huge => r.huge.add(n),
            }
        }
    });
    r
}

/// See [`crate::leak_report`].
pub(crate) fn leak_report() -> LeakReport {
    live_blocks(|_| true)
}

/// See [`crate::leak_report_since`]: generations from the mark's to the current
/// one, counted modulo 256.
pub(crate) fn leak_report_since(mark: LeakMark) -> LeakReport {
    let span = generation().wrapping_sub(mark.generation);
    live_blocks(|g| g.wrapping_sub(mark.generation) <= span)
}

/// See [`crate::print_leak_report`]: the report on stderr, without allocating.
pub(crate) fn print_leak_report() -> LeakReport {
    let r = leak_report();
    let mut w = Stderr::new();
    let _ = writeln!(w, "strata: {r}");
    w.flush();
    r
}

/// The report at exit (`STRATA_LEAK_REPORT`): every live block, a reminder of what
/// that includes, and, if the program took a [`LeakMark`], the blocks allocated
/// since the last one.
extern "C" fn print_leak_report_at_exit() {
    let all = print_leak_report();
    let mut w = Stderr::new();
    if all.total().blocks > 0 {
        let _ = writeln!(
            w,
            "strata: (live at exit is not leaked: the Rust runtime, the C library and a test \
             harness keep some blocks reachable until exit; strata::leak_mark() and \
             leak_report_since() count only what a part of the program left behind)"
        );
    }
    if MARKED.load(Ordering::Relaxed) != 0 {
        let since = leak_report_since(LeakMark {
            generation: generation(),
        })
        .total();
        let _ = writeln!(
            w,
            "strata: of those, allocated since the last leak_mark(): {} block{}, {} bytes",
            since.blocks,
            plural(since.blocks),
            since.bytes
        );
    }
    w.flush();
}

// ---- configuration -----------------------------------------------------------------

static LEAK_AT_EXIT: AtomicU8 = AtomicU8::new(0);

/// Reads `STRATA_LEAK_REPORT` and `STRATA_QUARANTINE_BYTES` (or their build-time
/// defaults); called once, by the load-time constructor in `settings.rs`.
///
/// # Safety
/// `envp` is null or the process's environment block.
pub(crate) unsafe fn configure(envp: *const *const c_char) {
    let _ = secret();
    // SAFETY: forwarded contract.
    let (q, leak) = unsafe {
        (
            crate::env::setting!(envp, "QUARANTINE_BYTES"),
            crate::env::setting!(envp, "LEAK_REPORT"),
        )
    };
    if let Some(bytes) = q.and_then(parse_size) {
        QUARANTINE_BYTES.store(bytes as usize, Ordering::Relaxed);
    }
    let on = leak.is_some_and(truthy);
    if on && LEAK_AT_EXIT.swap(1, Ordering::Relaxed) == 0 {
        // at_exit may allocate, which works (every static is initialised). If the
        // C library cannot record it, say so: the report would silently be missing.
        if crate::platform::at_exit(print_leak_report_at_exit).is_err() {
            crate::report::write_all(
                crate::platform::STDERR,
                b"strata: atexit failed; no leak report will be written at exit\n",
            );
        }
    }
}

//! Shared pieces of the workloads: the random generator, blocks that carry a
//! checkable stamp, the start/stop gate of timed runs, and the count of
//! verified blocks.
//!
//! Every block is obtained from the C `malloc`/`calloc` and returned with the
//! C `free`, exactly as the C benchmarks these workloads imitate do, so under
//! `LD_PRELOAD` the preloaded library serves every one of them.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Exit status of a run whose data did not verify.
pub const EXIT_VERIFY: i32 = 1;

// ---------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------

/// xorshift64*: fast, deterministic, good enough for picking slots and sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    #[inline(always)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n <= 2^32`).
    #[inline(always)]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline(always)]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    #[inline(always)]
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// A precomputed table of sizes drawn from a distribution, indexed at random:
/// keeps floating-point work out of the measured loops.
pub struct SizeTable {
    sizes: Vec<usize>,
}

impl SizeTable {
    pub const LEN: usize = 8192;

    pub fn new(rng: &mut Rng, mut draw: impl FnMut(&mut Rng) -> usize) -> SizeTable {
        SizeTable {
            sizes: (0..Self::LEN).map(|_| draw(rng)).collect(),
        }
    }

    #[inline(always)]
    pub fn pick(&self, rng: &mut Rng) -> usize {
        self.sizes[rng.below(Self::LEN)]
    }

    pub fn mean(&self) -> f64 {
        self.sizes.iter().sum::<usize>() as f64 / self.sizes.len() as f64
    }
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

static VERIFIED_TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Blocks verified by this thread and not yet added to the total.
    static VERIFIED: Cell<u64> = const { Cell::new(0) };
}

/// Counts one verified object (for objects that are not [`Block`]s).
#[inline(always)]
pub fn count_verified() {
    VERIFIED.with(|v| v.set(v.get() + 1));
}

/// Adds this thread's count of verified blocks to the process total. Every
/// thread that frees blocks calls it before it ends.
pub fn flush_verified() {
    let n = VERIFIED.with(|v| v.replace(0));
    VERIFIED_TOTAL.fetch_add(n, Ordering::Relaxed);
}

/// Blocks verified so far by the threads that flushed their counts.
pub fn verified_total() -> u64 {
    flush_verified();
    VERIFIED_TOTAL.load(Ordering::Relaxed)
}

/// Runs `f` and then flushes the calling thread's verified count: the body of
/// every spawned thread goes through this.
pub fn counted<T>(f: impl FnOnce() -> T) -> T {
    let r = f();
    flush_verified();
    r
}

/// Reports corrupted data and ends the process with [`EXIT_VERIFY`].
#[cold]
#[inline(never)]
pub fn corrupt(what: &str, p: *const u8, size: usize, found: u64, expected: u64) -> ! {
    eprintln!(
        "VERIFY FAILED: {what}: block {p:?} of {size} bytes: found {found:#018x}, expected {expected:#018x}"
    );
    std::process::exit(EXIT_VERIFY)
}

#[cold]
#[inline(never)]
fn out_of_memory(size: usize) -> ! {
    eprintln!("allocation of {size} bytes failed");
    std::process::exit(EXIT_VERIFY)
}

/// The stamp of a block: a hash of its address and size, so that two live
/// blocks never carry the same stamp.
#[inline(always)]
fn tag(p: *const u8, size: usize) -> u64 {
    ((p as u64) ^ ((size as u64) << 40) ^ 0x5a5a_c3c3_0f0f_9696).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A block from `malloc`, owned by exactly one `Block` value until `free`.
///
/// Its first and last 8 bytes hold a stamp derived from its address and size
/// (blocks under 16 bytes: every byte); `free` checks the stamp before it
/// returns the block, and ends the process if it changed.
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: a `Block` is the only handle to its allocation, and memory from
// `malloc` may be freed by any thread.
unsafe impl Send for Block {}

impl Block {
    /// `malloc(size)` (`size >= 1`), stamped.
    #[inline(always)]
    pub fn new(size: usize) -> Block {
        debug_assert!(size > 0);
        // SAFETY: plain C allocation; the result is checked for null below.
        let p = unsafe { libc::malloc(size) }.cast::<u8>();
        let Some(ptr) = NonNull::new(p) else {
            out_of_memory(size)
        };
        let b = Block { ptr, size };
        b.stamp();
        b
    }

    /// Gives up the handle (not the block): the caller keeps the block
    /// reachable and takes it back with [`Block::from_raw`].
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<u8> {
        self.ptr
    }

    /// Takes back a block given up with [`Block::into_raw`].
    ///
    /// # Safety
    /// `ptr` is a live block of `size` bytes from [`Block::into_raw`], and it
    /// is taken back at most once.
    #[inline(always)]
    pub unsafe fn from_raw(ptr: NonNull<u8>, size: usize) -> Block {
        Block { ptr, size }
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Writes the stamp (again, after the caller used the bytes).
    #[inline(always)]
    pub fn stamp(&self) {
        let (p, size) = (self.ptr.as_ptr(), self.size);
        let t = tag(p, size);
        if size >= 16 {
            // SAFETY: the block is live and `size >= 16` bytes long; unaligned
            // writes need no alignment.
            unsafe {
                p.cast::<u64>().write_unaligned(t);
                p.add(size - 8).cast::<u64>().write_unaligned(!t);
            }
        } else {
            for i in 0..size {
                // SAFETY: `i < size`, inside the live block.
                unsafe { p.add(i).write((t >> (8 * i)) as u8) };
            }
        }
    }

    /// Checks the stamp; ends the process on a mismatch.
    #[inline(always)]
    pub fn verify(&self, what: &str) {
        let (p, size) = (self.ptr.as_ptr(), self.size);
        let t = tag(p, size);
        if size >= 16 {
            // SAFETY: as in `stamp`.
            let (head, tail) = unsafe {
                (
                    p.cast::<u64>().read_unaligned(),
                    p.add(size - 8).cast::<u64>().read_unaligned(),
                )
            };
            if head != t {
                corrupt(what, p, size, head, t);
            }
            if tail != !t {
                corrupt(what, p, size, tail, !t);
            }
        } else {
            for i in 0..size {
                // SAFETY: `i < size`, inside the live block.
                let b = unsafe { p.add(i).read() };
                let want = (t >> (8 * i)) as u8;
                if b != want {
                    corrupt(what, p, size, u64::from(b), u64::from(want));
                }
            }
        }
        count_verified();
    }

    /// Verifies the stamp and frees the block.
    #[inline(always)]
    pub fn free(self, what: &str) {
        self.verify(what);
        // SAFETY: the block came from `malloc` and this is its only handle,
        // consumed here, so it is freed exactly once.
        unsafe { libc::free(self.ptr.as_ptr().cast()) };
    }
}

// ---------------------------------------------------------------------------
// Timed runs
// ---------------------------------------------------------------------------

/// Start and stop of a timed multi-threaded run: every worker sets itself up,
/// calls [`Gate::begin`], works while [`Gate::running`], calls
/// [`Gate::finish`], and only then verifies and frees what it still holds.
pub struct Gate {
    start: Barrier,
    end: Barrier,
    stop: AtomicBool,
}

impl Gate {
    pub fn begin(&self) {
        self.start.wait();
    }

    #[inline(always)]
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        self.end.wait();
    }
}

/// Runs `body(tid, gate)` on `threads` threads for about `dur`; returns the
/// sum of the bodies' operation counts and the time from the start barrier to
/// the end barrier (the bodies' own set-up and clean-up are not timed).
pub fn timed<F>(threads: usize, dur: Duration, body: F) -> (u64, Duration)
where
    F: Fn(usize, &Gate) -> u64 + Sync,
{
    let gate = Gate {
        start: Barrier::new(threads + 1),
        end: Barrier::new(threads + 1),
        stop: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (gate, body) = (&gate, &body);
                s.spawn(move || counted(|| body(t, gate)))
            })
            .collect();
        gate.start.wait();
        let start = Instant::now();
        std::thread::sleep(dur);
        gate.stop.store(true, Ordering::Relaxed);
        gate.end.wait();
        let elapsed = start.elapsed();
        let ops = handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .sum();
        (ops, elapsed)
    })
}

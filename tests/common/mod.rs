//! Helpers shared by the integration tests: content patterns, a small RNG, and
//! resident-memory readings. (`tests/common/mod.rs` is not a test binary itself.)
#![allow(dead_code)]

pub mod child;

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// Deterministic content: byte `off` of a block with `seed`, written and checked a
/// word at a time.
pub mod pattern {
    #[inline]
    pub fn word(seed: u64, w: u64) -> u64 {
        let mut x = seed ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^ (x >> 32)
    }

    #[inline]
    pub fn byte(seed: u64, off: usize) -> u8 {
        (word(seed, (off / 8) as u64) >> (8 * (off % 8))) as u8
    }

    /// The 8 pattern bytes starting at byte offset `off`, as a native-endian word.
    #[inline]
    fn word_at(seed: u64, off: usize) -> u64 {
        let (w, r) = ((off / 8) as u64, (off % 8) as u32);
        let v = if r == 0 {
            word(seed, w)
        } else {
            (word(seed, w) >> (8 * r)) | (word(seed, w + 1) << (64 - 8 * r))
        };
        v.to_le()
    }

    /// Fills `buf`, which holds pattern offsets `base..base + buf.len()`.
    pub fn fill_from(buf: &mut [u8], seed: u64, base: usize) {
        // SAFETY: every bit pattern is a valid `u8` and a valid `u64`.
        let (pre, mid, post) = unsafe { buf.align_to_mut::<u64>() };
        let mut off = base;
        for b in pre {
            *b = byte(seed, off);
            off += 1;
        }
        for w in mid {
            *w = word_at(seed, off);
            off += 8;
        }
        for b in post {
            *b = byte(seed, off);
            off += 1;
        }
    }

    pub fn fill(buf: &mut [u8], seed: u64) {
        fill_from(buf, seed, 0);
    }

    /// Offset (relative to `buf`) of the first byte that differs from the pattern.
    pub fn first_mismatch(buf: &[u8], seed: u64, base: usize) -> Option<usize> {
        // SAFETY: every bit pattern is a valid `u8` and a valid `u64`.
        let (pre, mid, post) = unsafe { buf.align_to::<u64>() };
        let mut off = base;
        for &b in pre {
            if b != byte(seed, off) {
                return Some(off - base);
            }
            off += 1;
        }
        for &w in mid {
            if w != word_at(seed, off) {
                return (off..off + 8)
                    .find(|&o| buf[o - base] != byte(seed, o))
                    .map(|o| o - base);
            }
            off += 8;
        }
        for &b in post {
            if b != byte(seed, off) {
                return Some(off - base);
            }
            off += 1;
        }
        None
    }

    #[track_caller]
    pub fn check_from(buf: &[u8], seed: u64, base: usize, what: &str) {
        if let Some(i) = first_mismatch(buf, seed, base) {
            panic!(
                "{what}: pattern mismatch at byte {} of {} (expected {:#04x}, found {:#04x})",
                base + i,
                base + buf.len(),
                byte(seed, base + i),
                buf[i]
            );
        }
    }

    #[track_caller]
    pub fn check(buf: &[u8], seed: u64, what: &str) {
        check_from(buf, seed, 0, what);
    }
}

/// xorshift64*; each test adds its own size distributions in an `impl Rng`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(pattern::word(seed, 0x5EED) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Resident set size in bytes: second field of /proc/self/statm, in pages of
/// 4096 bytes.
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("parse /proc/self/statm");
    pages * 4096
}

pub fn mib(bytes: isize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Whether the per-CPU front end serves this process (`STRATA_PERCPU` in the
/// environment, and the kernel allows it): threads beyond the first ones then have
/// no thread cache.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn percpu_front_serves() -> bool {
    strata::percpu_front_counters().is_some()
}

/// No per-CPU front end on other platforms.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn percpu_front_serves() -> bool {
    false
}

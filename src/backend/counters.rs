//! The backend's counters: operations on the paths that bypass thread caches, and
//! the bytes handed out of the shared tiers. Written by the backend's own paths and
//! by front ends (through [`super::Backend::note_flow`]); read by `stats`, above.

use crate::sync::{AtomicU64, Ordering};

/// Counters kept by the shared tiers for paths that bypass thread heaps.
///
/// Invariant: each counter only grows, except `out_bytes`, which is the sum of the
/// flows published by thread heaps and large/huge allocations minus their frees.
pub(crate) struct Counters {
    /// Small objects allocated and freed without a thread heap (threads set up or
    /// torn down).
    pub direct_allocs: AtomicU64,
    pub direct_frees: AtomicU64,
    pub large_allocs: AtomicU64,
    pub large_frees: AtomicU64,
    pub huge_allocs: AtomicU64,
    pub huge_frees: AtomicU64,
    /// Reallocations by threads without a live heap.
    pub reallocs: AtomicU64,
    pub reallocs_in_place: AtomicU64,
    /// Bytes handed out of the central tier (live plus thread-cached) plus large and
    /// huge blocks, to within `PUBLISH_BYTES` per thread (wrapping signed sum).
    out_bytes: AtomicU64,
    /// High-water mark of `out_bytes`.
    peak_out_bytes: AtomicU64,
}

impl Counters {
    crate::sync::loom_const_fn! {
        pub(crate) fn new() -> Counters {
            Counters {
                direct_allocs: AtomicU64::new(0),
                direct_frees: AtomicU64::new(0),
                large_allocs: AtomicU64::new(0),
                large_frees: AtomicU64::new(0),
                huge_allocs: AtomicU64::new(0),
                huge_frees: AtomicU64::new(0),
                reallocs: AtomicU64::new(0),
                reallocs_in_place: AtomicU64::new(0),
                out_bytes: AtomicU64::new(0),
                peak_out_bytes: AtomicU64::new(0),
            }
        }
    }

    /// Adds one to a counter. Relaxed: statistics; nothing is published with them.
    #[inline]
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `delta` bytes to the flow out of the shared tiers and updates its peak.
    pub(crate) fn flow(&self, delta: isize) {
        if delta == 0 {
            return;
        }
        // Relaxed: statistics. The sum is kept wrapping, as two's complement.
        let now = self
            .out_bytes
            .fetch_add(delta as i64 as u64, Ordering::Relaxed)
            .wrapping_add(delta as i64 as u64);
        if delta > 0 && (now as i64) > 0 {
            self.peak_out_bytes.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The bytes handed out of the shared tiers now (live plus thread-cached, to
    /// within `PUBLISH_BYTES` per thread; Relaxed: statistics). Clamped at zero: the
    /// unpublished flows of several threads may briefly make the sum negative.
    pub(crate) fn out_bytes(&self) -> u64 {
        let v = Self::get(&self.out_bytes);
        if (v as i64) < 0 { 0 } else { v }
    }

    /// The high-water mark of the bytes handed out (Relaxed: statistics).
    pub(crate) fn peak_out_bytes(&self) -> u64 {
        Self::get(&self.peak_out_bytes)
    }

    /// A counter's value (Relaxed: statistics).
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

//! The huge registry's `validate`: its invariants 1 to 5, checked under its lock.

use super::*;

impl HugeRegistry {
    /// Checks invariants 1 to 5: every record sits in bucket `hash(ptr)`, no pointer
    /// is recorded twice, `count`/`bytes` add up, the cache is in order, within its
    /// limits and disjoint from the live blocks, and the OS mappings they span are
    /// within bounds and add up to `extra_vmas`.
    pub fn validate(&self) -> Result<(), crate::Violation> {
        use crate::check::check;
        self.with(|h| {
            let (mut count, mut bytes, mut extra) = (0, 0, 0);
            for (b, &head) in h.buckets.iter().enumerate() {
                // SAFETY: a bucket head, under the lock.
                for rec in unsafe { chain(head) } {
                    check(
                        hash(rec.ptr) == b,
                        "HugeRegistry",
                        1,
                        "record in the wrong bucket",
                        rec.ptr,
                    )?;
                    check(
                        // SAFETY: the rest of the same chain, under the lock.
                        unsafe { chain(rec.next) }.all(|other| other.ptr != rec.ptr),
                        "HugeRegistry",
                        1,
                        "pointer recorded twice",
                        rec.ptr,
                    )?;
                    check(
                        (1..=MAX_VMAS).contains(&rec.vmas.count()) && rec.vmas.valid(rec.len),
                        "HugeRegistry",
                        4,
                        "a block spans more OS mappings than a block may",
                        rec.ptr,
                    )?;
                    count += 1;
                    bytes += rec.len;
                    extra += rec.vmas.count() as usize - 1;
                }
            }
            check(
                count == h.count && bytes == h.bytes,
                "HugeRegistry",
                2,
                "count/bytes differ from the records",
                0,
            )?;
            let entries = &h.cache[..h.cached];
            let mut cached_bytes = 0;
            for (i, e) in entries.iter().enumerate() {
                check(
                    e.len > 0 && e.len <= MAX_CACHED_BLOCK,
                    "HugeRegistry",
                    3,
                    "cached mapping of a length the cache does not keep",
                    e.ptr,
                )?;
                check(
                    (1..=MAX_VMAS).contains(&e.vmas)
                        && h.vmas_at(i).count() == e.vmas
                        && h.vmas_at(i).valid(e.len),
                    "HugeRegistry",
                    4,
                    "a cached mapping spans more OS mappings than a block may",
                    e.ptr,
                )?;
                check(
                    i == 0 || entries[i - 1].freed_ms <= e.freed_ms,
                    "HugeRegistry",
                    3,
                    "cache not in age order",
                    e.ptr,
                )?;
                check(
                    // SAFETY: a bucket head, under the lock.
                    unsafe { chain(h.buckets[hash(e.ptr)]) }.all(|rec| rec.ptr != e.ptr),
                    "HugeRegistry",
                    3,
                    "cached mapping is also a live block",
                    e.ptr,
                )?;
                cached_bytes += e.len;
                extra += e.vmas as usize - 1;
            }
            check(
                extra == h.extra_vmas,
                "HugeRegistry",
                4,
                "extra_vmas differs from the records and the cache",
                0,
            )?;
            check(
                cached_bytes == h.cached_bytes,
                "HugeRegistry",
                3,
                "cached_bytes differs from the cache",
                0,
            )
        })
    }
}

//! Capacities that follow demand, within a budget.
//!
//! Every class starts each CPU with room for 8 KiB of objects at most, none above
//! 8 KiB ([`initial_cap`]). A miss
//! (a refill on an empty stack, a flush on a full one) is what a capacity too small
//! for the CPU's working set costs, so each miss widens that class on that CPU by
//! one batch, up to the class's maximum ([`super::cap_for`]), as long as the CPU's
//! capacities together stay within its share of the budget (the budget divided by
//! the CPU count). Widening needs no lock: `Slab::grow_capacity` only raises a
//! bound. The background purge thread narrows ([`CpuCaches::idle_pass`], which
//! also drains a CPU where nothing moved): each pass, on a CPU that is in use,
//! a class whose header did not change since the last pass (no push, no pop) is
//! halved towards its initial capacity, and a CPU over its share (after a lower
//! budget was set) has every class halved; both with one lock and fence per CPU
//! (`Slab::set_capacities`), the objects above the new capacities going back to
//! the central tier. Memory a CPU holds is at most its capacities' bytes, so the
//! front end holds at most the budget (plus, per CPU, what the initial capacities
//! reserve, whatever the budget).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::drain::Chains;
use super::{CpuCaches, cap_for};
use crate::backend::Backend;
use crate::os::Os;
use crate::percpu::{RseqArea, Slab};
use crate::size_class::{CLASS_BATCH, CLASS_SIZE, NUM_CLASSES};

/// The default budget per CPU: what one thread cache may hold, so that a process
/// with as many busy threads as CPUs caches about as much with either front end.
pub const DEFAULT_CPU_BYTES: usize = 2 << 20;

/// The bytes of a class's capacity on a CPU before its first miss there.
const INITIAL_CLASS_BYTES: usize = 8 << 10;

/// The capacity a class starts with on every CPU: what fits in 8 KiB, at most a
/// batch (and its maximum), so that all classes together reserve at most a few
/// hundred KiB of a CPU's share; none for classes above 8 KiB, whose objects go
/// to and from the central tier until their first miss on the CPU widens them by
/// a batch.
pub const fn initial_cap(ci: usize) -> u16 {
    let mut cap = INITIAL_CLASS_BYTES / CLASS_SIZE[ci] as usize;
    if cap > CLASS_BATCH[ci] as usize {
        cap = CLASS_BATCH[ci] as usize;
    }
    if cap > cap_for(ci) as usize {
        cap = cap_for(ci) as usize;
    }
    cap as u16
}

impl CpuCaches {
    /// The budget, in bytes, for every CPU's capacities together.
    pub fn budget_bytes(&self) -> usize {
        let ncpu = self.slab_if_on().map_or(0, |s| s.ncpu() as usize);
        // Relaxed: a setting; a stale value only delays its effect by a pass.
        match self.budget.load(Ordering::Relaxed) {
            0 => ncpu * DEFAULT_CPU_BYTES,
            b => b,
        }
    }

    /// Sets the budget for every CPU's capacities together (0: the default, 2 MiB
    /// a CPU). Takes effect at the next miss (no more widening over it) and the
    /// next pass of the background purge thread (narrowing to it).
    pub fn set_budget_bytes(&self, bytes: usize) {
        // Relaxed: a setting.
        self.budget.store(bytes, Ordering::Relaxed);
    }

    /// The capacities of every CPU together, in bytes (a snapshot; 0 when off).
    pub fn capacity_bytes(&self) -> usize {
        let Some(slab) = self.slab_if_on() else {
            return 0;
        };
        (0..slab.ncpu())
            .map(|cpu| slab.capacity_bytes(cpu, &CLASS_SIZE))
            .sum()
    }

    /// One CPU's share of the budget.
    fn cpu_share(&self, slab: &Slab) -> usize {
        self.budget_bytes() / (slab.ncpu() as usize).max(1)
    }

    /// After a miss of class `ci` on the calling thread's CPU: widens that class
    /// there by one batch if the CPU's share of the budget allows. Returns whether
    /// it widened.
    pub(super) fn grow_on_miss(&self, slab: &Slab, area: NonNull<RseqArea>, ci: usize) -> bool {
        // SAFETY: the calling thread's area, alive while it runs; atomics only.
        let Some(cpu) = (unsafe { area.as_ref() }).cpu() else {
            return false;
        };
        let Some((_, cap)) = slab.len_and_capacity(cpu, ci) else {
            return false;
        };
        let max = cap_for(ci) as usize;
        if cap >= max {
            return false;
        }
        let new = (cap + CLASS_BATCH[ci] as usize).min(max);
        let more = (new - cap) * CLASS_SIZE[ci] as usize;
        if slab.capacity_bytes(cpu, &CLASS_SIZE) + more > self.cpu_share(slab) {
            return false;
        }
        let grown = slab.grow_capacity(cpu, ci, new as u16);
        if grown {
            // Relaxed: statistics.
            self.grows.fetch_add(1, Ordering::Relaxed);
        }
        grown
    }

    /// The background purge thread's pass over the CPUs: `seen` holds each (CPU,
    /// class) header word at the last pass, `NUM_CLASSES` a CPU (anything for
    /// never), and is updated. A CPU none of whose headers changed for a whole
    /// pause is idle: its objects go back to the central tier (`drain_one`). On a
    /// CPU in use, the classes that stopped moving are narrowed (see the module
    /// docs), and every class of a CPU over its share of the budget. Both are
    /// non-owner work on the CPU, safe because its headers are locked and its
    /// sections fenced meanwhile ("Non-owners" in `percpu/slab.rs`). Returns the
    /// bytes given back to the central tier.
    ///
    /// # Safety
    /// `be` is the backend whose objects the slab holds (invariant 3).
    pub unsafe fn idle_pass<O: Os>(&self, be: &Backend<O>, seen: &mut [u64]) -> usize {
        let Some(slab) = self.slab_if_on() else {
            return 0;
        };
        let share = self.cpu_share(slab);
        let mut bytes = 0;
        for cpu in 0..slab.ncpu() {
            let Some(last) =
                seen.get_mut(cpu as usize * NUM_CLASSES..(cpu as usize + 1) * NUM_CLASSES)
            else {
                break;
            };
            let over = slab.capacity_bytes(cpu, &CLASS_SIZE) > share;
            let mut caps = [0u16; NUM_CLASSES];
            let (mut busy, mut change) = (false, false);
            for (k, cap) in caps.iter_mut().enumerate() {
                let now = slab.header_word(cpu, k);
                let idle = now == last[k];
                busy |= !idle;
                last[k] = now;
                let c = slab.len_and_capacity(cpu, k).map_or(0, |(_, c)| c) as u16;
                *cap = c;
                if (idle || over) && c > initial_cap(k) {
                    *cap = (c / 2).max(initial_cap(k));
                    change = true;
                }
            }
            if !busy {
                // Idle: drained whole (its capacities hold no memory then).
                // SAFETY: forwarded contract.
                let (objects, b) = unsafe { self.drain_one(slab, cpu, be) };
                if objects > 0 {
                    bytes += b;
                    // Relaxed: statistics.
                    self.drains.fetch_add(1, Ordering::Relaxed);
                }
                for (k, l) in last.iter_mut().enumerate() {
                    *l = slab.header_word(cpu, k);
                }
                continue;
            }
            if !change {
                continue;
            }
            let mut chains = Chains::new();
            // SAFETY: objects above a lowered capacity, taken out of the slab: ours,
            // unused by anyone (invariant 3).
            let r = slab.set_capacities(cpu, &caps, |k, p| unsafe { chains.add(k, p) });
            if r.is_err() {
                continue;
            }
            // Relaxed: statistics.
            self.shrinks.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the chains hold objects of `be`'s taken out of the slab.
            bytes += unsafe { chains.flush(self, be) }.1;
            // The narrowing rewrote the headers: compare the next pass with them.
            for (k, l) in last.iter_mut().enumerate() {
                *l = slab.header_word(cpu, k);
            }
        }
        bytes
    }
}

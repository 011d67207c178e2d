//! The per-CPU slab: for every possible CPU, one region holding a header per size
//! class followed by the classes' arrays of object pointers.
//!
//! ```text
//!  base + (cpu << shift):
//!  unit:  0          n-1   64        64+n-1  begin[0] ...           begin[1] ...
//!        [hdr 0 ] .. [hdr n-1] .. [pops 0] .. [pops n-1][slots of class 0 ][slots of class 1] ..
//!                                                ^begin   ^current  ^end ^ begin + max_cap
//! ```
//! A unit is 8 bytes; a header is one unit holding four `u16` unit indices
//! (little-endian: `current`, `end`, `begin`, `end_copy`). Unit `MAX_CLASSES + k`
//! counts the pops of class `k` on that CPU (statistics: [`Slab::pops`]), at a
//! fixed distance from the header so that the pop section counts with one
//! instruction and no register of its own. The objects of class
//! `k` cached on a CPU are the slots `[begin, current)`; `end - begin` is the
//! class's capacity there, at most its `max_cap`, and can change at run time
//! ([`Slab::set_capacity`]) without moving anything.
//!
//! # Non-owners
//! Only a critical section running on a CPU may change that CPU's stacks (header
//! invariant 4). Anyone else (a thread draining an idle CPU, resizing a class)
//! first *locks* the header: one CAS sets `begin = 0xffff` and `end = 0`, keeping
//! `current` and the real end (`end_copy`); every pop then sees `current <= begin`
//! and every push `current >= end`, and both fail. A section that read the header
//! before the CAS may still be running, so the non-owner then *fences*:
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)` on that CPU returns only
//! once any section running there has been aborted or has committed, with a full
//! barrier on that CPU. After it, `current` is stable and the slots readable. The
//! non-owner does its work and stores the new `current` with the header still
//! locked, then fences a second time, and only then unlocks with a CAS that
//! restores `begin` and `end`. The second fence is needed because a section reads
//! `current` and its bound in two loads: one that started during the locked window
//! may have read the old `current` and, had the bounds come back before it read its
//! bound, would commit a stack top computed from the old `current` over the new one.
//! The lock is a try-lock: a second non-owner finds the header locked and gets
//! [`DrainError::Busy`] (never waits), so it needs no lock rank.
//!
//! Loom checks this protocol against stand-ins for the sections and the kernel
//! (`model.rs`, built only under `--cfg strata_loom`; the models are
//! `loom-tests/tests/percpu_handoff.rs`).

#[cfg(not(strata_loom))]
use core::ptr::NonNull;

// Core's atomics in every build but the loom one (`crate::sync` chooses): there the
// headers and slots are loom's, in `model.rs`, so that loom sees every access.
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

use crate::Violation;
use crate::os::OS_PAGE;
#[cfg(not(strata_loom))]
use crate::os::{Os, SysOs};
#[cfg(not(strata_loom))]
use crate::platform::rseq as sys;
#[cfg(not(strata_loom))]
use {super::cs, super::rseq::RseqArea};
// Under loom: the kernel's part (CPU count, fence) and the sections are the model's.
#[cfg(strata_loom)]
use model as sys;

#[cfg(strata_loom)]
mod model;
mod nonowner;

/// The most size classes a slab serves.
pub const MAX_CLASSES: usize = 64;
/// The unit of class 0's pop counter in every region (class `k`'s is this + `k`).
pub(crate) const POPS_UNIT: usize = MAX_CLASSES;
/// `begin` of a locked header: no `current` (a `u16`) is above it.
const LOCKED_BEGIN: u16 = 0xffff;
/// The most units a region may hold: every unit index must stay below
/// `LOCKED_BEGIN`, so that a locked header fails every pop.
const MAX_UNITS: usize = 0xff00;
const UNIT: usize = 8;

/// A header, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hdr {
    current: u16,
    end: u16,
    begin: u16,
    end_copy: u16,
}

impl Hdr {
    fn unpack(w: u64) -> Hdr {
        Hdr {
            current: w as u16,
            end: (w >> 16) as u16,
            begin: (w >> 32) as u16,
            end_copy: (w >> 48) as u16,
        }
    }
    fn pack(self) -> u64 {
        self.current as u64
            | (self.end as u64) << 16
            | (self.begin as u64) << 32
            | (self.end_copy as u64) << 48
    }
    fn locked(self) -> bool {
        self.begin == LOCKED_BEGIN
    }
}

/// Why a slab could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// More than [`MAX_CLASSES`] classes, or capacity lists of different lengths,
    /// or an initial capacity above its maximum, or no CPU.
    BadShape,
    /// The slots of one CPU would not fit the 16-bit unit indices.
    TooBig,
    /// The OS refused the memory.
    NoMemory,
    /// Fewer CPUs than the kernel's possible CPUs (or those could not be read):
    /// some `cpu_id` would index past the slab.
    TooFewCpus,
}

/// Why a non-owner could not work on a CPU's stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// Another non-owner holds the header lock; try later.
    Busy,
    /// No CPU or class of that number.
    OutOfRange,
    /// The kernel refused the fence (its errno), or the process could not register
    /// for it: nothing was touched.
    NoFence(i32),
}

/// The per-CPU slab (see the module docs for the layout).
///
/// Invariants:
/// 1. CPU `c`'s region is `[base + (c << shift), base + ((c + 1) << shift))`,
///    `shift >= 12`, all `ncpu` regions in one mapping of `map_bytes` bytes owned
///    by the slab; `ncpu` is at least the number of possible CPUs when the slab is
///    used with the kernel's `cpu_id` (checked by [`Slab::new`]).
/// 2. Every region has the same layout: class `k`'s header is unit `k`, its pop
///    counter unit `POPS_UNIT + k`, its slots the units `[begin[k], begin[k] +
///    max_cap[k])`; `begin[0] = POPS_UNIT + nclasses`, `begin[k + 1] = begin[k] +
///    max_cap[k]`, and the last slot's unit is below `MAX_UNITS < 0xffff` and
///    inside the region. So headers, counters and the classes' slot ranges never
///    overlap.
///
/// Header invariants (each CPU, each class `k`, as read in one 8-byte load):
/// 1. Unlocked: `begin == begin[k] <= current <= end == end_copy <= begin[k] +
///    max_cap[k]`.
/// 2. Locked (held by exactly one non-owner): `begin == 0xffff`, `end == 0`, and
///    `begin[k] <= current <= end_copy <= begin[k] + max_cap[k]`.
/// 3. The slots `[begin[k], current)` hold that CPU's cached objects of class `k`,
///    none null; each object is in at most one slot of the whole slab.
/// 4. `current` is written only by a critical section running on that CPU, or by
///    the non-owner holding the lock after its fence.
#[derive(Debug)]
pub struct Slab {
    /// Null under loom (the memory is `mem`'s).
    #[cfg_attr(strata_loom, allow(dead_code))]
    base: *mut u8,
    map_bytes: usize,
    ncpu: u32,
    shift: u32,
    nclasses: usize,
    begin: [u16; MAX_CLASSES],
    max_cap: [u16; MAX_CLASSES],
    /// Whether this process may fence (membarrier registered): `Err(errno)` if not.
    fence: Result<(), i32>,
    /// Under loom: the headers and slots (loom atomics; `base` is null) and each
    /// CPU's model of the kernel (`model.rs`).
    #[cfg(strata_loom)]
    mem: model::Memory,
}

// SAFETY: the slab is shared between threads by design: headers and slots are only
// accessed as atomics from Rust, and from the critical sections under the rseq
// argument (cs.rs); the fields outside the mapping never change after `new`.
unsafe impl Send for Slab {}
// SAFETY: as for Send.
unsafe impl Sync for Slab {}

impl Slab {
    /// A slab for `ncpu` CPUs with `max_caps.len()` classes; class `k` can hold up to
    /// `max_caps[k]` objects per CPU and starts with capacity `init_caps[k]`.
    /// Memory comes straight from the OS (`ncpu` regions of the same power-of-two
    /// size, at least a page each), zero-filled, so untouched CPUs cost no RSS.
    pub fn new(ncpu: u32, max_caps: &[u16], init_caps: &[u16]) -> Result<Slab, SlabError> {
        let n = max_caps.len();
        if n == 0 || n > MAX_CLASSES || init_caps.len() != n || ncpu == 0 {
            return Err(SlabError::BadShape);
        }
        if sys::possible_cpus().is_none_or(|p| ncpu < p) {
            return Err(SlabError::TooFewCpus);
        }
        let mut begin = [0u16; MAX_CLASSES];
        let mut max_cap = [0u16; MAX_CLASSES];
        let mut unit = POPS_UNIT + n;
        for k in 0..n {
            if init_caps[k] > max_caps[k] {
                return Err(SlabError::BadShape);
            }
            begin[k] = unit as u16;
            max_cap[k] = max_caps[k];
            unit += max_caps[k] as usize;
            if unit > MAX_UNITS {
                return Err(SlabError::TooBig);
            }
        }
        let shift = (unit * UNIT)
            .next_power_of_two()
            .max(OS_PAGE)
            .trailing_zeros();
        let Some(map_bytes) = (ncpu as usize).checked_mul(1 << shift) else {
            return Err(SlabError::TooBig);
        };
        #[cfg(not(strata_loom))]
        let base = SysOs.map(map_bytes, OS_PAGE);
        #[cfg(strata_loom)]
        let base = core::ptr::null_mut::<u8>();
        if base.is_null() && !crate::sync::LOOM {
            return Err(SlabError::NoMemory);
        }
        let slab = Slab {
            base,
            map_bytes,
            ncpu,
            shift,
            nclasses: n,
            begin,
            max_cap,
            fence: sys::membarrier_register_rseq(),
            #[cfg(strata_loom)]
            mem: model::Memory::new(ncpu, n, unit),
        };
        for cpu in 0..ncpu {
            for k in 0..n {
                let h = Hdr {
                    current: begin[k],
                    end: begin[k] + init_caps[k],
                    begin: begin[k],
                    end_copy: begin[k] + init_caps[k],
                };
                // Relaxed: the slab is not shared yet; whoever receives it gets it
                // through a synchronising handoff.
                slab.header(cpu, k).store(h.pack(), Ordering::Relaxed);
            }
        }
        Ok(slab)
    }

    /// The number of CPUs the slab has regions for.
    pub fn ncpu(&self) -> u32 {
        self.ncpu
    }

    /// The number of size classes.
    pub fn nclasses(&self) -> usize {
        self.nclasses
    }

    /// The bytes of address space the slab maps.
    pub fn map_bytes(&self) -> usize {
        self.map_bytes
    }

    /// Whether non-owners can work on CPUs' stacks here (`Err(errno)` if the kernel
    /// refused the membarrier registration: drains and resizes then fail).
    pub fn can_fence(&self) -> Result<(), i32> {
        self.fence
    }

    fn header(&self, cpu: u32, class: usize) -> &AtomicU64 {
        debug_check!(
            cpu < self.ncpu && class < self.nclasses,
            "Slab::header: out of range"
        );
        #[cfg(strata_loom)]
        {
            self.mem.header(cpu, class)
        }
        #[cfg(not(strata_loom))]
        {
            let p = self
                .base
                .wrapping_add(((cpu as usize) << self.shift) + class * UNIT);
            // SAFETY: by slab invariants 1 and 2 the header lies inside the mapping,
            // which lives as long as `self`; it is 8-byte aligned (regions are page
            // aligned) and accessed from Rust only as an atomic.
            unsafe { &*p.cast::<AtomicU64>() }
        }
    }

    fn slot(&self, cpu: u32, unit: u16) -> &AtomicUsize {
        debug_check!(
            cpu < self.ncpu && (unit as usize) < (1usize << self.shift) / UNIT,
            "Slab::slot: out of range"
        );
        #[cfg(strata_loom)]
        {
            self.mem.slot(cpu, unit)
        }
        #[cfg(not(strata_loom))]
        {
            let p = self
                .base
                .wrapping_add(((cpu as usize) << self.shift) + unit as usize * UNIT);
            // SAFETY: as in `header`: inside the mapping, aligned, atomic from Rust.
            unsafe { &*p.cast::<AtomicUsize>() }
        }
    }

    /// Pops an object of `class` from the calling thread's CPU; `None` if that stack
    /// is empty, locked by a non-owner, or `area` is not registered.
    ///
    /// # Safety
    /// `area` is the calling thread's rseq area ([`super::rseq::current`]);
    /// `class < self.nclasses()`; `self.ncpu()` covers every possible CPU.
    #[cfg(not(strata_loom))]
    #[inline(always)]
    pub unsafe fn pop(&self, area: NonNull<RseqArea>, class: usize) -> Option<NonNull<u8>> {
        debug_check!(class < self.nclasses, "Slab::pop: class out of range");
        // SAFETY: the caller's contract gives cs::pop's; the slab invariants give its
        // layout requirements.
        NonNull::new(unsafe { cs::pop(area.as_ptr(), self.base, self.shift, class) })
    }

    /// How many objects of `class` critical sections have popped on CPU `cpu` (a
    /// snapshot; 0 out of range). Counted after each pop's commit with a plain
    /// increment, so a count is lost when a thread is moved off its CPU between
    /// the two instructions and another thread counts there at the same time:
    /// statistics, not a ledger.
    #[cfg(not(strata_loom))]
    pub fn pops(&self, cpu: u32, class: usize) -> u64 {
        if cpu >= self.ncpu || class >= self.nclasses {
            return 0;
        }
        let off = ((cpu as usize) << self.shift) + (POPS_UNIT + class) * UNIT;
        // SAFETY: in range (checked above), so inside the mapping (invariant 1) at
        // a counter unit (invariant 2), 8-byte aligned; only ever accessed as a
        // whole aligned word, by the pop section and here.
        let a = unsafe { &*self.base.add(off).cast::<AtomicU64>() };
        // Relaxed: statistics.
        a.load(Ordering::Relaxed)
    }

    /// Pushes `p` (an object of `class`) onto the calling thread's CPU's stack;
    /// false if that stack is full, locked by a non-owner, or `area` is not
    /// registered: the object is then still the caller's.
    ///
    /// # Safety
    /// As for [`Slab::pop`]; and `p` is in no slot of the slab (header invariant 3).
    #[cfg(not(strata_loom))]
    #[inline(always)]
    pub unsafe fn push(&self, area: NonNull<RseqArea>, class: usize, p: NonNull<u8>) -> bool {
        debug_check!(class < self.nclasses, "Slab::push: class out of range");
        // SAFETY: as in `pop`.
        unsafe { cs::push(area.as_ptr(), self.base, self.shift, class, p.as_ptr()) }
    }

    /// Pops up to `out.len()` objects of `class` from the calling thread's CPU in one
    /// critical section into `out[..k]`; returns `k` (0 if that stack is empty,
    /// locked by a non-owner, or `area` is not registered).
    ///
    /// # Safety
    /// As for [`Slab::pop`].
    #[cfg(not(strata_loom))]
    #[inline]
    pub unsafe fn pop_batch(
        &self,
        area: NonNull<RseqArea>,
        class: usize,
        out: &mut [*mut u8],
    ) -> usize {
        debug_check!(class < self.nclasses, "Slab::pop_batch: class out of range");
        // SAFETY: the caller's contract gives cs::pop_batch's; `out` is ours, valid
        // for `out.len()` writes; the slab invariants give its layout requirements.
        unsafe {
            cs::pop_batch(
                area.as_ptr(),
                self.base,
                self.shift,
                class,
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Pushes as many of `objs` (objects of `class`, from the front) as fit onto the
    /// calling thread's CPU's stack in one critical section; returns how many
    /// (`objs[k..]` are still the caller's).
    ///
    /// # Safety
    /// As for [`Slab::push`], for every object of `objs` (none null, none in a slot,
    /// no two the same).
    #[cfg(not(strata_loom))]
    #[inline]
    pub unsafe fn push_batch(
        &self,
        area: NonNull<RseqArea>,
        class: usize,
        objs: &[*mut u8],
    ) -> usize {
        debug_check!(
            class < self.nclasses,
            "Slab::push_batch: class out of range"
        );
        // SAFETY: the caller's contract gives cs::push_batch's; `objs` is valid for
        // `objs.len()` reads.
        unsafe {
            cs::push_batch(
                area.as_ptr(),
                self.base,
                self.shift,
                class,
                objs.as_ptr(),
                objs.len(),
            )
        }
    }

    /// How many objects of `class` CPU `cpu` holds (a snapshot), and its capacity.
    pub fn len_and_capacity(&self, cpu: u32, class: usize) -> Option<(usize, usize)> {
        if cpu >= self.ncpu || class >= self.nclasses {
            return None;
        }
        // Relaxed: a snapshot for statistics and tests.
        let h = Hdr::unpack(self.header(cpu, class).load(Ordering::Relaxed));
        let b = self.begin[class];
        Some(((h.current - b) as usize, (h.end_copy - b) as usize))
    }

    /// Checks the slab invariant 2 and header invariants 1–3 (all but the "at most
    /// one slot" half of 3, which needs a set) on a snapshot of each header; a
    /// broken header invariant `n` is reported as invariant `100 + n`.
    pub fn validate(&self) -> Result<(), Violation> {
        let v = |invariant, what, addr| {
            Err(Violation {
                structure: "percpu::Slab",
                invariant,
                what,
                addr,
            })
        };
        let region_units = (1usize << self.shift) / UNIT;
        let mut unit = POPS_UNIT + self.nclasses;
        for k in 0..self.nclasses {
            if self.begin[k] as usize != unit {
                return v(2, "class slots not packed after the pop counters", k);
            }
            unit += self.max_cap[k] as usize;
        }
        if unit > MAX_UNITS || unit > region_units || self.shift < 12 {
            return v(2, "slots exceed the region or the 16-bit indices", unit);
        }
        for cpu in 0..self.ncpu {
            for k in 0..self.nclasses {
                // Relaxed: a snapshot; one 8-byte load sees a whole header.
                let h = Hdr::unpack(self.header(cpu, k).load(Ordering::Relaxed));
                let (b, top) = (self.begin[k], self.begin[k] + self.max_cap[k]);
                let addr = cpu as usize * self.nclasses + k;
                if h.locked() {
                    if h.end != 0
                        || !(b <= h.current && h.current <= h.end_copy && h.end_copy <= top)
                    {
                        return v(
                            102,
                            "locked header out of bounds (header invariant 2)",
                            addr,
                        );
                    }
                } else if !(h.begin == b
                    && b <= h.current
                    && h.current <= h.end
                    && h.end == h.end_copy
                    && h.end <= top)
                {
                    return v(101, "header out of bounds (header invariant 1)", addr);
                }
                for u in b..h.current {
                    // Relaxed: a snapshot for checking.
                    if self.slot(cpu, u).load(Ordering::Relaxed) == 0 {
                        return v(103, "null object in a slot (header invariant 3)", addr);
                    }
                }
            }
        }
        Ok(())
    }

    /// The membarrier-RSEQ fence on `cpu` (under loom, the model's: `model.rs`).
    fn rseq_fence(&self, cpu: u32) -> Result<(), i32> {
        #[cfg(not(strata_loom))]
        {
            sys::rseq_fence(cpu)
        }
        #[cfg(strata_loom)]
        {
            self.mem.fence(cpu)
        }
    }
}

#[cfg(test)]
impl Slab {
    pub(crate) fn test_lock(&self, cpu: u32, class: usize) -> bool {
        self.lock(cpu, class)
    }
    pub(crate) fn test_unlock(&self, cpu: u32, class: usize) {
        self.unlock(cpu, class)
    }
    pub(crate) fn test_header(&self, cpu: u32, class: usize) -> &AtomicU64 {
        self.header(cpu, class)
    }
}

#[cfg(not(strata_loom))]
impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: by slab invariant 1 the mapping is the slab's own; `&mut self` means
        // no thread holds a reference through which a critical section could run.
        // A failed unmap leaves address space reserved: nothing to do about it here.
        let _ = unsafe { SysOs.unmap(self.base, self.map_bytes) };
    }
}

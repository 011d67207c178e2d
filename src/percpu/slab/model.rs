//! Under loom only (`--cfg strata_loom`): the slab's memory as loom atomics, and
//! stand-ins for what loom cannot run: the kernel's part of the protocol (the
//! membarrier-RSEQ fence, restarting sections) and the critical sections of
//! `cs.rs` (x86-64 asm). Everything else, the non-owner code of `nonowner.rs`
//! (lock, fence, work, `set_locked`, second fence, unlock; `grow_capacity`) and
//! the validator, is the shipped code, run as it is. The models are in
//! `loom-tests/tests/percpu_handoff.rs`.
//!
//! # What the stand-ins assume of the kernel
//! 1. Sections on one CPU never overlap: the kernel runs one thread at a time on a
//!    CPU, and a switch aborts the section that was cut. (The models run one owner
//!    thread per CPU, so its sections follow each other.)
//! 2. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU,
//!    cpu)` interrupts `cpu` and aborts the section running there at that moment,
//!    if any: that section never commits, it restarts from the top. It returns
//!    after that, with a full barrier on `cpu`: a section that starts afterwards
//!    sees everything the caller stored before the call (the locked header).
//! 3. A section that is not aborted commits with its last instruction, one store
//!    of the 16-bit `current`, which leaves the header's other fields as they are
//!    at the moment of the store (a locker's CAS that came between the section's
//!    loads and its commit is kept).
//!
//! # How they are modelled
//! Each CPU has a count of the fences it took, under a loom mutex (the CPU). A
//! section reads the count when it starts (under the mutex: so it sees everything
//! before any fence it follows, assumption 2's barrier), does its loads and slot
//! accesses as the asm does them, and commits under the mutex only if the count is
//! unchanged, else it restarts (assumption 2's abort); a fence bumps the count
//! under the mutex. So a section in flight at a fence never commits, and one
//! started after it sees the caller's stores. The commit is a read-modify-write
//! that replaces the low 16 bits of the header word (assumption 3: what a 16-bit
//! store into the word does; loom has no mixed-size atomics). As in the asm, a
//! section reads `current` and its bound (`begin` or `end`) in two separate loads
//! of the header: the window the second fence of `with_locked` closes.
//!
//! This lets an aborted section do more than the kernel would: it runs on to its
//! commit point before it restarts, so some of its loads, and a push's write of
//! the free slot above `current`, may come after the fence. Only sections that
//! commit change what anyone else reads (a slot above `current` is read by no
//! one), so the extra behaviours can only add failures, never hide one.

use core::ptr::NonNull;

use super::{Hdr, Slab};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// The kernel's CPU count, as the model sees it: one (every slab covers it).
pub(super) fn possible_cpus() -> Option<u32> {
    Some(1)
}

/// The membarrier registration always succeeds in the model.
pub(super) fn membarrier_register_rseq() -> Result<(), i32> {
    Ok(())
}

/// The slab's memory and CPUs under loom.
#[derive(Debug)]
pub(super) struct Memory {
    nclasses: usize,
    /// Units per CPU: the headers, the pop counters, then every class's slots.
    units: usize,
    /// CPU `c`'s header of class `k` at `c * nclasses + k`.
    headers: Box<[AtomicU64]>,
    /// CPU `c`'s unit `u` at `c * units + u` (units below `begin[0]` are headers
    /// and pop counters, unused here).
    slots: Box<[AtomicUsize]>,
    /// Per CPU: the fences it took (module docs).
    cpus: Box<[loom::sync::Mutex<u64>]>,
}

impl Memory {
    /// Zeroed memory for `ncpu` CPUs of `nclasses` headers and `units` units in all.
    pub(super) fn new(ncpu: u32, nclasses: usize, units: usize) -> Memory {
        let n = ncpu as usize;
        Memory {
            nclasses,
            units,
            headers: (0..n * nclasses).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..n * units).map(|_| AtomicUsize::new(0)).collect(),
            cpus: (0..n).map(|_| loom::sync::Mutex::new(0)).collect(),
        }
    }

    pub(super) fn header(&self, cpu: u32, class: usize) -> &AtomicU64 {
        &self.headers[cpu as usize * self.nclasses + class]
    }

    pub(super) fn slot(&self, cpu: u32, unit: u16) -> &AtomicUsize {
        &self.slots[cpu as usize * self.units + unit as usize]
    }

    /// CPU `cpu` (its fence count), held. A model thread that panicked while
    /// holding it fails the model anyway: the poison is ignored.
    fn cpu(&self, cpu: u32) -> loom::sync::MutexGuard<'_, u64> {
        self.cpus[cpu as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The fence on `cpu` (assumption 2): every section in flight there restarts.
    pub(super) fn fence(&self, cpu: u32) -> Result<(), i32> {
        *self.cpu(cpu) += 1;
        Ok(())
    }

    /// A section starts on `cpu`: the fence count it must still see at its commit.
    fn start(&self, cpu: u32) -> u64 {
        *self.cpu(cpu)
    }

    /// Runs `commit` unless a fence came since `started` (the section was aborted).
    fn commit(&self, cpu: u32, started: u64, commit: impl FnOnce()) -> bool {
        let fences = self.cpu(cpu);
        if *fences != started {
            return false;
        }
        commit();
        true
    }
}

impl Slab {
    /// One critical section of `class` on `cpu` (module docs): `body` gets
    /// `current` from the first load and the header from the second (for the
    /// bound), and returns `Ok((new current, result))` to commit or `Err(result)`
    /// to leave without committing (a failed bound check).
    fn section<R>(
        &self,
        cpu: u32,
        class: usize,
        mut body: impl FnMut(u16, Hdr) -> Result<(u16, R), R>,
    ) -> R {
        let hdr = self.header(cpu, class);
        loop {
            let started = self.mem.start(cpu);
            // Acquire: an x86-64 load; pairs with the Release of the commit and of
            // the non-owner's unlock.
            let cur = Hdr::unpack(hdr.load(Ordering::Acquire)).current;
            // Acquire: as above. The second load, for the bound.
            let bound = Hdr::unpack(hdr.load(Ordering::Acquire));
            let (new, r) = match body(cur, bound) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let committed = self.mem.commit(cpu, started, || {
                // Release: an x86-64 store; publishes the slot a push wrote.
                let _ = hdr.fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
                    Some((w & !0xffff) | new as u64)
                });
            });
            if committed {
                return r;
            }
        }
    }

    /// `cs::pop` on `cpu`: the top object of `class`; `None` if that stack is
    /// empty or locked.
    pub fn pop(&self, cpu: u32, class: usize) -> Option<NonNull<u8>> {
        self.section(cpu, class, |cur, h| {
            if cur <= h.begin {
                return Err(None);
            }
            // Acquire: an x86-64 load.
            let p = self.slot(cpu, cur - 1).load(Ordering::Acquire) as *mut u8;
            Ok((cur - 1, NonNull::new(p)))
        })
    }

    /// `cs::push` on `cpu`: false if that stack is full or locked (`p` is then
    /// still the caller's).
    pub fn push(&self, cpu: u32, class: usize, p: NonNull<u8>) -> bool {
        self.section(cpu, class, |cur, h| {
            if cur >= h.end {
                return Err(false);
            }
            // Release: an x86-64 store (above `current`: no one reads it yet).
            self.slot(cpu, cur)
                .store(p.as_ptr() as usize, Ordering::Release);
            Ok((cur + 1, true))
        })
    }

    /// `cs::pop_batch` on `cpu`: up to `out.len()` objects of `class` into
    /// `out[..k]` (the `k` topmost, in slot order); returns `k`.
    pub fn pop_batch(&self, cpu: u32, class: usize, out: &mut [*mut u8]) -> usize {
        self.section(cpu, class, |cur, h| {
            if cur <= h.begin {
                return Err(0);
            }
            let k = out.len().min((cur - h.begin) as usize);
            let from = cur - k as u16;
            for (i, o) in out[..k].iter_mut().enumerate() {
                // Acquire: an x86-64 load.
                *o = self.slot(cpu, from + i as u16).load(Ordering::Acquire) as *mut u8;
            }
            Ok((from, k))
        })
    }

    /// `cs::push_batch` on `cpu`: as many of `objs` (from the front) as fit;
    /// returns how many.
    pub fn push_batch(&self, cpu: u32, class: usize, objs: &[*mut u8]) -> usize {
        self.section(cpu, class, |cur, h| {
            if cur >= h.end {
                return Err(0);
            }
            let k = objs.len().min((h.end - cur) as usize);
            for (i, &o) in objs[..k].iter().enumerate() {
                // Release: an x86-64 store (above `current`).
                self.slot(cpu, cur + i as u16)
                    .store(o as usize, Ordering::Release);
            }
            Ok((cur + k as u16, k))
        })
    }
}

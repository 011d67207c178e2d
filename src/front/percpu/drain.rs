//! Non-owner drains of the per-CPU caches: every CPU at once (`release_memory`,
//! `flush_thread_cache`) or the CPUs that stayed idle (the background purge
//! thread). Each CPU is drained with its headers locked and fenced
//! (`Slab::drain_cpu`), so no critical section on it moves an object meanwhile.

use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use super::CpuCaches;
use crate::backend::Backend;
use crate::link::{FreeObj, ensure_key};
use crate::os::Os;
use crate::percpu::Slab;
use crate::size_class::{NUM_CLASSES, SizeClass};

impl CpuCaches {
    /// Returns every object cached on every CPU to the central tier; how many. A CPU
    /// another non-owner is working on (or that cannot be fenced) is skipped.
    ///
    /// # Safety
    /// `be` is the backend whose objects the slab holds (invariant 3).
    pub unsafe fn drain_all<O: Os>(&self, be: &Backend<O>) -> usize {
        let Some(slab) = self.slab_if_on() else {
            return 0;
        };
        ensure_key();
        // Relaxed: statistics.
        self.drains.fetch_add(1, Ordering::Relaxed);
        let mut total = 0;
        for cpu in 0..slab.ncpu() {
            // SAFETY: forwarded contract.
            total += unsafe { self.drain_one(slab, cpu, be) }.0;
        }
        total
    }

    /// Returns every object cached on `cpu` to the central tier: how many, and
    /// their bytes ((0, 0) if it held none, or another non-owner holds the CPU, or
    /// it cannot be fenced).
    ///
    /// # Safety
    /// `slab` is this front end's; `be` the backend whose objects it holds
    /// (invariant 3).
    pub(super) unsafe fn drain_one<O: Os>(
        &self,
        slab: &Slab,
        cpu: u32,
        be: &Backend<O>,
    ) -> (usize, usize) {
        let any =
            (0..NUM_CLASSES).any(|k| slab.len_and_capacity(cpu, k).is_some_and(|(n, _)| n > 0));
        if !any {
            return (0, 0);
        }
        let mut chains = Chains::new();
        // SAFETY: drained objects are ours and unused by anyone (invariant 3).
        let _ = slab.drain_cpu(cpu, |k, p| unsafe { chains.add(k, p) });
        // SAFETY: the chains hold objects of `be`'s taken out of the slab.
        unsafe { chains.flush(self, be) }
    }
}

/// Objects a non-owner took out of the slab, linked into one chain per class, to
/// go back to the central tier together.
pub(super) struct Chains([(*mut FreeObj, usize); NUM_CLASSES]);

impl Chains {
    pub(super) fn new() -> Chains {
        // The links are encoded with the process's key: make sure it is set.
        ensure_key();
        Chains([(ptr::null_mut(), 0); NUM_CLASSES])
    }

    /// Links `p` into class `k`'s chain.
    ///
    /// # Safety
    /// `p` is a class-`k` object of the backend's, taken out of the slab, that
    /// nobody uses: its first word is free for the link.
    pub(super) unsafe fn add(&mut self, k: usize, p: NonNull<u8>) {
        if let Some(ch) = self.0.get_mut(k) {
            let q = p.as_ptr().cast::<FreeObj>();
            // SAFETY: per the contract the object is ours and unused.
            unsafe { FreeObj::set_next(q, ch.0) };
            *ch = (q, ch.1 + 1);
        }
    }

    /// Returns every chain to the central tier (counted as returned by `caches`);
    /// the objects and the bytes.
    ///
    /// # Safety
    /// Every object added is of `be`'s (the backend of the slab it came from).
    pub(super) unsafe fn flush<O: Os>(
        &self,
        caches: &CpuCaches,
        be: &Backend<O>,
    ) -> (usize, usize) {
        let (mut objects, mut bytes) = (0, 0);
        for (k, &(head, n)) in self.0.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let c = SizeClass(k as u8);
            // SAFETY: a null-terminated chain of `n` class-k objects of `be`, taken
            // out of the slab, that nobody uses (`add`'s contract).
            unsafe { be.flush(c, head, n) };
            be.note_flow(-((n * c.size_bytes()) as isize));
            caches.count_returned(k, n);
            objects += n;
            bytes += n * c.size_bytes();
        }
        (objects, bytes)
    }
}

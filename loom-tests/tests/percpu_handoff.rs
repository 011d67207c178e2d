//! The per-CPU front end's hand-off with the central tier: a thread running on a
//! CPU pops and pushes that CPU's stack (refilling a batch from the central tier
//! on an empty stack, flushing a batch to it on a full one, widening the capacity
//! on a miss) while a non-owner works on the same CPU: drains it to the central
//! tier (`flush_thread_cache`, `release_memory`, the purge thread's idle drain) or
//! narrows its capacity (the purge thread), with the shipped non-owner protocol
//! (`Slab::drain_cpu`, `Slab::set_capacities`: lock, fence, work, store `current`
//! still locked, fence again, unlock) and the shipped `Slab::grow_capacity`.
//!
//! The critical sections (asm) and the kernel (membarrier-RSEQ, restarts) are the
//! loom stand-ins of `strata/src/percpu/slab/model.rs`, whose module docs say what
//! they assume of the kernel. The owner's miss paths mirror
//! `front::percpu::CpuCaches::{refill, free_full, grow_on_miss}` and the drain
//! mirrors `drain_one` (those need the process's statics and an rseq area, so
//! they are not run here): the same slab calls in the same order, without the
//! statistics and the budget.
//!
//! Property: every object is in exactly one place at the end: a CPU's stack, the
//! central tier, or held by a thread; none lost, none twice. A ledger (std, so
//! invisible to loom) follows the central tier's content: an object handed to it
//! is added first (and must not be there already), one refilled from it is taken
//! out after (and must be there, or be new: carved from a span). At the end the
//! stack's and the threads' objects must be distinct and none in the ledger, the
//! slab must validate, and once everything is flushed every page must be back in
//! the page heap (`assert_all_returned`: the central tier's validate, and no
//! object lost).
#![cfg(strata_loom)]

use std::collections::HashSet;
use std::ptr::{self, NonNull};

use loom::sync::Arc;
use loom_tests::{
    FakeOs, assert_all_returned, assert_distinct, chain_to_vec, model_big_stack, spawn_big,
    vec_to_chain,
};
use strata::internals::{Backend, SizeClass};
use strata::percpu::Slab;

/// The class (64-byte objects, four a span, batches of two in the loom geometry).
const C: SizeClass = SizeClass(0);
/// Its index in the slab.
const K: usize = 0;
/// The CPU the owner runs on.
const CPU: u32 = 0;
/// The most objects a batch holds (the front end's array is as long).
const MAX_BATCH: usize = 4;
struct World {
    /// Behind its own `Arc`: a backend is a few KiB, and loom's threads have small
    /// stacks (unoptimised, as run-mutants.sh builds, each move is a copy).
    be: Arc<Backend<FakeOs>>,
    slab: Slab,
    /// The central tier's objects, by the ledger (module docs).
    central: std::sync::Mutex<HashSet<usize>>,
    /// Every object seen so far.
    known: std::sync::Mutex<HashSet<usize>>,
    /// The class's most objects a CPU (`cap_for`).
    max_cap: u16,
}

type W = Arc<World>;

impl World {
    /// A one-CPU slab of class C with capacity `cap` (at most `max_cap`), holding
    /// `cached` objects refilled from the central tier; and `held` more objects,
    /// returned.
    fn new(max_cap: u16, cap: u16, cached: usize, held: usize) -> (W, Vec<usize>) {
        let w = World {
            be: Arc::new(Backend::new(FakeOs::new())),
            slab: Slab::new(1, &[max_cap], &[cap]).expect("a one-CPU slab"),
            central: Default::default(),
            known: Default::default(),
            max_cap,
        };
        let mut objs = Vec::new();
        while objs.len() < cached + held {
            objs.extend(w.from_central());
        }
        w.to_central(&objs[cached + held..]);
        objs.truncate(cached + held);
        let kept = objs.split_off(cached);
        let ptrs: Vec<*mut u8> = objs.iter().map(|&o| o as *mut u8).collect();
        assert_eq!(w.slab.push_batch(CPU, K, &ptrs), cached);
        (Arc::new(w), kept)
    }

    /// A batch from the central tier.
    fn from_central(&self) -> Vec<usize> {
        let b = self.be.refill(C);
        assert!(b.count > 0, "the fake OS refused memory");
        // SAFETY: the refill gave us a chain of b.count objects.
        let objs = unsafe { chain_to_vec(b.head, b.count) };
        let (mut central, mut known) = (self.central.lock().unwrap(), self.known.lock().unwrap());
        for &o in &objs {
            assert!(
                central.remove(&o) || known.insert(o),
                "the central tier handed out {o:#x}, which it did not hold"
            );
        }
        objs
    }

    /// Hands `objs` to the central tier as one flush.
    fn to_central(&self, objs: &[usize]) {
        if objs.is_empty() {
            return;
        }
        assert_distinct("a flush", objs);
        {
            let mut central = self.central.lock().unwrap();
            for &o in objs {
                assert!(
                    central.insert(o),
                    "{o:#x} handed to the central tier while it is there already"
                );
            }
        }
        // SAFETY: class-C objects of `be` that nobody else holds (the ledger just
        // checked the central tier has none of them).
        unsafe { self.be.flush(C, vec_to_chain(objs), objs.len()) };
    }

    /// `CpuCaches::grow_on_miss` without the budget: one batch more, up to the
    /// class's most.
    fn grow_on_miss(&self) -> bool {
        let (_, cap) = self.slab.len_and_capacity(CPU, K).unwrap();
        if cap >= self.max_cap as usize {
            return false;
        }
        let new = (cap + C.batch()).min(self.max_cap as usize);
        self.slab.grow_capacity(CPU, K, new as u16)
    }

    /// `CpuCaches::alloc` (`pop_hit`, else `refill`).
    fn alloc(&self) -> usize {
        if let Some(p) = self.slab.pop(CPU, K) {
            return p.as_ptr() as usize;
        }
        let objs = self.from_central();
        self.grow_on_miss();
        let rest: Vec<*mut u8> = objs[1..].iter().map(|&o| o as *mut u8).collect();
        let pushed = self.slab.push_batch(CPU, K, &rest);
        self.to_central(&objs[1 + pushed..]);
        objs[0]
    }

    /// `CpuCaches::free` (a push, else `free_full`).
    fn free(&self, p: usize) {
        let q = NonNull::new(p as *mut u8).unwrap();
        if self.slab.push(CPU, K, q) {
            return;
        }
        if self.grow_on_miss() && self.slab.push(CPU, K, q) {
            return;
        }
        let want = C.batch().min(self.max_cap as usize).min(MAX_BATCH - 1);
        let mut objs = [ptr::null_mut::<u8>(); MAX_BATCH];
        let mut n = self.slab.pop_batch(CPU, K, &mut objs[..want]);
        if !self.slab.push(CPU, K, q) {
            objs[n] = p as *mut u8;
            n += 1;
        }
        let objs: Vec<usize> = objs[..n].iter().map(|&o| o as usize).collect();
        self.to_central(&objs);
    }

    /// `CpuCaches::drain_one`: the CPU's objects to the central tier, if it holds
    /// any (a non-owner).
    fn drain(&self) {
        if self.slab.len_and_capacity(CPU, K).unwrap().0 == 0 {
            return;
        }
        let mut objs = Vec::new();
        let _ = self
            .slab
            .drain_cpu(CPU, |_, p| objs.push(p.as_ptr() as usize));
        self.to_central(&objs);
    }

    /// The purge thread's narrowing (`CpuCaches::idle_pass`): the capacity set to
    /// `cap`, the objects above it to the central tier.
    fn narrow(&self, cap: u16) {
        let mut objs = Vec::new();
        let _ = self
            .slab
            .set_capacities(CPU, &[cap], |_, p| objs.push(p.as_ptr() as usize));
        self.to_central(&objs);
    }

    /// The end of a model, every thread joined: `held` are the threads' objects.
    /// Checks that each object is in one place, then returns everything.
    fn check_and_return(&self, held: &[usize]) {
        if let Err(v) = self.slab.validate() {
            panic!("slab invariant broken at the end of the model: {v}");
        }
        let (n, cap) = self.slab.len_and_capacity(CPU, K).unwrap();
        assert!(
            n <= cap && cap <= self.max_cap as usize,
            "{n} cached, capacity {cap}"
        );
        let mut cached = Vec::new();
        self.slab
            .drain_cpu(CPU, |_, p| cached.push(p.as_ptr() as usize))
            .unwrap();
        assert_eq!(cached.len(), n);
        let mut front = cached.clone();
        front.extend(held);
        assert_distinct("cached or held at the end", &front);
        {
            let central = self.central.lock().unwrap();
            for o in &front {
                assert!(
                    !central.contains(o),
                    "{o:#x} is in the central tier and cached or held"
                );
            }
        }
        self.to_central(&front);
        assert_all_returned(&self.be);
    }
}

#[test]
fn an_owner_allocating_while_a_non_owner_drains_its_cpu_keeps_every_object_once() {
    // Two objects cached (the capacity full), capacity up to four: the owner pops
    // both, and refills on the third (or sooner if the drain came first), while
    // the CPU is drained to the central tier.
    model_big_stack(|| {
        let (w, _) = World::new(4, 2, 2, 0);
        let owner = {
            let w = w.clone();
            spawn_big(move || vec![w.alloc(), w.alloc(), w.alloc()])
        };
        let drainer = {
            let w = w.clone();
            spawn_big(move || w.drain())
        };
        let held = owner.join().unwrap();
        drainer.join().unwrap();
        w.check_and_return(&held);
    });
}

#[test]
fn an_owner_freeing_onto_a_full_stack_while_a_non_owner_drains_its_cpu_keeps_every_object_once() {
    // A full stack at its most (two of two): the owner frees one object (a batch
    // goes to the central tier, or, after the drain, it is pushed), allocates, and
    // frees again, while the CPU is drained.
    model_big_stack(|| {
        let (w, held) = World::new(2, 2, 2, 2);
        let owner = {
            let w = w.clone();
            spawn_big(move || {
                w.free(held[0]);
                let a = w.alloc();
                w.free(held[1]);
                vec![a]
            })
        };
        let drainer = {
            let w = w.clone();
            spawn_big(move || w.drain())
        };
        let held = owner.join().unwrap();
        drainer.join().unwrap();
        w.check_and_return(&held);
    });
}

#[test]
fn capacity_widened_on_misses_while_the_purge_thread_narrows_it_keeps_every_object_once() {
    // A full stack of two, most four: the owner's frees miss and widen the
    // capacity by a batch (a CAS on `end`, no lock), then push; meanwhile the
    // purge thread narrows the capacity back to two (locked and fenced), sending
    // what lies above it to the central tier.
    model_big_stack(|| {
        let (w, held) = World::new(4, 2, 2, 2);
        let owner = {
            let w = w.clone();
            spawn_big(move || {
                w.free(held[0]);
                w.free(held[1]);
                vec![w.alloc()]
            })
        };
        let narrower = {
            let w = w.clone();
            spawn_big(move || w.narrow(2))
        };
        let held = owner.join().unwrap();
        narrower.join().unwrap();
        w.check_and_return(&held);
    });
}

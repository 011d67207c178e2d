//! The transfer stack: the lock-free Treiber stack of batch descriptors (tagged
//! `index | tag << 32` head) that moves whole batches between thread caches and the
//! central tier.
//!
//! Properties: a pushed batch reaches its popper whole (push's Release pairs with
//! pop's Acquire); concurrent pushes and pops lose no batch and hand none out twice;
//! and the ABA interleaving (a batch popped, reused and pushed back between another
//! thread's read of `head->next` and its CAS) is caught by the tag; an array batch
//! (the addresses in the descriptor) reaches its popper whole too, and on a stack
//! holding both kinds of descriptor each index keeps its kind through the ABA race.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, model};
use strata::internals::{DESC_SLOTS, DescPool, FreeObj, MetaArena, TransferStack};

struct Shared {
    os: FakeOs,
    meta: MetaArena,
    pool: DescPool,
    stack: TransferStack,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            os: FakeOs::new(),
            meta: MetaArena::new(),
            pool: DescPool::new(),
            stack: TransferStack::new(),
        })
    }

    /// A descriptor owned by the caller, holding batch `id`.
    fn desc(&self, id: u32) -> u32 {
        let i = self.pool.alloc(&self.os, &self.meta).expect("descriptor");
        self.pool.get(i).set(batch_head(id), id);
        i
    }

    /// Pops everything left on the stack (quiescent: after every thread joined).
    fn drain(&self) -> Vec<u32> {
        let mut v = Vec::new();
        while let Some(i) = self.stack.pop(&self.pool) {
            v.push(i);
        }
        v
    }
}

/// A batch head that identifies batch `id` (never dereferenced by the stack).
fn batch_head(id: u32) -> *mut FreeObj {
    ((id as usize + 1) * 64) as *mut FreeObj
}

/// Asserts that descriptor `i` still describes batch `id`, whole.
fn assert_holds(sh: &Shared, i: u32, id: u32) {
    assert_eq!(
        sh.pool.get(i).get(),
        (batch_head(id), id),
        "descriptor {i} lost its batch"
    );
}

/// Every descriptor in `held` exactly once, and nothing else.
fn assert_same_set(what: &str, mut held: Vec<u32>, mut expected: Vec<u32>) {
    held.sort_unstable();
    expected.sort_unstable();
    for w in held.windows(2) {
        assert_ne!(w[0], w[1], "{what}: descriptor {} is held twice", w[0]);
    }
    assert_eq!(held, expected, "{what}: descriptors lost or invented");
}

#[test]
fn a_pushed_batch_reaches_its_popper_whole() {
    model(|| {
        let sh = Shared::new();
        let d = sh.pool.alloc(&sh.os, &sh.meta).unwrap();
        let pusher = {
            let sh = sh.clone();
            thread::spawn(move || {
                // The batch is written by the pusher; only the push publishes it.
                sh.pool.get(d).set(batch_head(7), 7);
                sh.stack.push(&sh.pool, d);
            })
        };
        let popper = {
            let sh = sh.clone();
            thread::spawn(move || {
                let got = sh.stack.pop(&sh.pool);
                if let Some(i) = got {
                    assert_eq!(i, d);
                    assert_holds(&sh, i, 7);
                }
                got
            })
        };
        pusher.join().unwrap();
        let mut held: Vec<u32> = popper.join().unwrap().into_iter().collect();
        held.extend(sh.drain());
        assert_same_set("push/pop", held, vec![d]);
        assert_holds(&sh, d, 7);
    });
}

#[test]
fn a_pushed_array_batch_reaches_its_popper_whole() {
    // The per-CPU front end's batches: the objects' addresses in the descriptor
    // itself, written by the pusher and read by the popper (loom reports a read
    // of the array not ordered after its write as a race on the cell).
    model(|| {
        let sh = Shared::new();
        let (d, _) = sh.pool.alloc_array(&sh.os, &sh.meta).unwrap();
        let objs: Vec<*mut u8> = (0..DESC_SLOTS)
            .map(|k| batch_head(k as u32).cast())
            .collect();
        let pusher = {
            let sh = sh.clone();
            let objs = objs.clone();
            thread::spawn(move || {
                sh.pool.array(d).unwrap().set_array(&objs);
                sh.stack.push(&sh.pool, d);
            })
        };
        let popper = {
            let sh = sh.clone();
            thread::spawn(move || {
                let got = sh.stack.pop(&sh.pool);
                if let Some(i) = got {
                    let a = sh.pool.array(i).expect("an array index");
                    let mut out = [core::ptr::null_mut(); DESC_SLOTS];
                    let n = a.copy_array(&mut out);
                    assert_eq!(sh.pool.get(i).get(), (core::ptr::null_mut(), n as u32));
                    // Owning it means we may rewrite it (a second owner races).
                    a.set_array(&out[..n]);
                    out[..n].iter().map(|&p| p as usize).collect::<Vec<_>>()
                } else {
                    Vec::new()
                }
            })
        };
        pusher.join().unwrap();
        let got = popper.join().unwrap();
        let want: Vec<usize> = objs.iter().map(|&p| p as usize).collect();
        if got.is_empty() {
            assert_eq!(sh.drain(), vec![d]);
        } else {
            assert_eq!(got, want, "the array batch arrived changed");
            assert!(sh.drain().is_empty());
        }
    });
}

#[test]
fn aba_pop_reuse_push_back_between_read_and_cas_hands_nothing_out_twice() {
    model(|| {
        let sh = Shared::new();
        let b = sh.desc(2);
        let a = sh.desc(1);
        sh.stack.push(&sh.pool, b);
        sh.stack.push(&sh.pool, a); // stack: a -> b
        // The victim reads head = a and a.next = b, and may be preempted before its
        // CAS; meanwhile the other thread pops a and b, reuses a, and pushes a back.
        // Without the tag the victim's CAS would succeed and install b, which the
        // other thread owns.
        let victim = {
            let sh = sh.clone();
            thread::spawn(move || sh.stack.pop(&sh.pool))
        };
        let reuser = {
            let sh = sh.clone();
            thread::spawn(move || {
                let x = sh.stack.pop(&sh.pool);
                let y = sh.stack.pop(&sh.pool);
                if let Some(x) = x {
                    // Reuse the batch's descriptor (same batch, rewritten), then
                    // hand it back.
                    let (h, n) = sh.pool.get(x).get();
                    sh.pool.get(x).set(h, n);
                    sh.stack.push(&sh.pool, x);
                }
                y
            })
        };
        let mut held: Vec<u32> = victim.join().unwrap().into_iter().collect();
        held.extend(reuser.join().unwrap());
        held.extend(sh.drain());
        assert_same_set("ABA", held, vec![a, b]);
        assert_holds(&sh, a, 1);
        assert_holds(&sh, b, 2);
    });
}

#[test]
fn aba_across_kinds_each_popper_reads_the_descriptor_its_index_names() {
    // A chain descriptor under an array one: the victim reads the top's `next`
    // (from an array descriptor's header) and may lose the race to a thread that
    // pops both, rewrites the array and pushes it back. Each index keeps its kind,
    // so whoever ends up with a descriptor finds the batch of that kind, whole.
    model(|| {
        let sh = Shared::new();
        let b = sh.desc(2);
        let (a, ad) = sh.pool.alloc_array(&sh.os, &sh.meta).unwrap();
        let objs: Vec<*mut u8> = (0..DESC_SLOTS)
            .map(|k| batch_head(k as u32).cast())
            .collect();
        ad.set_array(&objs);
        sh.stack.push(&sh.pool, b);
        sh.stack.push(&sh.pool, a); // stack: a (array) -> b (chain)
        let victim = {
            let sh = sh.clone();
            thread::spawn(move || sh.stack.pop(&sh.pool))
        };
        let reuser = {
            let sh = sh.clone();
            thread::spawn(move || {
                let x = sh.stack.pop(&sh.pool);
                let y = sh.stack.pop(&sh.pool);
                if let Some(x) = x {
                    if let Some(xa) = sh.pool.array(x) {
                        let mut out = [core::ptr::null_mut(); DESC_SLOTS];
                        let n = xa.copy_array(&mut out);
                        xa.set_array(&out[..n]);
                    } else {
                        let (h, n) = sh.pool.get(x).get();
                        sh.pool.get(x).set(h, n);
                    }
                    sh.stack.push(&sh.pool, x);
                }
                y
            })
        };
        let mut held: Vec<u32> = victim.join().unwrap().into_iter().collect();
        held.extend(reuser.join().unwrap());
        held.extend(sh.drain());
        assert_same_set("ABA across kinds", held, vec![a, b]);
        assert_holds(&sh, b, 2);
        assert!(sh.pool.array(b).is_none(), "a chain index read as an array");
        let mut out = [core::ptr::null_mut(); DESC_SLOTS];
        let n = sh
            .pool
            .array(a)
            .expect("an array index")
            .copy_array(&mut out);
        assert_eq!(&out[..n], &objs[..], "the array batch arrived changed");
    });
}

#[test]
fn concurrent_pushes_and_pops_lose_no_batch() {
    model(|| {
        let sh = Shared::new();
        let a = sh.desc(1);
        sh.stack.push(&sh.pool, a);
        let b = sh.desc(2);
        let c = sh.desc(3);
        // Two threads push a batch of their own and pop one; a third pops one,
        // reuses it and pushes it back.
        let pushers: Vec<_> = [b, c]
            .into_iter()
            .map(|mine| {
                let sh = sh.clone();
                thread::spawn(move || {
                    sh.stack.push(&sh.pool, mine);
                    let got = sh.stack.pop(&sh.pool);
                    if let Some(i) = got {
                        // Owning it means we may rewrite it: loom reports a second
                        // owner as a race on the descriptor's cells.
                        let (h, n) = sh.pool.get(i).get();
                        sh.pool.get(i).set(h, n);
                    }
                    got
                })
            })
            .collect();
        let recycler = {
            let sh = sh.clone();
            thread::spawn(move || {
                if let Some(i) = sh.stack.pop(&sh.pool) {
                    let (h, n) = sh.pool.get(i).get();
                    sh.pool.get(i).set(h, n);
                    sh.stack.push(&sh.pool, i);
                }
            })
        };
        let mut held: Vec<u32> = pushers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        recycler.join().unwrap();
        held.extend(sh.drain());
        assert_same_set("push/pop", held, vec![a, b, c]);
        assert_holds(&sh, a, 1);
        assert_holds(&sh, b, 2);
        assert_holds(&sh, c, 3);
        assert_eq!(sh.stack.len(), 0);
    });
}

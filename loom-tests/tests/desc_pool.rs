//! Descriptor recycling: the pool of type-stable batch descriptors behind every
//! transfer stack. Fresh descriptors come from blocks published once under a growth
//! lock (double-checked: an Acquire load, then a re-check under the lock); freed ones
//! are recycled through the pool's own tagged stack.
//!
//! Properties: a descriptor is owned by one thread at a time (loom reports two
//! owners writing one descriptor's cells; the values read back must be the owner's);
//! a block is published once and after its contents (two threads racing to grow the
//! same block get the same one); nothing is lost or created on the way.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, assert_distinct, model};
use strata::internals::{DescPool, FreeObj, MetaArena};

struct Shared {
    os: FakeOs,
    meta: MetaArena,
    pool: DescPool,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        os: FakeOs::new(),
        meta: MetaArena::new(),
        pool: DescPool::new(),
    })
}

fn mark(id: u32) -> *mut FreeObj {
    ((id as usize + 1) * 64) as *mut FreeObj
}

/// Takes a descriptor, writes `id` into it and checks it reads back.
fn take(sh: &Shared, id: u32) -> u32 {
    let i = sh.pool.alloc(&sh.os, &sh.meta).expect("descriptor");
    sh.pool.get(i).set(mark(id), id);
    assert_eq!(
        sh.pool.get(i).get(),
        (mark(id), id),
        "descriptor {i} shared"
    );
    i
}

fn assert_distinct_descs(held: &[u32]) {
    let v: Vec<usize> = held.iter().map(|&i| i as usize).collect();
    assert_distinct("descriptors", &v);
}

#[test]
fn racing_first_allocations_publish_one_block_once() {
    model(|| {
        let sh = shared();
        // Three threads take the first three fresh descriptors, all in block 0.
        let handles: Vec<_> = (1..=3)
            .map(|id| {
                let sh = sh.clone();
                thread::spawn(move || (take(&sh, id), id))
            })
            .collect();
        let held: Vec<(u32, u32)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let idx: Vec<u32> = held.iter().map(|&(i, _)| i).collect();
        assert_distinct_descs(&idx);
        for &(i, id) in &held {
            assert_eq!(
                sh.pool.get(i).get(),
                (mark(id), id),
                "descriptor {i} lost its contents: its block was replaced"
            );
        }
        assert_eq!(sh.pool.created(), 3, "fresh descriptors leaked");
        assert_eq!(
            sh.os.live_bytes(),
            sh.meta.mapped_bytes(),
            "memory mapped outside the metadata arena"
        );
    });
}

#[test]
fn recycled_descriptors_have_one_owner_at_a_time() {
    model(|| {
        let sh = shared();
        // Two descriptors in the pool's free stack, one fresh left in the block.
        let a = take(&sh, 0);
        let b = take(&sh, 0);
        sh.pool.free(a);
        sh.pool.free(b);
        let handles: Vec<_> = (1..=2)
            .map(|id| {
                let sh = sh.clone();
                thread::spawn(move || {
                    let i = take(&sh, id);
                    sh.pool.free(i);
                    take(&sh, id + 10)
                })
            })
            .collect();
        let mut held: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_distinct_descs(&held);
        // Conservation: every descriptor ever created is held or in the free stack,
        // once. Empty the free stack: the first fresh index means it is empty.
        let created = sh.pool.created();
        loop {
            let i = sh.pool.alloc(&sh.os, &sh.meta).unwrap();
            if i >= created {
                break;
            }
            held.push(i);
        }
        held.sort_unstable();
        assert_eq!(
            held,
            (0..created).collect::<Vec<_>>(),
            "descriptor lost or doubled"
        );
    });
}

//! Two threads that find nothing free at once. A refill whose class has no span
//! with room drops the class lock while the page heap supplies one, and the page
//! heap maps a fresh chunk and writes its header with its own lock dropped, then
//! files it under the lock. So both threads may map a chunk; the second to file
//! finds room (the first's chunk) and keeps its own as a wholly free chunk, and a
//! class may gain two spans where one would have done.
//!
//! Properties: the two refills get disjoint objects of the class (by the page
//! map); a walk of the heap during the other's growth finds every Small span
//! counted by its class (a span passes from the page heap to a class under the
//! class lock, whichever lock was dropped for the mapping); every chunk mapped is filed (none leaked, none filed twice: the page
//! heap's invariants hold after every interleaving), a chunk mapped while another
//! thread made room is not lost, and once everything is returned every page goes
//! back to the OS.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    FakeOs, assert_all_returned, assert_distinct, assert_objects_of_class, chain_to_vec, model,
    vec_to_chain,
};
use strata::internals::{Backend, PAGE_SIZE, SizeClass};

type Be = Arc<Backend<FakeOs>>;

fn refill(be: &Backend<FakeOs>, c: SizeClass) -> Vec<usize> {
    let b = be.central.refill(c, &be.page_heap);
    // SAFETY: the refill gave us a chain of b.count objects.
    unsafe { chain_to_vec(b.head, b.count) }
}

fn flush(be: &Backend<FakeOs>, c: SizeClass, objs: &[usize]) {
    // SAFETY: class-c objects we own and give up.
    unsafe {
        let head = vec_to_chain(objs);
        be.central
            .flush(c, head, objs.len(), &be.page_heap, &be.meta);
    }
}

/// Both threads refill (`classes[0]` and `classes[1]`) from an empty backend at
/// once; checks what they got and the heap's state, then returns everything.
fn race(classes: [SizeClass; 2]) {
    model(move || {
        let be: Be = Arc::new(Backend::new(FakeOs::new()));
        let other = {
            let be = be.clone();
            thread::spawn(move || refill(&be, classes[1]))
        };
        let mine = refill(&be, classes[0]);
        // A walk of the whole heap (every class lock and the page-heap lock) while
        // the other refill may be anywhere in its growth: it must meet no Small
        // span that no class counts, and no chunk half filed.
        if let Err(v) = be.validate() {
            panic!("while the other refill grows the heap: {v}");
        }
        let theirs = other.join().unwrap();
        assert!(
            !mine.is_empty() && !theirs.is_empty(),
            "a refill came back empty"
        );
        assert_objects_of_class(&be, classes[0], &mine);
        assert_objects_of_class(&be, classes[1], &theirs);
        let mut all = mine.clone();
        all.extend_from_slice(&theirs);
        assert_distinct("the two refills", &all);
        if let Err(v) = be.validate() {
            panic!("after the racing refills: {v}");
        }
        let st = be.page_heap.stats();
        assert!(
            (1..=2).contains(&st.chunks),
            "{} chunks filed for two spans",
            st.chunks
        );
        // Every filed chunk's pages are either in the spans handed out or free.
        assert_eq!(st.unmap_failures, 0);
        assert!(st.free_bytes % PAGE_SIZE == 0);
        flush(&be, classes[0], &mine);
        flush(&be, classes[1], &theirs);
        assert_all_returned(&be);
    });
}

#[test]
fn two_classes_growing_an_empty_heap_at_once_map_no_chunk_twice_and_lose_none() {
    race([SizeClass(0), SizeClass(1)]);
}

#[test]
fn two_refills_of_one_empty_class_at_once_get_disjoint_objects() {
    race([SizeClass(0), SizeClass(0)]);
}

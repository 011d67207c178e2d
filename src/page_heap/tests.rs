//! Unit tests of the page heap (real mappings, `SysOs`, or `FlakyOs` where the OS
//! refuses purges and unmaps).

use super::*;
use crate::os::SysOs;
use crate::os::flaky::FlakyOs;
use core::sync::atomic::Ordering::Relaxed;

pub(super) fn large<O: Os>(ph: &PageHeap<O>, npages: usize) -> *mut Span {
    let s = ph.alloc_span(npages, 1, SpanKind::Large, SizeClass(0));
    assert!(!s.is_null());
    s
}

/// Pages in a purge unit: one OS page, or one of ours if that is larger. Tests of
/// purging work in these units so that they hold on 16 and 64 KiB kernels too
/// (`STRATA_TEST_PAGE_SIZE`), where only whole OS pages are purged.
fn unit<O: Os>(ph: &PageHeap<O>) -> usize {
    (ph.os().page_size() / PAGE_SIZE).max(1)
}

/// A Large span of `n` purge units, aligned to one.
fn units<O: Os>(ph: &PageHeap<O>, n: usize) -> *mut Span {
    let u = unit(ph);
    let s = ph.alloc_span(n * u, u, SpanKind::Large, SizeClass(0));
    assert!(!s.is_null());
    s
}

/// `units(ph, n)` at the lowest address that fits, whatever the heap's policy:
/// for tests of what happens to pages freed just before (next fit would rove past
/// them).
fn lowest_units<O: Os>(ph: &PageHeap<O>, n: usize) -> *mut Span {
    let p = ph.placement();
    ph.force_placement(Placement::First);
    let s = units(ph, n);
    ph.force_placement(p);
    s
}

/// The bytes of `[base, base + len)` in whole OS pages: what a purge gives back.
fn whole_os_pages<O: Os>(ph: &PageHeap<O>, base: *const u8, len: usize) -> usize {
    let ps = ph.os().page_size();
    let lo = (base as usize).next_multiple_of(ps);
    let hi = (base as usize + len) & !(ps - 1);
    hi.saturating_sub(lo)
}

fn freeing_in_any_order_coalesces_back_to_one_free_chunk(p: Placement) {
    let ph = placed(p, SysOs);
    for order in 0..3 {
        let spans: Vec<_> = (1..=20).map(|n| large(&ph, n)).collect();
        ph.validate().unwrap();
        let idx: Vec<usize> = match order {
            0 => (0..20).collect(),
            1 => (0..20).rev().collect(),
            _ => (0..20).map(|i| (i * 7) % 20).collect(),
        };
        for (k, &i) in idx.iter().enumerate() {
            // SAFETY: each span is live and freed once.
            unsafe { ph.free_span(spans[i]) };
            if k % 5 == 0 {
                ph.validate().unwrap();
            }
        }
        ph.validate().unwrap();
        let st = ph.stats();
        assert_eq!(st.chunks, 1, "the reserve chunk stays mapped");
        assert_eq!(
            st.free_bytes,
            USABLE_PAGES * PAGE_SIZE,
            "every page coalesced back"
        );
    }
}

#[test]
fn best_fit_prefers_the_smallest_hole_and_aligned_spans_are_aligned() {
    let ph = PageHeap::new(SysOs);
    let a = large(&ph, 3);
    let _guard1 = large(&ph, 1);
    let b = large(&ph, 8);
    let _guard2 = large(&ph, 1);
    // SAFETY: live spans, freed once.
    unsafe {
        let (a_base, b_base) = ((*a).base(), (*b).base());
        ph.free_span(b);
        ph.free_span(a);
        let c = large(&ph, 2);
        assert_eq!(
            (*c).base(),
            a_base,
            "a 2-page request takes the 3-page hole"
        );
        let d = large(&ph, 6);
        assert_eq!(
            (*d).base(),
            b_base,
            "a 6-page request takes the 8-page hole"
        );
        for align_pages in [2, 4, 16, 64, 128] {
            let s = ph.alloc_span(3, align_pages, SpanKind::Large, SizeClass(0));
            assert_eq!((*s).base() as usize % (align_pages * PAGE_SIZE), 0);
            ph.validate().unwrap();
            ph.free_span(s);
        }
    }
    ph.validate().unwrap();
}

fn wholly_free_chunks_beyond_the_reserve_are_unmapped_and_release_all_unmaps_the_rest(
    p: Placement,
) {
    // Delay 0: a wholly free chunk beyond the reserve goes at the next free.
    let ph = placed(p, SysOs);
    ph.set_purge_delay_ms(0);
    let spans: Vec<_> = (0..3).map(|_| large(&ph, USABLE_PAGES)).collect();
    assert_eq!(ph.stats().chunks, 3);
    for s in spans {
        // SAFETY: live spans, freed once.
        unsafe { ph.free_span(s) };
    }
    ph.validate().unwrap();
    assert_eq!(ph.stats().chunks, CHUNK_RESERVE);
    assert_eq!(ph.release_all(), CHUNK_SIZE);
    assert_eq!(ph.stats().chunks, 0);
    ph.validate().unwrap();
}

fn at_most_max_free_chunks_wait_for_the_delay(p: Placement) {
    let ph = placed(p, SysOs);
    ph.set_purge_delay_ms(60_000);
    let spans: Vec<_> = (0..MAX_FREE_CHUNKS + 3)
        .map(|_| large(&ph, USABLE_PAGES))
        .collect();
    for s in spans {
        // SAFETY: live spans, freed once.
        unsafe { ph.free_span(s) };
    }
    ph.validate().unwrap();
    assert_eq!(ph.stats().chunks, MAX_FREE_CHUNKS);
    assert_eq!(ph.release_all(), MAX_FREE_CHUNKS * CHUNK_SIZE);
}

fn wholly_free_chunks_stay_mapped_for_the_purge_delay_and_are_reused(p: Placement) {
    let ph = placed(p, SysOs);
    ph.set_purge_delay_ms(60_000);
    let spans: Vec<_> = (0..3).map(|_| large(&ph, USABLE_PAGES)).collect();
    // SAFETY: live spans of this heap.
    let bases: Vec<_> = spans.iter().map(|&s| unsafe { (*s).base() }).collect();
    for s in spans {
        // SAFETY: live spans, freed once.
        unsafe { ph.free_span(s) };
    }
    ph.validate().unwrap();
    assert_eq!(ph.stats().chunks, 3, "unmapped before the delay");
    // Reallocating takes the kept chunks: nothing new is mapped.
    let again: Vec<_> = (0..3).map(|_| large(&ph, USABLE_PAGES)).collect();
    assert_eq!(ph.stats().chunks, 3);
    for s in &again {
        // SAFETY: a live span.
        assert!(bases.contains(&unsafe { (**s).base() }));
    }
    for s in again {
        // SAFETY: live spans, freed once.
        unsafe { ph.free_span(s) };
    }
    // Once the delay has passed, each free goes on with the pass by a slice (a
    // slice unmaps at most 4 MiB: one chunk) until all but the reserve are gone.
    ph.set_purge_delay_ms(0);
    for left in (CHUNK_RESERVE..3).rev() {
        let s = large(&ph, 1);
        // SAFETY: a live span, freed once.
        unsafe { ph.free_span(s) };
        ph.validate().unwrap();
        assert_eq!(ph.stats().chunks, left.max(CHUNK_RESERVE));
    }
    assert_eq!(ph.stats().chunks, CHUNK_RESERVE);
}

fn purge_after_the_delay_marks_pages_zero_and_they_read_as_zero(p: Placement) {
    let ph = placed(p, SysOs);
    ph.set_purge_delay_ms(0);
    let keep = units(&ph, 1);
    let len = 4 * unit(&ph) * PAGE_SIZE;
    let s = units(&ph, 4);
    // SAFETY: the span is ours; we dirty it, then free it.
    unsafe {
        let base = (*s).base();
        core::ptr::write_bytes(base, 0xAB, len);
        ph.free_span(s);
        let st = ph.stats();
        assert!(st.purged_bytes_total >= len as u64, "{st:?}");
        assert_eq!(st.free_zeroed_bytes, st.free_bytes);
        let again = units(&ph, 4);
        assert_eq!((*again).base(), base);
        assert!((*again).flags() & SPAN_ZEROED != 0);
        let bytes = core::slice::from_raw_parts((*again).base(), len);
        assert!(bytes.iter().all(|&b| b == 0), "purged pages read as zero");
        ph.free_span(again);
        ph.free_span(keep);
    }
    ph.validate().unwrap();
}

fn grow_and_shrink_in_place_keep_the_invariants(p: Placement) {
    let ph = placed(p, SysOs);
    let s = large(&ph, 4);
    let _fence = ph.alloc_span(1, 1, SpanKind::Large, SizeClass(0));
    // SAFETY: `s` is a live Large span.
    unsafe {
        ph.shrink_in_place(s, 2);
        ph.validate().unwrap();
        assert!(ph.grow_in_place(s, 4), "the freed tail is still there");
        assert!(!ph.grow_in_place(s, 5), "the fence blocks further growth");
        ph.validate().unwrap();
        assert_eq!((*s).npages(), 4);
    }
}

fn page_entries_accept_object_starts_only_and_leave_with_the_small_span(p: Placement) {
    use crate::chunk::small_object;
    let ph = placed(p, SysOs);
    // 14,336-byte objects on 8-page spans: 4 objects and a whole page of tail,
    // where offset 4 × 14,336 is a multiple of the size but no object.
    let c = SizeClass(42);
    let (size, n, bytes) = (
        c.size_bytes(),
        c.objects_per_span(),
        c.span_pages() * PAGE_SIZE,
    );
    assert!(n * size < bytes, "the class has a tail holding a multiple");
    let s = ph.alloc_span(c.span_pages(), 1, SpanKind::Small, c);
    // SAFETY: `s` is a live span of a mapped chunk, so every address in it lies in
    // a mapped chunk; small_object never reads through them.
    unsafe {
        let base = (*s).base();
        for off in (0..bytes).step_by(8) {
            let want = off % size == 0 && off / size < n;
            assert_eq!(
                small_object(base as usize + off),
                want.then_some(c),
                "offset {off}"
            );
        }
        ph.validate().unwrap();
        ph.free_span(s);
        // The same pages as one Large span: no page names a class any more (a
        // Large span maps only its ends in `first`).
        let l = ph.alloc_span(c.span_pages(), 1, SpanKind::Large, SizeClass(0));
        assert_eq!((*l).base(), base, "best fit takes the same pages again");
        for off in (0..bytes).step_by(8) {
            assert_eq!(small_object(base as usize + off), None, "offset {off}");
        }
        ph.validate().unwrap();
        // A stale class left in the Large span's interior is what validate reports.
        let chunk = &*(*l).chunk();
        chunk.set_small((*l).start() as usize + 3, c, base);
        let v = ph.validate().unwrap_err();
        assert_eq!((v.structure, v.invariant), ("Span", 6), "{v}");
        chunk.clear_small((*l).start() as usize + 3);
        ph.validate().unwrap();
    }
}

fn the_chunk_map_knows_our_chunks_and_nothing_else(p: Placement) {
    let ph = placed(p, SysOs);
    let s = large(&ph, 1);
    // SAFETY: a live span.
    let base = unsafe { (*s).base() };
    assert!(ph.owns(base));
    let on_stack = 0u64;
    assert!(!ph.owns(&on_stack as *const u64 as *const u8));
    assert!(!ph.owns(core::ptr::null()));
    assert!(!ph.owns(usize::MAX as *const u8));
}

fn a_refused_purge_leaves_the_span_dirty_and_counts_nothing(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    let len = 4 * unit(&ph) * PAGE_SIZE;
    let s = units(&ph, 4);
    let fence = units(&ph, 1);
    // SAFETY: spans of ours, dirtied, freed once each.
    unsafe {
        let base = (*s).base();
        core::ptr::write_bytes(base, 0xAB, len);
        ph.free_span(s);
        let before = ph.stats();
        ph.os().refuse_purges(true);
        assert_eq!(ph.release_all(), 0, "nothing was released");
        let after = ph.stats();
        assert_eq!(after.purged_bytes_total, before.purged_bytes_total);
        assert_eq!(after.free_zeroed_bytes, before.free_zeroed_bytes);
        assert_eq!(after.purge_failures, before.purge_failures + 1);
        ph.validate().unwrap();
        // Still mapped (free pages of ours): readable, and not zeroed.
        let bytes = core::slice::from_raw_parts(base, len);
        assert!(
            bytes.iter().all(|&b| b == 0xAB),
            "the refused purge left the data"
        );
        if unit(&ph) == 1 {
            let again = lowest_units(&ph, 4);
            assert_eq!((*again).base(), base);
            assert_eq!(
                (*again).flags() & SPAN_ZEROED,
                0,
                "a refused purge marked its span zeroed"
            );
            ph.free_span(again);
        }
        // Once the OS takes it, the same pages are purged (and, where the free
        // span is whole OS pages, known zero).
        ph.os().refuse_purges(false);
        let released = ph.release_all();
        assert!(released >= len, "{released} < {len}");
        assert!(bytes.iter().all(|&b| b == 0), "purged pages read as zero");
        if unit(&ph) == 1 {
            assert_eq!(released, len);
            let again = lowest_units(&ph, 4);
            assert!((*again).flags() & SPAN_ZEROED != 0);
            ph.free_span(again);
        }
        ph.free_span(fence);
    }
    ph.validate().unwrap();
}

fn a_purge_pass_gives_up_after_a_few_refusals_and_release_all_tries_each_span_once(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    ph.set_purge_delay_ms(0);
    ph.os().refuse_purges(true);
    let u = unit(&ph);
    let pairs: Vec<_> = (0..6).map(|_| (units(&ph, 2), units(&ph, 1))).collect();
    for &(s, _) in &pairs {
        // SAFETY: a live span, freed once; the fence after it stays.
        unsafe { ph.free_span(s) };
    }
    ph.validate().unwrap();
    ph.os().purge_calls.store(0, Relaxed);
    assert_eq!(ph.purge_due(), 0);
    assert_eq!(ph.os().purge_calls.load(Relaxed), PURGE_FAILURES_PER_PASS);
    ph.os().purge_calls.store(0, Relaxed);
    assert_eq!(ph.release_all(), 0);
    assert_eq!(ph.os().purge_calls.load(Relaxed), 6);
    let st = ph.stats();
    assert_eq!(st.purged_bytes_total, 0);
    if u == 1 {
        assert_eq!(st.free_zeroed_bytes, st.free_bytes - 12 * PAGE_SIZE);
    } else {
        // With larger OS pages the unaligned piece before the first span is dirty
        // too (never purged whole).
        assert!(st.free_zeroed_bytes <= st.free_bytes - 12 * u * PAGE_SIZE);
    }
    ph.validate().unwrap();
    ph.os().refuse_purges(false);
    assert_eq!(ph.release_all(), 12 * u * PAGE_SIZE);
    let st = ph.stats();
    if u == 1 {
        assert_eq!(st.free_zeroed_bytes, st.free_bytes);
    } else {
        // With larger OS pages the first span merged with the unaligned piece
        // before it: its whole OS pages were purged, but the merged span is not all
        // whole pages, so it is not known zero (calloc clears it).
        assert!(
            st.free_bytes - st.free_zeroed_bytes < 3 * u * PAGE_SIZE,
            "{st:?}"
        );
    }
    for &(_, fence) in &pairs {
        // SAFETY: a live span, freed once.
        unsafe { ph.free_span(fence) };
    }
    ph.validate().unwrap();
}

fn a_refused_chunk_unmap_keeps_the_chunk_mapped_filed_and_counted(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    let s = large(&ph, USABLE_PAGES);
    // SAFETY: a whole-chunk span of ours, dirtied and freed once; then reused.
    unsafe {
        let base = (*s).base();
        core::ptr::write_bytes(base, 0xAB, PAGE_SIZE);
        ph.free_span(s);
        let before = ph.stats();
        ph.os().refuse_unmaps(true);
        // The unmap is refused; the same pass purges the chunk's pages instead
        // (its whole OS pages: on a 64 KiB kernel the first one holds the header).
        let whole = whole_os_pages(&ph, base, USABLE_PAGES * PAGE_SIZE);
        assert_eq!(ph.release_all(), whole);
        let after = ph.stats();
        assert_eq!(after.chunks, before.chunks);
        assert_eq!(after.unmapped_bytes_total, before.unmapped_bytes_total);
        assert_eq!(after.unmap_failures, before.unmap_failures + 1);
        assert!(ph.owns(base), "a chunk still mapped left the chunk map");
        ph.validate().unwrap();
        let again = large(&ph, USABLE_PAGES);
        assert_eq!((*again).base(), base);
        if whole == USABLE_PAGES * PAGE_SIZE {
            assert!((*again).flags() & SPAN_ZEROED != 0);
            assert!(
                core::slice::from_raw_parts(base, PAGE_SIZE)
                    .iter()
                    .all(|&b| b == 0)
            );
        }
        ph.free_span(again);
        ph.os().refuse_unmaps(false);
        assert_eq!(ph.release_all(), CHUNK_SIZE);
        assert_eq!(ph.stats().chunks, 0);
        // Not `!ph.owns(base)`: the chunk map is the process's, and a test running
        // beside this one may map its own chunk at the address just unmapped (a
        // CI run saw it); that the chunk left this heap is `chunks == 0` above.
    }
    ph.validate().unwrap();
}

fn a_chunk_whose_unmap_is_refused_at_free_stays_filed_beyond_max_free_chunks(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    let spans: Vec<_> = (0..=MAX_FREE_CHUNKS)
        .map(|_| large(&ph, USABLE_PAGES))
        .collect();
    ph.os().refuse_unmaps(true);
    for &s in &spans {
        // SAFETY: live spans, freed once each.
        unsafe { ph.free_span(s) };
    }
    let st = ph.stats();
    assert_eq!(st.chunks, MAX_FREE_CHUNKS + 1);
    assert_eq!((st.unmap_failures, st.unmapped_bytes_total), (1, 0));
    assert_eq!(
        st.free_bytes,
        (MAX_FREE_CHUNKS + 1) * USABLE_PAGES * PAGE_SIZE
    );
    ph.validate().unwrap();
    ph.os().refuse_unmaps(false);
    assert_eq!(ph.release_all(), (MAX_FREE_CHUNKS + 1) * CHUNK_SIZE);
    assert_eq!(ph.stats().chunks, 0);
    ph.validate().unwrap();
}

/// Chunks from the Rust heap instead of `mmap` (Miri runs no aligned `mmap`), so
/// that the test below also runs under Miri.
struct HeapOs;

impl HeapOs {
    fn layout(size: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(size, CHUNK_SIZE).unwrap()
    }
}

// SAFETY: `alloc_zeroed` gives fresh zeroed memory aligned as asked (the page heap
// asks for whole chunks at chunk alignment only); `purge` zeroes.
unsafe impl Os for HeapOs {
    fn map(&self, size: usize, align: usize) -> *mut u8 {
        assert!(align <= CHUNK_SIZE);
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(Self::layout(size)) };
        // The page heap finds headers from addresses (`ChunkHeader::of`): like
        // memory from `mmap`, the mapping may be reached from its address.
        p.expose_provenance();
        p
    }
    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        // SAFETY: the page heap unmaps whole chunks it mapped.
        unsafe { std::alloc::dealloc(p, Self::layout(size)) };
        Ok(())
    }
    unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        // SAFETY: the range lies in a live mapping (contract).
        unsafe { p.write_bytes(0, size) };
        Ok(())
    }
    unsafe fn remap(&self, _: *mut u8, _: usize, _: usize) -> *mut u8 {
        ptr::null_mut()
    }
    unsafe fn split(&self, _: *mut u8, _: usize, _: usize) {
        unreachable!("the page heap does not split mappings")
    }
    fn now_ms(&self) -> Result<u64, OsError> {
        Ok(0)
    }
}

/// A lookup by address (what `usable_size` and `free` do, without a lock) of a
/// block the reader owns, while another thread cuts, frees and coalesces spans in
/// the same chunk under the page-heap lock: the lookup finds the block, and the
/// coalescing never makes a `&mut` over the header the reader holds a `&` of. Under
/// Miri (`MIRIFLAGS=-Zmiri-permissive-provenance cargo +nightly miri test --lib
/// lookups_by_address`) the data-race detector also checks that no plain field is
/// read without the lock; the allocator's integer-to-pointer casts leave Miri's
/// aliasing model little to check here (wildcard provenance).
fn lookups_by_address_run_beside_coalescing_in_the_same_chunk(p: Placement) {
    let ph = placed(p, HeapOs);
    let mine = large(&ph, 2);
    // SAFETY: a live span of ours.
    let p = unsafe { (*mine).base() };
    let rounds = if cfg!(miri) { 2 } else { 2_000 };
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                let (a, b) = (large(&ph, 1), large(&ph, 3));
                // SAFETY: live spans, freed once; `b` then `a` coalesce.
                unsafe {
                    ph.free_span(b);
                    ph.free_span(a);
                }
            }
        });
        for _ in 0..rounds {
            // SAFETY: `p` is the start of our live Large span, in a mapped chunk.
            let (chunk, span) = unsafe {
                let chunk = &*ChunkHeader::of(p);
                (chunk, &*chunk.span_of(p))
            };
            assert_eq!(span.kind(), SpanKind::Large);
            assert_eq!(span.base(), p);
            assert_eq!(span.bytes(), 2 * PAGE_SIZE);
            assert_eq!(chunk.page_class(ChunkHeader::page_of(p)), NO_CLASS);
        }
    });
    // SAFETY: our span, freed once.
    unsafe { ph.free_span(mine) };
    ph.validate().unwrap();
    // Every chunk back to the "OS" (Miri reports a leak otherwise).
    ph.release_all();
    assert_eq!(ph.stats().chunks, 0);
}

fn room_is_made_outside_the_lock_and_taken_from_the_free_spans(p: Placement) {
    let ph = placed(p, SysOs);
    // Nothing free: no span, and no chunk mapped for it.
    let none = ph.alloc_span_from_free(4, 1, SpanKind::Large, SizeClass(0));
    assert!(none.is_null());
    assert_eq!(ph.stats().chunks, 0);
    // make_room maps and files one chunk; asked again it finds the room there.
    assert!(ph.make_room(4));
    assert_eq!(ph.stats().chunks, 1);
    assert!(ph.make_room(4));
    assert_eq!(ph.stats().chunks, 1, "room was there: nothing more mapped");
    ph.validate().unwrap();
    let s = ph.alloc_span_from_free(4, 1, SpanKind::Large, SizeClass(0));
    assert!(!s.is_null());
    // SAFETY: our live span, in a mapped chunk.
    assert_eq!(unsafe { (*s).npages() }, 4);
    // More than a chunk holds: neither call maps anything.
    assert!(!ph.make_room(USABLE_PAGES + 1));
    assert!(
        ph.alloc_span_from_free(USABLE_PAGES + 1, 1, SpanKind::Large, SizeClass(0))
            .is_null()
    );
    assert_eq!(ph.stats().chunks, 1);
    // SAFETY: our span, freed once.
    unsafe { ph.free_span(s) };
    ph.validate().unwrap();
    ph.release_all();
    assert_eq!(ph.stats().chunks, 0);
}

fn a_chunk_mapped_while_room_appeared_is_kept_spare_or_unmapped(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    let s = large(&ph, 1);
    // As if another thread had made room while this one mapped: the heap has
    // room, and the fresh chunk is kept as a spare wholly free chunk.
    let mapped = ph.map_chunk();
    assert!(!mapped.is_null());
    // SAFETY: from map_chunk, never filed; the lock is held by with_inner.
    let back = ph.with_inner(|h| unsafe { ph.file_mapped(h, mapped, 1) });
    assert!(back.is_null(), "kept as a spare");
    let st = ph.stats();
    assert_eq!(st.chunks, 2);
    ph.validate().unwrap();
    // With as many wholly free chunks filed as invariant 2 allows, it is handed
    // back to be unmapped; an unmap the OS refuses files it after all.
    let mapped = ph.map_chunk();
    ph.with_inner(|h| h.free_chunks = MAX_FREE_CHUNKS);
    // SAFETY: as above.
    let back = ph.with_inner(|h| unsafe { ph.file_mapped(h, mapped, 1) });
    assert_eq!(back, mapped);
    ph.with_inner(|h| h.free_chunks = 1);
    ph.os().refuse_unmaps(true);
    // SAFETY: mapped by map_chunk, never filed; the lock is not held.
    unsafe { ph.drop_unfiled_chunk(back) };
    ph.os().refuse_unmaps(false);
    let st = ph.stats();
    assert_eq!((st.chunks, st.unmap_failures), (3, 1));
    ph.validate().unwrap();
    // And one the OS unmaps is gone.
    let mapped = ph.map_chunk();
    // SAFETY: as above.
    unsafe { ph.drop_unfiled_chunk(mapped) };
    assert_eq!(ph.stats().chunks, 3);
    // SAFETY: our span, freed once.
    unsafe { ph.free_span(s) };
    ph.release_all();
    assert_eq!(ph.stats().chunks, 0);
}

fn delayed_purge_passes_run_in_slices_of_bounded_system_calls(p: Placement) {
    let ph = placed(p, FlakyOs::default());
    // Nothing is due while the spans are freed.
    ph.set_purge_delay_ms(3_600_000);
    let n = 3 * 16 + 5;
    let len = unit(&ph) * PAGE_SIZE;
    // Dirty one-unit spans between live fences, so that none coalesce.
    let mut fences = vec![units(&ph, 1)];
    let mut spans = Vec::new();
    for _ in 0..n {
        let s = units(&ph, 1);
        // SAFETY: our live span, `len` bytes long.
        unsafe { core::ptr::write_bytes((*s).base(), 0xAB, len) };
        spans.push(s);
        fences.push(units(&ph, 1));
    }
    for &s in &spans {
        // SAFETY: our span, freed once.
        unsafe { ph.free_span(s) };
    }
    let calls = || ph.os().purge_calls.load(Relaxed);
    assert_eq!(calls(), 0);
    // Now everything free is due. While a background thread of this process does
    // the passes, frees do none.
    ph.set_purge_delay_ms(0);
    ph.leave_passes_to(crate::platform::process_id());
    let trigger = fences.pop().unwrap();
    // SAFETY: our span, freed once.
    unsafe { ph.free_span(trigger) };
    assert_eq!(
        calls(),
        0,
        "a free purged while the passes were left to a thread"
    );
    // Without it, a free pays one slice (`PurgeBudget::SLICE`: 8 calls, these
    // spans being small) and leaves the rest to the next.
    ph.leave_passes_to(0);
    let trigger = fences.pop().unwrap();
    // SAFETY: as above.
    unsafe { ph.free_span(trigger) };
    assert_eq!(calls(), 8, "one slice at a free");
    let trigger = fences.pop().unwrap();
    // SAFETY: as above.
    unsafe { ph.free_span(trigger) };
    assert_eq!(calls(), 16, "the pass goes on at the next free");
    ph.validate().unwrap();
    // The background pass does the rest, slice after slice.
    ph.purge_due();
    let st = ph.stats();
    assert_eq!(
        st.free_zeroed_bytes, st.free_bytes,
        "every free span purged: {st:?}"
    );
    assert!(calls() > 16, "the background pass made no call");
    ph.validate().unwrap();
    let before = calls();
    ph.purge_due();
    assert_eq!(calls(), before, "nothing left to purge");
    for f in fences {
        // SAFETY: our spans, freed once.
        unsafe { ph.free_span(f) };
    }
    ph.release_all();
    assert_eq!(ph.stats().chunks, 0);
}

under_every_placement!(
    freeing_in_any_order_coalesces_back_to_one_free_chunk,
    wholly_free_chunks_beyond_the_reserve_are_unmapped_and_release_all_unmaps_the_rest,
    at_most_max_free_chunks_wait_for_the_delay,
    wholly_free_chunks_stay_mapped_for_the_purge_delay_and_are_reused,
    purge_after_the_delay_marks_pages_zero_and_they_read_as_zero,
    grow_and_shrink_in_place_keep_the_invariants,
    page_entries_accept_object_starts_only_and_leave_with_the_small_span,
    the_chunk_map_knows_our_chunks_and_nothing_else,
    a_refused_purge_leaves_the_span_dirty_and_counts_nothing,
    a_purge_pass_gives_up_after_a_few_refusals_and_release_all_tries_each_span_once,
    a_refused_chunk_unmap_keeps_the_chunk_mapped_filed_and_counted,
    a_chunk_whose_unmap_is_refused_at_free_stays_filed_beyond_max_free_chunks,
    lookups_by_address_run_beside_coalescing_in_the_same_chunk,
    room_is_made_outside_the_lock_and_taken_from_the_free_spans,
    a_chunk_mapped_while_room_appeared_is_kept_spare_or_unmapped,
    delayed_purge_passes_run_in_slices_of_bounded_system_calls,
);

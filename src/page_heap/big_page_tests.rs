//! The page heap on a kernel whose pages are larger than its own (64 KiB against
//! 8 KiB), over an OS double that refuses what such a kernel would.

use super::tests::large;
use super::*;
use crate::os::SysOs;

/// SysOs with a larger OS page (64 KiB, as on some aarch64 kernels), which checks
/// what such a kernel would: a purge must start and end on one of its pages
/// (Linux refuses an unaligned start and rounds a length up, over the neighbour).
struct BigPageOs {
    purged: std::sync::Mutex<Vec<(usize, usize)>>,
}

const BIG_PAGE: usize = 64 << 10;

// SAFETY: SysOs's calls; `purge` only narrows which calls are accepted.
unsafe impl Os for BigPageOs {
    fn map(&self, size: usize, align: usize) -> *mut u8 {
        SysOs.map(size, align)
    }
    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        // SAFETY: forwarded contract.
        unsafe { SysOs.unmap(p, size) }
    }
    unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        assert!(
            p as usize % BIG_PAGE == 0 && size % BIG_PAGE == 0 && size > 0,
            "a purge of {p:p} + {size:#x} is not in whole 64 KiB pages"
        );
        self.purged.lock().unwrap().push((p as usize, size));
        // SAFETY: forwarded contract.
        unsafe { SysOs.purge(p, size) }
    }
    unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { SysOs.remap(p, old, new) }
    }
    unsafe fn split(&self, p: *mut u8, size: usize, at: usize) {
        // SAFETY: forwarded contract.
        unsafe { SysOs.split(p, size, at) }
    }
    fn now_ms(&self) -> Result<u64, OsError> {
        SysOs.now_ms()
    }
    fn page_size(&self) -> usize {
        BIG_PAGE
    }
}

/// With OS pages larger than the page heap's (64 KiB against 8 KiB), a free span
/// gives back only the OS pages wholly inside it: its neighbours' bytes survive the
/// purge, a span with no whole OS page is left alone, and only a span purged whole
/// counts as zeroed; once everything coalesces, the chunk is purged whole.
fn with_os_pages_larger_than_ours_a_purge_takes_only_whole_os_pages(p: Placement) {
    let ph = placed(
        p,
        BigPageOs {
            purged: Default::default(),
        },
    );
    ph.set_purge_delay_ms(0);
    let per = BIG_PAGE / PAGE_SIZE;
    // Spans of 1, per + 3 and 2 * per pages between live guards, each filled.
    let sizes = [1, per + 3, 2 * per];
    let mut guards = vec![large(&ph, 1)];
    let mut holes = Vec::new();
    for &n in &sizes {
        holes.push(large(&ph, n));
        guards.push(large(&ph, 1));
    }
    let fill = |s: *mut Span, byte: u8| {
        // SAFETY: a live span of ours.
        unsafe { (*s).base().write_bytes(byte, (*s).bytes()) }
    };
    for &g in &guards {
        fill(g, 0x5A);
    }
    for &h in &holes {
        fill(h, 0xA5);
        // SAFETY: live, freed once.
        unsafe { ph.free_span(h) };
    }
    let released = ph.release_all();
    ph.validate().unwrap();
    assert!(
        !ph.os().purged.lock().unwrap().is_empty(),
        "the spans with whole OS pages inside were purged"
    );
    for &g in &guards {
        // SAFETY: a live span of ours.
        let bytes = unsafe { core::slice::from_raw_parts((*g).base(), (*g).bytes()) };
        assert!(
            bytes.iter().all(|&b| b == 0x5A),
            "a purge reached a live neighbour"
        );
    }
    assert!(released > 0 && released % BIG_PAGE == 0, "{released}");
    assert!(
        released <= (per + 3 + 2 * per) * PAGE_SIZE,
        "more given back than the free spans hold: {released}"
    );
    let st = ph.stats();
    assert!(
        st.free_zeroed_bytes <= st.free_bytes,
        "{} zeroed of {} free",
        st.free_zeroed_bytes,
        st.free_bytes
    );
    // Free spans that read as zero really do.
    ph.for_each_span(|s| {
        if s.kind() == SpanKind::Free && s.flags() & SPAN_ZEROED != 0 {
            // SAFETY: a free span of the heap, mapped; nothing writes it meanwhile.
            let bytes = unsafe { core::slice::from_raw_parts(s.base(), s.bytes()) };
            assert!(bytes.iter().all(|&b| b == 0), "a 'zeroed' span holds data");
        }
    });
    // Everything freed: the chunk's free space coalesces and is purged whole.
    for &g in &guards {
        // SAFETY: live, freed once.
        unsafe { ph.free_span(g) };
    }
    ph.release_all();
    ph.validate().unwrap();
    let st = ph.stats();
    assert!(
        st.free_bytes - st.free_zeroed_bytes < BIG_PAGE,
        "at most the unaligned head stays dirty: {} of {} free bytes not zeroed",
        st.free_bytes - st.free_zeroed_bytes,
        st.free_bytes
    );
}

under_every_placement!(with_os_pages_larger_than_ours_a_purge_takes_only_whole_os_pages,);

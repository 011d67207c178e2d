//! Tests of the placement policies: what each picks, that the choice is refused
//! once spans are out, and a random churn of Small and Large spans that checks
//! every invariant under each.

use super::tests::large;
use super::*;
use crate::os::SysOs;

/// Two holes, a large one at the lower address and a small one above it, and
/// the rest of the chunk free above both: (large hole, small hole, tail) bases.
fn two_holes_and_a_tail(ph: &PageHeap<SysOs>) -> (usize, usize, usize) {
    let big = large(ph, 8);
    let _g1 = large(ph, 1);
    let small = large(ph, 3);
    let g2 = large(ph, 1);
    // SAFETY: live spans, freed once.
    unsafe {
        let bases = (
            (*big).base() as usize,
            (*small).base() as usize,
            (*g2).base() as usize + PAGE_SIZE,
        );
        ph.free_span(big);
        ph.free_span(small);
        bases
    }
}

fn base(s: *mut Span) -> usize {
    // SAFETY: a live span of a test's heap.
    unsafe { (*s).base() as usize }
}

#[test]
fn each_policy_picks_its_hole() {
    for p in Placement::ALL {
        let ph = placed(p, SysOs);
        let (big, small, tail) = two_holes_and_a_tail(&ph);
        let got = base(large(&ph, 2));
        let want = match p {
            Placement::Best => small,
            Placement::First => big,
            // The rover sits after the last guard: the tail is the next fit.
            Placement::Next => tail,
        };
        assert_eq!(got, want, "{p}");
        ph.validate().unwrap();
    }
}

#[test]
fn next_fit_roves_on_and_wraps_around() {
    let ph = placed(Placement::Next, SysOs);
    let (big, small, _) = two_holes_and_a_tail(&ph);
    // Fill the tail: the chunk has no free page after the rover any more.
    let tail_pages = ph.stats().largest_free_span_bytes / PAGE_SIZE;
    let _rest = large(&ph, tail_pages);
    assert_eq!(ph.stats().free_spans, 2);
    // Wraps to the lowest fitting hole, then roves on from there.
    let a = large(&ph, 2);
    assert_eq!(base(a), big);
    let b = large(&ph, 2);
    assert_eq!(
        base(b),
        big + 2 * PAGE_SIZE,
        "after the rover, in the same hole"
    );
    let c = large(&ph, 3);
    assert_eq!(base(c), big + 4 * PAGE_SIZE);
    // 1 page left in the big hole; 3 pages are asked: the small hole, after it.
    let d = large(&ph, 3);
    assert_eq!(base(d), small);
    ph.validate().unwrap();
}

#[test]
fn the_policy_is_chosen_before_the_first_span_only() {
    let ph = PageHeap::new(SysOs);
    assert_eq!(ph.placement(), Placement::Best);
    ph.set_placement(Placement::Next).unwrap();
    ph.set_placement(Placement::First).unwrap();
    let s = large(&ph, 1);
    // Spans taken from the one chunk's free tail: the same under every policy.
    ph.set_placement(Placement::Next).unwrap();
    ph.set_placement(Placement::First).unwrap();
    // SAFETY: a live span, freed once.
    unsafe { ph.free_span(s) };
    assert_eq!(
        ph.set_placement(Placement::Best),
        Err(PlacementError {
            current: Placement::First
        })
    );
    // Choosing the policy in force is no change, so no error.
    ph.set_placement(Placement::First).unwrap();
    ph.force_placement(Placement::Next);
    assert_eq!(ph.placement(), Placement::Next);
    let _t = large(&ph, 1);
    ph.validate().unwrap();
}

#[test]
fn names_parse_as_strata_placement_spells_them() {
    for p in Placement::ALL {
        assert_eq!(Placement::from_name(p.name().as_bytes()), Some(p));
        assert_eq!(
            Placement::from_name(p.name().to_uppercase().as_bytes()),
            Some(p)
        );
    }
    for bad in [&b""[..], b"buddy", b"best ", b"worst"] {
        assert_eq!(Placement::from_name(bad), None);
    }
}

/// A random churn of Small and Large spans (aligned ones among them), frees in
/// random order, and in-place resizes, over several chunks: every invariant
/// holds after each step's batch, the free-span figures of `stats` match a walk,
/// and once everything is freed each chunk is one free span again.
fn random_churn_keeps_every_invariant(p: Placement) {
    let ph = placed(p, SysOs);
    ph.set_purge_delay_ms(0);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ p as u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<*mut Span> = Vec::new();
    for step in 0..3_000 {
        let r = next();
        if live.len() < 40 || r % 3 != 0 {
            let s = match r % 8 {
                0 => ph.alloc_span(
                    1 + (r >> 8) as usize % 200,
                    1,
                    SpanKind::Large,
                    SizeClass(0),
                ),
                1 => ph.alloc_span(1 + (r >> 8) as usize % 6, 8, SpanKind::Large, SizeClass(0)),
                2 => ph.alloc_span(USABLE_PAGES / 2, 1, SpanKind::Large, SizeClass(0)),
                _ => {
                    let c = SizeClass((r >> 8) as u8 % 40);
                    ph.alloc_span(c.span_pages(), 1, SpanKind::Small, c)
                }
            };
            assert!(!s.is_null());
            live.push(s);
        } else {
            let s = live.swap_remove((r >> 8) as usize % live.len());
            // SAFETY: a live span, freed once; resized only if Large.
            unsafe {
                if (*s).kind() == SpanKind::Large && r % 5 == 0 {
                    let n = (*s).npages() as usize;
                    if n > 1 {
                        ph.shrink_in_place(s, n / 2);
                    }
                    ph.grow_in_place(s, n + 2);
                    live.push(s);
                    continue;
                }
                ph.free_span(s);
            }
        }
        if step % 100 == 0 {
            ph.validate()
                .unwrap_or_else(|v| panic!("{p}, step {step}: {v}"));
            let (mut spans, mut largest) = (0, 0);
            ph.for_each_span(|s| {
                if s.kind() == SpanKind::Free {
                    spans += 1;
                    largest = largest.max(s.bytes());
                }
            });
            let st = ph.stats();
            assert_eq!(
                (st.free_spans, st.largest_free_span_bytes),
                (spans, largest)
            );
        }
    }
    for s in live {
        // SAFETY: live spans, freed once.
        unsafe { ph.free_span(s) };
    }
    ph.validate().unwrap();
    let st = ph.stats();
    assert_eq!(st.free_spans, st.chunks, "each chunk coalesced to one span");
    assert_eq!(st.free_bytes, st.chunks * USABLE_PAGES * PAGE_SIZE);
    ph.release_all();
    assert_eq!(ph.stats().chunks, 0);
}

under_every_placement!(random_churn_keeps_every_invariant);

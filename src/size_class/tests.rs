//! Unit tests of the size classes and both geometries.
use super::*;

#[test]
fn every_small_size_gets_a_class_at_least_as_big() {
    for size in 1..=MAX_SMALL {
        let c = class_for(size, 1).unwrap();
        assert!(c.size_bytes() >= size, "size {size} -> class {c:?}");
        if c.0 > 0 {
            let below = SizeClass(c.0 - 1).size_bytes();
            assert!(below < size, "size {size} fits the smaller class {below}");
        }
    }
    assert_eq!(class_for(MAX_SMALL + 1, 1), None);
    assert_eq!(class_for(0, 1), None, "zero goes to the slow path");
}

#[test]
fn waste_is_bounded() {
    for size in 1..=MAX_SMALL {
        let cs = class_for(size, 1).unwrap().size_bytes();
        if size <= 128 {
            assert!(cs - size < 8);
        } else {
            // At most a quarter of the request, i.e. under 20 % of the class.
            assert!((cs - size) * 4 <= size, "size {size} class {cs}");
            assert!((cs - size) * 5 < cs);
        }
    }
}

#[test]
fn aligned_requests_get_classes_that_are_multiples_of_the_alignment() {
    let mut align = 1;
    while align <= PAGE_SIZE {
        for size in 1..=MAX_SMALL.min(align * 70) {
            match class_for(size, align) {
                Some(c) => {
                    assert_eq!(c.size_bytes() % align, 0, "size {size} align {align}");
                    assert!(c.size_bytes() >= size);
                }
                None => assert!(round_up(size, align) > MAX_SMALL),
            }
        }
        align *= 2;
    }
    assert_eq!(
        class_for(8, PAGE_SIZE * 2),
        None,
        "beyond a page is not small"
    );
}

/// The check `free` relies on, against the arithmetic it replaces, for the
/// classes of `g`: every class, every offset in a chunk and a page beyond, and a
/// spread of 32-bit offsets up to the wrap-around (a pointer below its span's
/// base gives one near 2^32).
fn object_checks_accept_exactly_object_starts(g: &Geometry, checks: &ObjectChecks) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for c in 0..g.num_classes {
        let (size, n) = (g.class_size(c) as u64, g.objects_per_span(c) as u64);
        let accepts = |off: u64| checks.accepts(page_code(c), off as u32);
        let want = |off: u64| off % size == 0 && off / size < n;
        for off in 0..(g.chunk_size() + g.page_size()) as u64 {
            assert_eq!(accepts(off), want(off), "class {c} offset {off}");
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x as u32 as u64;
            assert_eq!(accepts(off), want(off), "class {c} offset {off}");
        }
        for off in (u32::MAX as u64 - 4 * size)..=u32::MAX as u64 {
            assert!(!accepts(off), "class {c} offset {off}");
        }
    }
    for code in 0..256 {
        if code % CODE_STRIDE != 0 || code / CODE_STRIDE >= g.num_classes {
            assert!(!checks.accepts(code as u8, 0), "code {code} names no class");
        }
    }
}

#[test]
fn object_check_accepts_exactly_the_starts_of_objects_inside_the_span() {
    object_checks_accept_exactly_object_starts(&GEOMETRY, &OBJECT_CHECKS);
}

#[test]
fn object_index_is_the_index_of_each_object_and_none_elsewhere() {
    for ci in 0..NUM_CLASSES {
        let c = SizeClass(ci as u8);
        let (size, n) = (c.size_bytes(), c.objects_per_span());
        for k in 0..n {
            assert_eq!(c.object_index(k * size), Some(k), "class {ci} object {k}");
            if size > 1 {
                assert_eq!(c.object_index(k * size + 1), None, "class {ci}");
                assert_eq!(c.object_index(k * size + size - 1), None, "class {ci}");
            }
        }
        assert_eq!(c.object_index(n * size), None, "class {ci}: the tail");
        assert_eq!(c.object_index(1 << 32), None, "class {ci}: beyond 32 bits");
        assert_eq!(
            c.object_index(usize::MAX - size + 1),
            None,
            "class {ci}: below"
        );
    }
}

/// The loom models' geometry, built and checked outside loom.
#[test]
fn tiny_geometry_object_check_accepts_exactly_the_starts_of_objects() {
    static TINY_CHECKS: ObjectChecks = ObjectChecks::new(&Geometry::TINY);
    object_checks_accept_exactly_object_starts(&Geometry::TINY, &TINY_CHECKS);
}

/// The tables `class_for` takes agree with the arithmetic of the geometry.
#[test]
fn class_tables_agree_with_the_geometry_arithmetic() {
    let mut align = 1;
    while align <= 2 * PAGE_SIZE {
        for size in 0..=MAX_SMALL + 2 * align {
            assert_eq!(
                class_for(size, align),
                GEOMETRY.class_for(size, align),
                "size {size} align {align}"
            );
        }
        // Every power of two, so that a page's alignment (the largest the table
        // takes) and twice it are both checked.
        align *= 2;
    }
}

#[test]
fn tiny_geometry_has_two_classes_on_one_page_spans() {
    let g = Geometry::TINY;
    assert_eq!(
        (g.page_size(), g.chunk_size(), g.pages_per_chunk()),
        (256, 4096, 16)
    );
    assert_eq!(g.class_for(1, 1), Some(SizeClass(0)));
    assert_eq!(g.class_for(64, 1), Some(SizeClass(0)));
    assert_eq!(g.class_for(65, 1), Some(SizeClass(1)));
    assert_eq!(g.class_for(128, 1), Some(SizeClass(1)));
    assert_eq!(g.class_for(129, 1), None);
    assert_eq!(g.class_for(8, 512), None, "beyond a page is not small");
    assert_eq!(g.class_for(0, 1), None);
    for c in 0..g.num_classes {
        assert_eq!(g.span_pages(c), 1);
        assert_eq!(g.batch(c), 2);
    }
    assert_eq!((g.objects_per_span(0), g.objects_per_span(1)), (4, 2));
    geometry_is_sane(&g);
}

#[test]
fn c_malloc_classes_are_the_16_byte_aligned_ones() {
    assert_eq!(class_for_c(0), class_for(16, 16), "malloc(0) gets a block");
    for size in 1..=MAX_SMALL + 64 {
        assert_eq!(class_for_c(size), class_for(size, 16), "size {size}");
    }
}

fn geometry_is_sane(g: &Geometry) {
    for c in 0..g.num_classes {
        let span = g.span_pages(c) * g.page_size();
        let size = g.class_size(c);
        assert!(g.objects_per_span(c) >= 1);
        assert!(span % size <= span / 8, "class {c} wastes a tail");
        assert!(g.batch(c) >= 2 && g.batch(c) <= 32);
        assert!(g.max_cached(c) >= 2 * g.batch(c));
        assert!(g.first_refill(c) >= 1 && g.first_refill(c) <= g.batch(c));
        assert!(g.first_refill(c) == 1 || g.first_refill(c) * size <= FIRST_REFILL_BYTES);
        assert!(g.span_pages(c) < 64);
        if c > 0 {
            assert!(g.class_size(c - 1) < size);
        }
    }
    assert_eq!(g.class_size(g.num_classes - 1), g.max_small);
    assert!(g.num_classes < NO_CLASS as usize);
}

#[test]
fn class_geometry_is_sane() {
    geometry_is_sane(&Geometry::REAL);
    for c in 0..NUM_CLASSES {
        let cls = SizeClass(c as u8);
        assert_eq!(cls.size_bytes(), GEOMETRY.class_size(c));
        assert_eq!(cls.span_pages(), GEOMETRY.span_pages(c));
        assert_eq!(cls.batch(), GEOMETRY.batch(c));
        assert_eq!(cls.max_cached(), GEOMETRY.max_cached(c));
        assert_eq!(cls.objects_per_span(), GEOMETRY.objects_per_span(c));
    }
}

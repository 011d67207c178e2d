//! White-box tests of the per-CPU pieces: the CPU list parser, the header packing,
//! the validator, and the header lock as seen by the critical sections.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::slab::Slab;
use super::*;
use crate::platform::rseq::{self as sys, pinned};

fn obj(i: usize) -> NonNull<u8> {
    NonNull::new(((i + 1) * 16) as *mut u8).unwrap()
}

fn slab(caps: &[u16]) -> Slab {
    Slab::new(possible_cpus().unwrap(), caps, caps).unwrap()
}

#[test]
fn cpu_lists_parse_to_their_highest_cpu() {
    assert_eq!(sys::parse_cpu_list(b"0-15\n"), Some(15));
    assert_eq!(sys::parse_cpu_list(b"0\n"), Some(0));
    assert_eq!(sys::parse_cpu_list(b"0,2-3,8\n"), Some(8));
    assert_eq!(sys::parse_cpu_list(b"0-3,5"), Some(5));
    assert_eq!(sys::parse_cpu_list(b""), None);
    assert_eq!(sys::parse_cpu_list(b"x"), None);
    assert!(possible_cpus().is_some_and(|n| n >= 1));
}

#[test]
fn dynamic_symbols_are_found_as_dlsym_finds_them() {
    assert_eq!(sys::gnu_hash(b""), 5381);
    assert_eq!(sys::gnu_hash(b"printf"), 0x156b_2bb8);
    for name in [&b"__rseq_offset"[..], b"__rseq_size", b"pthread_key_create"] {
        let c = std::ffi::CString::new(name).unwrap();
        let d = sys::dlsym_default(&c);
        assert_ne!(d, 0);
        assert_eq!(sys::find_dynamic_symbol(name), Some(d), "{c:?}");
    }
    assert_eq!(
        sys::find_dynamic_symbol(b"strata_no_such_symbol_anywhere"),
        None
    );
}

#[test]
fn glibc_symbols_resolve_on_this_glibc() {
    // glibc >= 2.35 defines both; the size is 0 only when its registration is off.
    let (_, size) = sys::glibc_rseq().expect("glibc 2.35+ exports __rseq_offset");
    let off = std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("rseq=0"));
    assert_eq!(size == 0, off);
}

#[test]
fn slab_shape_is_checked() {
    let n = possible_cpus().unwrap();
    assert_eq!(Slab::new(n, &[], &[]).err(), Some(SlabError::BadShape));
    assert_eq!(Slab::new(n, &[4], &[5]).err(), Some(SlabError::BadShape));
    assert_eq!(Slab::new(n, &[4, 4], &[4]).err(), Some(SlabError::BadShape));
    assert_eq!(
        Slab::new(n, &[40_000, 40_000], &[1, 1]).err(),
        Some(SlabError::TooBig)
    );
    if n > 0 {
        assert_eq!(
            Slab::new(n - 1, &[4], &[4]).err(),
            Some(SlabError::TooFewCpus)
        );
    }
    let s = slab(&[4, 0, 7]);
    assert_eq!(s.map_bytes(), n as usize * 4096);
    s.validate().unwrap();
    assert_eq!(s.len_and_capacity(0, 2), Some((0, 7)));
    assert_eq!(s.len_and_capacity(0, 3), None);
}

#[test]
fn drain_returns_what_was_pushed_top_first() {
    let s = slab(&[8, 8]);
    let area = current().unwrap();
    let cpu = pinned(|cpu| {
        for i in 0..5 {
            // SAFETY: this thread's area, class 1 < 2, each object once.
            assert!(unsafe { s.push(area, 1, obj(i)) });
        }
        cpu
    });
    let mut got = Vec::new();
    assert_eq!(s.drain(cpu, 1, |p| got.push(p)), Ok(5));
    assert_eq!(got, (0..5).rev().map(obj).collect::<Vec<_>>());
    assert_eq!(s.len_and_capacity(cpu, 1), Some((0, 8)));
    assert_eq!(s.drain(cpu, 2, |_| ()), Err(DrainError::OutOfRange));
    assert_eq!(s.drain(s.ncpu(), 0, |_| ()), Err(DrainError::OutOfRange));
    s.validate().unwrap();
}

#[test]
fn capacity_shrinks_and_grows_on_one_cpu() {
    let s = slab(&[8]);
    let area = current().unwrap();
    pinned(|cpu| {
        for i in 0..6 {
            // SAFETY: this thread's area, class 0, each object once.
            assert!(unsafe { s.push(area, 0, obj(i)) });
        }
        let mut surplus = Vec::new();
        assert_eq!(s.set_capacity(cpu, 0, 2, |p| surplus.push(p)), Ok(4));
        assert_eq!(surplus, vec![obj(5), obj(4), obj(3), obj(2)]);
        assert_eq!(s.len_and_capacity(cpu, 0), Some((2, 2)));
        assert!(
            // SAFETY: this thread's area (`current`), class 0 of the slab, and objects of
            // `obj` each in at most one slot (obj(9) is pushed only after it left).
            !unsafe { s.push(area, 0, obj(9)) },
            "push over the lowered capacity"
        );
        assert_eq!(
            s.set_capacity(cpu, 0, 9, |_| ()),
            Err(DrainError::OutOfRange)
        );
        assert_eq!(s.set_capacity(cpu, 0, 8, |_| ()), Ok(0));
        // SAFETY: this thread's area (`current`), class 0 of the slab, and objects of
        // `obj` each in at most one slot (obj(9) is pushed only after it left).
        assert!(unsafe { s.push(area, 0, obj(9)) });
        // SAFETY: this thread's area (`current`), class 0 of the slab, and objects of
        // `obj` each in at most one slot (obj(9) is pushed only after it left).
        assert_eq!(unsafe { s.pop(area, 0) }, Some(obj(9)));
        s.validate().unwrap();
    });
}

#[test]
fn locked_header_fails_both_sections_and_a_second_locker() {
    let s = slab(&[4]);
    let area = current().unwrap();
    pinned(|cpu| {
        // SAFETY: this thread's area, class 0.
        assert!(unsafe { s.push(area, 0, obj(0)) });
        assert!(s.test_lock(cpu, 0));
        s.validate().unwrap();
        assert!(!s.test_lock(cpu, 0), "a second non-owner got the lock");
        assert_eq!(s.drain(cpu, 0, |_| ()), Err(DrainError::Busy));
        // SAFETY: this thread's area, class 0; obj(1) is in no slot, obj(0) in one.
        assert_eq!(unsafe { s.pop(area, 0) }, None, "pop through a lock");
        // SAFETY: this thread's area, class 0; obj(1) is in no slot, obj(0) in one.
        assert!(!unsafe { s.push(area, 0, obj(1)) }, "push through a lock");
        s.test_unlock(cpu, 0);
        // SAFETY: this thread's area, class 0; obj(1) is in no slot, obj(0) in one.
        assert_eq!(unsafe { s.pop(area, 0) }, Some(obj(0)));
    });
}

#[test]
fn validate_reports_a_broken_header() {
    let s = slab(&[4, 4]);
    // current below begin
    s.test_header(0, 1).store(0, Ordering::Relaxed);
    let v = s.validate().unwrap_err();
    assert_eq!((v.structure, v.invariant), ("percpu::Slab", 101));
}

#[test]
fn abort_counter_is_readable() {
    // The counter only grows; tests/percpu.rs forces aborts with signals.
    let a = aborts();
    assert!(aborts() >= a);
}

#[test]
fn batches_move_many_objects_in_one_section_within_the_bounds() {
    let s = slab(&[6, 4]);
    let area = current().unwrap();
    pinned(|cpu| {
        let objs: Vec<*mut u8> = (0..9).map(|i| obj(i).as_ptr()).collect();
        // SAFETY: this thread's area, class 0 < 2, distinct objects in no slot.
        assert_eq!(unsafe { s.push_batch(area, 0, &objs) }, 6, "capacity 6");
        assert_eq!(s.len_and_capacity(cpu, 0), Some((6, 6)));
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.push_batch(area, 0, &objs[6..]) }, 0);
        let mut out = [core::ptr::null_mut(); 4];
        // SAFETY: this thread's area, class 0.
        assert_eq!(unsafe { s.pop_batch(area, 0, &mut out) }, 4);
        // The top four, deepest first.
        assert_eq!(out.to_vec(), objs[2..6].to_vec());
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.pop_batch(area, 0, &mut out) }, 2);
        assert_eq!(out[..2].to_vec(), objs[..2].to_vec());
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.pop_batch(area, 0, &mut out) }, 0);
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.push_batch(area, 1, &[]) }, 0);
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.push_batch(area, 1, &objs[..3]) }, 3);
        assert!(s.test_lock(cpu, 1));
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        let popped = unsafe { s.pop_batch(area, 1, &mut out) };
        assert_eq!(popped, 0, "pop through a lock");
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        let pushed = unsafe { s.push_batch(area, 1, &objs[3..4]) };
        assert_eq!(pushed, 0, "push through a lock");
        s.test_unlock(cpu, 1);
        // SAFETY: this thread's area (`current`), a class of the slab, and only objects
        // of `objs`, each in at most one slot (what was pushed is popped first).
        assert_eq!(unsafe { s.pop_batch(area, 1, &mut out[..1]) }, 1);
        assert_eq!(out[0], objs[2]);
        s.validate().unwrap();
    });
}

#[test]
fn capacities_widen_without_a_lock_and_narrow_with_one() {
    let s = slab(&[8, 8]);
    let area = current().unwrap();
    let n = possible_cpus().unwrap();
    // Slab::new(ncpu, max, init) with the initial capacities below the maximum.
    let s2 = Slab::new(n, &[8, 8], &[2, 2]).unwrap();
    drop(s);
    pinned(|cpu| {
        assert_eq!(s2.len_and_capacity(cpu, 0), Some((0, 2)));
        assert!(s2.grow_capacity(cpu, 0, 5));
        assert!(!s2.grow_capacity(cpu, 0, 4), "narrowing through grow");
        assert!(s2.grow_capacity(cpu, 0, 100), "clamped to the maximum");
        assert_eq!(s2.len_and_capacity(cpu, 0), Some((0, 8)));
        for i in 0..8 {
            // SAFETY: this thread's area (`current`), class 0 of 2, each object of
            // `obj` once, so in at most one slot.
            assert!(unsafe { s2.push(area, 0, obj(i)) });
        }
        assert!(s2.test_lock(cpu, 1));
        assert!(!s2.grow_capacity(cpu, 1, 4), "grew a locked header");
        s2.test_unlock(cpu, 1);
        let mut back = Vec::new();
        assert_eq!(
            s2.set_capacities(cpu, &[3, 1], |k, p| back.push((k, p))),
            Ok(5)
        );
        assert_eq!(back, (3..8).rev().map(|i| (0, obj(i))).collect::<Vec<_>>());
        assert_eq!(s2.len_and_capacity(cpu, 0), Some((3, 3)));
        assert_eq!(s2.len_and_capacity(cpu, 1), Some((0, 1)));
        assert_eq!(s2.capacity_bytes(cpu, &[16, 32]), 3 * 16 + 32);
        s2.validate().unwrap();
    });
}

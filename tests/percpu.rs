//! The per-CPU slab under concurrency: objects are conserved (none lost, none
//! duplicated) across many threads, forced migrations, signals that abort critical
//! sections, and non-owners draining and resizing CPUs meanwhile; and the three ways
//! of finding an rseq area (glibc's, our own, none).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;
use common::child::{self, Env};
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use strata::percpu::{self, Mode, Slab};

/// Fake objects: distinct non-null addresses, never dereferenced.
fn obj(i: usize) -> NonNull<u8> {
    NonNull::new(((i + 1) * 16) as *mut u8).unwrap()
}

/// Objects as addresses, to carry them across threads.
fn addrs(v: Vec<(usize, NonNull<u8>)>) -> Vec<(usize, usize)> {
    v.into_iter()
        .map(|(k, p)| (k, p.as_ptr() as usize))
        .collect()
}

fn slab(classes: usize, max: u16, init: u16) -> Slab {
    let ncpu = percpu::possible_cpus().unwrap();
    Slab::new(ncpu, &vec![max; classes], &vec![init; classes]).unwrap()
}

fn glibc_rseq_disabled_here() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("glibc.pthread.rseq=0"))
}

/// Pins the calling thread to `cpu` (mod the CPUs it may use); false if refused.
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read/write it.
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all);
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &all))
            .collect();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(allowed[cpu % allowed.len()], &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn unpin() {
    // SAFETY: as in `pin`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What a churn run does besides pushing and popping.
#[derive(Clone, Copy)]
struct Churn {
    threads: usize,
    objects_per_thread: usize,
    rounds: usize,
    classes: usize,
    /// Re-pin each thread to another CPU every this many rounds (0: never).
    migrate_every: usize,
    /// A thread sends SIGUSR1 to the churners as fast as it can.
    signals: bool,
    /// A thread drains and resizes CPUs meanwhile.
    non_owner: bool,
}

static SIGNALS_HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    SIGNALS_HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// Every thread starts with its own unique objects and pushes/pops them on the
/// per-CPU stacks in a pseudo-random pattern; at the end, the objects the threads
/// hold, plus those a non-owner drained, plus what the slab still holds, must be
/// exactly the starting set.
fn churn(c: Churn) {
    let s = Arc::new(slab(c.classes, 32, 16));
    let area_ok = percpu::current().is_some();
    assert!(area_ok, "no rseq area: mode {:?}", percpu::mode());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(c.threads + 1));
    let tids: Arc<Vec<AtomicUsize>> =
        Arc::new((0..c.threads).map(|_| AtomicUsize::new(0)).collect());

    if c.signals {
        // SAFETY: installing a handler that only bumps an atomic counter.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
    }

    let aborts_before = percpu::aborts();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut workers = Vec::new();
    for t in 0..c.threads {
        let (s, start, tids) = (s.clone(), start.clone(), tids.clone());
        workers.push(std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tids[t].store(unsafe { libc::gettid() } as usize, Ordering::Relaxed);
            let area = percpu::current();
            let mut mine: Vec<(usize, NonNull<u8>)> = (0..c.objects_per_thread)
                .map(|i| ((t + i) % c.classes, obj(t * c.objects_per_thread + i)))
                .collect();
            let mut rng = (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            start.wait();
            // After the barrier: a panic before it would leave the others waiting.
            let area = area.expect("rseq area in a new thread");
            // With signals, go on past `rounds` until some section was aborted (a
            // signal must land inside one of the few instructions of a section).
            for round in 0.. {
                if round >= c.rounds
                    && (!c.signals
                        || percpu::aborts() > aborts_before
                        || std::time::Instant::now() > deadline)
                {
                    break;
                }
                if c.migrate_every != 0 && round % c.migrate_every == 0 {
                    pin(t + round / c.migrate_every);
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let class = (rng % c.classes as u64) as usize;
                if rng & 0x300 == 0x200 {
                    // A batch push: up to 8 of this thread's objects of the class.
                    let mut batch: Vec<*mut u8> = Vec::new();
                    let mut i = 0;
                    while i < mine.len() && batch.len() < 8 {
                        if mine[i].0 == class {
                            batch.push(mine.swap_remove(i).1.as_ptr());
                        } else {
                            i += 1;
                        }
                    }
                    // SAFETY: this thread's area; class in range; every object is
                    // held by this thread only (in no slot), none twice, none null.
                    let k = unsafe { s.push_batch(area, class, &batch) };
                    for &p in &batch[k..] {
                        mine.push((class, NonNull::new(p).unwrap()));
                    }
                } else if rng & 0x300 == 0x300 {
                    // A batch pop of up to 1 + (rng % 8) objects.
                    let mut out = [std::ptr::null_mut(); 8];
                    let n = 1 + (rng >> 20) as usize % 8;
                    // SAFETY: this thread's area; class in range.
                    let k = unsafe { s.pop_batch(area, class, &mut out[..n]) };
                    assert!(k <= n);
                    for &p in &out[..k] {
                        mine.push((class, NonNull::new(p).expect("a popped slot is null")));
                    }
                } else if rng & 0x100 == 0 {
                    if let Some(i) = mine.iter().position(|&(k, _)| k == class) {
                        let (_, p) = mine.swap_remove(i);
                        // SAFETY: this thread's area; class in range; p is held by
                        // this thread only, so it is in no slot.
                        if !unsafe { s.push(area, class, p) } {
                            mine.push((class, p));
                        }
                    }
                } else {
                    // SAFETY: this thread's area; class in range.
                    if let Some(p) = unsafe { s.pop(area, class) } {
                        mine.push((class, p));
                    }
                }
            }
            addrs(mine)
        }));
    }

    let signaller = c.signals.then(|| {
        let (stop, tids) = (stop.clone(), tids.clone());
        std::thread::spawn(move || {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            while !stop.load(Ordering::Relaxed) {
                for tid in tids.iter() {
                    let tid = tid.load(Ordering::Relaxed);
                    if tid != 0 {
                        // SAFETY: signals a thread of this process that handles
                        // SIGUSR1; a thread that already exited gives ESRCH.
                        // SAFETY: as above: this thread's area, class in range, each object once.
                        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid as i32, libc::SIGUSR1) };
                    }
                }
            }
        })
    });

    let non_owner = c.non_owner.then(|| {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut taken: Vec<(usize, NonNull<u8>)> = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let cpu = i % s.ncpu();
                let class = i as usize % s.nclasses();
                match i % 3 {
                    0 => {
                        let _ = s.drain_cpu(cpu, |k, p| taken.push((k, p)));
                    }
                    1 => {
                        let _ =
                            s.set_capacity(cpu, class, (i % 33) as u16, |p| taken.push((class, p)));
                    }
                    _ => {
                        let _ = s.drain(cpu, class, |p| taken.push((class, p)));
                    }
                }
                i += 1;
                std::thread::yield_now();
            }
            addrs(taken)
        })
    });

    start.wait();
    let mut held: Vec<(usize, usize)> = Vec::new();
    for w in workers {
        held.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = signaller {
        s.join().unwrap();
    }
    if let Some(n) = non_owner {
        held.extend(n.join().unwrap());
    }
    s.validate().unwrap();
    for cpu in 0..s.ncpu() {
        s.drain_cpu(cpu, |k, p| held.push((k, p.as_ptr() as usize)))
            .unwrap();
    }
    s.validate().unwrap();

    let mut seen = HashSet::new();
    for &(k, p) in &held {
        assert!(seen.insert(p), "object {p:#x} twice");
        let i = p / 16 - 1;
        let (t, j) = (i / c.objects_per_thread, i % c.objects_per_thread);
        assert_eq!(
            k,
            (t + j) % c.classes,
            "object {p:#x} came back in another class"
        );
    }
    assert_eq!(seen.len(), c.threads * c.objects_per_thread, "objects lost");
    if c.signals {
        assert!(
            SIGNALS_HANDLED.load(Ordering::Relaxed) > 0,
            "no signal was delivered"
        );
        assert!(
            percpu::aborts() > aborts_before,
            "no critical section was aborted"
        );
    }
}

#[test]
fn objects_conserved_across_64_threads() {
    churn(Churn {
        threads: 64,
        objects_per_thread: 40,
        rounds: 20_000,
        classes: 3,
        migrate_every: 0,
        signals: false,
        non_owner: false,
    });
}

#[test]
fn objects_conserved_under_forced_migration() {
    churn(Churn {
        threads: 16,
        objects_per_thread: 40,
        rounds: 20_000,
        classes: 2,
        migrate_every: 50,
        signals: false,
        non_owner: false,
    });
}

#[test]
fn signals_abort_critical_sections_and_objects_are_conserved() {
    churn(Churn {
        threads: 8,
        objects_per_thread: 40,
        rounds: 200_000,
        classes: 2,
        migrate_every: 0,
        signals: true,
        non_owner: false,
    });
}

#[test]
fn objects_conserved_while_non_owners_drain_and_resize() {
    churn(Churn {
        threads: 16,
        objects_per_thread: 40,
        rounds: 200_000,
        classes: 3,
        migrate_every: 100,
        signals: false,
        non_owner: true,
    });
}

#[test]
fn single_thread_stack_is_lifo_and_bounded() {
    let s = slab(2, 8, 8);
    assert!(pin(0));
    let area = percpu::current().unwrap();
    for i in 0..8 {
        // SAFETY: this thread's area, class 1 < 2, each object pushed once.
        assert!(unsafe { s.push(area, 1, obj(i)) });
    }
    // SAFETY: as above.
    assert!(!unsafe { s.push(area, 1, obj(99)) }, "push beyond capacity");
    // SAFETY: as above.
    assert_eq!(unsafe { s.pop(area, 0) }, None, "class 0 untouched");
    assert_eq!(s.pops(0, 1), 0, "pushes are not pops");
    for i in (0..8).rev() {
        // SAFETY: as above.
        assert_eq!(unsafe { s.pop(area, 1) }, Some(obj(i)));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { s.pop(area, 1) }, None);
    // Each pop that took an object counted once, on the CPU it ran on, in its
    // class; the failed ones did not (pinned: no migration between the two).
    assert_eq!(s.pops(0, 1), 8);
    assert_eq!(s.pops(0, 0), 0);
    assert_eq!(s.pops(1, 1), 0);
    assert_eq!(s.pops(2, 1), 0, "another CPU, or out of range");
    s.validate().unwrap();
    unpin();
}

/// The three modes, each in a child process with its own environment.
fn child(test: &str, env: &[(&str, &str)]) {
    let mut all = vec![("STRATA_PERCPU_CHILD", "1")];
    all.extend_from_slice(env);
    child::pass(test, Env::Inherit, &all);
}

#[test]
fn glibc_registration_is_used_when_present() {
    if glibc_rseq_disabled_here() {
        return;
    }
    assert_eq!(percpu::mode(), Mode::Glibc);
    assert!(percpu::current().is_some());
}

#[test]
fn own_registration_when_glibc_has_none() {
    child(
        "child_own_registration",
        &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")],
    );
}

#[test]
#[ignore = "run by own_registration_when_glibc_has_none in a child process"]
fn child_own_registration() {
    assert_eq!(percpu::mode(), Mode::Own);
    let area = percpu::current().expect("own area registered");
    // SAFETY: reading our own area's cpu field.
    assert!(unsafe { area.as_ref() }.cpu().is_some());
    // Unregistering makes the sections fail (cpu_id < 0), re-registering works.
    let s = slab(1, 4, 4);
    percpu::release_current_thread().unwrap();
    // SAFETY: the area is this thread's (now unregistered) one.
    assert!(
        // SAFETY: as above: this thread's area, class in range, each object once.
        !unsafe { s.push(area, 0, obj(1)) },
        "push with an unregistered area"
    );
    let area = percpu::current().expect("registered again");
    // SAFETY: this thread's area.
    assert!(unsafe { s.push(area, 0, obj(1)) });
    drop(s);
    churn(Churn {
        threads: 8,
        objects_per_thread: 20,
        rounds: 200_000,
        classes: 2,
        migrate_every: 20,
        signals: true,
        non_owner: true,
    });
}

#[test]
fn strata_percpu_0_turns_it_off() {
    child("child_off", &[("STRATA_PERCPU", "0")]);
}

#[test]
#[ignore = "run by strata_percpu_0_turns_it_off in a child process"]
fn child_off() {
    assert_eq!(percpu::mode(), Mode::Off);
    assert!(percpu::current().is_none());
}

/// Two owners on one CPU push and pop while a non-owner on another CPU drains
/// that CPU in a tight loop; every object must come back exactly once. Before the
/// second fence of `Slab::with_locked`, a section that read `current` while the
/// header was locked and its bound after the unlock committed a stack top from the
/// old `current`, bringing back objects the drain had taken: tens of duplicates in
/// every 5-second run on two CPUs.
#[test]
fn objects_conserved_while_another_cpu_drains_in_a_tight_loop() {
    if percpu::current().is_none() {
        return;
    }
    let s = Arc::new(slab(2, 64, 64));
    if s.can_fence().is_err() {
        return;
    }
    let cpus = {
        // SAFETY: a zeroed cpu_set_t is an empty set, filled by the call.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above: the call writes the set.
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        // SAFETY: reads the set.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .count()
    };
    if cpus < 2 {
        return;
    }
    const PER: usize = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let owners: Vec<_> = (0..2usize)
        .map(|t| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                assert!(pin(1));
                let area = percpu::current().expect("rseq area");
                let mut mine: Vec<NonNull<u8>> = (0..PER).map(|i| obj(t * PER + i)).collect();
                let mut x = t as u64 * 7 + 1;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x & 1 == 0 {
                        if let Some(p) = mine.pop() {
                            // SAFETY: this thread's area, class 0 of 2; `p` is held
                            // by this thread only, so it is in no slot.
                            if !unsafe { s.push(area, 0, p) } {
                                mine.push(p);
                            }
                        }
                    // SAFETY: this thread's area, class 0 of 2.
                    } else if let Some(p) = unsafe { s.pop(area, 0) } {
                        mine.push(p);
                    }
                }
                mine.into_iter()
                    .map(|p| p.as_ptr() as usize)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let drainer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            assert!(pin(0));
            let mut taken = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let _ = s.drain_cpu(1 % s.ncpu(), |_, p| taken.push(p.as_ptr() as usize));
                let _ = s.drain_cpu(0, |_, p| taken.push(p.as_ptr() as usize));
            }
            taken
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<usize> = owners.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.extend(drainer.join().unwrap());
    for cpu in 0..s.ncpu() {
        s.drain_cpu(cpu, |_, p| all.push(p.as_ptr() as usize))
            .unwrap();
    }
    s.validate().unwrap();
    let unique: HashSet<usize> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (2 * PER, 2 * PER),
        "objects duplicated or lost"
    );
}

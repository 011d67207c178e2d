#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

// Bad programs in Rust, each run in a child process: this test binary re-executed
// with STRATA_CHECKED_CHILD=<action>, which runs only the `child` test. Built with
// `--features checked` (CI: `cargo test --release --features checked --test
// checked_rust`), every action must abort (SIGABRT) with a report on stderr that
// names the pointer and what was wrong.
//
// Built without it, every action is undefined behaviour that the plain build does
// not promise to notice, so no test here asserts what happens then (a test that
// pinned it would pass or fail with the optimiser's and the debug checks' moods).
// The exceptions are the checks the plain build does promise, on memory the
// allocator owns: with the default `harden` feature, a block freed again while it
// is the head of its list, and a write over a free block's encoded free-list link,
// both abort with a report (docs/CHECKED_MODE.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata::Strata;

const CHILD_ENV: &str = "STRATA_CHECKED_CHILD";
const CHECKED: bool = cfg!(feature = "checked");

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn alloc(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { Strata.alloc(layout(size)) };
    assert!(!p.is_null());
    p
}

/// Prints `ptr=<p>` (the parent looks for the address in the report) and flushes.
fn announce(p: *const u8) {
    println!("ptr={:#x}", p as usize);
    std::io::stdout().flush().unwrap();
}

/// After a bad action that was not caught: two allocations of `size` and what they
/// returned, then exit. The parent reads these lines in the plain build.
fn follow_up(size: usize, bad: *const u8) -> ! {
    let a = alloc(size);
    let b = alloc(size);
    println!(
        "after: a={:#x} b={:#x} dup={} returned_bad={}",
        a as usize,
        b as usize,
        a == b,
        std::ptr::eq(a, bad) || std::ptr::eq(b, bad)
    );
    std::io::stdout().flush().unwrap();
    std::process::exit(0)
}

static mut GLOBAL_BUF: [u64; 8] = [0; 8];

/// Runs one bad action. Everything here is undefined behaviour on purpose: it is
/// what checked mode must catch.
#[allow(clippy::missing_safety_doc)]
unsafe fn run(action: &str) {
    // SAFETY: none; deliberate misuse, in a child process that exits or aborts.
    unsafe {
        match action {
            "double_free" => {
                let p = alloc(40);
                announce(p);
                Strata.dealloc(p, layout(40));
                Strata.dealloc(p, layout(40));
                follow_up(40, p);
            }
            "double_free_later" => {
                // Another block of the class is freed in between: p is no longer the
                // head of the thread's list when it is freed again. A new block x
                // then gets p, and the follow-up must not get it a second time.
                let p = alloc(40);
                let q = alloc(40);
                announce(p);
                Strata.dealloc(p, layout(40));
                Strata.dealloc(q, layout(40));
                Strata.dealloc(p, layout(40));
                let x = alloc(40);
                follow_up(40, x);
            }
            "free_stack" => {
                let mut buf = [0u8; 64];
                let p = std::hint::black_box(buf.as_mut_ptr());
                announce(p);
                Strata.dealloc(p, layout(64));
                follow_up(64, p);
            }
            "free_global" => {
                let p = (&raw mut GLOBAL_BUF).cast::<u8>();
                announce(p);
                Strata.dealloc(p, layout(64));
                follow_up(64, p);
            }
            "free_system" => {
                let p = System.alloc(layout(64));
                announce(p);
                Strata.dealloc(p, layout(64));
                follow_up(64, p);
            }
            "free_interior" => {
                let p = alloc(100).add(16);
                announce(p);
                Strata.dealloc(p, layout(100));
                follow_up(100, p);
            }
            "free_misaligned" => {
                let p = alloc(100).add(1);
                announce(p);
                Strata.dealloc(p, layout(100));
                follow_up(100, p);
            }
            "free_large_interior" => {
                let p = alloc(300_000).add(8192);
                announce(p);
                Strata.dealloc(p, layout(300_000));
                follow_up(300_000, p);
            }
            "overflow_small" | "overflow_large" | "overflow_huge" => {
                let n = match action {
                    "overflow_small" => 40,
                    "overflow_large" => 300_000,
                    _ => 3 << 20,
                };
                let p = alloc(n);
                announce(p);
                *p.add(n) = 0x41;
                Strata.dealloc(p, layout(n));
                follow_up(n, p);
            }
            "overflow_realloc" => {
                let p = alloc(40);
                announce(p);
                *p.add(41) = 0x41;
                let q = Strata.realloc(p, layout(40), 4000);
                follow_up(40, q);
            }
            "overflow_validate" => {
                let p = alloc(40);
                announce(p);
                *p.add(44) = 0x41;
                match strata::validate_heap() {
                    Ok(()) => println!("validate: ok"),
                    Err(v) => println!("validate: {v}"),
                }
                std::io::stdout().flush().unwrap();
                std::process::exit(0);
            }
            "use_after_free" | "use_after_free_churn" => {
                let p = alloc(40);
                announce(p);
                Strata.dealloc(p, layout(40));
                *p.add(8) = 0x41;
                if action == "use_after_free" {
                    // Empties the quarantine now (checking every block in it).
                    strata::release_memory();
                } else {
                    // 64 MiB of other frees push it out of the 8 MiB quarantine.
                    for _ in 0..1024 {
                        let q = alloc(64 << 10);
                        Strata.dealloc(q, layout(64 << 10));
                    }
                }
                follow_up(40, p);
            }
            "overwrite_free_link" => {
                // A write after free puts an attacker-chosen address (here a global
                // buffer) over the freed block's first word, where the free list's
                // link lives. Plain build: the next allocation of the class pops the
                // block and must abort on its link rather than hand out the address
                // on the allocation after. Checked build: the block is in quarantine;
                // emptying it finds the write.
                let p = alloc(96);
                announce(p);
                Strata.dealloc(p, layout(96));
                let target = (&raw mut GLOBAL_BUF).cast::<u8>();
                p.cast::<usize>().write(target as usize);
                if CHECKED {
                    strata::release_memory();
                }
                follow_up(96, target);
            }
            "overflow_into_free_block" => {
                // Two neighbouring 96-byte blocks; the upper one is freed and the
                // lower one overflows by 8 bytes into it (its link), writing an
                // attacker-chosen address. Plain build only (checked blocks are
                // larger than their request, and the canary catches this at free).
                let blocks: Vec<*mut u8> = (0..64).map(|_| alloc(96)).collect();
                let (low, high) = blocks
                    .iter()
                    .find_map(|&a| {
                        blocks
                            .iter()
                            .find(|&&b| b as usize == a as usize + 96)
                            .map(|&b| (a, b))
                    })
                    .expect("two neighbouring blocks among 64 of one class");
                announce(high);
                Strata.dealloc(high, layout(96));
                let target = (&raw mut GLOBAL_BUF).cast::<u8>();
                low.add(96).cast::<usize>().write_unaligned(target as usize);
                follow_up(96, target);
            }
            "size_mismatch" => {
                let p = alloc(40);
                announce(p);
                Strata.dealloc(p, layout(48));
                follow_up(48, p);
            }
            "realloc_foreign" => {
                let mut buf = [0u8; 64];
                let p = std::hint::black_box(buf.as_mut_ptr());
                announce(p);
                let q = Strata.realloc(p, layout(64), 100);
                follow_up(100, q);
            }
            "realloc_freed" => {
                let p = alloc(40);
                announce(p);
                Strata.dealloc(p, layout(40));
                let q = Strata.realloc(p, layout(40), 100);
                follow_up(100, q);
            }
            "leak_at_exit" => {
                // Two Large blocks (the test harness has none) and three small ones.
                for n in [300_000, 300_000, 1000, 1000, 1000] {
                    alloc(n);
                }
                announce(std::ptr::null());
                std::process::exit(0);
            }
            other => panic!("unknown action {other}"),
        }
    }
}

/// The child side: does nothing unless STRATA_CHECKED_CHILD names an action.
#[test]
fn child() {
    if let Ok(action) = std::env::var(CHILD_ENV) {
        // SAFETY: deliberate misuse, in a child process that exits or aborts.
        unsafe { run(&action) };
        std::process::exit(0);
    }
}

/// Runs the child for `action`; kills it after 60 s (a corrupted heap may hang).
fn spawn(action: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    // The thread cache's checks are what these tests read (the per-CPU front
    // end's, whose caches hold addresses rather than links, are in
    // tests/percpu_front.rs): a `STRATA_PERCPU` of the environment is not passed on.
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("STRATA_PERCPU", "0")
        .env(CHILD_ENV, action)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if start.elapsed() > Duration::from_secs(60) {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The address the child announced.
fn announced(out: &Output) -> String {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("ptr=").map(|(_, p)| p))
        .unwrap_or_else(|| panic!("no ptr= line in child stdout:\n{stdout}"))
        .to_string()
}

/// Checked build: the child aborted with SIGABRT, and stderr has a `strata:` line
/// with every one of `needles` (the announced pointer included).
fn assert_aborts(action: &str, needles: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let out = spawn(action, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{action}: expected an abort, got {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let ptr = announced(&out);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("strata: "))
        .unwrap_or_else(|| panic!("{action}: no report on stderr:\n{stderr}"));
    for n in needles.iter().copied().chain([ptr.as_str()]) {
        assert!(line.contains(n), "{action}: report lacks {n:?}: {line}");
    }
}

#[test]
fn double_free_aborts_naming_the_block() {
    if CHECKED {
        for action in ["double_free", "double_free_later"] {
            assert_aborts(action, &["double free of", "size class"]);
        }
    } else if cfg!(feature = "harden") {
        // Plain build: a block freed again while it is still in the thread's cache
        // of its class is caught (its first word decodes as a link; the list is
        // walked to confirm), at the head or further down. A double free of a block
        // that has left the cache is not promised to be caught: not run (UB).
        assert_aborts(
            "double_free",
            &["double free of", "(class ", "already the last block freed"],
        );
        assert_aborts(
            "double_free_later",
            &[
                "double free of",
                "already in this thread's cache",
                "1 frees of the class ago",
            ],
        );
    }
    // Without `harden` nothing is checked: not run (UB).
}

#[test]
fn frees_of_pointers_strata_never_returned_abort() {
    // Plain build: `GlobalAlloc::dealloc` trusts the caller; not run (UB).
    if !CHECKED {
        return;
    }
    for action in ["free_stack", "free_global", "free_system"] {
        assert_aborts(action, &["dealloc() of a pointer strata never returned"]);
    }
}

#[test]
fn interior_and_misaligned_frees_abort() {
    // Plain build: `GlobalAlloc::dealloc` trusts the caller; not run (UB).
    if !CHECKED {
        return;
    }
    for (action, off) in [
        ("free_interior", "offset 16 in the block"),
        ("free_misaligned", "offset 1 in the block"),
        ("free_large_interior", "offset 8192 in the block"),
    ] {
        assert_aborts(action, &["interior or misaligned pointer", off]);
    }
}

#[test]
fn writes_past_the_end_abort_at_free() {
    for (action, needles) in [
        (
            "overflow_small",
            &[
                "write past the end",
                "40 bytes requested",
                "byte 40 is 0x41",
                "size class",
            ][..],
        ),
        (
            "overflow_large",
            &[
                "write past the end",
                "300000 bytes requested",
                "large block",
            ],
        ),
        (
            "overflow_huge",
            &[
                "write past the end",
                "3145728 bytes requested",
                "huge block",
            ],
        ),
        (
            "overflow_realloc",
            &["write past the end", "byte 41 is 0x41", "realloc()"],
        ),
    ] {
        // Plain build: writes out of bounds are not checked; not run (UB).
        if CHECKED {
            assert_aborts(action, needles);
        }
    }
}

#[test]
fn validator_reports_a_damaged_canary() {
    // Plain build: there is no canary to damage; the write would be UB. Not run.
    if !CHECKED {
        return;
    }
    let out = spawn("overflow_validate", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let ptr = announced(&out);
    let line = stdout.lines().find(|l| l.contains("validate:")).unwrap();
    assert!(line.contains("Block invariant 1"), "{line}");
    assert!(line.contains(&ptr), "{line}");
}

#[test]
fn writes_to_freed_blocks_abort_when_they_leave_quarantine() {
    // Plain build: no quarantine checks these writes; not run (UB).
    if !CHECKED {
        return;
    }
    for action in ["use_after_free", "use_after_free_churn"] {
        assert_aborts(
            action,
            &["write to a freed block", "byte 8 is 0x41", "size class"],
        );
    }
}

#[test]
fn overwritten_free_list_links_abort_instead_of_handing_out_the_address() {
    if CHECKED {
        // The quarantine holds the block: the write is found when it leaves.
        assert_aborts(
            "overwrite_free_link",
            &["write to a freed block", "byte 0 is", "size class"],
        );
    } else if cfg!(feature = "harden") {
        // Plain build: free-list links are encoded and checked at every pop; the
        // first allocation after the write aborts, naming the block and its class.
        for action in ["overwrite_free_link", "overflow_into_free_block"] {
            assert_aborts(
                action,
                &["free-list corruption: object", "(96 B) has a bad link"],
            );
        }
    }
    // Without `harden` links are not checked: not run (UB).
}

#[test]
fn layout_size_mismatch_aborts() {
    if CHECKED {
        assert_aborts(
            "size_mismatch",
            &[
                "size mismatch in dealloc()",
                "layout says 48 bytes",
                "allocated with 40",
            ],
        );
    }
    // Plain build: dealloc trusts the layout; not run (UB).
}

#[test]
fn realloc_of_bad_pointers_aborts() {
    if CHECKED {
        assert_aborts(
            "realloc_foreign",
            &["realloc() of a pointer strata never returned"],
        );
        assert_aborts("realloc_freed", &["realloc() of a freed block"]);
    }
    // Plain build: realloc of a foreign pointer copies from it and caches it; not
    // run, as what follows depends on the stack's contents.
}

#[cfg(feature = "checked")]
#[test]
fn leak_report_at_exit_lists_live_blocks_by_class() {
    let out = spawn("leak_at_exit", &[("STRATA_LEAK_REPORT", "1")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("strata: leak report: "), "{stderr}");
    assert!(
        stderr.contains("large blocks: 2 blocks, 600000 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("(1008-byte objects)") || stderr.contains("-byte objects): "));
    // Without the variable: no report.
    let out = spawn("leak_at_exit", &[]);
    assert!(!text(&out.stderr).contains("leak report"));
}

#[cfg(feature = "checked")]
#[test]
fn leak_report_api_counts_exactly_what_is_live() {
    let before = strata::leak_report();
    let ps: Vec<*mut u8> = [300_000, 400_000].iter().map(|&n| alloc(n)).collect();
    let during = strata::leak_report();
    // Other tests in this binary allocate too, but never Large blocks.
    assert_eq!(during.large().blocks, before.large().blocks + 2);
    assert_eq!(during.large().bytes, before.large().bytes + 700_000);
    assert!(during.to_string().contains("large blocks: "));
    for (p, n) in ps.into_iter().zip([300_000, 400_000]) {
        // SAFETY: allocated above with this layout.
        unsafe { Strata.dealloc(p, layout(n)) };
    }
    assert_eq!(strata::leak_report().large(), before.large());
}

#[cfg(feature = "checked")]
#[test]
fn usable_size_is_the_requested_size_and_none_for_foreign_pointers() {
    let p = alloc(41);
    assert_eq!(strata::usable_size(p), Some(41));
    let x = 5u64;
    assert_eq!(strata::usable_size((&raw const x).cast()), None);
    // SAFETY: allocated above; a grow in place keeps the pointer.
    let q = unsafe { Strata.realloc(p, layout(41), 44) };
    assert_eq!(strata::usable_size(q), Some(44));
    // SAFETY: allocated above with this layout.
    unsafe { Strata.dealloc(q, layout(44)) };
    assert_eq!(strata::usable_size(q), None);
}

#[test]
fn clean_program_runs_clean_and_validates() {
    // Every route and every kind of realloc, content checked; then the validator.
    let mut blocks = Vec::new();
    for (i, &n) in [
        1usize,
        8,
        24,
        100,
        1000,
        4096,
        70_000,
        300_000,
        900_000,
        3 << 20,
    ]
    .iter()
    .enumerate()
    {
        for align in [8usize, 64, 4096] {
            let l = Layout::from_size_align(n, align).unwrap();
            // SAFETY: a valid layout; blocks are used within their sizes.
            unsafe {
                let p = if i % 2 == 0 {
                    Strata.alloc(l)
                } else {
                    Strata.alloc_zeroed(l)
                };
                assert!(!p.is_null() && p as usize % align == 0);
                if i % 2 == 1 {
                    assert!(std::slice::from_raw_parts(p, n).iter().all(|&b| b == 0));
                }
                std::ptr::write_bytes(p, i as u8, n);
                blocks.push((p, l, i as u8));
            }
        }
    }
    strata::validate_heap().unwrap();
    for (p, l, v) in blocks {
        // SAFETY: live blocks of layout `l` filled with `v`; realloc keeps the prefix.
        unsafe {
            let n = l.size();
            assert!(std::slice::from_raw_parts(p, n).iter().all(|&b| b == v));
            let q = Strata.realloc(p, l, 2 * n + 8);
            assert!(!q.is_null());
            assert!(std::slice::from_raw_parts(q, n).iter().all(|&b| b == v));
            let l2 = Layout::from_size_align(2 * n + 8, l.align()).unwrap();
            let r = Strata.realloc(q, l2, n / 2 + 1);
            assert!(
                std::slice::from_raw_parts(r, n / 2 + 1)
                    .iter()
                    .all(|&b| b == v)
            );
            Strata.dealloc(r, Layout::from_size_align(n / 2 + 1, l.align()).unwrap());
        }
    }
    strata::validate_heap().unwrap();
}

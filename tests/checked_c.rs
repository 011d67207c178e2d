// Checked mode through the C ABI: tests/checked/bad.c (one misuse of malloc per
// action) runs under LD_PRELOAD of a checked libstrata.so (capi/ with `--features
// checked`), where every action must abort (SIGABRT) with a `strata:` report
// naming the pointer, and under the plain library (capi/ with its defaults), where the
// cheap by-address checks of `free`, `realloc` and `malloc_usable_size` must hold
// (a pointer that is not the start of one of our blocks is ignored, or gives NULL
// with ENOMEM, or 0), an overwritten free-list link must abort at the next malloc,
// and the rest goes unnoticed, as docs/CHECKED_MODE.md says.
//
// Both libraries are built by this test with the cargo that runs it, into
// target/checked-cabi (not target/release, so that the features of the main build
// are left alone), and copied to distinct names; bad.c is compiled with `cc`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir() -> PathBuf {
    root().join("target/checked-cabi")
}

/// Builds the library with `features` and copies it to `name` (once per process).
fn build_lib(features: &[&str], name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--manifest-path", "capi/Cargo.toml"])
        .args(features)
        .arg("--target-dir")
        .arg(out_dir())
        .current_dir(root())
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build {features:?} of capi/ failed");
    let dst = out_dir().join(name);
    std::fs::copy(out_dir().join("release/libstrata.so"), &dst).unwrap();
    dst
}

fn checked_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_lib(&["--features", "checked"], "libstrata-checked.so"))
}

fn plain_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_lib(&[], "libstrata-plain.so"))
}

/// Compiles a C program of the repository (once per name).
fn compile(src: &str, name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    std::fs::create_dir_all(out_dir()).unwrap();
    let exe = out_dir().join(name);
    let status = Command::new("cc")
        .args(["-O0", "-g", "-pthread", "-Wall"])
        .args(["-Wno-use-after-free", "-Wno-free-nonheap-object"])
        .arg(root().join(src))
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {src} failed");
    exe
}

fn bad() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("tests/checked/bad.c", "bad"))
}

/// Runs `exe args` under LD_PRELOAD of `lib`; kills it after 120 s.
fn run(lib: &Path, exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(exe);
    // The thread cache's checks are what these tests read (the per-CPU front
    // end's, whose caches hold addresses rather than links, are in
    // tests/percpu_front.rs): a `STRATA_PERCPU` of the environment is not passed on.
    cmd.args(args)
        .env("LD_PRELOAD", lib)
        .env("STRATA_PERCPU", "0")
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
                if start.elapsed() > Duration::from_secs(120) {
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

fn line_after<'a>(stdout: &'a str, tag: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.split_once(tag).map(|(_, rest)| rest))
}

/// Checked library: `bad action` aborts with a report containing the announced
/// pointer and every needle.
fn assert_aborts(action: &str, needles: &[&str]) {
    assert_aborts_under(checked_lib(), action, needles);
}

/// `bad action` under `LD_PRELOAD` of `lib` aborts with a report containing the
/// announced pointer and every needle, and the follow-up never runs.
fn assert_aborts_under(lib: &Path, action: &str, needles: &[&str]) {
    assert_aborts_with(lib, action, &[], needles);
}

/// `assert_aborts_under` with `env` set.
fn assert_aborts_with(lib: &Path, action: &str, env: &[(&str, &str)], needles: &[&str]) {
    let out = run(lib, bad(), &[action], env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{action}: expected an abort, got {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let ptr = line_after(&stdout, "ptr=").expect("announced pointer");
    let report =
        line_after(&stderr, "strata: ").unwrap_or_else(|| panic!("{action}: no report:\n{stderr}"));
    for n in needles.iter().copied().chain([ptr]) {
        assert!(report.contains(n), "{action}: report lacks {n:?}: {report}");
    }
    assert!(!stdout.contains("after:"), "{action}: {stdout}");
}

/// Plain library: `bad action` survives; returns its `after:` line.
fn plain(action: &str) -> String {
    plain_with(action, &[]).0
}

/// Plain library with `env`: `bad action` survives; returns its `after:` line, the
/// pointer it announced and its stderr.
fn plain_with(action: &str, env: &[(&str, &str)]) -> (String, String, String) {
    let out = run(plain_lib(), bad(), &[action], env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{action}: plain library: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let after = line_after(&stdout, "after: ")
        .unwrap_or_else(|| panic!("{action}: no follow-up:\n{stdout}"))
        .to_string();
    let ptr = line_after(&stdout, "ptr=").unwrap_or_default().to_string();
    (after, ptr, stderr)
}

/// Plain library: what `STRATA_BAD_FREE` makes of `action`, a `free` or `realloc`
/// of a pointer that is not a live block's start. `reported` says whether the
/// default reports it (one `strata:` line naming the pointer and `what`); `warn`
/// reports every kind, `ignore` none, `abort` aborts on every kind. Nothing is
/// ever cached or read through (`returned_bad=0` or realloc's null).
fn check_bad_free_modes(action: &str, op: &str, what: &str, reported: bool) {
    let line = format!("strata: {op}(): invalid pointer ");
    let (after, ptr, stderr) = plain_with(action, &[]);
    assert!(!after.contains("returned_bad=1"), "{action}: {after}");
    if reported {
        let l = line_after(&stderr, "strata: ").unwrap_or_default();
        assert!(
            stderr.contains(&line) && l.contains(&ptr) && l.contains(what),
            "{action}: default should report {ptr} ({what}):\n{stderr}"
        );
    } else {
        assert!(!stderr.contains("strata:"), "{action}: default: {stderr}");
    }
    let (_, _, stderr) = plain_with(action, &[("STRATA_BAD_FREE", "warn")]);
    assert!(
        stderr.contains(&line) && stderr.contains(what),
        "{action}: warn: {stderr}"
    );
    let (_, _, stderr) = plain_with(action, &[("STRATA_BAD_FREE", "ignore")]);
    assert!(!stderr.contains("strata:"), "{action}: ignore: {stderr}");
    assert_aborts_with(
        plain_lib(),
        action,
        &[("STRATA_BAD_FREE", "abort")],
        &[&format!("{op}(): invalid pointer"), what],
    );
}

#[test]
fn double_free() {
    for action in ["double_free", "double_free_later"] {
        assert_aborts(action, &["double free of", "size class"]);
    }
    // Plain (hardened by default): a block freed again while it is the last block
    // freed in its class on the thread aborts, naming it.
    assert_aborts_under(
        plain_lib(),
        "double_free",
        &["double free of", "already the last block freed"],
    );
    // With other frees of the class in between, while the block is still in the
    // thread's cache: caught too (glibc's tcache check), naming how far back.
    assert_aborts_under(
        plain_lib(),
        "double_free_later",
        &[
            "double free of",
            "already in this thread's cache",
            "1 frees of the class ago",
        ],
    );
}

#[test]
fn blocks_fresh_from_malloc_do_not_reveal_their_old_link() {
    // Plain (hardened): the first word of a recycled block held its encoded link
    // (`next ^ block ^ key`); with the next block's address it gave the key away.
    // It is cleared when the block is handed out.
    let (after, _, _) = plain_with("fresh_first_word", &[]);
    assert!(after.contains("same=1"), "{after}");
    assert!(
        after.contains("first_word=0\n") || after.ends_with("first_word=0"),
        "{after}"
    );
}

#[test]
fn free_of_pointers_strata_never_returned() {
    for action in ["free_stack", "free_global", "free_mmap"] {
        assert_aborts(action, &["free() of a pointer strata never returned"]);
        // Plain: ignored (the chunk map says it is not ours), never cached.
        assert!(plain(action).contains("returned_bad=0"), "{action}");
    }
    // Plain: a free of the caller's own stack is certainly a bug and reported by
    // default, from the main thread and from another; memory strata never mapped
    // may be the loader's and is reported only when asked.
    for action in ["free_stack", "free_stack_thread"] {
        check_bad_free_modes(action, "free", "on the calling thread's stack", true);
    }
    for action in ["free_global", "free_mmap"] {
        check_bad_free_modes(action, "free", "not from strata's heap", false);
    }
    check_bad_free_modes(
        "realloc_foreign",
        "realloc",
        "on the calling thread's stack",
        true,
    );
}

#[test]
fn free_of_interior_and_misaligned_pointers() {
    for (action, off) in [
        ("free_interior", "offset 16 in the block"),
        ("free_misaligned", "offset 1 in the block"),
        ("free_large_interior", "offset 8192 in the block"),
    ] {
        assert_aborts(action, &["interior or misaligned pointer", off]);
        // Plain: ignored (not on an object boundary / not a Large span's start),
        // and reported: a pointer into the heap that starts no block is a bug.
        assert!(plain(action).contains("returned_bad=0"), "{action}");
        check_bad_free_modes(action, "free", "inside strata's heap", true);
    }
    // An interior page of a Large block whose page-map entry is stale and names a
    // Small span elsewhere: the plain build's containment check rejects it too.
    assert_aborts(
        "free_large_interior_stale",
        &["interior or misaligned pointer", "large block"],
    );
    assert!(plain("free_large_interior_stale").contains("returned_bad=0"));
}

#[test]
fn writes_past_the_end() {
    for (action, needles) in [
        (
            "overflow_small",
            &[
                "write past the end",
                "40 bytes requested",
                "byte 40 is 0x41",
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
            &[
                "write past the end",
                "byte 41 is 0x41",
                "found by realloc()",
            ],
        ),
    ] {
        // Plain: not promised to be detected, so nothing is asserted there.
        assert_aborts(action, needles);
    }
}

#[test]
fn writes_to_freed_blocks() {
    for action in ["use_after_free", "use_after_free_churn"] {
        // Plain: not promised to be detected, so nothing is asserted there.
        assert_aborts(action, &["write to a freed block", "byte 8 is 0x41"]);
    }
}

#[test]
fn overwritten_free_list_links() {
    // Plain: links are encoded and checked at every pop, so the next malloc of the
    // class aborts, naming the block whose link was overwritten, and the address
    // written is never handed out.
    for action in ["overwrite_free_link", "overflow_into_free_block"] {
        assert_aborts_under(
            plain_lib(),
            action,
            &["free-list corruption: object", "(96 B) has a bad link"],
        );
    }
    // Checked: the freed block waits in quarantine (the write is found when it
    // leaves), so the address is not handed out either.
    let out = run(checked_lib(), bad(), &["overwrite_free_link"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("returned_bad=0"));
}

#[test]
fn realloc_and_usable_size_of_bad_pointers() {
    assert_aborts(
        "realloc_foreign",
        &["realloc() of a pointer strata never returned"],
    );
    assert_aborts("realloc_freed", &["realloc() of a freed block"]);
    assert_aborts(
        "usable_foreign",
        &["malloc_usable_size() of a pointer strata never returned"],
    );
    assert_aborts("usable_freed", &["malloc_usable_size() of a freed block"]);
    // Plain: a foreign pointer gives NULL with ENOMEM (realloc) and 0 (usable size);
    // a freed block is not recognised (its class size comes back).
    assert!(plain("realloc_foreign").contains("realloc=(nil) errno_enomem=1"));
    assert!(plain("usable_foreign").contains("usable=0"));
    assert!(!plain("usable_freed").contains("usable=0"));
}

#[test]
fn leak_report_at_exit() {
    let out = run(
        checked_lib(),
        bad(),
        &["leak_at_exit"],
        &[("STRATA_LEAK_REPORT", "1")],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("strata: leak report: "), "{stderr}");
    assert!(
        stderr.contains("large blocks: 2 blocks, 600000 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(1024-byte objects): 3 blocks, 3000 bytes"),
        "{stderr}"
    );
    let quiet = run(checked_lib(), bad(), &["leak_at_exit"], &[]);
    assert!(!text(&quiet.stderr).contains("leak report"));
}

#[test]
fn clean_programs_run_clean_under_the_checked_library() {
    for lib in [checked_lib(), plain_lib()] {
        let out = run(lib, bad(), &["clean"], &[]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", lib.display());
        assert!(text(&out.stdout).contains("clean: ok"));
        assert!(!stderr.contains("strata:"), "{stderr}");
    }
    // The repository's multithreaded C stress (cross-thread frees, reallocs, every
    // aligned entry point), if present: no report, content intact.
    if root().join("tests/c/stress.c").exists() {
        let stress = compile("tests/c/stress.c", "stress");
        let out = run(checked_lib(), &stress, &["4", "200000"], &[]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "stress: {stderr}");
        assert!(!stderr.contains("strata:"), "{stderr}");
    }
}

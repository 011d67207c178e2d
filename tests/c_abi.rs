//! The C ABI as a drop-in `malloc` under `LD_PRELOAD`.
//!
//! Builds `libstrata.so` (the `capi/` crate: strata with its `c-abi` feature) into its own target directory
//! (`target/c-abi`, so that it never waits on the outer cargo's lock), compiles the
//! C programs of `tests/c/` with the system's `cc`, and runs them with and without
//! `LD_PRELOAD`:
//!
//! - `api_test` calls every export with normal and edge arguments and checks glibc's
//!   semantics. It must pass against glibc itself too, which keeps its expectations
//!   honest.
//! - `stress` passes content-checked blocks between threads, with reallocs and
//!   aligned allocations in the mix.
//! - `idle` frees 24 MiB and idles, reporting the RSS and the background purge
//!   thread, then forks.
//! - `mallinfo` checks `mallinfo2`, `mallinfo`, `malloc_info`, `malloc_stats` and
//!   `mallopt` against the allocator that serves `malloc` (glibc's own, or strata's).
//! - `dlclose` loads the library with `dlopen` (no `LD_PRELOAD`), allocates through
//!   it on a thread, unloads it and lets the thread exit.
//! - `harden` frees a block twice or writes over a free block's link, which the
//!   default (`harden`) library must stop with its report, and empties and refills
//!   lists, which it must serve.
//!
//! Run with `--nocapture` to see the programs' output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest any one program may run before it counts as hung.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

/// Threads and allocations for the stress runs (about a second each on 2 cores).
const STRESS_THREADS: &str = "8";
const STRESS_ALLOCATIONS: &str = "300000";

struct Artifacts {
    lib: PathBuf,
    api_test: PathBuf,
    stress: PathBuf,
    idle: PathBuf,
    dlclose: PathBuf,
    mallinfo: PathBuf,
    harden: PathBuf,
    dir: PathBuf,
}

fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    match ARTIFACTS.get_or_init(build) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<Artifacts, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("c-abi");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;

    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--manifest-path", "capi/Cargo.toml"])
        .arg("--target-dir")
        .arg(&dir)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release --manifest-path capi/Cargo.toml failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lib = dir.join("release").join("libstrata.so");
    if !lib.is_file() {
        return Err(format!("{} was not built", lib.display()));
    }

    match Command::new("cc").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(
                "no working C compiler `cc` on PATH: the C ABI tests need one \
                 (Debian: apt-get install gcc)"
                    .to_string(),
            );
        }
    }
    let compile = |name: &str| -> Result<PathBuf, String> {
        let src = root.join("tests").join("c").join(format!("{name}.c"));
        let exe = dir.join(name);
        // Compile to a private name and rename, so a concurrent run never sees a
        // half-written binary.
        let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
        let out = Command::new("cc")
            .args(["-O2", "-pthread", "-Wall", "-Werror", "-I"])
            .arg(root.join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .arg("-ldl")
            .output()
            .map_err(|e| format!("running cc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cc failed on {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        fs::rename(&tmp, &exe).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
        Ok(exe)
    };
    Ok(Artifacts {
        api_test: compile("api_test")?,
        stress: compile("stress")?,
        idle: compile("idle")?,
        dlclose: compile("dlclose")?,
        mallinfo: compile("mallinfo")?,
        harden: compile("harden")?,
        lib,
        dir,
    })
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `exe` with `args`, with `LD_PRELOAD=libstrata.so` if `preload`, and `env`;
/// the output goes through files named after `tag`, so that no pipe can fill up
/// while the run is watched for a hang.
fn run(tag: &str, exe: &Path, args: &[&str], preload: bool, env: &[(&str, &str)]) -> Run {
    let a = artifacts();
    let out_path = a.dir.join(format!("{tag}.stdout"));
    let err_path = a.dir.join(format!("{tag}.stderr"));
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    for var in [
        "STRATA_PURGE_DELAY_MS",
        "STRATA_THREAD_CACHE_BYTES",
        "STRATA_SHOW_STATS",
        "STRATA_HEAP_MAP",
        "STRATA_BACKGROUND_PURGE",
    ] {
        cmd.env_remove(var);
    }
    if preload {
        cmd.env("LD_PRELOAD", &a.lib);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > PROGRAM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{tag}: {} still running after {PROGRAM_TIMEOUT:?} (hung?); output so far:\n{}{}",
                exe.display(),
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = Run {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    };
    println!(
        "[{tag}] {:.2} s, {}\n{}{}",
        started.elapsed().as_secs_f64(),
        r.status,
        r.stdout,
        r.stderr
    );
    r
}

fn run_api_test(tag: &str, preload: bool, env: &[(&str, &str)]) -> Run {
    let r = run(tag, &artifacts().api_test, &[], preload, env);
    assert!(
        r.status.success(),
        "{tag}: api_test failed\n{}",
        r.describe()
    );
    let allocator = if preload { "strata" } else { "glibc" };
    assert!(
        r.stdout
            .starts_with(&format!("api_test: allocator {allocator} ")),
        "{tag}: api_test did not run against {allocator}\n{}",
        r.describe()
    );
    let last = r.stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("api_test: ") && last.ends_with(" checks passed"),
        "{tag}: no closing line\n{}",
        r.describe()
    );
    r
}

fn run_stress(tag: &str, preload: bool, env: &[(&str, &str)]) -> Run {
    let args = [STRESS_THREADS, STRESS_ALLOCATIONS];
    let r = run(tag, &artifacts().stress, &args, preload, env);
    assert!(r.status.success(), "{tag}: stress failed\n{}", r.describe());
    let allocator = if preload { "strata" } else { "glibc" };
    assert!(
        r.stdout
            .starts_with(&format!("stress: allocator {allocator}, ")),
        "{tag}: stress did not run against {allocator}\n{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("every block verified and freed once"),
        "{tag}: no closing line\n{}",
        r.describe()
    );
    r
}

/// Whether `line` is a report of an invalid `free`/`realloc` (`api_test` makes
/// some on purpose: stack, interior and misaligned pointers).
fn is_bad_free_report(line: &str) -> bool {
    line.contains("(): invalid pointer ") || line.contains("invalid free()/realloc() reports")
}

/// Lines of `text` that are the stats report.
fn stats_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("strata: ") && !is_bad_free_report(l))
        .collect()
}

#[test]
fn api_test_expectations_hold_for_glibc_itself() {
    run_api_test("api_glibc", false, &[]);
}

#[test]
fn every_export_has_glibc_semantics_under_ld_preload() {
    let r = run_api_test("api_strata", true, &[]);
    // Its deliberate frees of stack and interior pointers are reported (at most 10
    // lines, then one saying the rest are suppressed).
    assert!(
        r.stderr.contains("strata: free(): invalid pointer ")
            && r.stderr.contains("on the calling thread's stack")
            && r.stderr.contains("inside strata's heap"),
        "no invalid-free report:\n{}",
        r.stderr
    );
    // Without STRATA_SHOW_STATS nothing is printed at exit (the test's own call of
    // strata_stats_print goes to a temporary file).
    assert!(
        stats_lines(&r.stderr).is_empty(),
        "stats printed without STRATA_SHOW_STATS:\n{}",
        r.stderr
    );
}

#[test]
fn every_export_has_glibc_semantics_with_immediate_purge_and_a_small_thread_cache() {
    run_api_test(
        "api_strata_purge0",
        true,
        &[
            ("STRATA_PURGE_DELAY_MS", "0"),
            ("STRATA_THREAD_CACHE_BYTES", "64k"),
        ],
    );
}

#[test]
fn stress_expectations_hold_for_glibc_itself() {
    run_stress("stress_glibc", false, &[]);
}

#[test]
fn threads_exchanging_blocks_keep_content_under_ld_preload() {
    run_stress("stress_strata", true, &[]);
}

#[test]
fn threads_exchanging_blocks_keep_content_with_immediate_purge() {
    run_stress(
        "stress_strata_purge0",
        true,
        &[
            ("STRATA_PURGE_DELAY_MS", "0"),
            ("STRATA_THREAD_CACHE_BYTES", "256k"),
        ],
    );
}

#[test]
fn show_stats_prints_the_table_to_stderr_at_exit() {
    let a = artifacts();
    // Only the quick first test of api_test: the point is the exit report.
    let r = run(
        "api_show_stats",
        &a.api_test,
        &["malloc(0)"],
        true,
        &[("STRATA_SHOW_STATS", "1")],
    );
    assert!(r.status.success(), "{}", r.describe());
    let lines = stats_lines(&r.stderr);
    assert!(
        lines.first() == Some(&"strata: heap statistics") && lines.len() > 10,
        "want the stats table at exit\n{}",
        r.describe()
    );
    let text = lines.join("\n");
    for word in [
        "allocated",
        "resident",
        "mapped",
        " chunks ",
        "thread heaps",
        "allocs ",
    ] {
        assert!(
            text.contains(word),
            "no {word:?} in the stats table:\n{text}"
        );
    }
    let tail: Vec<&str> = r.stderr.lines().rev().take(lines.len()).collect();
    assert!(
        r.stderr.ends_with('\n') && tail.iter().all(|l| l.starts_with("strata: ")),
        "the stats table is not the last thing printed\n{}",
        r.describe()
    );

    let r = run(
        "api_show_stats_off",
        &a.api_test,
        &["malloc(0)"],
        true,
        &[("STRATA_SHOW_STATS", "0")],
    );
    assert!(r.status.success(), "{}", r.describe());
    assert!(
        stats_lines(&r.stderr).is_empty(),
        "STRATA_SHOW_STATS=0 printed stats\n{}",
        r.describe()
    );
}

#[test]
fn heap_map_env_writes_an_svg_document_at_exit() {
    let a = artifacts();
    let path = a.dir.join("api_heap_map.svg");
    let _ = fs::remove_file(&path);
    let r = run(
        "api_heap_map",
        &a.api_test,
        &["malloc(0)"],
        true,
        &[("STRATA_HEAP_MAP", path.to_str().expect("UTF-8 path"))],
    );
    assert!(r.status.success(), "{}", r.describe());
    let svg = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no heap map at {}: {e}\n{}", path.display(), r.describe()));
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "not an SVG document: {:?}",
        &svg[..svg.len().min(80)]
    );
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    assert!(svg.contains("<g class=\"chunk\""), "no chunk drawn");
    println!("[api_heap_map] {} bytes of SVG", svg.len());

    // A path that cannot be written: one line on stderr, the exit status unchanged.
    let bad = "/nonexistent-dir/strata/map.svg";
    let r = run(
        "api_heap_map_bad_path",
        &a.api_test,
        &["malloc(0)"],
        true,
        &[("STRATA_HEAP_MAP", bad)],
    );
    assert!(r.status.success(), "{}", r.describe());
    assert!(
        r.stderr
            .contains(&format!("strata: STRATA_HEAP_MAP: cannot write {bad}: ")),
        "no error report\n{}",
        r.describe()
    );
}

/// The `key=value` pairs of the line of `idle`'s output that starts with `who`.
fn idle_report(r: &Run, who: &str) -> std::collections::HashMap<String, i64> {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(who))
        .unwrap_or_else(|| panic!("no {who} line\n{}", r.describe()));
    line.split_whitespace()
        .skip(1)
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn background_purge_env_returns_idle_memory_and_a_forked_child_starts_without_it() {
    let a = artifacts();
    let delay = [("STRATA_PURGE_DELAY_MS", "100")];
    // Without the thread, 24 MiB of freed pages stay resident through the idle time.
    let r = run("idle_plain", &a.idle, &["1500"], true, &delay);
    assert!(r.status.success(), "{}", r.describe());
    let p = idle_report(&r, "parent");
    assert_eq!(p["thread"], 0, "{}", r.describe());
    assert!(
        p["idle_kib"] > p["freed_kib"] - 4 * 1024,
        "{}",
        r.describe()
    );

    // With it they go back, and a forked child has no thread until it asks.
    let env = [delay[0], ("STRATA_BACKGROUND_PURGE", "1")];
    let r = run("idle_background", &a.idle, &["1500"], true, &env);
    assert!(r.status.success(), "{}", r.describe());
    let p = idle_report(&r, "parent");
    assert_eq!(p["thread"], 1, "{}", r.describe());
    assert!(
        p["freed_kib"] - p["idle_kib"] >= 16 * 1024,
        "{}",
        r.describe()
    );
    let c = idle_report(&r, "child");
    assert_eq!(
        (c["thread_before"], c["started"], c["thread_after"]),
        (0, 1, 1),
        "{}",
        r.describe()
    );
}

#[test]
fn a_thread_exiting_after_dlclose_finds_the_library_still_loaded() {
    // The thread's heap tear-down (a pthread-key destructor of the library) runs
    // after the program's dlclose: the library must have pinned itself.
    let a = artifacts();
    let lib = a.lib.to_str().unwrap();
    let r = run("dlclose", &a.dlclose, &[lib], false, &[]);
    assert!(
        r.status.success() && r.stdout.contains("dlclose: ok"),
        "{}",
        r.describe()
    );
}

#[test]
fn mallinfo_and_friends_describe_the_allocator_that_serves_malloc() {
    let a = artifacts();
    // The program's expectations hold for glibc itself...
    let r = run("mallinfo-glibc", &a.mallinfo, &["glibc"], false, &[]);
    assert!(r.status.success(), "{}", r.describe());
    // ...and under strata, where glibc's versions would report 0 bytes in use and
    // accept every mallopt parameter.
    let r = run("mallinfo-strata", &a.mallinfo, &["strata"], true, &[]);
    assert!(
        r.status.success() && r.stdout.contains("mallinfo: ok"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("strata: heap statistics"),
        "malloc_stats printed no strata table:\n{}",
        r.stderr
    );
}

#[test]
fn hardened_lists_stop_double_frees_and_overwritten_links_and_find_their_ends() {
    let a = artifacts();
    for (mode, report) in [
        ("double-top", "already the last block freed"),
        ("double-deep", "already in this thread's cache"),
        ("overwrite", "free-list corruption"),
        ("overwrite-last", "free-list corruption"),
    ] {
        // The thread caches' checks: not the per-CPU front end (CI runs this file
        // with STRATA_PERCPU=1 too), whose caches hold no links.
        let r = run(
            &format!("harden-{mode}"),
            &a.harden,
            &[mode],
            true,
            &[("STRATA_PERCPU", "0")],
        );
        assert!(
            !r.status.success() && r.stderr.contains(report) && !r.stdout.contains("not stopped"),
            "{mode}: {}",
            r.describe()
        );
    }
    // Whichever front end the environment picks (a thread served per CPU meets the
    // list end of its sentinel on every malloc).
    let r = run("harden-refill", &a.harden, &["refill"], true, &[]);
    assert!(
        r.status.success() && r.stdout.contains("harden: ok"),
        "{}",
        r.describe()
    );
}

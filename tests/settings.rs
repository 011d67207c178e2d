//! The `STRATA_*` settings act in a Rust program that installs strata as its global
//! allocator (not only in the C library): this test binary runs itself again as a
//! child process with a setting in its environment, and looks at what the child
//! printed or wrote.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::child::{self, Env};
use std::process::Output;

const CHILD_ENV: &str = "STRATA_SETTINGS_CHILD";

/// Runs the `child` test of this binary with `vars` set (and no `STRATA_*` of the
/// parent's environment), and returns what it did.
fn run_child(action: &str, vars: &[(&str, &str)]) -> Output {
    let mut all = vec![(CHILD_ENV, action)];
    all.extend_from_slice(vars);
    let out = child::run("child", Env::Clean, &all);
    child::check("child", &out);
    out
}

/// What the child does; a plain test run (no `STRATA_SETTINGS_CHILD`) does nothing.
#[test]
fn child() {
    let Ok(action) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Some work through the global allocator, so that the table has rows.
    let v: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 16 + i]).collect();
    std::hint::black_box(&v);
    match action.as_str() {
        "allocate" => {}
        "purge_status" => println!("running={}", strata::background_purge().running),
        #[cfg(feature = "checked")]
        "mark_and_leak" => {
            let _m = strata::leak_mark();
            std::mem::forget(vec![1u8; 333]);
            std::mem::forget(vec![2u8; 333]);
        }
        other => panic!("unknown action {other}"),
    }
}

#[test]
fn show_stats_prints_the_table_at_exit() {
    let out = run_child("allocate", &[("STRATA_SHOW_STATS", "1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strata: heap statistics"),
        "no statistics on stderr: {err}"
    );
    // And only once: the setting is applied in one place.
    assert_eq!(err.matches("strata: heap statistics").count(), 1, "{err}");
}

/// Without the variable, the build-time default decides (`STRATA_DEFAULT_SHOW_STATS`
/// when strata was compiled, which this test binary sees too: `cargo test` builds
/// both with the same environment); `STRATA_SHOW_STATS=0` turns it off either way.
#[test]
fn without_the_setting_the_build_time_default_decides() {
    let built_in = option_env!("STRATA_DEFAULT_SHOW_STATS")
        .is_some_and(|v| !v.is_empty() && v != "0" && v != "false" && v != "no");
    let out = run_child("allocate", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.contains("strata: heap statistics"), built_in, "{err}");
    let off = run_child("allocate", &[("STRATA_SHOW_STATS", "0")]);
    let err = String::from_utf8_lossy(&off.stderr);
    assert!(!err.contains("strata: "), "unexpected report: {err}");
}

#[test]
fn background_purge_starts_at_load() {
    let on = run_child("purge_status", &[("STRATA_BACKGROUND_PURGE", "1")]);
    assert!(String::from_utf8_lossy(&on.stdout).contains("running=true"));
    let off = run_child("purge_status", &[]);
    assert!(String::from_utf8_lossy(&off.stdout).contains("running=false"));
}

#[test]
fn heap_map_is_written_at_exit() {
    let path = std::env::temp_dir().join(format!("strata-settings-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&path);
    run_child("allocate", &[("STRATA_HEAP_MAP", path.to_str().unwrap())]);
    let svg = std::fs::read_to_string(&path).expect("no heap map written at exit");
    let _ = std::fs::remove_file(&path);
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
}

#[test]
fn leak_report_at_exit_in_checked_builds() {
    let out = run_child("allocate", &[("STRATA_LEAK_REPORT", "1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.contains("strata: leak report:"),
        strata::CHECKED,
        "stderr: {err}"
    );
}

/// Checked mode: `leak_report_since` counts what was allocated after the mark and
/// is still live, not what the runtime or earlier code keeps.
#[cfg(feature = "checked")]
#[test]
fn leak_report_since_counts_only_blocks_after_the_mark() {
    let before: Vec<Box<[u8; 200]>> = (0..50).map(|_| Box::new([0u8; 200])).collect();
    let mark = strata::leak_mark();
    let kept: Vec<Box<[u8; 4000]>> = (0..7).map(|_| Box::new([0u8; 4000])).collect();
    let freed: Vec<Box<[u8; 4000]>> = (0..5).map(|_| Box::new([0u8; 4000])).collect();
    drop(freed);
    let r = strata::leak_report_since(mark);
    // Other tests of this binary run on other threads and allocate too: count only
    // the class of the 4000-byte blocks, which the test harness does not use, and
    // at least the seven kept.
    let in_class: usize = r
        .by_class()
        .filter(|&(_, size, _)| (4000 + 9..4000 + 9 + 1024).contains(&size))
        .map(|(_, _, c)| c.blocks)
        .sum();
    assert!(in_class >= 7, "{r}");
    assert!(
        r.total().blocks < strata::leak_report().total().blocks,
        "{r}"
    );
    // A block allocated before the mark is not counted, even when still live.
    let small: usize = r
        .by_class()
        .filter(|&(_, size, _)| (200 + 9..200 + 9 + 64).contains(&size))
        .map(|(_, _, c)| c.blocks)
        .sum();
    assert!(small < 50, "{r}");
    drop((before, kept));
}

#[cfg(feature = "checked")]
#[test]
fn exit_report_names_what_was_left_after_the_last_mark() {
    let out = run_child("mark_and_leak", &[("STRATA_LEAK_REPORT", "1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live at exit is not leaked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("allocated since the last leak_mark()"))
        .unwrap_or_else(|| panic!("no since-mark line: {err}"));
    // The two forgotten vectors, plus whatever the harness allocated after them.
    assert!(!line.contains(": 0 blocks"), "{line}");
}

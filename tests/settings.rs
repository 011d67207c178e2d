//! The `STRATA_*` settings act in a Rust program that installs strata as its global
//! allocator (not only in the C library): this test binary runs itself again as a
//! child process with a setting in its environment, and looks at what the child
//! printed or wrote.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

use std::process::{Command, Output};

const CHILD_ENV: &str = "STRATA_SETTINGS_CHILD";

/// Runs the `child` test of this binary with `vars` set (and no `STRATA_*` of the
/// parent's environment), and returns what it did.
fn run_child(action: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, action);
    for (k, _) in std::env::vars() {
        if k.starts_with("STRATA_") && k != CHILD_ENV {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn without_the_setting_nothing_is_printed() {
    let out = run_child("allocate", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("strata: "), "unexpected report: {err}");
    let off = run_child("allocate", &[("STRATA_SHOW_STATS", "0")]);
    assert!(!String::from_utf8_lossy(&off.stderr).contains("strata: "));
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

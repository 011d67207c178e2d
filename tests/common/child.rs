//! Running one test of the current test binary again in a child process, with an
//! environment of its own: for what must be decided at start-up (settings read
//! once, the per-CPU front end, the rseq mode) or what ends the process.

use std::process::{Command, Output};

/// How the child's environment starts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// The parent's, less every `STRATA_*` variable (a CI step that sets one for
    /// the whole run must not leak into a child that tests the defaults).
    Clean,
    /// The parent's as it is.
    Inherit,
}

/// Runs test `name` of this binary (ignored tests included: children are
/// usually `#[ignore]`d in plain runs) with `vars` set on top of `env`, and
/// returns how it ended.
pub fn run(name: &str, env: Env, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ]);
    if env == Env::Clean {
        for (k, _) in std::env::vars() {
            if k.starts_with("STRATA_") {
                cmd.env_remove(k);
            }
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Checks that the child `name` ran exactly that one test and passed it.
pub fn check(name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `run`, then `check`; returns the child's standard output and error, one after
/// the other.
pub fn pass(name: &str, env: Env, vars: &[(&str, &str)]) -> String {
    let out = run(name, env, vars);
    check(name, &out);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

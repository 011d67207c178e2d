//! Unit tests whose subject aborts the process: the test binary runs one of its
//! own tests again in a child process and looks at how the child ended.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Runs the test `name` of this test binary in a child process with the
/// environment variable `env` set to `action` (the test does the deed when it sees
/// it); returns whether the child died of SIGABRT, and its stderr.
pub(crate) fn run(name: &str, env: &str, action: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, action)
        .output()
        .unwrap();
    (
        out.status.signal() == Some(crate::platform::SIGABRT),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

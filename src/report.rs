//! Reports on stderr that must not allocate (they run inside the allocator, often
//! on a corrupted heap): a buffered `fmt::Write` over `write(2)`, and `die`, which
//! prints one `strata: ` line and aborts. Used by the link checks (`link`), checked
//! mode and the C ABI's statistics table.

use crate::platform;
use core::fmt::{self, Write};

/// Writes all of `bytes` to `fd`, retrying short writes; gives up silently on an
/// error (there is nowhere left to report it).
pub fn write_all(fd: i32, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        match platform::write_fd(fd, &bytes[done..]) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
}

/// Where a [`Buffered`] writer's bytes go.
pub trait Sink {
    /// Takes `bytes` (all of them, or remembers that it could not).
    fn put(&mut self, bytes: &[u8]);
}

/// A file descriptor, written with [`write_all`].
pub struct Fd(pub i32);

impl Sink for Fd {
    fn put(&mut self, bytes: &[u8]) {
        write_all(self.0, bytes);
    }
}

/// A `fmt::Write` through a 512-byte stack buffer (no allocation) into a
/// [`Sink`]; `flush` hands on what is buffered (also done whenever it fills).
pub struct Buffered<S: Sink> {
    buf: [u8; 512],
    len: usize,
    pub sink: S,
}

/// A `fmt::Write` to stderr that never allocates.
pub type Stderr = Buffered<Fd>;

impl Stderr {
    pub fn new() -> Stderr {
        Buffered::to(Fd(platform::STDERR))
    }
}

impl<S: Sink> Buffered<S> {
    /// An empty buffer in front of `sink`.
    pub fn to(sink: S) -> Buffered<S> {
        Buffered {
            buf: [0; 512],
            len: 0,
            sink,
        }
    }

    pub fn flush(&mut self) {
        self.sink.put(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl<S: Sink> Write for Buffered<S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// Writes `strata: <message>` and a newline to stderr and aborts.
#[cold]
#[inline(never)]
pub fn die(args: fmt::Arguments<'_>) -> ! {
    let mut w = Stderr::new();
    let _ = w.write_str("strata: ");
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
    w.flush();
    platform::abort()
}

#[cfg(test)]
mod tests {
    const CHILD_ENV: &str = "STRATA_REPORT_CHILD";

    /// A broken invariant found on an allocator path (`fatal!` in every build,
    /// `debug_check!` in debug builds) aborts with one `strata:` line naming it and
    /// where: it does not panic, so nothing can unwind out of `GlobalAlloc` or a C
    /// entry point (a `catch_unwind` around it catches nothing).
    #[test]
    fn a_broken_invariant_aborts_with_a_report_instead_of_panicking() {
        const NAME: &str =
            "report::tests::a_broken_invariant_aborts_with_a_report_instead_of_panicking";
        match std::env::var(CHILD_ENV).as_deref() {
            Ok("fatal") => {
                let r = std::panic::catch_unwind(|| fatal!("the test's broken invariant"));
                eprintln!("unwound: {}", r.is_err());
                std::process::exit(0);
            }
            Ok("debug_check") => {
                let r = std::panic::catch_unwind(|| {
                    debug_check!(1 + 1 == 3, "the test's broken check");
                });
                eprintln!("returned, unwound: {}", r.is_err());
                std::process::exit(0);
            }
            _ => {}
        }
        let (aborted, stderr) = crate::test_child::run(NAME, CHILD_ENV, "fatal");
        assert!(aborted, "fatal! did not abort:\n{stderr}");
        assert!(
            stderr.contains("strata: internal error: the test's broken invariant (src/report.rs:"),
            "{stderr}"
        );
        let (aborted, stderr) = crate::test_child::run(NAME, CHILD_ENV, "debug_check");
        if cfg!(debug_assertions) {
            assert!(aborted, "debug_check! did not abort:\n{stderr}");
            assert!(
                stderr.contains("strata: internal error: the test's broken check (src/report.rs:"),
                "{stderr}"
            );
        } else {
            // Release builds check nothing.
            assert!(
                !aborted && stderr.contains("returned, unwound: false"),
                "{stderr}"
            );
        }
    }
}

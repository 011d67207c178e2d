//! Reports on stderr that must not allocate (they run inside the allocator, often
//! on a corrupted heap): a buffered `fmt::Write` over `write(2)`, and `die`, which
//! prints one `strata: ` line and aborts. Used by the link checks (`link`), checked
//! mode and the C ABI's statistics table.

use core::fmt::{self, Write};

/// Writes all of `bytes` to `fd` with `write(2)`, retrying short writes; gives up
/// silently on an error (there is nowhere left to report it).
pub fn write_all(fd: libc::c_int, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: writes initialised bytes of the caller's slice.
        let r = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if r <= 0 {
            break;
        }
        done += r as usize;
    }
}

/// Where a [`Buffered`] writer's bytes go.
pub trait Sink {
    /// Takes `bytes` (all of them, or remembers that it could not).
    fn put(&mut self, bytes: &[u8]);
}

/// A file descriptor, written with [`write_all`].
pub struct Fd(pub libc::c_int);

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
        Buffered::to(Fd(2))
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
    // SAFETY: abort raises SIGABRT and does not return.
    unsafe { libc::abort() }
}

//! What the parts of strata above the allocator need from the OS beside memory: a
//! detached thread and a sleep (the background purge thread), a new file (the heap
//! map), and the text of an error number (their reports). They take the place of
//! `std::thread`, `std::fs` and `std::io::Error` so that the C library builds
//! without std; none of them runs under `malloc` (creating a thread allocates).
//! The definitions live in the OS file (`linux/services.rs`).

use super::OsError;
use super::sys::services as sys;
use core::ffi::{CStr, c_void};
use core::fmt;

/// Starts a detached thread that runs `body(arg)` on a stack of at least
/// `stack_bytes` (the OS's minimum if that is more), and returns; the thread's
/// resources go back to the OS when `body` returns. `Err` if the OS refused.
pub(crate) fn spawn_detached(
    stack_bytes: usize,
    body: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> Result<(), OsError> {
    sys::spawn_detached(stack_bytes, body, arg)
}

/// Names the calling thread (at most 15 bytes are kept; a longer name is ignored).
pub(crate) fn set_thread_name(name: &CStr) {
    sys::set_thread_name(name)
}

/// Sleeps for `ms` milliseconds, resuming after signals.
pub(crate) fn sleep_ms(ms: u64) {
    sys::sleep_ms(ms)
}

/// Opens `path` for writing, created (mode 0666 less the umask) or truncated, with
/// close-on-exec: the new file descriptor, or the error.
pub(crate) fn create_file(path: &CStr) -> Result<i32, OsError> {
    sys::create_file(path)
}

/// Closes the file descriptor `fd` (owned by the caller, not used afterwards).
pub(crate) fn close_fd(fd: i32) -> Result<(), OsError> {
    sys::close_fd(fd)
}

/// Shows an error as std's `io::Error` does: the OS's text and the number, e.g.
/// `No such file or directory (os error 2)`.
impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        let text = sys::error_text(self.0, &mut buf);
        write!(f, "{text} (os error {})", self.0)
    }
}

//! Linux: what the parts above the allocator (the background purge thread, the
//! heap-map file, reports) get from the OS without std: a detached thread, a
//! sleep, a new file, and the text of an error number. Each item keeps the
//! contract written on its namesake in `platform/services.rs`.

use super::super::OsError;
use core::ffi::{CStr, c_void};

pub(crate) fn spawn_detached(
    stack_bytes: usize,
    body: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> Result<(), OsError> {
    // std's rule for a requested stack: at least PTHREAD_STACK_MIN, whole pages.
    let page = super::super::page_size();
    let stack = stack_bytes
        .max(libc::PTHREAD_STACK_MIN)
        .next_multiple_of(page);
    match create_detached(Some(stack), body, arg) {
        // glibc carves the static TLS out of the stack and refuses a stack too
        // small for it: then the default size, of which only what is touched
        // becomes resident.
        Err(OsError(libc::EINVAL)) => create_detached(None, body, arg),
        r => r,
    }
}

/// `pthread_create` of a detached thread, on a stack of `stack` bytes or of the
/// default size.
fn create_detached(
    stack: Option<usize>,
    body: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> Result<(), OsError> {
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: initialises the attribute object in `attr`.
    let r = unsafe { libc::pthread_attr_init(attr.as_mut_ptr()) };
    if r != 0 {
        return Err(OsError(r));
    }
    let attr = attr.as_mut_ptr();
    // SAFETY: `attr` was initialised above and is destroyed below; `body` is a
    // plain function, `arg` is handed to it as it is; a detached thread's resources
    // go back to the C library when it returns.
    let r = unsafe {
        let mut r = match stack {
            Some(bytes) => libc::pthread_attr_setstacksize(attr, bytes),
            None => 0,
        };
        if r == 0 {
            r = libc::pthread_attr_setdetachstate(attr, libc::PTHREAD_CREATE_DETACHED);
        }
        if r == 0 {
            let mut t: libc::pthread_t = 0;
            r = libc::pthread_create(&mut t, attr, body, arg);
        }
        libc::pthread_attr_destroy(attr);
        r
    };
    if r == 0 { Ok(()) } else { Err(OsError(r)) }
}

pub(crate) fn set_thread_name(name: &CStr) {
    // SAFETY: names the calling thread; glibc refuses (ERANGE) a name over 15
    // bytes and changes nothing then, which is all a name is worth.
    unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
    }
}

pub(crate) fn sleep_ms(ms: u64) {
    let mut t = libc::timespec {
        tv_sec: (ms / 1000).min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    };
    loop {
        let mut rest = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both are valid timespecs; nanosleep writes only `rest`.
        if unsafe { libc::nanosleep(&t, &mut rest) } == 0 {
            return;
        }
        // Interrupted by a signal (EINTR): sleep what is left. EINVAL cannot
        // happen for these values; stop rather than spin if it does.
        if OsError::last().0 != libc::EINTR {
            return;
        }
        t = rest;
    }
}

pub(crate) fn create_file(path: &CStr) -> Result<i32, OsError> {
    loop {
        // SAFETY: `path` is NUL-terminated; the mode argument is the one `open`
        // reads with O_CREAT.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            )
        };
        if fd >= 0 {
            return Ok(fd);
        }
        let e = OsError::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

pub(crate) fn close_fd(fd: i32) -> Result<(), OsError> {
    // SAFETY: closes a descriptor the caller owns; never retried (Linux releases
    // the descriptor even when close reports EINTR).
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

pub(crate) fn error_text(e: i32, buf: &mut [u8; 128]) -> &str {
    // SAFETY: the XSI strerror_r writes a NUL-terminated text of at most
    // `buf.len()` bytes into `buf`.
    let r = unsafe { libc::strerror_r(e, buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown error";
    }
    CStr::from_bytes_until_nul(buf)
        .ok()
        .and_then(|s| s.to_str().ok())
        .unwrap_or("unknown error")
}

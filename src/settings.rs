//! The `STRATA_*` settings, read once at start-up in every build: a load-time
//! constructor of the library itself (an `.init_array` entry), so they act in a Rust
//! program that installs [`crate::Strata`] as its global allocator exactly as in the
//! C library under `LD_PRELOAD`.
//!
//! - The constructor is a `#[used]` static, which rustc keeps in the link of every
//!   binary that links this crate, even when nothing refers to this module (an
//!   integration test, `tests/settings.rs`, runs a Rust program and checks it).
//! - It runs before `main`, reads the `envp` block glibc passes to `.init_array`
//!   entries (no `getenv`, no allocation), and applies each setting once: this is
//!   the only place that reads them, for the C library and Rust programs alike (the
//!   C-only `STRATA_BAD_FREE` and the checked mode's settings are read from here
//!   too, each in its own module).
//! - Build-time defaults: a setting `STRATA_X` that is not in the environment takes
//!   the value `STRATA_DEFAULT_X` had when this crate was compiled
//!   (`option_env!`; cargo rebuilds the crate when it changes). The run-time
//!   environment wins over it, and a call such as `strata::set_purge_delay_ms`
//!   wins over both (it comes later).
//! - Where it acts (README, "Where they act"): a process in which strata is linked
//!   but is not the allocator still reads the settings (they configure strata's
//!   heap, which is then unused); a Rust `cdylib` runs the constructor when it is
//!   loaded, at start-up or at `dlopen` (glibc passes `envp` there too); a
//!   proc-macro runs inside the compiler, so a program's settings never reach it.
//! - musl passes no `envp` to `.init_array` entries (null): only the build-time
//!   defaults apply there.

use crate::env::{parse_size, truthy};
use crate::platform;
use core::ffi::c_char;
use core::fmt::Write;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::env::setting;

/// `STRATA_HEAP_MAP`: the path to write the heap map to at exit, bytes of the
/// environment block or of the binary (both live as long as the process), and
/// their length ([`HEAP_MAP_LEN`]); null if not set.
static HEAP_MAP_PATH: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// The length of [`HEAP_MAP_PATH`], stored before it.
static HEAP_MAP_LEN: AtomicUsize = AtomicUsize::new(0);

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// Reads every `STRATA_*` setting (once) and applies it.
///
/// # Safety
/// `envp` is null or the process's environment block.
unsafe fn configure(envp: *const *const c_char) {
    if CONFIGURED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: every `setting!` and `configure` below reads `envp`, which is null or
    // the environment block (contract). `at_exit` and starting the purge thread may
    // allocate, which works here: every static is initialised at compile time.
    unsafe {
        if let Some(ms) = setting!(envp, "PURGE_DELAY_MS").and_then(parse_size) {
            crate::set_purge_delay_ms(ms);
        }
        if let Some(bytes) = setting!(envp, "THREAD_CACHE_BYTES").and_then(parse_size) {
            crate::set_thread_cache_budget(bytes as usize);
        }
        if let Some(bytes) = setting!(envp, "THREAD_CACHE_POOL_BYTES").and_then(parse_size) {
            crate::set_thread_cache_pool_bytes(bytes as usize);
        }
        if let Some(bytes) = setting!(envp, "HUGE_CACHE_BYTES").and_then(parse_size) {
            crate::set_huge_cache_bytes(bytes as usize);
        }
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if let Some(bytes) = setting!(envp, "PERCPU_CACHE_BYTES").and_then(parse_size) {
            crate::set_percpu_cache_bytes(bytes as usize);
        }
        if let Some(name) = setting!(envp, "PLACEMENT") {
            configure_placement(name);
        }
        #[cfg(feature = "c-abi")]
        {
            // Once per process: whichever comes first, this or the first thread
            // heap. A Rust program registers them with its first thread heap (where
            // strata is not its allocator, never).
            crate::global::register_fork_handlers();
            #[cfg(not(feature = "checked"))]
            crate::bad_free::configure_from(envp);
        }
        #[cfg(feature = "checked")]
        crate::checked::configure(envp);
        // Unset or `auto`: the thread starts once the heap grows past
        // `AUTO_START_BYTES`; true: now; anything else (0, off): never.
        match setting!(envp, "BACKGROUND_PURGE") {
            None => crate::purge_thread::arm_auto_start(),
            Some(v) if v.eq_ignore_ascii_case(b"auto") => crate::purge_thread::arm_auto_start(),
            Some(v) if truthy(v) => {
                crate::start_background_purge();
            }
            Some(_) => {}
        }
        if setting!(envp, "SHOW_STATS").is_some_and(truthy) {
            at_exit_or_warn(print_stats_at_exit);
        }
        // The string itself is kept, so nothing is copied or allocated here; an
        // empty value means off.
        if let Some(path) = setting!(envp, "HEAP_MAP").filter(|p| !p.is_empty()) {
            HEAP_MAP_LEN.store(path.len(), Ordering::Relaxed);
            // Release: publishes the length; pairs with the Acquire in
            // write_heap_map_at_exit().
            HEAP_MAP_PATH.store(path.as_ptr().cast_mut(), Ordering::Release);
            at_exit_or_warn(write_heap_map_at_exit);
        }
    }
}

/// Applies `STRATA_PLACEMENT`. An unknown value leaves the default (best fit) and
/// says so in one stderr line; nothing is formatted or allocated. The policy is
/// forced: the C runtime may have allocated before this constructor ran, and a
/// start-up setting must act all the same (every policy keeps every invariant of
/// the layout it starts from).
fn configure_placement(name: &[u8]) {
    match crate::Placement::from_name(name) {
        Some(p) => crate::global::force_placement(p),
        None if name.eq_ignore_ascii_case(b"buddy") => crate::report::write_all(
            platform::STDERR,
            b"strata: STRATA_PLACEMENT=buddy: no buddy policy (see README, Placement policies); using best\n",
        ),
        None => crate::report::write_all(
            platform::STDERR,
            b"strata: STRATA_PLACEMENT: unknown policy (best, first or next); using best\n",
        ),
    }
}

// Load-time constructor: every build, every binary that links this crate.
platform::load_time_constructor!(configure);

/// Registers an exit handler; if the C library cannot record it, says so on stderr
/// (the report it would have written at exit is then missing).
pub(crate) fn at_exit_or_warn(f: extern "C" fn()) {
    if platform::at_exit(f).is_err() {
        crate::report::write_all(
            platform::STDERR,
            b"strata: atexit failed; a report asked for at exit will not be written\n",
        );
    }
}

extern "C" fn print_stats_at_exit() {
    print_stats();
}

/// Writes the heap map to `STRATA_HEAP_MAP` (at exit, when no allocator lock is
/// held, so writing the SVG may allocate); reports a failure on stderr.
extern "C" fn write_heap_map_at_exit() {
    // Acquire: pairs with the Release in configure().
    let path = HEAP_MAP_PATH.load(Ordering::Acquire);
    if path.is_null() {
        return;
    }
    let len = HEAP_MAP_LEN.load(Ordering::Relaxed);
    // SAFETY: `len` bytes that live as long as the process (see HEAP_MAP_PATH),
    // their length stored before the pointer was published.
    let name = unsafe { core::slice::from_raw_parts(path, len) };
    // A build-time default has no NUL after it: the path is copied with one (a
    // path the OS would refuse as too long is refused here).
    let mut buf = [0u8; 4096];
    let written = match buf.get_mut(..len) {
        _ if name.contains(&0) => Err(platform::OsError(platform::EINVAL)),
        Some(head) => {
            head.copy_from_slice(name);
            core::ffi::CStr::from_bytes_until_nul(&buf)
                .map_err(|_| platform::OsError(platform::ENAMETOOLONG))
                .and_then(crate::heap_map::write_file)
        }
        None => Err(platform::OsError(platform::ENAMETOOLONG)),
    };
    if let Err(err) = written {
        let mut out = FdLines::new(platform::STDERR);
        let _ = out.write_str("STRATA_HEAP_MAP: cannot write ");
        for chunk in name.utf8_chunks() {
            let _ = out.write_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                let _ = out.write_char(char::REPLACEMENT_CHARACTER);
            }
        }
        let _ = writeln!(out, ": {err}");
        out.flush();
    }
}

/// A `fmt::Write` to a file descriptor through a fixed buffer (no allocation), that
/// starts every line with `strata: ` so that the report is easy to pick out of a
/// program's own stderr.
pub(crate) struct FdLines {
    fd: i32,
    buf: [u8; 1024],
    len: usize,
    at_line_start: bool,
}

impl FdLines {
    pub(crate) fn new(fd: i32) -> FdLines {
        FdLines {
            fd,
            buf: [0; 1024],
            len: 0,
            at_line_start: true,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    pub(crate) fn flush(&mut self) {
        crate::report::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for FdLines {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for line in s.split_inclusive('\n') {
            if self.at_line_start {
                self.push(b"strata: ");
            }
            self.push(line.as_bytes());
            self.at_line_start = line.ends_with('\n');
        }
        Ok(())
    }
}

/// Writes [`crate::Stats`]'s table and what the background purge thread did to
/// stderr, each line prefixed `strata: `.
pub(crate) fn print_stats() {
    let stats = crate::stats();
    let mut out = FdLines::new(platform::STDERR);
    let _ = write!(out, "{stats}");
    let bp = crate::background_purge();
    let _ = writeln!(
        out,
        "  background purge: {} ({} passes), released {}, drained {} ({} of it from sleeping threads' caches)",
        if bp.running { "running" } else { "not running" },
        bp.passes,
        crate::stats::Bytes(bp.released_bytes),
        crate::stats::Bytes(bp.drained_bytes),
        crate::stats::Bytes(bp.thread_cache_drained_bytes),
    );
    out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::pick;

    #[test]
    fn run_time_value_wins_over_the_built_in_default() {
        assert_eq!(pick(Some(b"4k"), Some("2m")), Some(&b"4k"[..]));
        assert_eq!(pick(None, Some("2m")), Some(&b"2m"[..]));
        assert_eq!(pick(None, None), None);
        assert_eq!(pick(None, Some("2m")).and_then(parse_size), Some(2 << 20));
    }

    #[test]
    fn the_constructor_ran_before_the_tests() {
        assert!(CONFIGURED.load(Ordering::Relaxed));
    }
}

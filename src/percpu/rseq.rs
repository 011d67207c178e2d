//! Finding the calling thread's rseq area: glibc's registration where there is one,
//! else one of our own, else none.
//!
//! Order (decided once per process by [`mode`]):
//! 1. `STRATA_PERCPU=0` (or `false`, `no`): [`Mode::Off`].
//! 2. glibc ≥ 2.35 registered an area for every thread (`__rseq_size >= 20`; see
//!    `sys::RSEQ_MIN_FEATURE_SIZE` for why not 32): it
//!    lives at `thread_pointer + __rseq_offset` in each thread ([`Mode::Glibc`]).
//!    We never register a second area over it (the kernel allows one per thread).
//! 3. Otherwise (older glibc, or `GLIBC_TUNABLES=glibc.pthread.rseq=0`): each
//!    thread registers an area in its own TLS on first use ([`Mode::Own`]); if the
//!    kernel has no rseq (`ENOSYS`, also under valgrind), [`Mode::Off`].
//!
//! Either way, an area is usable by a thread only while its `cpu_id` is ≥ 0 (the
//! kernel writes -1 before and after a registration, glibc -2 where its
//! registration failed); the critical sections check that themselves, so a stale
//! or unregistered area makes them fail, never corrupt a slab.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicI32, AtomicIsize, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::platform::rseq as sys;

/// The kernel's `struct rseq` (include/uapi/linux/rseq.h), the original 32 bytes.
/// The kernel writes `cpu_id_start`, `cpu_id` (and on newer kernels `node_id`,
/// `mm_cid`) whenever the thread returns to user space, and reads and clears
/// `rseq_cs`; so every field is an atomic: Rust code sees kernel writes as it
/// would a signal handler's.
///
/// Invariants:
/// 1. 32-byte aligned and 32 bytes long (the kernel refuses anything else).
/// 2. While registered for a thread, `cpu_id` is the CPU the thread runs on (≥ 0,
///    below [`possible_cpus`]) whenever the thread runs user code.
/// 3. `rseq_cs` is 0 or the address of a critical-section descriptor in the
///    `__rseq_cs` section.
#[repr(C, align(32))]
#[derive(Debug)]
pub struct RseqArea {
    /// The current CPU, always a valid CPU number (0 when not registered).
    pub cpu_id_start: AtomicU32,
    /// The current CPU; -1 (uninitialised) or -2 (glibc: registration failed) when
    /// not registered.
    pub cpu_id: AtomicI32,
    /// The descriptor of the critical section the thread is in (or was last in).
    pub rseq_cs: AtomicU64,
    /// Flags (deprecated by the kernel; 0).
    pub flags: AtomicU32,
    /// The NUMA node (kernel ≥ 6.3).
    pub node_id: AtomicU32,
    /// The concurrency id (kernel ≥ 6.3).
    pub mm_cid: AtomicU32,
    _pad: u32,
}
const_assert!(core::mem::size_of::<RseqArea>() == sys::RSEQ_ORIG_SIZE as usize);
const_assert!(core::mem::align_of::<RseqArea>() == 32);

/// Byte offset of `cpu_id` in [`RseqArea`], for the critical sections.
pub(crate) const CPU_ID_OFFSET: usize = 4;
/// Byte offset of `rseq_cs` in [`RseqArea`], for the critical sections.
pub(crate) const RSEQ_CS_OFFSET: usize = 8;
const_assert!(core::mem::offset_of!(RseqArea, cpu_id) == CPU_ID_OFFSET);
const_assert!(core::mem::offset_of!(RseqArea, rseq_cs) == RSEQ_CS_OFFSET);

impl RseqArea {
    /// A fresh area, as the kernel leaves one that is not registered (what every
    /// thread's own area holds at its start: `sys::own_tls`).
    #[cfg(test)]
    const fn unregistered() -> RseqArea {
        RseqArea {
            cpu_id_start: AtomicU32::new(0),
            cpu_id: AtomicI32::new(-1),
            rseq_cs: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            node_id: AtomicU32::new(0),
            mm_cid: AtomicU32::new(0),
            _pad: 0,
        }
    }

    /// The CPU the thread runs on, if the area is registered (by invariant 2 it is
    /// current at the moment of the load, and may be stale right after).
    pub fn cpu(&self) -> Option<u32> {
        // Relaxed: the kernel writes this on the same thread between user
        // instructions; there is no other memory to order with it.
        let c = self.cpu_id.load(Ordering::Relaxed);
        if c >= 0 { Some(c as u32) } else { None }
    }
}

/// How the process finds rseq areas (see the module docs for the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// glibc registered an area per thread at `thread_pointer + offset`.
    Glibc,
    /// Each thread registers an area of its own in TLS on first use.
    Own,
    /// No per-CPU front end: disabled by `STRATA_PERCPU=0`, or no rseq in the kernel.
    Off,
}

const MODE_UNKNOWN: u8 = 0;
const MODE_GLIBC: u8 = 1;
const MODE_OWN: u8 = 2;
const MODE_OFF: u8 = 3;

/// The process-wide [`Mode`], decided by the first call of [`mode`].
static MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);
/// `__rseq_offset` when the mode is [`Mode::Glibc`].
static GLIBC_OFFSET: AtomicIsize = AtomicIsize::new(0);

/// Per-thread state of an own registration.
const OWN_UNTRIED: u8 = 0;
const OWN_REGISTERED: u8 = 1;
const OWN_REFUSED: u8 = 2;

// The own area and its state live in the platform's static TLS (`sys::own_tls`:
// an unregistered area, then the state byte), with no destructor registration
// (which would call calloc) and no lazy init. The area lives in the thread's TLS
// block, which glibc frees (or hands to a new thread) only after the kernel has
// reported the thread gone (it reuses a stack once the kernel cleared its tid):
// the kernel never writes an area of a thread that no longer runs, so no
// unregistration is needed at thread exit.
const_assert!(sys::OWN_TLS_BYTES > sys::OWN_TLS_STATE);
const_assert!(sys::OWN_TLS_STATE >= size_of::<RseqArea>());

/// The calling thread's own area (32-byte aligned, 32 bytes: RseqArea invariant 1).
fn own_area() -> *mut RseqArea {
    sys::own_tls().cast()
}

/// The calling thread's own registration state (`OWN_*`).
fn own_state() -> u8 {
    // SAFETY: the state byte of this thread's own TLS (`sys::own_tls`), which no
    // other thread and not the kernel writes.
    unsafe { sys::own_tls().add(sys::OWN_TLS_STATE).read() }
}

/// Sets the calling thread's own registration state.
fn set_own_state(v: u8) {
    // SAFETY: as in `own_state`; only this thread reads or writes it.
    unsafe { sys::own_tls().add(sys::OWN_TLS_STATE).write(v) }
}

/// The process's [`Mode`], deciding it on the first call (see the module docs).
/// Concurrent first calls compute the same answer, so a plain store is enough.
pub fn mode() -> Mode {
    // Acquire: pairs with the Release store in `decide`; a thread that sees
    // MODE_GLIBC sees GLIBC_OFFSET.
    match MODE.load(Ordering::Acquire) {
        MODE_GLIBC => Mode::Glibc,
        MODE_OWN => Mode::Own,
        MODE_OFF => Mode::Off,
        _ => decide(),
    }
}

#[cold]
#[inline(never)]
fn decide() -> Mode {
    let env = crate::platform::environment();
    // SAFETY: `environment` returns null or the C library's environment block.
    let setting = unsafe { crate::env::getenv_raw(env, b"STRATA_PERCPU") };
    // `auto` (thread caches for the first threads, then per CPU) needs the areas
    // like a true value.
    let off = |v: &[u8]| !crate::env::truthy(v) && !v.eq_ignore_ascii_case(b"auto");
    let m = if setting.is_some_and(off) {
        Mode::Off
    } else {
        match sys::glibc_rseq() {
            Some((off, size)) if size >= sys::RSEQ_MIN_FEATURE_SIZE => {
                // Relaxed: published by the Release store of MODE below.
                GLIBC_OFFSET.store(off, Ordering::Relaxed);
                Mode::Glibc
            }
            // No glibc registration: try our own for this thread; ENOSYS means
            // no thread ever will get one.
            _ => match register_own() {
                Err(sys::ENOSYS) => Mode::Off,
                _ => Mode::Own,
            },
        }
    };
    let v = match m {
        Mode::Glibc => MODE_GLIBC,
        Mode::Own => MODE_OWN,
        Mode::Off => MODE_OFF,
    };
    // Release: publishes GLIBC_OFFSET to readers of MODE (Acquire in `mode`).
    MODE.store(v, Ordering::Release);
    m
}

/// Registers the calling thread's TLS area (at most once per thread).
fn register_own() -> Result<(), i32> {
    let state = own_state();
    match state {
        OWN_REGISTERED => return Ok(()),
        OWN_REFUSED => return Err(sys::EBUSY),
        _ => {}
    }
    let area = own_area();
    // SAFETY: the area is this thread's TLS slot, 32-byte aligned and 32 bytes
    // (RseqArea invariant 1), never used for anything else and alive until the
    // thread has exited (see `own_area`).
    let r = unsafe { sys::rseq_register(area.cast()) };
    set_own_state(if r.is_ok() {
        OWN_REGISTERED
    } else {
        OWN_REFUSED
    });
    r
}

/// The calling thread's rseq area, if it has a usable one (registering it first in
/// [`Mode::Own`]). The pointer is valid for as long as the thread runs.
#[inline]
pub fn current() -> Option<NonNull<RseqArea>> {
    let area = match mode() {
        Mode::Glibc => {
            // Relaxed: `mode` loaded MODE with Acquire after the offset was stored.
            let off = GLIBC_OFFSET.load(Ordering::Relaxed);
            sys::thread_pointer().wrapping_add_signed(off) as *mut RseqArea
        }
        Mode::Own => {
            register_own().ok()?;
            own_area()
        }
        Mode::Off => return None,
    };
    let area = NonNull::new(area)?;
    // SAFETY: in Glibc mode the address is glibc's area in this thread's TCB; in Own
    // mode our TLS slot; both live as long as the thread, and every field is atomic.
    let registered = unsafe { area.as_ref() }.cpu().is_some();
    registered.then_some(area)
}

/// The calling thread's rseq area for a critical section, without checking that it
/// is registered: in [`Mode::Glibc`] the address in the thread's TCB (two loads
/// and an add), else as [`current`]. A section run on an area that is not
/// registered fails at its `cpu_id` check (it reads a negative id), so the caller
/// then takes the path through [`current`], which finds out.
#[inline(always)]
pub fn current_for_section() -> Option<NonNull<RseqArea>> {
    if mode() == Mode::Glibc {
        // Relaxed: `mode` loaded MODE with Acquire after the offset was stored.
        let off = GLIBC_OFFSET.load(Ordering::Relaxed);
        NonNull::new(sys::thread_pointer().wrapping_add_signed(off) as *mut RseqArea)
    } else {
        current()
    }
}

/// glibc's `__rseq_offset` in [`Mode::Glibc`], 0 in every other mode or before
/// the mode is decided: what a front end copies, once it has seen the mode, to
/// find the calling thread's area on its hit path with [`glibc_area_at`] and no
/// test of the mode.
///
/// Needs no Acquire: `GLIBC_OFFSET` is written once, before the mode is
/// published, with glibc's process-wide `__rseq_offset`, which is never 0 (the
/// thread pointer addresses glibc's own thread header, not the rseq area); a
/// thread that reads it non-zero reads the only value it ever has.
pub fn glibc_offset() -> isize {
    // Relaxed: see above.
    GLIBC_OFFSET.load(Ordering::Relaxed)
}

/// The calling thread's area in [`Mode::Glibc`], from the non-zero offset
/// [`glibc_offset`] returned: the thread pointer plus the offset (one load and an
/// add). An area glibc failed to register for this thread holds a negative
/// `cpu_id`, so a section on it fails as on an unregistered one.
#[inline(always)]
pub fn glibc_area_at(offset: isize) -> NonNull<RseqArea> {
    debug_check!(offset != 0, "glibc_area_at: not glibc's offset");
    let area = sys::thread_pointer().wrapping_add_signed(offset) as *mut RseqArea;
    // SAFETY: with glibc's offset, the area lies inside this thread's TCB, a live
    // mapping, so its address is not null (one test fewer on the hit path than
    // `NonNull::new`).
    unsafe { NonNull::new_unchecked(area) }
}

/// Ends the calling thread's own registration (a no-op in other modes or if this
/// thread has none); a later [`current`] registers again. For a thread that is
/// about to make its TLS area unreachable in some way the thread-exit argument
/// does not cover; also lets tests cover both edges.
pub fn release_current_thread() -> Result<(), i32> {
    if mode() != Mode::Own || own_state() != OWN_REGISTERED {
        return Ok(());
    }
    let area = own_area();
    // SAFETY: this thread registered exactly this area (its own state says so).
    unsafe { sys::rseq_unregister(area.cast()) }?;
    set_own_state(OWN_UNTRIED);
    Ok(())
}

/// The number of possible CPU ids (every `cpu_id` is below it), or `None` if it
/// cannot be read.
pub fn possible_cpus() -> Option<u32> {
    sys::possible_cpus()
}

/// The number of CPUs this thread may run on (its affinity mask), or `None` if
/// it cannot be read.
pub fn usable_cpus() -> Option<u32> {
    sys::usable_cpus()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's TLS image starts every thread with an unregistered own area
    /// (cpu_id -1, as the kernel leaves one) and an untried state, on the main
    /// thread and on a new one, and each thread's area is its own.
    #[test]
    fn every_thread_starts_with_an_unregistered_own_area_of_its_own() {
        fn fresh() -> usize {
            let fresh = RseqArea::unregistered();
            // SAFETY: this thread's own TLS (64 readable bytes) and a local
            // area, compared as bytes; nothing here registers it.
            let same = unsafe {
                core::slice::from_raw_parts(own_area().cast::<u8>(), 32)
                    == core::slice::from_raw_parts((&raw const fresh).cast::<u8>(), 32)
            };
            if own_state() == OWN_UNTRIED {
                assert!(same, "an untried area reads as the kernel leaves one");
            }
            assert_eq!(own_area() as usize % 32, 0, "RseqArea invariant 1");
            own_area() as usize
        }
        let here = fresh();
        let there = std::thread::spawn(fresh).join().unwrap();
        assert_ne!(here, there);
    }
}

//! The address-space part of the platform layer under the path the tiers use
//! (`crate::os::{Os, OsError, SysOs, OS_PAGE}`), and a test double. Everything is
//! defined in `platform`; see its module docs for the contracts.

pub use crate::platform::{OS_PAGE, Os, OsError, SysOs};

/// 64 random bits for per-process secrets (see `platform::entropy_u64`).
#[cfg(not(strata_loom))]
pub use crate::platform::entropy_u64 as random_u64;

/// Tests: [`SysOs`] that refuses purges and unmaps on demand, as Linux does under
/// `mlockall` (`madvise` fails with EINVAL) or at `vm.max_map_count` (`munmap`
/// fails with ENOMEM). A refused call does nothing: contents and mappings stay.
#[cfg(all(test, not(strata_loom)))]
pub(crate) mod flaky {
    use super::{Os, OsError, SysOs};
    use crate::platform::{EINVAL, ENOMEM};
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// See the module docs. Each `fail_*` counter is the number of calls still to
    /// refuse (`usize::MAX`: all); `*_calls` count every call, refused or not.
    #[derive(Default)]
    pub(crate) struct FlakyOs {
        pub fail_purges: AtomicUsize,
        pub fail_unmaps: AtomicUsize,
        pub purge_calls: AtomicUsize,
        pub unmap_calls: AtomicUsize,
    }

    impl FlakyOs {
        /// Refuses every purge (`on`) or none.
        pub fn refuse_purges(&self, on: bool) {
            self.fail_purges
                .store(if on { usize::MAX } else { 0 }, Relaxed);
        }

        /// Refuses every unmap (`on`) or none.
        pub fn refuse_unmaps(&self, on: bool) {
            self.fail_unmaps
                .store(if on { usize::MAX } else { 0 }, Relaxed);
        }

        fn refuse(counter: &AtomicUsize) -> bool {
            counter
                .fetch_update(Relaxed, Relaxed, |n| match n {
                    0 => None,
                    usize::MAX => Some(n),
                    _ => Some(n - 1),
                })
                .is_ok()
        }
    }

    // SAFETY: every call that is not refused is SysOs's; a refused purge or unmap
    // returns Err and leaves the range as it was, as the contract allows.
    unsafe impl Os for FlakyOs {
        fn map(&self, size: usize, align: usize) -> *mut u8 {
            SysOs.map(size, align)
        }

        unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
            self.unmap_calls.fetch_add(1, Relaxed);
            if Self::refuse(&self.fail_unmaps) {
                return Err(OsError(ENOMEM));
            }
            // SAFETY: forwarded contract.
            unsafe { SysOs.unmap(p, size) }
        }

        unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
            self.purge_calls.fetch_add(1, Relaxed);
            if Self::refuse(&self.fail_purges) {
                return Err(OsError(EINVAL));
            }
            // SAFETY: forwarded contract.
            unsafe { SysOs.purge(p, size) }
        }

        unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
            // SAFETY: forwarded contract.
            unsafe { SysOs.remap(p, old, new) }
        }

        unsafe fn split(&self, p: *mut u8, size: usize, at: usize) {
            // SAFETY: forwarded contract.
            unsafe { SysOs.split(p, size, at) }
        }

        fn can_move(&self) -> bool {
            SysOs.can_move()
        }

        unsafe fn move_to(&self, p: *mut u8, size: usize, dst: *mut u8) -> Result<(), OsError> {
            // SAFETY: forwarded contract.
            unsafe { SysOs.move_to(p, size, dst) }
        }

        fn now_ms(&self) -> Result<u64, OsError> {
            SysOs.now_ms()
        }
    }
}

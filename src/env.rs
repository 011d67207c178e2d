//! Configuration from the environment, read without allocating: the C library and
//! the checked mode read `STRATA_*` in load-time constructors, before (or while)
//! anything else allocates, so they scan the `envp` block glibc passes to
//! `.init_array` entries instead of calling `getenv`.

use core::ffi::c_char;

/// Looks `name=` up in a C environment block without allocating.
///
/// # Safety
/// `envp` is null or a null-terminated array of NUL-terminated strings.
pub(crate) unsafe fn getenv_raw(envp: *const *const c_char, name: &[u8]) -> Option<&'static [u8]> {
    if envp.is_null() {
        return None;
    }
    let mut e = envp;
    // SAFETY: per the contract, every entry up to the null is a C string that lives
    // for the whole process (the environment block).
    unsafe {
        while !(*e).is_null() {
            let s = core::ffi::CStr::from_ptr(*e).to_bytes();
            if s.len() > name.len() && s.starts_with(name) && s[name.len()] == b'=' {
                return Some(&s[name.len() + 1..]);
            }
            e = e.add(1);
        }
    }
    None
}

/// Parses a decimal number with an optional `k`/`m`/`g` (binary) suffix.
pub(crate) fn parse_size(v: &[u8]) -> Option<u64> {
    let (digits, mult) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    n.checked_mul(mult)
}

pub(crate) fn truthy(v: &[u8]) -> bool {
    !(v.is_empty()
        || v == b"0"
        || v.eq_ignore_ascii_case(b"false")
        || v.eq_ignore_ascii_case(b"no"))
}

/// `setting!(envp, "X")`: the value in effect of `STRATA_X` as raw bytes: the
/// environment's (`envp`, read without allocating), else the build-time default
/// `STRATA_DEFAULT_X`, else None. An unsafe call: `envp` must be null or the
/// process's environment block.
macro_rules! setting {
    ($envp:expr, $name:literal) => {
        $crate::env::pick(
            $crate::env::getenv_raw($envp, concat!("STRATA_", $name).as_bytes()),
            option_env!(concat!("STRATA_DEFAULT_", $name)),
        )
    };
}
// Used by `settings` and, in checked builds, by `checked`.
pub(crate) use setting;

/// The run-time value if there is one, else the build-time default.
#[inline]
pub(crate) fn pick(
    run_time: Option<&'static [u8]>,
    built_in: Option<&'static str>,
) -> Option<&'static [u8]> {
    run_time.or(built_in.map(str::as_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"2m"), Some(2 << 20));
        assert_eq!(parse_size(b"1G"), Some(1 << 30));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"k"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
    }

    #[test]
    fn truthy_values() {
        assert!(
            truthy(b"1") && truthy(b"yes") && !truthy(b"0") && !truthy(b"") && !truthy(b"false")
        );
    }
}

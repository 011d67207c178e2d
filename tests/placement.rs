//! The placement policy from Rust and from `STRATA_PLACEMENT` (no test harness:
//! the harness allocates before any test runs, and `strata::set_placement` must be
//! called before the first allocation).
//!
//! The parent checks, in this order, that `set_placement` works as `main`'s first
//! call and is refused once memory is out; then runs itself again with
//! `STRATA_PLACEMENT` set to each policy and to bad values, and reads what the
//! child printed.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

use std::process::Command;
use strata::Placement;

const CHILD_ENV: &str = "STRATA_PLACEMENT_CHILD";

fn main() {
    // Early: reading a variable allocates a little, which leaves the heap as every
    // policy would (one chunk used from its start, nothing freed to it).
    if std::env::var_os(CHILD_ENV).is_some() {
        // A child only reports the policy `STRATA_PLACEMENT` chose and allocates
        // under it.
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 + 97 * i]).collect();
        std::hint::black_box(&v);
        strata::validate_heap().unwrap();
        println!("placement={}", strata::placement());
        return;
    }
    let first = strata::set_placement(Placement::First);
    assert_eq!(first, Ok(()), "an early call in main chooses the policy");
    let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 + 97 * i]).collect();
    std::hint::black_box(&v);
    assert_eq!(strata::placement(), Placement::First);
    let err = strata::set_placement(Placement::Next).unwrap_err();
    assert_eq!(err.current, Placement::First);
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(strata::set_placement(Placement::First), Ok(()));
    strata::validate_heap().unwrap();

    for (value, want, stderr) in [
        ("best", "best", ""),
        ("first", "first", ""),
        ("next", "next", ""),
        ("NEXT", "next", ""),
        ("worst", "best", "strata: STRATA_PLACEMENT: unknown policy"),
        (
            "buddy",
            "best",
            "strata: STRATA_PLACEMENT=buddy: no buddy policy",
        ),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, "1")
            .env("STRATA_PLACEMENT", value)
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{value}: {e}");
        assert_eq!(o.trim(), format!("placement={want}"), "{value}");
        if stderr.is_empty() {
            assert_eq!(e, "", "{value}");
        } else {
            assert_eq!(e.lines().count(), 1, "one line for {value}: {e}");
            assert!(e.starts_with(stderr), "{value}: {e}");
        }
    }
    println!("placement: ok");
}

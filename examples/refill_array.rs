//! Cost of the per-CPU front end's refill from spans: `Central::refill_array` of
//! 64-byte objects, with no batch on the transfer stack, so every refill carves
//! (straight into the array: `src/central/carve_array.rs`). Two loops:
//! `measured_fresh` carves never-used objects (runs of fresh spans, kept), and
//! `measured_recycled` carves from span free lists and returns each batch to its
//! spans (`release_array`). Count each loop's instructions with callgrind:
//!
//! ```text
//! cargo build --release --example refill_array
//! valgrind --tool=callgrind --toggle-collect='*measured_fresh*' \
//!     target/release/examples/refill_array [N]
//! valgrind --tool=callgrind --toggle-collect='*measured_recycled*' \
//!     target/release/examples/refill_array [N]
//! ```
//!
//! and divide by the objects it prints (N refills of a batch each, N defaults to
//! 4000).

use std::ptr;
use strata::internals::{Backend, DESC_SLOTS, SizeClass, SysOs, class_for};

#[inline(never)]
fn measured_fresh(be: &Backend<SysOs>, c: SizeClass, n: usize) -> usize {
    let mut out = [ptr::null_mut::<u8>(); DESC_SLOTS];
    let mut total = 0;
    for _ in 0..n {
        total += be.refill_array(c, &mut out);
    }
    total
}

#[inline(never)]
fn measured_recycled(be: &Backend<SysOs>, c: SizeClass, n: usize) -> usize {
    let mut out = [ptr::null_mut::<u8>(); DESC_SLOTS];
    let mut total = 0;
    for _ in 0..n {
        let k = be.refill_array(c, &mut out);
        total += k;
        // SAFETY: the refill just gave us these `k` class-c objects of `be`; no
        // one else has them, and they go back unused.
        unsafe { be.central.release_array(c, &out[..k], &be.page_heap) };
    }
    total
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let be: &Backend<SysOs> = Box::leak(Box::new(Backend::new(SysOs)));
    let c = class_for(64, 8).expect("a class for 64 bytes");
    let fresh = measured_fresh(be, c, n);
    let recycled = measured_recycled(be, c, n);
    println!("objects: fresh {fresh}, recycled {recycled}");
}

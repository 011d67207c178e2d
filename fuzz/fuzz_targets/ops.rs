//! Fuzz target: the bytes are a sequence of operations (5 bytes each, see
//! `ops_from_bytes`) run by one machine with 16 slots and a mailbox, against checked
//! strata; every block is compared with the model on every touch; after each input
//! the quarantine is emptied (each freed block checked) and the heap validated.
#![no_main]

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

#[path = "../../tests/ops/mod.rs"]
mod ops;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mailbox = ops::Mailbox::default();
    {
        let mut m = ops::Machine::new(16, &mailbox, 1);
        for op in ops::ops_from_bytes(data) {
            m.step(op);
        }
    }
    mailbox.drain();
    // Empties the quarantine (checking every block freed by this input) so that it
    // does not grow across inputs, then checks every invariant and canary.
    strata::release_memory();
    if let Err(v) = strata::validate_heap() {
        panic!("{v}");
    }
});

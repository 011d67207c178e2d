//! Checked mode: the quarantine of freed blocks (see the module docs of `checked`).

use super::block::{Block, Desc, Found, Kind, find, first_not, freed_word, mix};
use super::{DEFAULT_QUARANTINE_BYTES, FREE_FILL};
use crate::Violation;
use crate::global::{self, BACKEND, ForkLocks, Upper};
use crate::report::die;
use crate::sync::{AtomicUsize, LockRank, Ordering, RawLock, UnsafeCell};
use core::ptr;
use crossbeam_utils::CachePadded;

// ---- quarantine -----------------------------------------------------------------------

/// Shards of the quarantine. A thread frees into the shard its id hashes to, so a
/// single thread's frees form one strict FIFO (sharding by block address instead
/// lets a steady workload cycle through a few shards and strand a block in another
/// one forever: seen in the use-after-free test).
const SHARDS: usize = 8;
/// Entries per shard (16 bytes each, from the metadata arena when a shard is first
/// used): small blocks are bounded by this rather than by bytes.
const RING: usize = 1 << 16;
/// Entries evicted per lock hold.
const EVICT: usize = 16;

pub(super) static QUARANTINE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_QUARANTINE_BYTES);

#[derive(Clone, Copy)]
struct Entry {
    p: *mut u8,
    slot: usize,
}

/// A FIFO of freed blocks. Invariant: `len <= RING`, `bytes` is the sum of the
/// entries' slots, entries are `buf[(head + i) % RING]` for `i < len`.
struct Ring {
    buf: *mut Entry,
    head: usize,
    len: usize,
    bytes: usize,
}

struct Shard {
    lock: RawLock,
    ring: UnsafeCell<Ring>,
}

// SAFETY: `ring` is only touched under `lock`; the entries are blocks nobody else
// holds.
unsafe impl Sync for Shard {}

impl Shard {
    const fn new() -> Shard {
        Shard {
            lock: RawLock::new(LockRank::Quarantine),
            ring: UnsafeCell::new(Ring {
                buf: ptr::null_mut(),
                head: 0,
                len: 0,
                bytes: 0,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Ring) -> R) -> R {
        // Every shard lock is taken here (but by the fork handlers): have forks
        // hold them from the first use on.
        global::add_fork_locks(Upper::Quarantine, &FORK_LOCKS);
        let _g = self.lock.guard();
        // SAFETY: lock held; every access to `ring` goes through here, so this is
        // the only reference to it while it lives.
        self.ring.with_mut(|r| f(unsafe { &mut *r }))
    }
}

impl Ring {
    fn get(&self, i: usize) -> Entry {
        // SAFETY: i < len <= RING entries of `buf` are initialised (invariant).
        unsafe { *self.buf.add((self.head + i) % RING) }
    }

    fn pop(&mut self) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        let e = self.get(0);
        self.head = (self.head + 1) % RING;
        self.len -= 1;
        self.bytes -= e.slot;
        Some(e)
    }

    fn push(&mut self, e: Entry) -> bool {
        if self.buf.is_null() {
            let os = BACKEND.page_heap.os();
            self.buf = BACKEND
                .meta
                .alloc(os, RING * core::mem::size_of::<Entry>(), 16)
                .cast();
            if self.buf.is_null() {
                return false;
            }
        }
        if self.len == RING {
            return false;
        }
        // SAFETY: the slot lies in the RING-entry buffer.
        unsafe { self.buf.add((self.head + self.len) % RING).write(e) };
        self.len += 1;
        self.bytes += e.slot;
        true
    }
}

static QUARANTINE: [CachePadded<Shard>; SHARDS] =
    [const { CachePadded::new(Shard::new()) }; SHARDS];

/// The calling thread's shard.
fn my_shard() -> &'static Shard {
    let me = crate::platform::thread_token() as u64;
    &QUARANTINE[(mix(me) >> 61) as usize % SHARDS]
}

/// Parks a freed, filled block; evicts (checks and really frees) the oldest blocks
/// of its shard to stay within the budget.
pub(super) fn quarantine(b: &Block) {
    let e = Entry {
        p: b.p,
        slot: b.slot,
    };
    let budget = QUARANTINE_BYTES.load(Ordering::Relaxed) / SHARDS;
    if e.slot > budget {
        release(e);
        return;
    }
    let shard = my_shard();
    loop {
        let mut out = [Entry {
            p: ptr::null_mut(),
            slot: 0,
        }; EVICT];
        let mut n = 0;
        let pushed = shard.with(|r| {
            while n < EVICT && r.len > 0 && (r.len == RING || r.bytes + e.slot > budget) {
                if let Some(x) = r.pop() {
                    out[n] = x;
                    n += 1;
                }
            }
            r.len < RING && r.bytes + e.slot <= budget && r.push(e)
        });
        for &x in &out[..n] {
            release(x);
        }
        if pushed {
            return;
        }
        if n == 0 {
            // No ring memory: free at once (checked, but not delayed).
            release(e);
            return;
        }
    }
}

/// Where a quarantined block differs from what `retire` left: the first changed
/// byte's offset and value.
fn freed_damage(e: Entry) -> Option<(usize, u8)> {
    let b = Block {
        p: e.p,
        slot: e.slot,
        kind: Kind::Large,
    };
    // SAFETY: the block is ours (in quarantine), mapped, `capacity` bytes long.
    if let Some(k) = unsafe { first_not(e.p, b.capacity(), FREE_FILL) } {
        // SAFETY: k < capacity.
        return Some((k, unsafe { *e.p.add(k) }));
    }
    let want = freed_word(e.p).to_ne_bytes();
    let got = b.trailer().load(Ordering::Relaxed).to_ne_bytes();
    (0..8)
        .find(|&i| want[i] != got[i])
        .map(|i| (b.capacity() + i, got[i]))
}

/// Takes a block out of quarantine: checks that nothing wrote to it, then frees it
/// for real.
fn release(e: Entry) {
    if let Some((off, byte)) = freed_damage(e) {
        let desc = match find(e.p) {
            Found::Block(b) => b,
            _ => Block {
                p: e.p,
                slot: e.slot,
                kind: Kind::Large,
            },
        };
        die(format_args!(
            "write to a freed block {:#x} ({}): byte {off} is {byte:#04x}, not the free pattern \
             {FREE_FILL:#04x} (found when it left quarantine)",
            e.p as usize,
            Desc(desc)
        ));
    }
    // SAFETY: the block was checked live when it was freed, and has been ours since.
    unsafe { global::free_by_address(e.p) };
}

/// Checks and frees every quarantined block (`release_memory`, `malloc_trim`).
pub(crate) fn drain_quarantine() {
    for shard in &QUARANTINE {
        loop {
            let mut out = [Entry {
                p: ptr::null_mut(),
                slot: 0,
            }; EVICT];
            let mut n = 0;
            shard.with(|r| {
                while n < EVICT {
                    match r.pop() {
                        Some(x) => {
                            out[n] = x;
                            n += 1;
                        }
                        None => break,
                    }
                }
            });
            if n == 0 {
                break;
            }
            for &x in &out[..n] {
                release(x);
            }
        }
    }
}

/// The quarantine's locks for the fork handlers.
static FORK_LOCKS: ForkLocks = ForkLocks {
    lock: lock_all,
    unlock: unlock_all,
};

/// Fork prepare: holds every quarantine lock (before the backend's locks; shards in
/// index order, which is address order, as the lock order wants for one rank).
fn lock_all() {
    for s in &QUARANTINE {
        s.lock.lock();
    }
}

/// Fork parent/child: releases what `lock_all` took.
fn unlock_all() {
    for s in QUARANTINE.iter().rev() {
        s.lock.unlock();
    }
}

/// Block invariant 2 (see the module docs of `checked`): every quarantined block still
/// holds the free pattern and its freed trailer.
pub(super) fn validate_quarantine() -> Result<(), Violation> {
    for shard in &QUARANTINE {
        shard.with(|r| {
            for i in 0..r.len {
                let e = r.get(i);
                if freed_damage(e).is_some() {
                    return Err(Violation {
                        structure: "Block",
                        invariant: 2,
                        what: "freed block written while in quarantine",
                        addr: e.p as usize,
                    });
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

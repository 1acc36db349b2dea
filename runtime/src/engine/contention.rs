//! Which locks were found busy lately, so that the next acquisition of a
//! busy lock can send the statement that tries and waits at once.
//!
//! A free lock is cheapest with the plain try: one function call. A busy one
//! is cheapest with one statement that tries and, when the try fails, waits
//! (`sql::statements`' take-or-wait): one round trip instead of two. That
//! statement costs the server a few microseconds more than the plain try
//! when the lock turns out to be free, so it is sent only for a lock that
//! was found busy lately, in this process. Lock ids are hashed into a small
//! table of counters: finding a lock busy sets its counter, each free
//! acquisition through the combined statement counts it down. Two ids that
//! share a counter only share this guess; a wrong guess costs those few
//! microseconds, or the second round trip, and nothing else.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::contract::id::LockId;

/// Counters in the table: 1 KiB.
const COUNTERS: usize = 1024;

/// Free acquisitions after which a lock found busy is tried plainly again.
const REMEMBERED: u8 = 8;

static RECENTLY_BUSY: [AtomicU8; COUNTERS] = [const { AtomicU8::new(0) }; COUNTERS];

fn counter(id: LockId) -> &'static AtomicU8 {
    let value = match id {
        LockId::BigInt(id) => id as u64,
        LockId::Pair(class, object) => (class as u32 as u64) << 32 | object as u32 as u64,
    };
    // Fibonacci hashing: the top bits of the product mix every bit of the id.
    let index = value.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - COUNTERS.trailing_zeros());
    &RECENTLY_BUSY[index as usize]
}

/// Whether `id` was found busy lately: then its next acquisition tries and
/// waits in one statement.
pub(crate) fn expected(id: LockId) -> bool {
    counter(id).load(Ordering::Relaxed) > 0
}

/// `id` was found busy.
pub(crate) fn found_busy(id: LockId) {
    let counter = counter(id);
    // Stored only when it changes: a lock busy all the time keeps its
    // counter's cache line shared between the threads that take it.
    if counter.load(Ordering::Relaxed) != REMEMBERED {
        counter.store(REMEMBERED, Ordering::Relaxed);
    }
}

/// `id`, expected busy, was free.
pub(crate) fn found_free(id: LockId) {
    let counter = counter(id);
    let left = counter.load(Ordering::Relaxed);
    if left > 0 {
        // A race with another task only moves the guess by one.
        counter.store(left - 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_found_busy_is_expected_busy_until_it_was_free_often_enough() {
        let id = LockId::Pair(0x5eed, 17);
        assert!(!expected(id));
        found_busy(id);
        for _ in 0..REMEMBERED {
            assert!(expected(id));
            found_free(id);
        }
        assert!(!expected(id));
        found_free(id);
        assert!(!expected(id));
    }

    #[test]
    fn neighbouring_ids_use_different_counters() {
        let first = counter(LockId::BigInt(1)) as *const AtomicU8;
        assert!((2..64).all(|id| !std::ptr::eq(first, counter(LockId::BigInt(id)))));
    }
}

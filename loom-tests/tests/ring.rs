//! **The real ring** (`src/sync/ring.rs`, the lanes' queue) on loom's
//! atomics and cells: loom explores the interleavings of its claims (CAS on
//! the head and tail), its stamp hand-offs and its full/empty checks, and
//! its `UnsafeCell` tracking reports any access to a slot's value that is
//! not ordered after the previous owner's.
#![cfg(topicbus_loom)]

use loom::sync::Arc;
use loom::thread;
use topicbus::__loom::Ring;

/// Everything the ring still holds, oldest first (after the threads
/// joined: the models wait on nothing, so loom's search stays finite).
fn rest(ring: &Ring<u32>) -> Vec<u32> {
    std::iter::from_fn(|| ring.pop()).collect()
}

#[test]
fn two_pushers_and_a_popper_lose_and_duplicate_nothing() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let pushers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let ring = ring.clone();
                thread::spawn(move || ring.push(v))
            })
            .collect();
        let popped = ring.pop();
        for p in pushers {
            assert_eq!(p.join().expect("pusher"), Ok(()), "room for both");
        }
        let mut all: Vec<u32> = popped.into_iter().chain(rest(&ring)).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
        assert!(ring.is_empty() && !ring.ready());
    });
}

#[test]
fn two_poppers_and_a_pusher_on_a_full_ring() {
    // Two values queued in a two-slot ring; a push races two pops. The
    // push fails only if it saw the ring full; each popper gets the values
    // in order; nothing is lost or duplicated.
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        assert_eq!(ring.push(1u32), Ok(()));
        assert_eq!(ring.push(2u32), Ok(()));
        let pusher = {
            let ring = ring.clone();
            thread::spawn(move || ring.push(3))
        };
        let popper = {
            let ring = ring.clone();
            thread::spawn(move || ring.pop())
        };
        let mine = ring.pop();
        let pushed = pusher.join().expect("pusher");
        let theirs = popper.join().expect("popper");
        assert!(mine.is_some() && theirs.is_some(), "two values were queued");
        let mut all: Vec<u32> = mine.into_iter().chain(theirs).chain(rest(&ring)).collect();
        match pushed {
            Ok(()) => {}
            Err(back) => {
                assert_eq!(back, 3);
                all.push(back);
            }
        }
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3], "lost or duplicated");
    });
}

#[test]
fn a_forced_push_racing_a_pop_loses_nothing() {
    // DropOldest's path: the forced push evicts the head while a consumer
    // pops it. The value goes to exactly one of them.
    loom::model(|| {
        let ring = Arc::new(Ring::new(1));
        assert_eq!(ring.push(1u32), Ok(()));
        let forcing = {
            let ring = ring.clone();
            thread::spawn(move || ring.force_push(2))
        };
        let popped = ring.pop();
        let evicted = forcing.join().expect("forcing");
        let mut all: Vec<u32> = popped.into_iter().chain(evicted).collect();
        all.extend(std::iter::from_fn(|| ring.pop()));
        all.sort_unstable();
        assert_eq!(all, [1, 2], "lost or duplicated");
    });
}

#[test]
fn ready_never_promises_a_value_that_is_not_there() {
    // The worker's poll: with one consumer, `ready` true means the next
    // pop finds a value; and once the push returned, `ready` sees it.
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let pusher = {
            let ring = ring.clone();
            thread::spawn(move || ring.push(7u32))
        };
        if ring.ready() {
            assert_eq!(ring.pop(), Some(7));
            assert_eq!(pusher.join().expect("pusher"), Ok(()));
        } else {
            assert_eq!(pusher.join().expect("pusher"), Ok(()));
            assert!(ring.ready(), "a finished push is visible to ready");
            assert_eq!(ring.pop(), Some(7));
        }
        assert!(!ring.ready());
    });
}

//! The lanes' blocking overflow policy under every interleaving: a publisher
//! blocked on a full lane is woken by the pop that frees a slot. loom does not
//! model time, so a blocked wait never times out: a lost notification is a
//! deadlock, which loom reports as a failure.
#![cfg(topicbus_loom)]

use std::num::NonZeroUsize;
use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use topicbus::__loom::{Lanes, OverflowPolicy, Push};
use topicbus::Priority;

const BLOCK: OverflowPolicy = OverflowPolicy::Block {
    timeout: Duration::from_secs(3600),
};

#[test]
fn a_pop_wakes_the_blocked_publisher() {
    loom::model(|| {
        let lanes = Arc::new(Lanes::new(NonZeroUsize::new(1).expect("non-zero")));
        assert_eq!(lanes.push(Priority::Normal, 1u32, BLOCK), Push::Enqueued);
        let publisher = {
            let lanes = lanes.clone();
            thread::spawn(move || lanes.push(Priority::Normal, 2, BLOCK))
        };
        let consumer = {
            let lanes = lanes.clone();
            thread::spawn(move || lanes.pop())
        };
        assert_eq!(consumer.join().expect("consumer"), Some(1));
        assert_eq!(publisher.join().expect("publisher"), Push::Enqueued);
        assert_eq!(lanes.pop(), Some(2));
        assert!(lanes.is_empty());
    });
}

#[test]
fn a_batch_release_wakes_every_blocked_publisher() {
    // The worker's path: quiet pops through a batch, then one release. Two
    // publishers blocked on a full two-slot lane must both get in.
    loom::model(|| {
        let lanes = Arc::new(Lanes::new(NonZeroUsize::new(2).expect("non-zero")));
        assert_eq!(lanes.push(Priority::Normal, 1u32, BLOCK), Push::Enqueued);
        assert_eq!(lanes.push(Priority::Normal, 2u32, BLOCK), Push::Enqueued);
        let publishers: Vec<_> = [3u32, 4]
            .into_iter()
            .map(|v| {
                let lanes = lanes.clone();
                thread::spawn(move || lanes.push(Priority::Normal, v, BLOCK))
            })
            .collect();
        let consumer = {
            let lanes = lanes.clone();
            thread::spawn(move || {
                let batch = [lanes.pop_quiet(), lanes.pop_quiet()];
                lanes.release();
                batch
            })
        };
        assert_eq!(consumer.join().expect("consumer"), [Some(1), Some(2)]);
        for p in publishers {
            assert_eq!(p.join().expect("publisher"), Push::Enqueued);
        }
        let mut rest = [lanes.pop(), lanes.pop()];
        rest.sort();
        assert_eq!(rest, [Some(3), Some(4)]);
        assert!(lanes.is_empty());
    });
}

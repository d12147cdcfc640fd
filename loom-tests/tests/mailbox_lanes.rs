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

//! Shutdown vs publish: the publish gate of `src/bus/stats.rs` (the real
//! `Publishes`), with the bus's state flag and `check_open` mirrored from
//! `src/bus/mod.rs` (`publish` enters, checks the bus is open, routes,
//! commits; `shutdown` marks the bus draining, waits until no publish is in
//! flight, then drains the mailboxes):
//!
//! - `shutdown_waits_out_every_publish_in_flight`: two publishers race a
//!   shutdown. Each message is either refused (`Closed`) or routed before
//!   the shutdown drains, so the drain accounts for every accepted message;
//!   none is routed into a mailbox the shutdown already swept.
#![cfg(topicbus_loom)]

use loom::sync::atomic::{AtomicU8, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use topicbus::__loom::Publishes;

const OPEN: u8 = 0;
const DRAINING: u8 = 1;

struct Bus {
    state: AtomicU8,
    publishes: Publishes,
    mailbox: Mutex<Vec<u32>>,
    /// Set once the shutdown's drain is done: nothing may arrive after.
    swept: Mutex<Option<Vec<u32>>>,
}

impl Bus {
    /// `Bus::publish`: enter, `check_open`, route, commit.
    fn publish(&self, v: u32) -> bool {
        let entered = self.publishes.enter();
        if self.state.load(Ordering::SeqCst) != OPEN {
            return false; // `Closed`; dropping `entered` counts it abandoned
        }
        self.mailbox.lock().unwrap().push(v);
        assert!(
            self.swept.lock().unwrap().is_none(),
            "message {v} routed after the shutdown drained"
        );
        entered.commit();
        true
    }

    /// `Bus::shutdown`'s first half: draining, wait for publishes in
    /// flight, drain.
    fn shutdown(&self) {
        self.state.store(DRAINING, Ordering::SeqCst);
        while !self.publishes.none_in_flight() {
            thread::yield_now();
        }
        let drained = std::mem::take(&mut *self.mailbox.lock().unwrap());
        *self.swept.lock().unwrap() = Some(drained);
    }
}

#[test]
fn shutdown_waits_out_every_publish_in_flight() {
    loom::model(|| {
        let bus = Arc::new(Bus {
            state: AtomicU8::new(OPEN),
            publishes: Publishes::new(),
            mailbox: Mutex::new(Vec::new()),
            swept: Mutex::new(None),
        });
        let publishers: Vec<_> = (0..2u32)
            .map(|p| {
                let bus = Arc::clone(&bus);
                thread::spawn(move || bus.publish(p).then_some(p))
            })
            .collect();
        bus.shutdown();
        let mut accepted: Vec<u32> = publishers
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        accepted.sort_unstable();
        let mut drained = bus.swept.lock().unwrap().take().unwrap();
        drained.sort_unstable();
        assert_eq!(drained, accepted, "every accepted message is drained");
        assert!(bus.mailbox.lock().unwrap().is_empty());
    });
}

//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

/// The generous deadline of every wait in the tests.
pub(crate) const LONG: Duration = Duration::from_secs(20);

/// Waits (yielding, never sleeping) until `cond` holds; panics after
/// [`LONG`].
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// A one-worker bus builder on `clock` (not every test file uses it).
#[allow(dead_code)]
pub(crate) fn on_clock(clock: &std::sync::Arc<topicbus::ManualClock>) -> topicbus::BusBuilder<u32> {
    topicbus::Bus::<u32>::builder()
        .workers(1)
        .clock(clock.clone())
}

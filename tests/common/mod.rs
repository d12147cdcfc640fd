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

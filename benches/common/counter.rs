//! Waiting for handlers to finish, shared by the bus benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Waits until `counter` reaches `target` (yielding: the publisher shares
/// the two cores with the worker).
pub(crate) fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::thread::yield_now();
    }
}

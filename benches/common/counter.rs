//! Shared by the bus and reliability benchmarks: waiting for handlers to
//! finish, the inline subscriber, the criterion settings.

use std::sync::atomic::{AtomicU64, Ordering};

/// Waits until `counter` reaches `target` (yielding: the publisher shares
/// the two cores with the worker).
pub(crate) fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::thread::yield_now();
    }
}

/// The inline benchmarks' subscriber: `options` (an inline subscription to
/// `orders.eu.created`, adjusted by the caller) with a handler that only
/// reads the payload.
pub(crate) fn inline_sink(
    bus: &topicbus::Bus<u64>,
    options: impl FnOnce(topicbus::SubscribeOptions) -> topicbus::SubscribeOptions,
) -> topicbus::Subscription {
    let base = topicbus::SubscribeOptions::new()
        .pattern("orders.eu.created")
        .inline(true);
    bus.subscribe_with(options(base), |m: &topicbus::Message<u64>| {
        std::hint::black_box(m.payload());
    })
    .expect("subscribe")
}

/// The criterion settings of the bus and reliability benchmarks.
pub(crate) fn config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

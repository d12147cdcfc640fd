//! `Metrics::report` through the `metrics` facade, read back from the
//! ecosystem's debugging recorder.
#![cfg(feature = "metrics")]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use topicbus::{Bus, Message, OverflowPolicy, SubscribeOptions};

#[test]
fn the_report_carries_the_snapshot() {
    let bus = Bus::<u32>::builder()
        .workers(1)
        .latency_sampling(1)
        .build()
        .unwrap();
    let fails = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("jobs").latency(true),
            |m: &Message<u32>| {
                if m.payload().is_multiple_of(4) {
                    Err("every fourth")
                } else {
                    Ok(())
                }
            },
        )
        .unwrap();
    let _tiny = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("jobs")
                .capacity(1)
                .overflow(OverflowPolicy::DropNewest)
                .paused(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    for i in 0..100 {
        bus.publish("jobs", i).unwrap();
    }
    bus.shutdown(Duration::from_secs(20)).unwrap();
    let m = bus.metrics();

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || m.report());
    let found = snapshotter.snapshot().into_vec();
    let get = |name: &str, labels: &[(&str, &str)]| -> &DebugValue {
        let hits: Vec<_> = found
            .iter()
            .filter(|(k, ..)| {
                let key = k.key();
                key.name() == name
                    && labels.len() == key.labels().count()
                    && labels
                        .iter()
                        .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv))
            })
            .map(|(.., v)| v)
            .collect();
        assert_eq!(hits.len(), 1, "{name} {labels:?}");
        hits[0]
    };
    let counter = |name: &str, labels: &[(&str, &str)]| match get(name, labels) {
        DebugValue::Counter(n) => *n,
        other => panic!("{name}: {other:?}"),
    };
    let gauge = |name: &str, labels: &[(&str, &str)]| match get(name, labels) {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    };

    let t = m.stats.total;
    assert_eq!(counter("topicbus_published_total", &[]), 100);
    assert_eq!(counter("topicbus_delivered_total", &[]), t.delivered);
    assert_eq!(
        counter("topicbus_messages_total", &[("outcome", "handled")]),
        t.handled
    );
    assert_eq!(
        counter("topicbus_messages_total", &[("outcome", "failed")]),
        25
    );
    assert_eq!(
        counter(
            "topicbus_messages_total",
            &[("outcome", "dropped"), ("reason", "newest")]
        ),
        t.dropped.newest
    );
    assert_eq!(t.dropped.newest, 99);
    let id = fails.id().to_string();
    assert_eq!(
        counter(
            "topicbus_subscription_messages_total",
            &[("subscription", &id), ("outcome", "handled")]
        ),
        75
    );
    assert_eq!(gauge("topicbus_workers", &[("state", "exited")]), 1.0);
    let p99 = gauge("topicbus_handler_seconds", &[("quantile", "0.99")]);
    assert_eq!(p99, m.handler.p99().as_secs_f64());
    let max = gauge("topicbus_end_to_end_seconds", &[("quantile", "1")]);
    assert_eq!(max, m.end_to_end.max().as_secs_f64());
    // The subscription's own distributions, labelled with it.
    let own = &m.subscriptions[0];
    assert_eq!((m.subscriptions.len(), own.id), (1, fails.id()));
    assert_eq!(own.handler.count(), 100);
    for (name, l) in [
        ("topicbus_subscription_queue_wait_seconds", &own.queue_wait),
        ("topicbus_subscription_handler_seconds", &own.handler),
        ("topicbus_subscription_end_to_end_seconds", &own.end_to_end),
    ] {
        let p50 = gauge(name, &[("subscription", &id), ("quantile", "0.5")]);
        assert_eq!(p50, l.p50().as_secs_f64(), "{name}");
    }
}

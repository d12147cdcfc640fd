//! The Prometheus text output, read back by a real exposition-format
//! parser (`prometheus-parse`) and compared with the snapshot it came from.
#![cfg(feature = "prometheus")]

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use topicbus::{Bus, Message, OverflowPolicy, SubscribeOptions};

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: not a scalar: {other:?}"),
    }
}

#[test]
fn the_exposition_parses_and_says_what_the_snapshot_says() {
    let bus = Bus::<u32>::builder()
        .workers(2)
        .latency_sampling(1)
        .build()
        .unwrap();
    let ok = bus.subscribe("jobs.#", |_m: &Message<u32>| ()).unwrap();
    let odd_fails = bus
        .subscribe("jobs.eu", |m: &Message<u32>| {
            if m.payload().is_multiple_of(2) {
                Ok(())
            } else {
                Err("odd")
            }
        })
        .unwrap();
    // A one-slot mailbox that drops what does not fit.
    let tiny = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("jobs.*")
                .capacity(1)
                .overflow(OverflowPolicy::DropNewest),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    for i in 0..500 {
        bus.publish("jobs.eu", i).unwrap();
    }
    bus.shutdown(Duration::from_secs(20)).unwrap();
    let m = bus.metrics();
    let text = m.to_prometheus();
    let s = scrape(&text);

    // Every sample line became a sample (histograms fold their buckets).
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    let folded: usize = s
        .samples
        .iter()
        .map(|x| match &x.value {
            Value::Histogram(b) => b.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(folded, lines, "every sample line read once");
    // Every family has its help and type.
    for name in [
        "topicbus_published_total",
        "topicbus_messages_total",
        "topicbus_workers",
    ] {
        assert!(s.docs.contains_key(name), "{name}");
    }

    let t = m.stats.total;
    assert_eq!(value(&s, "topicbus_published_total", &[]), 500.0);
    assert_eq!(
        value(&s, "topicbus_delivered_total", &[]),
        t.delivered as f64
    );
    let outcome = |o: &str| value(&s, "topicbus_messages_total", &[("outcome", o)]);
    assert_eq!(outcome("handled"), t.handled as f64);
    assert_eq!(outcome("failed"), t.failed as f64);
    assert_eq!(
        value(
            &s,
            "topicbus_messages_total",
            &[("outcome", "dropped"), ("reason", "newest")]
        ),
        t.dropped.newest as f64
    );
    assert!(t.failed == 250 && t.dropped.newest > 0, "{t:?}");
    for sub in [&ok, &odd_fails, &tiny] {
        let id = sub.id().to_string();
        let st = sub.stats();
        let labels = [("subscription", id.as_str()), ("outcome", "handled")];
        assert_eq!(
            value(&s, "topicbus_subscription_messages_total", &labels),
            st.counts.handled as f64
        );
        assert_eq!(
            value(
                &s,
                "topicbus_subscription_delivered_total",
                &[("subscription", id.as_str())]
            ),
            st.counts.delivered as f64
        );
    }
    assert_eq!(value(&s, "topicbus_workers", &[("state", "exited")]), 2.0);

    // Histograms: cumulative buckets ending in +Inf = count.
    for name in [
        "topicbus_queue_wait_seconds",
        "topicbus_handler_seconds",
        "topicbus_end_to_end_seconds",
    ] {
        let h = s
            .samples
            .iter()
            .find(|x| x.metric == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let Value::Histogram(buckets) = &h.value else {
            panic!("{name} is not a histogram");
        };
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{name}"
        );
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        assert_eq!(inf.count, m.handler.count() as f64, "{name}");
        assert_eq!(
            text.lines()
                .find(|l| l.starts_with(&format!("{name}_count ")))
                .unwrap(),
            format!("{name}_count {}", m.handler.count())
        );
    }
    assert_eq!(m.handler.count(), t.handled + t.failed);
}

#[test]
fn subscriptions_with_their_own_histograms_export_them_labelled() {
    let bus = Bus::<u64>::builder()
        .workers(1)
        .latency_sampling(1)
        .build()
        .unwrap();
    let watched = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("jobs").latency(true),
            |_m: &Message<u64>| (),
        )
        .unwrap();
    let unwatched = bus.subscribe("jobs", |_m: &Message<u64>| ()).unwrap();
    for i in 0..200 {
        bus.publish("jobs", i).unwrap();
    }
    bus.shutdown(Duration::from_secs(20)).unwrap();
    let m = bus.metrics();
    let s = scrape(&m.to_prometheus());
    assert_eq!(m.subscriptions.len(), 1);
    let own = &m.subscriptions[0];
    let id = watched.id().to_string();
    for (name, l) in [
        ("topicbus_subscription_queue_wait_seconds", &own.queue_wait),
        ("topicbus_subscription_handler_seconds", &own.handler),
        ("topicbus_subscription_end_to_end_seconds", &own.end_to_end),
    ] {
        assert!(s.docs.contains_key(name), "{name}");
        let found: Vec<_> = s.samples.iter().filter(|x| x.metric == name).collect();
        assert_eq!(found.len(), 1, "{name}: only the watched subscription");
        assert_eq!(found[0].labels.get("subscription"), Some(id.as_str()));
        let Value::Histogram(buckets) = &found[0].value else {
            panic!("{name} is not a histogram");
        };
        // Each bucket is the distribution's own cumulative count.
        for b in buckets {
            let want = if b.less_than.is_infinite() {
                l.count()
            } else {
                l.count_at_most(Duration::from_secs_f64(b.less_than))
            };
            assert_eq!(b.count, want as f64, "{name} le {}", b.less_than);
        }
        assert_eq!(buckets.last().unwrap().count, 200.0);
    }
    assert!(s.samples.iter().all(|x| {
        x.labels.get("subscription") != Some(unwatched.id().to_string().as_str())
            || !x.metric.ends_with("_seconds")
    }));
}

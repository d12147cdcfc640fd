//! The `tracing` feature: a publish span, a handler span per run with the
//! message's ids and attempt, and events for retries, breaker changes,
//! failures, drops and dead letters, seen by a recording subscriber.
#![cfg(feature = "tracing")]

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

mod common;

use common::wait_until;
use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, Message, MessageId, OverflowPolicy, RetryPolicy,
    SubscribeOptions, WhenOpen,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Every span (name and fields, later records included) and every event
/// (message and fields), one line of text each.
static SPANS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records into [`SPANS`] and [`EVENTS`].
struct Recorder;

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = span.metadata().name().to_owned();
        span.record(&mut Line(&mut line));
        let mut spans = SPANS.lock().unwrap();
        spans.push(line);
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = SPANS.lock().unwrap();
        let line = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Line(line));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = String::new();
        event.record(&mut Line(&mut line));
        EVENTS.lock().unwrap().push(line);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn spans_and_events_carry_the_message() {
    // Global: handlers run on worker threads.
    tracing::subscriber::set_global_default(Recorder).expect("the only subscriber");

    let bus = Bus::<u32>::builder()
        .workers(1)
        .dead_letters(16)
        .build()
        .unwrap();
    let _ok = bus.subscribe("orders.#", |_m: &Message<u32>| ()).unwrap();
    let retrying = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("orders.eu")
                .retry(RetryPolicy::new(2).backoff(Duration::ZERO, Duration::ZERO)),
            |_m: &Message<u32>| Err::<(), _>("down"),
        )
        .unwrap();
    let breaker = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("orders.eu")
                .circuit_breaker(
                    CircuitBreaker::new()
                        .window(BreakerWindow::Calls(2))
                        .min_calls(2)
                        .failure_rate(0.5)
                        .open_for(Duration::from_secs(60), 0.0)
                        .when_open(WhenOpen::DeadLetter),
                ),
            |_m: &Message<u32>| Err::<(), _>("down"),
        )
        .unwrap();
    let _tiny = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("orders.eu")
                .capacity(1)
                .overflow(OverflowPolicy::DropNewest)
                .paused(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    let corr = MessageId::new();
    bus.publish_message(Message::builder("orders.eu".parse().unwrap(), 1).correlation_id(corr))
        .unwrap();
    bus.publish("orders.eu", 2).unwrap();
    // Both messages settled by both failing subscriptions (the retries ran,
    // the breaker opened) before the shutdown.
    wait_until("retries and breaker done", || {
        [&retrying, &breaker].iter().all(|s| {
            let st = s.stats();
            st.counts.settled() == 2 && st.retrying == 0
        })
    });
    bus.shutdown(Duration::from_secs(20)).unwrap();

    let spans = SPANS.lock().unwrap().clone();
    let events = EVENTS.lock().unwrap().clone();
    let has =
        |list: &[String], parts: &[&str]| list.iter().any(|l| parts.iter().all(|p| l.contains(p)));

    assert!(
        has(
            &spans,
            &["topicbus.publish", "topic=orders.eu", "message_id="]
        ),
        "{spans:#?}"
    );
    assert!(
        has(
            &spans,
            &[
                "topicbus.handle",
                "attempt=1",
                &format!("correlation_id={corr}")
            ]
        ),
        "{spans:#?}"
    );
    assert!(
        has(&spans, &["topicbus.handle", "attempt=2"]),
        "a retry's span: {spans:#?}"
    );
    assert!(
        has(&events, &["retry scheduled", "attempt=2"]),
        "{events:#?}"
    );
    assert!(
        has(&events, &["circuit breaker changed", "to=Open"]),
        "{events:#?}"
    );
    assert!(has(&events, &["message dead-lettered"]), "{events:#?}");
    assert!(
        has(&events, &["message dropped", "reason=Newest"]),
        "{events:#?}"
    );
}

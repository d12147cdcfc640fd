//! Bad input at every door of the public API: each attempt gets its typed
//! error, and nothing else changes (the bus's whole `stats()` snapshot is
//! the same before and after, and a message published afterwards still
//! arrives).
//!
//! Two rows of the usual table cannot be written: there is no byte-slice
//! topic API (topics are `&str`, so non-UTF-8 input is refused by the type
//! system), and `Subscription::unsubscribe` takes the handle by value, so
//! unsubscribing twice does not compile. Dropping the handle after
//! `detach` is covered in `tests/bus.rs`.

use std::time::Duration;

mod common;
use common::LONG;
use topicbus::{
    BuildError, Bus, BusStats, Message, OverflowPolicy, Pattern, PublishError, RecvTimeoutError,
    RequestError, SubscribeError, SubscribeOptions, Topic, TopicErrorKind, DEFAULT_MAX_PAYLOAD,
    MAX_CAPACITY,
};

fn kind(e: &PublishError) -> &TopicErrorKind {
    match e {
        PublishError::Topic(t) => t.kind(),
        other => panic!("expected a topic error, got {other:?}"),
    }
}

fn sub_kind(e: &SubscribeError) -> &TopicErrorKind {
    match e {
        SubscribeError::Pattern(t) => t.kind(),
        other => panic!("expected a pattern error, got {other:?}"),
    }
}

/// A bus with one subscriber on `ok.#`, and its stats before the test.
fn bus() -> (Bus<Vec<u8>>, topicbus::Receiver<Vec<u8>>, BusStats) {
    let bus = Bus::<Vec<u8>>::builder()
        .workers(1)
        .max_payload(DEFAULT_MAX_PAYLOAD)
        .build()
        .expect("bus");
    let rx = bus.receiver("ok.#").expect("receiver");
    let before = bus.stats();
    (bus, rx, before)
}

/// Nothing changed, and the bus still works.
fn unchanged(bus: &Bus<Vec<u8>>, rx: &topicbus::Receiver<Vec<u8>>, before: &BusStats) {
    assert_eq!(&bus.stats(), before, "a refused input changed the bus");
    assert!(matches!(rx.try_recv(), Err(topicbus::TryRecvError::Empty)));
    bus.publish("ok.after", b"fine".to_vec()).expect("publish");
    assert_eq!(rx.recv_timeout(LONG).expect("delivery").payload(), b"fine");
}

#[test]
fn bad_topics_are_refused_with_the_rule_and_position() {
    let ten_k_levels = vec!["a"; 10_000].join(".");
    let long_level = "x".repeat(256);
    let cases: [(&str, &str, TopicErrorKind); 9] = [
        ("empty", "", TopicErrorKind::Empty),
        ("leading dot", ".ok.a", TopicErrorKind::EmptyLevel),
        ("doubled dot", "ok..a", TopicErrorKind::EmptyLevel),
        ("trailing dot", "ok.a.", TopicErrorKind::EmptyLevel),
        (
            "star in a topic",
            "ok.*",
            TopicErrorKind::WildcardInTopic('*'),
        ),
        (
            "hash in a topic",
            "ok.#",
            TopicErrorKind::WildcardInTopic('#'),
        ),
        ("space", "ok.a b", TopicErrorKind::InvalidChar(' ')),
        ("control", "ok.a\u{7}", TopicErrorKind::InvalidChar('\u{7}')),
        (
            "too long",
            &long_level,
            TopicErrorKind::TooLong { max: 255 },
        ),
    ];
    let (bus, rx, before) = bus();
    for (what, topic, want) in &cases {
        let e = bus.publish(*topic, vec![1]).expect_err(what);
        assert_eq!(kind(&e), want, "{what}");
        if let PublishError::Topic(t) = &e {
            assert!(t.position() <= topic.len(), "{what}: position outside");
        }
        // The same verdict from the parser itself.
        assert_eq!(Topic::parse(topic).expect_err(what).kind(), want, "{what}");
    }
    // 10,000 levels: too long for the default limits (either rule may
    // speak first, but it is a topic error and nothing is published).
    let e = bus
        .publish(&*ten_k_levels, vec![1])
        .expect_err("10 K levels");
    assert!(matches!(
        kind(&e),
        TopicErrorKind::TooLong { .. } | TopicErrorKind::TooDeep { .. }
    ));
    let deep = vec!["a"; 33].join(".");
    let e = bus.publish(&*deep, vec![1]).expect_err("33 levels");
    assert_eq!(kind(&e), &TopicErrorKind::TooDeep { max: 32 });
    unchanged(&bus, &rx, &before);
}

#[test]
fn bad_patterns_are_refused_and_subscribe_nothing() {
    let (bus, rx, before) = bus();
    let cases: [(&str, TopicErrorKind); 5] = [
        ("a*", TopicErrorKind::MisplacedWildcard('*')),
        ("#b", TopicErrorKind::MisplacedWildcard('#')),
        ("**", TopicErrorKind::MisplacedWildcard('*')),
        ("a..b", TopicErrorKind::EmptyLevel),
        ("", TopicErrorKind::Empty),
    ];
    for (pattern, want) in &cases {
        let e = bus.receiver(*pattern).expect_err(pattern);
        assert_eq!(sub_kind(&e), want, "{pattern:?}");
        let e = bus
            .subscribe(*pattern, |_m: &Message<Vec<u8>>| {})
            .expect_err(pattern);
        assert_eq!(sub_kind(&e), want, "{pattern:?}");
        assert_eq!(Pattern::parse(pattern).expect_err(pattern).kind(), want);
    }
    // One bad pattern among good ones: the whole subscription is refused.
    let e = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("ok.a").pattern("ok.b*"),
            |_m: &Message<Vec<u8>>| {},
        )
        .expect_err("one bad pattern");
    assert!(matches!(e, SubscribeError::Pattern(_)));
    unchanged(&bus, &rx, &before);
}

#[test]
fn bad_subscription_options_are_refused() {
    let (bus, rx, before) = bus();
    let handler = |_m: &Message<Vec<u8>>| {};
    let no_patterns = bus.subscribe_with(SubscribeOptions::new(), handler);
    assert!(matches!(no_patterns, Err(SubscribeError::NoPatterns)));
    let zero_capacity =
        bus.subscribe_with(SubscribeOptions::new().pattern("ok").capacity(0), handler);
    assert!(matches!(zero_capacity, Err(SubscribeError::Options(_))));
    let huge_capacity = bus.subscribe_with(
        SubscribeOptions::new().pattern("ok").capacity(usize::MAX),
        handler,
    );
    assert!(matches!(huge_capacity, Err(SubscribeError::Options(m)) if m.contains("MAX_CAPACITY")));
    let zero_batch = bus.subscribe_with(SubscribeOptions::new().pattern("ok").batch(0), handler);
    assert!(matches!(zero_batch, Err(SubscribeError::Options(_))));
    unchanged(&bus, &rx, &before);
}

#[test]
fn a_payload_one_byte_over_the_limit_is_refused_whole() {
    let (bus, rx, before) = bus();
    let e = bus
        .publish("ok.big", vec![0u8; DEFAULT_MAX_PAYLOAD + 1])
        .expect_err("1 MiB + 1");
    match e {
        PublishError::PayloadTooLarge(p) => {
            assert_eq!(
                (p.size, p.max),
                (DEFAULT_MAX_PAYLOAD + 1, DEFAULT_MAX_PAYLOAD)
            );
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    unchanged(&bus, &rx, &before);
    // Exactly at the limit is fine.
    bus.publish("ok.big", vec![0u8; DEFAULT_MAX_PAYLOAD])
        .expect("at the limit");
    assert_eq!(
        rx.recv_timeout(LONG).expect("delivery").payload().len(),
        DEFAULT_MAX_PAYLOAD
    );
}

#[test]
fn publishing_subscribing_and_requesting_after_shutdown_say_closed() {
    let (bus, rx, _) = bus();
    bus.shutdown(LONG).expect("shutdown");
    let after = bus.stats();
    assert!(matches!(
        bus.publish("ok.a", vec![1]),
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        bus.publish_message(Message::builder(Topic::parse("ok.a").unwrap(), vec![1])),
        Err(PublishError::Closed)
    ));
    assert!(matches!(bus.receiver("ok.#"), Err(SubscribeError::Closed)));
    assert!(matches!(
        bus.subscribe("ok.#", |_m: &Message<Vec<u8>>| {}),
        Err(SubscribeError::Closed)
    ));
    assert!(matches!(
        bus.request("ok.a", vec![1], LONG),
        Err(RequestError::Closed)
    ));
    // A second shutdown is harmless and changes nothing either.
    bus.shutdown(LONG).expect("second shutdown");
    assert_eq!(bus.stats(), after);
    assert!(matches!(
        rx.recv_timeout(Duration::ZERO),
        Err(RecvTimeoutError::Closed)
    ));
}

#[test]
fn requests_with_a_zero_timeout_or_no_responder_fail_typed() {
    let (bus, _rx, _) = bus();
    assert!(matches!(
        bus.request("nobody.home", vec![1], LONG),
        Err(RequestError::NoResponders)
    ));
    // A responder that never answers, and no time to wait: `Timeout`, at
    // once (no wall-clock wait: the test would hang for `LONG` otherwise).
    let silent = bus.receiver("svc.silent").expect("receiver");
    let e = bus.request("svc.silent", vec![2], Duration::ZERO);
    assert!(matches!(e, Err(RequestError::Timeout)), "{e:?}");
    // The request itself was delivered (and only it).
    let got = silent.recv_timeout(LONG).expect("request delivered");
    assert!(got.reply_to().is_some() && got.correlation_id().is_some());
    assert!(matches!(
        silent.try_recv(),
        Err(topicbus::TryRecvError::Empty)
    ));
    // A reply to a message without `reply_to` is a typed error.
    let plain = Message::builder(Topic::parse("ok.a").unwrap(), vec![3]).build();
    assert!(matches!(
        bus.reply(&plain, vec![4]),
        Err(PublishError::NoReplyTo)
    ));
}

#[test]
fn bad_bus_configurations_are_refused() {
    let zero_workers = Bus::<u8>::builder().workers(0).build();
    assert!(matches!(zero_workers, Err(BuildError::Config(_))));
    let zero_capacity = Bus::<u8>::builder().capacity(0).build();
    assert!(matches!(zero_capacity, Err(BuildError::Config(_))));
    for huge in [MAX_CAPACITY + 1, usize::MAX] {
        let built = Bus::<u8>::builder().capacity(huge).build();
        assert!(matches!(built, Err(BuildError::Config(m)) if m.contains("MAX_CAPACITY")));
    }
    let zero_batch = Bus::<u8>::builder().batch(0).build();
    assert!(matches!(zero_batch, Err(BuildError::Config(_))));
    // A blocking overflow policy with a zero timeout is a valid, if strict,
    // choice: it behaves as "drop newest after no wait".
    let strict = Bus::<u8>::builder()
        .overflow(OverflowPolicy::Block {
            timeout: Duration::ZERO,
        })
        .build();
    assert!(strict.is_ok());
}

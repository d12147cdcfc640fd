use super::*;
use std::time::UNIX_EPOCH;

fn t(s: &str) -> Topic {
    Topic::parse(s).unwrap()
}

#[test]
fn defaults() {
    let before = SystemTime::now();
    let m = Message::builder(t("a.b"), 5u8).build();
    assert_eq!(m.topic().as_str(), "a.b");
    assert_eq!(*m.payload(), 5);
    assert!(m.headers().is_empty());
    assert_eq!(m.priority(), Priority::Normal);
    assert_eq!(m.expires_at(), None);
    assert!(!m.is_expired_at(SystemTime::now() + Duration::from_secs(1 << 30)));
    assert_eq!((m.correlation_id(), m.causation_id()), (None, None));
    assert_eq!((m.from(), m.to(), m.reply_to()), (None, None, None));
    assert_eq!(m.attempt(), 1);
    // Stamped by the message clock (`crate::time`), which is never behind a
    // system clock reading taken before it.
    assert!(m.timestamp() >= before);
    assert!(m.timestamp() <= SystemTime::now());
    // The id carries the creation millisecond.
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert!(ms(m.id().created_at()) >= ms(m.timestamp()));
    assert_eq!(m.into_payload(), 5);
}

#[test]
fn every_option_is_kept() {
    let parent = Message::builder(t("p"), ()).build();
    let at = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let m = Message::builder(t("a.b"), "x")
        .header("k", "v")
        .header("k", "w")
        .priority(Priority::Low)
        .timestamp(at)
        .ttl(Duration::from_secs(5))
        .caused_by(&parent)
        .from("svc-a")
        .to("svc-b")
        .reply_to(t("replies.svc-a"))
        .build();
    assert_eq!(m.headers().get("k"), Some("w"));
    assert_eq!(m.priority(), Priority::Low);
    assert_eq!(m.timestamp(), at);
    assert_eq!(m.expires_at(), Some(at + Duration::from_secs(5)));
    assert!(!m.is_expired_at(at + Duration::from_millis(4_999)));
    assert!(m.is_expired_at(at + Duration::from_secs(5)));
    assert_eq!(m.causation_id(), Some(parent.id()));
    assert_eq!(m.correlation_id(), Some(parent.id()));
    assert_eq!((m.from(), m.to()), (Some("svc-a"), Some("svc-b")));
    assert_eq!(m.reply_to().map(Topic::as_str), Some("replies.svc-a"));
}

#[test]
fn a_conversation_keeps_its_correlation_id() {
    let first = Message::builder(t("a"), 1).build();
    let second = Message::builder(t("b"), 2).caused_by(&first).build();
    let third = Message::builder(t("c"), 3).caused_by(&second).build();
    assert_eq!(third.correlation_id(), Some(first.id()));
    assert_eq!(third.causation_id(), Some(second.id()));
    assert!(first.id() < second.id() && second.id() < third.id());
}

#[test]
fn restore_keeps_identity() {
    let original = Message::builder(t("a"), 1).build();
    let again = Message::builder(t("a"), 1)
        .restore(original.id(), original.timestamp(), 3)
        .build();
    assert_eq!(again.id(), original.id());
    assert_eq!(again.timestamp(), original.timestamp());
    assert_eq!(again.attempt(), 3);
    let zero = Message::builder(t("a"), 1)
        .restore(original.id(), original.timestamp(), 0)
        .build();
    assert_eq!(zero.attempt(), 1, "attempts start at 1");
}

#[test]
fn expiry_edge_cases() {
    let at = UNIX_EPOCH + Duration::from_secs(10);
    let m = Message::builder(t("a"), ()).expires_at(at).build();
    assert!(m.is_expired_at(at));
    assert!(!m.is_expired_at(at - Duration::from_nanos(1)));
    // A TTL that overflows the clock means "never".
    let forever = Message::builder(t("a"), ()).ttl(Duration::MAX).build();
    assert_eq!(forever.expires_at(), None);
}

#[test]
fn checked_build_enforces_the_payload_limit() {
    let ok = Message::builder(t("a"), vec![0u8; 8]).build_checked(8);
    assert!(ok.is_ok());
    let err = Message::builder(t("a"), String::from("123456789"))
        .build_checked(8)
        .unwrap_err();
    assert_eq!(err, PayloadTooLarge { size: 9, max: 8 });
}

#[test]
fn priority_orders_high_first() {
    let mut v = vec![Priority::Low, Priority::High, Priority::Normal];
    v.sort_by(|a, b| b.cmp(a));
    assert_eq!(v, Priority::ALL);
}

#[test]
fn messages_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Message<Vec<u8>>>();
    assert_send_sync::<MessageBuilder<String>>();
    let m = std::sync::Arc::new(Message::builder(t("a"), vec![1u8]).build());
    let m2 = m.clone();
    let len = std::thread::spawn(move || m2.payload().len())
        .join()
        .unwrap();
    assert_eq!(len, 1);
}

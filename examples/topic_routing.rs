//! Topic routing: who receives what, for every kind of pattern.
//!
//! Subscriptions with exact patterns, `*` (exactly one level) at the start,
//! middle and end, `#` (zero or more levels) leading, inside and trailing,
//! one subscription with two overlapping patterns (it still gets each
//! message once), a queue group that splits a topic between two workers,
//! and a header filter. Each subscription is a pull receiver, so the
//! example can print and check exactly what each one got.
//!
//! Run: `cargo run --example topic_routing`

use std::collections::BTreeMap;
use std::time::Duration;

use topicbus::{Bus, GroupStrategy, Message, Receiver, SubscribeOptions, Topic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<u32>::builder().workers(1).build()?;

    let mut subs: Vec<(&str, Receiver<u32>)> = Vec::new();
    for (name, pattern) in [
        ("exact", "orders.eu.created"),
        ("star-middle", "orders.*.created"),
        ("star-end", "orders.eu.*"),
        ("star-start", "*.eu.created"),
        ("hash-end", "orders.#"),
        ("hash-start", "#.failed"),
        ("hash-inside", "orders.#.refunded"),
        ("everything", "#"),
    ] {
        subs.push((name, bus.receiver(pattern)?));
    }
    // Two patterns that overlap on `orders.eu.created`: delivered once.
    subs.push((
        "two-patterns",
        bus.receiver_with(
            SubscribeOptions::new()
                .pattern("orders.eu.#")
                .pattern("*.*.created"),
        )?,
    ));
    // Only messages carrying `priority: vip`.
    subs.push((
        "vip-only",
        bus.receiver_with(
            SubscribeOptions::new()
                .pattern("orders.#")
                .header_eq("priority", "vip"),
        )?,
    ));
    // Two workers sharing `jobs.render`: each message to one of them.
    for name in ["worker-a", "worker-b"] {
        subs.push((
            name,
            bus.receiver_with(
                SubscribeOptions::new()
                    .pattern("jobs.render")
                    .queue_group("renderers", GroupStrategy::RoundRobin),
            )?,
        ));
    }

    let topics = [
        "orders.eu.created",
        "orders.us.created",
        "orders.eu.shipped",
        "orders",
        "orders.eu.2026.refunded",
        "orders.refunded",
        "payments.card.failed",
        "failed",
        "users.eu.created",
        "jobs.render",
        "jobs.render",
        "jobs.render",
        "jobs.render",
    ];
    println!("{:<25} matched", "topic");
    for (i, t) in topics.iter().enumerate() {
        let r = bus.publish(*t, i as u32)?;
        println!("{t:<25} {}", r.matched);
    }
    let vip = Message::builder(Topic::parse("orders.eu.created")?, 100).header("priority", "vip");
    bus.publish_message(vip)?;

    println!("\n{:<14} received", "subscription");
    let mut got: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, rx) in &subs {
        let mut mine = Vec::new();
        while let Ok(m) = rx.try_recv() {
            mine.push(m.topic().to_string());
        }
        println!("{name:<14} {}", mine.join(", "));
        got.insert(name, mine);
    }

    let count = |name: &str| got[name].len();
    assert_eq!(count("exact"), 2); // and the vip copy
    assert_eq!(
        got["star-middle"],
        [
            "orders.eu.created",
            "orders.us.created",
            "orders.eu.created"
        ]
    );
    assert_eq!(count("star-end"), 3);
    assert_eq!(count("star-start"), 3); // users.eu.created too
    assert!(got["hash-end"].contains(&"orders".to_string())); // `#` may be zero levels
    assert_eq!(got["hash-start"], ["payments.card.failed", "failed"]);
    assert_eq!(
        got["hash-inside"],
        ["orders.eu.2026.refunded", "orders.refunded"]
    );
    assert_eq!(count("everything"), topics.len() + 1);
    // orders.eu.created (twice), orders.us.created, orders.eu.shipped,
    // orders.eu.2026.refunded, users.eu.created: each once.
    assert_eq!(count("two-patterns"), 6);
    assert_eq!(got["vip-only"], ["orders.eu.created"]);
    assert_eq!((count("worker-a"), count("worker-b")), (2, 2));
    bus.shutdown(Duration::from_secs(5))?;
    Ok(())
}

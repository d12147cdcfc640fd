//! A realistic order flow: topics per region, a queue group of fulfilment
//! workers with retries, an inventory service asked by request-reply,
//! billing that ignores duplicate submissions, an audit trail, and the dead
//! letters at the end.
//!
//! Run: `cargo run --example order_processing`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use topicbus::{
    Bus, Dedup, GroupStrategy, Message, MessageId, Permanent, RetryPolicy, SubscribeOptions, Topic,
};

#[derive(Debug, Clone)]
enum Event {
    Order {
        id: u64,
        sku: &'static str,
        qty: u32,
    },
    Reserve {
        sku: &'static str,
        qty: u32,
    },
    Reserved(bool),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Event>::builder()
        .workers(4)
        .dead_letters(10_000)
        .build()?;

    // Inventory: answers reservations (request-reply). Runs out of gadgets.
    let stock = Arc::new(Mutex::new(HashMap::from([
        ("widget", 100u32),
        ("gadget", 3),
    ])));
    let weak = bus.downgrade();
    let _inventory = bus.subscribe(
        "inventory.reserve",
        move |m: &Message<Event>| -> Result<(), topicbus::BoxError> {
            let Event::Reserve { sku, qty } = m.payload() else {
                return Ok(());
            };
            let mut stock = stock.lock().map_err(|_| "stock lock poisoned")?;
            let left = stock.entry(sku).or_insert(0);
            let ok = *left >= *qty;
            if ok {
                *left -= qty;
            }
            m.reply(&weak, Event::Reserved(ok))
                .map(drop)
                .map_err(Into::into)
        },
    )?;

    // Fulfilment: three workers share the orders (a queue group); a flaky
    // warehouse API fails every fifth first attempt; no stock is permanent.
    let shipped = Arc::new(AtomicU64::new(0));
    let mut fulfilment = Vec::new();
    for _ in 0..3 {
        let weak = bus.downgrade();
        let shipped = Arc::clone(&shipped);
        fulfilment.push(
            bus.subscribe_with(
                SubscribeOptions::new()
                    .pattern("orders.*.created")
                    .queue_group("fulfilment", GroupStrategy::LeastLoaded)
                    .retry(
                        RetryPolicy::new(4)
                            .backoff(Duration::from_millis(2), Duration::from_millis(20)),
                    ),
                move |m: &Message<Event>| -> Result<(), topicbus::BoxError> {
                    let Event::Order { id, sku, qty } = m.payload() else {
                        return Ok(());
                    };
                    if id % 5 == 0 && m.attempt() == 1 {
                        return Err("warehouse API timeout".into());
                    }
                    let bus = weak.upgrade().ok_or("bus gone")?;
                    let reply = bus.request(
                        "inventory.reserve",
                        Event::Reserve { sku, qty: *qty },
                        Duration::from_secs(5),
                    )?;
                    match reply.payload() {
                        Event::Reserved(true) => {
                            shipped.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        _ => Err(Permanent::new(format!("order {id}: {sku} out of stock")).into()),
                    }
                },
            )?,
        );
    }

    // Billing: one charge per order even if the shop submits it twice.
    let charged = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&charged);
    let billing = bus.subscribe_with(
        SubscribeOptions::new()
            .pattern("orders.*.created")
            .dedup(Dedup::new(Duration::from_secs(600), 100_000)),
        move |_m: &Message<Event>| {
            c.fetch_add(1, Ordering::Relaxed);
        },
    )?;

    // Audit: everything about orders, pulled at the end.
    let audit = bus.receiver("orders.#")?;

    for id in 1..=20u64 {
        let region = ["eu", "us", "apac"][(id % 3) as usize];
        let sku = if id % 4 == 0 { "gadget" } else { "widget" };
        let order = Message::builder(
            Topic::parse(&format!("orders.{region}.created"))?,
            Event::Order { id, sku, qty: 1 },
        )
        .restore(
            MessageId::from_u128(u128::from(id)),
            std::time::SystemTime::now(),
            1,
        )
        .build();
        // Message ids make submissions idempotent: order 7 is sent twice.
        let twice = id == 7;
        bus.publish_message(order)?;
        if twice {
            let again = Message::builder(
                Topic::parse(&format!("orders.{region}.created"))?,
                Event::Order { id, sku, qty: 1 },
            )
            .restore(
                MessageId::from_u128(u128::from(id)),
                std::time::SystemTime::now(),
                1,
            );
            bus.publish_message(again)?;
        }
    }

    // Let the flow finish before shutting down: once shutdown begins,
    // handlers can no longer publish (their inventory requests would fail).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fulfilment.iter().map(|s| s.stats().settled()).sum::<u64>() < 21 {
        if std::time::Instant::now() > deadline {
            return Err("the orders did not settle in 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = bus.shutdown(Duration::from_secs(30))?;
    let audited = audit.try_iter().count();
    let dlq = bus.dead_letters().ok_or("dead letters are configured")?;
    let retried: u64 = fulfilment.iter().map(|s| s.stats().retried).sum();
    println!("orders published  21 (order 7 twice)");
    println!("audited           {audited}");
    println!(
        "charged           {} (the duplicate suppressed: {})",
        charged.load(Ordering::Relaxed),
        billing.stats().duplicates
    );
    println!("shipped           {}", shipped.load(Ordering::Relaxed));
    println!("retried           {retried}");
    println!("dead letters      {}", dlq.len());
    for letter in dlq.all() {
        if let Some(e) = &letter.error {
            println!(
                "  {} after {} attempt(s): {}",
                letter.message.topic(),
                letter.attempts,
                e.message
            );
        }
    }
    println!("shutdown clean    {}", report.is_clean());
    assert_eq!(charged.load(Ordering::Relaxed), 20);
    assert_eq!(shipped.load(Ordering::Relaxed) + dlq.len() as u64, 21);
    Ok(())
}

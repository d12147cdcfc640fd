//! Wildcard subscriptions, callbacks on the worker pool and a pull receiver.
//!
//! `cargo run --example basic`

use std::time::Duration;

use topicbus::{Bus, Message, SubscribeOptions};

#[derive(Debug)]
struct Order {
    id: u32,
    total_cents: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Order>::builder().workers(2).build()?;

    // A callback per matching message, on the worker pool. `*` is exactly
    // one level: every region's new orders.
    let billing = bus.subscribe("orders.*.created", |m: &Message<Order>| {
        let order = m.payload();
        println!(
            "billing: order {} in {} for {} cents",
            order.id,
            m.topic(),
            order.total_cents
        );
    })?;

    // A handler that can fail: errors are counted (and reported to a
    // confirmed publisher), never lost.
    let fraud = bus.subscribe("orders.#", |m: &Message<Order>| {
        if m.payload().total_cents > 1_000_000 {
            Err(format!("order {} needs review", m.payload().id))
        } else {
            Ok(())
        }
    })?;

    // A pull receiver for everything that failed anywhere: `#` is zero or
    // more levels, at any position.
    let failures = bus.receiver_with(SubscribeOptions::new().pattern("#.failed").capacity(64))?;

    bus.publish(
        "orders.eu.created",
        Order {
            id: 1,
            total_cents: 4_200,
        },
    )?;
    bus.publish(
        "orders.us.created",
        Order {
            id: 2,
            total_cents: 2_000_000,
        },
    )?;
    bus.publish(
        "payments.card.failed",
        Order {
            id: 2,
            total_cents: 2_000_000,
        },
    )?;
    let receipt = bus.publish(
        "orders.eu.shipped",
        Order {
            id: 1,
            total_cents: 4_200,
        },
    )?;
    println!(
        "orders.eu.shipped reached {} subscription(s)",
        receipt.matched
    );

    let failed = failures.recv_timeout(Duration::from_secs(5))?;
    println!(
        "receiver: {} (order {})",
        failed.topic(),
        failed.payload().id
    );

    // Drain, stop the workers, and see what happened.
    let report = bus.shutdown(Duration::from_secs(5))?;
    println!("shutdown: {report:?}");
    let (b, f) = (billing.stats(), fraud.stats());
    println!(
        "billing handled {}, fraud handled {} / failed {}",
        b.handled, f.handled, f.failed
    );
    assert_eq!((b.handled, f.handled, f.failed), (2, 2, 1));
    Ok(())
}

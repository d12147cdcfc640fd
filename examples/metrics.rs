//! Observability in one screen: a small workload (a healthy subscriber, a
//! slow one, a failing one with retries and a breaker), then the metrics
//! snapshot, its Prometheus text (with the `prometheus` feature) and the
//! bus's health.
//!
//! ```sh
//! cargo run --example metrics --features prometheus
//! ```

use std::error::Error;
use std::time::Duration;

use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, HealthThresholds, Message, RetryPolicy, SubscribeOptions,
    WhenOpen,
};

fn main() -> Result<(), Box<dyn Error>> {
    let bus = Bus::<u64>::builder()
        .workers(2)
        .latency_sampling(1) // a demo: every handler run; 64 is the default
        .dead_letters(1_000)
        .build()?;

    let _audit = bus.subscribe("orders.#", |_m: &Message<u64>| ())?;
    let _slow = bus.subscribe_with(
        SubscribeOptions::new().pattern("orders.eu.*").capacity(64),
        |_m: &Message<u64>| {
            // Work that takes a while (busy, to keep the example honest
            // about CPU time rather than sleeping).
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            }
        },
    )?;
    let _flaky = bus.subscribe_with(
        SubscribeOptions::new()
            .pattern("orders.*.created")
            .retry(RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(10)))
            .circuit_breaker(
                CircuitBreaker::new()
                    .window(BreakerWindow::Calls(20))
                    .min_calls(10)
                    .failure_rate(0.5)
                    .open_for(Duration::from_secs(30), 0.2)
                    .when_open(WhenOpen::DeadLetter),
            ),
        |m: &Message<u64>| {
            if m.payload().is_multiple_of(3) {
                Err("payment service unavailable")
            } else {
                Ok(())
            }
        },
    )?;

    for i in 0..2_000u64 {
        let topic = ["orders.eu.created", "orders.us.created", "orders.eu.paid"][i as usize % 3];
        bus.publish(topic, i)?;
    }

    // While it runs: how are we doing?
    let health = bus.health_with(&HealthThresholds::default().mailbox_fill(0.5));
    println!("health while running: {}", health.status);
    for issue in &health.issues {
        println!("  {issue}");
    }

    bus.shutdown(Duration::from_secs(30))?;
    let m = bus.metrics();
    let t = &m.stats.total;
    println!(
        "\npublished {}, delivered {}",
        m.stats.published, t.delivered
    );
    println!(
        "handled {}, retried {}, dead-lettered {}, dropped {}",
        t.handled,
        t.retried,
        t.dead_lettered.total(),
        t.dropped.total()
    );
    println!("workers: {:?}", m.workers);
    for (name, l) in [
        ("queue wait", &m.queue_wait),
        ("handler", &m.handler),
        ("end to end", &m.end_to_end),
    ] {
        println!(
            "{name:>10}: n={} p50={:?} p99={:?} p999={:?} max={:?}",
            l.count(),
            l.p50(),
            l.p99(),
            l.p999(),
            l.max()
        );
    }
    assert_eq!(t.delivered, t.settled(), "every delivery accounted for");

    #[cfg(feature = "prometheus")]
    {
        let text = m.to_prometheus();
        println!(
            "\nPrometheus exposition ({} lines), the bus-wide part:",
            text.lines().count()
        );
        for line in text.lines().filter(|l| {
            l.starts_with("topicbus_published")
                || l.starts_with("topicbus_messages_total")
                || l.starts_with("topicbus_handler_seconds_count")
        }) {
            println!("  {line}");
        }
    }

    println!("\nhealth after shutdown: {}", bus.health().status);
    Ok(())
}

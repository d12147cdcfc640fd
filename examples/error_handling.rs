//! Retries, a circuit breaker, dead letters and replay, against a flaky
//! downstream service.
//!
//! A payment service fails some calls (a transient error it recovers from)
//! and refuses some payments for good (a permanent error). The subscription
//! retries transient failures with exponential backoff and full jitter, a
//! circuit breaker stops hammering the service while it is down, and what
//! cannot be handled lands in the dead letters, where we look at it and
//! replay it once the service is back.
//!
//! Run: `cargo run --example error_handling`

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, DeadLetterQuery, DeadLetterReason, Message, Permanent,
    RetryPolicy, SubscribeOptions, WhenOpen,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<u32>::builder()
        .workers(2)
        .dead_letters(1_000)
        .on_retry(|m, _sub, attempt, delay| {
            println!(
                "  retry: payment {} attempt {attempt} in {delay:?}",
                m.payload()
            );
        })
        .on_circuit_change(|_sub, from, to| {
            println!("  breaker: {} -> {}", from.as_str(), to.as_str());
        })
        .build()?;

    // The downstream service: up or down, and it refuses payment 13.
    let up = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let (svc_up, svc_calls) = (Arc::clone(&up), Arc::clone(&calls));
    let payments = bus.subscribe_with(
        SubscribeOptions::new()
            .pattern("payments.charge")
            .retry(RetryPolicy::new(3).backoff(Duration::from_millis(5), Duration::from_millis(50)))
            .circuit_breaker(
                CircuitBreaker::new()
                    .window(BreakerWindow::Calls(10))
                    .min_calls(5)
                    .failure_rate(0.5)
                    .open_for(Duration::from_millis(100), 0.2)
                    .when_open(WhenOpen::DeadLetter),
            ),
        move |m: &Message<u32>| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            svc_calls.fetch_add(1, Ordering::Relaxed);
            if *m.payload() == 13 {
                return Err(Permanent::new("card declined").into());
            }
            if svc_up.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("payment gateway unavailable".into())
            }
        },
    )?;

    println!("service up: 10 payments (one declined)");
    for p in 10..20 {
        bus.publish_confirmed("payments.charge", p, Duration::from_secs(10))?;
    }

    println!("service down: 10 payments");
    up.store(false, Ordering::SeqCst);
    for p in 20..30 {
        bus.publish_confirmed("payments.charge", p, Duration::from_secs(10))?;
    }

    let dlq = bus.dead_letters().ok_or("dead letters are configured")?;
    println!("\ndead letters: {}", dlq.len());
    for reason in [
        DeadLetterReason::Permanent,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::CircuitOpen,
    ] {
        let n = dlq.query(&DeadLetterQuery::new().reason(reason)).len();
        println!("  {:<18} {n}", reason.as_str());
    }

    println!("\nservice back: replay what was not declined");
    up.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(150)); // let the breaker's open wait pass
    let retryable: Vec<_> = dlq
        .all()
        .into_iter()
        .filter(|l| l.reason != DeadLetterReason::Permanent)
        .collect();
    for letter in &retryable {
        dlq.replay(letter.id)?;
    }
    bus.shutdown(Duration::from_secs(10))?;

    let s = payments.stats();
    println!(
        "\nhandled {} | dead-lettered {} | retried {} | service calls {}",
        s.handled,
        s.dead_lettered.total(),
        s.retried,
        calls.load(Ordering::Relaxed)
    );
    println!(
        "left in the dead letters: {} (the declined card)",
        dlq.len()
    );
    assert_eq!(s.delivered, s.settled(), "every delivery accounted for");
    assert_eq!(dlq.len(), 1);
    Ok(())
}

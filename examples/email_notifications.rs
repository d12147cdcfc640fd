//! Email notifications through a flaky SMTP server: retries, greylisting,
//! permanent refusals, an outage, expiring password resets, duplicates
//! from upstream, dead letters and their replay.
//!
//! Events arrive on `notify.email.<kind>` (welcome, receipt, reset). One
//! subscription sends them with four handlers at a time. The fake SMTP
//! server behaves as real ones do: it greylists some senders (the first
//! try fails with `421`, a later one succeeds), refuses unknown domains for
//! good (`550`), and goes down for a while. Transient failures are retried
//! with exponential backoff and jitter; permanent ones go straight to the
//! dead letters; a password reset that could not be sent within its TTL is
//! not sent late; an upstream that publishes the same event twice sends
//! one email.
//!
//! Run: `cargo run --example email_notifications`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use topicbus::{
    Bus, DeadLetterQuery, DeadLetterReason, Dedup, Message, Permanent, RetryPolicy,
    SubscribeOptions, Topic,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fake SMTP server: who it greylisted, what it delivered, whether it is up.
#[derive(Default)]
struct Smtp {
    up: AtomicBool,
    tried: Mutex<HashMap<String, u32>>,
    delivered: Mutex<Vec<String>>,
}

impl Smtp {
    fn send(&self, to: &str, body: &str) -> Result<(), BoxError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err("421 service not available".into());
        }
        if to.ends_with("@invalid.example") {
            return Err(Permanent::new(format!("550 no such domain: {to}")).into());
        }
        let tries = {
            let mut tried = self.tried.lock().map_err(|_| "smtp state poisoned")?;
            let n = tried.entry(to.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        if to.starts_with("grey") && tries == 1 {
            return Err("421 greylisted, try again later".into());
        }
        self.delivered
            .lock()
            .map_err(|_| "smtp state poisoned")?
            .push(format!("{to}: {body}"));
        Ok(())
    }
}

fn email(kind: &str, to: &str) -> Result<topicbus::MessageBuilder<String>, BoxError> {
    Ok(Message::builder(
        Topic::parse(&format!("notify.email.{kind}"))?,
        to.to_owned(),
    ))
}

fn main() -> Result<(), BoxError> {
    let bus = Bus::<String>::builder()
        .workers(2)
        .dead_letters(1_000)
        .build()?;
    let smtp = Arc::new(Smtp::default());
    smtp.up.store(true, Ordering::SeqCst);

    let server = Arc::clone(&smtp);
    let sender = bus.subscribe_with(
        SubscribeOptions::new()
            .pattern("notify.email.*")
            .concurrency(4)
            .retry(RetryPolicy::new(4).backoff(Duration::from_millis(2), Duration::from_millis(20)))
            // Upstream delivers at least once: the same event id twice
            // sends one email.
            .dedup(Dedup::new(Duration::from_secs(60), 10_000))
            // A reset that expired is useless: keep it for the report.
            .dead_letter_expired(true),
        move |m: &Message<String>| -> Result<(), BoxError> {
            // The kind of email is the topic's last level.
            let kind = m.topic().levels().next_back().unwrap_or("email");
            server.send(m.payload(), kind)
        },
    )?;

    println!("1. a normal morning: welcomes and receipts, some senders greylisted");
    for to in [
        "ada@example.com",
        "grey.grace@example.com",
        "linus@example.com",
        "grey.barbara@example.com",
    ] {
        let m = email("welcome", to)?.build();
        let (id, at) = (m.id(), m.timestamp());
        bus.publish_message(m)?;
        // The upstream retried its own send: the same event (same id) again.
        bus.publish_message(email("welcome", to)?.restore(id, at, 1))?;
    }
    // Greylisted senders are retried a few milliseconds later: wait until
    // all four are out before the outage below.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sender.stats().handled < 4 {
        if std::time::Instant::now() > deadline {
            return Err(format!("the welcomes were not sent: {:?}", sender.stats()).into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = bus.publish_confirmed(
        "notify.email.receipt",
        "nobody@invalid.example".to_owned(),
        Duration::from_secs(10),
    )?;
    println!(
        "   the receipt to an unknown domain: {:?}",
        c.deliveries[0].outcome
    );

    println!("2. the SMTP server goes down; three receipts and an urgent reset");
    smtp.up.store(false, Ordering::SeqCst);
    for to in ["ada@example.com", "linus@example.com", "edsger@example.com"] {
        bus.publish_confirmed(
            "notify.email.receipt",
            to.to_owned(),
            Duration::from_secs(10),
        )?;
    }
    // Valid for 1 ms only: by the time the server is back it is too late.
    let reset = email("reset", "ada@example.com")?
        .ttl(Duration::from_millis(1))
        .build();
    std::thread::sleep(Duration::from_millis(5)); // the reset is past its TTL
    bus.publish_message(reset)?;

    let dlq = bus.dead_letters().ok_or("dead letters are kept")?;
    println!("\n   dead letters: {}", dlq.len());
    for reason in [
        DeadLetterReason::Permanent,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Expired,
    ] {
        for l in dlq.query(&DeadLetterQuery::new().reason(reason)) {
            println!(
                "   {:<17} {} to {} ({})",
                reason.as_str(),
                l.message.topic(),
                l.message.payload(),
                l.error.as_ref().map_or("no error", |e| e.message.as_str())
            );
        }
    }

    println!("\n3. the server is back: replay what ran out of retries");
    smtp.up.store(true, Ordering::SeqCst);
    let summary =
        dlq.replay_where(&DeadLetterQuery::new().reason(DeadLetterReason::RetriesExhausted));
    println!("   replayed {summary:?}");
    bus.shutdown(Duration::from_secs(10))?;

    let delivered = smtp.delivered.lock().map_err(|_| "smtp state poisoned")?;
    println!("\ndelivered {} emails:", delivered.len());
    for line in delivered.iter() {
        println!("   {line}");
    }
    let s = sender.stats();
    println!(
        "sender: handled {}, retried {}, duplicates dropped {}, dead-lettered {}, expired {}",
        s.handled,
        s.retried,
        s.duplicates,
        s.dead_lettered.total(),
        s.expired
    );
    // Four welcomes once each (not eight), three receipts after the replay;
    // the unknown domain and the stale reset stay in the dead letters.
    assert_eq!(delivered.len(), 7);
    assert_eq!(s.duplicates, 4);
    assert_eq!(dlq.len(), 2);
    assert_eq!(s.delivered, s.settled(), "every delivery accounted for");
    Ok(())
}

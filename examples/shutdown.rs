//! Graceful shutdown: publishers racing the shutdown get a typed `Closed`
//! error, queued work drains, and the report plus the counters account for
//! every message.
//!
//! `cargo run --example shutdown`

use std::sync::{Arc, Barrier};
use std::time::Duration;

use topicbus::{Bus, Message, PublishError, Topic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<u64>::builder().workers(2).build()?;
    let audit = bus.subscribe("events.#", |m: &Message<u64>| {
        std::hint::black_box(m.payload());
    })?;

    let start = Arc::new(Barrier::new(3));
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (bus, start) = (bus.clone(), Arc::clone(&start));
            std::thread::spawn(move || -> Result<u64, PublishError> {
                let topic = Topic::parse("events.user.login")?;
                start.wait();
                let mut sent = 0;
                loop {
                    match bus.publish(&topic, p) {
                        Ok(_) => sent += 1,
                        // Shutdown began: nothing was published; stop.
                        Err(PublishError::Closed) => return Ok(sent),
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();

    start.wait();
    // Let the publishers get going, then shut down under load.
    while bus.stats().published < 100_000 {
        std::thread::yield_now();
    }
    let report = bus.shutdown(Duration::from_secs(10))?;
    let mut sent = 0;
    for p in publishers {
        sent += p.join().expect("publisher thread")?;
    }

    let s = audit.stats();
    println!("published {sent}; {report:?}");
    println!(
        "audit: delivered {}, handled {}, dropped {:?}",
        s.delivered, s.handled, s.dropped
    );
    // Nothing silently lost: every accepted message has exactly one outcome.
    assert_eq!(s.delivered, sent);
    assert_eq!(s.delivered, s.settled());
    assert!(matches!(
        bus.publish("events.late", 0),
        Err(PublishError::Closed)
    ));
    Ok(())
}

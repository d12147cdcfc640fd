//! A worker queue: a queue group splits jobs between members, priorities
//! jump the line, and a bounded mailbox pushes back on a fast producer.
//!
//! `cargo run --example worker_queue`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use topicbus::{
    Bus, GroupStrategy, Message, OverflowPolicy, Priority, PublishError, SubscribeOptions, Topic,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<u64>::builder().workers(2).build()?;
    let work_done = Arc::new(AtomicU64::new(0));

    // Three members of one queue group: each job goes to exactly one of
    // them, in turns (`GroupStrategy::LeastLoaded` picks the shortest queue
    // instead).
    let workers: Vec<_> = (0..3)
        .map(|n| {
            let done = Arc::clone(&work_done);
            bus.subscribe_with(
                SubscribeOptions::new()
                    .pattern("jobs.resize.*")
                    .queue_group("resizers", GroupStrategy::RoundRobin)
                    // Backpressure: at most 128 queued jobs per lane; a
                    // producer that outruns the workers waits up to 2 s.
                    .capacity(128)
                    .overflow(OverflowPolicy::Block {
                        timeout: Duration::from_secs(2),
                    }),
                move |m: &Message<u64>| {
                    if m.priority() == Priority::High {
                        println!("worker {n}: urgent job {}", m.payload());
                    }
                    done.fetch_add(*m.payload(), Ordering::Relaxed);
                },
            )
        })
        .collect::<Result<_, _>>()?;

    let topic = Topic::parse("jobs.resize.thumbnail")?;
    let mut expected = 0;
    for job in 1..=10_000u64 {
        let priority = if job % 2_500 == 0 {
            Priority::High
        } else {
            Priority::Normal
        };
        match bus.publish_message(Message::builder(topic.clone(), job).priority(priority)) {
            Ok(_) => expected += job,
            // Only when a worker stalls for the whole timeout.
            Err(PublishError::Rejected { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let report = bus.shutdown(Duration::from_secs(10))?;
    for (n, w) in workers.iter().enumerate() {
        let s = w.stats();
        println!(
            "worker {n}: handled {:>5}, dropped {}",
            s.handled,
            s.dropped.total()
        );
    }
    let handled: u64 = workers.iter().map(|w| w.stats().handled).sum();
    let dropped: u64 = workers.iter().map(|w| w.stats().dropped.total()).sum();
    println!("{handled} handled + {dropped} dropped of 10000; {report:?}");
    assert_eq!(handled + dropped, 10_000, "each job to exactly one worker");
    if dropped == 0 {
        assert_eq!(work_done.load(Ordering::Relaxed), expected);
    }
    Ok(())
}

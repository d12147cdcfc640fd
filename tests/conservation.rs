//! The conservation stress test (DESIGN invariant 7): several publishers,
//! many subscriptions with random overflow policies and small mailboxes,
//! handlers that randomly fail, panic or stall, pause/resume and
//! unsubscribe churn, then a shutdown in the middle of it all. Afterwards,
//! for every subscription, every delivery has exactly one terminal outcome,
//! and the publishers' receipts agree with the subscriptions' counters.
//!
//! In its own test binary: it installs a panic hook that silences the
//! handlers' deliberate panics.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use topicbus::{Bus, Message, OverflowPolicy, PublishError, SubscribeOptions, Subscription, Topic};

const PUBLISHERS: u64 = 3;
const PER_PUBLISHER: u64 = 40_000;

struct Deliberate;

fn policy(rng: &mut SmallRng) -> OverflowPolicy {
    match rng.gen_range(0..4) {
        0 => OverflowPolicy::Block {
            timeout: Duration::from_micros(rng.gen_range(0..200)),
        },
        1 => OverflowPolicy::DropNewest,
        2 => OverflowPolicy::DropOldest,
        _ => OverflowPolicy::Reject,
    }
}

fn subscribe(bus: &Bus<u64>, rng: &mut SmallRng, n: usize) -> Subscription {
    let pattern = ["s.#", "s.*.x", "s.a.*", "#.x", "s.b.x"][n % 5];
    let seed: u64 = rng.gen();
    let opts = SubscribeOptions::new()
        .pattern(pattern)
        .capacity(rng.gen_range(1..64))
        .overflow(policy(rng))
        .concurrency(if n % 7 == 0 { 2 } else { 1 })
        .batch(rng.gen_range(1..32));
    let opts = if n % 11 == 0 {
        opts.queue_group(format!("g{}", n % 2), topicbus::GroupStrategy::RoundRobin)
    } else {
        opts
    };
    bus.subscribe_with(opts, move |m: &Message<u64>| {
        let x = (m.payload() ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
        match x {
            0..=9 => std::panic::panic_any(Deliberate),
            10..=40 => Err("transient failure"),
            41..=44 => {
                // A stall: busy for a while without sleeping.
                for _ in 0..2_000 {
                    std::hint::spin_loop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    })
    .expect("subscribe")
}

#[test]
fn every_delivery_settles_exactly_once_under_chaos() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<Deliberate>().is_none() {
            default_hook(info);
        }
    }));

    let bus = Bus::<u64>::builder().workers(3).build().expect("bus");
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut subs: Vec<Subscription> = (0..24).map(|n| subscribe(&bus, &mut rng, n)).collect();
    let receivers: Vec<_> = (0..3)
        .map(|i| {
            bus.receiver_with(
                SubscribeOptions::new()
                    .pattern("s.#")
                    .capacity(16)
                    .overflow(OverflowPolicy::DropOldest),
            )
            .map(|r| (i, r))
            .expect("receiver")
        })
        .collect();

    let start = Arc::new(Barrier::new(PUBLISHERS as usize + 1));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (bus, start) = (bus.clone(), start.clone());
            std::thread::spawn(move || {
                let topics: Vec<Topic> = ["s.a.x", "s.b.x", "s.a.y", "t.x"]
                    .iter()
                    .map(|t| Topic::parse(t).expect("topic"))
                    .collect();
                // (messages published, summed `matched`)
                let mut sum = (0u64, 0u64);
                start.wait();
                for i in 0..PER_PUBLISHER {
                    let topic = &topics[(i % 4) as usize];
                    let r = match bus.publish(topic, p << 32 | i) {
                        Ok(r) | Err(PublishError::Rejected { receipt: r }) => r,
                        Err(PublishError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    };
                    assert_eq!(r.matched, r.enqueued + r.dropped + r.rejected);
                    sum.0 += 1;
                    sum.1 += u64::from(r.matched);
                }
                sum
            })
        })
        .collect();

    // Chaos alongside: pause/resume, unsubscribe and resubscribe, pull
    // receivers taking some messages.
    start.wait();
    let mut gone = Vec::new();
    let mut round = 0;
    // Until half of everything is published, then shut down mid-stream.
    while bus.stats().published < PUBLISHERS * PER_PUBLISHER / 2 {
        round += 1;
        let i = rng.gen_range(0..subs.len());
        match rng.gen_range(0..4) {
            0 => subs[i].pause(),
            1 => subs[i].resume(),
            2 if round % 5 == 0 => {
                let s = subs.swap_remove(i);
                gone.push(s.stats().id);
                // Stats survive the handle: read them through the bus totals.
                s.unsubscribe();
                subs.push(subscribe(&bus, &mut rng, round));
            }
            _ => {
                for (_, r) in &receivers {
                    let _ = r.try_iter().take(50).count();
                }
            }
        }
        std::thread::yield_now();
    }
    assert!(round > 10, "chaos ran alongside ({round} rounds)");
    // Shutdown in the middle of publishing (publishers stop on Closed).
    let report = bus.shutdown(Duration::from_secs(30)).expect("shutdown");
    let (mut published, mut matched) = (0u64, 0u64);
    for h in publishers {
        let s = h.join().expect("publisher");
        published += s.0;
        matched += s.1;
    }
    assert!(!report.timed_out, "{report:?}");

    let stats = bus.stats();
    assert_eq!(stats.published, published);
    // Receipts and subscription counters tell the same story.
    assert_eq!(stats.total.delivered, matched, "{:?}", stats.total);
    // Every subscription (live ones here, unsubscribed ones in the totals)
    // settled everything once the receivers are emptied.
    let mut in_receivers = 0;
    for (_, r) in &receivers {
        in_receivers += r.stats().queued.iter().sum::<usize>() as u64;
    }
    for s in &stats.subscriptions {
        let queued: u64 = s.queued.iter().sum::<usize>() as u64;
        assert_eq!(s.delivered, s.settled() + queued, "{s:?}");
    }
    assert_eq!(stats.total.delivered, stats.total.settled() + in_receivers);
    assert_eq!(in_receivers, report.left_in_receivers);
    for (_, r) in receivers {
        let left = r.try_iter().count() as u64;
        let st = r.stats();
        assert_eq!(st.delivered, st.settled(), "{st:?} after taking {left}");
    }
    let t = stats.total;
    assert!(
        published < PUBLISHERS * PER_PUBLISHER,
        "shutdown came mid-stream"
    );
    assert!(t.handled > 0 && t.failed > 0 && t.panicked > 0, "{t:?}");
    assert!(
        t.dropped.total() > 0 && t.dropped.unsubscribed + t.dropped.shutdown > 0
            || t.dropped.total() > 0,
        "{t:?}"
    );
    assert!(!gone.is_empty());
    assert_eq!(stats.worker_panics, 0);
}

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
mod common;
use common::{silence_deliberate_panics, Deliberate};
use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, DeadLetterQuery, Dedup, Message, OverflowPolicy,
    PublishError, Receipt, RetryOrder, RetryPolicy, SubscribeOptions, Subscription, Topic,
    WhenOpen,
};

const PUBLISHERS: u64 = 3;
const PER_PUBLISHER: u64 = 40_000;

/// Starts [`PUBLISHERS`] threads; once past the returned barrier, publisher
/// `p` publishes `per` messages (message `i` carries `p << 32 | i`) to four
/// topics in turn through `publish`, stopping when the bus closes. Each
/// returns (messages published, summed `matched`), having checked that
/// every receipt adds up.
fn spawn_publishers(
    bus: &Bus<u64>,
    per: u64,
    publish: fn(&Bus<u64>, Topic, u64, u64) -> Result<Receipt, PublishError>,
) -> (Arc<Barrier>, Vec<std::thread::JoinHandle<(u64, u64)>>) {
    let start = Arc::new(Barrier::new(PUBLISHERS as usize + 1));
    let publishers = (0..PUBLISHERS)
        .map(|p| {
            let (bus, start) = (bus.clone(), start.clone());
            std::thread::spawn(move || {
                let topics: Vec<Topic> = ["s.a.x", "s.b.x", "s.a.y", "t.x"]
                    .iter()
                    .map(|t| Topic::parse(t).expect("topic"))
                    .collect();
                let mut sum = (0u64, 0u64);
                start.wait();
                for i in 0..per {
                    let topic = topics[(i % 4) as usize].clone();
                    let r = match publish(&bus, topic, i, p << 32 | i) {
                        Ok(r) | Err(PublishError::Rejected { receipt: r }) => r,
                        Err(PublishError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    };
                    assert_eq!(r.matched, r.enqueued + r.dropped + r.rejected + r.expired);
                    sum.0 += 1;
                    sum.1 += u64::from(r.matched);
                }
                sum
            })
        })
        .collect();
    (start, publishers)
}

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
        .concurrency(if n.is_multiple_of(7) { 2 } else { 1 })
        .batch(rng.gen_range(1..32));
    let opts = if n.is_multiple_of(11) {
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
    silence_deliberate_panics();

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

    let (start, publishers) = spawn_publishers(&bus, PER_PUBLISHER, |bus, topic, _i, payload| {
        bus.publish(topic, payload)
    });

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

/// Reliability options at random: retries (reordering or strict), circuit
/// breakers with every open policy, deduplication, dead letters for
/// expired and overflowing messages.
fn subscribe_reliable(bus: &Bus<u64>, rng: &mut SmallRng, n: usize) -> Subscription {
    let mut opts = SubscribeOptions::new()
        .pattern(["s.#", "s.*.x", "s.a.*", "#.x"][n % 4])
        .capacity(rng.gen_range(1..64))
        .overflow(policy(rng))
        .dead_letter_expired(rng.gen_bool(0.5))
        .dead_letter_overflow(rng.gen_bool(0.5));
    if rng.gen_bool(0.7) {
        let order = if rng.gen_bool(0.3) {
            RetryOrder::Strict
        } else {
            RetryOrder::Reorder
        };
        opts = opts.retry(
            RetryPolicy::new(rng.gen_range(2..4))
                .backoff(
                    Duration::from_micros(rng.gen_range(0..500)),
                    Duration::from_millis(2),
                )
                .retry_panics(rng.gen_bool(0.5))
                .order(order),
        );
    }
    if rng.gen_bool(0.5) {
        let when_open = [WhenOpen::Hold, WhenOpen::DeadLetter, WhenOpen::Drop][rng.gen_range(0..3)];
        opts = opts.circuit_breaker(
            CircuitBreaker::new()
                .window(BreakerWindow::Calls(rng.gen_range(4..20)))
                .min_calls(4)
                .failure_rate(0.3)
                .open_for(Duration::from_micros(rng.gen_range(100..2_000)), 0.5)
                .trials(rng.gen_range(1..3))
                .when_open(when_open),
        );
    }
    if n.is_multiple_of(5) {
        opts = opts.dedup(Dedup::new(Duration::from_millis(50), 256));
    }
    let seed: u64 = rng.gen();
    bus.subscribe_with(opts, move |m: &Message<u64>| {
        // Failures depend on the attempt too, so retries sometimes succeed.
        let x =
            (m.payload() ^ seed ^ u64::from(m.attempt())).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
        match x {
            0..=9 => std::panic::panic_any(Deliberate),
            10..=60 => Err("transient failure"),
            _ => Ok(()),
        }
    })
    .expect("subscribe")
}

#[test]
fn every_delivery_and_every_dead_letter_is_accounted_for_with_reliability_on() {
    silence_deliberate_panics();
    const PER: u64 = 15_000;
    let bus = Bus::<u64>::builder()
        .workers(3)
        .dead_letters(2_000)
        .build()
        .expect("bus");
    let mut rng = SmallRng::seed_from_u64(0xdead_1e77e5);
    let mut subs: Vec<Subscription> = (0..16)
        .map(|n| subscribe_reliable(&bus, &mut rng, n))
        .collect();
    let (start, publishers) = spawn_publishers(&bus, PER, |bus, topic, i, payload| {
        let mut b = Message::builder(topic, payload);
        match i % 10 {
            // Short lives: some expire in the mailbox.
            0 => b = b.ttl(Duration::from_micros(200)),
            // Delayed: routed later by the timer (or given up).
            1 => b = b.delay(Duration::from_micros(300)),
            _ => {}
        }
        bus.publish_message(b)
    });

    start.wait();
    let dlq = bus.dead_letters().expect("configured");
    let mut replay_matched = 0u64;
    let mut round = 0;
    while bus.stats().published < PUBLISHERS * PER / 2 {
        round += 1;
        let i = rng.gen_range(0..subs.len());
        match rng.gen_range(0..5) {
            0 => subs[i].pause(),
            1 => subs[i].resume(),
            2 if round % 7 == 0 => {
                let s = subs.swap_remove(i);
                s.unsubscribe();
                subs.push(subscribe_reliable(&bus, &mut rng, round));
            }
            3 => {
                // Replays, some to subscriptions that are gone.
                for letter in dlq.query(&DeadLetterQuery::new().limit(20)) {
                    if let Ok(r) = dlq.replay(letter.id) {
                        replay_matched += u64::from(r.matched);
                    }
                }
            }
            _ => std::thread::yield_now(),
        }
    }
    assert!(round > 10, "chaos ran alongside ({round} rounds)");
    let report = bus.shutdown(Duration::from_secs(30)).expect("shutdown");
    let matched: u64 = publishers
        .into_iter()
        .map(|h| h.join().expect("publisher").1)
        .sum();
    assert!(!report.timed_out, "{report:?}");

    let stats = bus.stats();
    let t = stats.total;
    // Delayed messages were matched when routed, so their deliveries are
    // in the totals but not in the publishers' receipts.
    assert!(t.delivered >= matched + replay_matched, "{t:?}");
    for s in &stats.subscriptions {
        assert_eq!((s.retrying, s.held), (0, 0), "{s:?}");
        assert_eq!(s.delivered, s.settled(), "{s:?}");
    }
    assert_eq!(t.delivered, t.settled(), "{t:?}");
    // Every dead letter came from exactly one settled delivery (or a
    // delayed message given up at shutdown), and the queue's own books
    // balance.
    let d = dlq.stats();
    assert_eq!(
        d.inserted,
        t.dead_lettered.total() + stats.delayed.given_up,
        "{d:?} {t:?}"
    );
    assert_eq!(
        d.inserted,
        d.len as u64 + d.evicted + d.replayed + d.removed
    );
    let delayed = stats.delayed;
    assert_eq!(delayed.scheduled, delayed.delivered + delayed.given_up);
    assert_eq!(delayed.pending, 0);
    assert!(
        t.retried > 0 && t.expired + t.dead_lettered.expired > 0,
        "{t:?}"
    );
    assert!(t.dead_lettered.total() > 0 && d.evicted > 0, "{t:?} {d:?}");
    assert!(d.replayed > 0, "{d:?}");
    assert_eq!(stats.worker_panics, 0);
    assert_eq!(stats.hook_panics, 0);
}

//! Jepsen-style accounting under chaos (DESIGN invariant 7, issue 7).
//!
//! For a fixed time, several publishers publish unique messages (bursts and
//! calm phases, three priorities, two publish paths) while the test churns
//! subscriptions (subscribe, unsubscribe, pause, resume), handlers fail,
//! panic and stall at random, small mailboxes overflow by every policy,
//! pull receivers take a few messages now and then, and the bus is shut
//! down in the middle of it all. An `on_outcome` hook and an `on_deliver`
//! hook keep a ledger of every settlement and every handler call.
//!
//! Afterwards every published message, for every subscription it matched,
//! is sorted into **ok** (one settlement, by a subscription whose patterns
//! match its topic), **lost** (fewer settlements than the publish receipt
//! matched, or handler calls with no settlement), **duplicated** (two
//! settlements for one subscription, or more handler calls than the
//! subscription's retry policy allows) or **unexpected** (a settlement for a
//! message never published, or by a subscription that cannot match it).
//! Lost, duplicated and unexpected must be empty; the extra handler calls
//! must equal the retry counter; the ledger's outcomes must equal the bus's
//! counters.
//!
//! Seeded and reproducible up to thread scheduling: `CHAOS_SEED=<n>` replays
//! a seed, `CHAOS_SECS=<s>` runs longer (default 3 s; the long run is in
//! `perf-reports/`). The seed is printed at the start and in every failure.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
mod common;
use common::{silence_deliberate_panics, Deliberate};
use topicbus::{
    Bus, DeadLetterReason, DropReason, GroupStrategy, Message, MessageId, Outcome, OverflowPolicy,
    Pattern, Priority, PublishError, Receiver, RetryPolicy, SubscribeOptions, Subscription,
    SubscriptionId, Topic,
};

const TOPICS: [&str; 5] = ["s.a.x", "s.b.x", "s.a.y", "t.x", "s.c.x.y"];
const PATTERNS: [&str; 7] = ["s.#", "s.*.x", "s.a.*", "#.x", "s.b.x", "t.#", "#"];
const PUBLISHERS: u64 = 3;
const SHARDS: usize = 32;

type Key = (MessageId, SubscriptionId);

/// Every settlement and handler call, sharded by message to keep the hooks
/// from serialising the workers.
struct Ledger {
    outcomes: Vec<Mutex<HashMap<Key, Vec<Outcome>>>>,
    calls: Vec<Mutex<HashMap<Key, u32>>>,
    retries: Vec<Mutex<HashMap<Key, u32>>>,
}

impl Ledger {
    fn new() -> Self {
        Self {
            outcomes: (0..SHARDS).map(|_| Mutex::default()).collect(),
            calls: (0..SHARDS).map(|_| Mutex::default()).collect(),
            retries: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(id: MessageId) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        h.finish() as usize % SHARDS
    }

    fn settled(&self, m: &Message<u64>, sub: SubscriptionId, outcome: Outcome) {
        let mut shard = self.outcomes[Self::shard(m.id())].lock().unwrap();
        shard.entry((m.id(), sub)).or_default().push(outcome);
    }

    fn called(&self, m: &Message<u64>, sub: SubscriptionId) {
        let mut shard = self.calls[Self::shard(m.id())].lock().unwrap();
        *shard.entry((m.id(), sub)).or_default() += 1;
    }

    fn retry_scheduled(&self, m: &Message<u64>, sub: SubscriptionId) {
        let mut shard = self.retries[Self::shard(m.id())].lock().unwrap();
        *shard.entry((m.id(), sub)).or_default() += 1;
    }
}

/// What the test knows of each subscription it made.
#[derive(Clone)]
struct SubInfo {
    patterns: Vec<Pattern>,
    /// Handler calls allowed per message (the retry policy's attempts).
    max_calls: u32,
}

/// What a publisher saw of one publish.
struct Published {
    id: MessageId,
    topic: Topic,
    matched: u32,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

enum Handle {
    Push(Subscription),
    Pull(Receiver<u64>),
}

/// Subscribes at random; returns the handle and what to check it against.
fn subscribe(bus: &Bus<u64>, rng: &mut SmallRng, n: usize) -> (Handle, SubscriptionId, SubInfo) {
    let pattern = PATTERNS[rng.gen_range(0..PATTERNS.len())];
    let overflow = match rng.gen_range(0..4) {
        0 => OverflowPolicy::Block {
            timeout: Duration::from_micros(rng.gen_range(0..300)),
        },
        1 => OverflowPolicy::DropNewest,
        2 => OverflowPolicy::DropOldest,
        _ => OverflowPolicy::Reject,
    };
    let mut opts = SubscribeOptions::new()
        .pattern(pattern)
        .capacity(rng.gen_range(1..48))
        .overflow(overflow)
        .dead_letter_overflow(rng.gen_bool(0.3));
    let info = |max_calls| SubInfo {
        patterns: vec![Pattern::parse(pattern).expect("pattern")],
        max_calls,
    };
    if n % 9 == 4 {
        let rx = bus.receiver_with(opts).expect("receiver");
        let id = rx.id();
        return (Handle::Pull(rx), id, info(0));
    }
    let inline = n % 9 == 7;
    let mut max_calls = 1;
    if inline {
        opts = opts.inline(true);
    } else {
        opts = opts
            .concurrency(if n.is_multiple_of(5) { 2 } else { 1 })
            .batch(rng.gen_range(1..16));
        if rng.gen_bool(0.4) {
            max_calls = rng.gen_range(2..4);
            opts = opts.retry(
                RetryPolicy::new(max_calls)
                    .backoff(
                        Duration::from_micros(rng.gen_range(0..300)),
                        Duration::from_millis(1),
                    )
                    .retry_panics(rng.gen_bool(0.5)),
            );
        }
        if n % 6 == 1 {
            // Two groups (members of one group share its strategy).
            let (group, strategy) = if rng.gen_bool(0.5) {
                ("round-robin", GroupStrategy::RoundRobin)
            } else {
                ("least-loaded", GroupStrategy::LeastLoaded)
            };
            // Group members share the pattern so any member may be chosen.
            opts = SubscribeOptions::new()
                .pattern("s.#")
                .capacity(rng.gen_range(1..48))
                .overflow(OverflowPolicy::DropNewest)
                .queue_group(group, strategy);
            max_calls = 1;
            let sub = bus
                .subscribe_with(opts, handler(rng.gen()))
                .expect("subscribe");
            let id = sub.id();
            let info = SubInfo {
                patterns: vec![Pattern::parse("s.#").expect("pattern")],
                max_calls,
            };
            return (Handle::Push(sub), id, info);
        }
    }
    let sub = bus
        .subscribe_with(opts, handler(rng.gen()))
        .expect("subscribe");
    let id = sub.id();
    (Handle::Push(sub), id, info(max_calls))
}

/// A handler that panics, fails, stalls or succeeds, decided by the
/// message, the attempt and the subscription's seed.
fn handler(seed: u64) -> impl Fn(&Message<u64>) -> Result<(), &'static str> + Send + Sync {
    move |m| {
        let x =
            (m.payload() ^ seed ^ u64::from(m.attempt())).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
        match x {
            0..=7 => std::panic::panic_any(Deliberate),
            8..=40 => Err("transient failure"),
            41..=46 => {
                for _ in 0..3_000 {
                    std::hint::spin_loop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Publisher `p`: unique payloads, bursts (no pause) and calm phases
/// (yield after each), three priorities, both publish paths; until the bus
/// closes or `stop`.
fn publisher(
    bus: Bus<u64>,
    p: u64,
    seed: u64,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> Vec<Published> {
    let mut rng = SmallRng::seed_from_u64(seed ^ p);
    let topics: Vec<Topic> = TOPICS
        .iter()
        .map(|t| Topic::parse(t).expect("topic"))
        .collect();
    let mut out = Vec::new();
    start.wait();
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let topic = topics[rng.gen_range(0..topics.len())].clone();
        let payload = p << 40 | i;
        let result = if i % 2 == 0 {
            bus.publish(&topic, payload)
        } else {
            let priority = [Priority::High, Priority::Normal, Priority::Low][rng.gen_range(0..3)];
            let mut b = Message::builder(topic.clone(), payload).priority(priority);
            if i % 10 == 1 {
                // Short lives: some expire in a mailbox or a retry wait.
                b = b.ttl(Duration::from_micros(rng.gen_range(50..500)));
            }
            bus.publish_message(b)
        };
        let receipt = match result {
            Ok(r) | Err(PublishError::Rejected { receipt: r }) => r,
            Err(PublishError::Closed) => break,
            Err(e) => panic!("publisher {p}: {e}"),
        };
        out.push(Published {
            id: receipt.id,
            topic,
            matched: receipt.matched,
        });
        // Bursts of ~2,000, then a calm phase of ~500.
        if (i / 500) % 5 == 4 {
            std::thread::yield_now();
        }
    }
    out
}

#[derive(Default, Debug)]
struct Verdict {
    ok: u64,
    lost: Vec<String>,
    duplicated: Vec<String>,
    unexpected: Vec<String>,
}

#[test]
fn every_message_is_ok_none_lost_duplicated_or_unexpected() {
    silence_deliberate_panics();
    let seed: u64 = env_or(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64),
    );
    let secs: f64 = env_or("CHAOS_SECS", 3.0);
    eprintln!("chaos seed: {seed} (replay with CHAOS_SEED={seed}), {secs} s");
    let mut rng = SmallRng::seed_from_u64(seed);

    let ledger = Arc::new(Ledger::new());
    let (l1, l2, l3) = (
        Arc::clone(&ledger),
        Arc::clone(&ledger),
        Arc::clone(&ledger),
    );
    let bus = Bus::<u64>::builder()
        .workers(3)
        .dead_letters(1 << 20)
        .latency_sampling(1)
        .on_outcome(move |m, sub, outcome| l1.settled(m, sub, outcome))
        .on_deliver(move |m, sub| l2.called(m, sub))
        .on_retry(move |m, sub, _attempt, _delay| l3.retry_scheduled(m, sub))
        .build()
        .expect("bus");

    let mut subs: HashMap<SubscriptionId, SubInfo> = HashMap::new();
    let mut live: Vec<Handle> = Vec::new();
    for n in 0..20 {
        let (h, id, info) = subscribe(&bus, &mut rng, n);
        subs.insert(id, info);
        live.push(h);
    }

    let start = Arc::new(Barrier::new(PUBLISHERS as usize + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (bus, start, stop) = (bus.clone(), start.clone(), stop.clone());
            std::thread::spawn(move || publisher(bus, p, seed, start, stop))
        })
        .collect();
    start.wait();

    let began = Instant::now();
    let length = Duration::from_secs_f64(secs);
    let mut n = live.len();
    let mut rounds = 0u64;
    // Chaos for the first half, then shutdown while publishers still run.
    while began.elapsed() < length / 2 {
        rounds += 1;
        let i = rng.gen_range(0..live.len());
        match rng.gen_range(0..6) {
            0 => {
                if let Handle::Push(s) = &live[i] {
                    s.pause();
                }
            }
            1 | 2 => {
                if let Handle::Push(s) = &live[i] {
                    s.resume();
                }
            }
            3 if rounds.is_multiple_of(4) => {
                match live.swap_remove(i) {
                    Handle::Push(s) => s.unsubscribe(),
                    Handle::Pull(r) => drop(r),
                }
                n += 1;
                let (h, id, info) = subscribe(&bus, &mut rng, n);
                subs.insert(id, info);
                live.push(h);
            }
            _ => {
                for h in &live {
                    if let Handle::Pull(r) = h {
                        let _ = r.try_iter().take(rng.gen_range(0..40)).count();
                    }
                }
            }
        }
        std::thread::yield_now();
    }
    let report = bus.shutdown(Duration::from_secs(60)).expect("shutdown");
    stop.store(true, Ordering::Relaxed);
    let published: Vec<Published> = publishers
        .into_iter()
        .flat_map(|h| h.join().expect("publisher"))
        .collect();
    assert!(!report.timed_out, "seed {seed}: {report:?}");
    // What the receivers still hold is taken now (settled as received).
    for h in &live {
        if let Handle::Pull(r) = h {
            let _ = r.try_iter().count();
        }
    }

    // Sort every message.
    let mut outcomes: HashMap<Key, Vec<Outcome>> = HashMap::new();
    for s in &ledger.outcomes {
        outcomes.extend(s.lock().unwrap().drain());
    }
    let mut calls: HashMap<Key, u32> = HashMap::new();
    for s in &ledger.calls {
        calls.extend(s.lock().unwrap().drain());
    }
    let mut by_message: HashMap<MessageId, Vec<(SubscriptionId, &Vec<Outcome>)>> = HashMap::new();
    for ((m, s), o) in &outcomes {
        by_message.entry(*m).or_default().push((*s, o));
    }
    let mut v = Verdict::default();
    let mut seen = 0usize;
    for p in &published {
        let settled = by_message.remove(&p.id).unwrap_or_default();
        seen += 1;
        let mut fine = settled.len() as u32 == p.matched;
        if (settled.len() as u32) < p.matched {
            v.lost.push(format!(
                "{} on {}: matched {}, settled by {}",
                p.id,
                p.topic,
                p.matched,
                settled.len()
            ));
        }
        if (settled.len() as u32) > p.matched {
            v.unexpected.push(format!(
                "{} on {}: matched {}, settled by {}",
                p.id,
                p.topic,
                p.matched,
                settled.len()
            ));
        }
        for (sub, o) in settled {
            if o.len() > 1 {
                fine = false;
                v.duplicated
                    .push(format!("{} by {sub:?}: settled {o:?}", p.id));
            }
            match subs.get(&sub) {
                Some(info) if info.patterns.iter().any(|pat| pat.matches(&p.topic)) => {}
                _ => {
                    fine = false;
                    v.unexpected.push(format!(
                        "{} on {} settled by {sub:?}, which cannot match it",
                        p.id, p.topic
                    ));
                }
            }
        }
        if fine {
            v.ok += 1;
        }
    }
    for (m, settled) in by_message {
        v.unexpected
            .push(format!("{m} settled by {settled:?} but never published"));
    }
    let mut retries: HashMap<Key, u32> = HashMap::new();
    for s in &ledger.retries {
        retries.extend(s.lock().unwrap().drain());
    }
    // Handler calls: one, plus one per retry that ran. A retry scheduled
    // but not run must have been given up (shutdown or unsubscribe) or
    // expired while it waited.
    for (key @ (m, sub), n) in &calls {
        let max = subs.get(sub).map_or(0, |i| i.max_calls.max(1));
        if *n > max {
            v.duplicated
                .push(format!("{m} ran {n} times by {sub:?} (at most {max})"));
        }
        if !outcomes.contains_key(key) {
            v.lost.push(format!("{m} ran by {sub:?} but never settled"));
        }
    }
    for (key @ (m, sub), scheduled) in &retries {
        let ran = calls.get(key).map_or(0, |n| n.saturating_sub(1));
        let gave_up = outcomes.get(key).is_some_and(|o| {
            o.iter().any(|o| {
                matches!(
                    o,
                    Outcome::Expired
                        | Outcome::Dropped(DropReason::Shutdown | DropReason::Unsubscribed)
                        | Outcome::DeadLettered(
                            DeadLetterReason::Shutdown | DeadLetterReason::Expired
                        )
                )
            })
        });
        match scheduled - ran.min(*scheduled) {
            0 => {}
            1 if gave_up => {}
            missing => v.lost.push(format!(
                "{m} by {sub:?}: {scheduled} retries scheduled, {ran} ran, {missing} vanished"
            )),
        }
        if ran > *scheduled {
            v.duplicated.push(format!(
                "{m} by {sub:?}: {ran} retries ran, {scheduled} scheduled"
            ));
        }
    }
    let extra_calls: u64 = calls.values().map(|n| u64::from(n - 1)).sum();
    let scheduled: u64 = retries.values().map(|n| u64::from(*n)).sum();

    let stats = bus.stats();
    let t = stats.total;
    // Every handler call was sampled (sampling 1), on workers and inline.
    let all_calls: u64 = calls.values().map(|n| u64::from(*n)).sum();
    let metrics = bus.metrics();
    assert_eq!(metrics.handler.count(), all_calls, "seed {seed}");
    assert_eq!(metrics.stats, stats, "seed {seed}");
    let summary = format!(
        "seed {seed}: {} published, {} ok, {} lost, {} duplicated, {} unexpected; {rounds} chaos rounds; {t:?}",
        published.len(),
        v.ok,
        v.lost.len(),
        v.duplicated.len(),
        v.unexpected.len()
    );
    eprintln!("{summary}");
    let first = |l: &Vec<String>| l.iter().take(5).cloned().collect::<Vec<_>>();
    assert!(v.lost.is_empty(), "{summary}\nlost: {:?}", first(&v.lost));
    assert!(
        v.duplicated.is_empty(),
        "{summary}\nduplicated: {:?}",
        first(&v.duplicated)
    );
    assert!(
        v.unexpected.is_empty(),
        "{summary}\nunexpected: {:?}",
        first(&v.unexpected)
    );
    assert_eq!(v.ok as usize, seen, "{summary}");

    // Retries are the only source of repeated handler calls, and counted.
    assert_eq!(scheduled, t.retried, "{summary}");
    assert!(extra_calls <= scheduled, "{summary}");
    // The ledger and the counters tell the same story.
    let mut kinds = [0u64; 7];
    for o in outcomes.values().flatten() {
        let k = match o {
            Outcome::Handled => 0,
            Outcome::Received => 1,
            Outcome::Failed => 2,
            Outcome::Panicked => 3,
            Outcome::Expired => 4,
            Outcome::Dropped(_) => 5,
            Outcome::DeadLettered(_) => 6,
            _ => panic!("{summary}: an outcome this test does not know: {o:?}"),
        };
        kinds[k] += 1;
    }
    let counted = [
        t.handled,
        t.received,
        t.failed,
        t.panicked,
        t.expired,
        t.dropped.total(),
        t.dead_lettered.total(),
    ];
    assert_eq!(kinds, counted, "{summary}");
    assert_eq!(t.delivered, t.settled(), "{summary}");
    assert_eq!(stats.worker_panics, 0, "{summary}");
    assert_eq!(stats.hook_panics, 0, "{summary}");
    // The chaos really happened.
    assert!(rounds > 10 && t.handled > 0 && t.received > 0, "{summary}");
    assert!(t.dead_lettered.panicked + t.panicked > 0, "{summary}");
    assert!(
        t.dead_lettered.retries_exhausted + t.failed > 0 && t.retried > 0,
        "{summary}"
    );
    assert!(t.dropped.total() > 0, "{summary}");
}

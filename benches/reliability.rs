//! What the reliability features cost, each group with its same-run
//! baseline (BENCHMARKING.md):
//!
//! - `publish_options/{off,filter,dedup,hooks}`: publish to one inline
//!   subscriber (depth-3 topic), per publish, single thread: with no
//!   reliability option (`off`, the figure the runtime had before), and with
//!   a header filter that passes, a deduplication window by id, an
//!   `on_publish` hook.
//! - `pool_options/{off,retry_breaker}`: one publisher into one callback
//!   subscriber on one worker, saturated: without options and with a retry
//!   policy plus a circuit breaker that never trigger (the worker-side
//!   bookkeeping).
//! - `retry_round_trip/{no_retry,one_retry}`: per message, publish → the
//!   first attempt fails → the retry goes through the timer thread (zero
//!   backoff) → the second attempt succeeds; against messages that succeed
//!   at once.
//! - `dead_letters/{handled,insert}`: an inline subscriber that succeeds vs
//!   one whose every message is dead-lettered into a full 100 K queue
//!   (insert plus eviction).
//! - `dead_letter_query/*`: queries over 100 K letters: a topic pattern with
//!   a limit of 100, a full scan that selects nothing, a time range of 1 K.
//!
//! Figures: `perf-reports/reliability.md`.

#![allow(missing_docs)]

#[path = "common/counter.rs"]
mod counter;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::{inline_sink, wait_for};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use topicbus::{
    Bus, CircuitBreaker, DeadLetterQuery, Dedup, ErrorKind, ManualClock, Message, OverflowPolicy,
    Pattern, Permanent, RetryPolicy, SubscribeOptions, Topic,
};

fn topic() -> Topic {
    Topic::parse("orders.eu.created").expect("topic")
}

fn publish_options(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_options");
    g.throughput(Throughput::Elements(1));
    type Options = fn(SubscribeOptions) -> SubscribeOptions;
    let variants: [(&str, Options, bool); 4] = [
        ("off", |o| o, false),
        ("filter", |o| o.header_eq("region", "eu"), false),
        (
            "dedup",
            |o| o.dedup(Dedup::new(Duration::from_secs(1), 4096)),
            false,
        ),
        ("hooks", |o| o, true),
    ];
    for (name, options, hooks) in variants {
        let mut builder = Bus::<u64>::builder().workers(1);
        if hooks {
            builder = builder.on_publish(|m, _r| {
                black_box(m.id());
            });
        }
        let bus = builder.build().expect("bus");
        let _s = inline_sink(&bus, options);
        let t = topic();
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                if name == "filter" {
                    bus.publish_message(Message::builder(t.clone(), i).header("region", "eu"))
                        .expect("publish")
                } else {
                    bus.publish(&t, i).expect("publish")
                }
            })
        });
    }
    g.finish();
}

/// One callback subscriber on one worker; `iters` messages; time until all
/// were handled (a handler that fails the first attempt of every message
/// when `fail_first`).
fn pool_run(options: SubscribeOptions, fail_first: bool, iters: u64) -> Duration {
    let bus = Bus::<u64>::builder()
        .workers(1)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .expect("bus");
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let _s = bus
        .subscribe_with(
            options.pattern("orders.eu.created"),
            move |m: &Message<u64>| {
                if fail_first && m.attempt() == 1 {
                    return Err("first attempt fails");
                }
                black_box(m.payload());
                h.fetch_add(1, Ordering::Release);
                Ok(())
            },
        )
        .expect("subscribe");
    let t = topic();
    let start = Instant::now();
    for i in 0..iters {
        bus.publish(&t, i).expect("publish");
    }
    wait_for(&handled, iters);
    start.elapsed()
}

fn retry_breaker() -> SubscribeOptions {
    SubscribeOptions::new()
        .retry(RetryPolicy::new(3))
        .circuit_breaker(CircuitBreaker::new())
}

fn pool_options(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_options");
    g.throughput(Throughput::Elements(1));
    g.bench_function("off", |b| {
        b.iter_custom(|n| pool_run(SubscribeOptions::new(), false, n))
    });
    g.bench_function("retry_breaker", |b| {
        b.iter_custom(|n| pool_run(retry_breaker(), false, n))
    });
    g.finish();
}

fn retry_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_round_trip");
    g.throughput(Throughput::Elements(1));
    let zero = || {
        SubscribeOptions::new().retry(RetryPolicy::new(2).backoff(Duration::ZERO, Duration::ZERO))
    };
    g.bench_function("no_retry", |b| {
        b.iter_custom(|n| pool_run(zero(), false, n))
    });
    g.bench_function("one_retry", |b| {
        b.iter_custom(|n| pool_run(zero(), true, n))
    });
    g.finish();
}

fn dead_letters(c: &mut Criterion) {
    const FULL: usize = 100_000;
    let mut g = c.benchmark_group("dead_letters");
    g.throughput(Throughput::Elements(1));
    for name in ["handled", "insert"] {
        let bus = Bus::<u64>::builder()
            .workers(1)
            .dead_letters(FULL)
            .build()
            .expect("bus");
        let fail = name == "insert";
        let _s = bus
            .subscribe_with(
                SubscribeOptions::new()
                    .pattern("orders.eu.created")
                    .inline(true),
                move |m: &Message<u64>| {
                    black_box(m.payload());
                    if fail {
                        Err(Permanent::new("rejected"))
                    } else {
                        Ok(())
                    }
                },
            )
            .expect("subscribe");
        let t = topic();
        if fail {
            for i in 0..FULL as u64 {
                bus.publish(&t, i).expect("publish");
            }
        }
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                bus.publish(&t, i).expect("publish")
            })
        });
    }
    g.finish();

    // Queries over a full queue; letters one millisecond apart (manual
    // clock) on ten topics.
    let clock = ManualClock::shared();
    let bus = Bus::<u64>::builder()
        .workers(1)
        .clock(clock.clone())
        .dead_letters(FULL)
        .build()
        .expect("bus");
    let _s = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("orders.#").inline(true),
            |_m: &Message<u64>| Err(Permanent::new("rejected")),
        )
        .expect("subscribe");
    let topics: Vec<Topic> = (0..10)
        .map(|i| Topic::parse(&format!("orders.r{i}.created")).expect("topic"))
        .collect();
    for i in 0..FULL as u64 {
        bus.publish(&topics[(i % 10) as usize], i).expect("publish");
        clock.advance(Duration::from_millis(1));
    }
    let dlq = bus.dead_letters().expect("configured");
    let first = dlq.all()[0].last_failure;
    let mut g = c.benchmark_group("dead_letter_query");
    let by_topic = DeadLetterQuery::new()
        .topic(Pattern::parse("orders.r7.*").expect("pattern"))
        .limit(100);
    g.bench_function("topic_limit_100", |b| b.iter(|| dlq.query(&by_topic)));
    let nothing = DeadLetterQuery::new().error_kind(ErrorKind::Panic);
    g.bench_function("scan_100k_none", |b| b.iter(|| dlq.query(&nothing)));
    let range = DeadLetterQuery::new()
        .since(first + Duration::from_secs(50))
        .until(first + Duration::from_secs(51));
    g.bench_function("time_range_1k", |b| b.iter(|| dlq.query(&range)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = counter::config();
    targets = publish_options, pool_options, retry_round_trip, dead_letters
}
criterion_main!(benches);

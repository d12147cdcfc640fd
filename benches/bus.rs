//! Bus throughput and latency benchmarks, each group with its same-run
//! baselines (BENCHMARKING.md):
//!
//! - `pool_1to1/{topicbus,hand_rolled,raw_channel}`: one publisher thread
//!   into one callback subscriber run by one worker, saturated; time from
//!   the first publish to the last handler call.
//! - `fanout/<n>/{topicbus,hand_rolled}`: one publisher, `n` subscribers on
//!   the same topic, one worker; throughput in deliveries.
//! - `inline/{topicbus,hand_rolled}`: publish to an inline subscriber of a
//!   depth-3 topic (one match), per publish, single thread.
//! - `metrics_cost/{pool,inline}/{off,default,every_run}`: `pool_1to1` and
//!   `inline` for topicbus with latency sampling off, at the default rate,
//!   and on every handler run; `inline/default_own` adds the subscription's
//!   own histograms (`SubscribeOptions::latency`).
//! - `tracing_cost/{pool,inline}/{off,info,debug,debug_fmt}` (with
//!   `--features tracing`): the same two paths with a subscriber that takes
//!   nothing (as with none installed), takes info and above (topicbus's
//!   spans are debug: skipped by one level check), takes everything but
//!   does nothing with it (the cost of building topicbus's spans), and
//!   takes everything and formats every field (a stand-in for a logging
//!   layer, without the I/O).
//!
//! The hand-rolled bus is what a Rust user writes in an afternoon: an `Arc`
//! message sent into one bounded crossbeam channel per subscriber, a worker
//! thread `Select`ing over them; no matching, priorities or accounting.
//! Figures: `perf-reports/bus.md`.

#![allow(missing_docs)]

#[path = "common/counter.rs"]
mod counter;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::{inline_sink, wait_for};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, Receiver, Select, Sender};
use topicbus::{Bus, Message, OverflowPolicy, Topic};

const CAPACITY: usize = 1024;

/// topicbus: `subs` callback subscribers on one topic, one worker;
/// publishes `iters` messages and returns the time until all were handled.
fn topicbus_run(subs: usize, iters: u64) -> Duration {
    topicbus_sampled_run(subs, iters, topicbus::DEFAULT_LATENCY_SAMPLING)
}

/// [`topicbus_run`] with latency sampling one run in `sampling` (0: off).
fn topicbus_sampled_run(subs: usize, iters: u64, sampling: u32) -> Duration {
    let bus = Bus::<u64>::builder()
        .workers(1)
        .latency_sampling(sampling)
        .capacity(CAPACITY)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .expect("bus");
    let handled = Arc::new(AtomicU64::new(0));
    let _subs: Vec<_> = (0..subs)
        .map(|_| {
            let h = Arc::clone(&handled);
            bus.subscribe("bench.orders.created", move |m: &Message<u64>| {
                black_box(m.payload());
                h.fetch_add(1, Ordering::Release);
            })
            .expect("subscribe")
        })
        .collect();
    let topic = Topic::parse("bench.orders.created").expect("topic");
    let start = Instant::now();
    for i in 0..iters {
        bus.publish(&topic, i).expect("publish");
    }
    wait_for(&handled, iters * subs as u64);
    let elapsed = start.elapsed();
    drop(_subs);
    elapsed
}

/// The hand-rolled bus's message.
struct Msg {
    topic: Arc<str>,
    payload: u64,
}

/// The hand-rolled bus: one bounded channel per subscriber, one `Select`
/// worker.
fn hand_rolled_run(subs: usize, iters: u64) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    type Mailbox = (Sender<Arc<Msg>>, Receiver<Arc<Msg>>);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..subs).map(|_| -> Mailbox { bounded(CAPACITY) }).unzip();
    let worker = {
        let handled = Arc::clone(&handled);
        std::thread::spawn(move || {
            let mut sel = Select::new();
            for r in &receivers {
                sel.recv(r);
            }
            let mut open = receivers.len();
            while open > 0 {
                let op = sel.select();
                let i = op.index();
                match op.recv(&receivers[i]) {
                    Ok(m) => {
                        black_box((&m.topic, m.payload));
                        handled.fetch_add(1, Ordering::Release);
                    }
                    Err(_) => {
                        sel.remove(i);
                        open -= 1;
                    }
                }
            }
        })
    };
    let topic: Arc<str> = Arc::from("bench.orders.created");
    let start = Instant::now();
    for i in 0..iters {
        let m = Arc::new(Msg {
            topic: Arc::clone(&topic),
            payload: i,
        });
        for s in &senders {
            s.send(Arc::clone(&m)).expect("send");
        }
    }
    wait_for(&handled, iters * subs as u64);
    let elapsed = start.elapsed();
    drop(senders);
    worker.join().expect("worker");
    elapsed
}

/// A raw crossbeam channel handoff to one consumer thread.
fn raw_channel_run(iters: u64) -> Duration {
    let (tx, rx) = bounded::<u64>(CAPACITY);
    let consumer = std::thread::spawn(move || {
        let mut n = 0u64;
        for v in rx {
            black_box(v);
            n += 1;
        }
        n
    });
    let start = Instant::now();
    for i in 0..iters {
        tx.send(i).expect("send");
    }
    drop(tx);
    let n = consumer.join().expect("consumer");
    let elapsed = start.elapsed();
    assert_eq!(n, iters);
    elapsed
}

fn pool_1to1(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_1to1");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function("topicbus", |b| b.iter_custom(|n| topicbus_run(1, n)));
    g.bench_function("hand_rolled", |b| b.iter_custom(|n| hand_rolled_run(1, n)));
    g.bench_function("raw_channel", |b| b.iter_custom(raw_channel_run));
    g.finish();
}

/// What latency metrics cost: the 1 → 1 pool path (the cheapest per
/// message, so the largest relative cost) with sampling off, at the default
/// (one run in 64) and on every run, in the same run.
fn metrics_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_cost");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let settings = [
        ("off", 0),
        ("default", topicbus::DEFAULT_LATENCY_SAMPLING),
        ("every_run", 1),
    ];
    for (name, sampling) in settings {
        g.bench_function(BenchmarkId::new("pool", name), |b| {
            b.iter_custom(|n| topicbus_sampled_run(1, n, sampling))
        });
    }
    // The inline path: no scheduling, so the steadiest view of the cost;
    // and the default with the subscription keeping its own histograms.
    let own = ("default_own", topicbus::DEFAULT_LATENCY_SAMPLING);
    for (name, sampling) in settings.into_iter().chain([own]) {
        let bus = Bus::<u64>::builder()
            .workers(1)
            .latency_sampling(sampling)
            .build()
            .expect("bus");
        let _s = inline_sink(&bus, |o| o.latency(name == own.0));
        let topic = Topic::parse("orders.eu.created").expect("topic");
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("inline", name), |b| {
            b.iter(|| {
                i += 1;
                bus.publish(&topic, i).expect("publish")
            })
        });
    }
    g.finish();
}

/// A subscriber whose level is switched between benchmarks, installed
/// once for the whole process (worker threads see the global default).
#[cfg(feature = "tracing")]
mod toggle {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU8, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};

    pub(crate) const OFF: u8 = 0;
    pub(crate) const INFO: u8 = 1;
    pub(crate) const DEBUG: u8 = 2;
    pub(crate) const DEBUG_FMT: u8 = 3;

    pub(crate) struct Toggle(pub(crate) AtomicU8);

    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    }

    /// Formats every field into a reused per-thread line.
    struct Fmt<'a>(&'a mut String);

    impl Visit for Fmt<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    impl Toggle {
        fn level(&self) -> u8 {
            self.0.load(Ordering::Relaxed)
        }

        /// Switches the level and makes every call site see it.
        pub(crate) fn set(&self, level: u8) {
            self.0.store(level, Ordering::Relaxed);
            tracing::callsite::rebuild_interest_cache();
        }

        fn format(&self, visit: impl FnOnce(&mut Fmt<'_>)) {
            if self.level() == DEBUG_FMT {
                LINE.with(|l| {
                    let mut l = l.borrow_mut();
                    l.clear();
                    visit(&mut Fmt(&mut l));
                    std::hint::black_box(l.len());
                });
            }
        }
    }

    impl Subscriber for Toggle {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }

        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(match self.level() {
                OFF => LevelFilter::OFF,
                INFO => LevelFilter::INFO,
                _ => LevelFilter::TRACE,
            })
        }

        fn enabled(&self, m: &Metadata<'_>) -> bool {
            self.max_level_hint().is_some_and(|l| *m.level() <= l)
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            self.format(|f| span.record(f));
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, values: &Record<'_>) {
            self.format(|f| values.record(f));
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            self.format(|f| event.record(f));
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}

/// What tracing costs with the feature compiled in: `metrics_cost`'s two
/// paths under a subscriber switched between levels, in the same run.
#[cfg(feature = "tracing")]
fn tracing_cost(c: &mut Criterion) {
    use toggle::{Toggle, DEBUG, DEBUG_FMT, INFO, OFF};
    let subscriber = Arc::new(Toggle(std::sync::atomic::AtomicU8::new(OFF)));
    tracing::subscriber::set_global_default(Arc::clone(&subscriber)).expect("the only install");
    let mut g = c.benchmark_group("tracing_cost");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let levels = [
        ("off", OFF),
        ("info", INFO),
        ("debug", DEBUG),
        ("debug_fmt", DEBUG_FMT),
    ];
    for (name, level) in levels {
        subscriber.set(level);
        g.bench_function(BenchmarkId::new("pool", name), |b| {
            b.iter_custom(|n| topicbus_run(1, n))
        });
    }
    let bus = Bus::<u64>::builder().workers(1).build().expect("bus");
    let _s = inline_sink(&bus, |o| o);
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let mut i = 0u64;
    for (name, level) in levels {
        subscriber.set(level);
        g.bench_function(BenchmarkId::new("inline", name), |b| {
            b.iter(|| {
                i += 1;
                bus.publish(&topic, i).expect("publish")
            })
        });
    }
    subscriber.set(OFF);
    g.finish();
}

#[cfg(not(feature = "tracing"))]
fn tracing_cost(_: &mut Criterion) {}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10);
    for subs in [16usize, 64, 1024] {
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(BenchmarkId::new(subs.to_string(), "topicbus"), |b| {
            b.iter_custom(|n| topicbus_run(subs, n))
        });
        g.bench_function(BenchmarkId::new(subs.to_string(), "hand_rolled"), |b| {
            b.iter_custom(|n| hand_rolled_run(subs, n))
        });
    }
    g.finish();
}

fn inline(c: &mut Criterion) {
    let mut g = c.benchmark_group("inline");
    g.throughput(Throughput::Elements(1));

    let bus = Bus::<u64>::builder().workers(1).build().expect("bus");
    let _s = inline_sink(&bus, |o| o);
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let mut i = 0u64;
    g.bench_function("topicbus", |b| {
        b.iter(|| {
            i += 1;
            bus.publish(&topic, i).expect("publish")
        })
    });

    // Hand-rolled: a map from topic text to handlers, an `Arc` message.
    type Handler = Box<dyn Fn(&Msg)>;
    let mut routes: std::collections::HashMap<Arc<str>, Vec<Handler>> = Default::default();
    let key: Arc<str> = Arc::from("orders.eu.created");
    routes.insert(
        Arc::clone(&key),
        vec![Box::new(|m: &Msg| {
            black_box(m.payload);
        })],
    );
    g.bench_function("hand_rolled", |b| {
        b.iter(|| {
            i += 1;
            let m = Arc::new(Msg {
                topic: Arc::clone(&key),
                payload: i,
            });
            if let Some(hs) = routes.get(&*m.topic) {
                for h in hs {
                    h(&m);
                }
            }
            m
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = counter::config();
    targets = pool_1to1, fanout, inline, metrics_cost, tracing_cost
}
criterion_main!(benches);

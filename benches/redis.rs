//! The Redis adapters against the raw `redis` client in the same run, on a
//! `redis-server` the benchmark starts itself (unix socket, no persistence):
//!
//! - `redis_out/{raw,raw_encoding,bridge}`: messages per second out to
//!   `PUBLISH` (no subscriber): the raw client pipelining one prepared
//!   envelope in batches of 256; the same, encoding and signing each
//!   message first; the bridge (publish on the bus → outbox → writer).
//! - `redis_stream_add/{raw,raw_encoding,producer}`: the same for `XADD`
//!   with `MAXLEN ~`.
//! - `redis_stream_e2e/group`: publish → `XADD` → `XREADGROUP` → local
//!   handler → `XACK`, one producer and one consumer.
//! - `redis_local_publish/{receiver,bridge_up,bridge_down}`: what a local
//!   publish costs when a pull subscription takes it, when the bridge's
//!   outbox takes it with Redis up, and with Redis killed (the outbox full,
//!   dropping its oldest).
//!
//! Figures: `perf-reports/redis.md`.

#![allow(missing_docs)]

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redis_server::RedisServer;
use topicbus::envelope::{Codec, KeyRing};
use topicbus::redis::{RedisBridge, RedisStreams};
use topicbus::{Bus, Message, OverflowPolicy, SubscribeOptions, Topic};

const BATCH: usize = 256;
const MAXLEN: usize = 100_000;

fn codec() -> Codec {
    Codec::signed(KeyRing::new("bench", [7u8; 32]).expect("key"))
}

fn server() -> RedisServer {
    RedisServer::start().expect("redis-server is needed for this benchmark")
}

fn payload(i: u64) -> String {
    format!("order {i:08}: 3 items, EUR 129.90")
}

fn message(i: u64) -> Message<String> {
    Message::builder(
        Topic::parse("orders.eu.created").expect("topic"),
        payload(i),
    )
    .build()
}

/// The raw client: `n` commands built by `cmd`, pipelined `BATCH` at a time.
fn raw(con: &mut redis::Connection, n: u64, mut cmd: impl FnMut(&mut redis::Pipeline, u64)) {
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        let end = (i + BATCH as u64).min(n);
        for j in i..end {
            cmd(&mut pipe, j);
        }
        let _: Vec<redis::Value> = pipe.query(con).expect("pipeline");
        i = end;
    }
}

fn publish_cmd(pipe: &mut redis::Pipeline, bytes: &[u8]) {
    pipe.cmd("PUBLISH")
        .arg("topicbus:orders.eu.created")
        .arg(bytes);
}

fn xadd_cmd(pipe: &mut redis::Pipeline, bytes: &[u8]) {
    pipe.cmd("XADD")
        .arg("topicbus:stream:raw")
        .arg("MAXLEN")
        .arg("~")
        .arg(MAXLEN)
        .arg("*")
        .arg("e")
        .arg(bytes);
}

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(1).build().expect("bus")
}

/// Publishes `n` messages and waits until `done` (read from the adapter's
/// stats) has grown by `n`.
fn through(bus: &Bus<String>, n: u64, done: impl Fn() -> u64) -> Duration {
    let base = done();
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let start = Instant::now();
    for i in 0..n {
        bus.publish(&topic, payload(i)).expect("publish");
    }
    // Sleeping, not spinning: the adapter's threads and redis-server need
    // both cores more than this thread needs a prompt wake-up (the
    // granularity is 50 µs in samples of about 0.3 s).
    while done() < base + n {
        std::thread::sleep(Duration::from_micros(50));
    }
    start.elapsed()
}

/// The throughput groups' outbox: room for every message of a sample, so
/// publishers never wait on the writer (a blocked publisher and the writer
/// waking each other per message would measure the scheduler); none is
/// ever dropped (checked at the end).
const OUTBOX: usize = 1 << 20;

fn out(c: &mut Criterion, group: &str, cmd: fn(&mut redis::Pipeline, &[u8])) {
    let server = server();
    let mut con = server.connection();
    let codec = codec();
    let prepared = codec.encode(&message(0), "bench").expect("encode");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("raw", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            raw(&mut con, n, |p, _| cmd(p, &prepared));
            start.elapsed()
        })
    });
    g.bench_function("raw_encoding", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            raw(&mut con, n, |p, i| {
                cmd(p, &codec.encode(&message(i), "bench").expect("encode"))
            });
            start.elapsed()
        })
    });
    let bus = bus();
    let adapter = if group == "redis_out" {
        let bridge = RedisBridge::builder(server.url(), codec.clone())
            .export("orders.#")
            .outbox_capacity(OUTBOX)
            .start(&bus)
            .expect("bridge");
        g.bench_function("bridge", |b| {
            b.iter_custom(|n| through(&bus, n, || bridge.stats().published))
        });
        let s = bridge.shutdown(Duration::from_secs(10)).stats;
        s.unsent + s.outbox_dropped
    } else {
        let streams = RedisStreams::builder(server.url(), codec.clone(), "bench")
            .export("orders.#")
            .maxlen(MAXLEN)
            .outbox_capacity(OUTBOX)
            .start(&bus)
            .expect("streams");
        g.bench_function("producer", |b| {
            b.iter_custom(|n| through(&bus, n, || streams.stats().added))
        });
        let s = streams.shutdown(Duration::from_secs(10));
        s.unsent + s.outbox_dropped
    };
    assert_eq!(adapter, 0);
    g.finish();
}

fn redis_out(c: &mut Criterion) {
    out(c, "redis_out", publish_cmd);
}

fn redis_stream_add(c: &mut Criterion) {
    out(c, "redis_stream_add", xadd_cmd);
}

fn redis_stream_e2e(c: &mut Criterion) {
    let server = server();
    let (producer_bus, consumer_bus) = (bus(), bus());
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let _sub = consumer_bus
        .subscribe("orders.#", move |m: &Message<String>| {
            black_box(m.payload());
            h.fetch_add(1, Ordering::Release);
        })
        .expect("subscribe");
    let producer = RedisStreams::builder(server.url(), codec(), "e2e")
        .export("orders.#")
        .maxlen(10 * MAXLEN)
        .outbox_capacity(OUTBOX)
        .start(&producer_bus)
        .expect("producer");
    let consumer = RedisStreams::builder(server.url(), codec(), "e2e")
        .consume("bench")
        .block(Duration::from_millis(5))
        .start(&consumer_bus)
        .expect("consumer");
    let mut g = c.benchmark_group("redis_stream_e2e");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("group", |b| {
        b.iter_custom(|n| through(&producer_bus, n, || handled.load(Ordering::Acquire)))
    });
    g.finish();
    let (p, s) = (
        producer.shutdown(Duration::from_secs(10)),
        consumer.shutdown(Duration::from_secs(10)),
    );
    assert_eq!(p.added, s.acked, "{p:?} {s:?}");
    assert_eq!(p.outbox_dropped, 0);
}

fn redis_local_publish(c: &mut Criterion) {
    let mut server = server();
    let mut g = c.benchmark_group("redis_local_publish");
    g.throughput(Throughput::Elements(1));
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let setups = ["receiver", "bridge_up", "bridge_down"];
    for setup in setups {
        let bus = bus();
        let (_rx, bridge) = match setup {
            // The bridge's outbox is this: 10,000 per lane, drop oldest.
            "receiver" => {
                let options = SubscribeOptions::new()
                    .pattern("orders.#")
                    .capacity(10_000)
                    .overflow(OverflowPolicy::DropOldest);
                (Some(bus.receiver_with(options).expect("receiver")), None)
            }
            _ => {
                if setup == "bridge_down" {
                    server.kill9();
                }
                let bridge = RedisBridge::builder(server.url(), codec())
                    .export("orders.#")
                    .start(&bus)
                    .expect("bridge");
                (None, Some(bridge))
            }
        };
        let mut i = 0u64;
        g.bench_function(BenchmarkId::from_parameter(setup), |b| {
            b.iter(|| {
                i += 1;
                bus.publish(&topic, payload(i)).expect("publish")
            })
        });
        drop(bridge);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = redis_out, redis_stream_add, redis_stream_e2e, redis_local_publish
}
criterion_main!(benches);

//! What an envelope costs: building the message, encoding it (postcard or
//! JSON), signing it, and decoding and verifying it again.
//!
//! - `envelope/message`: `Message::builder(..).build()` with the payload
//!   formatted, the baseline every other row includes.
//! - `envelope/encode/{binary,binary_signed,json_signed}`: message + encode.
//! - `envelope/encode_into/binary_signed`: the same into a reused buffer.
//! - `envelope/decode/binary_signed`: verify + decode one prepared frame.
//!
//! Figures: `perf-reports/redis.md`.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use topicbus::envelope::{Codec, Encoding, KeyRing};
use topicbus::{Message, Topic};

fn message(topic: &Topic, i: u64) -> Message<String> {
    Message::builder(topic.clone(), format!("order {i:08}: 3 items, EUR 129.90")).build()
}

fn envelope(c: &mut Criterion) {
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let keys = KeyRing::new("bench", [7u8; 32]).expect("key");
    let mut g = c.benchmark_group("envelope");
    let mut i = 0u64;
    g.bench_function("message", |b| {
        b.iter(|| {
            i += 1;
            black_box(message(&topic, i))
        })
    });
    for (name, codec) in [
        ("binary", Codec::unsigned()),
        ("binary_signed", Codec::signed(keys.clone())),
        (
            "json_signed",
            Codec::signed(keys.clone()).encoding(Encoding::Json),
        ),
    ] {
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(codec.encode(&message(&topic, i), "bench").expect("encode"))
            })
        });
    }
    let codec = Codec::signed(keys);
    let mut buf = Vec::new();
    g.bench_function("encode_into/binary_signed", |b| {
        b.iter(|| {
            i += 1;
            buf.clear();
            codec
                .encode_into(&message(&topic, i), "bench", &mut buf)
                .expect("encode");
            black_box(buf.len())
        })
    });
    let frame = codec.encode(&message(&topic, 0), "bench").expect("encode");
    g.bench_function("decode/binary_signed", |b| {
        b.iter(|| black_box(codec.decode::<String>(black_box(&frame)).expect("decode")))
    });
    g.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);

//! Matcher and registry benchmarks, each group with its same-run baselines.
//!
//! - `match/<workload>/{topicbus,zenoh_ketree,linear_scan}`: one match of a
//!   query topic (cycling through 1,024 queries), results consumed.
//! - `hash15/{topicbus,zenoh_ketree,reference}`: 15 `#` against 31 levels.
//! - `churn/<n>/{subscribe_unsubscribe,full_rebuild}`: one subscribe plus one
//!   unsubscribe through the copy-on-write registry holding `n`
//!   subscriptions, against rebuilding the matcher from scratch once.
//! - `wide/20000/{topicbus,std_hashmap}`: 20 K children of one node inserted
//!   into an empty matcher and removed again, against a `HashMap` of the
//!   same keys (an edit must not cost O(fanout) when nothing is shared).
//!
//! Figures and their interpretation: `perf-reports/matcher.md`.

#![allow(missing_docs)]

#[path = "common/workload.rs"]
mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use topicbus::registry::Registry;
use topicbus::Pattern;

fn match_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    g.throughput(Throughput::Elements(1));
    for w in [
        workload::subjects(),
        workload::mixed(1_000),
        workload::mixed(10_000),
        workload::mixed(100_000),
    ] {
        let m = w.matcher();
        let z = w.zenoh();
        let n = w.patterns.len();
        let lin = (n <= 37_000).then(|| w.linear());
        w.check_agreement(&m, &z, lin.as_ref());
        let q = &w.queries;

        g.bench_function(BenchmarkId::new(&w.name, "topicbus"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                let mut acc = 0u32;
                m.for_each_match(&q[i], |v| acc = acc.wrapping_add(*v));
                black_box(acc)
            })
        });
        g.bench_function(BenchmarkId::new(&w.name, "zenoh_ketree"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                let mut acc = 0u32;
                z.matches(i, |v| acc = acc.wrapping_add(v));
                black_box(acc)
            })
        });
        if let Some(lin) = &lin {
            g.bench_function(BenchmarkId::new(&w.name, "linear_scan"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    let mut acc = 0u32;
                    lin.matches(&q[i], |v| acc = acc.wrapping_add(v));
                    black_box(acc)
                })
            });
        }
    }
    g.finish();
}

fn hash15_group(c: &mut Criterion) {
    let w = workload::hash15();
    let m = w.matcher();
    let z = w.zenoh();
    let lin = w.linear();
    w.check_agreement(&m, &z, Some(&lin));
    let mut g = c.benchmark_group("hash15");
    g.throughput(Throughput::Elements(2));
    g.bench_function("topicbus", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for q in &w.queries {
                m.for_each_match(q, |v| acc += *v + 1);
            }
            black_box(acc)
        })
    });
    g.bench_function("zenoh_ketree", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for i in 0..w.queries.len() {
                z.matches(i, |v| acc += v + 1);
            }
            black_box(acc)
        })
    });
    g.bench_function("reference", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for q in &w.queries {
                lin.matches(q, |v| acc += v + 1);
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn churn_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for n in [1_000, 10_000, 100_000] {
        let w = workload::mixed(n);
        let reg = Registry::new();
        reg.update(|b| {
            for (i, p) in w.patterns.iter().enumerate() {
                b.subscribe([p.clone()], i as u32);
            }
        });
        let extra: Vec<Pattern> = workload::mixed(1_000).patterns;
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new(n.to_string(), "subscribe_unsubscribe"),
            |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % extra.len();
                    let id = reg.subscribe([extra[i].clone()], u32::MAX);
                    black_box(reg.unsubscribe(id))
                })
            },
        );
        g.bench_function(BenchmarkId::new(n.to_string(), "full_rebuild"), |b| {
            b.iter(|| black_box(w.matcher()))
        });
    }
    g.finish();
}

/// One node with 20 K literal children (`user.u<i>.*`), built from empty
/// and taken apart again: every edit must stay O(1) in the node's fanout.
/// Baseline: the same keys into and out of a `std` `HashMap`.
fn wide_group(c: &mut Criterion) {
    const N: u32 = 20_000;
    let mut g = c.benchmark_group("wide");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    let patterns: Vec<Pattern> = (0..N)
        .map(|i| Pattern::parse(&format!("user.u{i}.*")).expect("pattern"))
        .collect();
    g.bench_function(BenchmarkId::new(N.to_string(), "topicbus"), |b| {
        b.iter(|| {
            let mut m = topicbus::matcher::Matcher::new();
            for (i, p) in patterns.iter().enumerate() {
                m.insert(p, i as u32);
            }
            for (i, p) in patterns.iter().enumerate() {
                m.remove(p, &(i as u32));
            }
            black_box(m.is_empty())
        })
    });
    g.bench_function(BenchmarkId::new(N.to_string(), "std_hashmap"), |b| {
        b.iter(|| {
            let mut m = std::collections::HashMap::new();
            for (i, p) in patterns.iter().enumerate() {
                m.insert(p.as_str().to_owned(), i as u32);
            }
            for p in &patterns {
                m.remove(p.as_str());
            }
            black_box(m.is_empty())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = match_group, hash15_group, churn_group, wide_group
}
criterion_main!(benches);

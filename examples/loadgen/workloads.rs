//! The workloads, generated deterministically from a seed
//! (BENCHMARKING.md "Workloads to share").

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use topicbus::Topic;

use crate::systems::{SubSpec, Workload};

const SEED: u64 = 0x7090_1cb0;
const SEQUENCE: usize = 1 << 16;

/// The headline subscriptions: 16 patterns over `sensor.<site>.<kind>.<id>`,
/// 4 exact and 12 with wildcards (`*`, leading, middle and trailing `#`).
pub const HEADLINE_PATTERNS: [&str; 16] = [
    "sensor.s0.temp.d0",
    "sensor.s1.hum.d1",
    "sensor.s2.co2.d2",
    "sensor.s3.volt.d3",
    "sensor.#",
    "sensor.*.temp.*",
    "sensor.s1.#",
    "sensor.#.d7",
    "#.co2.*",
    "sensor.s2.*.*",
    "sensor.*.volt.#",
    "sensor.s3.hum.*",
    "sensor.s4.temp.#",
    "*.s5.*.*",
    "sensor.*.*.d0",
    "#.d31",
];

const SITES: usize = 8;
const KINDS: [&str; 4] = ["temp", "hum", "co2", "volt"];
const IDS: usize = 32;

fn sensor_topics() -> Vec<Topic> {
    let mut topics = Vec::with_capacity(SITES * KINDS.len() * IDS);
    for s in 0..SITES {
        for k in KINDS {
            for d in 0..IDS {
                topics.push(Topic::parse(&format!("sensor.s{s}.{k}.d{d}")).expect("valid topic"));
            }
        }
    }
    topics
}

fn uniform_sequence(topics: usize, rng: &mut SmallRng) -> Vec<u32> {
    (0..SEQUENCE)
        .map(|_| rng.gen_range(0..topics) as u32)
        .collect()
}

/// 1,024 sensor topics published uniformly at random; `patterns` (the
/// headline 16 by default) subscribed.
pub fn headline(patterns: &[String]) -> Workload {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let topics = sensor_topics();
    let sequence = uniform_sequence(topics.len(), &mut rng);
    let subs = patterns.iter().map(|p| SubSpec::new(p)).collect();
    Workload::new(topics, sequence, subs)
}

/// The headline patterns as owned strings.
pub fn headline_patterns() -> Vec<String> {
    HEADLINE_PATTERNS.iter().map(|p| (*p).to_owned()).collect()
}

/// The headline workload plus exact subscriptions to single sensor topics
/// until there are `total` subscriptions (the memory and soak workload).
pub fn headline_with(total: usize, patterns: &[String]) -> Workload {
    let mut w = headline(patterns);
    let mut subs = w.subs.clone();
    let topics = w.topics.clone();
    let mut i = 0;
    while subs.len() < total {
        subs.push(SubSpec::new(topics[i % topics.len()].as_ref()));
        i += 1;
    }
    w = Workload::new(topics, std::mem::take(&mut w.sequence), subs);
    w
}

/// One topic, `n` subscriptions (every fourth through a wildcard).
pub fn fanout(n: usize) -> Workload {
    let topics = vec![Topic::parse("fan.out.topic").expect("valid topic")];
    let subs = (0..n)
        .map(|i| {
            SubSpec::new(if i % 4 == 3 {
                "fan.*.topic"
            } else {
                "fan.out.topic"
            })
        })
        .collect();
    Workload::new(topics, vec![0], subs)
}

const DOMAINS: [&str; 10] = [
    "orders",
    "payments",
    "users",
    "inventory",
    "shipping",
    "billing",
    "search",
    "auth",
    "audit",
    "metrics",
];
const REGIONS: [&str; 8] = ["eu", "us", "ap", "sa", "af", "me", "cn", "oc"];
const EVENTS: [&str; 5] = ["created", "updated", "deleted", "failed", "retried"];
const ENTITIES: usize = 25;

/// The realistic mixed workload: 10,000 topics
/// (`<domain>.<region>.e<n>.<event>`), 1,000 subscriptions of which ~10 %
/// use wildcards, a queue group of four workers on `orders.#`, and mixed
/// priorities (10 % high, 80 % normal, 10 % low). Topics are published
/// with a skew (a fifth of the topics take most of the traffic).
pub fn mixed() -> Workload {
    let mut rng = SmallRng::seed_from_u64(SEED ^ 0x3);
    let mut topics = Vec::with_capacity(10_000);
    for d in DOMAINS {
        for r in REGIONS {
            for e in 0..ENTITIES {
                for ev in EVENTS {
                    topics.push(Topic::parse(&format!("{d}.{r}.e{e}.{ev}")).expect("valid topic"));
                }
            }
        }
    }
    let mut subs: Vec<SubSpec> = Vec::with_capacity(1_004);
    for i in 0..1_000 {
        let p = if i % 10 == 0 {
            let d = DOMAINS[rng.gen_range(0..DOMAINS.len())];
            let r = REGIONS[rng.gen_range(0..REGIONS.len())];
            let ev = EVENTS[rng.gen_range(0..EVENTS.len())];
            match (i / 10) % 5 {
                0 => format!("{d}.{r}.*.{ev}"),
                1 => format!("{d}.{r}.#"),
                2 => format!("#.e{}.{ev}", rng.gen_range(0..ENTITIES)),
                3 => format!("{d}.#.{ev}"),
                _ => format!("*.{r}.e{}.*", rng.gen_range(0..ENTITIES)),
            }
        } else {
            topics[rng.gen_range(0..topics.len())].as_ref().to_owned()
        };
        subs.push(SubSpec::new(&p));
    }
    for _ in 0..4 {
        let mut s = SubSpec::new("orders.#");
        s.group = Some("order-workers".into());
        subs.push(s);
    }
    let hot = topics.len() / 5;
    let sequence = (0..SEQUENCE)
        .map(|_| {
            if rng.gen_bool(0.8) {
                rng.gen_range(0..hot) as u32
            } else {
                rng.gen_range(0..topics.len()) as u32
            }
        })
        .collect();
    let mut w = Workload::new(topics, sequence, subs);
    w.lanes = (0..SEQUENCE)
        .map(|_| match rng.gen_range(0..10) {
            0 => 0,
            9 => 2,
            _ => 1,
        })
        .collect();
    w
}

/// Background subscriptions for the churn scenario: `n` patterns under
/// `churn.` (so they never match a published topic, only grow the table),
/// one in ten with a wildcard.
pub fn churn_pattern(i: usize) -> String {
    match i % 20 {
        0 => format!("churn.*.k{i}"),
        10 => format!("churn.#.k{i}"),
        _ => format!("churn.n{i}.k{}", i % 97),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::Route;

    #[test]
    fn headline_routes_agree_with_the_reference_matcher() {
        let w = headline(&headline_patterns());
        assert_eq!(w.topics.len(), 1_024);
        assert_eq!(w.subs.len(), 16);
        // `sensor.#` matches every topic; the average fan-out is ~2.3.
        assert!(w.routes.iter().all(|r| r.contains(&Route::One(4))));
        let f = w.fanout();
        assert!((2.0..2.6).contains(&f), "fanout {f}");
        let t = Topic::parse("sensor.s1.hum.d1").expect("topic");
        let k = w.topics.iter().position(|x| *x == t).expect("present");
        let mut got: Vec<usize> = w.routes[k]
            .iter()
            .map(|r| match r {
                Route::One(i) => *i,
                Route::Group(_) => usize::MAX,
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 4, 6]);
    }

    #[test]
    fn mixed_has_groups_wildcards_and_lanes() {
        let w = mixed();
        assert_eq!(w.topics.len(), 10_000);
        assert_eq!(w.subs.iter().filter(|s| s.group.is_some()).count(), 4);
        let wild = w
            .subs
            .iter()
            .filter(|s| s.pattern.as_ref().contains(['*', '#']))
            .count();
        assert!((100..=110).contains(&wild), "wildcards {wild}");
        let orders = w
            .topics
            .iter()
            .position(|t| t.as_ref().starts_with("orders."))
            .expect("orders");
        let groups = w.routes[orders]
            .iter()
            .filter(|r| matches!(r, Route::Group(m) if m.len() == 4))
            .count();
        assert_eq!(groups, 1);
        let high = w.lanes.iter().filter(|&&l| l == 0).count() as f64 / w.lanes.len() as f64;
        assert!((0.08..0.12).contains(&high), "high share {high}");
    }

    #[test]
    fn padded_workload_has_the_requested_size_and_the_same_headline() {
        let w = headline_with(1_024, &headline_patterns());
        assert_eq!(w.subs.len(), 1_024);
        // Each extra subscription adds one route to one topic.
        assert!(w.fanout() > headline(&headline_patterns()).fanout());
    }
}

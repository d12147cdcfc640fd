//! Deterministic matcher workloads and same-run baselines, shared by
//! `benches/matcher.rs` and `examples/matcher_report.rs`.
//!
//! Workloads (BENCHMARKING.md, "Workloads to share"), all from a fixed seed:
//! - `subjects`: ~37 K mostly-literal subjects (97 % exact, 3 % wildcards),
//!   the size of the largest published subject-routing benchmark set;
//! - `mixed(n)`: n patterns with ~10 % wildcards (`*`, and `#` leading,
//!   middle and trailing);
//! - `hash15`: one pattern with 15 `#` against 31-level topics.
//!
//! Baselines: a linear scan with `Pattern::matches` (the obvious
//! implementation), and zenoh-keyexpr's `KeBoxTree` queried with
//! `intersecting_nodes` (`.` → `/`, `#` → `**`), checked to agree with
//! topicbus on every query before anything is timed.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use topicbus::matcher::Matcher;
use topicbus::{Pattern, Topic};
use zenoh_keyexpr::keyexpr;
use zenoh_keyexpr::keyexpr_tree::{IKeyExprTree, IKeyExprTreeMut, IKeyExprTreeNode, KeBoxTree};
use zenoh_keyexpr::OwnedKeyExpr;

pub const SEED: u64 = 0x7091_cb05;

const DOMAINS: &[&str] = &[
    "orders",
    "payments",
    "users",
    "inventory",
    "shipping",
    "sensor",
    "billing",
    "auth",
    "search",
    "notify",
    "audit",
    "cart",
    "pricing",
    "catalog",
    "fraud",
    "reports",
    "media",
    "chat",
    "iot",
    "metrics",
];
const REGIONS: &[&str] = &["eu", "us", "ap", "sa", "af", "me", "cn", "in"];
const EVENTS: &[&str] = &[
    "created",
    "updated",
    "deleted",
    "shipped",
    "cancelled",
    "failed",
    "retried",
    "expired",
    "approved",
    "rejected",
    "temp",
    "humidity",
    "login",
    "logout",
    "viewed",
    "paid",
];

/// A set of patterns (each mapped to its index) and query topics.
pub struct Workload {
    pub name: String,
    pub patterns: Vec<Pattern>,
    pub queries: Vec<Topic>,
}

fn level(rng: &mut SmallRng) -> String {
    match rng.gen_range(0..4) {
        0 => REGIONS[rng.gen_range(0..REGIONS.len())].to_string(),
        1 => format!("n{}", rng.gen_range(0..2_000)),
        2 => format!("site{}", rng.gen_range(0..300)),
        _ => EVENTS[rng.gen_range(0..EVENTS.len())].to_string(),
    }
}

/// A realistic topic: a domain, 1–4 middle levels, an event; 3–6 levels.
fn topic_levels(rng: &mut SmallRng) -> Vec<String> {
    let mut v = vec![DOMAINS[rng.gen_range(0..DOMAINS.len())].to_string()];
    for _ in 0..rng.gen_range(1..=4) {
        v.push(level(rng));
    }
    v.push(EVENTS[rng.gen_range(0..EVENTS.len())].to_string());
    v
}

/// Turns a topic into a wildcard pattern: `*` in place of levels, or `#` in
/// place of a run of levels at the start, middle or end.
fn wildcard(rng: &mut SmallRng, mut levels: Vec<String>) -> Vec<String> {
    let n = levels.len();
    match rng.gen_range(0..5) {
        0 | 1 => {
            let i = rng.gen_range(1..n);
            levels[i] = "*".into();
            if rng.gen_bool(0.3) {
                levels[rng.gen_range(0..n)] = "*".into();
            }
            levels
        }
        2 => {
            // trailing: domain.x.#
            let keep = rng.gen_range(1..n);
            levels.truncate(keep);
            levels.push("#".into());
            levels
        }
        3 => {
            // leading: #.event or #.x.event
            let keep = rng.gen_range(1..=2.min(n - 1));
            let mut v = vec!["#".to_string()];
            v.extend(levels[n - keep..].iter().cloned());
            v
        }
        _ => {
            // middle: domain.#.event
            let mut v = vec![levels[0].clone(), "#".into()];
            v.push(levels[n - 1].clone());
            v
        }
    }
}

fn build(name: String, n: usize, wildcard_share: f64, seed: u64) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut patterns = Vec::with_capacity(n);
    let mut exact_topics = Vec::new();
    while patterns.len() < n {
        let levels = topic_levels(&mut rng);
        let levels = if rng.gen_bool(wildcard_share) {
            wildcard(&mut rng, levels)
        } else {
            levels
        };
        let text = levels.join(".");
        if seen.insert(text.clone()) {
            let p = Pattern::parse(&text).expect("generated pattern");
            if p.is_exact() {
                exact_topics.push(Topic::parse(&text).expect("generated topic"));
            }
            patterns.push(p);
        }
    }
    // Half the queries hit an exact subject, half are fresh topics.
    let mut queries = Vec::with_capacity(1024);
    for i in 0..1024 {
        if i % 2 == 0 && !exact_topics.is_empty() {
            queries.push(exact_topics[rng.gen_range(0..exact_topics.len())].clone());
        } else {
            queries.push(Topic::parse(&topic_levels(&mut rng).join(".")).expect("topic"));
        }
    }
    Workload {
        name,
        patterns,
        queries,
    }
}

/// ~37 K mostly-literal subjects.
pub fn subjects() -> Workload {
    build("subjects_37k".into(), 37_000, 0.03, SEED)
}

/// `n` patterns, ~10 % wildcards.
pub fn mixed(n: usize) -> Workload {
    build(format!("mixed_{n}"), n, 0.10, SEED ^ n as u64)
}

/// The pathological case: 15 `#` and a literal, against 31-level topics that
/// match and that do not.
pub fn hash15() -> Workload {
    let hashes = vec!["#"; 15].join(".");
    let patterns = vec![
        Pattern::parse(&format!("{hashes}.z")).expect("pattern"),
        Pattern::parse(&format!("a.{hashes}.b")).expect("pattern"),
    ];
    let miss = Topic::parse(&vec!["a"; 31].join(".")).expect("topic");
    let hit = Topic::parse(&format!("{}.z", vec!["a"; 30].join("."))).expect("topic");
    Workload {
        name: "hash15".into(),
        patterns,
        queries: vec![miss, hit],
    }
}

impl Workload {
    pub fn matcher(&self) -> Matcher<u32> {
        let mut m = Matcher::new();
        for (i, p) in self.patterns.iter().enumerate() {
            m.insert(p, i as u32);
        }
        m
    }

    pub fn linear(&self) -> LinearScan {
        LinearScan(self.patterns.iter().cloned().zip(0..).collect())
    }

    pub fn zenoh(&self) -> ZenohTree {
        let mut tree = KeBoxTree::new();
        for (i, p) in self.patterns.iter().enumerate() {
            let ke = OwnedKeyExpr::autocanonize(to_zenoh(p.as_str())).expect("zenoh key");
            tree.insert(&ke, i as u32);
        }
        let queries = self
            .queries
            .iter()
            .map(|t| OwnedKeyExpr::new(to_zenoh(t.as_str())).expect("zenoh key"))
            .collect();
        ZenohTree { tree, queries }
    }

    /// Panics unless topicbus, the linear scan and zenoh agree on every query.
    pub fn check_agreement(&self, m: &Matcher<u32>, z: &ZenohTree, lin: Option<&LinearScan>) {
        for (i, q) in self.queries.iter().enumerate() {
            let mut ours: Vec<u32> = m.matches(q).to_vec();
            ours.sort_unstable();
            let mut theirs = Vec::new();
            z.matches(i, |v| theirs.push(v));
            theirs.sort_unstable();
            assert_eq!(ours, theirs, "zenoh disagrees on {q} in {}", self.name);
            if let Some(lin) = lin {
                let mut scan = Vec::new();
                lin.matches(q, |v| scan.push(v));
                assert_eq!(ours, scan, "linear scan disagrees on {q}");
            }
        }
    }
}

fn to_zenoh(s: &str) -> String {
    s.split('.')
        .map(|l| if l == "#" { "**" } else { l })
        .collect::<Vec<_>>()
        .join("/")
}

/// The obvious implementation: check every pattern.
pub struct LinearScan(Vec<(Pattern, u32)>);

impl LinearScan {
    #[inline]
    pub fn matches(&self, topic: &Topic, mut f: impl FnMut(u32)) {
        for (p, v) in &self.0 {
            if p.matches(topic) {
                f(*v);
            }
        }
    }
}

/// zenoh's KeTree with its query keys pre-converted (conversion not timed).
pub struct ZenohTree {
    tree: KeBoxTree<u32>,
    queries: Vec<OwnedKeyExpr>,
}

impl ZenohTree {
    /// Matches query number `i` of the workload.
    #[inline]
    pub fn matches(&self, i: usize, mut f: impl FnMut(u32)) {
        let key: &keyexpr = &self.queries[i];
        for node in self.tree.intersecting_nodes(key) {
            if let Some(w) = node.weight() {
                f(*w);
            }
        }
    }
}

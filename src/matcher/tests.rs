use super::*;
use crate::topic::tests::SEMANTICS;

fn p(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

fn t(s: &str) -> Topic {
    Topic::parse(s).unwrap()
}

fn sorted<V: Clone + Ord>(set: MatchSet<V>) -> Vec<V> {
    let mut v = set.to_vec();
    v.sort();
    v
}

/// The oracle: every registered pair checked with `Pattern::matches`.
fn reference(pairs: &[(Pattern, u32)], topic: &Topic) -> Vec<u32> {
    let mut v: Vec<u32> = pairs
        .iter()
        .filter(|(p, _)| p.matches(topic))
        .map(|(_, v)| *v)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn each_semantics_row_alone() {
    for &(pat, topic, want) in SEMANTICS {
        let mut m = Matcher::new();
        m.insert(&p(pat), 1u8);
        let got = !m.matches(&t(topic)).is_empty();
        assert_eq!(got, want, "pattern {pat:?} vs topic {topic:?}");
    }
}

#[test]
fn all_semantics_rows_together() {
    let mut m = Matcher::new();
    let mut pairs = Vec::new();
    for (i, &(pat, _, _)) in SEMANTICS.iter().enumerate() {
        let v = i as u32;
        m.insert(&p(pat), v);
        pairs.push((p(pat), v));
    }
    for &(_, topic, _) in SEMANTICS {
        let topic = t(topic);
        assert_eq!(
            sorted(m.matches(&topic)),
            reference(&pairs, &topic),
            "{topic}"
        );
    }
}

#[test]
fn one_value_with_several_matching_patterns_is_reported_once() {
    let mut m = Matcher::new();
    for pat in ["a.b.c", "a.*.c", "a.#", "#", "#.c", "*.b.*"] {
        assert!(m.insert(&p(pat), 7u32));
    }
    m.insert(&p("a.b.c"), 8);
    assert_eq!(sorted(m.matches(&t("a.b.c"))), [7, 8]);
    // Removing all but one pattern leaves a plain (unshared) slot behind.
    for pat in ["a.b.c", "a.*.c", "a.#", "#", "#.c"] {
        assert!(m.remove(&p(pat), &7));
    }
    assert_eq!(m.patterns(&7).map(<[_]>::len), Some(1));
    assert_eq!(sorted(m.matches(&t("a.b.c"))), [7, 8]);
    assert_eq!(sorted(m.matches(&t("x.b.y"))), [7]);
}

#[test]
fn many_values_at_one_pattern_and_overlapping_patterns() {
    let mut m = Matcher::new();
    for v in 0..100u32 {
        m.insert(&p("orders.*"), v);
    }
    m.insert(&p("orders.#"), 1000);
    m.insert(&p("orders.eu"), 1001);
    let got = sorted(m.matches(&t("orders.eu")));
    assert_eq!(got.len(), 102);
    assert_eq!(got[..3], [0, 1, 2]);
    assert_eq!(got[100..], [1000, 1001]);
}

#[test]
fn duplicate_insert_and_missing_remove_change_nothing() {
    let mut m = Matcher::new();
    assert!(m.insert(&p("a.*"), 1u32));
    assert!(!m.insert(&p("a.*"), 1));
    assert_eq!(m.len(), 1);
    assert!(!m.remove(&p("a.#"), &1));
    assert!(!m.remove(&p("a.*"), &2));
    assert_eq!(m.len(), 1);
    assert_eq!(m.remove_value(&2), 0);
}

#[test]
fn removing_everything_prunes_the_trie() {
    let mut m = Matcher::new();
    let pats = ["a.b.c", "a.*.c", "a.#", "#.x", "*.*", "a.#.#.z"];
    for (i, pat) in pats.iter().enumerate() {
        m.insert(&p(pat), i);
    }
    assert!(m.root.is_some());
    for (i, pat) in pats.iter().enumerate() {
        assert!(m.remove(&p(pat), &i));
    }
    assert!(m.is_empty());
    assert!(m.root.is_none(), "empty trie nodes must be pruned");
    assert_eq!(m.exact.len(), 0);
    assert_eq!(m.value_count(), 0);
}

#[test]
fn children_switch_between_vector_and_map() {
    let mut m = Matcher::new();
    let n = trie::SMALL_MAX as u32 * 4;
    for i in 0..n {
        m.insert(&p(&format!("s.{i}.*")), i);
    }
    for i in 0..n {
        assert_eq!(m.matches(&t(&format!("s.{i}.x"))).as_slice(), [i]);
    }
    // Shrink back below the hysteresis threshold; the rest stays reachable.
    for i in 2..n {
        assert!(m.remove(&p(&format!("s.{i}.*")), &i));
    }
    assert_eq!(m.matches(&t("s.0.x")).as_slice(), [0]);
    assert_eq!(m.matches(&t("s.1.x")).as_slice(), [1]);
    assert!(m.matches(&t("s.5.x")).is_empty());
}

#[test]
fn clones_are_independent_versions() {
    let mut a = Matcher::new();
    a.insert(&p("x.*"), 1u32);
    a.insert(&p("x.y"), 2);
    let b = a.clone();
    a.insert(&p("x.#"), 3);
    a.remove(&p("x.y"), &2);
    assert_eq!(sorted(a.matches(&t("x.y"))), [1, 3]);
    assert_eq!(sorted(b.matches(&t("x.y"))), [1, 2]);
    assert_eq!((a.len(), b.len()), (2, 2));
}

#[test]
fn fifteen_hashes_against_thirty_one_levels_is_bounded_and_right() {
    let mut m = Matcher::new();
    let hashes = vec!["#"; 15].join(".");
    m.insert(&p(&format!("{hashes}.z")), 1u32);
    m.insert(&p(&hashes), 2);
    m.insert(&p(&format!("a.{hashes}.a.{hashes}")), 3);
    let miss = t(&vec!["a"; 31].join("."));
    assert_eq!(sorted(m.matches(&miss)), [2, 3]);
    let hit = t(&format!("{}.z", vec!["a"; 30].join(".")));
    assert_eq!(sorted(m.matches(&hit)), [1, 2, 3]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Levels from a small alphabet so patterns and topics collide often:
    /// short levels (their own keys), a 7-byte one (the longest that is its
    /// own key) and 8- and 9-byte ones sharing its prefix (hashed keys,
    /// confirmed by text), so every key kind meets every other.
    fn level() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            3 => Just("a"),
            2 => Just("b"),
            1 => Just("c"),
            1 => Just("abcdefg"),
            1 => Just("abcdefgh"),
            1 => Just("abcdefgh1"),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..7).prop_map(|v| v.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![6 => level(), 2 => Just("*"), 2 => Just("#")],
            1..7,
        )
        .prop_map(|v| v.join("."))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String, u32),
        RemoveValue(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (pattern(), 0..8u32).prop_map(|(p, v)| Op::Insert(p, v)),
            3 => (pattern(), 0..8u32).prop_map(|(p, v)| Op::Remove(p, v)),
            1 => (0..8u32).prop_map(Op::RemoveValue),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After every step of a random insert/remove sequence, the compiled
        /// matcher (and an older clone of it) agrees with the reference scan;
        /// half the cases run with colliding level hashes.
        #[test]
        fn compiled_matcher_equals_reference(ops in proptest::collection::vec(op(), 1..40),
                                             topics in proptest::collection::vec(topic(), 1..8),
                                             collide in any::<bool>()) {
            let topics: Vec<Topic> = topics.iter().map(|s| t(s)).collect();
            let mut m = Matcher::new();
            m.levels.collide = collide;
            let mut pairs: Vec<(Pattern, u32)> = Vec::new();
            let mut versions = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(s, v) => {
                        let pat = p(&s);
                        let fresh = !pairs.contains(&(pat.clone(), v));
                        prop_assert_eq!(m.insert(&pat, v), fresh);
                        if fresh { pairs.push((pat, v)); }
                    }
                    Op::Remove(s, v) => {
                        let pat = p(&s);
                        let before = pairs.len();
                        pairs.retain(|x| *x != (pat.clone(), v));
                        prop_assert_eq!(m.remove(&pat, &v), pairs.len() < before);
                    }
                    Op::RemoveValue(v) => {
                        let before = pairs.len();
                        pairs.retain(|x| x.1 != v);
                        prop_assert_eq!(m.remove_value(&v), before - pairs.len());
                    }
                }
                prop_assert_eq!(m.len(), pairs.len());
                for topic in &topics {
                    prop_assert_eq!(sorted(m.matches(topic)), reference(&pairs, topic));
                }
                versions.push((m.clone(), pairs.clone()));
            }
            // Structural sharing never leaks a later change into an old version.
            for (old, old_pairs) in &versions {
                for topic in &topics {
                    prop_assert_eq!(sorted(old.matches(topic)), reference(old_pairs, topic));
                }
            }
        }
    }
}

/// Long levels that differ only in their last byte, or only in length: with
/// hashes squeezed to two bits only the text tells them apart.
#[test]
fn long_levels_that_differ_in_one_byte_route_exactly() {
    let mut m = Matcher::new();
    m.levels.collide = true;
    let words: Vec<String> = [20usize, 21, 22, 23, 24, 40]
        .iter()
        .flat_map(|&n| ["a".repeat(n), format!("{}b", "a".repeat(n - 1))])
        .collect();
    for (i, w) in words.iter().enumerate() {
        m.insert(&p(&format!("s.{w}.*")), i);
    }
    for (i, w) in words.iter().enumerate() {
        assert_eq!(m.matches(&t(&format!("s.{w}.x"))).as_slice(), [i], "{w}");
    }
    for other in [
        "a".repeat(25),
        "a".repeat(19),
        format!("{}c", "a".repeat(21)),
    ] {
        assert!(m.matches(&t(&format!("s.{other}.x"))).is_empty(), "{other}");
    }
}

#[test]
fn colliding_level_hashes_still_route_exactly() {
    let mut m = Matcher::new();
    m.levels.collide = true;
    let n = trie::SMALL_MAX as u32 * 3;
    for i in 0..n {
        m.insert(&p(&format!("s.l{i}.*")), i);
        m.insert(&p(&format!("e.l{i}")), 1000 + i);
    }
    for i in 0..n {
        assert_eq!(m.matches(&t(&format!("s.l{i}.x"))).as_slice(), [i]);
        assert_eq!(m.matches(&t(&format!("e.l{i}"))).as_slice(), [1000 + i]);
    }
    for i in 0..n {
        assert!(m.remove(&p(&format!("s.l{i}.*")), &i));
        assert!(m.remove(&p(&format!("e.l{i}")), &(1000 + i)));
    }
    assert!(m.is_empty() && m.root.is_none());
    assert_eq!(m.exact.len(), 0);
}

#[test]
fn more_live_states_than_the_inline_sets_hold_falls_back_correctly() {
    // Every combination of `a` and `*` over 6 levels: matching a.a.a.a.a.a
    // keeps 2^k states live after level k, past the inline capacity.
    let mut m = Matcher::new();
    let mut pairs = Vec::new();
    for bits in 0..64u32 {
        let text: Vec<&str> = (0..6)
            .map(|i| if bits >> i & 1 == 1 { "*" } else { "a" })
            .collect();
        let pat = p(&text.join("."));
        m.insert(&pat, bits);
        pairs.push((pat, bits));
    }
    // And as many distinct live `#` states.
    for i in 0..40u32 {
        let pat = p(&format!("{}.#", vec!["*"; (i % 5 + 1) as usize].join(".")));
        m.insert(&pat, 100 + i);
        pairs.push((pat, 100 + i));
    }
    const { assert!(64 > trie::INLINE) };
    for topic in ["a.a.a.a.a.a", "a.a.a.a.a", "a.b.a.a.a.a", "a.a.a.a.a.a.a"] {
        let topic = t(topic);
        assert_eq!(
            sorted(m.matches(&topic)),
            reference(&pairs, &topic),
            "{topic}"
        );
    }
    assert_eq!(m.matches(&t("a.a.a.a.a.a")).len(), 64 + 40);
}

#[test]
fn tails_longer_than_the_length_mask_and_deeper_than_the_inline_levels() {
    // 70-level tails after `#` (past the 64-length mask, so found through
    // the length list) against 80-level topics (past the 32 inline levels,
    // so matched on the heap path), beside a short tail on the same `#`.
    let wide = crate::Limits {
        max_len: 1024,
        max_depth: 100,
    };
    let levels = |n: usize, last: &str| {
        let mut v: Vec<String> = (0..n - 1).map(|i| format!("l{i}")).collect();
        v.push(last.to_string());
        v.join(".")
    };
    let long_tail = levels(70, "end");
    let mut m = Matcher::new();
    let pat = Pattern::parse_with(&format!("x.#.{long_tail}"), &wide).unwrap();
    m.insert(&pat, 1);
    m.insert(&p("x.#.end"), 2);
    let hit = Topic::parse_with(&format!("x.a.b.{long_tail}"), &wide).unwrap();
    let miss = Topic::parse_with(&format!("x.a.b.{}", levels(70, "other")), &wide).unwrap();
    let exact_len = Topic::parse_with(&format!("x.{long_tail}"), &wide).unwrap();
    assert_eq!(sorted(m.matches(&hit)), [1, 2]);
    assert!(m.matches(&miss).is_empty());
    assert_eq!(
        sorted(m.matches(&exact_len)),
        [1, 2],
        "`#` matches zero levels"
    );
    for topic in [&hit, &miss, &exact_len] {
        assert_eq!(
            sorted(m.matches(topic)),
            {
                let mut r: Vec<u32> = [(&pat, 1), (&p("x.#.end"), 2)]
                    .into_iter()
                    .filter(|(q, _)| q.matches(topic))
                    .map(|(_, v)| v)
                    .collect();
                r.sort_unstable();
                r
            },
            "{topic}"
        );
    }
}

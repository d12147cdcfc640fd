use super::*;

fn topic_err(s: &str) -> (TopicErrorKind, usize) {
    let e = Topic::parse(s).expect_err(s);
    (e.kind().clone(), e.position())
}

fn pattern_err(s: &str) -> (TopicErrorKind, usize) {
    let e = Pattern::parse(s).expect_err(s);
    (e.kind().clone(), e.position())
}

#[test]
fn error_kinds_and_positions_for_topics() {
    use TopicErrorKind::*;
    let cases: &[(&str, TopicErrorKind, usize)] = &[
        ("", Empty, 0),
        (".", EmptyLevel, 0),
        (".a", EmptyLevel, 0),
        ("a.", EmptyLevel, 2),
        ("a..b", EmptyLevel, 2),
        ("a b", InvalidChar(' '), 1),
        ("a\tb", InvalidChar('\t'), 1),
        ("a.b\n", InvalidChar('\n'), 3),
        ("\u{7f}", InvalidChar('\u{7f}'), 0),
        ("a.\u{a0}", InvalidChar('\u{a0}'), 2), // no-break space
        ("é.\u{2028}", InvalidChar('\u{2028}'), 3), // line separator after a 2-byte char
        ("a.\u{85}", InvalidChar('\u{85}'), 2), // C1 control
        ("a.*", WildcardInTopic('*'), 2),
        ("#", WildcardInTopic('#'), 0),
        ("a.b#c", WildcardInTopic('#'), 3),
    ];
    for (input, kind, pos) in cases {
        assert_eq!(topic_err(input), (kind.clone(), *pos), "input {input:?}");
    }
}

#[test]
fn error_kinds_and_positions_for_patterns() {
    use TopicErrorKind::*;
    let cases: &[(&str, TopicErrorKind, usize)] = &[
        ("", Empty, 0),
        ("a..#", EmptyLevel, 2),
        ("#.", EmptyLevel, 2),
        ("a*", MisplacedWildcard('*'), 1),
        ("a.#b", MisplacedWildcard('#'), 2),
        ("**", MisplacedWildcard('*'), 0),
        ("a.##", MisplacedWildcard('#'), 2),
        ("*#", MisplacedWildcard('*'), 0),
        ("a.b*.c", MisplacedWildcard('*'), 3),
        ("* .a", MisplacedWildcard('*'), 0), // leftmost error wins
        ("*.a b", InvalidChar(' '), 3),
        ("a.\u{0}", InvalidChar('\u{0}'), 2),
    ];
    for (input, kind, pos) in cases {
        assert_eq!(pattern_err(input), (kind.clone(), *pos), "input {input:?}");
    }
}

#[test]
fn length_and_depth_limits() {
    let max_len = "a".repeat(255);
    assert!(Topic::parse(&max_len).is_ok());
    let too_long = "a".repeat(256);
    assert_eq!(
        topic_err(&too_long),
        (TopicErrorKind::TooLong { max: 255 }, 255)
    );

    let deep = vec!["x"; 32].join(".");
    assert_eq!(Topic::parse(&deep).map(|t| t.depth()), Ok(32));
    let too_deep = vec!["x"; 33].join(".");
    // The 33rd level starts at byte 64.
    assert_eq!(
        topic_err(&too_deep),
        (TopicErrorKind::TooDeep { max: 32 }, 64)
    );
    assert_eq!(
        pattern_err(&vec!["#"; 33].join(".")),
        (TopicErrorKind::TooDeep { max: 32 }, 64)
    );

    let custom = Limits {
        max_len: 5,
        max_depth: 2,
    };
    assert_eq!(
        Topic::parse_with("abcdef", &custom).map_err(|e| (e.kind().clone(), e.position())),
        Err((TopicErrorKind::TooLong { max: 5 }, 5))
    );
    assert_eq!(
        Pattern::parse_with("a.b.c", &custom).map_err(|e| (e.kind().clone(), e.position())),
        Err((TopicErrorKind::TooDeep { max: 2 }, 4))
    );
}

/// Found by the `topic_parse` fuzz target: a 4-byte character straddling the
/// 255-byte limit made `TooLong` point inside the character.
#[test]
fn too_long_points_at_a_char_boundary() {
    let s = format!("{}\u{f3333}rest", "a".repeat(253));
    let e = Topic::parse(&s).unwrap_err();
    assert_eq!(e.kind(), &TopicErrorKind::TooLong { max: 255 });
    assert_eq!(e.position(), 253);
    assert!(s.is_char_boundary(e.position()));
    let e = Pattern::parse(&s).unwrap_err();
    assert_eq!(e.position(), 253);
}

#[test]
fn valid_inputs_are_accepted_verbatim() {
    for s in [
        "a",
        "orders.eu.created",
        "Sensor.Ünïcode.温度",
        "a-b_c:d/e",
        "1.2.3",
    ] {
        let t = Topic::parse(s).expect(s);
        assert_eq!(t.as_str(), s);
        assert_eq!(t.to_string(), s);
        assert_eq!(t.levels().count(), t.depth());
    }
    for s in [
        "#",
        "*",
        "#.#",
        "a.#.z",
        "#.created",
        "#.b.#",
        "*.*.*",
        "a.*.#",
    ] {
        let p = Pattern::parse(s).expect(s);
        assert_eq!(p.as_str(), s);
        assert!(!p.is_exact());
    }
    assert!(Pattern::parse("a.b").unwrap().is_exact());
}

#[test]
fn traits_agree_with_parse() {
    let t: Topic = "a.b".parse().unwrap();
    assert_eq!(t, Topic::try_from("a.b").unwrap());
    assert_eq!(AsRef::<str>::as_ref(&t), "a.b");
    assert_eq!(format!("{t:?}"), "Topic(\"a.b\")");
    let p: Pattern = "a.#".parse().unwrap();
    assert_eq!(format!("{p:?}"), "Pattern(\"a.#\")");
    assert!("a..b".parse::<Pattern>().is_err());
    assert_eq!(
        Topic::parse("a b").unwrap_err().to_string(),
        "invalid topic at byte 1: whitespace or control character ' '"
    );
}

/// The semantics, written out by hand from the rules (not derived from the
/// implementation): (pattern, topic, expected).
pub(crate) const SEMANTICS: &[(&str, &str, bool)] = &[
    // exact
    ("a.b.c", "a.b.c", true),
    ("a.b.c", "a.b", false),
    ("a.b", "a.b.c", false),
    ("a.B", "a.b", false), // case-sensitive
    // `*` at every position
    ("*", "a", true),
    ("*", "a.b", false),
    ("*.b.c", "a.b.c", true),
    ("a.*.c", "a.b.c", true),
    ("a.b.*", "a.b.c", true),
    ("a.b.*", "a.b", false),
    ("*.*", "a.b", true),
    ("*.*", "a", false),
    // trailing `#`
    ("a.#", "a", true),
    ("a.#", "a.b", true),
    ("a.#", "a.b.c.d", true),
    ("a.#", "b.a", false),
    ("#", "a", true),
    ("#", "a.b.c", true),
    // leading `#`
    ("#.created", "created", true),
    ("#.created", "orders.eu.created", true),
    ("#.created", "orders.created.eu", false),
    // middle `#`
    ("a.#.z", "a.z", true),
    ("a.#.z", "a.b.z", true),
    ("a.#.z", "a.b.c.d.z", true),
    ("a.#.z", "a.b.c", false),
    ("a.#.z", "z", false),
    // repeated `#`
    ("#.#", "a", true),
    ("#.b.#", "b", true),
    ("#.b.#", "a.b.c", true),
    ("#.b.#", "a.c", false),
    ("a.#.#.z", "a.z", true),
    ("#.a.#.a.#", "a.a", true),
    ("#.a.#.a.#", "x.a.y.y.a.x", true),
    ("#.a.#.a.#", "x.a.y", false),
    // mixed
    ("*.#", "a", true),
    ("*.#", "a.b.c", true),
    ("#.*", "a", true),
    ("#.*.c", "c", false),
    ("#.*.c", "b.c", true),
    ("*.#.*", "a", false),
    ("*.#.*", "a.b", true),
    ("a.*.#.d", "a.b.d", true),
    ("a.*.#.d", "a.d", false),
    // a literal tail after `#` may only match levels after the `#`
    ("a.b.#.b", "a.b", false),
    ("a.b.#.b", "a.b.b", true),
    ("a.#.a", "a", false),
    ("a.#.a", "a.a", true),
    ("#.a.b", "a", false),
    ("#.a.b", "b.a.b", true),
    ("*.#.a.b", "a.b", false),
    ("*.#.a.b", "x.a.b", true),
];

#[test]
fn reference_semantics_table() {
    for &(p, t, want) in SEMANTICS {
        let got = Pattern::parse(p)
            .unwrap()
            .matches(&Topic::parse(t).unwrap());
        assert_eq!(got, want, "pattern {p:?} vs topic {t:?}");
    }
}

#[test]
fn reference_matcher_is_polynomial_with_many_hashes() {
    // 15 `#` against a 31-level topic that never matches the final literal:
    // a backtracking matcher explores C(46, 15) paths here.
    let p = Pattern::parse(&format!("{}.z", vec!["#"; 15].join("."))).unwrap();
    let t = Topic::parse(&vec!["a"; 31].join(".")).unwrap();
    assert!(!p.matches(&t));
    let t = Topic::parse(&format!("{}.z", vec!["a"; 30].join("."))).unwrap();
    assert!(p.matches(&t));
}

#[cfg(feature = "serde")]
#[test]
fn serde_validates_on_the_way_in() {
    let t: Topic = serde_json::from_str("\"a.b\"").unwrap();
    assert_eq!(serde_json::to_string(&t).unwrap(), "\"a.b\"");
    assert!(serde_json::from_str::<Topic>("\"a.*\"").is_err());
    let p: Pattern = serde_json::from_str("\"a.*\"").unwrap();
    assert_eq!(p.as_str(), "a.*");
    assert!(serde_json::from_str::<Pattern>("\"a*\"").is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary strings biased towards the interesting alphabet.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just('a'), 2 => Just('b'), 3 => Just('.'), 2 => Just('*'),
                2 => Just('#'), 1 => Just(' '), 1 => Just('é'), 1 => Just('\u{2028}'),
                1 => any::<char>(),
            ],
            0..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_errors_point_inside(s in text()) {
            for r in [Topic::parse(&s).err(), Pattern::parse(&s).err()].into_iter().flatten() {
                prop_assert!(r.position() <= s.len());
                prop_assert!(s.is_char_boundary(r.position()));
            }
        }

        #[test]
        fn parse_display_parse_round_trips(s in text()) {
            if let Ok(t) = Topic::parse(&s) {
                let again = Topic::parse(&format!("{t}")).unwrap();
                prop_assert_eq!(&again, &t);
                // Every topic is also a valid, exact pattern matching itself.
                let p = Pattern::parse(&s).unwrap();
                prop_assert!(p.is_exact() && p.matches(&t));
            }
            if let Ok(p) = Pattern::parse(&s) {
                prop_assert_eq!(Pattern::parse(&format!("{p}")).unwrap(), p);
            }
        }
    }
}

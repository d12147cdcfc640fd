//! Fuzz harnesses for topicbus, kept apart from the 3-line targets so a
//! stable-toolchain test (`tests/fuzz_corpus.rs` in the main crate) replays
//! the checked-in corpora through exactly the same code.

use topicbus::matcher::Matcher;
use topicbus::{Pattern, Topic};

/// Topic parsing never panics; an error points inside the input at a char
/// boundary; a parsed topic round-trips through `Display` and is an exact
/// pattern matching itself.
pub fn topic_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Topic::parse(s) {
        Ok(t) => {
            assert_eq!(t.as_str(), s);
            assert_eq!(Topic::parse(&format!("{t}")).as_ref(), Ok(&t));
            assert_eq!(t.levels().count(), t.depth());
            let p = Pattern::parse(s).expect("a topic is a valid pattern");
            assert!(p.is_exact() && p.matches(&t));
        }
        Err(e) => {
            assert!(e.position() <= s.len(), "{e} outside {s:?}");
            assert!(s.is_char_boundary(e.position()));
        }
    }
}

/// Pattern parsing never panics; errors point inside the input; a parsed
/// pattern round-trips.
pub fn pattern_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Pattern::parse(s) {
        Ok(p) => {
            assert_eq!(p.as_str(), s);
            assert_eq!(Pattern::parse(&format!("{p}")).as_ref(), Ok(&p));
            assert_eq!(p.levels().count(), p.depth());
        }
        Err(e) => {
            assert!(e.position() <= s.len(), "{e} outside {s:?}");
            assert!(s.is_char_boundary(e.position()));
        }
    }
}

/// Reads a dotted string of `len` levels from a small alphabet chosen so that
/// patterns and topics collide often.
fn levels(bytes: &mut impl Iterator<Item = u8>, len: usize, wildcards: bool) -> String {
    const LIT: [&str; 5] = ["a", "b", "c", "orders", "eu"];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let b = bytes.next().unwrap_or(0);
        let level = match (wildcards, b % 8) {
            (true, 6) => "*",
            (true, 7) => "#",
            (_, k) => LIT[k as usize % LIT.len()],
        };
        out.push(level);
    }
    out.join(".")
}

/// Differential: a random sequence of inserts and removes, after each of
/// which the compiled matcher (and every older clone of it) must agree with
/// the reference `Pattern::matches` scan on a handful of topics. Depths up to
/// 32 levels include the pathological many-`#` patterns.
pub fn matcher_diff(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut m: Matcher<u8> = Matcher::new();
    let mut pairs: Vec<(Pattern, u8)> = Vec::new();
    let mut versions = Vec::new();
    let topics: Vec<Topic> = (0..4)
        .map(|_| {
            let depth = 1 + bytes.next().unwrap_or(0) as usize % 32;
            Topic::parse(&levels(&mut bytes, depth, false)).expect("valid topic")
        })
        .collect();
    while let Some(op) = bytes.next() {
        let depth = 1 + bytes.next().unwrap_or(0) as usize % 32;
        let pattern = Pattern::parse(&levels(&mut bytes, depth, true)).expect("valid pattern");
        let value = op >> 2 & 7;
        match op % 4 {
            0 | 1 => {
                let fresh = !pairs.contains(&(pattern.clone(), value));
                assert_eq!(m.insert(&pattern, value), fresh);
                if fresh {
                    pairs.push((pattern, value));
                }
            }
            2 => {
                let before = pairs.len();
                pairs.retain(|x| *x != (pattern.clone(), value));
                assert_eq!(m.remove(&pattern, &value), pairs.len() < before);
            }
            _ => {
                let before = pairs.len();
                pairs.retain(|x| x.1 != value);
                assert_eq!(m.remove_value(&value), before - pairs.len());
            }
        }
        assert_eq!(m.len(), pairs.len());
        check(&m, &pairs, &topics);
        if versions.len() < 16 {
            versions.push((m.clone(), pairs.clone()));
        }
    }
    for (old, old_pairs) in &versions {
        check(old, old_pairs, &topics);
    }
}

fn check(m: &Matcher<u8>, pairs: &[(Pattern, u8)], topics: &[Topic]) {
    for t in topics {
        let mut got = m.matches(t).to_vec();
        got.sort_unstable();
        let before = got.len();
        got.dedup();
        assert_eq!(got.len(), before, "duplicate result for {t}");
        let mut want: Vec<u8> = pairs
            .iter()
            .filter(|(p, _)| p.matches(t))
            .map(|(_, v)| *v)
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(got, want, "topic {t}");
    }
}

/// Envelope decoding never panics, whatever the bytes, signed or not; what
/// decodes re-encodes (in either encoding) and decodes to the same message.
#[cfg(feature = "envelope")]
pub fn envelope_decode(data: &[u8]) {
    use topicbus::envelope::{Codec, Encoding, KeyRing};
    type Payload = (u32, String, Option<Vec<u8>>);
    let ring = KeyRing::new("k1", [7u8; 32]).expect("a valid key");
    for codec in [Codec::unsigned(), Codec::signed(ring)] {
        let Ok(first) = codec.decode::<Payload>(data) else {
            continue;
        };
        let a = &first.message;
        for encoding in [Encoding::Binary, Encoding::Json] {
            let codec = codec.clone().encoding(encoding);
            let bytes = codec.encode(a, &first.origin).expect("re-encodes");
            let again = codec.decode::<Payload>(&bytes).expect("decodes again");
            let b = &again.message;
            assert_eq!(again.origin, first.origin);
            assert_eq!(
                (a.id(), a.topic(), a.payload()),
                (b.id(), b.topic(), b.payload())
            );
            assert_eq!(a.headers(), b.headers());
            assert_eq!((a.priority(), a.attempt()), (b.priority(), b.attempt()));
            assert_eq!(
                (a.timestamp(), a.expires_at()),
                (b.timestamp(), b.expires_at())
            );
            assert_eq!(
                (a.correlation_id(), a.causation_id()),
                (b.correlation_id(), b.causation_id())
            );
            assert_eq!(
                (a.from(), a.to(), a.reply_to()),
                (b.from(), b.to(), b.reply_to())
            );
        }
    }
}

//! Redis PSUBSCRIBE globs for topicbus patterns.
//!
//! In a Redis glob `*` matches across dots and `#` is a plain character, so
//! a pattern becomes a glob that matches a *superset* of its channels, and
//! every message read is filtered through topicbus's own matcher.

use crate::Pattern;

/// Escapes the glob metacharacters of a literal.
fn escape(out: &mut String, literal: &str) {
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The glob for channels `prefix` + a topic matching `pattern`: literal
/// levels as themselves, `*` as `*`, and everything from the first `#` on
/// as `*` (a `#` may match zero levels, so its dot goes too).
pub(crate) fn glob(prefix: &str, pattern: &Pattern) -> String {
    let mut out = String::with_capacity(prefix.len() + pattern.as_str().len() + 1);
    escape(&mut out, prefix);
    for (i, level) in pattern.as_str().split('.').enumerate() {
        match level {
            "#" => {
                out.push('*');
                return out;
            }
            _ if i > 0 => out.push('.'),
            _ => {}
        }
        match level {
            "*" => out.push('*'),
            literal => escape(&mut out, literal),
        }
    }
    out
}

/// The globs for `patterns`, without those another glob of the set
/// already covers (a connection gets one copy per matching glob).
pub(crate) fn globs(prefix: &str, patterns: &[Pattern]) -> Vec<String> {
    let all: Vec<String> = patterns.iter().map(|p| glob(prefix, p)).collect();
    let catch_all = {
        let mut s = String::new();
        escape(&mut s, prefix);
        s.push('*');
        s
    };
    if all.contains(&catch_all) {
        return vec![catch_all];
    }
    let mut out: Vec<String> = Vec::with_capacity(all.len());
    for g in all {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis's glob semantics for the subset used here: `*` any run,
    /// `\x` a literal x, everything else itself.
    fn redis_glob_matches(glob: &[u8], s: &[u8]) -> bool {
        match glob.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| redis_glob_matches(rest, &s[i..])),
            Some((b'\\', rest)) => match (rest.split_first(), s.split_first()) {
                (Some((g, rest)), Some((c, tail))) if g == c => redis_glob_matches(rest, tail),
                _ => false,
            },
            Some((g, rest)) => s
                .split_first()
                .is_some_and(|(c, tail)| c == g && redis_glob_matches(rest, tail)),
        }
    }

    #[test]
    fn globs_as_expected() {
        let g = |p: &str| glob("tb:", &Pattern::parse(p).unwrap());
        assert_eq!(g("orders.eu.created"), "tb:orders.eu.created");
        assert_eq!(g("orders.*.created"), "tb:orders.*.created");
        assert_eq!(g("orders.#"), "tb:orders*");
        assert_eq!(g("#"), "tb:*");
        assert_eq!(g("#.created"), "tb:*");
        assert_eq!(g("a.#.z"), "tb:a*");
        assert_eq!(g("a?b.[x]"), "tb:a\\?b.\\[x\\]");
        assert_eq!(glob("p*", &Pattern::parse("a").unwrap()), "p\\*a");
    }

    #[test]
    fn a_glob_matches_every_channel_its_pattern_matches() {
        let patterns = [
            "a", "a.b", "a.*", "*.b", "a.#", "#", "#.b", "a.#.b", "*.*", "a.*.#", "#.a.#", "x?y.*",
            "[z].#",
        ];
        let topics = [
            "a", "a.b", "a.c", "b", "a.b.c", "c.b", "a.x.y.b", "x?y.1", "[z]", "[z].q", "ab",
        ];
        for p in patterns {
            let pattern = Pattern::parse(p).unwrap();
            let glob = glob("tb:", &pattern);
            for t in topics {
                let topic = crate::Topic::parse(t).unwrap();
                if pattern.matches(&topic) {
                    let channel = format!("tb:{t}");
                    assert!(
                        redis_glob_matches(glob.as_bytes(), channel.as_bytes()),
                        "{p} matches {t} but {glob} misses {channel}"
                    );
                }
            }
        }
    }

    #[test]
    fn covered_globs_are_dropped() {
        let ps = |ps: &[&str]| {
            ps.iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(globs("tb:", &ps(&["a.#", "b", "#"])), ["tb:*"]);
        assert_eq!(globs("tb:", &ps(&["a.#", "a.#.c", "b"])), ["tb:a*", "tb:b"]);
    }
}

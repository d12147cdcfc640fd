//! Topics and patterns: parsed once, valid by construction.
//!
//! A [`Topic`] names where a message is published (`orders.eu.created`); a
//! [`Pattern`] says which topics a subscription wants (`orders.*.created`,
//! `orders.#`). Both are a non-empty sequence of non-empty *levels* separated
//! by `.`. Parsing checks every rule once and stores the text in an `Arc<str>`,
//! so clones are cheap and a value in hand is always valid.
//!
//! # Rules
//!
//! | rule | topic | pattern |
//! |---|---|---|
//! | at least one level, no empty level (`a..b`, `.a`, `a.`) | ✓ | ✓ |
//! | at most [`Limits::max_len`] bytes (default 255) | ✓ | ✓ |
//! | at most [`Limits::max_depth`] levels (default 32) | ✓ | ✓ |
//! | no whitespace or control characters | ✓ | ✓ |
//! | `*` and `#` | rejected anywhere | only as a whole level |
//!
//! In a pattern, `*` matches exactly one level and `#` matches zero or more
//! levels; any number of `#` may appear anywhere (`#.created`, `a.#.z`,
//! `#.b.#`). A level such as `a*`, `#b` or `**` is an error, never a literal.
//! Matching is byte-exact and case-sensitive.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The level separator.
///
/// # Examples
///
/// ```
/// use topicbus::{Topic, SEPARATOR};
/// let t = Topic::parse("orders.eu.created")?;
/// assert_eq!(t.as_str().split(SEPARATOR).count(), 3);
/// # Ok::<(), topicbus::TopicError>(())
/// ```
pub const SEPARATOR: char = '.';
/// The single-level wildcard: matches exactly one level.
///
/// # Examples
///
/// ```
/// use topicbus::{Level, Pattern, STAR};
/// let p = Pattern::parse(&format!("orders.{STAR}.created"))?;
/// assert_eq!(p.levels().nth(1), Some(Level::Star));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
pub const STAR: &str = "*";
/// The multi-level wildcard: matches zero or more levels.
///
/// # Examples
///
/// ```
/// use topicbus::{Pattern, Topic, HASH};
/// let p = Pattern::parse(&format!("orders.{HASH}"))?;
/// assert!(p.matches(&Topic::parse("orders")?)); // zero levels
/// assert!(p.matches(&Topic::parse("orders.eu.created")?));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
pub const HASH: &str = "#";

/// Size limits applied when parsing topics and patterns.
///
/// # Examples
///
/// ```
/// use topicbus::{Limits, Topic};
///
/// let strict = Limits { max_len: 16, max_depth: 3 };
/// assert!(Topic::parse_with("a.b.c", &strict).is_ok());
/// assert!(Topic::parse_with("a.b.c.d", &strict).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Maximum length in bytes (default 255).
    pub max_len: usize,
    /// Maximum number of levels (default 32).
    pub max_depth: usize,
}

impl Limits {
    /// The default limits: 255 bytes and 32 levels.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Limits, Topic};
    /// assert_eq!((Limits::DEFAULT.max_len, Limits::DEFAULT.max_depth), (255, 32));
    /// assert_eq!(Limits::default(), Limits::DEFAULT);
    /// assert!(Topic::parse_with(&"a.".repeat(32)[..63], &Limits::DEFAULT).is_ok()); // 32 levels
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub const DEFAULT: Limits = Limits {
        max_len: 255,
        max_depth: 32,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which rule a topic or pattern broke.
///
/// # Examples
///
/// ```
/// use topicbus::{Topic, TopicErrorKind};
///
/// let err = Topic::parse("orders..created").unwrap_err();
/// assert_eq!(err.kind(), &TopicErrorKind::EmptyLevel);
/// assert_eq!(err.position(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicErrorKind {
    /// The input is the empty string.
    Empty,
    /// A level is empty: a leading, trailing or doubled `.`.
    EmptyLevel,
    /// The input is longer than the byte limit.
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The input has more levels than the depth limit.
    TooDeep {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A whitespace or control character.
    InvalidChar(char),
    /// A wildcard (`*` or `#`) in a topic, where wildcards are not allowed.
    WildcardInTopic(char),
    /// A wildcard that is not a whole level of a pattern (`a*`, `#b`, `**`).
    MisplacedWildcard(char),
}

impl fmt::Display for TopicErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty topic"),
            Self::EmptyLevel => f.write_str("empty level (leading, trailing or doubled '.')"),
            Self::TooLong { max } => write!(f, "longer than {max} bytes"),
            Self::TooDeep { max } => write!(f, "more than {max} levels"),
            Self::InvalidChar(c) => write!(f, "whitespace or control character {c:?}"),
            Self::WildcardInTopic(c) => {
                write!(
                    f,
                    "wildcard {c:?} in a topic (wildcards belong in patterns)"
                )
            }
            Self::MisplacedWildcard(c) => {
                write!(f, "wildcard {c:?} must be a whole level, like 'a.{c}.b'")
            }
        }
    }
}

/// A topic or pattern failed validation: which rule, and at which byte.
///
/// `position` is a byte offset into the input, always `<= input.len()` and on
/// a character boundary; for [`TopicErrorKind::TooLong`] it is the start of the
/// first character that does not fit within the limit, and for
/// [`TopicErrorKind::TooDeep`] the first byte of the first level past it.
///
/// # Examples
///
/// ```
/// use topicbus::{Pattern, TopicErrorKind};
///
/// let err = Pattern::parse("orders.eu*").unwrap_err();
/// assert_eq!(err.kind(), &TopicErrorKind::MisplacedWildcard('*'));
/// assert_eq!(err.position(), 9);
/// assert_eq!(
///     err.to_string(),
///     "invalid topic at byte 9: wildcard '*' must be a whole level, like 'a.*.b'"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid topic at byte {position}: {kind}")]
pub struct TopicError {
    kind: TopicErrorKind,
    position: usize,
}

impl TopicError {
    #[cold]
    fn new(kind: TopicErrorKind, position: usize) -> Self {
        Self { kind, position }
    }

    /// Which rule was broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Topic, TopicErrorKind};
    /// let err = Topic::parse("a..b").unwrap_err();
    /// assert!(matches!(err.kind(), TopicErrorKind::EmptyLevel));
    /// ```
    pub fn kind(&self) -> &TopicErrorKind {
        &self.kind
    }

    /// The byte offset in the input where the rule was broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Topic;
    /// let err = Topic::parse("a..b").unwrap_err();
    /// assert_eq!(err.position(), 2);
    /// ```
    pub fn position(&self) -> usize {
        self.position
    }
}

/// One level of a parsed pattern.
///
/// # Examples
///
/// ```
/// use topicbus::{Level, Pattern};
///
/// let p = Pattern::parse("orders.*.#").unwrap();
/// let levels: Vec<Level<'_>> = p.levels().collect();
/// assert_eq!(levels, [Level::Literal("orders"), Level::Star, Level::Hash]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level<'a> {
    /// A literal level, matched byte-exactly.
    Literal(&'a str),
    /// `*`: exactly one level.
    Star,
    /// `#`: zero or more levels.
    Hash,
}

impl<'a> Level<'a> {
    fn of(level: &'a str) -> Self {
        match level {
            STAR => Level::Star,
            HASH => Level::Hash,
            literal => Level::Literal(literal),
        }
    }
}

/// Whether wildcards are allowed as whole levels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Topic,
    Pattern,
}

/// Validates `s` in one pass; see [`Scan`] for what it reports.
///
/// One pass over the bytes, reporting the leftmost broken rule (after the
/// length check, which needs no scan). Non-ASCII characters are decoded only
/// to reject Unicode whitespace and controls.
/// What one validation pass learned about a valid input.
struct Scan {
    depth: usize,
    /// Some level is a wildcard (`*` or `#`); only possible for patterns.
    wildcard: bool,
}

fn validate(s: &str, limits: &Limits, mode: Mode) -> Result<Scan, TopicError> {
    if s.is_empty() {
        return Err(TopicError::new(TopicErrorKind::Empty, 0));
    }
    if s.len() > limits.max_len {
        // Point at the first character that does not fit entirely: the limit
        // may fall inside a multi-byte character.
        let mut at = limits.max_len;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        return Err(TopicError::new(
            TopicErrorKind::TooLong {
                max: limits.max_len,
            },
            at,
        ));
    }
    let bytes = s.as_bytes();
    let mut depth = 1usize;
    let mut wildcard = false;
    let mut level_start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                if i == level_start {
                    return Err(TopicError::new(TopicErrorKind::EmptyLevel, i));
                }
                depth += 1;
                if depth > limits.max_depth {
                    let max = limits.max_depth;
                    return Err(TopicError::new(TopicErrorKind::TooDeep { max }, i + 1));
                }
                level_start = i + 1;
                i += 1;
            }
            b @ (b'*' | b'#') => {
                let c = b as char;
                if mode == Mode::Topic {
                    return Err(TopicError::new(TopicErrorKind::WildcardInTopic(c), i));
                }
                let whole_level = i == level_start && bytes.get(i + 1).is_none_or(|&n| n == b'.');
                if !whole_level {
                    return Err(TopicError::new(TopicErrorKind::MisplacedWildcard(c), i));
                }
                wildcard = true;
                i += 1;
            }
            b if b < 0x80 => {
                if b <= b' ' || b == 0x7f {
                    return Err(TopicError::new(TopicErrorKind::InvalidChar(b as char), i));
                }
                i += 1;
            }
            _ => {
                // `i` is a char boundary: we only ever step over whole chars.
                let c = s[i..].chars().next().unwrap_or('\u{fffd}');
                if c.is_whitespace() || c.is_control() {
                    return Err(TopicError::new(TopicErrorKind::InvalidChar(c), i));
                }
                i += c.len_utf8();
            }
        }
    }
    if level_start == bytes.len() {
        return Err(TopicError::new(TopicErrorKind::EmptyLevel, level_start));
    }
    Ok(Scan { depth, wildcard })
}

/// A validated, concrete topic such as `orders.eu.created`.
///
/// Cloning is cheap (the text is shared). Equality, ordering and hashing are
/// those of the text.
///
/// # Examples
///
/// ```
/// use topicbus::Topic;
///
/// let t = Topic::parse("orders.eu.created")?;
/// assert_eq!(t.depth(), 3);
/// assert_eq!(t.levels().collect::<Vec<_>>(), ["orders", "eu", "created"]);
/// assert!(Topic::parse("orders.*").is_err()); // wildcards belong in patterns
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic {
    text: Arc<str>,
    depth: u32,
    /// The text's key in the matcher's exact map (a function of the text,
    /// so the derived comparisons stay those of the text).
    key: u32,
}

impl Topic {
    /// Parses a topic with the default [`Limits`].
    ///
    /// # Errors
    ///
    /// Returns a [`TopicError`] naming the rule and the byte position when the
    /// input is empty, has an empty level, is longer than 255 bytes or deeper
    /// than 32 levels, contains whitespace or a control character, or contains
    /// a wildcard (`*`, `#`).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Topic;
    /// assert_eq!(Topic::parse("a.b")?.as_str(), "a.b");
    /// assert_eq!(Topic::parse("a b").unwrap_err().position(), 1);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with(s, &Limits::DEFAULT)
    }

    /// Parses a topic with the given [`Limits`].
    ///
    /// # Errors
    ///
    /// As [`Topic::parse`], with the given limits instead of the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Limits, Topic};
    /// let wide = Limits { max_len: 1024, max_depth: 64 };
    /// assert!(Topic::parse_with(&"a.".repeat(40).trim_end_matches('.'), &wide).is_ok());
    /// ```
    pub fn parse_with(s: &str, limits: &Limits) -> Result<Self, TopicError> {
        let depth = validate(s, limits, Mode::Topic)?.depth;
        Ok(Self {
            text: Arc::from(s),
            // `depth <= s.len()`, and a topic longer than u32::MAX bytes is
            // not representable in practice; saturate rather than wrap.
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            key: crate::sync::topic_key(s),
        })
    }

    /// The text's key in the matcher's exact-pattern map.
    #[inline]
    pub(crate) fn key(&self) -> u32 {
        self.key
    }

    /// The topic text.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Topic;
    /// assert_eq!(Topic::parse("a.b").unwrap().as_str(), "a.b");
    /// ```
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The number of levels (at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Topic;
    /// assert_eq!(Topic::parse("a.b.c").unwrap().depth(), 3);
    /// ```
    #[inline]
    pub fn depth(&self) -> usize {
        self.depth as usize
    }

    /// The levels, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Topic;
    /// let t = Topic::parse("sensor.lab.7.temp").unwrap();
    /// assert_eq!(t.levels().nth(2), Some("7"));
    /// ```
    #[inline]
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.text.split(SEPARATOR)
    }
}

/// A validated subscription pattern such as `orders.*.created` or `#.error`.
///
/// Cloning is cheap (the text is shared). Two patterns are equal when their
/// text is equal; `a.#.#` and `a.#` match the same topics but are different
/// patterns.
///
/// # Examples
///
/// ```
/// use topicbus::{Pattern, Topic};
///
/// let p = Pattern::parse("orders.#.created")?;
/// assert!(p.matches(&Topic::parse("orders.created")?));
/// assert!(p.matches(&Topic::parse("orders.eu.de.created")?));
/// assert!(!p.matches(&Topic::parse("orders.eu.updated")?));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    text: Arc<str>,
    depth: u32,
    exact: bool,
}

impl Pattern {
    /// Parses a pattern with the default [`Limits`].
    ///
    /// # Errors
    ///
    /// Returns a [`TopicError`] naming the rule and the byte position when the
    /// input is empty, has an empty level, is longer than 255 bytes or deeper
    /// than 32 levels, contains whitespace or a control character, or uses `*`
    /// or `#` inside a level instead of as a whole level.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Pattern;
    /// assert!(Pattern::parse("#.b.#").is_ok());
    /// assert!(Pattern::parse("a.#b").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with(s, &Limits::DEFAULT)
    }

    /// Parses a pattern with the given [`Limits`].
    ///
    /// # Errors
    ///
    /// As [`Pattern::parse`], with the given limits instead of the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Limits, Pattern};
    /// let tiny = Limits { max_len: 8, max_depth: 2 };
    /// assert!(Pattern::parse_with("a.#", &tiny).is_ok());
    /// assert!(Pattern::parse_with("a.#.b", &tiny).is_err());
    /// ```
    pub fn parse_with(s: &str, limits: &Limits) -> Result<Self, TopicError> {
        let scan = validate(s, limits, Mode::Pattern)?;
        let (depth, exact) = (scan.depth, !scan.wildcard);
        Ok(Self {
            text: Arc::from(s),
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            exact,
        })
    }

    /// The pattern text.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Pattern;
    /// assert_eq!(Pattern::parse("a.*").unwrap().as_str(), "a.*");
    /// ```
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shared text, so tables can key by it without copying.
    pub(crate) fn shared_text(&self) -> &Arc<str> {
        &self.text
    }

    /// The number of levels, wildcards included.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Pattern;
    /// assert_eq!(Pattern::parse("a.#").unwrap().depth(), 2);
    /// ```
    #[inline]
    pub fn depth(&self) -> usize {
        self.depth as usize
    }

    /// True when the pattern has no wildcard, so it matches exactly one topic.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::Pattern;
    /// assert!(Pattern::parse("a.b").unwrap().is_exact());
    /// assert!(!Pattern::parse("a.*").unwrap().is_exact());
    /// ```
    #[inline]
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The levels, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Level, Pattern};
    /// let p = Pattern::parse("a.*").unwrap();
    /// assert_eq!(p.levels().last(), Some(Level::Star));
    /// ```
    pub fn levels(&self) -> impl Iterator<Item = Level<'_>> + '_ {
        self.text.split(SEPARATOR).map(Level::of)
    }

    /// Whether this pattern matches `topic`: the reference definition of the
    /// semantics.
    ///
    /// This is a direct dynamic program over (pattern level, topic level)
    /// pairs, so it runs in `O(pattern depth × topic depth)` even with many
    /// `#`. It is meant as the oracle that the compiled
    /// [`Matcher`](crate::matcher::Matcher) is tested against; to route one
    /// topic against many patterns, use the matcher.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Pattern, Topic};
    /// let t = Topic::parse("a.b.c")?;
    /// assert!(Pattern::parse("a.*.c")?.matches(&t));
    /// assert!(Pattern::parse("#")?.matches(&t));
    /// assert!(Pattern::parse("a.b.c.#")?.matches(&t)); // `#` matches zero levels
    /// assert!(!Pattern::parse("a.*")?.matches(&t));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn matches(&self, topic: &Topic) -> bool {
        if self.exact {
            return *self.text == *topic.text;
        }
        let pattern: Vec<Level<'_>> = self.levels().collect();
        let topic: Vec<&str> = topic.levels().collect();
        let n = topic.len();
        // `row[j]` = pattern[i..] matches topic[j..], computed for i from the
        // end backwards; `next` holds the row for i + 1.
        let mut next = vec![false; n + 1];
        next[n] = true;
        let mut row = vec![false; n + 1];
        for level in pattern.iter().rev() {
            match *level {
                Level::Hash => {
                    row[n] = next[n];
                    for j in (0..n).rev() {
                        row[j] = next[j] || row[j + 1];
                    }
                }
                Level::Star => {
                    row[n] = false;
                    row[..n].copy_from_slice(&next[1..]);
                }
                Level::Literal(lit) => {
                    row[n] = false;
                    for j in 0..n {
                        row[j] = next[j + 1] && topic[j] == lit;
                    }
                }
            }
            std::mem::swap(&mut row, &mut next);
        }
        next[0]
    }
}

macro_rules! text_impls {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), &*self.text)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.text
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize<'de>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_impls!(Topic);
text_impls!(Pattern);

#[cfg(test)]
pub(crate) mod tests;

//! Message ids: 128-bit, time-ordered, monotonic per process.
//!
//! The layout is UUIDv7's (RFC 9562): 48 bits of Unix milliseconds, the
//! version `7`, 12 bits of sequence, the variant `10`, 4 more bits of
//! sequence and 58 random bits. The 16-bit sequence makes ids strictly
//! increasing within a process: every id comes from one `fetch_add` on a
//! process-wide counter holding `(milliseconds << 16) | sequence`, lifted to
//! the wall clock with `fetch_max` when it lags. All operations are RMWs on
//! one atomic, so the values handed out are unique and increase in the order
//! they are taken, across threads, without a lock or a retry loop. When more
//! than 65,536 ids are taken in one millisecond the sequence carries into
//! the millisecond field (the ids run briefly ahead of the clock, as RFC
//! 9562's monotonic method allows) rather than repeat.
//!
//! The time comes from the real wall clock, never from a message's (possibly
//! injected) timestamp: one message stamped in the future must not drag every
//! later id of the process with it.
//!
//! The random bits make ids from different processes collide with
//! negligible probability; they come from a per-thread SplitMix64 generator.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::statics::AtomicU64;

/// The process-wide id generator.
static GLOBAL: IdGen = IdGen::new();

/// An id sequence: `(unix milliseconds << 16) | sequence` of the last id
/// handed out. One per process ([`GLOBAL`]); tests make their own.
pub(crate) struct IdGen {
    last: AtomicU64,
}

impl IdGen {
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// The next id of this sequence, for a clock reading of `unix_nanos`
    /// (nanoseconds since the Unix epoch).
    #[inline]
    pub(crate) fn next(&self, unix_nanos: u64) -> MessageId {
        // Any u64 of nanoseconds is below 2^45 ms: the shift below cannot
        // overflow.
        let ms = unix_nanos / 1_000_000;
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed suffices: uniqueness and order come from the single
        // modification order of `last`; no other memory is published here.
        let mut v = self.last.fetch_add(1, Relaxed).wrapping_add(1);
        if v >> 16 < ms {
            self.last.fetch_max(ms << 16, Relaxed);
            v = self.last.fetch_add(1, Relaxed).wrapping_add(1);
        }
        let (ms_field, seq) = (v >> 16, v & 0xffff);
        let hi = (ms_field << 16) | 0x7000 | (seq >> 4);
        let lo = (0b10u64 << 62) | ((seq & 0xf) << 58) | (random() >> 6);
        MessageId([hi, lo])
    }
}

/// A message id: 128 bits, unique, ordered by creation time.
///
/// Ids taken in one process compare in the order they were taken (across
/// threads). `Display` gives the canonical UUID text form.
///
/// # Examples
///
/// ```
/// use topicbus::MessageId;
///
/// let a = MessageId::new();
/// let b = MessageId::new();
/// assert!(a < b);
/// assert_eq!(a.to_string().len(), 36); // 8-4-4-4-12 hex digits
/// assert_eq!(MessageId::from_u128(a.as_u128()), a);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
// High then low half: ordered as the u128, but 8-byte aligned, which keeps
// `Message` (and its `Arc` allocation) free of 16-byte alignment padding.
pub struct MessageId([u64; 2]);

impl MessageId {
    /// A fresh id, greater than every id this process took before.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::MessageId;
    /// let ids: Vec<_> = (0..100).map(|_| MessageId::new()).collect();
    /// assert!(ids.windows(2).all(|w| w[0] < w[1]));
    /// ```
    #[allow(clippy::new_without_default)] // a default id would be a random one: say so
    pub fn new() -> Self {
        GLOBAL.next(crate::time::unix_nanos())
    }

    /// A fresh id for a clock reading (`crate::time::unix_nanos`) taken just
    /// now.
    #[inline]
    pub(crate) fn at(unix_nanos: u64) -> Self {
        GLOBAL.next(unix_nanos)
    }

    /// The id from its 128-bit value (for ids read back from storage).
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::MessageId;
    /// assert_eq!(MessageId::from_u128(7).as_u128(), 7);
    /// ```
    pub const fn from_u128(value: u128) -> Self {
        Self([(value >> 64) as u64, value as u64])
    }

    /// The 128-bit value.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::MessageId;
    /// let id = MessageId::new();
    /// assert_eq!(id.as_u128() >> 76 & 0xf, 7); // the UUID version nibble
    /// ```
    pub const fn as_u128(self) -> u128 {
        (self.0[0] as u128) << 64 | self.0[1] as u128
    }

    /// The creation time encoded in the id, to the millisecond.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::MessageId;
    /// use std::time::{Duration, SystemTime};
    /// let id = MessageId::new();
    /// let age = SystemTime::now().duration_since(id.created_at()).unwrap_or_default();
    /// assert!(age < Duration::from_secs(60));
    /// ```
    pub fn created_at(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0[0] >> 16)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.as_u128();
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            (v & 0xffff_ffff_ffff) as u64
        )
    }
}

/// Text that is not a message id (see [`MessageId`]'s `FromStr`).
///
/// # Examples
///
/// ```
/// use topicbus::MessageId;
/// assert!("not-an-id".parse::<MessageId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id: want 32 hexadecimal digits, as 8-4-4-4-12 or plain")]
pub struct ParseMessageIdError;

impl std::str::FromStr for MessageId {
    type Err = ParseMessageIdError;

    /// Parses the [`Display`](fmt::Display) form (8-4-4-4-12 hexadecimal
    /// digits, any case) or the same 32 digits without hyphens.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::MessageId;
    /// let id = MessageId::new();
    /// assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hyphenated = s.len() == 36
            && s.char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
        let digits: &str = &if hyphenated {
            s.replace('-', "")
        } else {
            s.to_owned()
        };
        if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseMessageIdError);
        }
        u128::from_str_radix(digits, 16)
            .map(Self::from_u128)
            .map_err(|_| ParseMessageIdError)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

thread_local! {
    /// SplitMix64 state, seeded per thread from the process's random hasher
    /// seed, the thread and the time.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = crate::sync::hasher().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    std::thread::current().id().hash(&mut h);
    h.finish()
}

/// SplitMix64 (Steele, Lea, Flood 2014): one add and a mixing function.
fn random() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_from_their_text_and_nothing_else_does() {
        for v in [
            0u128,
            1,
            u128::MAX,
            MessageId::new().as_u128(),
            0xABCD << 64,
        ] {
            let id = MessageId::from_u128(v);
            let text = id.to_string();
            assert_eq!(text.parse(), Ok(id));
            assert_eq!(text.to_uppercase().parse(), Ok(id));
            assert_eq!(text.replace('-', "").parse(), Ok(id));
        }
        let good = MessageId::new().to_string();
        for bad in [
            String::new(),
            good[1..].to_owned(),
            format!("{good}0"),
            format!("-{}", &good[1..]),
            good.replacen('-', "x", 1),
            format!("{}-{}", &good[..7], &good[8..]),
            "+".repeat(32),
            "g".repeat(32),
            format!("+{}", &"1".repeat(31)),
        ] {
            assert_eq!(
                bad.parse::<MessageId>(),
                Err(ParseMessageIdError),
                "{bad:?}"
            );
        }
    }
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    #[test]
    fn layout_is_uuid_v7() {
        let id = MessageId::new();
        let v = id.as_u128();
        assert_eq!(v >> 76 & 0xf, 7, "version");
        assert_eq!(v >> 62 & 0b11, 0b10, "variant");
        let text = id.to_string();
        assert_eq!(text.as_bytes()[14], b'7');
        assert!(matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(text.matches('-').count(), 4);
    }

    #[test]
    fn timestamp_follows_the_given_clock() {
        let ids = IdGen::new();
        let t = UNIX_EPOCH + Duration::from_millis(1_900_000_000_000);
        let id = ids.next(1_900_000_000_000 * 1_000_000);
        // Ids only ever move forward, so a clock in the future is honoured;
        // the id's time is that clock's millisecond (or just after it when
        // ids were taken faster than one per ~15 ns in this millisecond).
        let got = id.created_at().duration_since(t).unwrap_or_default();
        assert!(got < Duration::from_millis(2), "{got:?}");
        // A clock behind the counter never makes ids go backwards.
        let earlier = ids.next(1_000_000);
        assert!(earlier > id);
    }

    #[test]
    fn sequence_carries_instead_of_repeating() {
        let gen = IdGen::new();
        let t = UNIX_EPOCH + Duration::from_millis(1_950_000_000_000);
        let ids: Vec<_> = (0..70_000)
            .map(|_| gen.next(1_950_000_000_000 * 1_000_000))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let last_ms = ids[ids.len() - 1].created_at();
        assert!(last_ms > t, "70,000 ids in one millisecond borrow the next");
    }

    #[test]
    fn ids_are_unique_and_increasing_across_threads() {
        const THREADS: usize = 4;
        const PER: usize = 20_000;
        let start = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    (0..PER).map(|_| MessageId::new()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            let ids = h.join().unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            all.extend(ids);
        }
        assert_eq!(all.len(), THREADS * PER, "no duplicates");
    }
}

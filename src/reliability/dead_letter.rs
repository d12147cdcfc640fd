//! The dead-letter queue: where messages go that a subscription could not
//! handle, to be looked at and replayed.
//!
//! Bounded: when full, the oldest letter is evicted (counted). Letters are
//! kept in arrival order under one lock; they are written only on failure
//! paths, so the lock is never on the happy path.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::message::Message;
use crate::registry::SubscriptionId;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::Mutex;
use crate::topic::Pattern;
use crate::BoxError;

use super::ErrorKind;

/// Why a message was dead-lettered.
///
/// # Examples
///
/// ```
/// use topicbus::DeadLetterReason;
/// assert_eq!(DeadLetterReason::RetriesExhausted.as_str(), "retries_exhausted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler failed on every allowed attempt.
    RetriesExhausted,
    /// The handler failed with an error its retry policy calls permanent.
    Permanent,
    /// The handler panicked (and panics are not retried, or retries ran
    /// out).
    Panicked,
    /// The message expired before it could be handled.
    Expired,
    /// The bus shut down while the message waited for a retry or a delayed
    /// delivery.
    Shutdown,
    /// The mailbox was full and the subscription dead-letters overflow.
    Overflow,
    /// The subscription's circuit breaker was open.
    CircuitOpen,
}

impl DeadLetterReason {
    /// Every reason, in counter order.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, DeadLetterReason};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let dead = bus.stats().total.dead_lettered;
    /// for reason in DeadLetterReason::ALL {
    ///     println!("{}: {}", reason.as_str(), dead.get(reason));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const ALL: [DeadLetterReason; 7] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Permanent,
        DeadLetterReason::Panicked,
        DeadLetterReason::Expired,
        DeadLetterReason::Shutdown,
        DeadLetterReason::Overflow,
        DeadLetterReason::CircuitOpen,
    ];

    /// A short lower-case name, for logs and metric labels.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::DeadLetterReason;
    /// assert_eq!(DeadLetterReason::RetriesExhausted.as_str(), "retries_exhausted");
    /// assert!(DeadLetterReason::ALL.iter().all(|r| !r.as_str().is_empty()));
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::Panicked => "panicked",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Shutdown => "shutdown",
            DeadLetterReason::Overflow => "overflow",
            DeadLetterReason::CircuitOpen => "circuit_open",
        }
    }
}

/// The handler's last error, as a dead letter keeps it.
///
/// # Examples
///
/// ```
/// use topicbus::{ErrorKind, Failure};
/// let f = Failure::new(ErrorKind::Transient, "timeout");
/// assert_eq!(f.to_string(), "transient: timeout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// How it was classified.
    pub kind: ErrorKind,
    /// The error's (or the panic's) text.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{ErrorKind, Failure};
    /// let f = Failure::new(ErrorKind::Transient, "connection reset");
    /// assert_eq!((f.kind, f.message.as_str()), (ErrorKind::Transient, "connection reset"));
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn from_error(kind: ErrorKind, error: &BoxError) -> Self {
        Self::new(kind, error.to_string())
    }

    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self::new(ErrorKind::Panic, text)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Identifies a letter in a [`DeadLetters`](crate::DeadLetters) queue
/// (increasing in arrival order).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, Permanent};
/// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
/// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
/// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
/// bus.publish_confirmed("t", 2, Duration::from_secs(10))?;
/// let letters = bus.dead_letters().expect("configured").all();
/// assert!(letters[0].id < letters[1].id); // in arrival order
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterId(pub(crate) u64);

impl DeadLetterId {
    /// The raw number.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let id = bus.dead_letters().expect("configured").all()[0].id;
    /// println!("dead letter #{}", id.get()); // for logs and admin tools
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One dead letter.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, DeadLetterReason, Message, Permanent};
/// let bus = Bus::<u32>::builder().workers(1).dead_letters(100).build()?;
/// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
/// bus.publish_confirmed("t", 7, std::time::Duration::from_secs(5))?;
/// let letters = bus.dead_letters().expect("configured").all();
/// assert_eq!(letters[0].reason, DeadLetterReason::Permanent);
/// assert_eq!(*letters[0].message.payload(), 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// Its id in the queue.
    pub id: DeadLetterId,
    /// The message, unchanged (id, causation, headers …).
    pub message: Arc<Message<T>>,
    /// The subscription that gave up on it (`None` for a delayed message
    /// that never reached one).
    pub subscription: Option<SubscriptionId>,
    /// Why.
    pub reason: DeadLetterReason,
    /// The last handler error, when a handler failed.
    pub error: Option<Failure>,
    /// Handler attempts made.
    pub attempts: u32,
    /// When the first attempt failed (or the message was given up, when no
    /// handler ran).
    pub first_failure: SystemTime,
    /// When it was given up.
    pub last_failure: SystemTime,
}

impl<T> Clone for DeadLetter<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            message: Arc::clone(&self.message),
            subscription: self.subscription,
            reason: self.reason,
            error: self.error.clone(),
            attempts: self.attempts,
            first_failure: self.first_failure,
            last_failure: self.last_failure,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("message", &self.message)
            .field("subscription", &self.subscription)
            .field("reason", &self.reason)
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .field("first_failure", &self.first_failure)
            .field("last_failure", &self.last_failure)
            .finish()
    }
}

/// Persists dead letters somewhere else as they arrive (the PostgreSQL
/// adapter implements it). Called on the thread that dead-letters, after
/// the letter is in the in-memory queue and outside its lock; an error is
/// counted ([`DeadLetterStats::sink_errors`]) and the letter stays in
/// memory.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use topicbus::{BoxError, Bus, DeadLetter, DeadLetterSink, Message, Permanent};
///
/// #[derive(Default)]
/// struct Log(Mutex<Vec<String>>);
/// impl DeadLetterSink<u32> for Log {
///     fn store(&self, letter: &DeadLetter<u32>) -> Result<(), BoxError> {
///         self.0.lock().unwrap().push(format!("{} {:?}", letter.message.topic(), letter.reason));
///         Ok(())
///     }
/// }
/// let log = Arc::new(Log::default());
/// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).dead_letter_sink(log.clone()).build()?;
/// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
/// bus.publish_confirmed("t", 1, std::time::Duration::from_secs(5))?;
/// assert_eq!(log.0.lock().unwrap().as_slice(), ["t Permanent"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DeadLetterSink<T>: Send + Sync + 'static {
    /// Stores `letter`.
    ///
    /// # Errors
    ///
    /// Whatever the storage reports; counted, the letter stays in memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{BoxError, DeadLetter, DeadLetterSink};
    /// struct Stderr;
    /// impl DeadLetterSink<String> for Stderr {
    ///     fn store(&self, letter: &DeadLetter<String>) -> Result<(), BoxError> {
    ///         eprintln!("dead letter on {}: {:?}", letter.message.topic(), letter.reason);
    ///         Ok(())
    ///     }
    /// }
    /// let _sink: std::sync::Arc<dyn DeadLetterSink<String>> = std::sync::Arc::new(Stderr);
    /// ```
    fn store(&self, letter: &DeadLetter<T>) -> Result<(), BoxError>;
}

/// Selects dead letters; every condition set must hold.
///
/// # Examples
///
/// ```
/// use topicbus::{DeadLetterQuery, DeadLetterReason, ErrorKind, Pattern};
/// let q = DeadLetterQuery::new()
///     .topic(Pattern::parse("orders.#")?)
///     .reason(DeadLetterReason::RetriesExhausted)
///     .error_kind(ErrorKind::Transient)
///     .limit(100);
/// # let _ = q;
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct DeadLetterQuery {
    topic: Option<Pattern>,
    subscription: Option<SubscriptionId>,
    error_kind: Option<ErrorKind>,
    reason: Option<DeadLetterReason>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    limit: Option<usize>,
}

impl DeadLetterQuery {
    /// Every letter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// // No condition: selects every letter.
    /// assert_eq!(bus.dead_letters().expect("configured").query(&DeadLetterQuery::new()).len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages whose topic matches `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Pattern, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("#", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("billing.invoice", 1, Duration::from_secs(10))?;
    /// bus.publish_confirmed("shipping.label", 2, Duration::from_secs(10))?;
    /// let q = DeadLetterQuery::new().topic(Pattern::parse("billing.*")?);
    /// assert_eq!(bus.dead_letters().expect("configured").query(&q).len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn topic(mut self, pattern: Pattern) -> Self {
        self.topic = Some(pattern);
        self
    }

    /// Letters of one subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let a = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("a fails")))?;
    /// let _b = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("b fails")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let mine = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().subscription(a.id()));
    /// assert_eq!(mine.len(), 1);
    /// assert_eq!(mine[0].error.as_ref().map(|e| e.message.as_str()), Some("a fails"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscription(mut self, id: SubscriptionId) -> Self {
        self.subscription = Some(id);
        self
    }

    /// Letters whose last error is of `kind`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, ErrorKind, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |m: &Message<u32>| match m.payload() {
    ///     0 => Err(Permanent::new("bad input")),
    ///     _ => panic!("bug"),
    /// })?;
    /// bus.publish_confirmed("t", 0, Duration::from_secs(10))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let panics = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().error_kind(ErrorKind::Panic));
    /// assert_eq!(panics.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error_kind(mut self, kind: ErrorKind) -> Self {
        self.error_kind = Some(kind);
        self
    }

    /// Letters dead-lettered for `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, DeadLetterReason, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// assert_eq!(dlq.query(&DeadLetterQuery::new().reason(DeadLetterReason::Permanent)).len(), 1);
    /// assert_eq!(dlq.query(&DeadLetterQuery::new().reason(DeadLetterReason::Expired)).len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reason(mut self, reason: DeadLetterReason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Given up at or after `at`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, DeadLetterQuery, ManualClock, Message, Permanent};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// clock.advance(Duration::from_secs(60));
    /// let cutoff = clock.wall();
    /// bus.publish_confirmed("t", 2, Duration::from_secs(10))?;
    /// let recent = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().since(cutoff));
    /// assert_eq!(recent.iter().map(|l| *l.message.payload()).collect::<Vec<_>>(), [2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn since(mut self, at: SystemTime) -> Self {
        self.since = Some(at);
        self
    }

    /// Given up before `at`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, DeadLetterQuery, ManualClock, Message, Permanent};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// clock.advance(Duration::from_secs(1));
    /// let cutoff = clock.wall();
    /// clock.advance(Duration::from_secs(60));
    /// bus.publish_confirmed("t", 2, Duration::from_secs(10))?;
    /// let old = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().until(cutoff));
    /// assert_eq!(old.iter().map(|l| *l.message.payload()).collect::<Vec<_>>(), [1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn until(mut self, at: SystemTime) -> Self {
        self.until = Some(at);
        self
    }

    /// At most `n` letters (the oldest first).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// for i in 0..5 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// let page = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().limit(2));
    /// assert_eq!(page.iter().map(|l| *l.message.payload()).collect::<Vec<_>>(), [0, 1]); // the oldest two
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// True when `letter` is selected (the limit aside).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, DeadLetterReason, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let letter = &bus.dead_letters().expect("configured").all()[0];
    /// assert!(DeadLetterQuery::new().reason(DeadLetterReason::Permanent).selects(letter));
    /// assert!(!DeadLetterQuery::new().reason(DeadLetterReason::Panicked).selects(letter));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn selects<T>(&self, letter: &DeadLetter<T>) -> bool {
        self.topic
            .as_ref()
            .is_none_or(|p| p.matches(letter.message.topic()))
            && self
                .subscription
                .is_none_or(|s| letter.subscription == Some(s))
            && self
                .error_kind
                .is_none_or(|k| letter.error.as_ref().is_some_and(|e| e.kind == k))
            && self.reason.is_none_or(|r| letter.reason == r)
            && self.since.is_none_or(|t| letter.last_failure >= t)
            && self.until.is_none_or(|t| letter.last_failure < t)
    }
}

/// Counters of a dead-letter queue.
///
/// Conservation: `inserted == len + evicted + replayed + removed`.
///
/// # Examples
///
/// ```
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().dead_letters(100).build()?;
/// let s = bus.dead_letters().expect("configured").stats();
/// assert_eq!((s.len, s.capacity, s.inserted, s.sink_errors), (0, 100, 0, 0));
/// # Ok::<(), topicbus::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterStats {
    /// Letters in the queue now.
    pub len: usize,
    /// Its bound.
    pub capacity: usize,
    /// Letters ever added.
    pub inserted: u64,
    /// Oldest letters pushed out by newer ones when full.
    pub evicted: u64,
    /// Letters taken out and delivered again.
    pub replayed: u64,
    /// Letters taken out by [`remove`](crate::DeadLetters::remove),
    /// [`purge`](crate::DeadLetters::purge) or
    /// [`take`](crate::DeadLetters::take).
    pub removed: u64,
    /// Errors from the [`DeadLetterSink`].
    pub sink_errors: u64,
}

/// A letter being made (the queue assigns the id).
pub(crate) struct NewLetter<T> {
    pub(crate) message: Arc<Message<T>>,
    pub(crate) subscription: Option<SubscriptionId>,
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: Option<Failure>,
    pub(crate) attempts: u32,
    pub(crate) first_failure: SystemTime,
    pub(crate) last_failure: SystemTime,
}

/// The queue itself; [`DeadLetters`](crate::DeadLetters) is its public face.
pub(crate) struct DeadLetterQueue<T> {
    letters: Mutex<Letters<T>>,
    capacity: usize,
    sink: Option<Arc<dyn DeadLetterSink<T>>>,
    inserted: AtomicU64,
    evicted: AtomicU64,
    replayed: AtomicU64,
    removed: AtomicU64,
    sink_errors: AtomicU64,
}

struct Letters<T> {
    by_id: BTreeMap<u64, DeadLetter<T>>,
    next: u64,
}

impl<T: 'static> fmt::Debug for DeadLetterQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T: 'static> DeadLetterQueue<T> {
    pub(crate) fn new(capacity: usize, sink: Option<Arc<dyn DeadLetterSink<T>>>) -> Self {
        Self {
            letters: Mutex::new(Letters {
                by_id: BTreeMap::new(),
                next: 1,
            }),
            capacity: capacity.max(1),
            sink,
            inserted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            sink_errors: AtomicU64::new(0),
        }
    }

    /// Adds a letter (evicting the oldest when full); returns it as stored.
    pub(crate) fn insert(&self, new: NewLetter<T>) -> DeadLetter<T> {
        let letter = {
            let mut l = self.letters.lock();
            let id = l.next;
            l.next += 1;
            let letter = DeadLetter {
                id: DeadLetterId(id),
                message: new.message,
                subscription: new.subscription,
                reason: new.reason,
                error: new.error,
                attempts: new.attempts,
                first_failure: new.first_failure,
                last_failure: new.last_failure,
            };
            while l.by_id.len() >= self.capacity {
                if l.by_id.pop_first().is_some() {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            l.by_id.insert(id, letter.clone());
            self.inserted.fetch_add(1, Ordering::Relaxed);
            letter
        };
        if let Some(sink) = &self.sink {
            let stored =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.store(&letter)));
            if !matches!(stored, Ok(Ok(()))) {
                self.sink_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        letter
    }

    pub(crate) fn get(&self, id: DeadLetterId) -> Option<DeadLetter<T>> {
        self.letters.lock().by_id.get(&id.0).cloned()
    }

    pub(crate) fn query(&self, q: &DeadLetterQuery) -> Vec<DeadLetter<T>> {
        self.select(q, DeadLetter::clone)
    }

    /// Ids selected by `q`, oldest first.
    pub(crate) fn ids(&self, q: &DeadLetterQuery) -> Vec<DeadLetterId> {
        self.select(q, |d| d.id)
    }

    /// `pick` of every letter `q` selects, oldest first, up to its limit.
    fn select<R>(&self, q: &DeadLetterQuery, pick: impl FnMut(&DeadLetter<T>) -> R) -> Vec<R> {
        let l = self.letters.lock();
        l.by_id
            .values()
            .filter(|d| q.selects(d))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(pick)
            .collect()
    }

    /// Takes a letter out; `replayed` says which counter it goes to.
    pub(crate) fn take(&self, id: DeadLetterId, replayed: bool) -> Option<DeadLetter<T>> {
        let mut l = self.letters.lock();
        let taken = l.by_id.remove(&id.0);
        if taken.is_some() {
            let counter = if replayed {
                &self.replayed
            } else {
                &self.removed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Puts back a letter taken for a replay that could not happen (keeps
    /// its id and place), undoing the replay count.
    pub(crate) fn restore(&self, letter: DeadLetter<T>) {
        let mut l = self.letters.lock();
        l.by_id.insert(letter.id.0, letter);
        self.replayed.fetch_sub(1, Ordering::Relaxed);
        while l.by_id.len() > self.capacity {
            if l.by_id.pop_first().is_some() {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.letters.lock().by_id.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn stats(&self) -> DeadLetterStats {
        // Counters read under the lock so that they balance with `len`.
        let l = self.letters.lock();
        DeadLetterStats {
            len: l.by_id.len(),
            capacity: self.capacity,
            inserted: self.inserted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            sink_errors: self.sink_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A state-machine property test: random operation sequences on the
    //! queue and on a plain model (a vector in arrival order) agree.

    use super::*;
    use crate::topic::Topic;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            topic: u8,
            sub: u8,
            reason: u8,
        },
        Take(usize),
        ReplayAndFail(usize),
        Query {
            topic: Option<u8>,
            sub: Option<u8>,
            reason: Option<u8>,
            limit: Option<usize>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u8..3, 0u8..7).prop_map(|(topic, sub, reason)| Op::Insert { topic, sub, reason }),
            1 => (0usize..16).prop_map(Op::Take),
            1 => (0usize..16).prop_map(Op::ReplayAndFail),
            2 => (
                proptest::option::of(0u8..3),
                proptest::option::of(0u8..3),
                proptest::option::of(0u8..7),
                proptest::option::of(0usize..5),
            )
                .prop_map(|(topic, sub, reason, limit)| Op::Query { topic, sub, reason, limit }),
        ]
    }

    /// What the model keeps per letter: id, topic, subscription, reason.
    type Row = (u64, u8, u8, u8);

    proptest! {
        #[test]
        fn the_queue_behaves_like_its_model(cap in 1usize..8, ops in proptest::collection::vec(op(), 1..80)) {
            let q = DeadLetterQueue::<u8>::new(cap, None);
            let mut model: Vec<Row> = Vec::new();
            let mut next = 1u64;
            let (mut evicted, mut taken) = (0u64, 0u64);
            let now = SystemTime::now();
            for op in ops {
                match op {
                    Op::Insert { topic, sub, reason } => {
                        let message = Arc::new(
                            Message::builder(Topic::parse(&format!("t{topic}.x")).unwrap(), topic).build(),
                        );
                        let letter = q.insert(NewLetter {
                            message,
                            subscription: Some(SubscriptionId::for_tests(u64::from(sub))),
                            reason: DeadLetterReason::ALL[reason as usize],
                            error: None,
                            attempts: 1,
                            first_failure: now,
                            last_failure: now,
                        });
                        prop_assert_eq!(letter.id.0, next);
                        if model.len() == cap {
                            model.remove(0);
                            evicted += 1;
                        }
                        model.push((next, topic, sub, reason));
                        next += 1;
                    }
                    Op::Take(i) => {
                        let id = model.get(i).map_or(DeadLetterId(next + 100), |r| DeadLetterId(r.0));
                        let got = q.take(id, false).map(|l| l.id.0);
                        let want = (i < model.len()).then(|| model.remove(i).0);
                        prop_assert_eq!(got, want);
                        taken += u64::from(want.is_some());
                    }
                    Op::ReplayAndFail(i) => {
                        // A replay that could not happen puts the letter back.
                        if let Some(row) = model.get(i) {
                            let letter = q.take(DeadLetterId(row.0), true).unwrap();
                            q.restore(letter);
                        }
                    }
                    Op::Query { topic, sub, reason, limit } => {
                        let mut query = DeadLetterQuery::new();
                        if let Some(t) = topic {
                            query = query.topic(Pattern::parse(&format!("t{t}.*")).unwrap());
                        }
                        if let Some(s) = sub {
                            query = query.subscription(SubscriptionId::for_tests(u64::from(s)));
                        }
                        if let Some(r) = reason {
                            query = query.reason(DeadLetterReason::ALL[r as usize]);
                        }
                        if let Some(n) = limit {
                            query = query.limit(n);
                        }
                        let got: Vec<u64> = q.query(&query).iter().map(|l| l.id.0).collect();
                        let want: Vec<u64> = model
                            .iter()
                            .filter(|r| topic.is_none_or(|t| r.1 == t))
                            .filter(|r| sub.is_none_or(|s| r.2 == s))
                            .filter(|r| reason.is_none_or(|x| r.3 == x))
                            .take(limit.unwrap_or(usize::MAX))
                            .map(|r| r.0)
                            .collect();
                        prop_assert_eq!(&got, &want);
                        prop_assert_eq!(q.ids(&query).iter().map(|i| i.0).collect::<Vec<_>>(), want);
                    }
                }
                let st = q.stats();
                prop_assert_eq!(st.len, model.len());
                prop_assert!(st.len <= cap);
                prop_assert_eq!((st.evicted, st.removed, st.replayed), (evicted, taken, 0));
                prop_assert_eq!(st.inserted, st.len as u64 + st.evicted + st.removed + st.replayed);
            }
        }
    }
}

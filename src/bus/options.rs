//! Subscription options and the subscription handle.

use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};

use crate::mailbox::lanes::OverflowPolicy;
use crate::message::Message;
use crate::registry::SubscriptionId;
use crate::reliability::{CircuitBreaker, Dedup, RetryPolicy};
use crate::topic::{Limits, Pattern, Topic, TopicError};

use super::filter::{FilterSpec, HeaderRule, Typed};
use super::stats::SubStats;
use super::sub::Sub;
use super::Inner;

mod sealed {
    pub trait Sealed {}
}

/// A topic argument: a [`Topic`] (cloned cheaply; publishing it allocates
/// nothing for the topic) or text parsed with the bus's limits (which
/// allocates the topic's text once).
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Topic};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let hot = Topic::parse("prices.eur")?;
/// bus.publish(&hot, 1)?;
/// bus.publish("prices.usd", 2)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IntoTopic: sealed::Sealed {
    /// The topic, valid under `limits`.
    ///
    /// # Errors
    ///
    /// The parse error, or the limit the topic breaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{IntoTopic, Limits};
    /// let tight = Limits { max_len: 8, max_depth: 2 };
    /// assert_eq!("a.b".into_topic(&tight)?.as_str(), "a.b");
    /// assert!("a.b.c".into_topic(&tight).is_err()); // three levels
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError>;
}

fn within(len: usize, depth: usize, limits: &Limits) -> bool {
    len <= limits.max_len && depth <= limits.max_depth
}

impl sealed::Sealed for Topic {}
impl sealed::Sealed for &Topic {}
impl sealed::Sealed for &str {}
impl sealed::Sealed for String {}
impl sealed::Sealed for &String {}

impl IntoTopic for Topic {
    #[inline]
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError> {
        if within(self.as_str().len(), self.depth(), limits) {
            Ok(self)
        } else {
            Topic::parse_with(self.as_str(), limits)
        }
    }
}
impl IntoTopic for &Topic {
    #[inline]
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError> {
        self.clone().into_topic(limits)
    }
}
impl IntoTopic for &str {
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError> {
        Topic::parse_with(self, limits)
    }
}
impl IntoTopic for String {
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError> {
        Topic::parse_with(&self, limits)
    }
}
impl IntoTopic for &String {
    fn into_topic(self, limits: &Limits) -> Result<Topic, TopicError> {
        Topic::parse_with(self, limits)
    }
}

/// How a queue group picks the member that gets a message.
///
/// # Examples
///
/// ```
/// use topicbus::GroupStrategy;
/// assert_eq!(GroupStrategy::default(), GroupStrategy::RoundRobin);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupStrategy {
    /// Members take turns.
    #[default]
    RoundRobin,
    /// The member with the fewest queued messages (ties: the lowest id).
    LeastLoaded,
}

/// A pattern given to [`SubscribeOptions`], parsed when subscribing.
#[derive(Debug, Clone)]
enum PatternSource {
    Parsed(Pattern),
    Text(String),
}

/// Options for [`Bus::subscribe_with`](crate::Bus::subscribe_with) and
/// [`Bus::receiver_with`](crate::Bus::receiver_with).
///
/// Unset options take the bus's defaults (see
/// [`BusBuilder`](crate::BusBuilder)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, GroupStrategy, Message, OverflowPolicy, SubscribeOptions};
///
/// let bus = Bus::<String>::builder().workers(2).build()?;
/// let options = SubscribeOptions::new()
///     .pattern("jobs.image.*")
///     .pattern("jobs.video.*")
///     .capacity(256)
///     .overflow(OverflowPolicy::Block { timeout: Duration::from_millis(100) })
///     .queue_group("resizers", GroupStrategy::LeastLoaded);
/// let _worker = bus.subscribe_with(options, |m: &Message<String>| {
///     println!("resizing {}", m.payload());
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SubscribeOptions {
    patterns: Vec<PatternSource>,
    pub(crate) capacity: Option<usize>,
    pub(crate) overflow: Option<OverflowPolicy>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) group: Option<(String, GroupStrategy)>,
    pub(crate) inline: bool,
    pub(crate) paused: bool,
    pub(crate) batch: Option<usize>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) dedup: Option<Dedup>,
    pub(crate) dedup_key: Option<Typed>,
    pub(crate) filter: FilterSpec,
    pub(crate) dead_letter: Option<bool>,
    pub(crate) dead_letter_expired: bool,
    pub(crate) dead_letter_overflow: bool,
    pub(crate) latency: bool,
    /// Reached only by direct offers (an adapter's outlet): no pattern
    /// needed.
    pub(crate) direct: bool,
}

impl SubscribeOptions {
    /// No patterns yet, every other option at the bus's default.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("a"))?;
    /// assert_eq!(rx.patterns().len(), 1);
    /// // Without a pattern there is nothing to subscribe to.
    /// assert!(bus.receiver_with(SubscribeOptions::new()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a subscription without patterns, reached only by direct
    /// offers (an adapter's outlet for a router).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn direct(mut self) -> Self {
        self.direct = true;
        self
    }

    /// Adds a pattern (a subscription can have several; a message matching
    /// more than one is delivered once).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Pattern, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(
    ///     SubscribeOptions::new().pattern("orders.#").pattern(Pattern::parse("orders.*.created")?),
    /// )?;
    /// assert_eq!(bus.publish("orders.eu.created", 1)?.matched, 1); // both match: delivered once
    /// assert_eq!(rx.try_iter().count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pattern(mut self, pattern: impl Into<PatternArg>) -> Self {
        self.patterns.push(pattern.into().0);
        self
    }

    /// Messages each lane (high, normal, low) holds before the overflow
    /// policy applies: 1 to [`MAX_CAPACITY`](crate::MAX_CAPACITY), checked
    /// when subscribing ([`SubscribeError::Options`](crate::SubscribeError::Options)
    /// otherwise).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, OverflowPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(
    ///     SubscribeOptions::new().pattern("t").capacity(3).overflow(OverflowPolicy::DropNewest),
    /// )?;
    /// for i in 0..5 {
    ///     bus.publish("t", i)?;
    /// }
    /// assert_eq!(rx.stats().queued[1], 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// What a publish does when a lane is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, OverflowPolicy, PublishError, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _strict = bus.receiver_with(
    ///     SubscribeOptions::new().pattern("t").capacity(1).overflow(OverflowPolicy::Reject),
    /// )?;
    /// bus.publish("t", 1)?;
    /// assert!(matches!(bus.publish("t", 2), Err(PublishError::Rejected { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = Some(policy);
        self
    }

    /// Handler calls that may run at once (default 1). Above 1 the
    /// subscription trades its ordering guarantee for parallelism; this is
    /// also its maximum number of messages in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Barrier};
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(2).build()?;
    /// let both = Arc::new(Barrier::new(2)); // passes only when two calls run at once
    /// let b = both.clone();
    /// let _s = bus.subscribe_with(SubscribeOptions::new().pattern("t").concurrency(2), move |_m: &Message<u32>| {
    ///     b.wait();
    /// })?;
    /// bus.publish("t", 1)?;
    /// bus.publish("t", 2)?;
    /// assert!(bus.shutdown(Duration::from_secs(10))?.is_clean()); // would time out one at a time
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Joins the queue group `name`: the group's members split the messages,
    /// each message to exactly one member whose patterns match.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, GroupStrategy, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(2).build()?;
    /// let member = || SubscribeOptions::new().pattern("jobs").queue_group("workers", GroupStrategy::RoundRobin);
    /// let a = bus.subscribe_with(member(), |_m: &Message<u32>| ())?;
    /// let b = bus.subscribe_with(member(), |_m: &Message<u32>| ())?;
    /// for i in 0..10 {
    ///     assert_eq!(bus.publish("jobs", i)?.matched, 1); // one member each
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!((a.stats().handled, b.stats().handled), (5, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_group(mut self, name: impl Into<String>, strategy: GroupStrategy) -> Self {
        self.group = Some((name.into(), strategy));
        self
    }

    /// Runs the handler on the publisher's thread, inside `publish`: the
    /// lowest latency, no mailbox. The handler must be quick; a slow one slows
    /// every publisher. Overflow options do not apply.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let sum = Arc::new(AtomicU32::new(0));
    /// let s = sum.clone();
    /// let _inline = bus.subscribe_with(SubscribeOptions::new().pattern("t").inline(true), move |m: &Message<u32>| {
    ///     s.fetch_add(*m.payload(), Ordering::Relaxed);
    /// })?;
    /// bus.publish("t", 5)?;
    /// assert_eq!(sum.load(Ordering::Relaxed), 5); // ran inside publish
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Starts paused: messages queue (by the overflow policy) until
    /// [`Subscription::resume`].
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("t").paused(true))?;
    /// bus.publish("t", 1)?;
    /// assert!(rx.try_recv().is_err()); // queued, not handed out
    /// rx.resume();
    /// assert_eq!(*rx.try_recv()?.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Retries failed handler calls by `policy` (handler subscriptions
    /// only; not inline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, RetryPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let options = SubscribeOptions::new()
    ///     .pattern("payments.#")
    ///     .retry(RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(5)));
    /// let sub = bus.subscribe_with(options, |m: &Message<u32>| {
    ///     if m.attempt() < 3 { Err("flaky") } else { Ok(()) }
    /// })?;
    /// bus.publish_confirmed("payments.in", 1, Duration::from_secs(10))?;
    /// assert_eq!((sub.stats().handled, sub.stats().retried), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Guards the handler with a circuit breaker (handler subscriptions
    /// only; not inline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, CircuitState, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let breaker = CircuitBreaker::new().window(BreakerWindow::Calls(4)).min_calls(4).failure_rate(0.5);
    /// let s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("t").circuit_breaker(breaker),
    ///     |_m: &Message<u32>| Err("upstream down"),
    /// )?;
    /// for i in 0..4 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Open));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Suppresses messages seen within the window (by message id, or by the
    /// key from [`dedup_by`](Self::dedup_by)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Dedup, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("t").dedup(Dedup::new(Duration::from_secs(60), 1_000)))?;
    /// let m = Message::builder("t".parse()?, 1).build();
    /// bus.publish_message(Message::builder(m.topic().clone(), 1).restore(m.id(), m.timestamp(), 1))?;
    /// let again = bus.publish_message(Message::builder(m.topic().clone(), 1).restore(m.id(), m.timestamp(), 1))?;
    /// assert_eq!(again.duplicates, 1); // same id: suppressed
    /// assert_eq!(rx.try_iter().count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dedup(mut self, window: Dedup) -> Self {
        self.dedup = Some(window);
        self
    }

    /// Deduplicates by a content key instead of the message id: two
    /// messages with equal keys within the window are one. The key is
    /// hashed to 64 bits. Needs [`dedup`](Self::dedup).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Dedup, Message, SubscribeOptions};
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(
    ///     SubscribeOptions::new()
    ///         .pattern("cmd")
    ///         .dedup(Dedup::new(Duration::from_secs(60), 10_000))
    ///         .dedup_by(|m: &Message<String>| m.payload().clone()),
    /// )?;
    /// bus.publish("cmd", "restart".to_string())?;
    /// let again = bus.publish("cmd", "restart".to_string())?;
    /// assert_eq!((again.matched, again.duplicates), (0, 1));
    /// assert_eq!(rx.try_iter().count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dedup_by<T: 'static, K: std::hash::Hash>(
        mut self,
        key: impl Fn(&Message<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        self.dedup_key = Some(Typed::key(key));
        self
    }

    /// The entity this subscription stands for: messages addressed
    /// ([`to`](crate::MessageBuilder::to)) to another entity are filtered
    /// out; broadcasts (no `to`) pass unless
    /// [`directed_only`](Self::directed_only).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let billing = bus.receiver_with(SubscribeOptions::new().pattern("cmd.#").entity("billing"))?;
    /// bus.publish_message(Message::builder("cmd.run".parse()?, "for billing").to("billing"))?;
    /// bus.publish_message(Message::builder("cmd.run".parse()?, "for shipping").to("shipping"))?;
    /// bus.publish("cmd.run", "for everyone")?;
    /// let got: Vec<_> = billing.try_iter().map(|m| *m.payload()).collect();
    /// assert_eq!(got, ["for billing", "for everyone"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn entity(mut self, entity: impl Into<std::sync::Arc<str>>) -> Self {
        self.filter.entity = Some(entity.into());
        self
    }

    /// With [`entity`](Self::entity): only messages addressed to it, no
    /// broadcasts.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("cmd").entity("node-1").directed_only(true))?;
    /// bus.publish("cmd", "everyone")?;
    /// bus.publish_message(Message::builder("cmd".parse()?, "just you").to("node-1"))?;
    /// assert_eq!(rx.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), ["just you"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn directed_only(mut self, on: bool) -> Self {
        self.filter.directed_only = on;
        self
    }

    /// Only broadcasts (messages without `to`).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("cmd").broadcast_only(true))?;
    /// bus.publish("cmd", "everyone")?;
    /// bus.publish_message(Message::builder("cmd".parse()?, "someone").to("node-1"))?;
    /// assert_eq!(rx.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), ["everyone"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn broadcast_only(mut self, on: bool) -> Self {
        self.filter.broadcast_only = on;
        self
    }

    /// Only messages from `sender` (may be given several times: any of
    /// them).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("chat").from_sender("alice").from_sender("bob"))?;
    /// for who in ["alice", "carol", "bob"] {
    ///     bus.publish_message(Message::builder("chat".parse()?, who).from(who))?;
    /// }
    /// assert_eq!(rx.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), ["alice", "bob"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_sender(mut self, sender: impl Into<std::sync::Arc<str>>) -> Self {
        self.filter.senders.push(sender.into());
        self
    }

    /// Only messages carrying header `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let traced = bus.receiver_with(SubscribeOptions::new().pattern("t").header_present("trace-id"))?;
    /// bus.publish("t", 1)?;
    /// bus.publish_message(Message::builder("t".parse()?, 2).header("trace-id", "abc"))?;
    /// assert_eq!(traced.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), [2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header_present(mut self, name: impl Into<String>) -> Self {
        self.filter.headers.push(HeaderRule::Present(name.into()));
        self
    }

    /// Only messages whose header `name` equals `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let eu = bus.receiver_with(SubscribeOptions::new().pattern("orders").header_eq("region", "eu"))?;
    /// bus.publish_message(Message::builder("orders".parse()?, 1).header("region", "eu"))?;
    /// bus.publish_message(Message::builder("orders".parse()?, 2).header("region", "us"))?;
    /// assert_eq!(eu.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), [1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header_eq(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.filter
            .headers
            .push(HeaderRule::Equals(name.into(), value.into()));
        self
    }

    /// Only messages `predicate` accepts. It runs on the publisher's thread
    /// before the message takes a mailbox slot, so keep it quick. Its
    /// payload type must be the bus's (checked when subscribing).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let big = bus.receiver_with(
    ///     SubscribeOptions::new().pattern("orders").filter(|m: &Message<u32>| *m.payload() >= 100),
    /// )?;
    /// bus.publish("orders", 5)?;
    /// bus.publish("orders", 500)?;
    /// assert_eq!(big.try_iter().map(|m| *m.payload()).collect::<Vec<_>>(), [500]);
    /// assert_eq!(big.stats().filtered, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn filter<T: 'static>(
        mut self,
        predicate: impl Fn(&Message<T>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter.predicate = Some(Typed::predicate(predicate));
        self
    }

    /// Whether handler failures (after retries), panics, and an open
    /// breaker's `DeadLetter` policy go to the bus's dead letters (default:
    /// yes, when the bus keeps them; else they are counted as failed,
    /// panicked or dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("metrics").dead_letter(false), // failures are only counted
    ///     |_m: &Message<u32>| Err(Permanent::new("no")),
    /// )?;
    /// bus.publish_confirmed("metrics", 1, Duration::from_secs(10))?;
    /// assert_eq!(s.stats().failed, 1);
    /// assert!(bus.dead_letters().expect("configured").is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = Some(on);
        self
    }

    /// Whether expired messages go to the dead letters (default: no, they
    /// are counted as expired).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, DeadLetterReason, ManualClock, Message, SubscribeOptions};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).dead_letters(10).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("t").dead_letter_expired(true))?;
    /// bus.publish_message(Message::builder("t".parse()?, 1).timestamp(clock.wall()).ttl(Duration::from_secs(1)))?;
    /// clock.advance(Duration::from_secs(2));
    /// assert!(rx.try_recv().is_err());
    /// let letters = bus.dead_letters().expect("configured").all();
    /// assert_eq!(letters[0].reason, DeadLetterReason::Expired);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dead_letter_expired(mut self, on: bool) -> Self {
        self.dead_letter_expired = on;
        self
    }

    /// Whether messages the overflow policy drops go to the dead letters
    /// (default: no, they are counted as dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, DeadLetterReason, OverflowPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _rx = bus.receiver_with(
    ///     SubscribeOptions::new().pattern("t").capacity(1).overflow(OverflowPolicy::DropNewest).dead_letter_overflow(true),
    /// )?;
    /// bus.publish("t", 1)?;
    /// bus.publish("t", 2)?; // the lane is full: dead-lettered instead of dropped
    /// let letters = bus.dead_letters().expect("configured").all();
    /// assert_eq!((*letters[0].message.payload(), letters[0].reason), (2, DeadLetterReason::Overflow));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dead_letter_overflow(mut self, on: bool) -> Self {
        self.dead_letter_overflow = on;
        self
    }

    /// Whether this subscription keeps latency histograms of its own (queue
    /// wait, handler time, end to end), reported in
    /// [`Metrics::subscriptions`](crate::Metrics::subscriptions) (default:
    /// no; the bus-wide histograms always count its runs). They record the
    /// same sampled handler runs as the bus-wide ones (see
    /// [`BusBuilder::latency_sampling`](crate::BusBuilder::latency_sampling);
    /// nothing when sampling is off), to 2 significant digits, in about
    /// 110 KB per subscription. Pull receivers run no handler and keep
    /// none.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().build()?;
    /// let _s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("payments.#").latency(true),
    ///     |_m: &Message<u32>| (),
    /// )?;
    /// assert_eq!(bus.metrics().subscriptions.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn latency(mut self, on: bool) -> Self {
        self.latency = on;
        self
    }

    /// Messages a worker handles per turn before it moves on to another
    /// subscription (default: the bus's batch).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// // Yield the worker after every 8 messages, so a busy subscription cannot hog it.
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("bulk").batch(8), |_m: &Message<u32>| ())?;
    /// for i in 0..100 {
    ///     bus.publish("bulk", i)?;
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(s.stats().handled, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = Some(batch);
        self
    }

    /// The patterns, parsed and checked against `limits`.
    pub(crate) fn parse_patterns(&self, limits: &Limits) -> Result<Vec<Pattern>, TopicError> {
        self.patterns
            .iter()
            .map(|p| match p {
                PatternSource::Parsed(p) if within(p.as_str().len(), p.depth(), limits) => {
                    Ok(p.clone())
                }
                // Beyond the limits (cold): re-validate for the exact error.
                PatternSource::Parsed(p) => Pattern::parse_with(p.as_str(), limits),
                PatternSource::Text(t) => Pattern::parse_with(t, limits),
            })
            .collect()
    }

    /// The lane capacity, checked (the bus's default already was).
    pub(crate) fn lane_capacity(
        &self,
        default: NonZeroUsize,
    ) -> Result<NonZeroUsize, &'static str> {
        self.capacity.map_or(Ok(default), super::checked_capacity)
    }
}

/// A pattern argument: a [`Pattern`] (cloned cheaply) or its text, parsed
/// with the bus's limits when subscribing.
///
/// # Examples
///
/// ```
/// use topicbus::{Pattern, SubscribeOptions};
/// let o = SubscribeOptions::new().pattern("a.*").pattern(Pattern::parse("b.#")?);
/// # let _ = o;
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PatternArg(PatternSource);

impl From<Pattern> for PatternArg {
    fn from(p: Pattern) -> Self {
        Self(PatternSource::Parsed(p))
    }
}
impl From<&Pattern> for PatternArg {
    fn from(p: &Pattern) -> Self {
        Self(PatternSource::Parsed(p.clone()))
    }
}
impl From<&str> for PatternArg {
    fn from(p: &str) -> Self {
        Self(PatternSource::Text(p.to_owned()))
    }
}
impl From<&String> for PatternArg {
    fn from(p: &String) -> Self {
        Self(PatternSource::Text(p.clone()))
    }
}
impl From<String> for PatternArg {
    fn from(p: String) -> Self {
        Self(PatternSource::Text(p))
    }
}

/// What a [`Subscription`] or receiver controls, without its payload type.
pub(crate) trait Control: Send + Sync {
    fn unsubscribe(&self);
    fn pause(&self);
    fn resume(&self);
    fn is_paused(&self) -> bool;
    fn stats(&self) -> SubStats;
    fn patterns(&self) -> &[Pattern];
}

/// A subscription and the way back to its bus.
pub(crate) struct Handle<T> {
    pub(crate) sub: Arc<Sub<T>>,
    pub(crate) bus: Weak<Inner<T>>,
}

impl<T: Send + Sync + 'static> Control for Handle<T> {
    fn unsubscribe(&self) {
        match self.bus.upgrade() {
            Some(bus) => bus.unsubscribe(&self.sub),
            // The bus is gone: its shutdown settled everything.
            None => self.sub.close(false, false),
        }
    }

    fn pause(&self) {
        self.sub
            .paused
            .store(true, crate::sync::atomic::Ordering::SeqCst);
    }

    fn resume(&self) {
        match self.bus.upgrade() {
            Some(bus) => self.sub.resume(&bus.services.pool),
            None => self
                .sub
                .paused
                .store(false, crate::sync::atomic::Ordering::SeqCst),
        }
    }

    fn is_paused(&self) -> bool {
        self.sub.paused.load(crate::sync::atomic::Ordering::Relaxed)
    }

    fn stats(&self) -> SubStats {
        self.sub.stats()
    }

    fn patterns(&self) -> &[Pattern] {
        &self.sub.patterns
    }
}

/// A live subscription. Dropping it unsubscribes (or call
/// [`unsubscribe`](Self::unsubscribe)); [`detach`](Self::detach) keeps it
/// for the life of the bus.
///
/// After unsubscribing returns, the handler is never called again (unless
/// the call comes from the handler itself, which cannot wait for itself);
/// messages still queued are counted as dropped with reason
/// [`Unsubscribed`](crate::DropReason::Unsubscribed).
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let seen = Arc::new(AtomicU32::new(0));
/// let s = seen.clone();
/// let sub = bus.subscribe("ticks", move |_m: &Message<u32>| {
///     s.fetch_add(1, Ordering::Relaxed);
/// })?;
/// bus.publish_confirmed("ticks", 1, std::time::Duration::from_secs(5))?;
/// sub.unsubscribe();
/// assert_eq!(bus.publish("ticks", 2)?.matched, 0);
/// assert_eq!(seen.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a Subscription unsubscribes; call detach() to keep it"]
pub struct Subscription {
    id: SubscriptionId,
    control: Box<dyn Control>,
    /// False once unsubscribed or detached: drop does nothing then.
    attached: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("patterns", &self.patterns())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(id: SubscriptionId, control: Box<dyn Control>) -> Self {
        Self {
            id,
            control,
            attached: true,
        }
    }

    /// The subscription's id (also in its stats).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let a = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// let b = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// assert_ne!(a.id(), b.id());
    /// assert_eq!(a.stats().id, a.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The subscription's patterns.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("a.*").pattern("b.#"), |_m: &Message<u32>| ())?;
    /// let p: Vec<&str> = s.patterns().iter().map(|p| p.as_str()).collect();
    /// assert_eq!(p, ["a.*", "b.#"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn patterns(&self) -> &[Pattern] {
        self.control.patterns()
    }

    /// Stops delivering: messages queue up (by the overflow policy) until
    /// [`resume`](Self::resume). A paused inline subscription drops what
    /// arrives (counted as [`Paused`](crate::DropReason::Paused)). A handler
    /// call already running finishes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// s.pause();
    /// bus.publish("t", 1)?;
    /// assert_eq!((s.stats().handled, s.stats().queued[1]), (0, 1)); // waiting
    /// s.resume();
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(s.stats().handled, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause(&self) {
        self.control.pause();
    }

    /// Delivers again, starting with what queued meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").paused(true), |_m: &Message<u32>| ())?;
    /// bus.publish("t", 1)?;
    /// s.resume();
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(s.stats().handled, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume(&self) {
        self.control.resume();
    }

    /// True while paused.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// assert!(!s.is_paused());
    /// s.pause();
    /// assert!(s.is_paused());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_paused(&self) -> bool {
        self.control.is_paused()
    }

    /// The subscription's counters and queue depths. Still readable after
    /// the subscription ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe("t", |m: &Message<u32>| if *m.payload() == 0 { Err("zero") } else { Ok(()) })?;
    /// for i in 0..3 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// let st = s.stats();
    /// assert_eq!((st.counts.handled, st.counts.failed, st.queued), (2, 1, [0, 0, 0]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> SubStats {
        self.control.stats()
    }

    /// Unsubscribes now; see the type's docs.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// assert_eq!(bus.publish("t", 1)?.matched, 1);
    /// s.unsubscribe(); // publishes that start from now on miss it
    /// assert_eq!(bus.publish("t", 2)?.matched, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unsubscribe(mut self) {
        self.attached = false;
        self.control.unsubscribe();
    }

    /// Keeps the subscription for the life of the bus, without a handle.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// bus.subscribe("audit.#", |m: &Message<u32>| println!("audit {}", m.topic()))?.detach();
    /// assert_eq!(bus.publish("audit.login", 1)?.matched, 1); // still subscribed
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detach(mut self) {
        self.attached = false;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.attached {
            self.control.unsubscribe();
        }
    }
}

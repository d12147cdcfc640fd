//! Subscription options and the subscription handle.

use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};

use crate::mailbox::lanes::OverflowPolicy;
use crate::registry::SubscriptionId;
use crate::topic::{Limits, Pattern, Topic, TopicError};

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
}

impl SubscribeOptions {
    /// No patterns yet, every other option at the bus's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pattern (a subscription can have several; a message matching
    /// more than one is delivered once).
    pub fn pattern(mut self, pattern: impl Into<PatternArg>) -> Self {
        self.patterns.push(pattern.into().0);
        self
    }

    /// Messages each lane (high, normal, low) holds before the overflow
    /// policy applies.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// What a publish does when a lane is full.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = Some(policy);
        self
    }

    /// Handler calls that may run at once (default 1). Above 1 the
    /// subscription trades its ordering guarantee for parallelism; this is
    /// also its maximum number of messages in flight.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Joins the queue group `name`: the group's members split the messages,
    /// each message to exactly one member whose patterns match.
    pub fn queue_group(mut self, name: impl Into<String>, strategy: GroupStrategy) -> Self {
        self.group = Some((name.into(), strategy));
        self
    }

    /// Runs the handler on the publisher's thread, inside `publish`: the
    /// lowest latency, no mailbox. The handler must be quick; a slow one slows
    /// every publisher. Overflow options do not apply.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Starts paused: messages queue (by the overflow policy) until
    /// [`Subscription::resume`].
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Messages a worker handles per turn before it moves on to another
    /// subscription (default: the bus's batch).
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

    /// The lane capacity, checked.
    pub(crate) fn lane_capacity(&self, default: NonZeroUsize) -> Option<NonZeroUsize> {
        match self.capacity {
            None => Some(default),
            Some(c) => NonZeroUsize::new(c),
        }
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
            Some(bus) => self.sub.resume(&bus.pool),
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
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The subscription's patterns.
    pub fn patterns(&self) -> &[Pattern] {
        self.control.patterns()
    }

    /// Stops delivering: messages queue up (by the overflow policy) until
    /// [`resume`](Self::resume). A paused inline subscription drops what
    /// arrives (counted as [`Paused`](crate::DropReason::Paused)). A handler
    /// call already running finishes.
    pub fn pause(&self) {
        self.control.pause();
    }

    /// Delivers again, starting with what queued meanwhile.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.control.is_paused()
    }

    /// The subscription's counters and queue depths. Still readable after
    /// the subscription ended.
    pub fn stats(&self) -> SubStats {
        self.control.stats()
    }

    /// Unsubscribes now; see the type's docs.
    pub fn unsubscribe(mut self) {
        self.attached = false;
        self.control.unsubscribe();
    }

    /// Keeps the subscription for the life of the bus, without a handle.
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

//! The bus: publish, subscribe, shutdown.
//!
//! # Data flow
//!
//! `publish` checks the bus is open, parses the topic (or takes a parsed
//! one), builds one `Arc<Message<T>>`, loads the registry snapshot (no
//! lock) and walks the matcher. Each matched subscription gets the shared
//! `Arc` pushed into its mailbox lane by its overflow policy; the push that
//! finds the mailbox idle puts one of its runners on the worker pool's run
//! queue (exactly once, see [`crate::mailbox`]'s state machine). A worker
//! runs a batch of the subscription's messages, high lane first, settles each
//! (handled, failed, panicked, expired) and reschedules the runner if work
//! remains. Queue groups are resolved after the walk: one member per group.
//!
//! # Accounting
//!
//! Every message routed to a subscription ends in exactly one
//! [`Outcome`], counted per subscription ([`SubStats`]) and in total
//! ([`BusStats`]). Once the bus is quiet, `delivered == settled()` for every
//! subscription.
//!
//! # Shutdown
//!
//! open → draining (publishes and subscribes fail with `Closed`; paused
//! subscriptions resume; the workers drain every mailbox) → drained (every
//! mailbox closes; what is left, only when the timeout passed, counts as
//! dropped with reason `Shutdown`) → closed (workers joined). Pull receivers
//! keep what was queued for them.

mod confirm;
mod dead_letters;
mod error;
mod filter;
mod health;
mod hooks;
mod options;
mod receiver;
// `pub` items so that `loom-tests` can reach the inbox through `__loom`.
#[allow(unreachable_pub)]
pub(crate) mod request;
mod services;
// `pub` items so that `loom-tests` can reach the publish gate through `__loom`.
#[allow(unreachable_pub)]
pub(crate) mod stats;
mod sub;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use smallvec::SmallVec;

use crate::mailbox::lanes::OverflowPolicy;
use crate::message::{Message, MessageBuilder, PayloadSize, PayloadTooLarge};
use crate::pool::Pool;
use crate::registry::{Registry, SubscriptionId};
use crate::reliability::timer::{Fire, Timer};
use crate::reliability::{
    Breaker, CircuitState, Clock, DeadLetter, DeadLetterQueue, DeadLetterReason, DeadLetterSink,
    Failure, SystemClock,
};
use crate::sync::atomic::{AtomicU8, Ordering};
use crate::sync::{wait_deadline, Mutex};
use crate::topic::Limits;

pub(crate) use confirm::Tracker;

/// A message published by [`Bus::publish_tracked`], its outcomes to come.
#[cfg(any(feature = "redis", feature = "postgres"))]
#[derive(Debug)]
pub(crate) struct Tracked {
    tracker: Arc<Tracker>,
    id: crate::MessageId,
    matched: usize,
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl Tracked {
    /// Waits until every matched subscription settled it, or `deadline`;
    /// may be called again after a timeout.
    pub(crate) fn wait(&self, deadline: Instant) -> Confirmation {
        self.tracker.confirmation(self.id, self.matched, deadline)
    }
}
pub use confirm::{Confirmation, Delivery};
pub use dead_letters::{DeadLetters, ReplayError, ReplaySummary};
pub use error::{
    BuildError, PublishError, RecvError, RecvTimeoutError, ShutdownError, SubscribeError,
    TryRecvError,
};
pub use health::{Health, HealthCheck, HealthIssue, HealthStatus, HealthThresholds};
pub use options::{GroupStrategy, IntoTopic, PatternArg, SubscribeOptions, Subscription};
pub use receiver::Receiver;
pub use request::{Replier, RequestError};
pub use stats::{
    BusStats, Counts, DeadLettered, DelayedStats, DropReason, Drops, Outcome, Receipt, SubStats,
};

use filter::{Gate, Screen};
use hooks::Hooks;
use options::Handle;
use services::Services;
use stats::{Entered, Publishes, Totals};
pub(crate) use sub::Offered;
use sub::{DeadLetterOn, Group, HandlerFn, Make, Reliable, Spec, Sub};

/// A handler's error, boxed.
///
/// # Examples
///
/// ```
/// use topicbus::{BoxError, Bus, Message};
/// fn parse(m: &Message<String>) -> Result<(), BoxError> {
///     let _n: u64 = m.payload().parse()?; // any std error converts
///     Ok(())
/// }
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let _s = bus.subscribe("numbers", parse)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler may return: `()` (it cannot fail) or
/// `Result<(), E>` for any error `E` convertible into a [`BoxError`]
/// (`std::io::Error`, `String`, `&str`, your own error type, …).
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Message};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let _quiet = bus.subscribe("a", |_m: &Message<u32>| {})?;
/// let _picky = bus.subscribe("a", |m: &Message<u32>| {
///     if *m.payload() > 9 { Err("too big") } else { Ok(()) }
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait HandlerResult {
    /// The result as the bus records it.
    ///
    /// # Errors
    ///
    /// The handler's error, boxed.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::HandlerResult;
    /// assert!(().into_result().is_ok());
    /// let failed: Result<(), &str> = Err("boom");
    /// assert_eq!(failed.into_result().unwrap_err().to_string(), "boom");
    /// ```
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    #[inline]
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> HandlerResult for Result<(), E> {
    #[inline]
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const DRAINED: u8 = 2;
const CLOSED: u8 = 3;

/// The default lane capacity.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, DEFAULT_CAPACITY};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let s = bus.subscribe("t", |_m: &topicbus::Message<u32>| ())?;
/// s.pause();
/// for i in 0..DEFAULT_CAPACITY as u32 {
///     assert_eq!(bus.publish("t", i)?.enqueued, 1);
/// }
/// assert_eq!(s.stats().queued[1], DEFAULT_CAPACITY); // the normal lane is full
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_CAPACITY: usize = 1024;

/// The largest lane capacity a bus or subscription accepts (2^24 messages
/// per lane). A lane allocates its slots up front, 16 bytes or more each,
/// so the three lanes of one subscription at this capacity take 768 MiB;
/// a larger value is refused with a typed error instead of failing the
/// allocation.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, BuildError, MAX_CAPACITY};
/// let too_big = Bus::<u32>::builder().capacity(MAX_CAPACITY + 1).build();
/// assert!(matches!(too_big, Err(BuildError::Config(_))));
/// ```
pub const MAX_CAPACITY: usize = 1 << 24;

/// A lane capacity within `1..=MAX_CAPACITY`, or why not (the bus's
/// default and a subscription's own are checked alike).
pub(crate) fn checked_capacity(capacity: usize) -> Result<NonZeroUsize, &'static str> {
    match NonZeroUsize::new(capacity) {
        None => Err("capacity must be at least 1"),
        Some(c) if c.get() > MAX_CAPACITY => {
            Err("capacity must be at most MAX_CAPACITY (16,777,216)")
        }
        Some(c) => Ok(c),
    }
}
/// The default number of messages a worker handles per turn.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, DEFAULT_BATCH};
/// // Favour fairness between subscriptions over throughput:
/// let bus = Bus::<u32>::builder().batch(DEFAULT_BATCH / 4).build()?;
/// # drop(bus);
/// # Ok::<(), topicbus::BuildError>(())
/// ```
pub const DEFAULT_BATCH: usize = 64;
/// The default timeout of the shutdown run when the last handle drops.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, DEFAULT_DROP_TIMEOUT};
/// // Dropping the last handle shuts the bus down, waiting this long at most.
/// let bus = Bus::<u32>::builder().drop_timeout(DEFAULT_DROP_TIMEOUT * 2).build()?;
/// drop(bus);
/// # Ok::<(), topicbus::BuildError>(())
/// ```
pub const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a payload's size; set by [`BusBuilder::max_payload`].
type SizeCheck<T> = fn(&T, usize) -> Result<(), PayloadTooLarge>;

/// Configures and builds a [`Bus`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Limits, OverflowPolicy, DEFAULT_MAX_PAYLOAD};
///
/// let bus = Bus::<Vec<u8>>::builder()
///     .workers(4)
///     .capacity(4096)
///     .overflow(OverflowPolicy::DropOldest)
///     .limits(Limits { max_len: 512, max_depth: 16 })
///     .max_payload(DEFAULT_MAX_PAYLOAD)
///     .drop_timeout(Duration::from_secs(1))
///     .build()?;
/// # drop(bus);
/// # Ok::<(), topicbus::BuildError>(())
/// ```
#[must_use]
pub struct BusBuilder<T> {
    workers: Option<usize>,
    capacity: usize,
    overflow: OverflowPolicy,
    batch: usize,
    limits: Limits,
    max_payload: Option<(usize, SizeCheck<T>)>,
    drop_timeout: Duration,
    on_worker_start: Option<crate::pool::StartHook>,
    clock: Option<Arc<dyn Clock>>,
    dead_letters: Option<usize>,
    dead_letter_sink: Option<Arc<dyn DeadLetterSink<T>>>,
    hooks: Hooks<T>,
    latency_sampling: u32,
}

impl<T> std::fmt::Debug for BusBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusBuilder")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("batch", &self.batch)
            .field("limits", &self.limits)
            .field("max_payload", &self.max_payload.map(|(n, _)| n))
            .field("drop_timeout", &self.drop_timeout)
            .field("on_worker_start", &self.on_worker_start.is_some())
            .field("clock", &self.clock)
            .field("dead_letters", &self.dead_letters)
            .field("dead_letter_sink", &self.dead_letter_sink.is_some())
            .field("hooks", &self.hooks)
            .field("latency_sampling", &self.latency_sampling)
            .finish()
    }
}

impl<T: Send + Sync + 'static> BusBuilder<T> {
    fn new() -> Self {
        Self {
            workers: None,
            capacity: DEFAULT_CAPACITY,
            overflow: OverflowPolicy::Block {
                timeout: Duration::from_secs(1),
            },
            batch: DEFAULT_BATCH,
            limits: Limits::DEFAULT,
            max_payload: None,
            drop_timeout: DEFAULT_DROP_TIMEOUT,
            on_worker_start: None,
            clock: None,
            dead_letters: None,
            dead_letter_sink: None,
            hooks: Hooks::default(),
            latency_sampling: crate::metrics::DEFAULT_LATENCY_SAMPLING,
        }
    }

    /// Worker threads (default: the available cores).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(2).build()?;
    /// let w = bus.metrics().workers;
    /// assert_eq!(w.running + w.idle + w.parked, 2);
    /// assert!(Bus::<u32>::builder().workers(0).build().is_err());
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Default lane capacity of each subscription (default 1,024 per lane;
    /// at most [`MAX_CAPACITY`], checked by [`build`](Self::build)).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, OverflowPolicy};
    /// let bus = Bus::<u32>::builder().workers(1).capacity(2).overflow(OverflowPolicy::DropNewest).build()?;
    /// let rx = bus.receiver("t")?;
    /// let enqueued: Vec<u32> = (0..3).map(|i| bus.publish("t", i).map(|r| r.enqueued)).collect::<Result<_, _>>()?;
    /// assert_eq!(enqueued, [1, 1, 0]); // the third found the lane full
    /// assert_eq!(rx.stats().counts.dropped.newest, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Default overflow policy (default: block the publisher up to one
    /// second, then drop the message, counted as
    /// [`Timeout`](DropReason::Timeout)).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, OverflowPolicy, PublishError};
    /// let bus = Bus::<u32>::builder().workers(1).capacity(1).overflow(OverflowPolicy::Reject).build()?;
    /// let _rx = bus.receiver("t")?;
    /// bus.publish("t", 1)?;
    /// assert!(matches!(bus.publish("t", 2), Err(PublishError::Rejected { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Default messages per worker turn (default 64): higher favours
    /// throughput, lower fairness between subscriptions.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().batch(256).build()?; // throughput over fairness
    /// # drop(bus);
    /// assert!(Bus::<u32>::builder().batch(0).build().is_err());
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Topic and pattern limits (default 255 bytes, 32 levels).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Limits, PublishError};
    /// let bus = Bus::<u32>::builder().workers(1).limits(Limits { max_len: 16, max_depth: 3 }).build()?;
    /// assert!(bus.publish("a.b.c", 1).is_ok());
    /// assert!(matches!(bus.publish("a.b.c.d", 1), Err(PublishError::Topic(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long dropping the last handle waits for the shutdown (default
    /// five seconds).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).drop_timeout(Duration::from_secs(1)).build()?;
    /// let s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// bus.publish("t", 1)?;
    /// drop(bus); // the last handle: drains within a second, then joins the workers
    /// assert_eq!(s.stats().handled, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// Samples one handler run in `every` for the latency histograms of
    /// [`Bus::metrics`] (default
    /// [`DEFAULT_LATENCY_SAMPLING`](crate::DEFAULT_LATENCY_SAMPLING); 1:
    /// every run; 0: off, and no histogram memory is taken). A sampled run
    /// reads the bus's clock three times (≈ 25 ns each on the system clock)
    /// and records into its worker's own histograms, ≈ 150 ns in all; the
    /// others cost a thread-local countdown. At the default that is ≈ 2 ns
    /// a handler run, about 1 % of the cheapest publish. The histograms
    /// take about 0.8 MB per worker (plus one set for inline handlers).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().latency_sampling(0).build()?;
    /// assert_eq!(bus.metrics().sampling, 0);
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn latency_sampling(mut self, every: u32) -> Self {
        self.latency_sampling = every;
        self
    }

    /// Rejects payloads larger than `max` bytes with
    /// [`PublishError::PayloadTooLarge`]. Available for byte-like payloads
    /// ([`PayloadSize`]); [`DEFAULT_MAX_PAYLOAD`](crate::DEFAULT_MAX_PAYLOAD)
    /// (1 MiB) is the conventional value. Without it the bus does not measure
    /// payloads.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, PublishError};
    /// let bus = Bus::<String>::builder().workers(1).max_payload(8).build()?;
    /// assert!(bus.publish("t", "12345678".to_string()).is_ok());
    /// assert!(matches!(bus.publish("t", "123456789".to_string()), Err(PublishError::PayloadTooLarge(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_payload(mut self, max: usize) -> Self
    where
        T: PayloadSize,
    {
        self.max_payload = Some((max, |p, max| crate::message::check_payload_size(p, max)));
        self
    }

    /// Runs `hook(n)` first on worker thread `n` (`0..workers`), before it
    /// takes any work: to pin workers to cores, register them with a
    /// profiler, or set a thread priority. A panic in the hook is caught
    /// and counted in [`BusStats::worker_panics`]; the worker still serves.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use topicbus::Bus;
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let seen = Arc::clone(&started);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(2)
    ///     .on_worker_start(move |_n| {
    ///         seen.fetch_add(1, Ordering::SeqCst);
    ///     })
    ///     .build()?;
    /// bus.shutdown(Duration::from_secs(5))?; // joins the workers
    /// assert_eq!(started.load(Ordering::SeqCst), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_worker_start = Some(std::sync::Arc::new(hook));
        self
    }

    /// The clock for expiry, delays, retries, breakers, deduplication and
    /// dead-letter times (default: the system clocks). Tests give a
    /// [`ManualClock`](crate::ManualClock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, ManualClock, Message};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).build()?;
    /// let rx = bus.receiver("quotes")?;
    /// bus.publish_message(Message::builder("quotes".parse()?, 1).timestamp(clock.wall()).ttl(Duration::from_secs(1)))?;
    /// clock.advance(Duration::from_secs(2)); // no real waiting
    /// assert!(rx.try_recv().is_err());
    /// assert_eq!(rx.stats().expired, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps a dead-letter queue of at most `capacity` letters (the oldest
    /// are evicted, counted); see [`Bus::dead_letters`]. Without it, failed
    /// messages are only counted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(2).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// for i in 0..3 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// let dlq = bus.dead_letters().expect("configured");
    /// assert_eq!((dlq.len(), dlq.stats().evicted), (2, 1)); // the oldest went
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dead_letters(mut self, capacity: usize) -> Self {
        self.dead_letters = Some(capacity);
        self
    }

    /// Also hands every dead letter to `sink` (needs
    /// [`dead_letters`](Self::dead_letters)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use topicbus::{BoxError, Bus, DeadLetter, DeadLetterSink};
    /// #[derive(Default)]
    /// struct Count(Mutex<u32>);
    /// impl DeadLetterSink<u32> for Count {
    ///     fn store(&self, _letter: &DeadLetter<u32>) -> Result<(), BoxError> {
    ///         *self.0.lock().unwrap() += 1;
    ///         Ok(())
    ///     }
    /// }
    /// let sink = Arc::new(Count::default());
    /// assert!(Bus::<u32>::builder().dead_letter_sink(sink.clone()).build().is_err()); // needs a queue
    /// let bus = Bus::<u32>::builder().dead_letters(100).dead_letter_sink(sink).build()?;
    /// # drop(bus);
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn dead_letter_sink(mut self, sink: Arc<dyn DeadLetterSink<T>>) -> Self {
        self.dead_letter_sink = Some(sink);
        self
    }

    /// Calls `hook(message, receipt)` after every publish (on the
    /// publisher's thread).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use topicbus::Bus;
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let s = seen.clone();
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_publish(move |_m, r| { s.fetch_add(u64::from(r.matched), Ordering::Relaxed); })
    ///     .build()?;
    /// let _rx = bus.receiver("a")?;
    /// bus.publish("a", 1)?;
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_publish(
        mut self,
        hook: impl Fn(&Message<T>, &Receipt) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_publish = Some(Box::new(hook));
        self
    }

    /// Calls `hook(message, subscription)` on the worker just before a
    /// handler runs (every attempt).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_deliver(move |m, sub| {
    ///         let _ = tx.lock().unwrap().send((*m.payload(), sub));
    ///     })
    ///     .build()?;
    /// let s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// bus.publish("t", 7)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, (7, s.id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_deliver(
        mut self,
        hook: impl Fn(&Message<T>, SubscriptionId) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_deliver = Some(Box::new(hook));
        self
    }

    /// Calls `hook(message, subscription, failure)` when a handler fails or
    /// panics (every attempt).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_error(move |_m, _sub, failure| {
    ///         let _ = tx.lock().unwrap().send(failure.message.clone());
    ///     })
    ///     .build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err("disk full"))?;
    /// bus.publish("t", 1)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, "disk full");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_error(
        mut self,
        hook: impl Fn(&Message<T>, SubscriptionId, &Failure) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_error = Some(Box::new(hook));
        self
    }

    /// Calls `hook(message, subscription, outcome)` when a subscription
    /// settles a message for good: exactly once per message and matched
    /// subscription, whatever the outcome (handled, received, failed,
    /// panicked, dropped by a named policy, expired, dead-lettered). The
    /// hook an auditor or a metrics exporter wants: the sum of its calls is
    /// the sum of the outcome counters.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Outcome};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_outcome(move |m, _sub, outcome| {
    ///         let _ = tx.lock().unwrap().send((*m.payload(), outcome));
    ///     })
    ///     .build()?;
    /// let _s = bus.subscribe("jobs", |m: &Message<u32>| {
    ///     if *m.payload() == 2 { Err("no") } else { Ok(()) }
    /// })?;
    /// bus.publish("jobs", 1)?;
    /// bus.publish("jobs", 2)?;
    /// let wait = Duration::from_secs(10);
    /// assert_eq!(rx.recv_timeout(wait)?, (1, Outcome::Handled));
    /// assert_eq!(rx.recv_timeout(wait)?, (2, Outcome::Failed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_outcome(
        mut self,
        hook: impl Fn(&Message<T>, SubscriptionId, Outcome) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_outcome = Some(Box::new(hook));
        self
    }

    /// Calls `hook(message, subscription, next_attempt, delay)` when a
    /// retry is scheduled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, RetryPolicy, SubscribeOptions};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_retry(move |_m, _sub, next_attempt, delay| {
    ///         let _ = tx.lock().unwrap().send((next_attempt, delay));
    ///     })
    ///     .build()?;
    /// let retry = RetryPolicy::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)).jitter(false);
    /// let _s = bus.subscribe_with(SubscribeOptions::new().pattern("t").retry(retry), |m: &Message<u32>| {
    ///     if m.attempt() == 1 { Err("flaky") } else { Ok(()) }
    /// })?;
    /// bus.publish("t", 1)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, (2, Duration::from_millis(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_retry(
        mut self,
        hook: impl Fn(&Message<T>, SubscriptionId, u32, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_retry = Some(Box::new(hook));
        self
    }

    /// Calls `hook(letter)` for every dead letter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterReason, Message, Permanent};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .dead_letters(10)
    ///     .on_dead_letter(move |letter| {
    ///         let _ = tx.lock().unwrap().send((*letter.message.payload(), letter.reason));
    ///     })
    ///     .build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("bad input")))?;
    /// bus.publish("t", 3)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, (3, DeadLetterReason::Permanent));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_dead_letter(mut self, hook: impl Fn(&DeadLetter<T>) + Send + Sync + 'static) -> Self {
        self.hooks.on_dead_letter = Some(Box::new(hook));
        self
    }

    /// Calls `hook(message, subscription)` when a message expires before
    /// its handler saw it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, ManualClock, Message, SubscribeOptions};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .clock(clock.clone())
    ///     .on_expire(move |m, _sub| {
    ///         let _ = tx.lock().unwrap().send(*m.payload());
    ///     })
    ///     .build()?;
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").paused(true), |_m: &Message<u32>| ())?;
    /// bus.publish_message(Message::builder("t".parse()?, 9).timestamp(clock.wall()).ttl(Duration::from_secs(1)))?;
    /// clock.advance(Duration::from_secs(2));
    /// s.resume(); // the worker finds it expired
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_expire(
        mut self,
        hook: impl Fn(&Message<T>, SubscriptionId) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_expire = Some(Box::new(hook));
        self
    }

    /// Calls `hook(subscription, from, to)` when a circuit breaker changes
    /// state. It runs on the worker that caused the change, just after the
    /// new state became visible in
    /// [`SubStats::circuit`](crate::SubStats::circuit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, CircuitState, Message, SubscribeOptions};
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_circuit_change(move |_sub, from, to| {
    ///         let _ = tx.lock().unwrap().send((from, to));
    ///     })
    ///     .build()?;
    /// let breaker = CircuitBreaker::new().window(BreakerWindow::Calls(1)).min_calls(1);
    /// let _s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("t").circuit_breaker(breaker),
    ///     |_m: &Message<u32>| Err("down"),
    /// )?;
    /// bus.publish("t", 1)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, (CircuitState::Closed, CircuitState::Open));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_circuit_change(
        mut self,
        hook: impl Fn(SubscriptionId, CircuitState, CircuitState) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_circuit_change = Some(Box::new(hook));
        self
    }

    /// Calls `hook(report)` when the shutdown finished.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use topicbus::Bus;
    /// let clean = Arc::new(AtomicBool::new(false));
    /// let c = clean.clone();
    /// let bus = Bus::<u32>::builder()
    ///     .workers(1)
    ///     .on_shutdown(move |report| c.store(report.is_clean(), Ordering::SeqCst))
    ///     .build()?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert!(clean.load(Ordering::SeqCst));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_shutdown(mut self, hook: impl Fn(&ShutdownReport) + Send + Sync + 'static) -> Self {
        self.hooks.on_shutdown = Some(Box::new(hook));
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for a zero capacity, batch or worker count, or
    /// a capacity above [`MAX_CAPACITY`];
    /// [`BuildError::Spawn`] when a worker thread cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, BuildError};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// assert!(bus.is_open());
    /// assert!(matches!(Bus::<u32>::builder().capacity(0).build(), Err(BuildError::Config(_))));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn build(self) -> Result<Bus<T>, BuildError> {
        let capacity = checked_capacity(self.capacity).map_err(BuildError::Config)?;
        if self.batch == 0 {
            return Err(BuildError::Config("batch must be at least 1"));
        }
        let workers = match self.workers {
            Some(0) => return Err(BuildError::Config("workers must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        if self.dead_letter_sink.is_some() && self.dead_letters.is_none() {
            return Err(BuildError::Config(
                "a dead-letter sink needs a dead-letter queue (`dead_letters`)",
            ));
        }
        if self.dead_letters == Some(0) {
            return Err(BuildError::Config("dead_letters must be at least 1"));
        }
        let timer_clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::clone(c),
            None => Arc::new(SystemClock),
        };
        let services = Arc::new(Services {
            pool: Pool::new(workers, self.on_worker_start)?,
            clock: self.clock,
            timer: Timer::new(timer_clock),
            dlq: self
                .dead_letters
                .map(|cap| Arc::new(DeadLetterQueue::new(cap, self.dead_letter_sink))),
            hooks: (!self.hooks.is_empty()).then(|| Box::new(self.hooks)),
            draining: crate::sync::atomic::AtomicBool::new(false),
            metrics: crate::metrics::Recorder::new(workers, self.latency_sampling),
        });
        let inner = Arc::new(Inner {
            registry: Registry::new(),
            custom_clock: services.clock.is_some(),
            publish_hook: services
                .hooks
                .as_ref()
                .is_some_and(|h| h.on_publish.is_some()),
            services,
            state: AtomicU8::new(OPEN),
            limits: self.limits,
            capacity,
            overflow: self.overflow,
            batch: self.batch,
            max_payload: self.max_payload,
            publishes: Publishes::new(),
            delayed: Delayed::default(),
            inbox: Mutex::new(None),
            checks: Mutex::new(Vec::new()),
            groups: Mutex::new(HashMap::new()),
            books: Mutex::new(Books::default()),
            report: Mutex::new(None),
        });
        Ok(Bus {
            handle: Arc::new(BusHandle {
                inner,
                drop_timeout: self.drop_timeout,
            }),
        })
    }
}

/// What a shutdown did.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message};
/// let bus = Bus::<u32>::builder().workers(2).build()?;
/// let _s = bus.subscribe("work", |_m: &Message<u32>| ())?;
/// for i in 0..100 { bus.publish("work", i)?; }
/// let report = bus.shutdown(Duration::from_secs(10))?;
/// assert!(report.is_clean());
/// assert_eq!(report.dropped, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Messages settled while draining (handled, failed, expired, …).
    pub drained: u64,
    /// Messages left when the timeout passed, counted as dropped with reason
    /// [`Shutdown`](DropReason::Shutdown).
    pub dropped: u64,
    /// Messages still waiting in pull receivers (they can still take them).
    pub left_in_receivers: u64,
    /// True when the mailboxes did not drain before the timeout.
    pub timed_out: bool,
    /// True when every worker thread exited and was joined; false when a
    /// handler still ran at the deadline (its thread exits when it returns).
    pub workers_joined: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Drained in time, nothing dropped, every worker joined.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// bus.publish("t", 1)?;
    /// let report = bus.shutdown(Duration::from_secs(10))?;
    /// assert!(report.is_clean() && report.workers_joined);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_clean(&self) -> bool {
        !self.timed_out && self.dropped == 0 && self.workers_joined
    }
}

/// The counters of unsubscribed subscriptions, so bus totals stay whole.
/// A subscription may still be settling messages after it left the
/// registry (a racing publisher, a worker finishing its batch), so its
/// counters stay live here until only the books hold them, and are then
/// folded into `retired`.
#[derive(Debug, Default)]
struct Books {
    retired: Totals,
    gone: Vec<Arc<sub::Counters>>,
}

impl Books {
    /// Folds counters nobody else holds any more; returns retired plus the
    /// live ones.
    fn read(&mut self) -> Totals {
        let retired = &mut self.retired;
        self.gone.retain(|c| {
            if Arc::strong_count(c) == 1 {
                // Final: nobody else can reach these counters any more.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                retired.add(&c.read());
                false
            } else {
                true
            }
        });
        let mut total = *retired;
        for c in &self.gone {
            total.add(&c.read());
        }
        total
    }
}

/// Counters of delayed deliveries.
#[derive(Debug, Default)]
struct Delayed {
    scheduled: crate::sync::atomic::AtomicU64,
    delivered: crate::sync::atomic::AtomicU64,
    given_up: crate::sync::atomic::AtomicU64,
}

impl Delayed {
    fn stats(&self) -> DelayedStats {
        // Settled counts first: `pending` never reads below zero.
        let delivered = self.delivered.load(Ordering::Acquire);
        let given_up = self.given_up.load(Ordering::Acquire);
        let scheduled = self.scheduled.load(Ordering::Acquire);
        DelayedStats {
            scheduled,
            delivered,
            given_up,
            pending: scheduled.saturating_sub(delivered + given_up),
        }
    }
}

/// The shared state behind every handle.
pub(crate) struct Inner<T> {
    registry: Registry<Arc<Sub<T>>>,
    pub(crate) services: Arc<Services<T>>,
    /// Copies of two `services` facts for the publish path (no pointer
    /// chase there when the features are unused).
    custom_clock: bool,
    publish_hook: bool,
    state: AtomicU8,
    limits: Limits,
    capacity: NonZeroUsize,
    overflow: OverflowPolicy,
    batch: usize,
    max_payload: Option<(usize, SizeCheck<T>)>,
    publishes: Publishes,
    delayed: Delayed,
    /// The request-reply inbox, made by the first request.
    inbox: Mutex<Option<Arc<request::Inbox<T>>>>,
    /// Health checks of what the bus depends on (adapters).
    checks: health::Checks,
    groups: Mutex<HashMap<String, Weak<Group>>>,
    /// Counters of unsubscribed subscriptions; see [`Books`].
    books: Mutex<Books>,
    /// The first shutdown's report; held while it runs, so a concurrent
    /// shutdown waits for it.
    report: Mutex<Option<ShutdownReport>>,
}

/// The counted owner of the bus: the last one dropped shuts it down.
struct BusHandle<T: Send + Sync + 'static> {
    inner: Arc<Inner<T>>,
    drop_timeout: Duration,
}

impl<T: Send + Sync + 'static> Drop for BusHandle<T> {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        if sub::in_handler_of(inner.addr()) {
            // A handler dropped the last handle: it cannot wait for itself,
            // so another thread shuts down (once the handler returns).
            let timeout = self.drop_timeout;
            let spawned = std::thread::Builder::new()
                .name("topicbus-shutdown".into())
                .spawn(move || {
                    let _ = inner.shutdown(timeout);
                });
            if spawned.is_err() {
                // No thread to spare: at least stop accepting messages.
                self.inner.state.store(DRAINING, Ordering::SeqCst);
            }
        } else {
            let _ = inner.shutdown(self.drop_timeout);
        }
    }
}

/// A topic-routed message bus. Cheap to clone: every clone is a handle to
/// the same bus; the last one dropped shuts it down.
///
/// Handlers that publish should hold a [`WeakBus`] (from
/// [`downgrade`](Self::downgrade)), not a `Bus`: a handler is owned by the
/// bus, so a `Bus` inside it keeps the bus alive for ever.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<String>::builder().workers(2).build()?;
/// let orders = bus.subscribe("orders.*.created", |m: &Message<String>| {
///     println!("new order in {}: {}", m.topic(), m.payload());
/// })?;
/// let audit = bus.receiver("orders.#")?;
///
/// let receipt = bus.publish("orders.eu.created", "order 1".to_string())?;
/// assert_eq!(receipt.matched, 2);
/// assert_eq!(audit.recv()?.payload(), "order 1");
///
/// let report = bus.shutdown(Duration::from_secs(5))?;
/// assert!(report.is_clean());
/// assert_eq!(orders.stats().handled, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bus<T: Send + Sync + 'static> {
    handle: Arc<BusHandle<T>>,
}

impl<T: Send + Sync + 'static> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<T: Send + Sync + 'static> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("Bus")
            .field("state", &inner.state.load(Ordering::Relaxed))
            .field("subscriptions", &inner.registry.load().len())
            .field("services", &inner.services)
            .finish_non_exhaustive()
    }
}

/// A handle that does not keep the bus alive; see [`Bus::downgrade`].
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Message};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let weak = bus.downgrade();
/// // A handler that republishes holds the weak handle.
/// let _relay = bus.subscribe("in", move |m: &Message<u32>| {
///     if let Some(bus) = weak.upgrade() {
///         let _ = bus.publish("out", m.payload() + 1);
///     }
/// })?;
/// let out = bus.receiver("out")?;
/// bus.publish("in", 1)?;
/// assert_eq!(*out.recv()?.payload(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WeakBus<T: Send + Sync + 'static> {
    handle: Weak<BusHandle<T>>,
}

impl<T: Send + Sync + 'static> Clone for WeakBus<T> {
    fn clone(&self) -> Self {
        Self {
            handle: Weak::clone(&self.handle),
        }
    }
}

impl<T: Send + Sync + 'static> std::fmt::Debug for WeakBus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakBus").finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> WeakBus<T> {
    /// A `Bus` handle, unless every strong handle is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let weak = bus.downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(bus);
    /// assert!(weak.upgrade().is_none());
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn upgrade(&self) -> Option<Bus<T>> {
        self.handle.upgrade().map(|handle| Bus { handle })
    }
}

/// A batch publish's totals.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Topic};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let rx = bus.receiver("t.*")?;
/// let t = Topic::parse("t.x")?;
/// let r = bus.publish_batch((0..10).map(|i| (&t, i)))?;
/// assert_eq!((r.published, r.enqueued), (10, 10));
/// assert_eq!(rx.try_iter().count(), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReceipt {
    /// Messages published.
    pub published: u64,
    /// Summed over the messages, as in [`Receipt`].
    pub matched: u64,
    /// Summed over the messages.
    pub enqueued: u64,
    /// Summed over the messages.
    pub dropped: u64,
    /// Summed over the messages (a batch does not stop on rejection).
    pub rejected: u64,
    /// Summed over the messages.
    pub expired: u64,
    /// Summed over the messages.
    pub filtered: u64,
    /// Summed over the messages.
    pub duplicates: u64,
}

impl BatchReceipt {
    fn add(&mut self, r: &Receipt) {
        self.published += 1;
        self.matched += u64::from(r.matched);
        self.enqueued += u64::from(r.enqueued);
        self.dropped += u64::from(r.dropped);
        self.rejected += u64::from(r.rejected);
        self.expired += u64::from(r.expired);
        self.filtered += u64::from(r.filtered);
        self.duplicates += u64::from(r.duplicates);
    }
}

/// A batch publish that stopped early.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, PublishError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let err = bus.publish_batch([("ok", 1), ("bad.*", 2), ("ok", 3)]).unwrap_err();
/// assert_eq!(err.done.published, 1);
/// assert!(matches!(err.error, PublishError::Topic(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch stopped after {} message(s): {error}", done.published)]
#[non_exhaustive]
pub struct BatchError {
    /// What was published before the failing item.
    pub done: BatchReceipt,
    /// Why the failing item (and the rest) were not published.
    pub error: PublishError,
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// A builder with the defaults: one worker per core, lanes of 1,024,
    /// block-then-drop overflow (one second), default limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?; // one worker per core, lanes of 1,024
    /// assert!(bus.is_open());
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn builder() -> BusBuilder<T> {
        BusBuilder::new()
    }

    /// A handle that does not keep the bus alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let weak = bus.downgrade(); // a handler holding `bus` itself would keep it alive
    /// let _relay = bus.subscribe("in", move |m: &Message<u32>| match weak.upgrade() {
    ///     Some(bus) => bus.publish("out", m.payload() + 1).map(drop),
    ///     None => Ok(()),
    /// })?;
    /// let out = bus.receiver("out")?;
    /// bus.publish("in", 1)?;
    /// assert_eq!(*out.recv()?.payload(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn downgrade(&self) -> WeakBus<T> {
        WeakBus {
            handle: Arc::downgrade(&self.handle),
        }
    }

    fn inner(&self) -> &Arc<Inner<T>> {
        &self.handle.inner
    }

    /// Publishes `payload` on `topic` with default envelope (normal
    /// priority, no expiry). Lock-free; allocates one `Arc<Message<T>>`
    /// (plus the topic text when `topic` is a `&str`). May block only when a
    /// matched subscription's policy is [`OverflowPolicy::Block`] and its
    /// lane is full.
    ///
    /// # Errors
    ///
    /// [`PublishError::Topic`] for an invalid topic,
    /// [`PublishError::PayloadTooLarge`] above the payload limit,
    /// [`PublishError::Closed`] once shutdown began (nothing published in
    /// these cases), [`PublishError::Rejected`] when a subscription with
    /// policy `Reject` was full (the others got the message).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let eu = bus.receiver("orders.eu.*")?;
    /// let all = bus.receiver("orders.#")?;
    /// let receipt = bus.publish("orders.eu.created", "#1001")?;
    /// assert_eq!((receipt.matched, receipt.enqueued), (2, 2));
    /// assert_eq!(*eu.recv()?.payload(), "#1001");
    /// assert_eq!(*all.recv()?.payload(), "#1001");
    /// assert_eq!(bus.publish("orders.us.created", "#1002")?.matched, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn publish(&self, topic: impl IntoTopic, payload: T) -> Result<Receipt, PublishError> {
        let inner = self.inner();
        let entered = inner.publishes.enter();
        inner.check_open()?;
        let msg = inner.message(topic, payload, None)?;
        inner.send(entered, &msg)
    }

    /// Publishes a message built with [`Message::builder`] (headers,
    /// priority, expiry, correlation, addressing). Takes a builder or a
    /// built message.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Priority, Topic};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let rx = bus.receiver("jobs.#")?;
    /// bus.publish_message(
    ///     Message::builder(Topic::parse("jobs.urgent")?, "reboot")
    ///         .priority(Priority::High)
    ///         .ttl(Duration::from_secs(60))
    ///         .header("requested-by", "ops"),
    /// )?;
    /// let m = rx.recv()?;
    /// assert_eq!(m.headers().get("requested-by"), Some("ops"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_message(&self, message: impl Into<Message<T>>) -> Result<Receipt, PublishError> {
        let inner = self.inner();
        let entered = inner.publishes.enter();
        inner.check_open()?;
        let msg = inner.admit(message.into())?;
        if let Some(at) = msg.deliver_at() {
            if let Some(receipt) = inner.schedule_delayed(&msg, at) {
                entered.commit();
                return Ok(receipt);
            }
        }
        inner.send(entered, &msg)
    }

    /// Publishes several messages with one snapshot load. Stops at the first
    /// invalid item (or at shutdown); a rejection does not stop it (see
    /// [`BatchReceipt::rejected`]).
    ///
    /// # Errors
    ///
    /// [`BatchError`] with what was published before the failing item and
    /// why it failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("prices.*")?;
    /// let r = bus.publish_batch([("prices.eur", 1), ("prices.usd", 2), ("volumes.eur", 3)])?;
    /// assert_eq!((r.published, r.matched), (3, 2));
    /// assert_eq!(rx.try_iter().count(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_batch<K: IntoTopic>(
        &self,
        items: impl IntoIterator<Item = (K, T)>,
    ) -> Result<BatchReceipt, BatchError> {
        let inner = self.inner();
        let mut done = BatchReceipt::default();
        let fail = |done, error| Err(BatchError { done, error });
        let snapshot = inner.registry.load();
        for (topic, payload) in items {
            let entered = inner.publishes.enter();
            if let Err(e) = inner.check_open() {
                return fail(done, e);
            }
            let msg = match inner.message(topic, payload, None) {
                Ok(msg) => msg,
                Err(e) => return fail(done, e),
            };
            done.add(&inner.dispatch(&snapshot, &msg));
            entered.commit();
        }
        Ok(done)
    }

    /// Publishes and waits until every matched subscription settled the
    /// message (handled, failed, …) or `timeout` passed; reports each
    /// outcome.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), except that a rejection is reported in
    /// the confirmation as [`DropReason::Rejected`], not as an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Outcome};
    /// let bus = Bus::<String>::builder().workers(2).build()?;
    /// let _mailer = bus.subscribe("user.created", |_m: &Message<String>| Ok::<(), &str>(()))?;
    /// let _crm = bus.subscribe("user.*", |_m: &Message<String>| Err("crm offline"))?;
    /// let c = bus.publish_confirmed("user.created", "ada".into(), Duration::from_secs(10))?;
    /// assert!(c.complete && !c.all_succeeded());
    /// let mut outcomes: Vec<Outcome> = c.deliveries.iter().map(|d| d.outcome).collect();
    /// outcomes.sort_by_key(|o| o.is_success());
    /// assert_eq!(outcomes, [Outcome::Failed, Outcome::Handled]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_confirmed(
        &self,
        topic: impl IntoTopic,
        payload: T,
        timeout: Duration,
    ) -> Result<Confirmation, PublishError> {
        let inner = self.inner();
        let entered = inner.publishes.enter();
        inner.check_open()?;
        let tracker = Arc::new(Tracker::new());
        let msg = inner.message(topic, payload, Some(Arc::clone(&tracker)))?;
        let deadline = Instant::now().checked_add(timeout);
        let receipt = inner.dispatch(&inner.registry.load(), &msg);
        entered.commit();
        drop(msg);
        Ok(tracker.wait(
            receipt.id,
            receipt.matched as usize,
            wait_deadline(deadline),
        ))
    }

    /// Publishes a built message with a tracker and returns at once; the
    /// caller waits for the outcomes with [`Tracked::wait`] (adapters that
    /// acknowledge upstream only after a terminal outcome).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn publish_tracked(&self, mut message: Message<T>) -> Result<Tracked, PublishError> {
        let inner = self.inner();
        let entered = inner.publishes.enter();
        inner.check_open()?;
        let tracker = Arc::new(Tracker::new());
        message.tracker = Some(Arc::clone(&tracker));
        let msg = inner.admit(message)?;
        let receipt = inner.dispatch(&inner.registry.load(), &msg);
        tracker.routed();
        entered.commit();
        Ok(Tracked {
            tracker,
            id: receipt.id,
            matched: receipt.matched as usize,
        })
    }

    /// Publishes `message` (locally too when `local`) and, before the
    /// publish counts as finished for shutdown, hands the shared message to
    /// `route` (a [`Router`](crate::route::Router)'s outlets). Delayed
    /// messages are refused by the router before this.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn publish_routed<R>(
        &self,
        message: Message<T>,
        local: bool,
        route: impl FnOnce(&Arc<Message<T>>) -> R,
    ) -> Result<(Receipt, R), PublishError> {
        let inner = self.inner();
        let entered = inner.publishes.enter();
        inner.check_open()?;
        let msg = inner.admit(message)?;
        let receipt = if local {
            inner.dispatch(&inner.registry.load(), &msg)
        } else {
            Receipt::new(msg.id())
        };
        let routed = route(&msg);
        entered.commit();
        Ok((receipt, routed))
    }

    /// A plain message as [`publish`](Self::publish) builds it, checked.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn plain_message(
        &self,
        topic: impl IntoTopic,
        payload: T,
    ) -> Result<Message<T>, PublishError> {
        let inner = self.inner();
        let topic = topic.into_topic(&inner.limits)?;
        inner.check_payload(&payload)?;
        let stamp = inner.custom_clock.then(|| inner.services.wall());
        Ok(Message::plain(topic, payload, stamp, None))
    }

    /// True when `self` and `other` are handles of one bus.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn same_bus(&self, other: &Weak<Inner<T>>) -> bool {
        std::ptr::eq(Arc::as_ptr(self.inner()), other.as_ptr())
    }

    /// Subscribes `handler` to `pattern`, run on the worker pool with the
    /// bus's default options.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Pattern`] for an invalid pattern,
    /// [`SubscribeError::Closed`] once shutdown began.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(2).build()?;
    /// let totals = bus.subscribe("sales.#", |m: &Message<u32>| {
    ///     println!("{} sold {}", m.topic(), m.payload());
    /// })?;
    /// bus.publish("sales.eu.books", 3)?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(totals.stats().handled, 1);
    /// assert!(bus.subscribe("sales.b*", |_m: &Message<u32>| ()).is_err()); // invalid pattern
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe<F, R>(
        &self,
        pattern: impl Into<PatternArg>,
        handler: F,
    ) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&Message<T>) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.subscribe_with(SubscribeOptions::new().pattern(pattern), handler)
    }

    /// Subscribes `handler` with explicit options (several patterns,
    /// capacity, overflow policy, concurrency, queue group, inline, paused).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe), plus
    /// [`SubscribeError::NoPatterns`], [`SubscribeError::Options`] for a zero
    /// capacity, batch or concurrency or concurrency on an inline handler,
    /// and [`SubscribeError::GroupStrategy`] when the queue group exists with
    /// another strategy.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(4).build()?;
    /// let parallel = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("thumbnails.#").concurrency(4),
    ///     |_m: &Message<u32>| (),
    /// )?;
    /// for i in 0..100 {
    ///     bus.publish("thumbnails.new", i)?;
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(parallel.stats().handled, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe_with<F, R>(
        &self,
        options: SubscribeOptions,
        handler: F,
    ) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&Message<T>) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        let handler: HandlerFn<T> = Box::new(move |m| handler(m).into_result());
        let make = if options.inline {
            if options.concurrency.is_some() {
                return Err(SubscribeError::Options(
                    "an inline handler runs on its publishers' threads: concurrency does not apply",
                ));
            }
            Make::Inline(handler)
        } else {
            match options.concurrency {
                Some(0) => return Err(SubscribeError::Options("concurrency must be at least 1")),
                c => Make::Callback(handler, c.unwrap_or(1)),
            }
        };
        let sub = self.inner().add(&options, make)?;
        let id = sub.id;
        Ok(Subscription::new(
            id,
            Box::new(Handle {
                sub,
                bus: Arc::downgrade(self.inner()),
            }),
        ))
    }

    /// A pull subscription to `pattern` with the default options.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let rx = bus.receiver("logs.*.error")?;
    /// bus.publish("logs.api.error", "timeout".into())?;
    /// let m = rx.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!((m.topic().as_str(), m.payload().as_str()), ("logs.api.error", "timeout"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver(&self, pattern: impl Into<PatternArg>) -> Result<Receiver<T>, SubscribeError> {
        self.receiver_with(SubscribeOptions::new().pattern(pattern))
    }

    /// A pull subscription with explicit options (concurrency and inline do
    /// not apply).
    ///
    /// # Errors
    ///
    /// As [`subscribe_with`](Self::subscribe_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, Priority, Message, SubscribeOptions};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("tasks").pattern("alerts").capacity(16))?;
    /// bus.publish("tasks", "later")?;
    /// bus.publish_message(Message::builder("alerts".parse()?, "now").priority(Priority::High))?;
    /// assert_eq!(*rx.try_recv()?.payload(), "now"); // the high lane first
    /// assert_eq!(*rx.try_recv()?.payload(), "later");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver_with(&self, options: SubscribeOptions) -> Result<Receiver<T>, SubscribeError> {
        if options.inline || options.concurrency.is_some() {
            return Err(SubscribeError::Options(
                "a receiver has no handler: inline and concurrency do not apply",
            ));
        }
        let sub = self.inner().add(&options, Make::Pull)?;
        Ok(Receiver::new(Handle {
            sub,
            bus: Arc::downgrade(self.inner()),
        }))
    }

    /// The bus's dead letters, when it keeps them (see
    /// [`BusBuilder::dead_letters`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// assert!(Bus::<u32>::builder().build()?.dead_letters().is_none());
    /// let bus = Bus::<u32>::builder().dead_letters(1_000).build()?;
    /// assert_eq!(bus.dead_letters().map(|d| d.capacity()), Some(1_000));
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn dead_letters(&self) -> Option<DeadLetters<T>> {
        let inner = self.inner();
        inner
            .services
            .dlq
            .as_ref()
            .map(|q| DeadLetters::new(Arc::clone(q), Arc::downgrade(inner)))
    }

    /// Sends `payload` to `topic` as a request and waits up to `timeout`
    /// for the first reply (see [`Message::reply`]). The request carries a
    /// fresh correlation id and the bus's inbox as `reply_to`. The calling
    /// thread blocks meanwhile: called from a handler, it holds that
    /// handler's worker (leave workers for the responders).
    ///
    /// # Errors
    ///
    /// [`RequestError::NoResponders`] when no subscription matched,
    /// [`RequestError::Timeout`], [`RequestError::Closed`] when the bus had
    /// shut down or shut down meanwhile, [`RequestError::Publish`] for the
    /// other refusals of [`publish`](Self::publish).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().workers(2).build()?;
    /// let weak = bus.downgrade();
    /// let _echo = bus.subscribe("svc.echo", move |m: &Message<String>| {
    ///     m.reply(&weak, m.payload().to_uppercase()).map(drop)
    /// })?;
    /// let reply = bus.request("svc.echo", "hi".into(), Duration::from_secs(10))?;
    /// assert_eq!(reply.payload(), "HI");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(
        &self,
        topic: impl IntoTopic,
        payload: T,
        timeout: Duration,
    ) -> Result<Arc<Message<T>>, RequestError> {
        let inner = self.inner();
        let topic = topic
            .into_topic(&inner.limits)
            .map_err(PublishError::from)?;
        self.request_message(inner.stamp(Message::builder(topic, payload)), timeout)
    }

    /// [`request`](Self::request) with a message built by the caller
    /// (headers, priority, expiry …); its correlation id and `reply_to` are
    /// set here.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Priority};
    /// let bus = Bus::<String>::builder().workers(2).build()?;
    /// let weak = bus.downgrade();
    /// let _svc = bus.subscribe("svc.lookup", move |m: &Message<String>| {
    ///     let tenant = m.headers().get("tenant").unwrap_or("?").to_string();
    ///     m.reply(&weak, tenant).map(drop)
    /// })?;
    /// let ask = Message::builder("svc.lookup".parse()?, String::new())
    ///     .header("tenant", "acme")
    ///     .priority(Priority::High);
    /// let reply = bus.request_message(ask, Duration::from_secs(10))?;
    /// assert_eq!(reply.payload(), "acme");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request_message(
        &self,
        message: MessageBuilder<T>,
        timeout: Duration,
    ) -> Result<Arc<Message<T>>, RequestError> {
        let inner = self.inner();
        let inbox = inner.inbox().map_err(|e| match e {
            SubscribeError::Closed => RequestError::Closed,
            e => RequestError::Inbox(e),
        })?;
        let corr = crate::MessageId::new();
        let waiter = inbox.expect(corr);
        let message = message.correlation_id(corr).reply_to(inbox.topic.clone());
        // The timeout counts from before the publish (which may block on a
        // full mailbox).
        let key = inner
            .services
            .timer
            .schedule_in(timeout, inbox.timeout_job(corr));
        let refused = match self.publish_message(message) {
            Err(PublishError::Closed) => Some(RequestError::Closed),
            Err(e) => Some(e.into()),
            Ok(r) if r.matched == 0 && !r.delayed => Some(RequestError::NoResponders),
            Ok(_) => None,
        };
        if let Some(e) = refused {
            inner.services.timer.cancel(key);
            inbox.forget(waiter.corr);
            return Err(e);
        }
        let result = waiter.wait();
        inner.services.timer.cancel(key);
        result
    }

    /// Publishes `payload` as the reply to `request`: to its `reply_to`,
    /// with its correlation id, caused by it.
    ///
    /// # Errors
    ///
    /// [`PublishError::NoReplyTo`] when `request` names no `reply_to`; else
    /// as [`publish`](Self::publish).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, PublishError};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let inbox = bus.receiver("replies.me")?;
    /// let ask = Message::builder("ask".parse()?, 20).reply_to("replies.me".parse()?).build();
    /// bus.reply(&ask, 21)?;
    /// let answer = inbox.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!((*answer.payload(), answer.correlation_id()), (21, Some(ask.id())));
    /// let no_return = Message::builder("ask".parse()?, 1).build();
    /// assert!(matches!(bus.reply(&no_return, 2), Err(PublishError::NoReplyTo)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply(&self, request: &Message<T>, payload: T) -> Result<Receipt, PublishError> {
        let to = request.reply_to().ok_or(PublishError::NoReplyTo)?.clone();
        let reply = Message::builder(to, payload).caused_by(request);
        self.publish_message(self.inner().stamp(reply))
    }

    /// A snapshot for operators: [`stats`](Self::stats), what the workers
    /// are doing, and the latency distributions (queue wait, handler time,
    /// end to end) of the handler runs sampled so far (see
    /// [`BusBuilder::latency_sampling`]). Counters are read without
    /// stopping anything, so under load the numbers are each exact but not
    /// all of the same instant.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).latency_sampling(1).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// bus.publish("t", 1)?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// let m = bus.metrics();
    /// assert_eq!((m.stats.total.handled, m.handler.count()), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> crate::Metrics {
        let services = &self.inner().services;
        let (queue_wait, handler, end_to_end) = services.metrics.snapshot();
        crate::Metrics {
            stats: self.stats(),
            workers: services.pool.worker_states(),
            queue_wait,
            handler,
            end_to_end,
            sampling: services.metrics.every(),
            subscriptions: self.subscription_latency(),
        }
    }

    /// The own latency histograms of the live subscriptions that keep them,
    /// in subscription order.
    fn subscription_latency(&self) -> Vec<crate::SubscriptionLatency> {
        let snapshot = self.inner().registry.load();
        let mut out: Vec<_> = snapshot
            .entries()
            .filter_map(|e| {
                let sub = e.value();
                let (queue_wait, handler, end_to_end) = sub.latency.as_ref()?.snapshot();
                Some(crate::SubscriptionLatency {
                    id: sub.id,
                    queue_wait,
                    handler,
                    end_to_end,
                })
            })
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }

    /// Counters of every subscription and in total.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _ok = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// let _bad = bus.subscribe("t", |_m: &Message<u32>| Err("no"))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let s = bus.stats();
    /// assert_eq!((s.published, s.total.handled, s.total.failed), (1, 1, 1));
    /// assert_eq!(s.subscriptions.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> BusStats {
        let inner = self.inner();
        // Under the books' lock, which unsubscribe holds while it moves a
        // subscription from the registry to the books: each counted once.
        let mut books = inner.books.lock();
        let subs: Vec<SubStats> = inner
            .registry
            .load()
            .entries()
            .map(|e| e.value().stats())
            .collect();
        let gone = books.read();
        let hook_panics = inner.services.hooks.as_ref().map_or(0, |h| h.panics());
        BusStats::new(
            inner.publishes.published(),
            subs,
            &gone,
            (inner.services.pool.panics(), hook_panics),
            inner.delayed.stats(),
            inner.inbox.lock().as_ref().map_or(0, |i| i.late()),
        )
    }

    /// Shuts the bus down gracefully: stops accepting, drains every
    /// mailbox, closes them, joins the workers, all within `timeout`, and
    /// reports what happened. Idempotent: later calls return the first
    /// call's report.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::InHandler`] when called from a handler of this bus.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, PublishError};
    /// let bus = Bus::<u32>::builder().workers(2).build()?;
    /// let s = bus.subscribe("jobs", |_m: &Message<u32>| ())?;
    /// for i in 0..1_000 {
    ///     bus.publish("jobs", i)?;
    /// }
    /// let report = bus.shutdown(Duration::from_secs(10))?;
    /// assert!(report.is_clean());
    /// assert_eq!(s.stats().handled, 1_000); // drained: nothing lost
    /// assert!(matches!(bus.publish("jobs", 0), Err(PublishError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.inner().shutdown(timeout)
    }
    /// The bus's health with the default thresholds; see
    /// [`health_with`](Self::health_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, HealthStatus};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// assert_eq!(bus.health().status, HealthStatus::Healthy);
    /// bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.health();
    /// assert_eq!(h.status, HealthStatus::Unhealthy);
    /// assert_eq!(h.issues[0].component, "bus");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn health(&self) -> Health {
        self.health_with(&HealthThresholds::default())
    }

    /// The bus's health: unhealthy once shut down or when a worker thread
    /// is gone; degraded for each lane filled past
    /// [`mailbox_fill`](HealthThresholds::mailbox_fill), each circuit
    /// breaker not closed, and a timer more than
    /// [`timer_lag`](HealthThresholds::timer_lag) behind; plus whatever the
    /// registered [`HealthCheck`]s report. Cheap enough for a readiness
    /// probe: it reads counters and depths, locks nothing on the publish
    /// path.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, HealthStatus, HealthThresholds, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("jobs").capacity(4).paused(true),
    ///     |_m: &Message<u32>| (),
    /// )?;
    /// for i in 0..4 {
    ///     bus.publish("jobs", i)?;
    /// }
    /// let h = bus.health_with(&HealthThresholds::default().mailbox_fill(0.75));
    /// assert_eq!(h.status, HealthStatus::Degraded);
    /// assert_eq!(h.issues[0].component, s.id().to_string());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn health_with(&self, thresholds: &HealthThresholds) -> Health {
        let inner = self.inner();
        let services = &inner.services;
        let mut issues = Vec::new();
        if !self.is_open() {
            issues.push(HealthIssue::new(
                HealthStatus::Unhealthy,
                "bus",
                "shut down: no longer accepts messages",
            ));
        } else {
            let w = services.pool.worker_states();
            if w.exited > 0 {
                let all = w.running + w.idle + w.parked + w.exited;
                issues.push(HealthIssue::new(
                    HealthStatus::Unhealthy,
                    "workers",
                    format!("{} of {all} worker threads exited", w.exited),
                ));
            }
        }
        let lag = services.timer.lag();
        if lag > thresholds.timer_lag {
            issues.push(HealthIssue::new(
                HealthStatus::Degraded,
                "timer",
                format!("{lag:?} behind its most overdue job"),
            ));
        }
        let snapshot = inner.registry.load();
        for sub in snapshot.entries().map(|e| e.value()) {
            sub.health(thresholds, &mut issues);
        }
        let checks: Vec<Arc<dyn HealthCheck>> = inner.checks.lock().clone();
        issues.extend(checks.iter().filter_map(|c| c.check()));
        Health::from_issues(issues)
    }

    /// Adds a check that every [`health`](Self::health) consults (the
    /// adapters register theirs).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use topicbus::{Bus, HealthCheck, HealthIssue, HealthStatus};
    /// struct Fine;
    /// impl HealthCheck for Fine {
    ///     fn check(&self) -> Option<HealthIssue> {
    ///         None
    ///     }
    /// }
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// bus.add_health_check(Arc::new(Fine));
    /// assert_eq!(bus.health().status, HealthStatus::Healthy);
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn add_health_check(&self, check: Arc<dyn HealthCheck>) {
        self.inner().checks.lock().push(check);
    }

    /// True until shutdown begins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// assert!(bus.is_open());
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert!(!bus.is_open());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_open(&self) -> bool {
        self.inner().state.load(Ordering::Acquire) == OPEN
    }
}

impl<T> From<MessageBuilder<T>> for Message<T> {
    fn from(builder: MessageBuilder<T>) -> Self {
        builder.build()
    }
}

impl Receipt {
    #[inline]
    fn into_result(self) -> Result<Receipt, PublishError> {
        if self.rejected > 0 {
            Err(PublishError::Rejected { receipt: self })
        } else {
            Ok(self)
        }
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// Call after `publishes.enter()` (see [`Publishes`]).
    #[inline]
    fn check_open(&self) -> Result<(), PublishError> {
        if self.state.load(Ordering::SeqCst) == OPEN {
            Ok(())
        } else {
            Err(PublishError::Closed)
        }
    }

    #[inline]
    fn check_payload(&self, payload: &T) -> Result<(), PublishError> {
        match self.max_payload {
            Some((max, check)) => check(payload, max).map_err(Into::into),
            None => Ok(()),
        }
    }

    /// A message for `topic` and `payload`, checked against the bus's
    /// limits, with the confirmed publisher's `tracker` if any.
    #[inline]
    fn message(
        &self,
        topic: impl IntoTopic,
        payload: T,
        tracker: Option<Arc<Tracker>>,
    ) -> Result<Arc<Message<T>>, PublishError> {
        let topic = topic.into_topic(&self.limits)?;
        self.check_payload(&payload)?;
        let stamp = self.custom_clock.then(|| self.services.wall());
        Ok(Arc::new(Message::plain(topic, payload, stamp, tracker)))
    }

    /// Routes a checked message through the current snapshot and closes the
    /// publish `entered`.
    #[inline]
    fn send(&self, entered: Entered<'_>, msg: &Arc<Message<T>>) -> Result<Receipt, PublishError> {
        let receipt = self.dispatch(&self.registry.load(), msg);
        entered.commit();
        receipt.into_result()
    }

    /// Stamps the creation time from the bus's clock, when it has its own
    /// (the system clock's reading is the builder's default).
    #[inline]
    fn stamp(&self, builder: MessageBuilder<T>) -> MessageBuilder<T> {
        if !self.custom_clock {
            return builder;
        }
        builder.timestamp(self.services.wall())
    }

    /// True when the bus has a hook that `which` picks.
    fn has_hook(&self, which: impl Fn(&hooks::Hooks<T>) -> bool) -> bool {
        self.services.hooks.as_ref().is_some_and(|h| which(h))
    }

    /// The request-reply inbox, subscribed on first use.
    fn inbox(self: &Arc<Self>) -> Result<Arc<request::Inbox<T>>, SubscribeError> {
        let mut slot = self.inbox.lock();
        if let Some(inbox) = &*slot {
            return Ok(Arc::clone(inbox));
        }
        let inbox = request::Inbox::new();
        let deliver = Arc::clone(&inbox);
        let handler: HandlerFn<T> = Box::new(move |m| {
            deliver.deliver(m);
            Ok(())
        });
        let options = SubscribeOptions::new()
            .pattern(inbox.topic.as_str())
            .inline(true);
        // The registry keeps the subscription (and through its handler the
        // inbox) alive as long as the bus; the inbox must not point back at
        // the subscription, or the two would keep each other alive for ever.
        self.add(&options, Make::Inline(handler))?;
        *slot = Some(Arc::clone(&inbox));
        Ok(inbox)
    }

    /// Puts a message due at `at` on the timer; `None` when it is due
    /// already (publish it now).
    fn schedule_delayed(
        self: &Arc<Self>,
        msg: &Arc<Message<T>>,
        at: SystemTime,
    ) -> Option<Receipt> {
        let wait = at.duration_since(self.services.wall()).ok()?;
        if wait.is_zero() {
            return None;
        }
        self.delayed.scheduled.fetch_add(1, Ordering::Relaxed);
        let (me, m) = (Arc::clone(self), Arc::clone(msg));
        self.services
            .timer
            .schedule_in(wait, Box::new(move |fire| me.delayed_fired(&m, fire)));
        let mut receipt = Receipt::new(msg.id());
        receipt.delayed = true;
        Some(receipt)
    }

    /// A delayed message came due: routed through the subscriptions of
    /// now, unless the bus is shutting down, when it is given up (a dead
    /// letter with reason shutdown, when the bus keeps them).
    fn delayed_fired(&self, msg: &Arc<Message<T>>, fire: Fire) {
        // Entered like a publish, so shutdown waits for the routing; not
        // committed: `published` counted it when it was scheduled.
        let entered = self.publishes.enter();
        if fire == Fire::Due && self.check_open().is_ok() {
            // Counted first, so a subscriber that got it never sees it
            // pending.
            self.delayed.delivered.fetch_add(1, Ordering::Release);
            self.dispatch(&self.registry.load(), msg);
            drop(entered);
            return;
        }
        drop(entered);
        self.services
            .dead_letter(msg, None, DeadLetterReason::Shutdown, None, 0, None);
        self.delayed.given_up.fetch_add(1, Ordering::Release);
    }

    /// Checks a caller-built message against the bus's limits.
    fn admit(&self, msg: Message<T>) -> Result<Arc<Message<T>>, PublishError> {
        msg.topic().clone().into_topic(&self.limits)?;
        self.check_payload(msg.payload())?;
        Ok(Arc::new(msg))
    }

    /// Routes `msg` to every matching subscription of `snapshot`.
    #[inline]
    fn dispatch(
        &self,
        snapshot: &crate::registry::Snapshot<Arc<Sub<T>>>,
        msg: &Arc<Message<T>>,
    ) -> Receipt {
        #[cfg(feature = "tracing")]
        let _span = tracing::level_enabled!(tracing::Level::DEBUG).then(|| {
            tracing::debug_span!(
                "topicbus.publish",
                message_id = %msg.id(),
                topic = %msg.topic(),
            )
            .entered()
        });
        let mut receipt = Receipt::new(msg.id());
        let mut grouped: SmallVec<[&Arc<Sub<T>>; 8]> = SmallVec::new();
        snapshot.for_each_match(msg.topic(), |entry| {
            let sub = entry.value();
            if sub.group.is_some() {
                if sub.accepts(msg) {
                    grouped.push(sub);
                } else {
                    receipt.filtered += 1;
                }
            } else {
                match sub.screen(msg) {
                    Screen::Pass => self.offer(sub, msg, &mut receipt),
                    Screen::Filtered => receipt.filtered += 1,
                    Screen::Duplicate => receipt.duplicates += 1,
                }
            }
        });
        if !grouped.is_empty() {
            self.dispatch_groups(&mut grouped, msg, &mut receipt);
        }
        if self.publish_hook {
            self.services
                .hooks(|h| h.call(&h.on_publish, |f| f(msg, &receipt)));
        }
        receipt
    }

    #[inline]
    fn offer(&self, sub: &Sub<T>, msg: &Arc<Message<T>>, receipt: &mut Receipt) {
        receipt.matched += 1;
        match sub.offer(&self.services.pool, msg) {
            Offered::Enqueued => receipt.enqueued += 1,
            Offered::Dropped => receipt.dropped += 1,
            Offered::Rejected => receipt.rejected += 1,
            Offered::Expired => receipt.expired += 1,
        }
    }

    /// One member per matched queue group (among the members whose filters
    /// accept the message).
    #[cold]
    fn dispatch_groups(
        &self,
        grouped: &mut [&Arc<Sub<T>>],
        msg: &Arc<Message<T>>,
        receipt: &mut Receipt,
    ) {
        let group_key = |s: &Arc<Sub<T>>| s.group.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize);
        grouped.sort_unstable_by_key(|s| (group_key(s), s.id));
        for members in grouped.chunk_by(|a, b| group_key(a) == group_key(b)) {
            let Some(group) = &members[0].group else {
                continue;
            };
            let chosen = match group.strategy {
                GroupStrategy::RoundRobin => {
                    let turn = group.next.fetch_add(1, Ordering::Relaxed);
                    members[turn % members.len()]
                }
                GroupStrategy::LeastLoaded => members
                    .iter()
                    .min_by_key(|s| s.depth())
                    .copied()
                    .unwrap_or(members[0]),
            };
            // The window is the chosen member's.
            if chosen.dedup(msg) == Screen::Duplicate {
                receipt.duplicates += 1;
                continue;
            }
            self.offer(chosen, msg, receipt);
        }
    }

    /// Registers a subscription.
    fn add(
        self: &Arc<Self>,
        options: &SubscribeOptions,
        make: Make<T>,
    ) -> Result<Arc<Sub<T>>, SubscribeError> {
        let patterns = options.parse_patterns(&self.limits)?;
        if patterns.is_empty() && !options.direct {
            return Err(SubscribeError::NoPatterns);
        }
        let capacity = options
            .lane_capacity(self.capacity)
            .map_err(SubscribeError::Options)?;
        let batch = options.batch.unwrap_or(self.batch);
        if batch == 0 {
            return Err(SubscribeError::Options("batch must be at least 1"));
        }
        let handler_kind = match &make {
            Make::Callback(..) => 0,
            Make::Inline(_) => 1,
            Make::Pull => 2,
        };
        if (options.retry.is_some() || options.breaker.is_some()) && handler_kind != 0 {
            return Err(SubscribeError::Options(
                "retries and circuit breakers need a handler run by the workers (not inline, not a receiver)",
            ));
        }
        let mut gate = Gate::new(&options.filter, options.dedup, options.dedup_key.as_ref())
            .map_err(SubscribeError::Options)?
            .map(Box::new);
        let mut rel = (options.retry.is_some() || options.breaker.is_some()).then(|| {
            Box::new(Reliable::new(
                options.retry.clone(),
                options.breaker.map(Breaker::new),
            ))
        });
        let dead_letter = if self.services.dlq.is_some() {
            DeadLetterOn {
                failures: options.dead_letter.unwrap_or(true),
                expired: options.dead_letter_expired,
                overflow: options.dead_letter_overflow,
            }
        } else {
            DeadLetterOn::default()
        };
        let group = match &options.group {
            None => None,
            Some((name, strategy)) => Some(self.group(name, *strategy)?),
        };
        let mut created = None;
        self.registry.update(|b| {
            // Checked under the writer lock, which shutdown also takes: a
            // subscription is either in the snapshot shutdown walks, or
            // refused.
            if self.state.load(Ordering::SeqCst) != OPEN {
                return;
            }
            b.subscribe_with(patterns.iter().cloned(), |id| {
                let spec = Spec {
                    id,
                    bus: self.addr(),
                    patterns: patterns.clone().into_boxed_slice(),
                    capacity,
                    policy: options.overflow.unwrap_or(self.overflow),
                    group,
                    batch,
                    paused: options.paused,
                    probe: self.services.pool.probe(),
                    deliver_hook: self.has_hook(|h| h.on_deliver.is_some()),
                    outcome_hook: self.has_hook(|h| h.on_outcome.is_some()),
                    services: Arc::clone(&self.services),
                    gate: gate.take(),
                    rel: rel.take(),
                    dead_letter,
                    latency: options.latency,
                };
                let sub = Sub::new(spec, make);
                created = Some(Arc::clone(&sub));
                sub
            });
        });
        created.ok_or(SubscribeError::Closed)
    }

    /// The queue group `name`, created on first use.
    fn group(&self, name: &str, strategy: GroupStrategy) -> Result<Arc<Group>, SubscribeError> {
        let mut groups = self.groups.lock();
        groups.retain(|_, g| g.strong_count() > 0);
        if let Some(g) = groups.get(name).and_then(Weak::upgrade) {
            return if g.strategy == strategy {
                Ok(g)
            } else {
                Err(SubscribeError::GroupStrategy {
                    group: name.to_owned(),
                })
            };
        }
        let g = Arc::new(Group {
            strategy,
            next: crate::sync::atomic::AtomicUsize::new(0),
        });
        groups.insert(name.to_owned(), Arc::downgrade(&g));
        Ok(g)
    }

    /// Removes `sub` from the registry (its counters move to the books)
    /// and closes it.
    pub(crate) fn unsubscribe(&self, sub: &Sub<T>) {
        {
            let mut books = self.books.lock();
            if self.registry.unsubscribe(sub.id).is_some() {
                books.gone.push(Arc::clone(&sub.counters));
            }
        }
        sub.close(false, true);
    }

    fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        if sub::in_handler_of(self.addr()) {
            return Err(ShutdownError::InHandler);
        }
        let mut report = self.report.lock();
        if let Some(r) = &*report {
            return Ok(r.clone());
        }
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let past = |d: Option<Instant>| d.is_some_and(|d| Instant::now() >= d);

        // Open → draining, under the registry's writer lock (see `add`).
        self.registry
            .update(|_| self.state.store(DRAINING, Ordering::SeqCst));
        let snapshot = self.registry.load();
        let subs: Vec<&Arc<Sub<T>>> = snapshot.entries().map(|e| e.value()).collect();
        let settled = |subs: &[&Arc<Sub<T>>]| -> (u64, u64) {
            subs.iter().fold((0, 0), |(all, shut), s| {
                let c = s.stats().counts;
                (all + c.settled(), shut + c.dropped.shutdown)
            })
        };
        let (settled_before, _) = settled(&subs);
        // Holds give up from now on; retries and delayed messages waiting in
        // the timer are settled now (retries as dead letters or dropped,
        // reason shutdown; delayed messages likewise, see `delayed_fired`).
        self.services.draining.store(true, Ordering::SeqCst);
        for s in &subs {
            if s.paused.load(Ordering::SeqCst) {
                s.resume(&self.services.pool);
            }
            s.on_draining();
        }
        self.services.timer.stop();

        // Wait for the workers to drain every mailbox. Polled with a short
        // backoff: shutdown is rare and a notification path would cost every
        // worker turn.
        let mut nap = Duration::from_micros(50);
        let timed_out = loop {
            // Publishes in flight first (none can start any more), then the
            // mailboxes they filled.
            if self.publishes.none_in_flight() && subs.iter().all(|s| s.is_quiescent()) {
                break false;
            }
            if past(deadline) {
                break true;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        };

        // Drained: close every mailbox; workers stop calling handlers.
        self.state.store(DRAINED, Ordering::SeqCst);
        for s in &subs {
            if s.is_pull() {
                s.end();
            } else {
                s.close(true, false);
            }
        }
        let workers_joined = self.services.pool.shutdown_until(wait_deadline(deadline));
        // Final sweep: anything a stopped (or stuck) worker left behind.
        for s in &subs {
            if !s.is_pull() {
                s.drain();
            }
            s.ended.store(true, Ordering::SeqCst);
        }
        self.state.store(CLOSED, Ordering::SeqCst);

        let (settled_after, dropped) = settled(&subs);
        let left_in_receivers = subs
            .iter()
            .filter(|s| s.is_pull())
            .map(|s| s.depth() as u64)
            .sum();
        let r = ShutdownReport {
            drained: settled_after - settled_before - dropped,
            dropped,
            left_in_receivers,
            timed_out,
            workers_joined,
            elapsed: start.elapsed(),
        };
        *report = Some(r.clone());
        drop(report);
        self.services.hooks(|h| h.call(&h.on_shutdown, |f| f(&r)));
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by LeakSanitizer: the inbox once held its own subscription,
    /// whose handler holds the inbox, so every bus that made a request
    /// leaked both.
    #[test]
    fn a_dropped_bus_frees_its_request_inbox() {
        let bus = Bus::<u32>::builder().workers(1).build().unwrap();
        let err = bus.request("nobody.home", 1, Duration::from_secs(5));
        assert!(matches!(err, Err(RequestError::NoResponders)));
        let inbox = Arc::downgrade(bus.inner().inbox.lock().as_ref().unwrap());
        assert!(inbox.upgrade().is_some());
        drop(bus);
        assert!(inbox.upgrade().is_none(), "the inbox outlived its bus");
    }
}

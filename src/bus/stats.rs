//! Accounting: outcomes, receipts and counter snapshots.

use crate::message::MessageId;
use crate::registry::SubscriptionId;
use crate::reliability::DeadLetterReason;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Why a message was dropped for a subscription. Every drop is counted
/// under its reason.
///
/// # Examples
///
/// ```
/// use topicbus::{DropReason, Outcome};
/// let o = Outcome::Dropped(DropReason::Newest);
/// assert!(o.is_dropped() && !o.is_success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The mailbox was full and the policy drops the new message.
    Newest,
    /// The mailbox was full and the policy evicted this (older) message.
    Oldest,
    /// The mailbox was full and the policy rejects: the publisher got an error.
    Rejected,
    /// The mailbox stayed full for the whole blocking timeout.
    Timeout,
    /// An inline subscription was paused.
    Paused,
    /// The subscription went away with the message still queued.
    Unsubscribed,
    /// The bus shut down before the message could be handled.
    Shutdown,
    /// The subscription's circuit breaker was open and its policy drops
    /// (or dead-letters, on a bus without dead letters).
    CircuitOpen,
}

impl DropReason {
    /// Every reason, in counter order.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, DropReason};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// // One line per reason, for a dashboard.
    /// let drops = rx.stats().counts.dropped;
    /// for reason in DropReason::ALL {
    ///     println!("{}: {}", reason.as_str(), drops.get(reason));
    /// }
    /// assert_eq!(DropReason::ALL.iter().map(|r| drops.get(*r)).sum::<u64>(), drops.total());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const ALL: [DropReason; 8] = [
        DropReason::Newest,
        DropReason::Oldest,
        DropReason::Rejected,
        DropReason::Timeout,
        DropReason::Paused,
        DropReason::Unsubscribed,
        DropReason::Shutdown,
        DropReason::CircuitOpen,
    ];

    /// A short lower-case name, for logs and metric labels.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(topicbus::DropReason::Newest.as_str(), "newest");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Newest => "newest",
            DropReason::Oldest => "oldest",
            DropReason::Rejected => "rejected",
            DropReason::Timeout => "timeout",
            DropReason::Paused => "paused",
            DropReason::Unsubscribed => "unsubscribed",
            DropReason::Shutdown => "shutdown",
            DropReason::CircuitOpen => "circuit_open",
        }
    }
}

/// The terminal outcome of one message for one subscription: exactly one per
/// delivery.
///
/// # Examples
///
/// ```
/// use topicbus::Outcome;
/// assert!(Outcome::Handled.is_success());
/// assert!(Outcome::Received.is_success());
/// assert!(!Outcome::Panicked.is_success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler returned `Ok`.
    Handled,
    /// A pull receiver took the message.
    Received,
    /// The handler returned an error.
    Failed,
    /// The handler panicked (the worker lived on).
    Panicked,
    /// The message expired before its turn; the handler never saw it.
    Expired,
    /// Dropped, for the reason given.
    Dropped(DropReason),
    /// Put in the bus's dead letters, for the reason given.
    DeadLettered(DeadLetterReason),
}

/// Number of distinct outcome counters.
pub(crate) const OUTCOMES: usize = 5 + DropReason::ALL.len() + DeadLetterReason::ALL.len();
/// Outcome counters plus the worker-side non-terminal ones (retried).
pub(crate) const SLOTS: usize = OUTCOMES + 1;
/// The slot counting retries.
pub(crate) const RETRIED: usize = OUTCOMES;
/// Publisher-side counters: delivered, filtered, duplicates.
pub(crate) const ROUTED: usize = 3;
/// The slots of [`ROUTED`].
pub(crate) const DELIVERED: usize = 0;
pub(crate) const FILTERED: usize = 1;
pub(crate) const DUPLICATES: usize = 2;

impl Outcome {
    /// The counter slot.
    pub(crate) const fn index(self) -> usize {
        match self {
            Outcome::Handled => 0,
            Outcome::Received => 1,
            Outcome::Failed => 2,
            Outcome::Panicked => 3,
            Outcome::Expired => 4,
            Outcome::Dropped(r) => 5 + r as usize,
            Outcome::DeadLettered(r) => 5 + DropReason::ALL.len() + r as usize,
        }
    }

    /// Handled or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{DropReason, Outcome};
    /// assert!(Outcome::Handled.is_success() && Outcome::Received.is_success());
    /// assert!(!Outcome::Failed.is_success());
    /// assert!(!Outcome::Dropped(DropReason::Newest).is_success());
    /// ```
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Handled | Outcome::Received)
    }

    /// Dropped for any reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{DeadLetterReason, DropReason, Outcome};
    /// assert!(Outcome::Dropped(DropReason::Shutdown).is_dropped());
    /// assert!(!Outcome::DeadLettered(DeadLetterReason::Expired).is_dropped());
    /// ```
    pub const fn is_dropped(self) -> bool {
        matches!(self, Outcome::Dropped(_))
    }

    /// Dead-lettered for any reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{DeadLetterReason, Outcome};
    /// assert!(Outcome::DeadLettered(DeadLetterReason::Permanent).is_dead_lettered());
    /// assert!(!Outcome::Expired.is_dead_lettered());
    /// ```
    pub const fn is_dead_lettered(self) -> bool {
        matches!(self, Outcome::DeadLettered(_))
    }
}

/// What one publish did.
///
/// `matched` counts the subscriptions the message was routed to (a queue
/// group counts once); each of them either accepted the message
/// (`enqueued`, which includes inline handlers that ran it), dropped it by
/// policy (`dropped`, which includes overflow sent to the dead letters),
/// found it expired (`expired`), or rejected it (`rejected`, which makes the
/// publish an error). Subscriptions whose filters refused it (`filtered`) or
/// that saw it before (`duplicates`) are not matched: they never get it.
/// What happens after acceptance is counted in [`SubStats`].
///
/// # Examples
///
/// ```
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let receipt = bus.publish("nobody.listens", 7)?;
/// assert_eq!((receipt.matched, receipt.enqueued), (0, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The published message's id.
    pub id: MessageId,
    /// Subscriptions (queue groups count once) the message was routed to.
    pub matched: u32,
    /// Of those, how many accepted it.
    pub enqueued: u32,
    /// Of those, how many dropped it by their overflow policy.
    pub dropped: u32,
    /// Of those, how many rejected it (overflow policy `Reject`).
    pub rejected: u32,
    /// Of those, how many found it already expired.
    pub expired: u32,
    /// Subscriptions whose patterns matched but whose filters refused it.
    pub filtered: u32,
    /// Subscriptions whose deduplication window had seen it.
    pub duplicates: u32,
    /// True when the message was scheduled for later delivery (see
    /// [`MessageBuilder::delay`](crate::MessageBuilder::delay)): it is
    /// routed when due, so nothing is matched yet.
    pub delayed: bool,
}

impl Receipt {
    pub(crate) fn new(id: MessageId) -> Self {
        Self {
            id,
            matched: 0,
            enqueued: 0,
            dropped: 0,
            rejected: 0,
            expired: 0,
            filtered: 0,
            duplicates: 0,
            delayed: false,
        }
    }
}

/// Drop counters, one per [`DropReason`].
///
/// # Examples
///
/// ```
/// let d = topicbus::Drops::default();
/// assert_eq!(d.total(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drops {
    /// [`DropReason::Newest`].
    pub newest: u64,
    /// [`DropReason::Oldest`].
    pub oldest: u64,
    /// [`DropReason::Rejected`].
    pub rejected: u64,
    /// [`DropReason::Timeout`].
    pub timeout: u64,
    /// [`DropReason::Paused`].
    pub paused: u64,
    /// [`DropReason::Unsubscribed`].
    pub unsubscribed: u64,
    /// [`DropReason::Shutdown`].
    pub shutdown: u64,
    /// [`DropReason::CircuitOpen`].
    pub circuit_open: u64,
}

impl Drops {
    /// All drops.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, OverflowPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver_with(SubscribeOptions::new().pattern("t").capacity(1).overflow(OverflowPolicy::DropNewest))?;
    /// for i in 0..4 {
    ///     bus.publish("t", i)?;
    /// }
    /// let drops = rx.stats().counts.dropped;
    /// assert_eq!((drops.newest, drops.total()), (3, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn total(&self) -> u64 {
        self.newest
            + self.oldest
            + self.rejected
            + self.timeout
            + self.paused
            + self.unsubscribed
            + self.shutdown
            + self.circuit_open
    }

    /// The counter for `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{DropReason, Drops};
    /// assert_eq!(Drops::default().get(DropReason::Shutdown), 0);
    /// ```
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Newest => self.newest,
            DropReason::Oldest => self.oldest,
            DropReason::Rejected => self.rejected,
            DropReason::Timeout => self.timeout,
            DropReason::Paused => self.paused,
            DropReason::Unsubscribed => self.unsubscribed,
            DropReason::Shutdown => self.shutdown,
            DropReason::CircuitOpen => self.circuit_open,
        }
    }
}

/// Dead-letter counters, one per [`DeadLetterReason`].
///
/// # Examples
///
/// ```
/// use topicbus::{DeadLetterReason, DeadLettered};
/// let d = DeadLettered::default();
/// assert_eq!((d.total(), d.get(DeadLetterReason::Panicked)), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLettered {
    /// [`DeadLetterReason::RetriesExhausted`].
    pub retries_exhausted: u64,
    /// [`DeadLetterReason::Permanent`].
    pub permanent: u64,
    /// [`DeadLetterReason::Panicked`].
    pub panicked: u64,
    /// [`DeadLetterReason::Expired`].
    pub expired: u64,
    /// [`DeadLetterReason::Shutdown`].
    pub shutdown: u64,
    /// [`DeadLetterReason::Overflow`].
    pub overflow: u64,
    /// [`DeadLetterReason::CircuitOpen`].
    pub circuit_open: u64,
}

impl DeadLettered {
    /// All dead letters.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |m: &Message<u32>| match m.payload() {
    ///     0 => Err(Permanent::new("bad")),
    ///     _ => panic!("bug"),
    /// })?;
    /// bus.publish_confirmed("t", 0, Duration::from_secs(10))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let d = bus.stats().total.dead_lettered;
    /// assert_eq!((d.permanent, d.panicked, d.total()), (1, 1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn total(&self) -> u64 {
        DeadLetterReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// The counter for `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{DeadLetterReason, DeadLettered};
    /// let d = DeadLettered::default();
    /// assert!(DeadLetterReason::ALL.iter().all(|r| d.get(*r) == 0));
    /// ```
    pub fn get(&self, reason: DeadLetterReason) -> u64 {
        match reason {
            DeadLetterReason::RetriesExhausted => self.retries_exhausted,
            DeadLetterReason::Permanent => self.permanent,
            DeadLetterReason::Panicked => self.panicked,
            DeadLetterReason::Expired => self.expired,
            DeadLetterReason::Shutdown => self.shutdown,
            DeadLetterReason::Overflow => self.overflow,
            DeadLetterReason::CircuitOpen => self.circuit_open,
        }
    }
}

/// Counters of one subscription, or summed over several.
///
/// Conservation (DESIGN invariant 7): once the bus is quiet,
/// `delivered == settled()`, and at any time
/// `delivered == settled() + in flight` where in flight is what waits in the
/// mailbox or runs right now.
///
/// # Examples
///
/// ```
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let sub = bus.subscribe("jobs.#", |_m: &topicbus::Message<u32>| ())?;
/// bus.publish("jobs.a", 1)?;
/// bus.shutdown(std::time::Duration::from_secs(5))?;
/// let s = sub.stats();
/// assert_eq!((s.delivered, s.handled, s.settled()), (1, 1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Messages routed to the subscription(s).
    pub delivered: u64,
    /// Handler returned `Ok`.
    pub handled: u64,
    /// Taken by a pull receiver.
    pub received: u64,
    /// Handler returned an error.
    pub failed: u64,
    /// Handler panicked.
    pub panicked: u64,
    /// Expired before delivery.
    pub expired: u64,
    /// Dropped, by reason.
    pub dropped: Drops,
    /// Dead-lettered, by reason.
    pub dead_lettered: DeadLettered,
    /// Retries scheduled (not an outcome: each retried message still ends
    /// in one outcome).
    pub retried: u64,
    /// Messages whose patterns matched but the filters refused (never
    /// delivered, not in `delivered`).
    pub filtered: u64,
    /// Messages the deduplication window suppressed (never delivered, not
    /// in `delivered`).
    pub duplicates: u64,
}

impl Counts {
    pub(crate) fn from_totals(t: &Totals) -> Self {
        let o = &t.outcomes;
        let d = 5 + DropReason::ALL.len();
        Self {
            delivered: t.routed[DELIVERED],
            handled: o[0],
            received: o[1],
            failed: o[2],
            panicked: o[3],
            expired: o[4],
            dropped: Drops {
                newest: o[5],
                oldest: o[6],
                rejected: o[7],
                timeout: o[8],
                paused: o[9],
                unsubscribed: o[10],
                shutdown: o[11],
                circuit_open: o[12],
            },
            dead_lettered: DeadLettered {
                retries_exhausted: o[d],
                permanent: o[d + 1],
                panicked: o[d + 2],
                expired: o[d + 3],
                shutdown: o[d + 4],
                overflow: o[d + 5],
                circuit_open: o[d + 6],
            },
            retried: o[RETRIED],
            filtered: t.routed[FILTERED],
            duplicates: t.routed[DUPLICATES],
        }
    }

    /// Messages with a terminal outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let s = bus.subscribe("t", |m: &Message<u32>| if *m.payload() % 2 == 0 { Ok(()) } else { Err("odd") })?;
    /// for i in 0..10 {
    ///     bus.publish("t", i)?;
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// let c = s.stats().counts;
    /// assert_eq!((c.handled, c.failed, c.settled()), (5, 5, 10)); // every message accounted for
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn settled(&self) -> u64 {
        self.handled
            + self.received
            + self.failed
            + self.panicked
            + self.expired
            + self.dropped.total()
            + self.dead_lettered.total()
    }
}

/// A snapshot of one subscription's counters and mailbox.
///
/// # Examples
///
/// ```
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let rx = bus.receiver("a.*")?;
/// bus.publish("a.b", 1)?;
/// let s = rx.stats();
/// assert_eq!((s.counts.delivered, s.queued.iter().sum::<usize>()), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubStats {
    /// The subscription.
    pub id: SubscriptionId,
    /// Its counters.
    pub counts: Counts,
    /// Messages waiting per lane: high, normal, low.
    pub queued: [usize; 3],
    /// The circuit breaker's state, when the subscription has one.
    pub circuit: Option<crate::reliability::CircuitState>,
    /// Retries waiting in the timer.
    pub retrying: usize,
    /// Messages out of the lanes but not yet handled: retries that came
    /// due, and messages an open breaker holds back.
    pub held: usize,
    /// The counters as read, for summing.
    raw: Totals,
}

impl SubStats {
    pub(crate) fn new(id: SubscriptionId, raw: Totals, queued: [usize; 3]) -> Self {
        Self {
            id,
            counts: Counts::from_totals(&raw),
            queued,
            circuit: None,
            retrying: 0,
            held: 0,
            raw,
        }
    }
}

impl std::fmt::Debug for SubStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubStats")
            .field("id", &self.id)
            .field("counts", &self.counts)
            .field("queued", &self.queued)
            .field("circuit", &self.circuit)
            .field("retrying", &self.retrying)
            .field("held", &self.held)
            .finish()
    }
}

impl std::ops::Deref for SubStats {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.counts
    }
}

/// Raw counters summed over subscriptions (also those that no longer exist,
/// so bus totals stay whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) routed: [u64; ROUTED],
    pub(crate) outcomes: [u64; SLOTS],
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            routed: [0; ROUTED],
            outcomes: [0; SLOTS],
        }
    }
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        for (t, o) in self.routed.iter_mut().zip(&other.routed) {
            *t += o;
        }
        for (t, o) in self.outcomes.iter_mut().zip(&other.outcomes) {
            *t += o;
        }
    }
}

/// A snapshot of the whole bus.
///
/// # Examples
///
/// ```
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let _rx = bus.receiver("#")?;
/// bus.publish("a", 1)?;
/// let stats = bus.stats();
/// assert_eq!((stats.published, stats.total.delivered), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Messages accepted by `publish` (each counted once, however many
    /// subscriptions it reached).
    pub published: u64,
    /// Every live subscription.
    pub subscriptions: Vec<SubStats>,
    /// Summed over every subscription the bus ever had.
    pub total: Counts,
    /// Handler panics caught by the workers outside any handler (a bug in
    /// topicbus if ever non-zero).
    pub worker_panics: u64,
    /// Panics of lifecycle hooks (caught; the message went on).
    pub hook_panics: u64,
    /// Delayed deliveries.
    pub delayed: DelayedStats,
    /// Replies that found no request waiting (timed out, or a reply came
    /// first); dropped.
    pub late_replies: u64,
}

/// Counters of delayed deliveries.
///
/// `scheduled == delivered + given_up + pending`.
///
/// # Examples
///
/// ```
/// let d = topicbus::DelayedStats::default();
/// assert_eq!(d.scheduled, d.delivered + d.given_up + d.pending);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DelayedStats {
    /// Messages published with a delay.
    pub scheduled: u64,
    /// Routed when due.
    pub delivered: u64,
    /// Given up because the bus shut down first (dead-lettered with reason
    /// shutdown when the bus keeps dead letters).
    pub given_up: u64,
    /// Waiting.
    pub pending: u64,
}

impl BusStats {
    pub(crate) fn new(
        published: u64,
        subscriptions: Vec<SubStats>,
        retired: &Totals,
        (worker_panics, hook_panics): (u64, u64),
        delayed: DelayedStats,
        late_replies: u64,
    ) -> Self {
        let mut sum = *retired;
        for s in &subscriptions {
            sum.add(&s.raw);
        }
        Self {
            published,
            subscriptions,
            total: Counts::from_totals(&sum),
            worker_panics,
            hook_panics,
            delayed,
            late_replies,
        }
    }
}

/// Per-thread-slot publish counters: how many publishes entered, and how
/// many of them published or gave up. Striped so publishers on different
/// threads do not share a cache line; summed on read.
///
/// Shutdown uses them to wait for publishes in flight: a publish
/// increments `entered` (SeqCst) before it checks the bus is open, and
/// shutdown marks the bus draining (SeqCst) before it reads the stripes, so
/// either the publish sees the bus draining and gives up, or shutdown sees
/// it entered and waits until it leaves.
#[derive(Debug)]
pub struct Publishes {
    stripes: Box<[crate::sync::Padded<Stripe>]>,
}

#[derive(Debug, Default)]
pub(crate) struct Stripe {
    entered: AtomicU64,
    published: AtomicU64,
    abandoned: AtomicU64,
}

const STRIPES: usize = 16;

thread_local! {
    static SLOT: usize = next_slot();
}

fn next_slot() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES
}

/// One publish in flight; dropped without [`commit`](Self::commit) it
/// counts as abandoned.
#[derive(Debug)]
pub struct Entered<'a> {
    stripe: &'a Stripe,
    committed: bool,
}

impl Entered<'_> {
    /// The message was published.
    #[inline]
    pub fn commit(mut self) {
        self.committed = true;
        self.stripe.published.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.committed {
            self.stripe.abandoned.fetch_add(1, Ordering::Release);
        }
    }
}

impl Default for Publishes {
    fn default() -> Self {
        Self::new()
    }
}

impl Publishes {
    /// No publish entered yet.
    pub fn new() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| crate::sync::Padded(Stripe::default()))
                .collect(),
        }
    }

    /// Registers a publish in flight. Check that the bus is open after this.
    #[inline]
    pub fn enter(&self) -> Entered<'_> {
        let stripe = &self.stripes[SLOT.with(|s| *s)].0;
        stripe.entered.fetch_add(1, Ordering::SeqCst);
        crate::sync::seqcst_for_loom();
        Entered {
            stripe,
            committed: false,
        }
    }

    /// Messages published.
    pub(crate) fn published(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.published.load(Ordering::Relaxed))
            .sum()
    }

    /// True when no publish is in flight. Read after marking the bus
    /// draining (SeqCst), it stays true: later publishes give up.
    pub fn none_in_flight(&self) -> bool {
        crate::sync::seqcst_for_loom();
        self.stripes.iter().all(|s| {
            let s = &s.0;
            // Leaves first, then entries: a publish that leaves in between
            // makes the entries look larger, never smaller.
            let left = s.published.load(Ordering::Acquire) + s.abandoned.load(Ordering::Acquire);
            left == s.entered.load(Ordering::SeqCst)
        })
    }
}

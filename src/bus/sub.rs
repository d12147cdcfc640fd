//! One subscription: its mailbox, its runners on the pool, its accounting.
//!
//! Every message routed to a subscription ends in exactly one call to
//! [`Sub::settle`], which counts the outcome and reports it to a confirmed
//! publisher's tracker. The paths that reach it:
//!
//! - the publisher, when the overflow policy refuses the message (drop
//!   newest, reject, block timeout) or evicts an older one (drop oldest), or
//!   when the mailbox closed under it (it then drains the mailbox itself);
//! - a worker, after the handler ran (handled, failed, panicked) or on expiry;
//! - whoever closes the mailbox (unsubscribe, shutdown) and finds it idle, or
//!   the worker that finds it closed;
//! - a pull receiver when it hands a message out, or when it is dropped.
//!
//! Pops from the lanes are atomic, so whoever pops a message settles it and
//! nobody else can.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::mailbox::lanes::{Lanes, OverflowPolicy, Push};
use crate::mailbox::state::{AfterRun, OnPush, State};
use crate::message::{AttemptScope, Message};
use crate::metrics::{Recorder, Started, SubRecorder};
use crate::pool::{Pool, QueueProbe, Task, TaskRef};
use crate::registry::SubscriptionId;
use crate::reliability::timer::Fire;
use crate::reliability::{
    Admit, Breaker, Change, DeadLetterReason, ErrorKind, Failure, RetryOrder, RetryPolicy, WhenOpen,
};
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex, Padded};

use super::filter::{Gate, Screen};
use super::services::Services;
use super::stats::{
    DropReason, Outcome, SubStats, Totals, DELIVERED, DUPLICATES, FILTERED, RETRIED, ROUTED, SLOTS,
};
use super::BoxError;

/// A handler as stored: the user's closure with its error boxed.
/// It takes the shared `Arc` so that the bus's own handlers (the
/// request-reply inbox) can keep the message; users' closures see `&Message`.
pub(crate) type HandlerFn<T> = Box<dyn Fn(&Arc<Message<T>>) -> Result<(), BoxError> + Send + Sync>;

thread_local! {
    /// The subscription whose handler this thread is running (0: none), so
    /// that a handler that unsubscribes itself does not wait for itself.
    static RUNNING: Cell<u64> = const { Cell::new(0) };
    /// The bus whose handler this thread is running (its address; 0: none),
    /// so that `shutdown` from inside a handler fails instead of deadlocking.
    static RUNNING_BUS: Cell<usize> = const { Cell::new(0) };
}

/// True when the current thread is running a handler of the bus at `bus`.
pub(crate) fn in_handler_of(bus: usize) -> bool {
    RUNNING_BUS.with(Cell::get) == bus
}

/// Wakes the publishers blocked on a mailbox when a batch ends, however it
/// ends (a handler's panic is caught inside the batch, but a guard cannot
/// be forgotten on any path).
struct ReleaseGuard<'a, T>(&'a Lanes<T>);

impl<T> Drop for ReleaseGuard<'_, T> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Marks the current thread as running `sub` of `bus` until dropped.
struct RunningGuard {
    sub: u64,
    bus: usize,
}

impl RunningGuard {
    fn enter(sub: u64, bus: usize) -> Self {
        Self {
            sub: RUNNING.with(|c| c.replace(sub)),
            bus: RUNNING_BUS.with(|c| c.replace(bus)),
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|c| c.set(self.sub));
        RUNNING_BUS.with(|c| c.set(self.bus));
    }
}

/// Per-subscription counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Delivered, filtered, duplicates (written by publishers).
    routed: Padded<[AtomicU64; ROUTED]>,
    /// Terminal outcomes by [`Outcome::index`], then retries (written by
    /// workers).
    outcomes: Padded<[AtomicU64; SLOTS]>,
}

impl Counters {
    /// The counters as read now.
    pub(crate) fn read(&self) -> Totals {
        Totals {
            routed: std::array::from_fn(|i| self.routed.0[i].load(Ordering::Relaxed)),
            outcomes: std::array::from_fn(|i| self.outcomes.0[i].load(Ordering::Relaxed)),
        }
    }

    #[inline]
    fn bump_routed(&self, slot: usize) {
        self.routed.0[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// Which give-ups go to the bus's dead letters (all false on a bus without
/// dead letters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeadLetterOn {
    /// Handler failures and panics (after retries), and an open breaker's
    /// `DeadLetter` policy; also retries cut short by shutdown.
    pub(crate) failures: bool,
    pub(crate) expired: bool,
    pub(crate) overflow: bool,
}

/// A message on its way to the handler: the first delivery or a retry.
pub(crate) struct Item<T> {
    msg: Arc<Message<T>>,
    /// The attempt this run will be.
    attempt: u32,
    first_failure: Option<SystemTime>,
    last_error: Option<Failure>,
}

impl<T> Item<T> {
    fn first(msg: Arc<Message<T>>) -> Self {
        let attempt = msg.first_attempt();
        Self {
            msg,
            attempt,
            first_failure: None,
            last_error: None,
        }
    }

    /// Attempts made before this one.
    fn made(&self) -> u32 {
        self.attempt - self.msg.first_attempt()
    }
}

/// Why a subscription does not take messages for now (bits of
/// [`Reliable::held`]).
const HELD_RETRY: u8 = 1;
const HELD_BREAKER: u8 = 2;

/// The worker-side reliability state of a subscription with a retry
/// policy or a circuit breaker.
pub(crate) struct Reliable<T> {
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) breaker: Option<Mutex<Breaker>>,
    /// Retries that came due, and messages held back by an open breaker:
    /// served before the lanes.
    ready: Mutex<VecDeque<Item<T>>>,
    ready_len: AtomicUsize,
    /// Retries waiting in the timer.
    waiting: AtomicUsize,
    held: AtomicU8,
    /// A breaker's re-open job is in the timer.
    reopen_pending: AtomicBool,
}

impl<T> Reliable<T> {
    pub(crate) fn new(retry: Option<RetryPolicy>, breaker: Option<Breaker>) -> Self {
        Self {
            retry,
            breaker: breaker.map(Mutex::new),
            ready: Mutex::new(VecDeque::new()),
            ready_len: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            held: AtomicU8::new(0),
            reopen_pending: AtomicBool::new(false),
        }
    }

    fn push(&self, item: Item<T>, front: bool) {
        let mut q = self.ready.lock();
        if front {
            q.push_front(item);
        } else {
            q.push_back(item);
        }
        self.ready_len.store(q.len(), Ordering::SeqCst);
    }

    fn pop(&self) -> Option<Item<T>> {
        if self.ready_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.ready.lock();
        let item = q.pop_front();
        self.ready_len.store(q.len(), Ordering::SeqCst);
        item
    }

    fn has_ready(&self) -> bool {
        self.ready_len.load(Ordering::Acquire) > 0
    }

    fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire) != 0
    }
}

/// The state a pull receiver waits on.
#[derive(Debug, Default)]
pub(crate) struct PullWait {
    /// Receivers blocked (or about to block) in `recv`.
    pub(crate) waiters: AtomicUsize,
    pub(crate) lock: Mutex<()>,
    pub(crate) ready: Condvar,
    /// An async receiver registered a waker.
    #[cfg(feature = "async")]
    pub(crate) waker: Mutex<Option<std::task::Waker>>,
    #[cfg(feature = "async")]
    pub(crate) wants_wake: AtomicBool,
}

/// How the subscription's messages reach its consumer.
pub(crate) enum Kind<T> {
    /// A handler run by the pool's workers; one runner per unit of
    /// concurrency, each with its own scheduling state.
    Callback {
        handler: HandlerFn<T>,
        runners: Box<[Arc<Runner<T>>]>,
    },
    /// A handler run on the publisher's thread.
    Inline {
        handler: HandlerFn<T>,
        /// Publishers inside the handler (or about to enter it).
        active: AtomicUsize,
    },
    /// Messages wait in the lanes until a receiver takes them.
    Pull(PullWait),
}

/// A queue group's shared dispatch state.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) strategy: super::GroupStrategy,
    pub(crate) next: AtomicUsize,
}

/// Spins a worker waits on an emptied mailbox for the next message when
/// the pool has nothing else to do (≈ 1–2 µs; a park and wake-up costs
/// ≈ 28 µs each way, a reschedule a few hundred ns).
#[cfg(not(topicbus_loom))]
const LINGER_SPINS: u32 = 64;

/// Why a mailbox closed (what its leftovers are counted as).
const CLOSE_UNSUBSCRIBED: u8 = 0;
const CLOSE_SHUTDOWN: u8 = 1;

/// One subscription.
pub(crate) struct Sub<T> {
    pub(crate) id: SubscriptionId,
    /// The owning bus's address, for the in-handler checks.
    pub(crate) bus: usize,
    pub(crate) patterns: Box<[crate::Pattern]>,
    pub(crate) lanes: Lanes<Arc<Message<T>>>,
    pub(crate) policy: OverflowPolicy,
    pub(crate) kind: Kind<T>,
    pub(crate) group: Option<Arc<Group>>,
    pub(crate) batch: usize,
    /// Messages each lane holds.
    pub(crate) capacity: usize,
    pub(crate) paused: AtomicBool,
    /// Set (before the runner states close) by unsubscribe and shutdown.
    pub(crate) closed: AtomicBool,
    /// Pull subscriptions only: the bus shut down, no more messages come;
    /// the receiver still takes what is queued.
    pub(crate) ended: AtomicBool,
    close_reason: AtomicU8,
    /// Shared with the bus's books so they outlive the subscription.
    pub(crate) counters: Arc<Counters>,
    /// Notified when a closed runner stops running.
    quiet_lock: Mutex<()>,
    quiet: Condvar,
    /// Whether other work waits in the pool (see [`Sub::linger`]).
    #[cfg_attr(topicbus_loom, allow(dead_code))] // no lingering under loom
    probe: QueueProbe,
    pub(crate) services: Arc<Services<T>>,
    /// The bus has an `on_deliver` hook (checked per handler call).
    deliver_hook: bool,
    /// The bus has an `on_outcome` hook (checked per settled message).
    outcome_hook: bool,
    /// Filters and deduplication (publisher side).
    pub(crate) gate: Option<Box<Gate<T>>>,
    /// Retries and the circuit breaker (worker side).
    pub(crate) rel: Option<Box<Reliable<T>>>,
    pub(crate) dead_letter: DeadLetterOn,
    /// The subscription's own latency histograms, when it keeps them.
    pub(crate) latency: Option<Box<SubRecorder>>,
}

impl<T> std::fmt::Debug for Sub<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sub")
            .field("id", &self.id)
            .field("patterns", &self.patterns)
            .finish_non_exhaustive()
    }
}

/// The result of one handler run.
enum Ran {
    Ok,
    Failed(BoxError),
    Panicked(Box<dyn std::any::Any + Send>),
}

/// What the publisher learned from one delivery, for its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Enqueued,
    Dropped,
    Rejected,
    Expired,
}

/// What the breaker let happen to a message.
enum Gated<T> {
    Go(Item<T>),
    /// Settled without a handler call (dead-lettered or dropped).
    Shed,
    /// Held back: the batch stops.
    Stop,
}

/// The kind of a subscription to build.
pub(crate) enum Make<T> {
    Callback(HandlerFn<T>, usize),
    Inline(HandlerFn<T>),
    Pull,
}

/// Everything [`Sub::new`] needs besides the kind.
pub(crate) struct Spec<T> {
    pub(crate) id: SubscriptionId,
    pub(crate) bus: usize,
    pub(crate) patterns: Box<[crate::Pattern]>,
    pub(crate) capacity: std::num::NonZeroUsize,
    pub(crate) policy: OverflowPolicy,
    pub(crate) group: Option<Arc<Group>>,
    pub(crate) batch: usize,
    pub(crate) paused: bool,
    pub(crate) probe: QueueProbe,
    pub(crate) deliver_hook: bool,
    pub(crate) outcome_hook: bool,
    pub(crate) services: Arc<Services<T>>,
    pub(crate) gate: Option<Box<Gate<T>>>,
    pub(crate) rel: Option<Box<Reliable<T>>>,
    pub(crate) dead_letter: DeadLetterOn,
    /// Keep latency histograms of its own (handler kinds only).
    pub(crate) latency: bool,
}

impl<T: Send + Sync + 'static> Sub<T> {
    pub(crate) fn new(spec: Spec<T>, make: Make<T>) -> Arc<Self> {
        let latency =
            (spec.latency && spec.services.metrics.every() != 0 && !matches!(make, Make::Pull))
                .then(|| Box::new(SubRecorder::new()));
        Arc::new_cyclic(|me| {
            let kind = match make {
                Make::Callback(handler, concurrency) => Kind::Callback {
                    handler,
                    runners: (0..concurrency.max(1))
                        .map(|_| Arc::new(Runner::new(Weak::clone(me))))
                        .collect(),
                },
                Make::Inline(handler) => Kind::Inline {
                    handler,
                    active: AtomicUsize::new(0),
                },
                Make::Pull => Kind::Pull(PullWait::default()),
            };
            Sub {
                id: spec.id,
                bus: spec.bus,
                patterns: spec.patterns,
                lanes: Lanes::new(spec.capacity),
                policy: spec.policy,
                kind,
                group: spec.group,
                batch: spec.batch.max(1),
                capacity: spec.capacity.get(),
                paused: AtomicBool::new(spec.paused),
                closed: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                close_reason: AtomicU8::new(CLOSE_UNSUBSCRIBED),
                counters: Arc::new(Counters::default()),
                quiet_lock: Mutex::new(()),
                quiet: Condvar::new(),
                probe: spec.probe,
                deliver_hook: spec.deliver_hook,
                outcome_hook: spec.outcome_hook,
                services: spec.services,
                gate: spec.gate,
                rel: spec.rel,
                dead_letter: spec.dead_letter,
                latency,
            }
        })
    }

    /// Counts `outcome` for `msg` and reports it to a confirmed publisher.
    /// Called exactly once per delivered message.
    pub(crate) fn settle(&self, msg: &Message<T>, outcome: Outcome) {
        self.settle_detailed(msg, outcome, || None);
    }

    /// [`settle`](Self::settle) with a detail (error text) for a confirmed
    /// publisher, computed only when one waits.
    #[inline]
    fn settle_detailed(
        &self,
        msg: &Message<T>,
        outcome: Outcome,
        detail: impl FnOnce() -> Option<String>,
    ) {
        self.counters.outcomes.0[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if self.outcome_hook {
            self.outcome_hook(msg, outcome);
        }
        #[cfg(feature = "tracing")]
        if !outcome.is_success() {
            trace_outcome(self.id, msg, outcome);
        }
        if let Some(tracker) = &msg.tracker {
            tracker.report(self.id, outcome, detail());
        }
    }

    /// Calls the bus's `on_outcome` hook (out of line: most buses have none).
    #[cold]
    #[inline(never)]
    fn outcome_hook(&self, msg: &Message<T>, outcome: Outcome) {
        self.services
            .hooks(|h| h.call(&h.on_outcome, |f| f(msg, self.id, outcome)));
    }

    /// Gives `msg` up: into the bus's dead letters when this subscription
    /// sends `reason` there, else counted as `fallback`.
    fn give_up(
        &self,
        msg: &Arc<Message<T>>,
        reason: DeadLetterReason,
        attempts: u32,
        first_failure: Option<SystemTime>,
        error: Option<Failure>,
        fallback: Outcome,
    ) {
        let on = match reason {
            DeadLetterReason::Expired => self.dead_letter.expired,
            DeadLetterReason::Overflow => self.dead_letter.overflow,
            _ => self.dead_letter.failures,
        };
        if !on {
            return self.settle_detailed(msg, fallback, || error.map(|e| e.message));
        }
        match self
            .services
            .dead_letter(msg, Some(self.id), reason, error, attempts, first_failure)
        {
            Some(letter) => self.settle_detailed(msg, Outcome::DeadLettered(reason), || {
                letter.error.map(|e| e.message)
            }),
            // Not reached: `dead_letter` flags are only set on a bus that
            // keeps dead letters.
            None => self.settle(msg, fallback),
        }
    }

    /// [`give_up`](Self::give_up) for a message on its way to the handler:
    /// its attempts so far, first failure and last error go with it.
    fn give_up_item(&self, item: &Item<T>, reason: DeadLetterReason, fallback: Outcome) {
        self.give_up(
            &item.msg,
            reason,
            item.made(),
            item.first_failure,
            item.last_error.clone(),
            fallback,
        );
    }

    /// Settles an expired message (reported to the hook).
    pub(crate) fn expire(&self, msg: &Arc<Message<T>>, attempts: u32) {
        self.services
            .hooks(|h| h.call(&h.on_expire, |f| f(msg, self.id)));
        self.give_up(
            msg,
            DeadLetterReason::Expired,
            attempts,
            None,
            None,
            Outcome::Expired,
        );
    }

    /// Settles a message the overflow policy pushed out.
    fn overflowed(&self, msg: &Arc<Message<T>>, reason: DropReason) {
        self.give_up(
            msg,
            DeadLetterReason::Overflow,
            0,
            None,
            None,
            Outcome::Dropped(reason),
        );
    }

    /// The filters and the deduplication window, counted (publisher side,
    /// before [`offer`](Self::offer)).
    #[inline]
    pub(crate) fn screen(&self, msg: &Message<T>) -> Screen {
        let Some(gate) = &self.gate else {
            return Screen::Pass;
        };
        self.count_screen(gate.screen(msg, || self.services.now()))
    }

    /// The filters alone, counted when they refuse (to pick a queue group's
    /// candidates).
    #[inline]
    pub(crate) fn accepts(&self, msg: &Message<T>) -> bool {
        let accepted = self.gate.as_ref().is_none_or(|g| g.accepts(msg));
        if !accepted {
            self.counters.bump_routed(FILTERED);
        }
        accepted
    }

    /// The deduplication window alone, counted.
    pub(crate) fn dedup(&self, msg: &Message<T>) -> Screen {
        match &self.gate {
            None => Screen::Pass,
            Some(gate) => self.count_screen(gate.dedup_only(msg, || self.services.now())),
        }
    }

    fn count_screen(&self, screen: Screen) -> Screen {
        match screen {
            Screen::Pass => {}
            Screen::Filtered => self.counters.bump_routed(FILTERED),
            Screen::Duplicate => self.counters.bump_routed(DUPLICATES),
        }
        screen
    }

    /// Routes `msg` into this subscription (publisher side; screened
    /// already, or a replay that skips the screen).
    pub(crate) fn offer(&self, pool: &Pool, msg: &Arc<Message<T>>) -> Offered {
        self.counters.bump_routed(DELIVERED);
        if let Some(tracker) = &msg.tracker {
            tracker.expect_one();
        }
        if self.services.expired(msg) {
            self.expire(msg, 0);
            return Offered::Expired;
        }
        if let Kind::Inline { handler, active } = &self.kind {
            return self.run_inline(handler, active, msg);
        }
        let offered = match self
            .lanes
            .push(msg.priority(), Arc::clone(msg), self.policy)
        {
            Push::Enqueued => Offered::Enqueued,
            Push::EvictedOldest(old) => {
                self.overflowed(&old, DropReason::Oldest);
                Offered::Enqueued
            }
            Push::DroppedNewest(m) => {
                self.overflowed(&m, DropReason::Newest);
                return Offered::Dropped;
            }
            Push::TimedOut(m) => {
                self.overflowed(&m, DropReason::Timeout);
                return Offered::Dropped;
            }
            Push::Rejected(m) => {
                self.settle(&m, Outcome::Dropped(DropReason::Rejected));
                return Offered::Rejected;
            }
        };
        self.after_push(pool);
        offered
    }

    /// Wakes whoever consumes the mailbox after a successful enqueue.
    fn after_push(&self, pool: &Pool) {
        match &self.kind {
            Kind::Callback { runners, .. } => Self::kick(runners, pool, true, || self.drain()),
            Kind::Pull(wait) => {
                // Pairs with the fences in `Receiver::recv_until` and `close`.
                fence(Ordering::SeqCst);
                if wait.waiters.load(Ordering::Relaxed) > 0 {
                    let _guard = wait.lock.lock();
                    wait.ready.notify_one();
                }
                #[cfg(feature = "async")]
                if wait.wants_wake.load(Ordering::Relaxed)
                    && wait.wants_wake.swap(false, Ordering::AcqRel)
                {
                    if let Some(w) = wait.waker.lock().take() {
                        w.wake();
                    }
                }
                if self.closed.load(Ordering::Relaxed) {
                    // The receiver is gone: nobody else may come for it.
                    self.drain();
                }
            }
            Kind::Inline { .. } => {}
        }
    }

    fn run_inline(
        &self,
        handler: &HandlerFn<T>,
        active: &AtomicUsize,
        msg: &Arc<Message<T>>,
    ) -> Offered {
        active.fetch_add(1, Ordering::SeqCst);
        // Pairs with the inline branch of `close`: either it sees us active
        // and waits, or we see it closed and stay out.
        if self.closed.load(Ordering::SeqCst) {
            active.fetch_sub(1, Ordering::Release);
            self.settle(msg, Outcome::Dropped(self.closed_reason()));
            return Offered::Dropped;
        }
        if self.paused.load(Ordering::Relaxed) {
            active.fetch_sub(1, Ordering::Release);
            self.settle(msg, Outcome::Dropped(DropReason::Paused));
            return Offered::Dropped;
        }
        let ran = {
            let _running = RunningGuard::enter(self.id.get(), self.bus);
            self.handle(handler, msg, msg.first_attempt())
        };
        active.fetch_sub(1, Ordering::Release);
        // Inline subscriptions have no retries (no mailbox to retry from).
        match ran {
            Ran::Ok => self.settle(msg, Outcome::Handled),
            ran => self.fail_inline(msg, ran),
        }
        Offered::Enqueued
    }

    /// Settles an inline run that failed or panicked.
    #[cold]
    fn fail_inline(&self, msg: &Arc<Message<T>>, ran: Ran) {
        if let Some(failure) = self.failure(ran, None) {
            self.fail(Item::first(Arc::clone(msg)), failure);
        }
    }

    /// Runs the handler on one message, catching panics.
    #[inline]
    fn handle(&self, handler: &HandlerFn<T>, msg: &Arc<Message<T>>, attempt: u32) -> Ran {
        if self.deliver_hook {
            self.services
                .hooks(|h| h.call(&h.on_deliver, |f| f(msg, self.id)));
        }
        let _attempt =
            (attempt != msg.first_attempt()).then(|| AttemptScope::enter(&**msg, attempt));
        // The level check first: with no subscriber (or one above debug)
        // this is one relaxed load, and no span is built.
        #[cfg(feature = "tracing")]
        let _span = tracing::level_enabled!(tracing::Level::DEBUG)
            .then(|| self.handler_span(msg, attempt).entered());
        let sampled = self.services.metrics.sample().then(|| self.sample_start());
        let ran = match catch_unwind(AssertUnwindSafe(|| handler(msg))) {
            Ok(Ok(())) => Ran::Ok,
            Ok(Err(e)) => Ran::Failed(e),
            Err(p) => Ran::Panicked(p),
        };
        if let Some(started) = sampled {
            self.sample_end(msg, started);
        }
        ran
    }

    /// The span of one handler run: message, topic, subscription,
    /// correlation and causation (when set), attempt.
    #[cfg(feature = "tracing")]
    fn handler_span(&self, msg: &Message<T>, attempt: u32) -> tracing::Span {
        let span = tracing::debug_span!(
            "topicbus.handle",
            message_id = %msg.id(),
            topic = %msg.topic(),
            subscription = %self.id,
            attempt,
            correlation_id = tracing::field::Empty,
            causation_id = tracing::field::Empty,
        );
        if let Some(c) = msg.correlation_id() {
            span.record("correlation_id", tracing::field::display(c));
        }
        if let Some(c) = msg.causation_id() {
            span.record("causation_id", tracing::field::display(c));
        }
        span
    }

    /// Starts a sampled handler run (latency metrics).
    #[cold]
    #[inline(never)]
    fn sample_start(&self) -> Started {
        Recorder::start(self.services.now(), self.services.wall())
    }

    /// Records a sampled handler run (latency metrics).
    #[cold]
    #[inline(never)]
    fn sample_end(&self, msg: &Message<T>, started: Started) {
        self.services.metrics.record(
            msg.timestamp(),
            started,
            self.services.now(),
            self.latency.as_deref(),
        );
    }

    /// The failure a run ended in (`None`: it succeeded), classified by
    /// `policy` (or the default classifier) and reported to the hook.
    fn failure(&self, ran: Ran, policy: Option<&RetryPolicy>) -> Option<Failure> {
        let failure = match ran {
            Ran::Ok => return None,
            Ran::Failed(e) => {
                let kind = policy.map_or_else(|| ErrorKind::of(&e), |p| p.kind_of(&e));
                Failure::from_error(kind, &e)
            }
            Ran::Panicked(p) => Failure::from_panic(&*p),
        };
        Some(failure)
    }

    /// Settles a failed message for good: dead letters or failed/panicked.
    fn fail(&self, item: Item<T>, failure: Failure) {
        let (reason, fallback) = match failure.kind {
            ErrorKind::Panic => (DeadLetterReason::Panicked, Outcome::Panicked),
            ErrorKind::Permanent => (DeadLetterReason::Permanent, Outcome::Failed),
            ErrorKind::Transient => (DeadLetterReason::RetriesExhausted, Outcome::Failed),
        };
        self.give_up(
            &item.msg,
            reason,
            item.made() + 1,
            item.first_failure,
            Some(failure),
            fallback,
        );
    }

    /// Settles a worker's handler run: handled, retried, or given up.
    fn after_run(self: &Arc<Self>, item: Item<T>, ran: Ran) {
        let policy = self.rel.as_ref().and_then(|r| r.retry.as_ref());
        let Some(failure) = self.failure(ran, policy) else {
            self.record(false);
            return self.settle(&item.msg, Outcome::Handled);
        };
        self.services
            .hooks(|h| h.call(&h.on_error, |f| f(&item.msg, self.id, &failure)));
        self.record(true);
        if let (Some(rel), Some(policy)) = (&self.rel, policy) {
            let retryable = match failure.kind {
                ErrorKind::Transient => true,
                ErrorKind::Permanent => false,
                ErrorKind::Panic => policy.retry_panics,
            };
            if retryable && item.made() + 1 < policy.max_attempts {
                return self.retry(rel, policy, item, failure);
            }
        }
        self.fail(item, failure);
    }

    /// Schedules `item`'s next attempt on the timer.
    fn retry(
        self: &Arc<Self>,
        rel: &Reliable<T>,
        policy: &RetryPolicy,
        item: Item<T>,
        failure: Failure,
    ) {
        let delay = policy.delay(item.made() + 1, fastrand::f64());
        self.counters.outcomes.0[RETRIED].fetch_add(1, Ordering::Relaxed);
        let next = Item {
            attempt: item.attempt + 1,
            first_failure: Some(item.first_failure.unwrap_or_else(|| self.services.wall())),
            last_error: Some(failure),
            msg: item.msg,
        };
        rel.waiting.fetch_add(1, Ordering::SeqCst);
        let strict = policy.order == RetryOrder::Strict;
        if strict {
            rel.held.fetch_or(HELD_RETRY, Ordering::SeqCst);
        }
        // The hook runs after scheduling: whoever it tells may move a manual
        // clock, and the retry must already be waiting by then.
        let (msg, attempt) = (Arc::clone(&next.msg), next.attempt);
        let sub = Arc::clone(self);
        self.services.timer.schedule_in(
            delay,
            Box::new(move |fire| sub.retry_fired(next, strict, fire)),
        );
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "topicbus",
            message_id = %msg.id(),
            subscription = %self.id,
            attempt,
            delay_ms = delay.as_secs_f64() * 1e3,
            "retry scheduled"
        );
        self.services
            .hooks(|h| h.call(&h.on_retry, |f| f(&msg, self.id, attempt, delay)));
    }

    /// A retry's time came (or the bus shut down first).
    fn retry_fired(&self, item: Item<T>, strict: bool, fire: Fire) {
        let Some(rel) = &self.rel else {
            return;
        };
        match fire {
            // Pushed before `waiting` drops, so the retry is never invisible
            // to a quiescence check.
            Fire::Due => rel.push(item, strict),
            Fire::Shutdown => self.give_up_item(
                &item,
                DeadLetterReason::Shutdown,
                Outcome::Dropped(DropReason::Shutdown),
            ),
        }
        rel.waiting.fetch_sub(1, Ordering::SeqCst);
        if strict {
            rel.held.fetch_and(!HELD_RETRY, Ordering::SeqCst);
        }
        self.wake();
    }

    /// Asks the breaker whether `item` may go to the handler now.
    fn gate_breaker(
        self: &Arc<Self>,
        rel: &Reliable<T>,
        breaker: &Mutex<Breaker>,
        item: Item<T>,
    ) -> Gated<T> {
        let now = self.services.now();
        let (admit, change, policy) = {
            let mut b = breaker.lock();
            let (admit, change) = b.admit(now);
            (admit, change, b.config().when_open)
        };
        if let Some(change) = change {
            self.circuit_changed(change);
        }
        let until = match admit {
            Admit::Go => return Gated::Go(item),
            Admit::Refuse(until) => until,
        };
        let draining = self.services.draining.load(Ordering::Acquire);
        match policy {
            WhenOpen::Hold if !draining => {
                rel.push(item, true);
                rel.held.fetch_or(HELD_BREAKER, Ordering::SeqCst);
                match until {
                    Some(until) => {
                        if !rel.reopen_pending.swap(true, Ordering::SeqCst) {
                            let sub = Arc::clone(self);
                            self.services.timer.schedule(
                                until,
                                Box::new(move |_| {
                                    if let Some(rel) = &sub.rel {
                                        rel.reopen_pending.store(false, Ordering::SeqCst);
                                    }
                                    sub.release(HELD_BREAKER);
                                }),
                            );
                        }
                    }
                    // Half-open with every trial out: a trial's result
                    // releases the hold; if one came in meanwhile, go on.
                    None => {
                        if breaker.lock().would_admit() {
                            self.release(HELD_BREAKER);
                        }
                    }
                }
                Gated::Stop
            }
            WhenOpen::Hold => {
                self.give_up_item(
                    &item,
                    DeadLetterReason::Shutdown,
                    Outcome::Dropped(DropReason::Shutdown),
                );
                Gated::Shed
            }
            WhenOpen::DeadLetter => {
                self.give_up_item(
                    &item,
                    DeadLetterReason::CircuitOpen,
                    Outcome::Dropped(DropReason::CircuitOpen),
                );
                Gated::Shed
            }
            WhenOpen::Drop => {
                self.settle(&item.msg, Outcome::Dropped(DropReason::CircuitOpen));
                Gated::Shed
            }
        }
    }

    /// Feeds a handler result to the breaker, if any.
    fn record(&self, failed: bool) {
        let Some(rel) = &self.rel else {
            return;
        };
        let Some(breaker) = &rel.breaker else {
            return;
        };
        let change = breaker
            .lock()
            .record(failed, self.services.now(), fastrand::f64());
        if let Some(change) = change {
            self.circuit_changed(change);
        }
        if rel.held.load(Ordering::Acquire) & HELD_BREAKER != 0 {
            self.release(HELD_BREAKER);
        }
    }

    fn circuit_changed(&self, (from, to): Change) {
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "topicbus",
            subscription = %self.id,
            from = ?from,
            to = ?to,
            "circuit breaker changed"
        );
        self.services
            .hooks(|h| h.call(&h.on_circuit_change, |f| f(self.id, from, to)));
    }

    /// Clears a hold and wakes the runners.
    fn release(&self, bit: u8) {
        if let Some(rel) = &self.rel {
            rel.held.fetch_and(!bit, Ordering::SeqCst);
        }
        self.wake();
    }

    /// Shutdown began: an open breaker's hold gives up what it holds.
    pub(crate) fn on_draining(&self) {
        if self
            .rel
            .as_ref()
            .is_some_and(|r| r.held.load(Ordering::Acquire) & HELD_BREAKER != 0)
        {
            self.release(HELD_BREAKER);
        }
    }

    /// Kicks the runners of a callback subscription (after a hold ends or
    /// a retry came due).
    fn wake(&self) {
        if let Kind::Callback { runners, .. } = &self.kind {
            Self::kick(runners, &self.services.pool, false, || self.drain());
        }
    }

    fn is_held(&self) -> bool {
        self.rel.as_ref().is_some_and(|r| r.is_held())
    }

    /// The next message for the handler: due retries and held-back
    /// messages first, then the lanes.
    #[inline]
    fn next_item(&self) -> Option<Item<T>> {
        if let Some(rel) = &self.rel {
            if let Some(item) = rel.pop() {
                return Some(item);
            }
        }
        self.lanes.pop_quiet().map(Item::first)
    }

    /// Runs up to one batch (worker side). True when messages are left.
    fn run_batch(self: &Arc<Self>, handler: &HandlerFn<T>) -> bool {
        if self.paused.load(Ordering::Acquire) || self.is_held() {
            // Resume (or the end of the hold) re-kicks the runners.
            return false;
        }
        let _running = RunningGuard::enter(self.id.get(), self.bus);
        // Publishers blocked on a full lane are woken once per batch, not
        // per message (see `Lanes::pop_quiet`).
        let _release = ReleaseGuard(&self.lanes);
        for _ in 0..self.batch {
            if self.closed.load(Ordering::Acquire) {
                // Stop calling the handler. Report no work left: either
                // `finish_run` sees the closed state and drains, or the
                // runner goes idle and the closer, closing an idle runner,
                // drains (reporting work would reschedule in a loop until the
                // closer gets there).
                return false;
            }
            let Some(mut item) = self.next_item() else {
                return false;
            };
            if self.services.expired(&item.msg) {
                self.expire(&item.msg, item.made());
                continue;
            }
            if let Some(rel) = &self.rel {
                if let Some(breaker) = &rel.breaker {
                    item = match self.gate_breaker(rel, breaker, item) {
                        Gated::Go(item) => item,
                        Gated::Shed => continue,
                        Gated::Stop => return false,
                    };
                }
            }
            let ran = self.handle(handler, &item.msg, item.attempt);
            self.after_run(item, ran);
            if self.is_held() {
                // A strict-order retry waits: take nothing else meanwhile.
                return false;
            }
        }
        // A hint (it never reads the publishers' line): a push it misses
        // sets the state's notified bit, which `finish_run` sees.
        self.lanes.ready() || self.rel.as_ref().is_some_and(|r| r.has_ready())
    }

    /// After a batch emptied the mailbox: when no other work waits in the
    /// pool, spins briefly for the next message instead of going idle. A
    /// steady stream then costs no reschedule per message (no run-queue
    /// push and pop, no state transitions; pushes meanwhile only set the
    /// notified bit once). True when a message arrived. It polls the lanes'
    /// `ready`, which reads the slot the next pop reads anyway, never the
    /// counter every push writes: a poll between two pushes then costs the
    /// publisher nothing (`Lanes` module docs).
    #[cfg(not(topicbus_loom))]
    fn linger(&self) -> bool {
        if self.paused.load(Ordering::Relaxed)
            || self.closed.load(Ordering::Relaxed)
            || self.is_held()
        {
            // Paused or held: the batch would take nothing; closed:
            // finish_run drains.
            return false;
        }
        for _ in 0..LINGER_SPINS {
            std::hint::spin_loop();
            if self.lanes.ready() {
                return true;
            }
            if !self.probe.is_empty() {
                return false;
            }
        }
        false
    }

    /// No lingering under loom: it only multiplies the interleavings.
    #[cfg(topicbus_loom)]
    fn linger(&self) -> bool {
        false
    }

    fn closed_reason(&self) -> DropReason {
        match self.close_reason.load(Ordering::Acquire) {
            CLOSE_SHUTDOWN => DropReason::Shutdown,
            _ => DropReason::Unsubscribed,
        }
    }

    /// Settles every message left in the lanes as dropped for the close
    /// reason.
    pub(crate) fn drain(&self) {
        let reason = self.closed_reason();
        if let Some(rel) = &self.rel {
            while let Some(item) = rel.pop() {
                self.settle(&item.msg, Outcome::Dropped(reason));
            }
        }
        while let Some(msg) = self.lanes.pop() {
            self.settle(&msg, Outcome::Dropped(reason));
        }
    }

    /// Closes the subscription: no handler call starts after this returns
    /// (unless called from this subscription's own handler, or with `wait`
    /// false), and what is left in the mailbox is settled as dropped for
    /// `shutdown`'s reason (pull mailboxes are not closed by shutdown, see
    /// [`end`](Self::end)). `wait` must be false once the pool is
    /// stopped (nobody would run a scheduled runner).
    pub(crate) fn close(&self, shutdown: bool, wait: bool) {
        if shutdown {
            self.close_reason.store(CLOSE_SHUTDOWN, Ordering::Release);
        }
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // Ids are per bus: compare the bus too.
        let own_thread =
            RUNNING.with(Cell::get) == self.id.get() && RUNNING_BUS.with(Cell::get) == self.bus;
        match &self.kind {
            Kind::Callback { runners, .. } => {
                for runner in runners.iter() {
                    if runner.state.close() {
                        // Idle: ours to drain.
                        self.finish_close(runner);
                    }
                }
                if !own_thread && wait {
                    for runner in runners.iter() {
                        self.wait_done(runner);
                    }
                }
            }
            Kind::Inline { active, .. } => {
                if !own_thread && wait {
                    // Inline handlers are meant to be short: spin, then
                    // yield, until the publishers inside it leave.
                    let mut spins = 0u32;
                    while active.load(Ordering::SeqCst) > 0 {
                        if spins < 64 {
                            std::hint::spin_loop();
                            spins += 1;
                        } else {
                            crate::sync::thread::yield_now();
                        }
                    }
                }
            }
            Kind::Pull(_) => {
                // Pairs with the fence in `after_push`.
                fence(Ordering::SeqCst);
                self.drain();
                self.wake_receivers();
            }
        }
    }

    /// Pull subscriptions: the bus is shutting down; receivers take what is
    /// left, then see the end.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.wake_receivers();
    }

    /// Wakes every receiver blocked on this pull mailbox.
    fn wake_receivers(&self) {
        if let Kind::Pull(wait) = &self.kind {
            {
                let _guard = wait.lock.lock();
                wait.ready.notify_all();
            }
            #[cfg(feature = "async")]
            if let Some(w) = wait.waker.lock().take() {
                w.wake();
            }
        }
    }

    /// A runner's share of a close: drain, mark done, wake the closer.
    fn finish_close(&self, runner: &Runner<T>) {
        self.drain();
        runner.done.store(true, Ordering::Release);
        let _guard = self.quiet_lock.lock();
        self.quiet.notify_all();
    }

    /// Waits until `runner` finished its share of the close (its worker saw
    /// it and stopped calling the handler).
    fn wait_done(&self, runner: &Runner<T>) {
        let mut guard = self.quiet_lock.lock();
        // `ended`: the bus's final sweep ran; a runner still queued on the
        // stopped pool will never run.
        while !runner.done.load(Ordering::Acquire) && !self.ended.load(Ordering::Acquire) {
            // Notified by `finish_close`, which sets `done` before it takes
            // the lock; the timeout is only a safety net.
            let (g, _) = self
                .quiet
                .wait_until(guard, Instant::now() + Duration::from_millis(50));
            guard = g;
        }
    }

    /// Resumes a paused subscription and kicks its runners.
    pub(crate) fn resume(&self, pool: &Pool) {
        self.paused.store(false, Ordering::SeqCst);
        self.wake_receivers();
        if let Kind::Callback { runners, .. } = &self.kind {
            Self::kick(runners, pool, false, || self.drain());
        }
    }

    /// Tells the runners that messages wait (`State::on_push`, after the
    /// enqueue): schedules an idle runner, only the first one found when
    /// `first_only` (a publish; further idle runners would find nothing) or
    /// every idle one (a resume, so a concurrent subscription works in
    /// parallel again). A runner already scheduled or running will see the
    /// messages; with concurrency > 1 the search goes on for an idle one.
    /// `drain` runs when the subscription closed meanwhile: nobody else may
    /// come for what was just enqueued.
    fn kick(runners: &[Arc<Runner<T>>], pool: &Pool, first_only: bool, drain: impl FnOnce()) {
        for runner in runners {
            match runner.state.on_push() {
                OnPush::Schedule => {
                    pool.schedule(Arc::clone(runner) as TaskRef);
                    if first_only {
                        return;
                    }
                }
                OnPush::Nothing => {}
                OnPush::Closed => return drain(),
            }
        }
    }

    /// True when no runner is scheduled or running and the lanes are empty
    /// (pull mailboxes count as quiescent: their receivers drain them).
    pub(crate) fn is_quiescent(&self) -> bool {
        match &self.kind {
            Kind::Callback { runners, .. } => {
                runners.iter().all(|r| r.state.is_idle())
                    && self.lanes.is_empty()
                    && self
                        .rel
                        .as_ref()
                        .is_none_or(|r| !r.has_ready() && r.waiting.load(Ordering::SeqCst) == 0)
            }
            Kind::Inline { active, .. } => active.load(Ordering::Acquire) == 0,
            Kind::Pull(_) => true,
        }
    }

    pub(crate) fn is_pull(&self) -> bool {
        matches!(self.kind, Kind::Pull(_))
    }

    /// Messages waiting in the lanes, all priorities.
    pub(crate) fn depth(&self) -> usize {
        self.lanes.depths().iter().sum()
    }

    /// This subscription's part of [`Bus::health`](crate::Bus::health):
    /// lanes filled past the threshold, a breaker not closed.
    pub(crate) fn health(
        &self,
        thresholds: &super::HealthThresholds,
        issues: &mut Vec<super::HealthIssue>,
    ) {
        use super::{HealthIssue, HealthStatus};
        let limit = thresholds.mailbox_fill * self.capacity as f64;
        for (lane, depth) in ["high", "normal", "low"].iter().zip(self.lanes.depths()) {
            if depth > 0 && depth as f64 >= limit {
                issues.push(HealthIssue::new(
                    HealthStatus::Degraded,
                    self.id.to_string(),
                    format!("{lane} lane {depth} of {} full", self.capacity),
                ));
            }
        }
        let circuit = self.rel.as_ref().and_then(|r| r.breaker.as_ref());
        if let Some(state) = circuit.map(|b| b.lock().state()) {
            if state != crate::reliability::CircuitState::Closed {
                issues.push(HealthIssue::new(
                    HealthStatus::Degraded,
                    self.id.to_string(),
                    format!("circuit breaker {state:?}"),
                ));
            }
        }
    }

    pub(crate) fn stats(&self) -> SubStats {
        let mut stats = SubStats::new(self.id, self.counters.read(), self.lanes.depths());
        if let Some(rel) = &self.rel {
            stats.circuit = rel.breaker.as_ref().map(|b| b.lock().state());
            stats.retrying = rel.waiting.load(Ordering::Acquire);
            stats.held = rel.ready_len.load(Ordering::Acquire);
        }
        stats
    }
}

/// One unit of a callback subscription's concurrency: what the pool runs.
pub(crate) struct Runner<T> {
    sub: Weak<Sub<T>>,
    pub(crate) state: State,
    /// Set once the runner's share of a close is finished: the leftovers
    /// drained, no handler call in progress.
    done: AtomicBool,
}

impl<T> Runner<T> {
    fn new(sub: Weak<Sub<T>>) -> Self {
        Self {
            sub,
            state: State::new(),
            done: AtomicBool::new(false),
        }
    }
}

impl<T: Send + Sync + 'static> Task for Runner<T> {
    fn run(&self) -> bool {
        let Some(sub) = self.sub.upgrade() else {
            return false;
        };
        let Kind::Callback { handler, .. } = &sub.kind else {
            return false;
        };
        if !self.state.start_run() {
            // Closed while scheduled: the closer left the draining to us.
            sub.finish_close(self);
            return false;
        }
        let mut more = sub.run_batch(handler);
        while !more && sub.linger() {
            more = sub.run_batch(handler);
        }
        match self.state.finish_run(more) {
            AfterRun::Idle => false,
            AfterRun::Reschedule => true,
            AfterRun::Closed => {
                sub.finish_close(self);
                false
            }
        }
    }
}

/// The `tracing` event of a terminal outcome that is not a success: drops
/// and expiries at debug, failures, panics and dead letters at warn.
#[cfg(feature = "tracing")]
#[cold]
fn trace_outcome<T>(sub: crate::registry::SubscriptionId, msg: &Message<T>, outcome: Outcome) {
    match outcome {
        Outcome::Dropped(reason) => tracing::debug!(
            target: "topicbus",
            message_id = %msg.id(),
            topic = %msg.topic(),
            subscription = %sub,
            reason = ?reason,
            "message dropped"
        ),
        Outcome::Expired => tracing::debug!(
            target: "topicbus",
            message_id = %msg.id(),
            topic = %msg.topic(),
            subscription = %sub,
            "message expired"
        ),
        Outcome::DeadLettered(reason) => tracing::warn!(
            target: "topicbus",
            message_id = %msg.id(),
            topic = %msg.topic(),
            subscription = %sub,
            reason = ?reason,
            "message dead-lettered"
        ),
        other => tracing::warn!(
            target: "topicbus",
            message_id = %msg.id(),
            topic = %msg.topic(),
            subscription = %sub,
            outcome = ?other,
            "handler failed"
        ),
    }
}

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
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::mailbox::lanes::{Lanes, OverflowPolicy, Push};
use crate::mailbox::state::{AfterRun, OnPush, State};
use crate::message::Message;
use crate::pool::{Pool, QueueProbe, Task, TaskRef};
use crate::registry::SubscriptionId;
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

use super::stats::{DropReason, Outcome, SubStats, OUTCOMES};
use super::BoxError;

/// A handler as stored: the user's closure with its error boxed.
pub(crate) type HandlerFn<T> = Box<dyn Fn(&Message<T>) -> Result<(), BoxError> + Send + Sync>;

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

/// Padding against false sharing between publisher-side and worker-side
/// counters.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// Per-subscription counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Messages routed here (written by publishers).
    delivered: Padded<AtomicU64>,
    /// Terminal outcomes by [`Outcome::index`].
    outcomes: Padded<[AtomicU64; OUTCOMES]>,
}

impl Counters {
    /// Delivered and the outcome counters, as read now.
    pub(crate) fn read(&self) -> (u64, [u64; OUTCOMES]) {
        (
            self.delivered.0.load(Ordering::Relaxed),
            std::array::from_fn(|i| self.outcomes.0[i].load(Ordering::Relaxed)),
        )
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
    Done(Outcome),
    Failed(BoxError),
    Panicked(Box<dyn std::any::Any + Send>),
}

/// What the publisher learned from one delivery, for its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Enqueued,
    Dropped,
    Rejected,
}

/// The kind of a subscription to build.
pub(crate) enum Make<T> {
    Callback(HandlerFn<T>, usize),
    Inline(HandlerFn<T>),
    Pull,
}

/// Everything [`Sub::new`] needs besides the kind.
pub(crate) struct Spec {
    pub(crate) id: SubscriptionId,
    pub(crate) bus: usize,
    pub(crate) patterns: Box<[crate::Pattern]>,
    pub(crate) capacity: std::num::NonZeroUsize,
    pub(crate) policy: OverflowPolicy,
    pub(crate) group: Option<Arc<Group>>,
    pub(crate) batch: usize,
    pub(crate) paused: bool,
    pub(crate) probe: QueueProbe,
}

impl<T: Send + Sync + 'static> Sub<T> {
    pub(crate) fn new(spec: Spec, make: Make<T>) -> Arc<Self> {
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
                paused: AtomicBool::new(spec.paused),
                closed: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                close_reason: AtomicU8::new(CLOSE_UNSUBSCRIBED),
                counters: Arc::new(Counters::default()),
                quiet_lock: Mutex::new(()),
                quiet: Condvar::new(),
                probe: spec.probe,
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
    fn settle_detailed(
        &self,
        msg: &Message<T>,
        outcome: Outcome,
        detail: impl FnOnce() -> Option<String>,
    ) {
        self.counters.outcomes.0[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(tracker) = &msg.tracker {
            tracker.report(self.id, outcome, detail());
        }
    }

    /// Settles the result of a handler run.
    fn settle_ran(&self, msg: &Message<T>, ran: Ran) {
        match ran {
            Ran::Done(outcome) => self.settle(msg, outcome),
            Ran::Failed(e) => self.settle_detailed(msg, Outcome::Failed, || Some(e.to_string())),
            Ran::Panicked(p) => self.settle_detailed(msg, Outcome::Panicked, || {
                Some(
                    p.downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic payload".to_owned()),
                )
            }),
        }
    }

    /// Routes `msg` into this subscription (publisher side).
    pub(crate) fn offer(&self, pool: &Pool, msg: &Arc<Message<T>>) -> Offered {
        self.counters.delivered.0.fetch_add(1, Ordering::Relaxed);
        if let Some(tracker) = &msg.tracker {
            tracker.expect_one();
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
                self.settle(&old, Outcome::Dropped(DropReason::Oldest));
                Offered::Enqueued
            }
            Push::DroppedNewest(m) => {
                self.settle(&m, Outcome::Dropped(DropReason::Newest));
                return Offered::Dropped;
            }
            Push::TimedOut(m) => {
                self.settle(&m, Outcome::Dropped(DropReason::Timeout));
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
        msg: &Message<T>,
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
            self.handle(handler, msg)
        };
        active.fetch_sub(1, Ordering::Release);
        self.settle_ran(msg, ran);
        Offered::Enqueued
    }

    /// Runs the handler on one message (expiry first), catching panics.
    #[inline]
    fn handle(&self, handler: &HandlerFn<T>, msg: &Message<T>) -> Ran {
        if msg.expires_at().is_some() && msg.is_expired_at(SystemTime::now()) {
            return Ran::Done(Outcome::Expired);
        }
        match catch_unwind(AssertUnwindSafe(|| handler(msg))) {
            Ok(Ok(())) => Ran::Done(Outcome::Handled),
            Ok(Err(e)) => Ran::Failed(e),
            Err(p) => Ran::Panicked(p),
        }
    }

    /// Runs up to one batch (worker side). True when messages are left.
    fn run_batch(&self, handler: &HandlerFn<T>) -> bool {
        if self.paused.load(Ordering::Acquire) {
            // Resume re-kicks the runners.
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
            let Some(msg) = self.lanes.pop_quiet() else {
                return false;
            };
            let ran = self.handle(handler, &msg);
            self.settle_ran(&msg, ran);
        }
        !self.lanes.is_empty()
    }

    /// After a batch emptied the mailbox: when no other work waits in the
    /// pool, spins briefly for the next message instead of going idle. A
    /// steady stream then costs no reschedule per message (no run-queue
    /// push and pop, no state transitions; pushes meanwhile only set the
    /// notified bit once). True when a message arrived.
    #[cfg(not(topicbus_loom))]
    fn linger(&self) -> bool {
        if self.paused.load(Ordering::Relaxed) || self.closed.load(Ordering::Relaxed) {
            // Paused: the batch would take nothing; closed: finish_run drains.
            return false;
        }
        for _ in 0..LINGER_SPINS {
            std::hint::spin_loop();
            if !self.lanes.is_empty() {
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
                runners.iter().all(|r| r.state.is_idle()) && self.lanes.is_empty()
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

    pub(crate) fn stats(&self) -> SubStats {
        let (delivered, outcomes) = self.counters.read();
        SubStats::new(self.id, delivered, outcomes, self.lanes.depths())
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

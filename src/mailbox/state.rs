//! The scheduling state of one mailbox: idle → scheduled → running.
//!
//! A mailbox is *scheduled* when it sits in the worker pool's run queue (or
//! is about to be put there), *running* while a worker drains it, and *idle*
//! otherwise. The protocol gives exactly one wake-up per idle → ready
//! transition (DESIGN invariant 3) and runs a mailbox on one worker at a time
//! (invariant 4):
//!
//! - a publisher enqueues a message, **then** calls [`State::on_push`]; only
//!   the push that finds the mailbox idle gets [`OnPush::Schedule`] and puts it
//!   on the run queue; a push that finds it running sets `NOTIFIED` instead;
//! - a worker calls [`State::start_run`] when it takes the mailbox off the run
//!   queue, drains a batch, and calls [`State::finish_run`] with whether it saw
//!   messages left: it reschedules if it did, or if a push raced in
//!   (`NOTIFIED`), and only otherwise goes idle.
//!
//! No wake-up is lost: a push either lands before the worker's last emptiness
//! check (the worker sees it), or its `on_push` RMW comes after `finish_run`'s
//! (it finds the mailbox idle and schedules it), or between the two (it sets
//! `NOTIFIED`, which `finish_run` sees). No double scheduling: `SCHEDULED` is
//! set only from idle by a push, or from running by the one worker.
//!
//! Every transition is a read-modify-write on one word, so all of them sit in
//! one modification order (tokio's task state does the same); they use
//! `AcqRel` so a worker that observes a state also observes the messages
//! enqueued before it was set. The `mailbox_state` loom model checks it.

use crate::sync::atomic::{AtomicUsize, Ordering};

/// In the run queue (or about to be put there).
const SCHEDULED: usize = 1;
/// A worker is draining the mailbox.
const RUNNING: usize = 1 << 1;
/// A push arrived while running: the worker must run again.
const NOTIFIED: usize = 1 << 2;
/// Unsubscribed: never scheduled again.
const CLOSED: usize = 1 << 3;

/// What a publisher must do after enqueueing.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPush {
    /// The mailbox was idle: put it on the run queue (exactly once).
    Schedule,
    /// Already scheduled or running: a worker will see the message.
    Nothing,
    /// Closed: the message will not be run; account for it.
    Closed,
}

/// What a worker must do after a batch.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRun {
    /// The mailbox went idle.
    Idle,
    /// Work remains (or raced in): put the mailbox back on the run queue.
    Reschedule,
    /// Closed while running: drain and account for what is left.
    Closed,
}

/// The scheduling state word of one mailbox.
#[derive(Debug)]
pub struct State(AtomicUsize);

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// An idle, open mailbox state.
    pub fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Applies `f` to the state until the compare-exchange succeeds; returns
    /// the state before and `f`'s verdict.
    #[inline]
    fn transition<R: Copy>(&self, mut f: impl FnMut(usize) -> (usize, R)) -> (usize, R) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (next, out) = f(cur);
            if next == cur {
                return (cur, out);
            }
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (cur, out),
                Err(actual) => cur = actual,
            }
        }
    }

    /// A message was enqueued. Call after the enqueue, never before.
    pub fn on_push(&self) -> OnPush {
        self.transition(|s| {
            if s & CLOSED != 0 {
                (s, OnPush::Closed)
            } else if s & RUNNING != 0 {
                (s | NOTIFIED, OnPush::Nothing)
            } else if s & SCHEDULED != 0 {
                (s, OnPush::Nothing)
            } else {
                (s | SCHEDULED, OnPush::Schedule)
            }
        })
        .1
    }

    /// A worker took the mailbox off the run queue. False when it was closed
    /// meanwhile (the worker then drains and accounts for what is left).
    pub fn start_run(&self) -> bool {
        let (before, open) = self.transition(|s| {
            if s & CLOSED != 0 {
                (s & !SCHEDULED, false)
            } else {
                ((s & !(SCHEDULED | NOTIFIED)) | RUNNING, true)
            }
        });
        debug_assert!(
            before & SCHEDULED != 0,
            "ran a mailbox that was not scheduled"
        );
        debug_assert!(before & RUNNING == 0, "two workers on one mailbox");
        open
    }

    /// A worker finished a batch; `more` says it saw messages left.
    pub fn finish_run(&self, more: bool) -> AfterRun {
        let (before, after) = self.transition(|s| {
            if s & CLOSED != 0 {
                (s & !(RUNNING | NOTIFIED), AfterRun::Closed)
            } else if more || s & NOTIFIED != 0 {
                (
                    (s & !(RUNNING | NOTIFIED)) | SCHEDULED,
                    AfterRun::Reschedule,
                )
            } else {
                (s & !RUNNING, AfterRun::Idle)
            }
        });
        debug_assert!(before & RUNNING != 0, "finished a run that was not started");
        after
    }

    /// Closes the mailbox: no push schedules it again. Returns true when it
    /// was idle, so the caller must drain what is left itself (a scheduled
    /// or running mailbox is drained by the worker that gets it).
    pub fn close(&self) -> bool {
        let (before, ()) = self.transition(|s| (s | CLOSED, ()));
        before & (SCHEDULED | RUNNING | CLOSED) == 0
    }

    /// True when neither scheduled nor running (a snapshot: a push may
    /// schedule it right after).
    pub fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) & (SCHEDULED | RUNNING) == 0
    }

    /// True once closed.
    #[cfg_attr(not(any(test, topicbus_loom)), allow(dead_code))] // tests and models
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSED != 0
    }
}

#[cfg(all(test, not(topicbus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_schedule_per_idle_to_ready() {
        let s = State::new();
        assert_eq!(s.on_push(), OnPush::Schedule);
        assert_eq!(s.on_push(), OnPush::Nothing, "already scheduled");
        assert!(s.start_run());
        assert_eq!(s.on_push(), OnPush::Nothing, "running: notified instead");
        assert_eq!(
            s.finish_run(false),
            AfterRun::Reschedule,
            "the notification"
        );
        assert!(s.start_run());
        assert_eq!(s.finish_run(false), AfterRun::Idle);
        assert_eq!(s.on_push(), OnPush::Schedule, "idle again");
    }

    #[test]
    fn leftover_work_reschedules() {
        let s = State::new();
        assert_eq!(s.on_push(), OnPush::Schedule);
        assert!(s.start_run());
        assert_eq!(s.finish_run(true), AfterRun::Reschedule);
        assert_eq!(s.on_push(), OnPush::Nothing, "still scheduled");
    }

    #[test]
    fn close_in_every_state() {
        let idle = State::new();
        assert!(idle.close(), "idle: the closer drains");
        assert_eq!(idle.on_push(), OnPush::Closed);
        assert!(!idle.close(), "closing twice hands out no second drain");

        let scheduled = State::new();
        assert_eq!(scheduled.on_push(), OnPush::Schedule);
        assert!(!scheduled.close(), "scheduled: the worker drains");
        assert!(!scheduled.start_run());

        let running = State::new();
        assert_eq!(running.on_push(), OnPush::Schedule);
        assert!(running.start_run());
        assert!(!running.close(), "running: the worker drains");
        assert_eq!(running.on_push(), OnPush::Closed);
        assert_eq!(running.finish_run(false), AfterRun::Closed);
        assert!(running.is_closed());
    }
}

//! The mailbox scheduling state machine under every interleaving: no lost
//! wake-up, no double scheduling, no message run twice, close vs push.
#![cfg(topicbus_loom)]

use std::collections::VecDeque;

use loom::sync::{Arc, Mutex};
use loom::thread;
use topicbus::__loom::{AfterRun, OnPush, State};

/// A mailbox with a one-message batch budget, its run-queue tokens, and what
/// was consumed or drained.
struct Mailbox {
    queue: Mutex<VecDeque<u32>>,
    state: State,
    /// Schedule tokens in the run queue: never more than one.
    run_queue: Mutex<usize>,
    consumed: Mutex<Vec<u32>>,
}

impl Mailbox {
    fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            state: State::new(),
            run_queue: Mutex::new(0),
            consumed: Mutex::new(Vec::new()),
        }
    }

    fn schedule(&self) {
        let mut rq = self.run_queue.lock().unwrap();
        *rq += 1;
        assert_eq!(*rq, 1, "mailbox scheduled twice");
    }

    /// Enqueue, then tell the state machine (in that order).
    fn push(&self, v: u32) {
        self.queue.lock().unwrap().push_back(v);
        match self.state.on_push() {
            OnPush::Schedule => self.schedule(),
            OnPush::Nothing => {}
            OnPush::Closed => self.drain(),
        }
    }

    /// Accounts for everything left in the queue (close / closed paths).
    fn drain(&self) {
        let mut q = self.queue.lock().unwrap();
        self.consumed.lock().unwrap().extend(q.drain(..));
    }

    /// One worker step: take a token, run one message. False when there was
    /// no token.
    fn work_once(&self) -> bool {
        {
            let mut rq = self.run_queue.lock().unwrap();
            if *rq == 0 {
                return false;
            }
            *rq -= 1;
        }
        if !self.state.start_run() {
            self.drain();
            return true;
        }
        let (got, more) = {
            let mut q = self.queue.lock().unwrap();
            let got = q.pop_front();
            (got, !q.is_empty())
        };
        if let Some(v) = got {
            self.consumed.lock().unwrap().push(v);
        }
        match self.state.finish_run(more) {
            AfterRun::Idle => {}
            AfterRun::Reschedule => self.schedule(),
            AfterRun::Closed => self.drain(),
        }
        true
    }

    fn consumed_sorted(&self) -> Vec<u32> {
        let mut v = self.consumed.lock().unwrap().clone();
        v.sort_unstable();
        v
    }
}

/// Two publishers race a worker. Afterwards, finishing the scheduled work
/// consumes every message exactly once and leaves the mailbox idle: a lost
/// wake-up would strand a message, a double schedule trips the token assert
/// (and `State`'s debug assertions).
#[test]
fn no_lost_wakeup_no_double_schedule() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::new());
        let pushers: Vec<_> = [1, 2]
            .map(|v| {
                let mb = mb.clone();
                thread::spawn(move || mb.push(v))
            })
            .into_iter()
            .collect();
        let worker = {
            let mb = mb.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    mb.work_once();
                }
            })
        };
        for p in pushers {
            p.join().unwrap();
        }
        worker.join().unwrap();
        while mb.work_once() {}
        assert_eq!(mb.consumed_sorted(), [1, 2], "each message exactly once");
        assert!(mb.queue.lock().unwrap().is_empty(), "a wake-up was lost");
        assert_eq!(mb.state.on_push(), OnPush::Schedule, "ends idle");
    });
}

/// Close races a publisher and a worker: every message is consumed or
/// drained exactly once, whoever gets it.
#[test]
fn close_vs_push_accounts_for_every_message() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::new());
        mb.push(1);
        let pusher = {
            let mb = mb.clone();
            thread::spawn(move || mb.push(2))
        };
        let worker = {
            let mb = mb.clone();
            thread::spawn(move || {
                mb.work_once();
            })
        };
        if mb.state.close() {
            mb.drain();
        }
        pusher.join().unwrap();
        worker.join().unwrap();
        while mb.work_once() {}
        assert_eq!(mb.consumed_sorted(), [1, 2]);
        assert!(mb.queue.lock().unwrap().is_empty());
    });
}

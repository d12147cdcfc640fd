//! The bus's protocols on top of the mailbox state machine, mirrored from
//! `src/bus/sub.rs` over the real `State`:
//!
//! - `unsubscribe_waits_out_the_running_handler`: after unsubscribe returns,
//!   the handler is never called again (DESIGN invariant 2), and every
//!   message is handled or drained exactly once;
//! - `concurrent_runners_lose_no_message`: a subscription with concurrency
//!   2 (two runners sharing one queue, the publisher offering each message
//!   to the first runner that schedules) runs every message exactly once;
//! - `a_queue_group_gives_each_message_to_one_member`: two publishers
//!   dispatch round-robin (`GroupStrategy::RoundRobin`, the turn counter of
//!   `Inner::dispatch_groups`) to a group of two members while one member
//!   unsubscribes: consecutive turns go to different members, and each
//!   message is handled by exactly one member or drained by the closing one
//!   (counted dropped, unsubscribed), never both, never lost.
#![cfg(topicbus_loom)]

use std::collections::VecDeque;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use topicbus::__loom::{AfterRun, OnPush, State};

/// A subscription: one queue, `n` runners, the closed flag, per-runner done
/// flags, and what the handler saw or the closers drained.
struct Sub {
    queue: Mutex<VecDeque<u32>>,
    runners: Vec<State>,
    /// Run-queue tokens per runner.
    tokens: Mutex<Vec<usize>>,
    closed: AtomicBool,
    done: Vec<AtomicBool>,
    quiet_lock: Mutex<()>,
    quiet: Condvar,
    handled: Mutex<Vec<u32>>,
    drained: Mutex<Vec<u32>>,
    /// Set when unsubscribe returned: the handler must not run after.
    unsubscribed: AtomicBool,
}

impl Sub {
    fn new(n: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            runners: (0..n).map(|_| State::new()).collect(),
            tokens: Mutex::new(vec![0; n]),
            closed: AtomicBool::new(false),
            done: (0..n).map(|_| AtomicBool::new(false)).collect(),
            quiet_lock: Mutex::new(()),
            quiet: Condvar::new(),
            handled: Mutex::new(Vec::new()),
            drained: Mutex::new(Vec::new()),
            unsubscribed: AtomicBool::new(false),
        }
    }

    fn schedule(&self, r: usize) {
        let mut t = self.tokens.lock().unwrap();
        t[r] += 1;
        assert_eq!(t[r], 1, "runner {r} scheduled twice");
    }

    fn drain(&self) {
        let mut q = self.queue.lock().unwrap();
        self.drained.lock().unwrap().extend(q.drain(..));
    }

    /// `Sub::offer` + `after_push`: enqueue, then the first runner that
    /// schedules (or all, when none is idle).
    fn publish(&self, v: u32) {
        self.queue.lock().unwrap().push_back(v);
        for (r, state) in self.runners.iter().enumerate() {
            match state.on_push() {
                OnPush::Schedule => return self.schedule(r),
                OnPush::Nothing => {}
                OnPush::Closed => return self.drain(),
            }
        }
    }

    fn finish_close(&self, r: usize) {
        self.drain();
        self.done[r].store(true, Ordering::Release);
        let _guard = self.quiet_lock.lock().unwrap();
        self.quiet.notify_all();
    }

    /// `Runner::run` with a batch of one: false when runner `r` had no
    /// token.
    fn work_once(&self, r: usize) -> bool {
        {
            let mut t = self.tokens.lock().unwrap();
            if t[r] == 0 {
                return false;
            }
            t[r] -= 1;
        }
        let state = &self.runners[r];
        if !state.start_run() {
            self.finish_close(r);
            return true;
        }
        // `run_batch`: the closed check before each handler call.
        let more = if self.closed.load(Ordering::Acquire) {
            false
        } else {
            let (got, more) = {
                let mut q = self.queue.lock().unwrap();
                let got = q.pop_front();
                (got, !q.is_empty())
            };
            if let Some(v) = got {
                assert!(
                    !self.unsubscribed.load(Ordering::Acquire),
                    "handler called after unsubscribe returned"
                );
                self.handled.lock().unwrap().push(v);
            }
            more
        };
        match state.finish_run(more) {
            AfterRun::Idle => {}
            AfterRun::Reschedule => self.schedule(r),
            AfterRun::Closed => self.finish_close(r),
        }
        true
    }

    /// `Sub::close` + `wait_done`, then the caller's "returned" mark.
    fn unsubscribe(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (r, state) in self.runners.iter().enumerate() {
            if state.close() {
                self.finish_close(r);
            }
        }
        for done in &self.done {
            let mut guard = self.quiet_lock.lock().unwrap();
            while !done.load(Ordering::Acquire) {
                guard = self.quiet.wait(guard).unwrap();
            }
        }
        self.unsubscribed.store(true, Ordering::Release);
    }

    fn all_sorted(&self) -> Vec<u32> {
        let mut v = self.handled.lock().unwrap().clone();
        v.extend(self.drained.lock().unwrap().iter());
        v.sort_unstable();
        v
    }
}

#[test]
fn unsubscribe_waits_out_the_running_handler() {
    loom::model(|| {
        let sub = Arc::new(Sub::new(1));
        sub.publish(1);
        let worker = {
            let sub = sub.clone();
            // Keeps working while it has tokens, as the pool would.
            thread::spawn(move || while sub.work_once(0) {})
        };
        let publisher = {
            let sub = sub.clone();
            thread::spawn(move || sub.publish(2))
        };
        let unsub = {
            let sub = sub.clone();
            thread::spawn(move || sub.unsubscribe())
        };
        publisher.join().unwrap();
        // The pool outlives the subscription: it runs what is scheduled.
        worker.join().unwrap();
        while sub.work_once(0) {}
        unsub.join().unwrap();
        assert_eq!(sub.all_sorted(), [1, 2], "each message exactly once");
        assert!(sub.queue.lock().unwrap().is_empty());
    });
}

#[test]
fn concurrent_runners_lose_no_message() {
    loom::model(|| {
        let sub = Arc::new(Sub::new(2));
        let publishers: Vec<_> = [1, 2]
            .map(|v| {
                let sub = sub.clone();
                thread::spawn(move || sub.publish(v))
            })
            .into_iter()
            .collect();
        let worker = {
            let sub = sub.clone();
            thread::spawn(move || {
                sub.work_once(0);
                sub.work_once(1);
            })
        };
        for p in publishers {
            p.join().unwrap();
        }
        worker.join().unwrap();
        while sub.work_once(0) || sub.work_once(1) {}
        assert_eq!(sub.all_sorted(), [1, 2], "each message exactly once");
        assert!(sub.queue.lock().unwrap().is_empty(), "a wake-up was lost");
    });
}

#[test]
fn a_queue_group_gives_each_message_to_one_member() {
    loom::model(|| {
        let members = Arc::new([Sub::new(1), Sub::new(1)]);
        let next = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = [1, 2]
            .map(|v| {
                let (members, next) = (members.clone(), next.clone());
                thread::spawn(move || {
                    // Relaxed, as in `dispatch_groups`: only the turns'
                    // uniqueness matters, which the RMW gives.
                    let turn = next.fetch_add(1, Ordering::Relaxed);
                    members[turn % 2].publish(v);
                    turn % 2
                })
            })
            .into_iter()
            .collect();
        let unsub = {
            let members = members.clone();
            thread::spawn(move || members[0].unsubscribe())
        };
        let chosen: Vec<usize> = publishers.into_iter().map(|p| p.join().unwrap()).collect();
        // The pool (here, this thread) runs whatever is scheduled, also
        // while the unsubscribe waits for its runner.
        while members[0].work_once(0) || members[1].work_once(0) {}
        unsub.join().unwrap();
        assert_ne!(
            chosen[0], chosen[1],
            "round-robin turns go to different members"
        );
        let mut all = members[0].all_sorted();
        all.extend(members[1].all_sorted());
        all.sort_unstable();
        assert_eq!(all, [1, 2], "each message to exactly one member, once");
        assert!(members[1].drained.lock().unwrap().is_empty());
    });
}

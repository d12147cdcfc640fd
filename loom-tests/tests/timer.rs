//! The bus's one timer (`src/reliability/timer.rs`), the real code under
//! loom, on a `ManualClock`:
//!
//! - `a_clock_jump_wakes_the_waiting_timer`: a job due after a manual clock
//!   jump runs, whatever the interleaving of the jump, the schedule and the
//!   timer thread going to sleep (a lost wake-up would leave the thread
//!   waiting forever: loom never times a wait out, so it is a reported
//!   deadlock);
//! - `every_job_runs_once_due_or_at_stop`: a job waiting when `stop` races
//!   the clock jump that makes it due, and a job scheduled concurrently with
//!   `stop`, each run exactly once: due on the timer thread, at shutdown on
//!   the stopping thread, or inline in `schedule` after the stop (DESIGN
//!   invariant 5 and the retry/delay/request paths built on it);
//! - `a_cancelled_job_never_runs`: `cancel` racing the jump that makes the
//!   job due either wins (the job never runs, not even at stop) or loses
//!   (the job ran once, due).
#![cfg(topicbus_loom)]

use std::sync::Arc as StdArc;
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use topicbus::__loom::{Fire, Job, Timer};
use topicbus::{Clock, ManualClock};

/// Records each run of a job: how often it ran due and at shutdown.
#[derive(Default)]
struct Runs {
    due: AtomicUsize,
    shutdown: AtomicUsize,
    lock: Mutex<()>,
    ran: Condvar,
}

/// A job that records its run in `runs`.
fn job(runs: &Arc<Runs>) -> Job {
    let me = Arc::clone(runs);
    Box::new(move |fire| {
        match fire {
            Fire::Due => me.due.fetch_add(1, Ordering::SeqCst),
            Fire::Shutdown => me.shutdown.fetch_add(1, Ordering::SeqCst),
        };
        let _guard = me.lock.lock().unwrap();
        me.ran.notify_all();
    })
}

impl Runs {
    fn total(&self) -> usize {
        self.due.load(Ordering::SeqCst) + self.shutdown.load(Ordering::SeqCst)
    }

    /// Waits until the job ran (a lost run is a deadlock loom reports).
    fn wait(&self) {
        let mut guard = self.lock.lock().unwrap();
        while self.total() == 0 {
            guard = self.ran.wait(guard).unwrap();
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// A thread that moves `clock` on by a second.
fn jump(clock: &StdArc<ManualClock>) -> thread::JoinHandle<()> {
    let clock = StdArc::clone(clock);
    thread::spawn(move || clock.advance(SECOND))
}

#[test]
fn a_clock_jump_wakes_the_waiting_timer() {
    loom::model(|| {
        let clock = ManualClock::shared();
        let timer = Timer::new(clock.clone());
        let runs = Arc::new(Runs::default());
        timer.schedule(clock.now() + SECOND, job(&runs));
        let jumper = jump(&clock);
        runs.wait();
        jumper.join().unwrap();
        timer.stop();
        assert_eq!(runs.due.load(Ordering::SeqCst), 1);
        assert_eq!(runs.shutdown.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn every_job_runs_once_due_or_at_stop() {
    loom::model(|| {
        let clock = ManualClock::shared();
        let timer = Arc::new(Timer::new(clock.clone()));
        let (waiting, late) = (Arc::new(Runs::default()), Arc::new(Runs::default()));
        timer.schedule(clock.now() + SECOND, job(&waiting));
        let jumper = jump(&clock);
        let scheduler = {
            let (timer, late, clock) =
                (Arc::clone(&timer), Arc::clone(&late), StdArc::clone(&clock));
            thread::spawn(move || {
                timer.schedule(clock.now(), job(&late));
            })
        };
        timer.stop();
        jumper.join().unwrap();
        scheduler.join().unwrap();
        assert_eq!(waiting.total(), 1, "the waiting job runs exactly once");
        assert_eq!(late.total(), 1, "the racing job runs exactly once");
        assert_eq!(timer.pending(), 0);
    });
}

#[test]
fn a_cancelled_job_never_runs() {
    loom::model(|| {
        let clock = ManualClock::shared();
        let timer = Timer::new(clock.clone());
        let runs = Arc::new(Runs::default());
        let key = timer.schedule(clock.now() + SECOND, job(&runs));
        let jumper = jump(&clock);
        timer.cancel(key);
        jumper.join().unwrap();
        timer.stop();
        // Either the cancel won (never ran, not even at stop) or the job had
        // fallen due and run first; never twice, never at shutdown.
        assert!(runs.due.load(Ordering::SeqCst) <= 1);
        assert_eq!(runs.shutdown.load(Ordering::SeqCst), 0);
    });
}

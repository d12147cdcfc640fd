//! The bus's one timer (DESIGN invariant 5: workers never sleep for a
//! message).
//!
//! One thread, started on first use, keeps a binary heap of jobs ordered by
//! due time (then by scheduling order) and runs each when the bus's
//! [`Clock`] reaches it: a retry re-enqueues its message, a delayed message
//! is published, a request times out, a circuit breaker's open wait ends.
//! A job is a short closure; it runs on the timer thread, outside the
//! timer's lock, with its panics caught and counted.
//!
//! The thread waits on a condition variable until the earliest due time (a
//! real timeout) or until woken: by a job scheduled earlier than the
//! earliest, by a [`ManualClock`](super::ManualClock) jump (through
//! [`Clock::on_jump`]), or by [`Timer::stop`].
//!
//! [`Timer::stop`] ends the thread and runs every job still waiting with
//! [`Fire::Shutdown`], at once, on the stopping thread; a job scheduled
//! after that runs the same way inside [`Timer::schedule`]. So no job is
//! ever lost: each runs exactly once, either due or at shutdown.
//!
//! Cancelled jobs are dropped without running; their heap slots are
//! reclaimed when they reach the top, or all at once when they make up more
//! than half the heap.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use crate::sync::{thread, Condvar, Mutex};

use super::Clock;

/// Why a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    /// Its time came.
    Due,
    /// The timer stopped first (the bus is shutting down).
    Shutdown,
}

/// A timer job.
pub type Job = Box<dyn FnOnce(Fire) + Send>;

/// Identifies a scheduled job, for [`Timer::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey(u64);

struct Entry {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap's top is the earliest (then the first scheduled).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    /// Sequence numbers of the jobs in `heap` not cancelled.
    live: HashSet<u64>,
    next_seq: u64,
    started: bool,
    stopped: bool,
    /// Set while the thread waits, so `schedule` knows to notify.
    waiting_until: Option<Instant>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    wake: Condvar,
    fired: crate::sync::atomic::AtomicU64,
    panics: crate::sync::atomic::AtomicU64,
    /// The largest delay seen between a job's due time and its run, in ns.
    max_lag_ns: crate::sync::atomic::AtomicU64,
}

/// Wakes the timer thread when a manual clock jumps.
struct Jump(Weak<Shared>);

impl Wake for Jump {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.0.upgrade() {
            let _guard = shared.state.lock();
            shared.wake.notify_all();
        }
    }
}

/// The timer. See the module docs.
pub struct Timer {
    shared: Arc<Shared>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// Counters of a timer.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimerStats {
    pub(crate) pending: usize,
    pub(crate) fired: u64,
    pub(crate) panics: u64,
    pub(crate) max_lag: Duration,
}

use crate::sync::atomic::Ordering;

impl Timer {
    /// A timer on `clock`; its thread starts with the first job.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                fired: Default::default(),
                panics: Default::default(),
                max_lag_ns: Default::default(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Runs `job` when the clock reaches `at` (at once, on this thread, with
    /// [`Fire::Shutdown`], when the timer has stopped).
    pub fn schedule(&self, at: Instant, job: Job) -> TimerKey {
        let mut st = self.shared.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.stopped {
            drop(st);
            run(&self.shared, job, Fire::Shutdown);
            return TimerKey(seq);
        }
        if !st.started {
            st.started = true;
            self.start();
        }
        let earlier = st.waiting_until.is_none_or(|w| at < w);
        st.heap.push(Entry { at, seq, job });
        st.live.insert(seq);
        if earlier {
            self.shared.wake.notify_one();
        }
        TimerKey(seq)
    }

    /// Runs `job` after `delay` of the timer's clock.
    pub fn schedule_in(&self, delay: Duration, job: Job) -> TimerKey {
        let now = self.shared.clock.now();
        let at = now
            .checked_add(delay)
            .unwrap_or(now + Duration::from_secs(31_536_000));
        self.schedule(at, job)
    }

    /// Drops `key`'s job without running it, if it has not run yet.
    pub fn cancel(&self, key: TimerKey) {
        let mut st = self.shared.state.lock();
        if !st.live.remove(&key.0) {
            return;
        }
        if st.heap.len() > 2 * st.live.len() + 64 {
            // Mostly cancelled: rebuild the heap without them.
            let State { heap, live, .. } = &mut *st;
            let entries = std::mem::take(heap).into_vec();
            *heap = entries
                .into_iter()
                .filter(|e| live.contains(&e.seq))
                .collect();
        }
    }

    /// How late the most overdue waiting job is (zero when none is due):
    /// a timer thread that falls behind shows here.
    pub fn lag(&self) -> Duration {
        let now = self.shared.clock.now();
        let st = self.shared.state.lock();
        // The heap's top is the earliest; only when it was cancelled does
        // the earliest live job need a scan.
        let earliest = match st.heap.peek() {
            Some(e) if st.live.contains(&e.seq) => Some(e.at),
            Some(_) => st
                .heap
                .iter()
                .filter(|e| st.live.contains(&e.seq))
                .map(|e| e.at)
                .min(),
            None => None,
        };
        earliest.map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }

    /// Jobs waiting.
    pub fn pending(&self) -> usize {
        self.shared.state.lock().live.len()
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> TimerStats {
        TimerStats {
            pending: self.pending(),
            fired: self.shared.fired.load(Ordering::Relaxed),
            panics: self.shared.panics.load(Ordering::Relaxed),
            max_lag: Duration::from_nanos(self.shared.max_lag_ns.load(Ordering::Relaxed)),
        }
    }

    /// Stops the thread and runs every waiting job with
    /// [`Fire::Shutdown`], here, in due order. Idempotent.
    pub fn stop(&self) {
        let entries = {
            let mut st = self.shared.state.lock();
            if st.stopped {
                return;
            }
            st.stopped = true;
            self.shared.wake.notify_all();
            let live = std::mem::take(&mut st.live);
            let mut heap = std::mem::take(&mut st.heap);
            let mut due = Vec::with_capacity(heap.len());
            while let Some(e) = heap.pop() {
                if live.contains(&e.seq) {
                    due.push(e.job);
                }
            }
            due
        };
        if let Some(t) = self.thread.lock().take() {
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
        for job in entries {
            run(&self.shared, job, Fire::Shutdown);
        }
    }

    fn start(&self) {
        let shared = Arc::clone(&self.shared);
        let jump = Waker::from(Arc::new(Jump(Arc::downgrade(&self.shared))));
        self.shared.clock.on_jump(jump);
        let spawned = thread::Builder::new()
            .name("topicbus-timer".into())
            .spawn(move || run_thread(&shared));
        match spawned {
            Ok(handle) => *self.thread.lock() = Some(handle),
            Err(_) => {
                // No thread: `started` stays set and jobs wait until `stop`
                // runs them. Better than panicking in `schedule`; reported
                // through the pending count.
            }
        }
    }
}

fn run(shared: &Shared, job: Job, fire: Fire) {
    shared.fired.fetch_add(1, Ordering::Relaxed);
    if catch_unwind(AssertUnwindSafe(|| job(fire))).is_err() {
        shared.panics.fetch_add(1, Ordering::Relaxed);
    }
}

fn run_thread(shared: &Shared) {
    let mut st = shared.state.lock();
    loop {
        if st.stopped {
            return;
        }
        let now = shared.clock.now();
        let mut due = Vec::new();
        while st.heap.peek().is_some_and(|e| e.at <= now) {
            if let Some(e) = st.heap.pop() {
                if st.live.remove(&e.seq) {
                    let lag =
                        u64::try_from(now.duration_since(e.at).as_nanos()).unwrap_or(u64::MAX);
                    shared.max_lag_ns.fetch_max(lag, Ordering::Relaxed);
                    due.push(e.job);
                }
            }
        }
        if !due.is_empty() {
            drop(st);
            for job in due {
                run(shared, job, Fire::Due);
            }
            st = shared.state.lock();
            continue;
        }
        let next = st.heap.peek().map(|e| e.at);
        st.waiting_until = next;
        // A real wait of the clock's remaining time: exact for the system
        // clock; for a manual one merely a re-check, since its jumps wake us.
        let real = next.map_or(Duration::from_secs(3600), |at| at - now);
        let deadline = Instant::now() + real.min(Duration::from_secs(3600));
        let (guard, _) = shared.wake.wait_until(st, deadline);
        st = guard;
        st.waiting_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliability::ManualClock;
    use std::sync::mpsc;

    fn manual() -> (Arc<ManualClock>, Timer) {
        let clock = ManualClock::shared();
        let timer = Timer::new(clock.clone());
        (clock, timer)
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn jobs_fire_in_due_order_when_the_manual_clock_reaches_them() {
        let (clock, timer) = manual();
        let (tx, rx) = mpsc::channel();
        for (i, ms) in [(0, 30u64), (1, 10), (2, 20), (3, 10)] {
            let tx = tx.clone();
            timer.schedule_in(
                Duration::from_millis(ms),
                Box::new(move |f| tx.send((i, f)).unwrap()),
            );
        }
        assert_eq!(timer.pending(), 4);
        assert!(
            rx.try_recv().is_err(),
            "nothing is due before the clock moves"
        );
        clock.advance(Duration::from_millis(10));
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), (1, Fire::Due));
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), (3, Fire::Due));
        clock.advance(Duration::from_millis(15));
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), (2, Fire::Due));
        clock.advance(Duration::from_millis(5));
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), (0, Fire::Due));
        timer.stop();
        assert!(rx.try_recv().is_err());
        assert_eq!(timer.stats().fired, 4);
    }

    #[test]
    fn stop_runs_waiting_jobs_as_shutdown_and_later_ones_at_once() {
        let (_clock, timer) = manual();
        let (tx, rx) = mpsc::channel();
        let t1 = tx.clone();
        timer.schedule_in(
            Duration::from_secs(60),
            Box::new(move |f| t1.send(f).unwrap()),
        );
        let t2 = tx.clone();
        let key = timer.schedule_in(
            Duration::from_secs(1),
            Box::new(move |f| t2.send(f).unwrap()),
        );
        timer.cancel(key);
        timer.stop();
        assert_eq!(rx.try_recv().unwrap(), Fire::Shutdown);
        assert!(rx.try_recv().is_err(), "the cancelled job never runs");
        timer.schedule_in(Duration::ZERO, Box::new(move |f| tx.send(f).unwrap()));
        assert_eq!(rx.try_recv().unwrap(), Fire::Shutdown);
    }

    #[test]
    fn a_panicking_job_is_counted_and_the_timer_goes_on() {
        let (clock, timer) = manual();
        let (tx, rx) = mpsc::channel();
        timer.schedule_in(Duration::from_millis(1), Box::new(|_| panic!("job bug")));
        timer.schedule_in(
            Duration::from_millis(2),
            Box::new(move |f| tx.send(f).unwrap()),
        );
        clock.advance(Duration::from_millis(2));
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), Fire::Due);
        timer.stop();
        assert_eq!(timer.stats().panics, 1);
    }

    #[test]
    fn cancelled_jobs_are_compacted_away() {
        let (_clock, timer) = manual();
        // All in the future (the manual clock stays put): none can fire
        // before it is cancelled. (Job 0 at +0 s once did, under ASan.)
        let keys: Vec<_> = (1..=200)
            .map(|i| timer.schedule_in(Duration::from_secs(i), Box::new(|_| ())))
            .collect();
        for k in &keys[..150] {
            timer.cancel(*k);
        }
        assert_eq!(timer.pending(), 50);
        assert!(timer.shared.state.lock().heap.len() < 200, "compacted");
        timer.stop();
        assert_eq!(timer.stats().fired, 50);
    }

    #[test]
    fn the_system_clock_fires_by_real_time() {
        let timer = Timer::new(Arc::new(crate::reliability::SystemClock));
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        timer.schedule_in(
            Duration::from_millis(5),
            Box::new(move |f| tx.send(f).unwrap()),
        );
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), Fire::Due);
        assert!(start.elapsed() >= Duration::from_millis(5));
        timer.stop();
    }
}

//! The fixed worker pool (SPEC R11).
//!
//! A fixed set of named threads takes ready tasks (mailboxes) off one
//! unbounded MPMC run queue. A task's [`Task::run`] drains a batch and says
//! whether it must be scheduled again; the worker then pushes it to the back
//! of the queue, so a busy mailbox cannot monopolise a worker.
//!
//! An idle worker spins briefly (`SPIN` checks; waking a parked thread costs
//! about 28 µs on the target machines, a spin a few hundred ns), then parks on
//! a condition variable. [`Pool::schedule`] pushes, then wakes one parked
//! worker if there is one. The parking protocol is the lanes' one: a worker
//! registers in `sleepers` and re-checks the queue under `lock` before it
//! waits; the scheduler notifies under `lock` when it sees a sleeper; `SeqCst`
//! fences pair the registration with the push so one side always sees the
//! other. The `pool` loom model checks the notification protocol.
//!
//! A task that panics never takes its worker down: the panic is caught,
//! counted ([`Pool::panics`]) and the task is not rescheduled (tasks catch
//! their users' panics themselves; this is the last line). Shutdown is
//! idempotent: it lets the workers finish what is queued, wakes them all and
//! joins every thread. It must not be called from inside a task (a worker
//! cannot join itself), and it returns only once no task reschedules itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use std::cell::Cell;

use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sync::{thread, Arc, Condvar, Mutex, Padded, UnboundedQueue};

/// A function run first on each worker thread, given the worker's index.
pub type StartHook = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

/// Empty-queue checks a worker spins through before it parks. (Under loom
/// workers do not spin: spinning only multiplies the interleavings.)
#[cfg(not(topicbus_loom))]
pub(crate) const SPIN: u32 = 256;

/// A unit of work the pool runs: in the bus, one subscription's mailbox.
pub trait Task: Send + Sync + 'static {
    /// Runs one batch. Returns true when the task must be scheduled again.
    fn run(&self) -> bool;
}

/// A scheduled task.
pub type TaskRef = std::sync::Arc<dyn Task>;

/// The pool's shared state.
struct Shared {
    /// Task handles are plain `std` `Arc`s: data, not protocol (and loom's
    /// `Arc` cannot hold a trait object on stable).
    queue: UnboundedQueue<TaskRef>,
    /// Workers parked (or about to park).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stopping: AtomicBool,
    panics: AtomicU64,
    /// Workers not yet exited; `exited` is notified (under `lock`) as each
    /// leaves.
    live: AtomicUsize,
    exited: Condvar,
    /// What each worker is doing (`RUNNING`, `IDLE`, `PARKED`, `EXITED`),
    /// each on its own cache lines: a worker writes only its own, and only
    /// when it changes, so reading them (for metrics) costs the workers
    /// nothing.
    states: Box<[Padded<AtomicU8>]>,
}

/// Worker states, see [`Shared::states`].
const RUNNING: u8 = 0;
const IDLE: u8 = 1;
const PARKED: u8 = 2;
const EXITED: u8 = 3;

/// How many of a bus's worker threads are in each state (see
/// [`Metrics::workers`](crate::Metrics::workers)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::Bus;
/// let bus = Bus::<u32>::builder().workers(3).build()?;
/// let w = bus.metrics().workers;
/// assert_eq!(w.running + w.idle + w.parked + w.exited, 3);
/// bus.shutdown(Duration::from_secs(10))?;
/// assert_eq!(bus.metrics().workers.exited, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStates {
    /// Running a task (a subscription's batch).
    pub running: usize,
    /// Out of work, spinning briefly before parking.
    pub idle: usize,
    /// Parked until work is scheduled.
    pub parked: usize,
    /// Exited (after shutdown).
    pub exited: usize,
}

impl WorkerStates {
    /// Each state's name (as exporters label it) and count.
    #[cfg(any(feature = "prometheus", feature = "metrics"))]
    pub(crate) fn named(&self) -> [(&'static str, usize); 4] {
        [
            ("running", self.running),
            ("idle", self.idle),
            ("parked", self.parked),
            ("exited", self.exited),
        ]
    }
}

thread_local! {
    /// This thread's index in its pool, when it is a pool worker.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's index in its pool, when it is a pool worker.
#[inline]
pub fn current_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Tells whether a pool's run queue is empty; see [`Pool::probe`].
#[derive(Clone)]
pub struct QueueProbe(Arc<Shared>);

impl QueueProbe {
    /// True when no task waits in the run queue (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.0.queue.is_empty()
    }
}

impl std::fmt::Debug for QueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProbe").finish_non_exhaustive()
    }
}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("sleepers", &self.shared.sleepers.load(Ordering::Relaxed))
            .field("panics", &self.panics())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `workers` threads named `topicbus-worker-<n>`; `on_start(n)`,
    /// when given, runs first on worker `n`'s thread (to pin it to a core,
    /// register it with a profiler, …).
    ///
    /// # Errors
    ///
    /// The OS error when a thread cannot be spawned; the threads already
    /// started are stopped and joined first.
    pub fn new(workers: usize, on_start: Option<StartHook>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: UnboundedQueue::new(),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            panics: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            exited: Condvar::new(),
            states: (0..workers).map(|_| Padded(AtomicU8::new(IDLE))).collect(),
        });
        let pool = Pool {
            shared,
            workers: Mutex::new(Vec::with_capacity(workers)),
        };
        for n in 0..workers {
            let shared = Arc::clone(&pool.shared);
            let on_start = on_start.clone();
            pool.shared.live.fetch_add(1, Ordering::SeqCst);
            let spawned = thread::Builder::new()
                .name(format!("topicbus-worker-{n}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(n)));
                    if let Some(hook) = on_start {
                        // A panicking hook is counted like a panicking task;
                        // the worker still serves.
                        if catch_unwind(AssertUnwindSafe(|| hook(n))).is_err() {
                            shared.panics.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    work(&shared, n);
                    shared.states[n].0.store(EXITED, Ordering::Relaxed);
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                    let _guard = shared.lock.lock();
                    shared.exited.notify_all();
                });
            match spawned {
                Ok(handle) => pool.workers.lock().push(handle),
                Err(e) => {
                    pool.shared.live.fetch_sub(1, Ordering::SeqCst);
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// How many workers are running, idle, parked or exited (a snapshot;
    /// each worker's state is read once).
    pub fn worker_states(&self) -> WorkerStates {
        let mut s = WorkerStates::default();
        for state in self.shared.states.iter() {
            match state.0.load(Ordering::Relaxed) {
                RUNNING => s.running += 1,
                IDLE => s.idle += 1,
                PARKED => s.parked += 1,
                _ => s.exited += 1,
            }
        }
        s
    }

    /// A handle that tells whether the run queue is empty (for a task that
    /// considers lingering on its own work).
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(Arc::clone(&self.shared))
    }

    /// Puts `task` on the run queue and wakes a parked worker if any.
    pub fn schedule(&self, task: TaskRef) {
        schedule(&self.shared, task);
    }

    /// Tasks that panicked (caught; their workers lived on).
    pub fn panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
    }

    /// Lets the workers finish the queued tasks, then stops and joins them.
    /// Idempotent, also run on drop; every caller returns only once the
    /// threads are joined (or were detached by a timed-out
    /// [`shutdown_until`](Self::shutdown_until)).
    pub fn shutdown(&self) {
        self.stop();
        // Join while holding the list, so a concurrent `shutdown` returns only
        // once the threads are joined too (workers never take this lock).
        let mut workers = self.workers.lock();
        for handle in workers.drain(..) {
            // A worker never panics (tasks are run under catch_unwind).
            let _ = handle.join();
        }
    }

    /// As [`shutdown`](Self::shutdown), but waits for the workers only until
    /// `deadline`. True when every worker exited and was joined; false when
    /// some were still busy (a task that does not return): they are
    /// detached and exit on their own once their task returns.
    pub fn shutdown_until(&self, deadline: Instant) -> bool {
        self.stop();
        let mut workers = self.workers.lock();
        let all_exited = {
            let mut guard = self.shared.lock.lock();
            loop {
                if self.shared.live.load(Ordering::SeqCst) == 0 {
                    break true;
                }
                let (g, timed_out) = self.shared.exited.wait_until(guard, deadline);
                guard = g;
                if timed_out {
                    break self.shared.live.load(Ordering::SeqCst) == 0;
                }
            }
        };
        if all_exited {
            for handle in workers.drain(..) {
                let _ = handle.join();
            }
        } else {
            // Dropping a join handle detaches its thread.
            workers.clear();
        }
        all_exited
    }

    /// Tells the workers to stop once the queue is empty, and wakes them.
    fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _guard = self.shared.lock.lock();
        self.shared.wake.notify_all();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn schedule(shared: &Shared, task: TaskRef) {
    shared.queue.push(task);
    // Pairs with the fence in `park`: our push or their registration is
    // seen by the other side.
    fence(Ordering::SeqCst);
    if shared.sleepers.load(Ordering::Relaxed) > 0 {
        let _guard = shared.lock.lock();
        shared.wake.notify_one();
    }
}

/// A worker's loop: run, spin, park; exit once stopping and drained.
fn work(shared: &Shared, n: usize) {
    let state = &shared.states[n].0;
    let mut now = IDLE;
    let mut set = |to: u8| {
        if now != to {
            now = to;
            state.store(to, Ordering::Relaxed);
        }
    };
    loop {
        if let Some(task) = shared.queue.pop() {
            set(RUNNING);
            match catch_unwind(AssertUnwindSafe(|| task.run())) {
                Ok(true) => schedule(shared, task),
                Ok(false) => {}
                Err(_) => {
                    shared.panics.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        set(IDLE);
        if spin_for_work(shared) {
            continue;
        }
        set(PARKED);
        if !park(shared) {
            return;
        }
    }
}

/// Spins briefly; true when work appeared.
#[cfg(not(topicbus_loom))]
fn spin_for_work(shared: &Shared) -> bool {
    for _ in 0..SPIN {
        std::hint::spin_loop();
        if !shared.queue.is_empty() {
            return true;
        }
    }
    false
}

/// No spinning under loom.
#[cfg(topicbus_loom)]
fn spin_for_work(_: &Shared) -> bool {
    false
}

/// Parks until work may be there. False when the pool is stopping and the
/// queue is empty: the worker exits.
fn park(shared: &Shared) -> bool {
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    // Pairs with the fence in `schedule`.
    fence(Ordering::SeqCst);
    let mut guard = shared.lock.lock();
    let keep_going = loop {
        if !shared.queue.is_empty() {
            break true;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break false;
        }
        // Wake-ups come from `schedule` and `shutdown`; the long timeout is
        // only a safety net, never the mechanism.
        let (g, _) = shared
            .wake
            .wait_until(guard, Instant::now() + Duration::from_secs(1));
        guard = g;
    };
    drop(guard);
    shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    keep_going
}

#[cfg(all(test, not(topicbus_loom)))]
mod tests;

use super::*;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc as StdArc;

/// Waits (bounded, no sleeping) until `cond` holds.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

struct Count(StdAtomicUsize);

impl Task for Count {
    fn run(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }
}

#[test]
fn every_scheduled_task_runs_once() {
    let pool = StdArc::new(Pool::new(2, None).unwrap());
    let count = StdArc::new(Count(StdAtomicUsize::new(0)));
    let schedulers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, count) = (pool.clone(), count.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    pool.schedule(count.clone());
                }
            })
        })
        .collect();
    for s in schedulers {
        s.join().unwrap();
    }
    wait_for("10,000 runs", || count.0.load(Ordering::SeqCst) == 10_000);
    pool.shutdown();
    assert_eq!(count.0.load(Ordering::SeqCst), 10_000);
}

struct Batches {
    runs: StdAtomicUsize,
    wanted: usize,
}

impl Task for Batches {
    fn run(&self) -> bool {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1 < self.wanted
    }
}

#[test]
fn a_task_that_asks_is_rescheduled_until_done() {
    let pool = Pool::new(2, None).unwrap();
    let task = StdArc::new(Batches {
        runs: StdAtomicUsize::new(0),
        wanted: 100,
    });
    pool.schedule(task.clone());
    pool.shutdown(); // drains: returns once the task stops rescheduling
    assert_eq!(task.runs.load(Ordering::SeqCst), 100);
}

struct Boom;

impl Task for Boom {
    fn run(&self) -> bool {
        panic!("handler bug");
    }
}

#[test]
fn a_panicking_task_does_not_kill_its_worker() {
    let pool = Pool::new(1, None).unwrap();
    // (The two panic messages in the test output are expected.)
    pool.schedule(StdArc::new(Boom));
    pool.schedule(StdArc::new(Boom));
    let count = StdArc::new(Count(StdAtomicUsize::new(0)));
    pool.schedule(count.clone());
    wait_for("the task after the panics", || {
        count.0.load(Ordering::SeqCst) == 1
    });
    assert_eq!(pool.panics(), 2);
    pool.shutdown();
}

#[test]
fn shutdown_drains_the_queue_and_is_idempotent() {
    let pool = Pool::new(2, None).unwrap();
    let count = StdArc::new(Count(StdAtomicUsize::new(0)));
    for _ in 0..1_000 {
        pool.schedule(count.clone());
    }
    pool.shutdown();
    assert_eq!(count.0.load(Ordering::SeqCst), 1_000);
    pool.shutdown();
    drop(pool); // drop shuts down again: nothing left to join
}

struct Named(std::sync::Mutex<Vec<String>>);

impl Task for Named {
    fn run(&self) -> bool {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.0.lock().unwrap().push(name);
        false
    }
}

#[test]
fn workers_are_named_and_joined() {
    let pool = Pool::new(3, None).unwrap();
    let named = StdArc::new(Named(std::sync::Mutex::new(Vec::new())));
    for _ in 0..50 {
        pool.schedule(named.clone());
    }
    pool.shutdown();
    let names = named.0.lock().unwrap();
    assert_eq!(names.len(), 50);
    assert!(
        names.iter().all(|n| n.starts_with("topicbus-worker-")),
        "{names:?}"
    );
    // Joined: the pool holds no thread handles any more.
    assert!(pool.workers.lock().is_empty());
}

/// A task that does real work (a few microseconds), so draining a queue of
/// them takes long enough to observe who waits for it.
struct Busy(StdAtomicUsize);

impl Task for Busy {
    fn run(&self) -> bool {
        let mut x = 1u64;
        for i in 0..20_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }
}

#[test]
fn concurrent_shutdowns_both_wait_for_the_joins() {
    let pool = StdArc::new(Pool::new(2, None).unwrap());
    let count = StdArc::new(Busy(StdAtomicUsize::new(0)));
    for _ in 0..2_000 {
        pool.schedule(count.clone());
    }
    let stoppers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, count) = (pool.clone(), count.clone());
            std::thread::spawn(move || {
                pool.shutdown();
                // Whoever returns, returns after the queue was drained.
                count.0.load(Ordering::SeqCst)
            })
        })
        .collect();
    for s in stoppers {
        assert_eq!(s.join().unwrap(), 2_000);
    }
}

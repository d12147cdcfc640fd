//! Measurement: the clock, the open-loop pacer, per-thread latency
//! histograms, the hiccup meter, CPU time and memory.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Highest latency a histogram tracks (BENCHMARKING.md: 1 ns .. 60 s).
const MAX_NS: u64 = 60_000_000_000;

/// A histogram of nanoseconds, 3 significant digits, 1 ns .. 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Records `ns` (clamped into the tracked range: a value is never lost).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_NS));
}

/// Nanoseconds since the process's first call: one `Instant` read. Every
/// stamp in the generator goes through here so they are comparable.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A source of nanosecond time, so the pacer can be driven by a test.
pub trait Clock {
    /// The current time in nanoseconds.
    fn now(&self) -> u64;
}

/// The real clock ([`now_ns`]).
#[derive(Debug, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> u64 {
        now_ns()
    }
}

/// The open-loop schedule (wrk2's model): message `i` is due at
/// `start + i / rate`, computed from `i` (never accumulated, so it never
/// drifts), whatever happened to earlier messages.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: u64,
    /// Nanoseconds between messages, as a fraction: `i * num / den`.
    num: u128,
    den: u128,
}

impl Pacer {
    /// A schedule of `rate` messages per second starting at `start` (ns).
    pub fn new(start: u64, rate: f64) -> Self {
        // 1e9 / rate as a fraction with a millionth of a nanosecond
        // resolution: exact for every integral rate up to 1e9.
        let den = (rate * 1_000.0).round().max(1.0) as u128;
        Pacer {
            start,
            num: 1_000_000_000_000,
            den,
        }
    }

    /// When message `i` is due.
    pub fn intended(&self, i: u64) -> u64 {
        self.start + u64::try_from(u128::from(i) * self.num / self.den).unwrap_or(u64::MAX)
    }

    /// Spins until message `i` is due on `clock`, then returns its intended
    /// time. Spinning, not sleeping: a sleep overshoots by tens of
    /// microseconds, which would show up as the bus's latency.
    pub fn wait(&self, i: u64, clock: &impl Clock) -> u64 {
        let due = self.intended(i);
        while clock.now() < due {
            std::hint::spin_loop();
        }
        due
    }
}

/// The histograms one recording thread keeps.
#[derive(Debug, Clone)]
pub struct Hists {
    /// Handler start minus intended send time (coordinated-omission
    /// corrected).
    pub corrected: Histogram<u64>,
    /// Handler start minus actual send time (naive).
    pub naive: Histogram<u64>,
    /// Naive latency of deliveries enqueued while this worker was still busy
    /// with earlier work (it never went idle: no wake-up in the figure).
    pub awake: Histogram<u64>,
    /// Naive latency of deliveries enqueued after this worker had gone idle
    /// (it had to notice, by spinning or by being woken from a park).
    pub woken: Histogram<u64>,
    /// Deliveries recorded.
    pub delivered: u64,
    /// Deliveries a baseline lost (tokio broadcast's `Lagged`).
    pub lost: u64,
}

impl Default for Hists {
    fn default() -> Self {
        Hists {
            corrected: histogram(),
            naive: histogram(),
            awake: histogram(),
            woken: histogram(),
            delivered: 0,
            lost: 0,
        }
    }
}

impl Hists {
    /// Counts one delivery that started at `now` and records its corrected
    /// and naive latency; returns the naive one.
    fn timed(&mut self, stamp: &Stamp, now: u64) -> u64 {
        let naive = now.saturating_sub(stamp.sent);
        record(&mut self.corrected, now.saturating_sub(stamp.intended));
        record(&mut self.naive, naive);
        self.delivered += 1;
        naive
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Hists) {
        // Same bounds on both sides: `add` cannot fail.
        self.corrected.add(&other.corrected).expect("same bounds");
        self.naive.add(&other.naive).expect("same bounds");
        self.awake.add(&other.awake).expect("same bounds");
        self.woken.add(&other.woken).expect("same bounds");
        self.delivered += other.delivered;
        self.lost += other.lost;
    }
}

/// What a publisher stamps into every message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    /// Intended send time (ns, [`now_ns`] scale).
    pub intended: u64,
    /// Actual send time, read just before the publish call.
    pub sent: u64,
}

/// Slots in a recorder: more than the threads that record in one step, so
/// each recording thread has its own (uncontended) slot.
const SLOTS: usize = 32;

#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(Mutex<Option<Box<Hists>>>);

thread_local! {
    /// This thread's slot index.
    static SLOT: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS
    };
    /// When this thread last started a delivery ([`now_ns`]).
    static LAST_START: Cell<u64> = const { Cell::new(0) };
}

/// Latency recording for one measurement: one histogram set per recording
/// thread (a slot taken by the thread's index, so its lock is never
/// contended: no shared atomic per record beyond the thread's own lock),
/// merged when the step ends.
#[derive(Debug)]
pub struct Recorder {
    slots: Box<[Slot]>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl Recorder {
    /// A new recorder, shared by the step's threads.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    fn with_slot(&self, f: impl FnOnce(&mut Hists)) {
        let slot = SLOT.with(|s| *s);
        let mut guard = self.slots[slot].0.lock();
        f(guard.get_or_insert_with(Box::default));
    }

    /// Records one delivery of a message stamped `stamp` that started at
    /// `now`.
    pub fn delivered_at(&self, stamp: &Stamp, now: u64) {
        let last = LAST_START.with(|l| l.replace(now));
        self.with_slot(|h| {
            let naive = h.timed(stamp, now);
            if stamp.sent <= last {
                record(&mut h.awake, naive);
            } else {
                record(&mut h.woken, naive);
            }
        });
    }

    /// Records one delivery's corrected and naive latency only (a second
    /// view of a delivery [`Recorder::delivered_at`] already classified).
    pub fn timed_only(&self, stamp: &Stamp, now: u64) {
        self.with_slot(|h| {
            h.timed(stamp, now);
        });
    }

    /// Counts one delivery without timing it (closed loop).
    pub fn count(&self) {
        self.with_slot(|h| h.delivered += 1);
    }

    /// Counts `n` deliveries lost by the system under test.
    pub fn lost(&self, n: u64) {
        self.with_slot(|h| h.lost += n);
    }

    /// Deliveries recorded plus lost so far (locks every slot: for waiting
    /// at the end of a step, not for the hot path).
    pub fn settled(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.lock().as_ref().map_or(0, |h| h.delivered + h.lost))
            .sum()
    }

    /// Every slot merged.
    pub fn merged(&self) -> Hists {
        let mut all = Hists::default();
        for s in self.slots.iter() {
            if let Some(h) = s.0.lock().as_ref() {
                all.merge(h);
            }
        }
        all
    }
}

/// Calls `done` every 500 µs until it returns true (then true) or `timeout`
/// passes (then false). For waiting at the end of a step, not on a hot path.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Wall-clock pacing for background threads (a churner, a sampler): tick
/// `n` is due `n` intervals after the start; a late tick is not made up by
/// sleeping less than zero, the next one catches up.
#[derive(Debug)]
pub struct Ticker {
    started: Instant,
    interval: Duration,
    ticks: u32,
}

impl Ticker {
    /// Starts counting now.
    pub fn new(interval: Duration) -> Self {
        Ticker {
            started: Instant::now(),
            interval,
            ticks: 0,
        }
    }

    /// Sleeps until the next tick is due.
    pub fn wait(&mut self) {
        self.ticks += 1;
        if let Some(wait) = (self.interval * self.ticks).checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A jHiccup-style meter: a thread that sleeps 1 ms at a time and records
/// how late it woke. What it sees is what the platform (scheduler, other
/// tenants, the hypervisor) did to every thread, the bus's included.
#[derive(Debug)]
pub struct HiccupMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Histogram<u64>>>,
}

/// The meter's sleep.
const HICCUP_TICK: Duration = Duration::from_millis(1);

impl HiccupMeter {
    /// Starts the meter.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("hiccup-meter".into())
            .spawn(move || {
                let mut h = histogram();
                let tick = HICCUP_TICK.as_nanos() as u64;
                while !flag.load(Ordering::Relaxed) {
                    let before = now_ns();
                    std::thread::sleep(HICCUP_TICK);
                    record(&mut h, (now_ns() - before).saturating_sub(tick));
                }
                h
            })
            .expect("spawn the hiccup meter");
        HiccupMeter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the meter; the histogram of wake-up delays.
    pub fn finish(mut self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_else(histogram)
    }
}

impl Drop for HiccupMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// User plus system CPU time of the whole process, in nanoseconds.
pub fn cpu_ns() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` writes a `rusage` into the pointer it is given,
    // which points to a properly sized and aligned, writable value.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: `getrusage` returned 0, so it initialised the value (and the
    // zeroed bytes are a valid `rusage` anyway: it is plain integers).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident set size of the process in bytes (`VmRSS`), 0 if unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Pins the calling thread to `cpu` (modulo the cores there are); false if
/// the OS refused.
pub fn pin_to(cpu: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed `cpu_set_t` is the empty set; CPU_SET writes inside
    // it for an index below CPU_SETSIZE (cpu % cores is far below 1024);
    // sched_setaffinity(0, …) reads the set for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell as StdCell;

    /// A clock a test moves by hand; every read advances it by `step`.
    struct ManualClock {
        now: StdCell<u64>,
        step: u64,
        reads: StdCell<u64>,
    }

    impl Clock for ManualClock {
        fn now(&self) -> u64 {
            let t = self.now.get();
            self.now.set(t + self.step);
            self.reads.set(self.reads.get() + 1);
            t
        }
    }

    #[test]
    fn pacer_schedule_is_exact_and_never_drifts() {
        let p = Pacer::new(1_000, 3_000_000.0); // 333.33… ns apart
        assert_eq!(p.intended(0), 1_000);
        assert_eq!(p.intended(3), 1_000 + 1_000);
        assert_eq!(p.intended(3_000_000), 1_000 + 1_000_000_000);
        // 1e9 messages at 3M/s: exactly 333.33 s later, no accumulated error.
        assert_eq!(p.intended(1_000_000_000), 1_000 + 333_333_333_333);
        let slow = Pacer::new(0, 10.0);
        assert_eq!(slow.intended(25), 2_500_000_000);
    }

    #[test]
    fn pacer_hits_its_rate_on_a_driven_clock() {
        // 1M msgs/s against a clock that moves 7 ns per read: the pacer
        // releases message i at the first read at or after i µs, so after
        // n messages the clock stands at n µs (within one step): the rate.
        let clock = ManualClock {
            now: StdCell::new(0),
            step: 7,
            reads: StdCell::new(0),
        };
        let p = Pacer::new(0, 1_000_000.0);
        let n = 10_000;
        let mut released = Vec::with_capacity(n as usize);
        for i in 0..n {
            assert_eq!(p.wait(i, &clock), i * 1_000);
            released.push(clock.now.get());
        }
        for (i, &t) in released.iter().enumerate() {
            let due = i as u64 * 1_000;
            assert!(
                t > due && t <= due + 2 * 7,
                "message {i} released at {t}, due {due}"
            );
        }
        let elapsed = clock.now.get() as f64 / 1e9;
        let rate = (n - 1) as f64 / elapsed;
        assert!((rate - 1e6).abs() / 1e6 < 0.001, "rate {rate}");
    }

    #[test]
    fn pacer_never_sends_early_on_the_real_clock() {
        // Only the lower bound can be asserted on a shared machine (the
        // upper bound is a speed claim): no message leaves before it is due.
        let p = Pacer::new(now_ns(), 200_000.0);
        for i in 0..2_000 {
            let due = p.wait(i, &RealClock);
            assert!(now_ns() >= due);
        }
    }

    #[test]
    fn recorder_merges_every_threads_histograms() {
        let rec = Recorder::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let rec = Arc::clone(&rec);
                std::thread::spawn(move || {
                    for i in 1..=1_000u64 {
                        let stamp = Stamp {
                            intended: 0,
                            sent: 0,
                        };
                        // Latency t*1000 + i ns, from a known start.
                        rec.delivered_at(&stamp, t * 1_000 + i);
                    }
                    rec.lost(t);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        let all = rec.merged();
        assert_eq!(all.delivered, 4_000);
        assert_eq!(all.lost, 6);
        assert_eq!(rec.settled(), 4_006);
        assert_eq!(all.corrected.len(), 4_000);
        assert_eq!(all.corrected.min(), 1);
        assert!(all.corrected.equivalent(all.corrected.max(), 4_000));
        // Median of 1..=4000 is 2000 (3 significant digits).
        assert!(all
            .corrected
            .equivalent(all.corrected.value_at_quantile(0.5), 2_000));
        assert_eq!(all.awake.len() + all.woken.len(), 4_000);
    }

    #[test]
    fn deliveries_are_split_by_whether_the_worker_was_busy() {
        let rec = Recorder::new();
        std::thread::spawn({
            let rec = Arc::clone(&rec);
            move || {
                // Sent at 100, handled at 150: the thread was idle (its last
                // start was 0) → woken.
                rec.delivered_at(
                    &Stamp {
                        intended: 100,
                        sent: 100,
                    },
                    150,
                );
                // Sent at 120, before that start at 150 → it waited behind
                // work: awake.
                rec.delivered_at(
                    &Stamp {
                        intended: 120,
                        sent: 120,
                    },
                    160,
                );
            }
        })
        .join()
        .expect("recording thread");
        let h = rec.merged();
        assert_eq!(h.woken.len(), 1);
        assert!(h.woken.equivalent(h.woken.max(), 50));
        assert_eq!(h.awake.len(), 1);
        assert!(h.awake.equivalent(h.awake.max(), 40));
    }
}

//! Latency metrics: handler time and end-to-end latency, sampled, recorded
//! per worker thread and merged on snapshot (see [`Bus::metrics`]).
//!
//! A sampled handler run costs three readings of the bus's clock (wall and
//! monotonic at the start, monotonic at the end) and three histogram
//! records into the running worker's own slot (a lock only that worker and
//! a snapshot take): about 150 ns on this project's test machine. Runs that are
//! not sampled cost one thread-local countdown. Handlers run inline on a
//! publisher's thread are recorded into one shared extra slot.
//!
//! Memory: each slot holds three histograms of 270 KB (3 significant
//! digits over 1 ns to 1 h), so about 0.8 MB per worker plus one; nothing
//! with sampling off.
//!
//! [`Bus::metrics`]: crate::Bus::metrics

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use crate::sync::{Mutex, Padded};

#[cfg(feature = "metrics")]
mod facade;
#[cfg(feature = "prometheus")]
mod prometheus;

/// The longest latency recorded as itself; longer ones count as this.
const MAX_NS: u64 = 3_600_000_000_000;
/// Significant decimal digits: values are kept within 0.1 %.
const SIGFIG: u8 = 3;

/// The default of
/// [`BusBuilder::latency_sampling`](crate::BusBuilder::latency_sampling): one
/// handler run in 64 is sampled for the latency histograms.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, DEFAULT_LATENCY_SAMPLING};
/// let bus = Bus::<u32>::builder().build()?;
/// assert_eq!(bus.metrics().sampling, DEFAULT_LATENCY_SAMPLING);
/// # Ok::<(), topicbus::BuildError>(())
/// ```
pub const DEFAULT_LATENCY_SAMPLING: u32 = 64;

thread_local! {
    /// Countdown to this thread's next sampled run.
    static COUNTDOWN: Cell<u32> = const { Cell::new(1) };
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("constant, valid bounds")
}

/// The three latency histograms of one slot.
struct Hists {
    queue_wait: Histogram<u64>,
    handler: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

impl Hists {
    fn new() -> Self {
        Self {
            queue_wait: histogram(),
            handler: histogram(),
            end_to_end: histogram(),
        }
    }
}

/// A sampled run in progress: when it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    at: Instant,
    wall: SystemTime,
}

/// The bus's latency recorder.
pub(crate) struct Recorder {
    /// 0: off.
    every: u32,
    /// One per worker, then one shared by every other thread.
    slots: Box<[Padded<Mutex<Hists>>]>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("every", &self.every)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Recorder {
    /// A recorder for `workers` workers sampling one run in `every` (0:
    /// off; no memory is taken then).
    pub(crate) fn new(workers: usize, every: u32) -> Self {
        let slots = if every == 0 { 0 } else { workers + 1 };
        Self {
            every,
            slots: (0..slots)
                .map(|_| Padded(Mutex::new(Hists::new())))
                .collect(),
        }
    }

    /// One in `every` runs sampled (0: off).
    pub(crate) fn every(&self) -> u32 {
        self.every
    }

    /// True when this run is to be sampled: a thread-local countdown, no
    /// shared state.
    #[inline]
    pub(crate) fn sample(&self) -> bool {
        if self.every == 0 {
            return false;
        }
        COUNTDOWN.with(|c| {
            let left = c.get();
            if left <= 1 {
                c.set(self.every);
                true
            } else {
                c.set(left - 1);
                false
            }
        })
    }

    /// Starts a sampled run now.
    #[inline]
    pub(crate) fn start(now: Instant, wall: SystemTime) -> Started {
        Started { at: now, wall }
    }

    /// Records a sampled run of a message published at `published` that
    /// started at `started` and ended at `now` (end to end is the wait plus
    /// the run: one clock reading fewer).
    pub(crate) fn record(&self, published: SystemTime, started: Started, now: Instant) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        // A wall clock that stepped back counts as zero wait, not an error.
        let wait = started.wall.duration_since(published).unwrap_or_default();
        let run = now.saturating_duration_since(started.at);
        let (queue_wait, handler, end_to_end) = (ns(wait), ns(run), ns(wait.saturating_add(run)));
        let slot = crate::pool::current_worker()
            .filter(|&n| n + 1 < self.slots.len())
            .unwrap_or(self.slots.len() - 1);
        let mut h = self.slots[slot].0.lock();
        h.queue_wait.saturating_record(queue_wait);
        h.handler.saturating_record(handler);
        h.end_to_end.saturating_record(end_to_end);
    }

    /// The slots merged: (queue wait, handler, end to end).
    pub(crate) fn snapshot(&self) -> (Latency, Latency, Latency) {
        let mut all = Hists::new();
        for slot in self.slots.iter() {
            let h = slot.0.lock();
            // Same bounds everywhere: adding cannot fail.
            let _ = all.queue_wait.add(&h.queue_wait);
            let _ = all.handler.add(&h.handler);
            let _ = all.end_to_end.add(&h.end_to_end);
        }
        (
            Latency::new(all.queue_wait),
            Latency::new(all.handler),
            Latency::new(all.end_to_end),
        )
    }
}

/// A latency distribution from sampled handler runs: the usual quantiles,
/// and any other through [`quantile`](Self::quantile).
///
/// Values are kept to 3 significant digits (within 0.1 %), from 1 ns to one
/// hour (longer ones count as one hour).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message};
/// let bus = Bus::<u32>::builder().workers(1).latency_sampling(1).build()?;
/// let _s = bus.subscribe("jobs", |_m: &Message<u32>| ())?;
/// for i in 0..100 {
///     bus.publish("jobs", i)?;
/// }
/// bus.shutdown(Duration::from_secs(10))?;
/// let m = bus.metrics();
/// assert_eq!(m.handler.count(), 100);
/// assert!(m.handler.p50() <= m.handler.p99() && m.handler.p99() <= m.handler.max());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    fn new(h: Histogram<u64>) -> Self {
        Self(h)
    }

    /// Runs recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0.0 to 1.0); zero when nothing was
    /// recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.0.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 95th percentile.
    pub fn p95(&self) -> Duration {
        self.quantile(0.95)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The 99.9th percentile.
    pub fn p999(&self) -> Duration {
        self.quantile(0.999)
    }

    /// The largest value recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.0.max())
    }

    /// The smallest value recorded.
    pub fn min(&self) -> Duration {
        Duration::from_nanos(if self.0.is_empty() { 0 } else { self.0.min() })
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.0.mean() as u64)
    }

    /// Runs that took at most `d`, to the histogram's precision (values
    /// within 0.1 % above `d` may count): cumulative buckets, as Prometheus
    /// wants them.
    pub fn count_at_most(&self, d: Duration) -> u64 {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.count_between(0, ns)
    }
}

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .field("p50", &self.p50())
            .field("p95", &self.p95())
            .field("p99", &self.p99())
            .field("p999", &self.p999())
            .field("max", &self.max())
            .finish()
    }
}

/// A snapshot for operators (see [`Bus::metrics`](crate::Bus::metrics)):
/// every counter and queue depth, in total and per subscription, what the
/// workers are doing, and the latency distributions of sampled handler
/// runs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message};
/// let bus = Bus::<u32>::builder().workers(2).build()?;
/// let _s = bus.subscribe("orders.#", |_m: &Message<u32>| ())?;
/// bus.publish("orders.eu.created", 1)?;
/// bus.shutdown(Duration::from_secs(10))?;
/// let m = bus.metrics();
/// assert_eq!(m.stats.published, 1);
/// assert_eq!(m.stats.total.handled, 1);
/// assert_eq!(m.workers.exited, 2);
/// println!("handler p99: {:?}", m.handler.p99());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Metrics {
    /// Counters (published, delivered, handled, failed, retried, dead
    /// lettered, dropped by reason, expired, …) and queue depths per lane,
    /// in total and per subscription: [`Bus::stats`](crate::Bus::stats).
    pub stats: crate::BusStats,
    /// What the worker threads are doing.
    pub workers: crate::WorkerStates,
    /// Publish → handler start: time in the mailbox and the run queue
    /// (from the message's timestamp, on the bus's wall clock).
    pub queue_wait: Latency,
    /// The handler's own run time (the bus's monotonic clock).
    pub handler: Latency,
    /// Publish → handler end.
    pub end_to_end: Latency,
    /// One handler run in this many is sampled (0: latency not recorded).
    pub sampling: u32,
}

/// Every terminal-outcome counter of `c` as (outcome, reason, count), the
/// reason set for drops and dead letters: the series both exporters write.
#[cfg(any(feature = "prometheus", feature = "metrics"))]
pub(crate) fn outcome_series(
    c: &crate::Counts,
) -> impl Iterator<Item = (&'static str, Option<&'static str>, u64)> {
    let (d, l) = (&c.dropped, &c.dead_lettered);
    let plain = [
        ("handled", c.handled),
        ("received", c.received),
        ("failed", c.failed),
        ("panicked", c.panicked),
        ("expired", c.expired),
    ]
    .map(|(o, n)| (o, None, n));
    let dropped = [
        ("newest", d.newest),
        ("oldest", d.oldest),
        ("rejected", d.rejected),
        ("timeout", d.timeout),
        ("paused", d.paused),
        ("unsubscribed", d.unsubscribed),
        ("shutdown", d.shutdown),
        ("circuit_open", d.circuit_open),
    ]
    .map(|(r, n)| ("dropped", Some(r), n));
    let dead = [
        ("retries_exhausted", l.retries_exhausted),
        ("permanent", l.permanent),
        ("panicked", l.panicked),
        ("expired", l.expired),
        ("shutdown", l.shutdown),
        ("overflow", l.overflow),
        ("circuit_open", l.circuit_open),
    ]
    .map(|(r, n)| ("dead_lettered", Some(r), n));
    plain.into_iter().chain(dropped).chain(dead)
}

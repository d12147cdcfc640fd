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
//! A subscription that asks for its own histograms
//! ([`SubscribeOptions::latency`]) also records its sampled runs into three
//! histograms of its own, kept to 2 significant digits (37 KB each, 110 KB
//! per subscription) behind a lock only its own runs and a snapshot take.
//!
//! [`SubscribeOptions::latency`]: crate::SubscribeOptions::latency
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
/// Significant digits of a subscription's own histograms: within 1 %, at
/// an eighth of the memory.
const SUB_SIGFIG: u8 = 2;

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

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, sigfig).expect("constant, valid bounds")
}

/// The three latency histograms of one slot.
struct Hists {
    queue_wait: Histogram<u64>,
    handler: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

impl Hists {
    fn new(sigfig: u8) -> Self {
        Self {
            queue_wait: histogram(sigfig),
            handler: histogram(sigfig),
            end_to_end: histogram(sigfig),
        }
    }

    /// Records one run's (queue wait, handler, end to end), in ns.
    fn record(&mut self, (queue_wait, handler, end_to_end): (u64, u64, u64)) {
        self.queue_wait.saturating_record(queue_wait);
        self.handler.saturating_record(handler);
        self.end_to_end.saturating_record(end_to_end);
    }

    /// Adds `other`'s counts (of any precision) to these.
    fn add(&mut self, other: &Hists) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.queue_wait.add(&other.queue_wait);
        let _ = self.handler.add(&other.handler);
        let _ = self.end_to_end.add(&other.end_to_end);
    }

    /// (queue wait, handler, end to end).
    fn into_latencies(self) -> (Latency, Latency, Latency) {
        (
            Latency::new(self.queue_wait),
            Latency::new(self.handler),
            Latency::new(self.end_to_end),
        )
    }
}

/// A subscription's own latency histograms (see
/// [`SubscribeOptions::latency`](crate::SubscribeOptions::latency)).
pub(crate) struct SubRecorder(Mutex<Hists>);

impl fmt::Debug for SubRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubRecorder")
    }
}

impl SubRecorder {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Hists::new(SUB_SIGFIG)))
    }

    /// A copy of the histograms: (queue wait, handler, end to end).
    pub(crate) fn snapshot(&self) -> (Latency, Latency, Latency) {
        let mut all = Hists::new(SUB_SIGFIG);
        all.add(&self.0.lock());
        all.into_latencies()
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
                .map(|_| Padded(Mutex::new(Hists::new(SIGFIG))))
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
    /// the run: one clock reading fewer), and into the subscription's `own`
    /// histograms when it keeps them.
    pub(crate) fn record(
        &self,
        published: SystemTime,
        started: Started,
        now: Instant,
        own: Option<&SubRecorder>,
    ) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        // A wall clock that stepped back counts as zero wait, not an error.
        let wait = started.wall.duration_since(published).unwrap_or_default();
        let run = now.saturating_duration_since(started.at);
        let values = (ns(wait), ns(run), ns(wait.saturating_add(run)));
        let slot = crate::pool::current_worker()
            .filter(|&n| n + 1 < self.slots.len())
            .unwrap_or(self.slots.len() - 1);
        self.slots[slot].0.lock().record(values);
        if let Some(own) = own {
            own.0.lock().record(values);
        }
    }

    /// The slots merged: (queue wait, handler, end to end).
    pub(crate) fn snapshot(&self) -> (Latency, Latency, Latency) {
        let mut all = Hists::new(SIGFIG);
        for slot in self.slots.iter() {
            all.add(&slot.0.lock());
        }
        all.into_latencies()
    }
}

/// A latency distribution from sampled handler runs: the usual quantiles,
/// and any other through [`quantile`](Self::quantile).
///
/// Values are kept to 3 significant digits (within 0.1 %) in the bus-wide
/// distributions and to 2 (within 1 %) in a subscription's own, from 1 ns
/// to one hour (longer ones count as one hour).
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).latency_sampling(2).build()?; // every second run
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| ())?;
    /// for i in 0..10 {
    ///     bus.publish("t", i)?;
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(bus.metrics().handler.count(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0.0 to 1.0); zero when nothing was
    /// recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// // Handlers that take exactly 1, 2, …, 100 ms on a manual clock.
    /// let clock = ManualClock::shared();
    /// let c = clock.clone();
    /// let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// for ms in 1..=100 {
    ///     bus.publish("t", ms)?;
    /// }
    /// bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// let p90 = h.quantile(0.9);
    /// assert!(p90 >= Duration::from_millis(89) && p90 <= Duration::from_millis(91));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.0.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The median.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.p50() >= Duration::from_millis(49) && h.p50() <= Duration::from_millis(51));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 95th percentile.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.p95() >= Duration::from_millis(94) && h.p95() <= Duration::from_millis(96));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn p95(&self) -> Duration {
        self.quantile(0.95)
    }

    /// The 99th percentile.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.p99() >= Duration::from_millis(98) && h.p99() <= Duration::from_millis(100));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The 99.9th percentile.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 1000 ms on a manual clock:
    /// # for ms in 1..=1000 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.p999() >= Duration::from_millis(998) && h.p999() <= Duration::from_millis(1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn p999(&self) -> Duration {
        self.quantile(0.999)
    }

    /// The largest value recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.max() >= Duration::from_millis(100) && h.max() <= Duration::from_micros(100_100));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.0.max())
    }

    /// The smallest value recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.min() >= Duration::from_micros(999) && h.min() <= Duration::from_millis(1));
    /// assert_eq!(Bus::<u64>::builder().build()?.metrics().handler.min(), Duration::ZERO); // nothing recorded
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn min(&self) -> Duration {
        Duration::from_nanos(if self.0.is_empty() { 0 } else { self.0.min() })
    }

    /// The mean.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert!(h.mean() >= Duration::from_millis(50) && h.mean() <= Duration::from_millis(51));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.0.mean() as u64)
    }

    /// Runs that took at most `d`, to the histogram's precision (values
    /// within 0.1 % above `d` may count, 1 % in a subscription's own): cumulative buckets, as Prometheus
    /// wants them.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use topicbus::{Bus, ManualClock, Message};
    /// # let clock = ManualClock::shared();
    /// # let c = clock.clone();
    /// # let bus = Bus::<u64>::builder().workers(1).clock(clock).latency_sampling(1).build()?;
    /// # let _s = bus.subscribe("t", move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())))?;
    /// // Handlers took exactly 1, 2, …, 100 ms on a manual clock:
    /// # for ms in 1..=100 { bus.publish("t", ms)?; }
    /// # bus.shutdown(Duration::from_secs(10))?;
    /// let h = bus.metrics().handler;
    /// assert_eq!(h.count_at_most(Duration::from_millis(10)), 10);
    /// assert_eq!(h.count_at_most(Duration::from_secs(1)), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count_at_most(&self, d: Duration) -> u64 {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.count_between(0, ns)
    }

    /// [`count_at_most`](Self::count_at_most) of each of the ascending
    /// `bounds`, in one pass over the histogram.
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    pub(crate) fn cumulative(&self, bounds: &[Duration]) -> Vec<u64> {
        let mut out = vec![0; bounds.len()];
        let ns: Vec<u64> = bounds
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        for v in self.0.iter_recorded() {
            // A value counts for a bound when its bucket starts at or
            // below it: what `count_between(0, bound)` counts.
            let low = self.0.lowest_equivalent(v.value_iterated_to());
            let first = ns.partition_point(|&b| b < low);
            if let Some(n) = out.get_mut(first) {
                *n += v.count_since_last_iteration();
            }
        }
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
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
    /// The live subscriptions that keep their own latency histograms
    /// ([`SubscribeOptions::latency`](crate::SubscribeOptions::latency)),
    /// in subscription order.
    pub subscriptions: Vec<SubscriptionLatency>,
}

/// One subscription's own latency distributions, from the same sampled
/// runs as the bus-wide ones (see
/// [`SubscribeOptions::latency`](crate::SubscribeOptions::latency)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, SubscribeOptions};
/// let bus = Bus::<u32>::builder().workers(1).latency_sampling(1).build()?;
/// let watched = bus.subscribe_with(
///     SubscribeOptions::new().pattern("orders.#").latency(true),
///     |_m: &Message<u32>| (),
/// )?;
/// let _other = bus.subscribe("#", |_m: &Message<u32>| ())?;
/// bus.publish("orders.eu", 1)?;
/// bus.publish("users.eu", 2)?;
/// bus.shutdown(Duration::from_secs(10))?;
/// let m = bus.metrics();
/// assert_eq!(m.handler.count(), 3);
/// assert_eq!(m.subscriptions.len(), 1);
/// assert_eq!(m.subscriptions[0].id, watched.id());
/// assert_eq!(m.subscriptions[0].handler.count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionLatency {
    /// The subscription.
    pub id: crate::SubscriptionId,
    /// Publish → handler start.
    pub queue_wait: Latency,
    /// The handler's own run time.
    pub handler: Latency,
    /// Publish → handler end.
    pub end_to_end: Latency,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_agree_with_count_at_most_at_every_bound() {
        for sigfig in [SIGFIG, SUB_SIGFIG] {
            let mut h = histogram(sigfig);
            // Values from 1 ns to about 20 s, spread over every magnitude,
            // some on the bounds themselves.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for i in 0..20_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = match i % 4 {
                    0 => 10u64.pow((x % 11) as u32),
                    _ => 1 + (x >> (x % 64) as u32) % 20_000_000_000,
                };
                h.saturating_record(v);
            }
            let l = Latency::new(h);
            let bounds: Vec<Duration> = (0..=10)
                .flat_map(|e| [1u64, 3, 10, 25].map(|m| Duration::from_nanos(m * 10u64.pow(e))))
                .collect();
            let mut sorted = bounds.clone();
            sorted.sort();
            sorted.dedup();
            let got = l.cumulative(&sorted);
            for (b, n) in sorted.iter().zip(&got) {
                assert_eq!(*n, l.count_at_most(*b), "sigfig {sigfig}, bound {b:?}");
            }
            // The bounds split the values (not all in one bucket).
            assert!(got.windows(2).filter(|w| w[0] < w[1]).count() > 20);
        }
    }
}

//! Per-subscription circuit breakers.
//!
//! Closed: calls go through and their results fill a window (the last N
//! calls, or the calls of the last D split into ten buckets). Once the
//! window holds at least `min_calls` and the failure rate reaches the
//! threshold, the breaker opens for `open_for` (plus up to `jitter` of it,
//! random, so breakers that tripped together do not all probe together).
//! When the wait ends the breaker is half-open: `trials` calls go through;
//! if all succeed it closes with an empty window, the first failure opens it
//! again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A breaker's state.
///
/// # Examples
///
/// ```
/// assert_eq!(topicbus::CircuitState::Closed.as_str(), "closed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused; messages are held, dead-lettered or dropped by
    /// the [`WhenOpen`] policy.
    Open,
    /// A few trial calls go through.
    HalfOpen,
}

impl CircuitState {
    /// A short lower-case name, for logs and metric labels.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::CircuitState;
    /// let label = CircuitState::HalfOpen.as_str();
    /// assert_eq!(label, "half_open");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// What happens to a subscription's messages while its breaker is open.
///
/// # Examples
///
/// ```
/// assert_eq!(topicbus::WhenOpen::default(), topicbus::WhenOpen::Hold);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenOpen {
    /// They wait in the mailbox (its overflow policy applies) until the
    /// breaker lets a trial through. No worker waits.
    #[default]
    Hold,
    /// They go to the dead letters (reason
    /// [`CircuitOpen`](crate::DeadLetterReason::CircuitOpen); counted as
    /// dropped when the bus keeps none).
    DeadLetter,
    /// They are dropped, counted as
    /// [`DropReason::CircuitOpen`](crate::DropReason::CircuitOpen).
    Drop,
}

/// The window a breaker judges the failure rate over.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::BreakerWindow;
/// let _last_50 = BreakerWindow::Calls(50);
/// let _last_minute = BreakerWindow::Time(Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerWindow {
    /// The last N calls.
    Calls(usize),
    /// The calls of the last duration (in ten buckets).
    Time(Duration),
}

/// Circuit-breaker settings for a subscription.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{BreakerWindow, CircuitBreaker, WhenOpen};
/// let breaker = CircuitBreaker::new()
///     .window(BreakerWindow::Calls(20))
///     .min_calls(10)
///     .failure_rate(0.5)
///     .open_for(Duration::from_secs(5), 0.2)
///     .trials(3)
///     .when_open(WhenOpen::Hold);
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct CircuitBreaker {
    pub(crate) window: BreakerWindow,
    pub(crate) min_calls: usize,
    pub(crate) failure_rate: f64,
    pub(crate) open_for: Duration,
    pub(crate) jitter: f64,
    pub(crate) trials: u32,
    pub(crate) when_open: WhenOpen,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreaker {
    /// The last 100 calls, at least 20 of them, 50 % failures, open for
    /// 10 s plus up to 10 % jitter, 1 trial, hold while open.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, CircuitBreaker, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("payments.#").circuit_breaker(CircuitBreaker::new()),
    ///     |_m: &Message<u32>| Ok::<(), &str>(()),
    /// )?;
    /// assert_eq!(CircuitBreaker::new(), CircuitBreaker::default());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self {
            window: BreakerWindow::Calls(100),
            min_calls: 20,
            failure_rate: 0.5,
            open_for: Duration::from_secs(10),
            jitter: 0.1,
            trials: 1,
            when_open: WhenOpen::Hold,
        }
    }

    /// The window judged.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, CircuitBreaker};
    /// let by_calls = CircuitBreaker::new().window(BreakerWindow::Calls(50));
    /// let by_time = CircuitBreaker::new().window(BreakerWindow::Time(Duration::from_secs(30)));
    /// assert_ne!(by_calls, by_time);
    /// ```
    pub fn window(mut self, window: BreakerWindow) -> Self {
        self.window = match window {
            BreakerWindow::Calls(n) => BreakerWindow::Calls(n.max(1)),
            w => w,
        };
        self
    }

    /// Calls the window must hold before the breaker may open.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, CircuitState, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let breaker = CircuitBreaker::new().window(BreakerWindow::Calls(10)).min_calls(3);
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").circuit_breaker(breaker), |_m: &Message<u32>| Err("down"))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// bus.publish_confirmed("t", 2, Duration::from_secs(10))?;
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Closed)); // two calls are too few to judge
    /// bus.publish_confirmed("t", 3, Duration::from_secs(10))?;
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Open));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn min_calls(mut self, n: usize) -> Self {
        self.min_calls = n.max(1);
        self
    }

    /// The failure fraction (0..=1) that opens the breaker.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, CircuitState, Message, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let breaker = CircuitBreaker::new().window(BreakerWindow::Calls(4)).min_calls(4).failure_rate(0.75);
    /// let s = bus.subscribe_with(
    ///     SubscribeOptions::new().pattern("t").circuit_breaker(breaker),
    ///     |m: &Message<u32>| if *m.payload() % 2 == 0 { Ok(()) } else { Err("odd") },
    /// )?;
    /// for i in 0..4 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Closed)); // 50 % < 75 %
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = if rate.is_nan() {
            1.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// How long it stays open, plus a random extra of up to `jitter` × that.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, CircuitState, ManualClock, Message, SubscribeOptions};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).build()?;
    /// let breaker = CircuitBreaker::new()
    ///     .window(BreakerWindow::Calls(1))
    ///     .min_calls(1)
    ///     .open_for(Duration::from_secs(30), 0.0); // no jitter: exactly 30 s
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").circuit_breaker(breaker), |m: &Message<u32>| {
    ///     if *m.payload() == 0 { Err("down") } else { Ok(()) }
    /// })?;
    /// bus.publish_confirmed("t", 0, Duration::from_secs(10))?;
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Open));
    /// clock.advance(Duration::from_secs(30));
    /// let c = bus.publish_confirmed("t", 1, Duration::from_secs(10))?; // the trial call
    /// assert!(c.all_succeeded());
    /// assert_eq!(s.stats().circuit, Some(CircuitState::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_for(mut self, wait: Duration, jitter: f64) -> Self {
        self.open_for = wait;
        self.jitter = if jitter.is_finite() {
            jitter.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// Trial calls while half-open (all must succeed to close).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::CircuitBreaker;
    /// // Three good calls in a row before the breaker trusts the handler again.
    /// let cautious = CircuitBreaker::new().trials(3);
    /// assert_ne!(cautious, CircuitBreaker::new());
    /// ```
    pub fn trials(mut self, n: u32) -> Self {
        self.trials = n.max(1);
        self
    }

    /// What happens to messages while open.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{BreakerWindow, Bus, CircuitBreaker, DropReason, Message, SubscribeOptions, WhenOpen};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let breaker = CircuitBreaker::new().window(BreakerWindow::Calls(1)).min_calls(1).when_open(WhenOpen::Drop);
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").circuit_breaker(breaker), |_m: &Message<u32>| Err("down"))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?; // opens the breaker
    /// bus.publish_confirmed("t", 2, Duration::from_secs(10))?; // dropped while open
    /// assert_eq!(s.stats().counts.dropped.get(DropReason::CircuitOpen), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn when_open(mut self, policy: WhenOpen) -> Self {
        self.when_open = policy;
        self
    }
}

/// Whether a call may go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go (a trial when half-open).
    Go,
    /// Refused until the given time (open), or until a trial in flight
    /// reports (`None`, half-open with every trial taken).
    Refuse(Option<Instant>),
}

/// A state change, for the hooks.
pub(crate) type Change = (CircuitState, CircuitState);

const BUCKETS: u32 = 10;

/// The breaker's live state (behind the subscription's lock).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: CircuitBreaker,
    state: CircuitState,
    /// Open: until when.
    until: Option<Instant>,
    /// Half-open: trials started and succeeded.
    started: u32,
    passed: u32,
    /// Count window: the last results (true = failure).
    calls: VecDeque<bool>,
    /// Time window: (bucket start, calls, failures).
    buckets: VecDeque<(Instant, u32, u32)>,
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreaker) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            until: None,
            started: 0,
            passed: 0,
            calls: VecDeque::new(),
            buckets: VecDeque::new(),
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        self.state
    }

    pub(crate) fn config(&self) -> &CircuitBreaker {
        &self.config
    }

    /// True when [`admit`](Self::admit) would let a call go now (ignoring
    /// an open breaker's wait, which the timer watches).
    pub(crate) fn would_admit(&self) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => self.started < self.config.trials,
            CircuitState::Open => false,
        }
    }

    /// Asks to make a call at `now`; may move open → half-open.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admit, Option<Change>) {
        match self.state {
            CircuitState::Closed => (Admit::Go, None),
            CircuitState::Open => match self.until {
                Some(until) if now < until => (Admit::Refuse(Some(until)), None),
                _ => {
                    self.state = CircuitState::HalfOpen;
                    self.until = None;
                    self.started = 1;
                    self.passed = 0;
                    (
                        Admit::Go,
                        Some((CircuitState::Open, CircuitState::HalfOpen)),
                    )
                }
            },
            CircuitState::HalfOpen => {
                if self.started < self.config.trials {
                    self.started += 1;
                    (Admit::Go, None)
                } else {
                    (Admit::Refuse(None), None)
                }
            }
        }
    }

    /// Records a call's result. `unit` in `[0, 1)` draws the jitter.
    pub(crate) fn record(&mut self, failed: bool, now: Instant, unit: f64) -> Option<Change> {
        match self.state {
            CircuitState::Closed => {
                self.push(failed, now);
                let (calls, failures) = self.totals(now);
                if calls >= self.config.min_calls
                    && failures as f64 >= self.config.failure_rate * calls as f64
                    && failures > 0
                {
                    self.open(now, unit);
                    return Some((CircuitState::Closed, CircuitState::Open));
                }
                None
            }
            CircuitState::HalfOpen => {
                if failed {
                    self.open(now, unit);
                    Some((CircuitState::HalfOpen, CircuitState::Open))
                } else {
                    self.passed += 1;
                    if self.passed >= self.config.trials {
                        self.state = CircuitState::Closed;
                        self.calls.clear();
                        self.buckets.clear();
                        Some((CircuitState::HalfOpen, CircuitState::Closed))
                    } else {
                        None
                    }
                }
            }
            // A call admitted before the breaker opened reports late: the
            // breaker already judged without it.
            CircuitState::Open => None,
        }
    }

    fn open(&mut self, now: Instant, unit: f64) {
        let extra = self
            .config
            .open_for
            .mul_f64(self.config.jitter * unit.clamp(0.0, 1.0));
        self.state = CircuitState::Open;
        self.until = now.checked_add(self.config.open_for + extra);
        self.started = 0;
        self.passed = 0;
    }

    fn push(&mut self, failed: bool, now: Instant) {
        match self.config.window {
            BreakerWindow::Calls(n) => {
                if self.calls.len() >= n {
                    self.calls.pop_front();
                }
                self.calls.push_back(failed);
            }
            BreakerWindow::Time(span) => {
                let width = (span / BUCKETS).max(Duration::from_nanos(1));
                match self.buckets.back_mut() {
                    Some((start, calls, fails)) if now < *start + width => {
                        *calls += 1;
                        *fails += u32::from(failed);
                    }
                    _ => self.buckets.push_back((now, 1, u32::from(failed))),
                }
            }
        }
    }

    /// Calls and failures in the window at `now`.
    fn totals(&mut self, now: Instant) -> (usize, usize) {
        match self.config.window {
            BreakerWindow::Calls(_) => {
                (self.calls.len(), self.calls.iter().filter(|f| **f).count())
            }
            BreakerWindow::Time(span) => {
                while self
                    .buckets
                    .front()
                    .is_some_and(|(start, _, _)| now.saturating_duration_since(*start) >= span)
                {
                    self.buckets.pop_front();
                }
                self.buckets.iter().fold((0, 0), |(c, f), (_, bc, bf)| {
                    (c + *bc as usize, f + *bf as usize)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            CircuitBreaker::new()
                .window(BreakerWindow::Calls(4))
                .min_calls(4)
                .failure_rate(0.5)
                .open_for(Duration::from_secs(10), 0.0)
                .trials(2),
        )
    }

    #[test]
    fn closed_open_half_open_closed_and_open_again() {
        let t0 = Instant::now();
        let mut b = breaker();
        // Three calls, two failures: under min_calls, stays closed.
        for failed in [true, false, true] {
            assert_eq!(b.admit(t0).0, Admit::Go);
            assert_eq!(b.record(failed, t0, 0.0), None);
        }
        // The fourth makes 2 of 4: open.
        assert_eq!(b.admit(t0).0, Admit::Go);
        assert_eq!(
            b.record(false, t0, 0.0),
            Some((CircuitState::Closed, CircuitState::Open))
        );
        let until = t0 + Duration::from_secs(10);
        assert_eq!(
            b.admit(t0 + Duration::from_secs(9)).0,
            Admit::Refuse(Some(until))
        );
        // The wait ends: half-open, two trials.
        assert_eq!(
            b.admit(until),
            (
                Admit::Go,
                Some((CircuitState::Open, CircuitState::HalfOpen))
            )
        );
        assert_eq!(b.admit(until).0, Admit::Go);
        assert_eq!(b.admit(until).0, Admit::Refuse(None), "trials all taken");
        assert_eq!(b.record(false, until, 0.0), None);
        assert_eq!(
            b.record(false, until, 0.0),
            Some((CircuitState::HalfOpen, CircuitState::Closed))
        );
        assert_eq!(b.state(), CircuitState::Closed);
        // A fresh window: needs min_calls again before it can open.
        let t1 = until + Duration::from_secs(1);
        for _ in 0..3 {
            b.admit(t1);
            assert_eq!(b.record(true, t1, 0.0), None);
        }
        b.admit(t1);
        assert_eq!(
            b.record(true, t1, 0.0),
            Some((CircuitState::Closed, CircuitState::Open))
        );
        // Half-open again, and a failing trial opens it again.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(
            b.admit(t2).1,
            Some((CircuitState::Open, CircuitState::HalfOpen))
        );
        assert_eq!(
            b.record(true, t2, 0.0),
            Some((CircuitState::HalfOpen, CircuitState::Open))
        );
        assert_eq!(
            b.admit(t2 + Duration::from_secs(5)).0,
            Admit::Refuse(Some(t2 + Duration::from_secs(10)))
        );
    }

    #[test]
    fn the_open_wait_has_bounded_jitter() {
        let t0 = Instant::now();
        let config = CircuitBreaker::new()
            .window(BreakerWindow::Calls(1))
            .min_calls(1)
            .open_for(Duration::from_secs(10), 0.5);
        for unit in [0.0, 0.25, 0.999] {
            let mut b = Breaker::new(config);
            b.admit(t0);
            b.record(true, t0, unit);
            let Admit::Refuse(Some(until)) = b.admit(t0).0 else {
                panic!("open");
            };
            let wait = until - t0;
            assert!(wait >= Duration::from_secs(10) && wait < Duration::from_secs(15));
            assert_eq!(wait, Duration::from_secs(10).mul_f64(1.0 + 0.5 * unit));
        }
    }

    #[test]
    fn the_time_window_forgets_old_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(
            CircuitBreaker::new()
                .window(BreakerWindow::Time(Duration::from_secs(10)))
                .min_calls(3)
                .failure_rate(1.0),
        );
        b.record(true, t0, 0.0);
        b.record(true, t0 + Duration::from_secs(1), 0.0);
        // 11 s later the first two are out of the window: 1 of 1, under min.
        assert_eq!(b.record(true, t0 + Duration::from_secs(12), 0.0), None);
        assert_eq!(b.record(true, t0 + Duration::from_secs(12), 0.0), None);
        assert_eq!(
            b.record(true, t0 + Duration::from_secs(13), 0.0),
            Some((CircuitState::Closed, CircuitState::Open))
        );
    }

    #[test]
    fn successes_below_the_rate_keep_it_closed() {
        let t0 = Instant::now();
        let mut b = breaker();
        for i in 0..100 {
            b.admit(t0);
            assert_eq!(b.record(i % 4 == 0, t0, 0.0), None, "25 % < 50 %");
        }
    }
}

#[cfg(test)]
mod model {
    //! A state-machine property test: random admits and results, spaced in
    //! time, on the breaker and on a plain model agree on every answer and
    //! every state change.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum M {
        Closed,
        Open(Instant),
        HalfOpen { started: u32, passed: u32 },
    }

    struct Model {
        n: usize,
        min: usize,
        rate: f64,
        wait: Duration,
        trials: u32,
        state: M,
        /// Results since the last close (true = failure).
        history: Vec<bool>,
    }

    impl Model {
        fn name(&self) -> CircuitState {
            match self.state {
                M::Closed => CircuitState::Closed,
                M::Open(_) => CircuitState::Open,
                M::HalfOpen { .. } => CircuitState::HalfOpen,
            }
        }

        fn admit(&mut self, now: Instant) -> Admit {
            match self.state {
                M::Closed => Admit::Go,
                M::Open(until) if now < until => Admit::Refuse(Some(until)),
                M::Open(_) => {
                    self.state = M::HalfOpen {
                        started: 1,
                        passed: 0,
                    };
                    Admit::Go
                }
                M::HalfOpen { started, passed } if started < self.trials => {
                    self.state = M::HalfOpen {
                        started: started + 1,
                        passed,
                    };
                    Admit::Go
                }
                M::HalfOpen { .. } => Admit::Refuse(None),
            }
        }

        fn record(&mut self, failed: bool, now: Instant) {
            match self.state {
                M::Closed => {
                    self.history.push(failed);
                    let window = &self.history[self.history.len().saturating_sub(self.n)..];
                    let fails = window.iter().filter(|f| **f).count();
                    if window.len() >= self.min
                        && fails > 0
                        && fails as f64 >= self.rate * window.len() as f64
                    {
                        self.state = M::Open(now + self.wait);
                    }
                }
                M::HalfOpen { .. } if failed => self.state = M::Open(now + self.wait),
                M::HalfOpen { started, passed } => {
                    if passed + 1 >= self.trials {
                        self.state = M::Closed;
                        self.history.clear();
                    } else {
                        self.state = M::HalfOpen {
                            started,
                            passed: passed + 1,
                        };
                    }
                }
                M::Open(_) => {}
            }
        }
    }

    proptest! {
        #[test]
        fn the_breaker_behaves_like_its_model(
            n in 1usize..6,
            min in 1usize..6,
            rate in proptest::sample::select(vec![0.0f64, 0.2, 0.25, 1.0 / 3.0, 0.5, 0.75, 1.0]),
            trials in 1u32..4,
            ops in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..40), 1..200),
        ) {
            let wait = Duration::from_millis(50);
            let config = CircuitBreaker::new()
                .window(BreakerWindow::Calls(n))
                .min_calls(min)
                .failure_rate(rate)
                .open_for(wait, 0.0)
                .trials(trials);
            let mut b = Breaker::new(config);
            let mut m = Model { n, min, rate, wait, trials, state: M::Closed, history: Vec::new() };
            let mut now = Instant::now();
            for (is_admit, failed, dt) in ops {
                now += Duration::from_millis(dt);
                let before = m.name();
                if is_admit {
                    let (got, change) = b.admit(now);
                    prop_assert_eq!(got, m.admit(now));
                    let after = m.name();
                    prop_assert_eq!(change, (before != after).then_some((before, after)));
                } else {
                    let change = b.record(failed, now, 0.0);
                    m.record(failed, now);
                    let after = m.name();
                    prop_assert_eq!(change, (before != after).then_some((before, after)));
                }
                prop_assert_eq!(b.state(), m.name());
            }
        }
    }
}

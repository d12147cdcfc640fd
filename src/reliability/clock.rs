//! Time as the bus sees it: injectable, so tests drive it.
//!
//! Everything in the bus that waits or ages — the timer (retries, delayed
//! delivery, request timeouts, circuit-breaker waits), expiry checks,
//! deduplication windows, dead-letter times — reads one [`Clock`]. The
//! default is the [`SystemClock`]; tests give the bus a [`ManualClock`] and
//! move time forward themselves, so nothing in a test waits for real time.

use std::fmt;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

use crate::sync::Mutex;

/// A source of time: monotonic ([`now`](Clock::now)) for waits and ages,
/// and wall-clock ([`wall`](Clock::wall)) for message timestamps and
/// expiry.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use topicbus::{Bus, Clock, ManualClock, Message};
///
/// let clock = Arc::new(ManualClock::new());
/// let bus = Bus::<u32>::builder().workers(1).clock(clock.clone()).build()?;
/// let rx = bus.receiver("t")?;
/// bus.publish_message(Message::builder("t".parse()?, 1).timestamp(clock.wall()).ttl(Duration::from_secs(5)))?;
/// clock.advance(Duration::from_secs(6));
/// // Expired while it waited: the receiver never sees it.
/// assert!(rx.try_recv().is_err());
/// assert_eq!(rx.stats().expired, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// let t0 = clock.now();
    /// assert_eq!(clock.now(), t0); // a manual clock stands still
    /// ```
    fn now(&self) -> Instant;

    /// Wall-clock time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// let w0 = clock.wall();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(clock.wall(), w0 + Duration::from_secs(1));
    /// ```
    fn wall(&self) -> SystemTime;

    /// Asks to be woken when this clock jumps (a manual clock's
    /// [`advance`](ManualClock::advance)); waiters on a real clock use real
    /// timeouts instead, so the default does nothing. `waker` is kept as
    /// long as the clock lives and woken on every jump.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::task::{Wake, Waker};
    /// use std::time::Duration;
    /// use topicbus::{Clock, ManualClock};
    /// struct Count(AtomicUsize);
    /// impl Wake for Count {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }
    /// let count = Arc::new(Count(AtomicUsize::new(0)));
    /// let clock = ManualClock::new();
    /// clock.on_jump(Waker::from(count.clone()));
    /// clock.advance(Duration::from_secs(1));
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(count.0.load(Ordering::SeqCst), 2);
    /// ```
    fn on_jump(&self, waker: Waker) {
        let _ = waker;
    }
}

/// The real clocks: [`Instant::now`] and [`SystemTime::now`].
///
/// # Examples
///
/// ```
/// use topicbus::{Clock, SystemClock};
/// let c = SystemClock;
/// assert!(c.now() <= std::time::Instant::now());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[inline]
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told: for tests (backoff schedules, breaker
/// waits, expiry, delayed delivery) without real waiting.
///
/// Both of its readings start at the real clocks' values when it is made and
/// move together.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let (t0, w0) = (clock.now(), clock.wall());
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(clock.now() - t0, Duration::from_millis(250));
/// assert_eq!(clock.wall().duration_since(w0)?, Duration::from_millis(250));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ManualClock {
    start: Instant,
    wall_start: SystemTime,
    state: Mutex<ManualState>,
}

struct ManualState {
    elapsed: Duration,
    wakers: Vec<Waker>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the real time of its making.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use topicbus::{Clock, ManualClock};
    /// let before = SystemTime::now();
    /// let clock = ManualClock::new();
    /// assert!(clock.wall() >= before); // it starts at the real time
    /// ```
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            wall_start: SystemTime::now(),
            state: Mutex::new(ManualState {
                elapsed: Duration::ZERO,
                wakers: Vec::new(),
            }),
        }
    }

    /// A clock in an `Arc`, ready for [`BusBuilder::clock`](crate::BusBuilder::clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Bus, ManualClock};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<u32>::builder().clock(clock.clone()).build()?;
    /// # drop(bus);
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Moves both readings forward by `by` and wakes whoever waits on the
    /// clock (the bus's timer fires what fell due).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, ManualClock, Message};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<&str>::builder().workers(1).clock(clock.clone()).build()?;
    /// let rx = bus.receiver("later")?;
    /// bus.publish_message(Message::builder("later".parse()?, "hi").timestamp(clock.wall()).delay(Duration::from_secs(5)))?;
    /// clock.advance(Duration::from_secs(5)); // the bus's timer fires the delayed message
    /// assert_eq!(*rx.recv_timeout(Duration::from_secs(10))?.payload(), "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut s = self.state.lock();
            s.elapsed += by;
            s.wakers.clone()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Time advanced since the clock was made.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::ManualClock;
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.state.lock().elapsed
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + self.elapsed()
    }

    fn on_jump(&self, waker: Waker) {
        let mut s = self.state.lock();
        if !s.wakers.iter().any(|w| w.will_wake(&waker)) {
            s.wakers.push(waker);
        }
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn wall(&self) -> SystemTime {
        (**self).wall()
    }

    fn on_jump(&self, waker: Waker) {
        (**self).on_jump(waker);
    }
}

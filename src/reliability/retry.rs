//! Retry policies: how often, how long between, and which errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;

/// How an error is treated by a [`RetryPolicy`].
///
/// # Examples
///
/// ```
/// use topicbus::{ErrorKind, Permanent};
/// let e: topicbus::BoxError = Box::new(Permanent::new("bad input"));
/// assert_eq!(ErrorKind::of(&e), ErrorKind::Permanent);
/// let e: topicbus::BoxError = "connection reset".into();
/// assert_eq!(ErrorKind::of(&e), ErrorKind::Transient);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Worth another attempt (the default for any error).
    Transient,
    /// Retrying cannot help (bad input, a missing entity): dead-lettered at
    /// once.
    Permanent,
    /// The handler panicked.
    Panic,
}

impl ErrorKind {
    /// The default classification: [`Permanent`] errors (also when wrapped
    /// as the source of another error) are permanent, all others transient.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{BoxError, ErrorKind, Permanent};
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("import failed")]
    /// struct ImportFailed(#[source] Permanent);
    /// let wrapped: BoxError = Box::new(ImportFailed(Permanent::new("bad row")));
    /// assert_eq!(ErrorKind::of(&wrapped), ErrorKind::Permanent); // found in the source chain
    /// ```
    pub fn of(error: &BoxError) -> Self {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(err) = e {
            if err.is::<Permanent>() {
                return ErrorKind::Permanent;
            }
            e = err.source();
        }
        ErrorKind::Transient
    }

    /// A short lower-case name, for logs and metric labels.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::ErrorKind;
    /// assert_eq!(ErrorKind::Permanent.as_str(), "permanent");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Panic => "panic",
        }
    }
}

/// Marks a handler error as permanent: no retry, straight to the dead
/// letters (or counted failed when the bus keeps none).
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Message, Permanent};
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let _s = bus.subscribe("orders.created", |m: &Message<String>| {
///     if m.payload().is_empty() {
///         return Err(Permanent::new("empty order"));
///     }
///     Ok(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Permanent(BoxError);

impl Permanent {
    /// Wraps `error` as permanent.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{BoxError, ErrorKind, Permanent};
    /// let e: BoxError = Box::new(Permanent::new(std::io::Error::other("schema mismatch")));
    /// assert_eq!(ErrorKind::of(&e), ErrorKind::Permanent);
    /// assert_eq!(e.to_string(), "schema mismatch");
    /// ```
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }

    /// The wrapped error.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Permanent;
    /// let p = Permanent::new("bad input");
    /// assert_eq!(p.into_inner().to_string(), "bad input");
    /// ```
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Permanent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Where a retried message goes relative to the messages after it.
///
/// # Examples
///
/// ```
/// use topicbus::RetryOrder;
/// assert_eq!(RetryOrder::default(), RetryOrder::Reorder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryOrder {
    /// The subscription goes on with later messages while a failed one
    /// waits for its retry: throughput over order (the retried message is
    /// handled after messages published later).
    #[default]
    Reorder,
    /// The subscription stops taking messages while one waits for its
    /// retry: per-subscription order is kept, at the price of a stalled
    /// mailbox (its overflow policy then applies). The waiting still
    /// occupies no worker.
    Strict,
}

/// A classifier: decides per error whether it is worth a retry.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use topicbus::{Classifier, ErrorKind};
/// let by_text: Classifier = Arc::new(|e| {
///     if e.to_string().starts_with("4") { ErrorKind::Permanent } else { ErrorKind::Transient }
/// });
/// assert_eq!(by_text(&"404 not found".into()), ErrorKind::Permanent);
/// assert_eq!(by_text(&"503 unavailable".into()), ErrorKind::Transient);
/// ```
pub type Classifier = Arc<dyn Fn(&BoxError) -> ErrorKind + Send + Sync>;

/// Retries of failed handler calls: up to `max_attempts` attempts in all,
/// separated by exponential backoff with full jitter (a uniformly random
/// wait between zero and `initial × multiplier^(retry−1)`, capped at
/// `max_delay`), for the errors the classifier calls transient. A waiting
/// retry sits in the bus's timer, never on a worker.
///
/// Inside the handler, [`Message::attempt`](crate::Message::attempt) tells
/// which attempt is running (1 for the first delivery).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{RetryOrder, RetryPolicy};
///
/// let policy = RetryPolicy::new(5)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .order(RetryOrder::Strict);
/// // The third retry waits at most 50 ms × 2² = 200 ms.
/// assert_eq!(policy.max_backoff(3), Duration::from_millis(200));
/// assert!(policy.delay(3, 0.5) <= Duration::from_millis(200));
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    initial: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: bool,
    pub(crate) order: RetryOrder,
    pub(crate) retry_panics: bool,
    classifier: Option<Classifier>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial", &self.initial)
            .field("max_delay", &self.max_delay)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .field("order", &self.order)
            .field("retry_panics", &self.retry_panics)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all (1 means no retry), 100 ms
    /// initial backoff doubling up to 30 s, full jitter, reordering, panics
    /// not retried, the default classifier ([`ErrorKind::of`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::RetryPolicy;
    /// assert_eq!(RetryPolicy::new(5).max_attempts(), 5);
    /// assert_eq!(RetryPolicy::new(0).max_attempts(), 1); // at least one attempt
    /// ```
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: true,
            order: RetryOrder::Reorder,
            retry_panics: false,
            classifier: None,
        }
    }

    /// The first retry's maximum wait and the cap on every wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::RetryPolicy;
    /// let p = RetryPolicy::new(10).backoff(Duration::from_millis(10), Duration::from_millis(50));
    /// assert_eq!(p.max_backoff(1), Duration::from_millis(10));
    /// assert_eq!(p.max_backoff(3), Duration::from_millis(40));
    /// assert_eq!(p.max_backoff(4), Duration::from_millis(50)); // capped
    /// ```
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max_delay: Duration) -> Self {
        self.initial = initial;
        self.max_delay = max_delay.max(initial);
        self
    }

    /// Growth per retry (default 2; values below 1 count as 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::RetryPolicy;
    /// let p = RetryPolicy::new(5).backoff(Duration::from_millis(100), Duration::from_secs(60)).multiplier(3.0);
    /// assert_eq!(p.max_backoff(3), Duration::from_millis(900));
    /// ```
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Full jitter on (default) or off (then every wait is exactly the
    /// exponential value: predictable, but retries of many messages that
    /// failed together arrive together).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::RetryPolicy;
    /// let p = RetryPolicy::new(3).backoff(Duration::from_millis(100), Duration::from_secs(1)).jitter(false);
    /// assert_eq!(p.delay(2, 0.1), Duration::from_millis(200)); // the random unit is ignored
    /// ```
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Order of retried messages (default [`RetryOrder::Reorder`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, RetryOrder, RetryPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let policy = RetryPolicy::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)).order(RetryOrder::Strict);
    /// let _sub = bus.subscribe_with(SubscribeOptions::new().pattern("t").retry(policy), move |m: &Message<u32>| {
    ///     if *m.payload() == 0 && m.attempt() == 1 {
    ///         return Err("first try fails");
    ///     }
    ///     tx.lock().unwrap().send(*m.payload()).map_err(|_| "test ended")
    /// })?;
    /// bus.publish("t", 0)?;
    /// bus.publish("t", 1)?;
    /// let wait = Duration::from_secs(10);
    /// assert_eq!([rx.recv_timeout(wait)?, rx.recv_timeout(wait)?], [0, 1]); // the retry kept its place
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn order(mut self, order: RetryOrder) -> Self {
        self.order = order;
        self
    }

    /// Retry after a panic too (default: a panic is dead-lettered at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, RetryPolicy, SubscribeOptions};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let policy = RetryPolicy::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)).retry_panics(true);
    /// let s = bus.subscribe_with(SubscribeOptions::new().pattern("t").retry(policy), |m: &Message<u32>| {
    ///     assert!(m.attempt() > 1, "flaky on the first attempt");
    /// })?;
    /// let c = bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// assert!(c.all_succeeded());
    /// assert_eq!((s.stats().panicked, s.stats().handled), (0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn retry_panics(mut self, on: bool) -> Self {
        self.retry_panics = on;
        self
    }

    /// Decides which errors are retried (default [`ErrorKind::of`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{ErrorKind, RetryPolicy};
    /// let policy = RetryPolicy::new(3).classify(|e| {
    ///     if e.to_string().contains("timeout") { ErrorKind::Transient } else { ErrorKind::Permanent }
    /// });
    /// assert_eq!(policy.kind_of(&"db timeout".into()), ErrorKind::Transient);
    /// assert_eq!(policy.kind_of(&"no such user".into()), ErrorKind::Permanent);
    /// ```
    #[must_use]
    pub fn classify(
        mut self,
        classifier: impl Fn(&BoxError) -> ErrorKind + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// The kind of `error` under this policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{BoxError, ErrorKind, Permanent, RetryPolicy};
    /// let p = RetryPolicy::new(3);
    /// let permanent: BoxError = Box::new(Permanent::new("no"));
    /// assert_eq!(p.kind_of(&permanent), ErrorKind::Permanent);
    /// assert_eq!(p.kind_of(&"timeout".into()), ErrorKind::Transient);
    /// ```
    pub fn kind_of(&self, error: &BoxError) -> ErrorKind {
        match &self.classifier {
            Some(c) => c(error),
            None => ErrorKind::of(error),
        }
    }

    /// Attempts in all.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::RetryPolicy;
    /// assert_eq!(RetryPolicy::new(4).max_attempts(), 4); // the first attempt and three retries
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest wait before retry number `retry` (1 for the first):
    /// `initial × multiplier^(retry−1)`, capped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::RetryPolicy;
    /// let p = RetryPolicy::new(10); // 100 ms doubling, capped at 30 s
    /// assert_eq!(p.max_backoff(1), Duration::from_millis(100));
    /// assert_eq!(p.max_backoff(2), Duration::from_millis(200));
    /// assert_eq!(p.max_backoff(20), Duration::from_secs(30));
    /// ```
    pub fn max_backoff(&self, retry: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(i32::try_from(retry.max(1) - 1).unwrap_or(i32::MAX));
        let secs = self.initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before retry number `retry` given a uniform random `unit`
    /// in `[0, 1)`: `unit × max_backoff(retry)` with jitter, else
    /// `max_backoff(retry)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::RetryPolicy;
    /// let p = RetryPolicy::new(5).backoff(Duration::from_millis(100), Duration::from_secs(10));
    /// assert_eq!(p.delay(2, 0.5), Duration::from_millis(100)); // half of the 200 ms bound
    /// assert_eq!(p.delay(2, 0.0), Duration::ZERO);
    /// ```
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let max = self.max_backoff(retry);
        if self.jitter {
            max.mul_f64(unit.clamp(0.0, 1.0))
        } else {
            max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_doubles_and_caps() {
        let p = RetryPolicy::new(10)
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .jitter(false);
        let waits: Vec<u128> = (1..=6).map(|r| p.delay(r, 0.3).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 100, 100]);
        assert_eq!(p.max_backoff(1000), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_exponential_value() {
        let p = RetryPolicy::new(10).backoff(Duration::from_millis(10), Duration::from_secs(1));
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=8 {
            let max = p.max_backoff(retry);
            let mut seen_low = false;
            let mut seen_high = false;
            for _ in 0..2000 {
                let d = p.delay(retry, rng.f64());
                assert!(d <= max, "retry {retry}: {d:?} > {max:?}");
                seen_low |= d < max / 4;
                seen_high |= d > max * 3 / 4;
            }
            assert!(
                seen_low && seen_high,
                "retry {retry}: jitter spans the range"
            );
        }
        assert_eq!(p.delay(1, 0.0), Duration::ZERO);
    }

    #[test]
    fn permanent_is_found_through_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Permanent);
        let e: BoxError = Box::new(Outer(Permanent::new("inner")));
        assert_eq!(ErrorKind::of(&e), ErrorKind::Permanent);
        let p = RetryPolicy::new(3).classify(|_| ErrorKind::Transient);
        assert_eq!(
            p.kind_of(&e),
            ErrorKind::Transient,
            "a classifier overrides"
        );
    }
}

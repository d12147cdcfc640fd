//! What the adapters to outer systems share (features `redis`, `postgres`):
//! reconnect backoff, a stop flag their threads wait on, the health issue
//! of a link that is down, and a window of recently seen message ids.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::sync::{Condvar, Mutex};
use crate::MessageId;

/// Full-jitter exponential backoff (AWS architecture blog, 2015): attempt
/// `n` waits a uniformly random time in `[0, min(cap, base × 2^n)]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Backoff {
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A stop flag that waits can watch.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    pub(crate) fn stop(&self) {
        *self.stopped.lock() = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits up to `d`; true when stopped (at once or meanwhile).
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        let mut stopped = self.stopped.lock();
        while !*stopped {
            let (guard, timed_out) = self.changed.wait_until(stopped, deadline);
            stopped = guard;
            if timed_out {
                break;
            }
        }
        *stopped
    }
}

/// The health issue of an adapter link that is down: `what` disconnected,
/// with the last error when there was one.
pub(crate) fn disconnected(
    component: String,
    what: &str,
    last_error: &Mutex<Option<String>>,
) -> crate::HealthIssue {
    let why = last_error
        .lock()
        .clone()
        .unwrap_or_else(|| "connecting".into());
    crate::HealthIssue::new(
        crate::HealthStatus::Degraded,
        component,
        format!("{what} ({why})"),
    )
}

/// The last `cap` message ids seen.
pub(crate) struct Window {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    cap: usize,
}

impl Window {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            set: HashSet::with_capacity(cap.min(1 << 16)),
            order: VecDeque::with_capacity(cap.min(1 << 16)),
            cap,
        }
    }

    /// True when `id` is in the window.
    #[cfg(feature = "postgres")]
    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.set.contains(&id)
    }

    /// False when `id` is in the window; else remembers it.
    pub(crate) fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_the_oldest_first() {
        let ids: Vec<MessageId> = (0..4).map(|_| MessageId::new()).collect();
        let mut w = Window::new(2);
        assert!(w.insert(ids[0]) && w.insert(ids[1]));
        assert!(!w.insert(ids[0]) && !w.insert(ids[1]));
        assert!(w.insert(ids[2]));
        assert!(w.insert(ids[0]), "the oldest was forgotten");
        assert!(!w.insert(ids[2]));
    }

    #[test]
    fn backoff_stays_under_its_growing_ceiling_and_cap() {
        let b = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(500),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(10 << attempt.min(6)).min(b.cap);
            for _ in 0..50 {
                assert!(b.delay(attempt) <= ceiling, "attempt {attempt}");
            }
        }
        // Jitter: not all the same.
        let first = b.delay(5);
        assert!((0..100).any(|_| b.delay(5) != first));
    }

    #[test]
    fn a_stop_ends_a_wait() {
        let stop = std::sync::Arc::new(Stop::default());
        assert!(!stop.wait(Duration::from_millis(1)));
        let s = std::sync::Arc::clone(&stop);
        let t = std::thread::spawn(move || s.wait(Duration::from_secs(600)));
        stop.stop();
        assert!(t.join().unwrap());
        assert!(stop.is_stopped());
    }
}

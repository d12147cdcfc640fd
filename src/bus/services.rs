//! The bus-wide services a subscription reaches: the worker pool, the
//! clock and timer, the dead letters and the hooks.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::message::Message;
use crate::pool::Pool;
use crate::registry::SubscriptionId;
use crate::reliability::timer::Timer;
use crate::reliability::{
    Clock, DeadLetter, DeadLetterQueue, DeadLetterReason, Failure, NewLetter,
};
use crate::sync::atomic::AtomicBool;

use super::hooks::Hooks;

pub(crate) struct Services<T> {
    pub(crate) pool: Pool,
    /// A custom clock; `None` reads the system clocks directly.
    pub(crate) clock: Option<Arc<dyn Clock>>,
    /// Started on first use.
    pub(crate) timer: Timer,
    pub(crate) dlq: Option<Arc<DeadLetterQueue<T>>>,
    pub(crate) hooks: Option<Box<Hooks<T>>>,
    /// Set when shutdown begins: holds (open breakers) give up instead of
    /// waiting.
    pub(crate) draining: AtomicBool,
    /// Handler latency, sampled.
    pub(crate) metrics: crate::metrics::Recorder,
}

impl<T: 'static> std::fmt::Debug for Services<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("pool", &self.pool)
            .field("timer", &self.timer)
            .field("dlq", &self.dlq)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl<T> Services<T> {
    /// Wall-clock time.
    #[inline]
    pub(crate) fn wall(&self) -> SystemTime {
        match &self.clock {
            Some(c) => c.wall(),
            None => crate::time::now(),
        }
    }

    /// Monotonic time.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match &self.clock {
            Some(c) => c.now(),
            None => Instant::now(),
        }
    }

    /// Runs `f` on the hooks when the bus has any.
    #[inline]
    pub(crate) fn hooks(&self, f: impl FnOnce(&Hooks<T>)) {
        if let Some(h) = &self.hooks {
            f(h);
        }
    }

    /// Puts `message` in the dead letters (given up now, first failed at
    /// `first_failure` or now) and tells the hook; `None` on a bus without
    /// dead letters.
    pub(crate) fn dead_letter(
        &self,
        message: &Arc<Message<T>>,
        subscription: Option<SubscriptionId>,
        reason: DeadLetterReason,
        error: Option<Failure>,
        attempts: u32,
        first_failure: Option<SystemTime>,
    ) -> Option<DeadLetter<T>>
    where
        T: 'static,
    {
        let queue = self.dlq.as_ref()?;
        let now = self.wall();
        let letter = queue.insert(NewLetter {
            message: Arc::clone(message),
            subscription,
            reason,
            error,
            attempts,
            first_failure: first_failure.unwrap_or(now),
            last_failure: now,
        });
        self.hooks(|h| h.call(&h.on_dead_letter, |f| f(&letter)));
        Some(letter)
    }

    /// True when `msg` has expired by the bus's clock.
    #[inline]
    pub(crate) fn expired(&self, msg: &crate::Message<T>) -> bool {
        msg.expires_at().is_some() && msg.is_expired_at(self.wall())
    }
}

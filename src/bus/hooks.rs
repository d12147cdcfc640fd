//! Lifecycle hooks (SPEC R30): user callbacks at the points of a message's
//! life, set on the [`BusBuilder`](crate::BusBuilder).
//!
//! A bus without hooks pays one never-taken branch where each would run.
//! Hooks run on the thread where the event happens (a publisher, a worker,
//! the timer), must be quick, and are isolated: a panicking hook is caught
//! and counted in [`BusStats::hook_panics`](crate::BusStats::hook_panics);
//! the message goes on as if the hook had returned.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::message::Message;
use crate::registry::SubscriptionId;
use crate::reliability::{CircuitState, DeadLetter, Failure};
use crate::sync::atomic::{AtomicU64, Ordering};

use super::{Outcome, Receipt, ShutdownReport};

type Hook<A> = Option<Box<A>>;
type OnPublish<T> = dyn Fn(&Message<T>, &Receipt) + Send + Sync;
type OnMessage<T> = dyn Fn(&Message<T>, SubscriptionId) + Send + Sync;
type OnError<T> = dyn Fn(&Message<T>, SubscriptionId, &Failure) + Send + Sync;
type OnRetry<T> = dyn Fn(&Message<T>, SubscriptionId, u32, Duration) + Send + Sync;
type OnDeadLetter<T> = dyn Fn(&DeadLetter<T>) + Send + Sync;
type OnCircuit = dyn Fn(SubscriptionId, CircuitState, CircuitState) + Send + Sync;
type OnShutdown = dyn Fn(&ShutdownReport) + Send + Sync;
type OnOutcome<T> = dyn Fn(&Message<T>, SubscriptionId, Outcome) + Send + Sync;

/// The hooks of one bus.
pub(crate) struct Hooks<T> {
    pub(crate) on_publish: Hook<OnPublish<T>>,
    pub(crate) on_deliver: Hook<OnMessage<T>>,
    pub(crate) on_outcome: Hook<OnOutcome<T>>,
    pub(crate) on_error: Hook<OnError<T>>,
    pub(crate) on_retry: Hook<OnRetry<T>>,
    pub(crate) on_dead_letter: Hook<OnDeadLetter<T>>,
    pub(crate) on_expire: Hook<OnMessage<T>>,
    pub(crate) on_circuit_change: Hook<OnCircuit>,
    pub(crate) on_shutdown: Hook<OnShutdown>,
    panics: AtomicU64,
}

impl<T> Default for Hooks<T> {
    fn default() -> Self {
        Self {
            on_publish: None,
            on_deliver: None,
            on_outcome: None,
            on_error: None,
            on_retry: None,
            on_dead_letter: None,
            on_expire: None,
            on_circuit_change: None,
            on_shutdown: None,
            panics: AtomicU64::new(0),
        }
    }
}

impl<T> std::fmt::Debug for Hooks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_publish", &self.on_publish.is_some())
            .field("on_deliver", &self.on_deliver.is_some())
            .field("on_outcome", &self.on_outcome.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("on_retry", &self.on_retry.is_some())
            .field("on_dead_letter", &self.on_dead_letter.is_some())
            .field("on_expire", &self.on_expire.is_some())
            .field("on_circuit_change", &self.on_circuit_change.is_some())
            .field("on_shutdown", &self.on_shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Hooks<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.on_publish.is_none()
            && self.on_deliver.is_none()
            && self.on_outcome.is_none()
            && self.on_error.is_none()
            && self.on_retry.is_none()
            && self.on_dead_letter.is_none()
            && self.on_expire.is_none()
            && self.on_circuit_change.is_none()
            && self.on_shutdown.is_none()
    }

    /// Runs `call` on the hook, if set, catching a panic.
    #[inline]
    pub(crate) fn call<H: ?Sized>(&self, hook: &Hook<H>, call: impl FnOnce(&H)) {
        if let Some(h) = hook {
            if catch_unwind(AssertUnwindSafe(|| call(h))).is_err() {
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

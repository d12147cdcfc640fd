//! Subscription filters (SPEC R26, R27) and the deduplication gate (R22):
//! checked on the publisher's thread before a message takes a mailbox slot.

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::message::Message;
use crate::reliability::{Dedup, Window};
use crate::sync::Mutex;

/// A user predicate on messages of payload `T`.
pub(crate) type Predicate<T> = Arc<dyn Fn(&Message<T>) -> bool + Send + Sync>;
/// A user content key for deduplication.
pub(crate) type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;

/// A payload-typed function kept in the (untyped) options until subscribe
/// checks its type against the bus's.
#[derive(Clone)]
pub(crate) struct Typed(pub(crate) Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Typed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<fn>")
    }
}

impl Typed {
    pub(crate) fn predicate<T: 'static>(
        f: impl Fn(&Message<T>) -> bool + Send + Sync + 'static,
    ) -> Self {
        let p: Predicate<T> = Arc::new(f);
        Self(Arc::new(p))
    }

    pub(crate) fn key<T: 'static, K: Hash>(
        f: impl Fn(&Message<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        // Fixed seeds: the same content hashes the same in every process run.
        let hasher = foldhash::quality::FixedState::with_seed(0x746f_7069_6362_7573);
        let k: KeyFn<T> = Arc::new(move |m| hasher.hash_one(f(m)));
        Self(Arc::new(k))
    }

    pub(crate) fn get<F: Clone + 'static>(&self) -> Option<F> {
        self.0.downcast_ref::<F>().cloned()
    }
}

/// How a header must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderRule {
    Present(String),
    Equals(String, String),
}

/// The untyped filter settings of [`SubscribeOptions`](crate::SubscribeOptions).
#[derive(Debug, Clone, Default)]
pub(crate) struct FilterSpec {
    pub(crate) entity: Option<Arc<str>>,
    pub(crate) directed_only: bool,
    pub(crate) broadcast_only: bool,
    pub(crate) senders: Vec<Arc<str>>,
    pub(crate) headers: Vec<HeaderRule>,
    pub(crate) predicate: Option<Typed>,
}

impl FilterSpec {
    pub(crate) fn is_empty(&self) -> bool {
        self.entity.is_none()
            && !self.broadcast_only
            && self.senders.is_empty()
            && self.headers.is_empty()
            && self.predicate.is_none()
    }
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Screen {
    Pass,
    Filtered,
    Duplicate,
}

/// The publisher-side checks of one subscription.
pub(crate) struct Gate<T> {
    spec: FilterSpec,
    predicate: Option<Predicate<T>>,
    dedup: Option<(Mutex<Window>, Option<KeyFn<T>>)>,
}

impl<T> fmt::Debug for Gate<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("spec", &self.spec)
            .field("dedup", &self.dedup.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: 'static> Gate<T> {
    /// The gate for `spec` and `dedup`; `None` when there is nothing to
    /// check. `Err` when a typed function is for another payload type.
    pub(crate) fn new(
        spec: &FilterSpec,
        dedup: Option<Dedup>,
        key: Option<&Typed>,
    ) -> Result<Option<Self>, &'static str> {
        let predicate = match &spec.predicate {
            None => None,
            Some(t) => Some(
                t.get::<Predicate<T>>()
                    .ok_or("the filter is for another payload type than the bus's")?,
            ),
        };
        let key = match key {
            None => None,
            Some(t) => Some(
                t.get::<KeyFn<T>>()
                    .ok_or("the deduplication key is for another payload type than the bus's")?,
            ),
        };
        if key.is_some() && dedup.is_none() {
            return Err("a deduplication key needs a deduplication window (`dedup`)");
        }
        if spec.is_empty() && dedup.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            spec: spec.clone(),
            predicate,
            dedup: dedup.map(|d| (Mutex::new(Window::new(d)), key)),
        }))
    }

    /// True when the filters accept `msg`.
    pub(crate) fn accepts(&self, msg: &Message<T>) -> bool {
        let s = &self.spec;
        let to = msg.to();
        if s.broadcast_only && to.is_some() {
            return false;
        }
        if let Some(me) = &s.entity {
            match to {
                Some(to) if to != &**me => return false,
                None if s.directed_only => return false,
                _ => {}
            }
        }
        if !s.senders.is_empty() {
            match msg.from() {
                Some(from) if s.senders.iter().any(|x| &**x == from) => {}
                _ => return false,
            }
        }
        for rule in &s.headers {
            let ok = match rule {
                HeaderRule::Present(n) => msg.headers().contains(n),
                HeaderRule::Equals(n, v) => msg.headers().get(n) == Some(v.as_str()),
            };
            if !ok {
                return false;
            }
        }
        self.predicate.as_ref().is_none_or(|p| p(msg))
    }

    /// The filters, then the deduplication window (which remembers `msg`
    /// when it passes).
    pub(crate) fn screen(
        &self,
        msg: &Message<T>,
        now: impl FnOnce() -> std::time::Instant,
    ) -> Screen {
        if !self.accepts(msg) {
            return Screen::Filtered;
        }
        self.dedup_only(msg, now)
    }

    /// The deduplication window alone.
    pub(crate) fn dedup_only(
        &self,
        msg: &Message<T>,
        now: impl FnOnce() -> std::time::Instant,
    ) -> Screen {
        if let Some((window, key)) = &self.dedup {
            let k = match key {
                Some(f) => u128::from(f(msg)),
                None => msg.id().as_u128(),
            };
            if !window.lock().first_sighting(k, now()) {
                return Screen::Duplicate;
            }
        }
        Screen::Pass
    }
}

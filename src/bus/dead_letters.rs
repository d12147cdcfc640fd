//! The public face of the bus's dead-letter queue: query, take, replay.

use std::sync::{Arc, Weak};

use crate::registry::SubscriptionId;
use crate::reliability::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterQueue, DeadLetterStats,
};

use super::{Inner, Receipt};

/// Why a dead letter could not be replayed. The letter stays in the queue.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, Permanent, ReplayError};
/// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
/// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
/// bus.publish_confirmed("t", 1, Duration::from_secs(5))?;
/// let dlq = bus.dead_letters().expect("configured");
/// let id = dlq.all()[0].id;
/// assert!(dlq.take(id).is_some());
/// assert_eq!(dlq.replay(id), Err(ReplayError::NotFound(id)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No letter with this id (replayed, removed or evicted already).
    #[error("no dead letter {0:?}")]
    NotFound(DeadLetterId),
    /// The letter's subscription no longer exists; use
    /// [`DeadLetters::republish`] to route it to the subscriptions of now.
    #[error("the subscription {subscription} of dead letter {id:?} is gone")]
    SubscriptionGone {
        /// The letter.
        id: DeadLetterId,
        /// Its subscription.
        subscription: SubscriptionId,
    },
    /// The bus is shutting down or shut down.
    #[error("the bus is shut down")]
    Closed,
}

/// What a replay of several letters did.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, Permanent};
/// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
/// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
/// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
/// let dlq = bus.dead_letters().expect("configured");
/// let summary = dlq.replay_all();
/// assert_eq!((summary.replayed, summary.failed.len()), (1, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Letters delivered again (and taken out of the queue).
    pub replayed: u64,
    /// Letters that could not be replayed (still in the queue), and why.
    pub failed: Vec<(DeadLetterId, ReplayError)>,
}

/// The bus's dead-letter queue (see
/// [`BusBuilder::dead_letters`](crate::BusBuilder::dead_letters)): bounded,
/// queried by topic pattern, subscription, error kind, reason and time;
/// letters can be replayed to their subscription (they keep their message
/// id, causation and headers; the attempt count starts over) or
/// republished to whoever matches now. A cheap handle: clone it freely.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use topicbus::{Bus, DeadLetterQuery, DeadLetterReason, Message};
///
/// let bus = Bus::<String>::builder().workers(1).dead_letters(1_000).build()?;
/// let healthy = Arc::new(AtomicBool::new(false));
/// let h = healthy.clone();
/// let mailer = bus.subscribe("mail.send", move |_m: &Message<String>| {
///     if h.load(Ordering::SeqCst) { Ok(()) } else { Err("smtp down") }
/// })?;
/// bus.publish_confirmed("mail.send", "hello".into(), Duration::from_secs(10))?;
///
/// let dlq = bus.dead_letters().expect("configured");
/// let stuck = dlq.query(&DeadLetterQuery::new().reason(DeadLetterReason::RetriesExhausted));
/// assert_eq!(stuck.len(), 1);
/// assert_eq!(stuck[0].error.as_ref().map(|e| e.message.as_str()), Some("smtp down"));
///
/// healthy.store(true, Ordering::SeqCst); // the server is back
/// let summary = dlq.replay_all();
/// assert_eq!(summary.replayed, 1);
/// bus.shutdown(Duration::from_secs(10))?;
/// assert_eq!(mailer.stats().handled, 1);
/// assert!(dlq.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DeadLetters<T: Send + Sync + 'static> {
    queue: Arc<DeadLetterQueue<T>>,
    bus: Weak<Inner<T>>,
}

impl<T: Send + Sync + 'static> Clone for DeadLetters<T> {
    fn clone(&self) -> Self {
        Self {
            queue: Arc::clone(&self.queue),
            bus: Weak::clone(&self.bus),
        }
    }
}

impl<T: Send + Sync + 'static> std::fmt::Debug for DeadLetters<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("stats", &self.queue.stats())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> DeadLetters<T> {
    pub(crate) fn new(queue: Arc<DeadLetterQueue<T>>, bus: Weak<Inner<T>>) -> Self {
        Self { queue, bus }
    }

    /// Letters in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// assert_eq!(bus.dead_letters().map(|d| d.len()), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when the queue is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().dead_letters(10).build()?;
    /// assert!(bus.dead_letters().expect("configured").is_empty());
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().dead_letters(500).build()?;
    /// assert_eq!(bus.dead_letters().expect("configured").capacity(), 500);
    /// # Ok::<(), topicbus::BuildError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Counters (inserted, evicted, replayed, removed, sink errors).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// dlq.remove(dlq.all()[0].id);
    /// let s = dlq.stats();
    /// assert_eq!((s.inserted, s.removed, s.len), (1, 1, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> DeadLetterStats {
        self.queue.stats()
    }

    /// The letter `id`, if still in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// let c = bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// let id = dlq.all()[0].id;
    /// assert_eq!(dlq.get(id).map(|l| l.message.id()), Some(c.id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, id: DeadLetterId) -> Option<DeadLetter<T>> {
        self.queue.get(id)
    }

    /// Every letter, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// for i in 0..3 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// let payloads: Vec<u32> = bus.dead_letters().expect("configured").all().iter().map(|l| *l.message.payload()).collect();
    /// assert_eq!(payloads, [0, 1, 2]); // oldest first
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn all(&self) -> Vec<DeadLetter<T>> {
        self.query(&DeadLetterQuery::new())
    }

    /// The letters `query` selects, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Pattern, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("#", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("orders.eu", 1, Duration::from_secs(10))?;
    /// bus.publish_confirmed("users.eu", 2, Duration::from_secs(10))?;
    /// let orders = bus.dead_letters().expect("configured").query(&DeadLetterQuery::new().topic(Pattern::parse("orders.#")?));
    /// assert_eq!(orders.len(), 1);
    /// assert_eq!(*orders[0].message.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query(&self, query: &DeadLetterQuery) -> Vec<DeadLetter<T>> {
        self.queue.query(query)
    }

    /// Takes letter `id` out of the queue (counted as removed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 7, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// let letter = dlq.take(dlq.all()[0].id).expect("there");
    /// assert_eq!(*letter.message.payload(), 7); // handled by hand now
    /// assert!(dlq.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self, id: DeadLetterId) -> Option<DeadLetter<T>> {
        self.queue.take(id, false)
    }

    /// Removes letter `id`; true when it was there.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// let id = dlq.all()[0].id;
    /// assert!(dlq.remove(id));
    /// assert!(!dlq.remove(id)); // already gone
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, id: DeadLetterId) -> bool {
        self.take(id).is_some()
    }

    /// Removes every letter `query` selects; returns how many.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, DeadLetterReason, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let _s = bus.subscribe("t", |m: &Message<u32>| match m.payload() {
    ///     0 => Err(Permanent::new("bad")),
    ///     _ => panic!("bug"),
    /// })?;
    /// bus.publish_confirmed("t", 0, Duration::from_secs(10))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// assert_eq!(dlq.purge(&DeadLetterQuery::new().reason(DeadLetterReason::Permanent)), 1);
    /// assert_eq!(dlq.all()[0].reason, DeadLetterReason::Panicked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge(&self, query: &DeadLetterQuery) -> usize {
        self.queue
            .ids(query)
            .into_iter()
            .filter(|id| self.remove(*id))
            .count()
    }

    /// Delivers letter `id` again to its subscription (skipping filters and
    /// deduplication, which it passed before) and takes it out of the
    /// queue. A letter without a subscription (a delayed message given up
    /// at shutdown) is republished.
    ///
    /// # Errors
    ///
    /// [`ReplayError`]; the letter then stays in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let fixed = Arc::new(AtomicBool::new(false));
    /// let f = fixed.clone();
    /// let s = bus.subscribe("t", move |_m: &Message<u32>| {
    ///     if f.load(Ordering::SeqCst) { Ok(()) } else { Err(Permanent::new("bug")) }
    /// })?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// fixed.store(true, Ordering::SeqCst); // the bug is fixed
    /// let dlq = bus.dead_letters().expect("configured");
    /// dlq.replay(dlq.all()[0].id)?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!((s.stats().handled, dlq.len()), (1, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay(&self, id: DeadLetterId) -> Result<Receipt, ReplayError> {
        self.redeliver(id, false)
    }

    /// Routes letter `id` through the bus's current subscriptions, as a new
    /// publish of the same message would be, and takes it out of the
    /// queue.
    ///
    /// # Errors
    ///
    /// [`ReplayError::NotFound`], [`ReplayError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let old = bus.subscribe("t", |_m: &Message<u32>| Err(Permanent::new("no")))?;
    /// bus.publish_confirmed("t", 1, Duration::from_secs(10))?;
    /// old.unsubscribe(); // its replacement is a receiver
    /// let rx = bus.receiver("t")?;
    /// let dlq = bus.dead_letters().expect("configured");
    /// assert_eq!(dlq.republish(dlq.all()[0].id)?.matched, 1);
    /// assert_eq!(*rx.try_recv()?.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn republish(&self, id: DeadLetterId) -> Result<Receipt, ReplayError> {
        self.redeliver(id, true)
    }

    /// Replays every letter `query` selects, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, DeadLetterQuery, Message, Pattern, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let up = Arc::new(AtomicBool::new(false));
    /// let u = up.clone();
    /// let _s = bus.subscribe("#", move |_m: &Message<u32>| {
    ///     if u.load(Ordering::SeqCst) { Ok(()) } else { Err(Permanent::new("down")) }
    /// })?;
    /// bus.publish_confirmed("mail.send", 1, Duration::from_secs(10))?;
    /// bus.publish_confirmed("sms.send", 2, Duration::from_secs(10))?;
    /// up.store(true, Ordering::SeqCst);
    /// let dlq = bus.dead_letters().expect("configured");
    /// let summary = dlq.replay_where(&DeadLetterQuery::new().topic(Pattern::parse("mail.#")?));
    /// assert_eq!((summary.replayed, dlq.len()), (1, 1)); // the SMS letter stays
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay_where(&self, query: &DeadLetterQuery) -> ReplaySummary {
        let mut summary = ReplaySummary::default();
        for id in self.queue.ids(query) {
            match self.replay(id) {
                Ok(_) => summary.replayed += 1,
                Err(e) => summary.failed.push((id, e)),
            }
        }
        summary
    }

    /// Replays every letter, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Permanent};
    /// let bus = Bus::<u32>::builder().workers(1).dead_letters(10).build()?;
    /// let up = Arc::new(AtomicBool::new(false));
    /// let u = up.clone();
    /// let s = bus.subscribe("t", move |_m: &Message<u32>| {
    ///     if u.load(Ordering::SeqCst) { Ok(()) } else { Err(Permanent::new("down")) }
    /// })?;
    /// for i in 0..3 {
    ///     bus.publish_confirmed("t", i, Duration::from_secs(10))?;
    /// }
    /// up.store(true, Ordering::SeqCst);
    /// assert_eq!(bus.dead_letters().expect("configured").replay_all().replayed, 3);
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(s.stats().handled, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay_all(&self) -> ReplaySummary {
        self.replay_where(&DeadLetterQuery::new())
    }

    fn redeliver(&self, id: DeadLetterId, republish: bool) -> Result<Receipt, ReplayError> {
        let inner = self.bus.upgrade().ok_or(ReplayError::Closed)?;
        let letter = self.queue.take(id, true).ok_or(ReplayError::NotFound(id))?;
        // Entered like a publish so that shutdown waits for it; not
        // committed: it is not a new publish.
        let entered = inner.publishes.enter();
        if inner.check_open().is_err() {
            drop(entered);
            self.queue.restore(letter);
            return Err(ReplayError::Closed);
        }
        let snapshot = inner.registry.load();
        let receipt = match letter.subscription {
            Some(sid) if !republish => match snapshot.get(sid) {
                Some(entry) => {
                    let mut receipt = Receipt::new(letter.message.id());
                    inner.offer(entry.value(), &letter.message, &mut receipt);
                    receipt
                }
                None => {
                    drop(entered);
                    self.queue.restore(letter);
                    return Err(ReplayError::SubscriptionGone {
                        id,
                        subscription: sid,
                    });
                }
            },
            _ => inner.dispatch(&snapshot, &letter.message),
        };
        drop(entered);
        Ok(receipt)
    }
}

//! Request-reply (SPEC R25).
//!
//! The first request creates the bus's inbox: an inline subscription to a
//! topic of its own (`_inbox.<random>`). A request carries that topic as
//! `reply_to` and a fresh correlation id; a reply
//! ([`Bus::reply`](crate::Bus::reply), [`Message::reply`]) is published to
//! the inbox with the request's correlation id, and the inbox's handler
//! hands it to the waiting requester. The timeout runs on the bus's timer.
//! A reply that finds no requester waiting (it timed out, or another reply
//! came first) is dropped and counted in
//! [`BusStats::late_replies`](crate::BusStats::late_replies).

use std::collections::HashMap;
use std::sync::Arc;

use crate::message::{Message, MessageId};
use crate::reliability::timer::Fire;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Condvar, Mutex};
use crate::topic::Topic;

use super::{Bus, PublishError, Receipt, SubscribeError, WeakBus};

/// Why a request got no reply.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, RequestError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let err = bus.request("nobody.home", 1, Duration::from_secs(1)).unwrap_err();
/// assert!(matches!(err, RequestError::NoResponders));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The inbox could not be set up.
    #[error(transparent)]
    Inbox(#[from] SubscribeError),
    /// No subscription matched the request: nobody could answer.
    #[error("no subscription matched the request")]
    NoResponders,
    /// No reply came within the timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The bus had shut down, or shut down while the request waited.
    #[error("the bus is shut down")]
    Closed,
}

/// Sends replies: a [`Bus`] or a [`WeakBus`] (what handlers hold).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, Replier};
/// // A responder that works with a strong or a weak handle alike.
/// fn answer(bus: &impl Replier<u32>, m: &Message<u32>) {
///     let _ = m.reply(bus, m.payload() + 1);
/// }
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let weak = bus.downgrade();
/// let _s = bus.subscribe("inc", move |m: &Message<u32>| answer(&weak, m))?;
/// assert_eq!(*bus.request("inc", 41, Duration::from_secs(10))?.payload(), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Replier<T: Send + Sync + 'static> {
    /// Publishes `payload` as the reply to `request`.
    ///
    /// # Errors
    ///
    /// [`PublishError::NoReplyTo`] when `request` names no `reply_to`;
    /// [`PublishError::Closed`] when the bus is gone; else as
    /// [`Bus::publish`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message, Replier};
    /// let bus = Bus::<&str>::builder().workers(1).build()?;
    /// let inbox = bus.receiver("inbox")?;
    /// let ask = Message::builder("ping".parse()?, "ping").reply_to("inbox".parse()?).build();
    /// bus.downgrade().send_reply(&ask, "pong")?;
    /// assert_eq!(*inbox.recv_timeout(Duration::from_secs(10))?.payload(), "pong");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn send_reply(&self, request: &Message<T>, payload: T) -> Result<Receipt, PublishError>;
}

impl<T: Send + Sync + 'static> Replier<T> for Bus<T> {
    fn send_reply(&self, request: &Message<T>, payload: T) -> Result<Receipt, PublishError> {
        self.reply(request, payload)
    }
}

impl<T: Send + Sync + 'static> Replier<T> for WeakBus<T> {
    fn send_reply(&self, request: &Message<T>, payload: T) -> Result<Receipt, PublishError> {
        self.upgrade()
            .ok_or(PublishError::Closed)?
            .reply(request, payload)
    }
}

impl<T: Send + Sync + 'static> Message<T> {
    /// Replies to this message through `bus` (a [`Bus`] or the
    /// [`WeakBus`] a handler holds): publishes `payload` to its `reply_to`,
    /// caused by it and in its conversation.
    ///
    /// # Errors
    ///
    /// As [`Replier::send_reply`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u64>::builder().workers(1).build()?;
    /// let weak = bus.downgrade();
    /// let _square = bus.subscribe("math.square", move |m: &Message<u64>| {
    ///     m.reply(&weak, m.payload() * m.payload()).map(drop)
    /// })?;
    /// let answer = bus.request("math.square", 12, Duration::from_secs(10))?;
    /// assert_eq!(*answer.payload(), 144);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply(&self, bus: &impl Replier<T>, payload: T) -> Result<Receipt, PublishError> {
        bus.send_reply(self, payload)
    }
}

/// One waiting request.
#[derive(Debug)]
struct Pending<T> {
    slot: Mutex<Option<Result<Arc<Message<T>>, RequestError>>>,
    done: Condvar,
}

/// The requests waiting for replies.
pub struct Inbox<T> {
    pub(crate) topic: Topic,
    waiting: Mutex<HashMap<MessageId, Arc<Pending<T>>>>,
    late: AtomicU64,
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("topic", &self.topic)
            .field("late", &self.late.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Inbox<T> {
    /// An inbox on a fresh random `_inbox.<hex>` topic.
    ///
    /// # Panics
    ///
    /// Never: `_inbox.` and 16 hexadecimal digits always make a valid
    /// topic (the `expect` states it).
    pub fn new() -> Arc<Self> {
        let topic = Topic::parse(&format!("_inbox.{:016x}", fastrand::u64(..)))
            .expect("`_inbox.` and 16 hex digits make a valid topic");
        Arc::new(Self {
            topic,
            waiting: Mutex::new(HashMap::new()),
            late: AtomicU64::new(0),
        })
    }

    /// Replies that found no request waiting (late or unknown).
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// The inbox subscription's handler: completes the matching request.
    pub fn deliver(&self, reply: &Arc<Message<T>>) {
        let Some(corr) = reply.correlation_id() else {
            self.late.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.complete(corr, Ok(Arc::clone(reply))) {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completes request `corr` with `result`; false when it is no longer
    /// waiting.
    fn complete(&self, corr: MessageId, result: Result<Arc<Message<T>>, RequestError>) -> bool {
        let Some(pending) = self.waiting.lock().remove(&corr) else {
            return false;
        };
        let mut slot = pending.slot.lock();
        *slot = Some(result);
        pending.done.notify_all();
        true
    }

    /// Registers request `corr`.
    pub fn expect(&self, corr: MessageId) -> Waiter<T> {
        let pending = Arc::new(Pending {
            slot: Mutex::new(None),
            done: Condvar::new(),
        });
        self.waiting.lock().insert(corr, Arc::clone(&pending));
        Waiter { corr, pending }
    }

    /// Forgets request `corr` (it was never sent).
    pub(crate) fn forget(&self, corr: MessageId) {
        self.waiting.lock().remove(&corr);
    }

    /// The timer job that ends request `corr`'s wait.
    pub fn timeout_job(self: &Arc<Self>, corr: MessageId) -> crate::reliability::timer::Job {
        let me = Arc::clone(self);
        Box::new(move |fire| {
            let why = match fire {
                Fire::Due => RequestError::Timeout,
                Fire::Shutdown => RequestError::Closed,
            };
            me.complete(corr, Err(why));
        })
    }
}

/// A requester's handle on its pending request.
#[derive(Debug)]
pub struct Waiter<T> {
    pub(crate) corr: MessageId,
    pending: Arc<Pending<T>>,
}

impl<T> Waiter<T> {
    /// Waits until the request completes (the timer guarantees it does).
    ///
    /// # Errors
    ///
    /// What completed the request instead of a reply:
    /// [`RequestError::Timeout`], [`RequestError::Closed`].
    pub fn wait(self) -> Result<Arc<Message<T>>, RequestError> {
        let mut slot = self.pending.slot.lock();
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            // Completed by a reply or by the timer job; the deadline only
            // re-checks.
            let (guard, _) = self.pending.done.wait_until(
                slot,
                std::time::Instant::now() + std::time::Duration::from_secs(1),
            );
            slot = guard;
        }
    }
}

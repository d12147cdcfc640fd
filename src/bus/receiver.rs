//! Pull subscriptions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::Message;
use crate::registry::SubscriptionId;
use crate::sync::atomic::{fence, Ordering};
use crate::sync::wait_deadline;
use crate::topic::Pattern;

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::options::{Control, Handle};
use super::stats::{Outcome, SubStats};
use super::sub::{Kind, PullWait, Sub};

/// A pull subscription: messages wait in its mailbox (bounded, three
/// priority lanes, the overflow policy applies) until taken.
///
/// A message counts as [`Received`](crate::Outcome::Received) when taken.
/// After the bus shuts down the receiver still hands out what was queued,
/// then reports `Closed`. Dropping the receiver unsubscribes; what is left
/// counts as dropped ([`Unsubscribed`](crate::DropReason::Unsubscribed)).
/// Several threads may receive from one receiver (share it by reference or
/// `Arc`); each message goes to one of them.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, Priority, Message, Topic};
///
/// let bus = Bus::<&str>::builder().workers(1).build()?;
/// let rx = bus.receiver("alerts.#")?;
/// bus.publish("alerts.disk", "90 %")?;
/// bus.publish_message(
///     Message::builder(Topic::parse("alerts.fire")?, "now").priority(Priority::High),
/// )?;
/// assert_eq!(*rx.recv()?.payload(), "now"); // high lane first
/// assert_eq!(*rx.try_recv()?.payload(), "90 %");
/// assert!(rx.try_recv().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Receiver<T: Send + Sync + 'static> {
    handle: Handle<T>,
}

impl<T: Send + Sync + 'static> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("id", &self.handle.sub.id)
            .field("patterns", &self.handle.sub.patterns)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Receiver<T> {
    pub(crate) fn new(handle: Handle<T>) -> Self {
        Self { handle }
    }

    fn sub(&self) -> &Sub<T> {
        &self.handle.sub
    }

    fn wait(&self) -> &PullWait {
        match &self.sub().kind {
            Kind::Pull(wait) => wait,
            // Receivers are only built around pull subscriptions.
            _ => unreachable!("a Receiver wraps a pull subscription"),
        }
    }

    /// The subscription's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// assert_eq!(rx.stats().id, rx.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> SubscriptionId {
        self.sub().id
    }

    /// The subscription's patterns.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("sensors.*.temp")?;
    /// assert_eq!(rx.patterns()[0].as_str(), "sensors.*.temp");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn patterns(&self) -> &[Pattern] {
        &self.sub().patterns
    }

    /// Takes the next message if one is queued (highest priority first).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is queued;
    /// [`TryRecvError::Closed`] when nothing is queued and the bus shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, TryRecvError};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    /// bus.publish("t", 1)?;
    /// assert_eq!(*rx.try_recv()?.payload(), 1);
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&self) -> Result<Arc<Message<T>>, TryRecvError> {
        match self.take() {
            Some(m) => Ok(m),
            None if self.is_ended() => self.take().ok_or(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the bus shut down and the queue is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let rx = bus.receiver("jobs")?;
    /// let producer = {
    ///     let bus = bus.clone();
    ///     std::thread::spawn(move || bus.publish("jobs", "resize".to_string()))
    /// };
    /// assert_eq!(rx.recv()?.payload(), "resize"); // blocks until it arrives
    /// producer.join().expect("no panic")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&self) -> Result<Arc<Message<T>>, RecvError> {
        self.recv_until(None).map_err(|_| RecvError::Closed)
    }

    /// Waits for the next message up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when nothing came in time;
    /// [`RecvTimeoutError::Closed`] once the bus shut down and the queue is
    /// empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, RecvTimeoutError};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10)).unwrap_err(), RecvTimeoutError::Timeout);
    /// bus.publish("t", 1)?;
    /// assert_eq!(*rx.recv_timeout(Duration::from_secs(10))?.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Arc<Message<T>>, RecvTimeoutError> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` for the next message.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// bus.publish("t", 1)?;
    /// bus.publish("t", 2)?;
    /// let deadline = Instant::now() + Duration::from_secs(10); // one budget for both
    /// let sum = *rx.recv_deadline(deadline)?.payload() + *rx.recv_deadline(deadline)?.payload();
    /// assert_eq!(sum, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Arc<Message<T>>, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    /// A blocking iterator that ends when the bus shut down and the queue
    /// is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("n")?;
    /// for i in 0..3 { bus.publish("n", i)?; }
    /// bus.shutdown(std::time::Duration::from_secs(1))?;
    /// let got: Vec<u32> = rx.iter().map(|m| *m.payload()).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Arc<Message<T>>> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// A non-blocking iterator over what is queued now.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// for i in 0..3 {
    ///     bus.publish("t", i)?;
    /// }
    /// assert_eq!(rx.try_iter().map(|m| *m.payload()).sum::<u32>(), 3);
    /// assert_eq!(rx.try_iter().count(), 0); // drained; does not wait
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter(&self) -> impl Iterator<Item = Arc<Message<T>>> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }

    /// The subscription's counters and queue depths.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// bus.publish("t", 1)?;
    /// bus.publish("t", 2)?;
    /// rx.try_recv()?;
    /// let s = rx.stats();
    /// assert_eq!((s.counts.received, s.queued[1]), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> SubStats {
        self.sub().stats()
    }

    /// Puts `msg` straight into this mailbox (its overflow policy applies),
    /// as a publish would; `None` when the bus is gone. Called inside a
    /// publish ([`Bus::publish_routed`](crate::Bus::publish_routed)).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn offer(&self, msg: &Arc<Message<T>>) -> Option<super::Offered> {
        let bus = self.handle.bus.upgrade()?;
        Some(self.sub().offer(&bus.services.pool, msg))
    }

    /// The bus this receiver belongs to.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn bus(&self) -> &std::sync::Weak<super::Inner<T>> {
        &self.handle.bus
    }

    /// Messages dropped by the overflow policy, and waiting now: what an
    /// adapter's outbox reports.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn drops_and_depth(&self) -> (u64, usize) {
        let s = self.stats();
        (s.counts.dropped.total(), s.queued.iter().sum())
    }

    /// Stops handing out messages: they queue (by the overflow policy) and
    /// receives wait until [`resume`](Self::resume).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// rx.pause();
    /// bus.publish("t", 1)?;
    /// assert!(rx.try_recv().is_err()); // kept in the mailbox
    /// rx.resume();
    /// assert_eq!(*rx.try_recv()?.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause(&self) {
        self.handle.pause();
    }

    /// Undoes [`pause`](Self::pause).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// rx.pause();
    /// bus.publish("t", 1)?;
    /// rx.resume();
    /// assert_eq!(*rx.try_recv()?.payload(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume(&self) {
        self.handle.resume();
    }

    /// True when the bus shut down (queued messages may remain).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let rx = bus.receiver("t")?;
    /// bus.publish("t", 1)?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// assert!(rx.is_ended());
    /// assert_eq!(*rx.try_recv()?.payload(), 1); // what was queued can still be taken
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_ended(&self) -> bool {
        let sub = self.sub();
        sub.ended.load(Ordering::SeqCst) || sub.closed.load(Ordering::SeqCst)
    }

    fn take(&self) -> Option<Arc<Message<T>>> {
        let sub = self.sub();
        if sub.paused.load(Ordering::Relaxed) {
            return None;
        }
        loop {
            let msg = sub.lanes.pop()?;
            // TTL at dequeue: an expired message is never handed out.
            if sub.services.expired(&msg) {
                sub.expire(&msg, 0);
                continue;
            }
            sub.settle(&msg, Outcome::Received);
            return Some(msg);
        }
    }

    /// Waits until `deadline`; `None` (no deadline, or one beyond the
    /// clock) waits for ever.
    fn recv_until(&self, deadline: Option<Instant>) -> Result<Arc<Message<T>>, RecvTimeoutError> {
        if let Some(m) = self.take() {
            return Ok(m);
        }
        let wait = self.wait();
        wait.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in the publisher's `after_push`.
        fence(Ordering::SeqCst);
        let mut guard = wait.lock.lock();
        let out = loop {
            if let Some(m) = self.take() {
                break Ok(m);
            }
            if self.is_ended() {
                // A last look: a message may have raced the end.
                break self.take().ok_or(RecvTimeoutError::Closed);
            }
            let (g, timed_out) = wait.ready.wait_until(guard, wait_deadline(deadline));
            guard = g;
            if timed_out && deadline.is_some() {
                break self.take().ok_or(RecvTimeoutError::Timeout);
            }
        };
        drop(guard);
        wait.waiters.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

impl<T: Send + Sync + 'static> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.handle.unsubscribe();
    }
}

#[cfg(feature = "async")]
impl<T: Send + Sync + 'static> futures_core::Stream for Receiver<T> {
    type Item = Arc<Message<T>>;

    /// Yields the next message; ends once the bus shut down and the queue
    /// is empty.
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Some(m) = self.take() {
            return Poll::Ready(Some(m));
        }
        let wait = self.wait();
        *wait.waker.lock() = Some(cx.waker().clone());
        wait.wants_wake.store(true, Ordering::SeqCst);
        // Pairs with the fence in the publisher's `after_push`: it sees our
        // flag or we see its message.
        fence(Ordering::SeqCst);
        if let Some(m) = self.take() {
            return Poll::Ready(Some(m));
        }
        if self.is_ended() {
            return Poll::Ready(self.take());
        }
        Poll::Pending
    }
}

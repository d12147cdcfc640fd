//! Three bounded priority lanes with an overflow policy (SPEC R9, R10).
//!
//! Each lane (high, normal, low) is a bounded lock-free MPMC queue. [`pop`]
//! serves the highest non-empty lane, except that after [`STARVATION_LIMIT`]
//! pops in a row from a higher lane while a lower one waited, it serves a
//! lower lane once (alternating which one it prefers): higher traffic delays
//! lower traffic, it never shuts it out.
//!
//! A push into a full lane follows the [`OverflowPolicy`]: drop the new
//! message, evict the oldest, reject it back to the publisher, or block the
//! publisher until space frees up or a timeout passes. Every outcome that
//! loses a message hands it back in the [`Push`] result so the caller counts
//! it (nothing is dropped silently).
//!
//! # Blocking without lost wake-ups
//!
//! The fast paths take no lock. A blocked publisher registers in `waiters`,
//! then retries the push under `lock` before each wait; a pop that freed a
//! slot notifies under the same lock when it sees a waiter ([`pop`]; a worker
//! pops a batch with [`pop_quiet`] and notifies every waiter once at its end
//! with [`release`], the same protocol with the notification deferred to the
//! end of the batch). Both sides put a
//! `SeqCst` fence between their write (the waiter count, the freed slot) and
//! their read of the other's, so at least one sees the other: either the
//! popper sees the waiter and notifies (under the lock, so not before the
//! publisher waits or after it retried), or the publisher's retry sees the
//! freed slot. The `a_pop_wakes_the_blocked_publisher` loom model checks the
//! notification protocol (it fails, as a deadlock, when the notify is removed
//! or skipped), `a_batch_release_wakes_every_blocked_publisher` the batched
//! one. They cannot check the fence pairing itself: in these models the
//! lane queue is a mutex stand-in, which orders everything (the real
//! queue, [`Ring`](crate::sync::Ring), has loom models of its own, but its
//! wait-for-the-other-thread loops make loom's search unbounded once the
//! lanes' blocking protocol is added on top); the fences rest on the
//! argument above and on the threaded tests against the real queue.
//!
//! # Finding a message without touching the publishers' line
//!
//! A consumer asks each lane [`ready`](crate::sync::Ring::ready) ("does the
//! next slot hold a message?") before it pops, and a worker polls the same
//! question while it waits for more. Neither reads a lane's `tail`, the
//! counter every push writes, so a worker that keeps up with a publisher
//! does not pull that line away from it between two pushes (see the
//! ring's docs for what that was worth). The answer is a hint: a message
//! whose push is still finishing may be missed. Nothing relies on more:
//! the mailbox state word (`NOTIFIED`) catches a push that lands after the
//! worker's last look, and a pull receiver's wait pairs its fence with the
//! stamp the push publishes.
//!
//! [`pop`]: Lanes::pop
//! [`pop_quiet`]: Lanes::pop_quiet
//! [`release`]: Lanes::release

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::message::Priority;
use crate::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
use crate::sync::{wait_deadline, BoundedQueue, Condvar, Mutex};

/// Pops in a row from a higher lane, while a lower lane waits, before the
/// lower lanes are served once.
pub const STARVATION_LIMIT: u32 = 16;

/// What happens to a message published into a full lane.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, OverflowPolicy, SubscribeOptions};
/// let bus = Bus::<u32>::builder()
///     .workers(1)
///     .overflow(OverflowPolicy::Block { timeout: Duration::from_millis(100) })
///     .build()?;
/// // One subscription keeps the newest messages and sheds the oldest.
/// let rx = bus.receiver_with(
///     SubscribeOptions::new().pattern("ticks").capacity(2).overflow(OverflowPolicy::DropOldest),
/// )?;
/// for i in 0..5 {
///     bus.publish("ticks", i)?;
/// }
/// let kept: Vec<u32> = rx.try_iter().map(|m| *m.payload()).collect();
/// assert_eq!(kept, [3, 4]);
/// assert_eq!(rx.stats().counts.dropped.oldest, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The publisher waits for space, up to the timeout.
    Block {
        /// How long the publisher may wait.
        timeout: Duration,
    },
    /// The new message is dropped.
    DropNewest,
    /// The oldest message in the lane is evicted to make room.
    DropOldest,
    /// The publish fails and the message goes back to the publisher.
    Reject,
}

/// The outcome of a push. Every variant but `Enqueued` carries the message
/// that did not make it (or was evicted), to be counted by policy.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Push<T> {
    /// In the lane.
    Enqueued,
    /// In the lane; the oldest message was evicted to make room.
    EvictedOldest(T),
    /// The lane was full; the new message was dropped.
    DroppedNewest(T),
    /// The lane was full; the message is handed back to the publisher.
    Rejected(T),
    /// The lane stayed full until the timeout.
    TimedOut(T),
}

/// The three lanes of one mailbox.
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: [BoundedQueue<T>; 3],
    /// Pops in a row served from a higher lane while a lower one waited.
    streak: AtomicU32,
    /// Guard turns taken so far: odd turns prefer the low lane, even turns
    /// the normal one, so neither lower lane can be starved by the other.
    turns: AtomicU32,
    /// Publishers blocked (or about to block) on a full lane.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    space: Condvar,
}

impl<T> Lanes<T> {
    /// Three empty lanes of `capacity` messages each.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            lanes: [
                BoundedQueue::new(capacity),
                BoundedQueue::new(capacity),
                BoundedQueue::new(capacity),
            ],
            streak: AtomicU32::new(0),
            turns: AtomicU32::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            space: Condvar::new(),
        }
    }

    /// Pushes `item` into the lane of `priority`, following `policy` when the
    /// lane is full.
    pub fn push(&self, priority: Priority, item: T, policy: OverflowPolicy) -> Push<T> {
        let lane = &self.lanes[priority.lane()];
        let item = match lane.push(item) {
            Ok(()) => return Push::Enqueued,
            Err(item) => item,
        };
        match policy {
            OverflowPolicy::DropNewest => Push::DroppedNewest(item),
            OverflowPolicy::Reject => Push::Rejected(item),
            OverflowPolicy::DropOldest => match lane.force_push(item) {
                Some(old) => Push::EvictedOldest(old),
                None => Push::Enqueued,
            },
            OverflowPolicy::Block { timeout } => self.push_blocking(lane, item, timeout),
        }
    }

    #[cold]
    fn push_blocking(&self, lane: &BoundedQueue<T>, mut item: T, timeout: Duration) -> Push<T> {
        let deadline = Instant::now().checked_add(timeout);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `pop`: our registration or their freed slot
        // is seen by the other side.
        fence(Ordering::SeqCst);
        let mut guard = self.lock.lock();
        let outcome = loop {
            match lane.push(item) {
                Ok(()) => break Push::Enqueued,
                Err(back) => item = back,
            }
            // A timeout too large for the clock waits for ever.
            let (g, timed_out) = self.space.wait_until(guard, wait_deadline(deadline));
            guard = g;
            if timed_out && deadline.is_some() {
                // One last try: space may have freed at the deadline.
                break match lane.push(item) {
                    Ok(()) => Push::Enqueued,
                    Err(back) => Push::TimedOut(back),
                };
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Takes the next message: the highest non-empty lane, with the
    /// starvation guard. Wakes a publisher blocked on a full lane, if any.
    /// A message whose push is still finishing on another thread may not
    /// be taken yet (see the module docs).
    pub fn pop(&self) -> Option<T> {
        let item = self.take();
        if item.is_some() {
            self.wake_waiters(false);
        }
        item
    }

    /// [`pop`](Self::pop) without waking a blocked publisher: for a consumer
    /// that takes a batch and then calls [`release`](Self::release) once.
    /// Waking a parked publisher costs a system call here and a context
    /// switch there (≈ 28 µs on the target machines); doing it per message
    /// made a publisher blocked on a busy mailbox ping-pong through the
    /// kernel for every slot (one wake-up per message instead of one per
    /// batch).
    pub fn pop_quiet(&self) -> Option<T> {
        self.take()
    }

    /// Wakes every publisher blocked on a full lane (after
    /// [`pop_quiet`](Self::pop_quiet) freed slots).
    pub fn release(&self) {
        self.wake_waiters(true);
    }

    /// Notifies one (or every) blocked publisher, if any is registered.
    fn wake_waiters(&self, all: bool) {
        // Pairs with the fence in `push_blocking`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _guard = self.lock.lock();
            if all {
                self.space.notify_all();
            } else {
                self.space.notify_one();
            }
        }
    }

    fn take(&self) -> Option<T> {
        let [_, normal, low] = &self.lanes;
        if self.streak.load(Ordering::Relaxed) >= STARVATION_LIMIT {
            self.streak.store(0, Ordering::Relaxed);
            let served = if self.turns.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                low.pop().or_else(|| normal.pop())
            } else {
                normal.pop().or_else(|| low.pop())
            };
            if served.is_some() {
                return served;
            }
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            if !lane.ready() {
                continue;
            }
            if let Some(item) = lane.pop() {
                let lower_waiting = match i {
                    0 => normal.ready() || low.ready(),
                    1 => low.ready(),
                    _ => false,
                };
                if lower_waiting {
                    self.streak.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.streak.store(0, Ordering::Relaxed);
                }
                return Some(item);
            }
        }
        None
    }

    /// Messages waiting per lane: high, normal, low.
    pub fn depths(&self) -> [usize; 3] {
        [
            self.lanes[0].len(),
            self.lanes[1].len(),
            self.lanes[2].len(),
        ]
    }

    /// True when some lane's next slot holds a message: a hint that does
    /// not read the publishers' counters (see the module docs).
    pub fn ready(&self) -> bool {
        self.lanes.iter().any(BoundedQueue::ready)
    }

    /// True when every lane is empty.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(BoundedQueue::is_empty)
    }
}

#[cfg(all(test, not(topicbus_loom)))]
mod tests;

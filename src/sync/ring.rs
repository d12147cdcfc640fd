//! A bounded lock-free MPMC ring: the lanes' queue.
//!
//! # Why our own
//!
//! It is the array-based queue of Dmitry Vyukov (the one crossbeam's
//! `ArrayQueue` implements): a ring of slots, each with a *stamp* that says
//! whose turn the slot is, and two counters, `head` and `tail`, each
//! claimed with one compare-and-swap. What it adds is [`Ring::ready`]: "does
//! the next slot hold a message?", answered from the head counter and that
//! slot's stamp alone.
//!
//! A consumer that asks with `is_empty` (or with a `pop` that fails) reads
//! the `tail` counter, the one line every push writes. When a worker keeps
//! up with a publisher it asks between almost every two pushes, and each
//! ask moves that line to the worker's core and each next push moves it
//! back: a cross-core transfer per message, on the publisher's critical
//! path. `ready` reads the slot the next pop reads anyway and never the
//! tail, so a polling worker costs the publisher nothing extra. Measured:
//! 1 publisher → 1 callback subscriber went from 3.5–4.4 to 5.8–6.2 M
//! msgs/s (criterion, three alternating rounds against the crossbeam
//! version; `perf-reports/bus.md`, 2026-12-07).
//!
//! # Positions and stamps
//!
//! A *position* packs a lap and an index: `lap * one_lap + index`, with
//! `one_lap` the smallest power of two above the capacity, so the index is
//! a mask away and the capacity is exact (not rounded up). The position
//! after `lap | cap - 1` is `lap + 1 | 0`. Positions grow without bound
//! (wrapping after 2^64, harmlessly: only equality is ever tested).
//!
//! Slot `i` starts with stamp `i`. For a slot and a position `p` that maps
//! to it:
//!
//! - stamp `== p`: empty, waiting for the push at `p`;
//! - stamp `== p + 1`: holds the message pushed at `p`, waiting for the
//!   pop at `p`, which sets the stamp to `p + one_lap` (the same slot's
//!   position one lap later: empty again).
//!
//! A push at `tail` claims its position by moving `tail` on (CAS), writes
//! the slot and publishes it with a `Release` store of the stamp; a pop
//! reads the stamp with `Acquire`, so it sees the value written. Only the
//! thread whose CAS moved a counter from `p` touches the slot's value for
//! `p`: the stamp keeps every other pusher off a full slot and every other
//! popper off an empty one.
//!
//! A queue that looks full (the slot still holds the previous lap's
//! message) or empty (the slot waits for this lap's push) is confirmed
//! against the other counter after a `SeqCst` fence, as crossbeam does, so
//! both answers are linearizable; a slot caught in the middle of someone
//! else's operation is retried.
//!
//! # Checked by
//!
//! Unit tests against a `VecDeque` model (proptest), threaded tests (every
//! value out exactly once, in order per producer), the `ring` loom models in
//! `loom-tests/` (which run this code on loom's atomics and cells), and the
//! CI's AddressSanitizer and valgrind runs over the whole bus.

#![allow(unsafe_code)] // The slots' values; each block says why it is sound.

use std::fmt;
use std::mem::MaybeUninit;

use super::atomic::{fence, AtomicUsize, Ordering};
use super::cell::UnsafeCell;
use super::Padded;

/// One slot: a stamp and room for one value.
struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded lock-free multi-producer multi-consumer FIFO queue.
pub struct Ring<T> {
    /// The next position to pop.
    head: Padded<AtomicUsize>,
    /// The next position to push.
    tail: Padded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    /// The position one lap after position 0: a power of two > capacity.
    one_lap: usize,
}

// SAFETY: a value moves into the ring on one thread and out on another
// (hence `T: Send`); no `&T` is ever handed out, so `T: Sync` is not needed.
// Every access to a slot's value is made by the single thread whose CAS
// claimed that slot's position (see the module docs), ordered after the
// previous owner's by the stamp's Release/Acquire pair.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above: shared access goes through the atomics, and a value is
// only touched by the thread that claimed its position.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// An empty ring that holds up to `capacity` values.
    ///
    /// # Panics
    ///
    /// When `capacity` is zero or above `usize::MAX / 2` (it could not be
    /// allocated anyway). The bus never asks for either: lane capacities
    /// are checked against 1 and [`MAX_CAPACITY`](crate::MAX_CAPACITY)
    /// with a typed error first.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a ring needs room for one value");
        let one_lap = capacity
            .checked_add(1)
            .and_then(usize::checked_next_power_of_two)
            .expect("ring capacity too large");
        let slots = (0..capacity)
            .map(|i| Slot {
                stamp: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Self {
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            slots,
            one_lap,
        }
    }

    /// How many values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot position `pos` maps to.
    #[inline]
    fn slot(&self, pos: usize) -> &Slot<T> {
        // The index part of a position is always below the capacity.
        &self.slots[pos & (self.one_lap - 1)]
    }

    /// The position after `pos`.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        let index = pos & (self.one_lap - 1);
        if index + 1 < self.slots.len() {
            pos + 1
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Appends `value`, or hands it back when the ring is full.
    ///
    /// # Errors
    ///
    /// `Err(value)` when the ring is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        match self.push_or_evict(value, false) {
            Pushed::In => Ok(()),
            Pushed::Full(value) => Err(value),
            Pushed::Evicted(_) => unreachable!("eviction was not asked for"),
        }
    }

    /// Appends `value`; when the ring is full, evicts the oldest value to
    /// make room and returns it.
    pub fn force_push(&self, value: T) -> Option<T> {
        match self.push_or_evict(value, true) {
            Pushed::In => None,
            Pushed::Evicted(old) => Some(old),
            Pushed::Full(_) => unreachable!("a full ring evicts"),
        }
    }

    #[inline]
    fn push_or_evict(&self, value: T, evict: bool) -> Pushed<T> {
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Ordering::Acquire);
            let next = self.next(tail);
            if stamp == tail {
                // The slot waits for this push: claim the position (a
                // claim lost to another push looks again below).
                let claim = self.tail.0.compare_exchange_weak(
                    tail,
                    next,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                if claim.is_ok() {
                    // SAFETY: our CAS claimed position `tail`; its slot is
                    // empty (stamp == tail) and no other thread touches the
                    // value until we publish the stamp.
                    slot.value.with_mut(|v| unsafe { (*v).write(value) });
                    slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                    return Pushed::In;
                }
            } else if stamp.wrapping_add(self.one_lap) == tail.wrapping_add(1) {
                // The slot still holds the previous lap's value: full,
                // unless a pop has moved the head meanwhile.
                fence(Ordering::SeqCst);
                let head = self.head.0.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    if !evict {
                        return Pushed::Full(value);
                    }
                    // Claim the oldest value's position (the head, which
                    // is this slot's previous lap) and this push's.
                    let head_next = next.wrapping_sub(self.one_lap);
                    if self
                        .head
                        .0
                        .compare_exchange_weak(head, head_next, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                    {
                        // No pusher can move the tail meanwhile: the slot
                        // at `tail` is full, so they all wait above.
                        self.tail.0.store(next, Ordering::SeqCst);
                        // SAFETY: our head CAS claimed the pop of position
                        // `head`, whose value this slot holds (stamp ==
                        // head + 1), and the tail was ours already: we are
                        // the only thread on this slot until the store.
                        let old = slot
                            .value
                            .with_mut(|v| unsafe { std::ptr::replace(v, MaybeUninit::new(value)) });
                        slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                        // SAFETY: the slot was full, so `old` was initialised.
                        return Pushed::Evicted(unsafe { old.assume_init() });
                    }
                }
            }
            // Not ours yet: a claim lost its race, the ring stopped being
            // full, or another thread is mid-operation on this slot.
            std::hint::spin_loop();
            tail = self.tail.0.load(Ordering::Relaxed);
            #[cfg(topicbus_loom)]
            loom::thread::yield_now();
        }
    }

    /// Takes the oldest value, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let mut head = self.head.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head.wrapping_add(1) {
                // The slot holds the value pushed at `head`: claim it (a
                // claim lost to another pop looks again below).
                let claim = self.head.0.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                if claim.is_ok() {
                    // SAFETY: our CAS claimed the pop of position `head`;
                    // the stamp (Acquire) says the value was written, and
                    // no other thread touches the slot until we hand it to
                    // the next lap's push.
                    let value = slot.value.with(|v| unsafe { (*v).assume_init_read() });
                    slot.stamp
                        .store(head.wrapping_add(self.one_lap), Ordering::Release);
                    return Some(value);
                }
            } else if stamp == head {
                // The slot waits for this lap's push: empty, unless a push
                // has moved the tail and not yet written the slot.
                fence(Ordering::SeqCst);
                if self.tail.0.load(Ordering::Relaxed) == head {
                    return None;
                }
            }
            // Not ours yet: a claim lost its race, a push is still writing
            // this slot, or another thread is mid-operation on it.
            std::hint::spin_loop();
            head = self.head.0.load(Ordering::Relaxed);
            #[cfg(topicbus_loom)]
            loom::thread::yield_now();
        }
    }

    /// True when the next slot to pop holds a value: a hint that reads the
    /// head counter and that slot, never the tail (see the module docs).
    ///
    /// Exact when nothing runs concurrently. With concurrent operations it
    /// may answer `false` for a value whose push is still finishing, or
    /// after another consumer took the value; it never answers `true` for
    /// a ring that was empty throughout the call.
    #[inline]
    pub fn ready(&self) -> bool {
        let head = self.head.0.load(Ordering::Relaxed);
        self.slot(head).stamp.load(Ordering::Acquire) == head.wrapping_add(1)
    }

    /// True when the ring holds no value (reads both counters).
    pub fn is_empty(&self) -> bool {
        let head = self.head.0.load(Ordering::SeqCst);
        let tail = self.tail.0.load(Ordering::SeqCst);
        head == tail
    }

    /// How many values the ring holds (a consistent snapshot of both
    /// counters).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.0.load(Ordering::SeqCst);
            let head = self.head.0.load(Ordering::SeqCst);
            // Retry until the tail did not move while the head was read.
            if self.tail.0.load(Ordering::SeqCst) == tail {
                let mask = self.one_lap - 1;
                let (h, t) = (head & mask, tail & mask);
                return if h < t {
                    t - h
                } else if h > t {
                    self.slots.len() - h + t
                } else if head == tail {
                    0
                } else {
                    self.slots.len()
                };
            }
            #[cfg(topicbus_loom)]
            loom::thread::yield_now();
        }
    }
}

/// What a push did.
enum Pushed<T> {
    In,
    Full(T),
    Evicted(T),
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread is left; drop what is still queued.
        while self.pop().is_some() {}
    }
}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(all(test, not(topicbus_loom)))]
mod tests;

//! The one place that names atomics, locks, `Arc` and the atomic `Arc` cell.
//!
//! Everything concurrent in topicbus imports from here, never from `std::sync`,
//! `parking_lot`, `arc_swap` or `loom` directly. Under `--cfg topicbus_loom` the
//! same names resolve to loom's model-checked stand-ins, so the models in
//! `loom-tests/` check *our* protocols (writer serialisation, snapshot
//! publication, and later the mailbox state machine) without rewriting them.
//!
//! Both backends expose identical signatures: `Mutex::lock` returns the guard
//! (no poisoning), and [`ArcCell`] has `new` / `load` / `load_full` / `store`.
//!
//! Third-party lock-free code is opaque to loom (arc-swap has no loom support),
//! so under loom [`ArcCell`] is a `Mutex<Arc<T>>`: the models then check the
//! protocol built on top of it, which is what can be wrong in our code.
//!
//! The persistent data structures inside a snapshot (the matcher's trie and
//! hash maps) use `std::sync::Arc` directly: they are immutable once published
//! and take part in no protocol, so there is nothing for loom to explore there.

#![allow(dead_code, unused_imports, unreachable_pub)]

#[cfg(not(topicbus_loom))]
mod imp {
    pub use std::sync::atomic;
    pub use std::sync::Arc;
    pub use std::thread;

    /// `UnsafeCell` with loom's closure-based access (`with`, `with_mut`),
    /// so code written for loom's cell compiles unchanged against std's.
    pub mod cell {
        /// std's `UnsafeCell` behind loom's interface.
        #[derive(Debug)]
        pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

        impl<T> UnsafeCell<T> {
            pub const fn new(value: T) -> Self {
                Self(std::cell::UnsafeCell::new(value))
            }
            #[inline(always)]
            pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
                f(self.0.get())
            }
            #[inline(always)]
            pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
                f(self.0.get())
            }
        }
    }

    /// A mutual-exclusion lock whose `lock` returns the guard directly.
    pub type Mutex<T> = parking_lot::Mutex<T>;
    /// The guard of [`Mutex`].
    pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    /// An atomically replaceable `Arc<T>`: lock-free loads, serialised stores.
    #[derive(Debug)]
    pub struct ArcCell<T>(arc_swap::ArcSwap<T>);

    /// A loaded value of an [`ArcCell`]; cheap to take, meant to be short-lived.
    pub struct Guard<T>(arc_swap::Guard<Arc<T>>);

    /// A condition variable with one shape on both backends: the guard goes
    /// in and comes back, with whether the deadline passed.
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        pub fn wait_until<'a, T>(
            &self,
            mut guard: MutexGuard<'a, T>,
            deadline: std::time::Instant,
        ) -> (MutexGuard<'a, T>, bool) {
            let timed_out = self.0.wait_until(&mut guard, deadline).timed_out();
            (guard, timed_out)
        }

        pub fn notify_one(&self) {
            self.0.notify_one();
        }

        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// An unbounded lock-free MPMC queue (crossbeam's `SegQueue`).
    #[derive(Debug, Default)]
    pub struct UnboundedQueue<T>(crossbeam_queue::SegQueue<T>);

    impl<T> UnboundedQueue<T> {
        pub fn new() -> Self {
            Self(crossbeam_queue::SegQueue::new())
        }
        #[inline]
        pub fn push(&self, value: T) {
            self.0.push(value);
        }
        #[inline]
        pub fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        #[inline]
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A bounded lock-free MPMC queue (our [`Ring`](super::Ring)).
    #[derive(Debug)]
    pub struct BoundedQueue<T>(super::Ring<T>);

    impl<T> BoundedQueue<T> {
        pub fn new(capacity: std::num::NonZeroUsize) -> Self {
            Self(super::Ring::new(capacity.get()))
        }
        #[inline]
        pub fn push(&self, value: T) -> Result<(), T> {
            self.0.push(value)
        }
        /// Pushes, evicting and returning the oldest element when full.
        #[inline]
        pub fn force_push(&self, value: T) -> Option<T> {
            self.0.force_push(value)
        }
        #[inline]
        pub fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        #[inline]
        pub fn len(&self) -> usize {
            self.0.len()
        }
        #[inline]
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        /// True when the next pop would find a value (a hint that does
        /// not read the producers' counter, see [`Ring::ready`](super::Ring::ready)).
        #[inline]
        pub fn ready(&self) -> bool {
            self.0.ready()
        }
    }

    impl<T> ArcCell<T> {
        pub fn new(value: Arc<T>) -> Self {
            Self(arc_swap::ArcSwap::new(value))
        }

        /// A lock-free load. In steady state it touches no reference count.
        #[inline]
        pub fn load(&self) -> Guard<T> {
            Guard(self.0.load())
        }

        /// A load that returns an owned `Arc` (one reference-count increment).
        #[inline]
        pub fn load_full(&self) -> Arc<T> {
            self.0.load_full()
        }

        /// Publishes `value`; every load that starts after this returns sees it
        /// (arc-swap's store and load are sequentially consistent).
        pub fn store(&self, value: Arc<T>) {
            self.0.store(value);
        }
    }

    impl<T> std::ops::Deref for Guard<T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> Guard<T> {
        /// Upgrades the guard into an owned `Arc`.
        pub fn into_arc(self) -> Arc<T> {
            arc_swap::Guard::into_inner(self.0)
        }
    }
}

#[cfg(topicbus_loom)]
mod imp {
    pub use loom::cell;
    pub use loom::sync::atomic;
    pub use loom::sync::Arc;
    pub use loom::thread;

    /// loom's mutex behind the same `lock() -> guard` signature as parking_lot.
    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    /// The guard of [`Mutex`].
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    impl Default for Condvar {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            // loom's mutex only poisons if a model thread panicked, in which
            // case the model has failed anyway.
            self.0.lock().expect("loom mutex poisoned")
        }
    }

    /// The loom stand-in for `ArcSwap`: a mutex around an `Arc`.
    #[derive(Debug)]
    pub struct ArcCell<T>(Mutex<Arc<T>>);

    /// A loaded value of an [`ArcCell`].
    pub struct Guard<T>(Arc<T>);

    /// loom's condition variable behind the std backend's shape. loom does
    /// not model time: a wait never times out, so a lost notification shows
    /// up as a deadlock the model reports.
    #[derive(Debug)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub fn wait_until<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            deadline: std::time::Instant,
        ) -> (MutexGuard<'a, T>, bool) {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let (guard, result) = self
                .0
                .wait_timeout(guard, wait)
                .expect("loom mutex poisoned");
            (guard, result.timed_out())
        }

        pub fn notify_one(&self) {
            self.0.notify_one();
        }

        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// The loom stand-in for `SegQueue`: a mutex around a `VecDeque`.
    #[derive(Debug)]
    pub struct UnboundedQueue<T>(Mutex<std::collections::VecDeque<T>>);

    impl<T> UnboundedQueue<T> {
        pub fn new() -> Self {
            Self(Mutex::new(std::collections::VecDeque::new()))
        }
        pub fn push(&self, value: T) {
            self.0.lock().push_back(value);
        }
        pub fn pop(&self) -> Option<T> {
            self.0.lock().pop_front()
        }
        pub fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }
    }

    /// The loom stand-in for the lanes' [`Ring`](super::Ring): a mutex
    /// around a `VecDeque`. (The ring itself runs under loom in its own
    /// models; inside the lanes' models its wait loops make the search
    /// unbounded.)
    #[derive(Debug)]
    pub struct BoundedQueue<T> {
        queue: Mutex<std::collections::VecDeque<T>>,
        capacity: usize,
    }

    impl<T> BoundedQueue<T> {
        pub fn new(capacity: std::num::NonZeroUsize) -> Self {
            Self {
                queue: Mutex::new(std::collections::VecDeque::new()),
                capacity: capacity.get(),
            }
        }
        fn lock(&self) -> MutexGuard<'_, std::collections::VecDeque<T>> {
            self.queue.lock()
        }
        pub fn push(&self, value: T) -> Result<(), T> {
            let mut q = self.lock();
            if q.len() == self.capacity {
                return Err(value);
            }
            q.push_back(value);
            Ok(())
        }
        pub fn force_push(&self, value: T) -> Option<T> {
            let mut q = self.lock();
            let evicted = if q.len() == self.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(value);
            evicted
        }
        pub fn pop(&self) -> Option<T> {
            self.lock().pop_front()
        }
        pub fn len(&self) -> usize {
            self.lock().len()
        }
        pub fn is_empty(&self) -> bool {
            self.lock().is_empty()
        }
        /// Exact here: the stand-in has no half-finished push.
        pub fn ready(&self) -> bool {
            !self.is_empty()
        }
    }

    impl<T> ArcCell<T> {
        pub fn new(value: Arc<T>) -> Self {
            Self(Mutex::new(value))
        }

        pub fn load(&self) -> Guard<T> {
            Guard(self.load_full())
        }

        pub fn load_full(&self) -> Arc<T> {
            Arc::clone(&self.0.lock())
        }

        pub fn store(&self, value: Arc<T>) {
            let old = std::mem::replace(&mut *self.0.lock(), value);
            // Drop the old snapshot outside the lock, as arc-swap does.
            drop(old);
        }
    }

    impl<T> std::ops::Deref for Guard<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> Guard<T> {
        pub fn into_arc(self) -> Arc<T> {
            self.0
        }
    }
}

pub(crate) use imp::*;

mod ring;
#[allow(unreachable_pub)] // `pub` for the loom models (`__loom`)
pub use ring::Ring;

/// What a timed wait waits until: `deadline`, or, without one (no timeout,
/// or one too large for the clock), a year from now. Every waiting loop
/// re-checks its condition after a wait, so a year at a time is for ever.
pub(crate) fn wait_deadline(deadline: Option<std::time::Instant>) -> std::time::Instant {
    deadline
        .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(31_536_000))
}

/// A value on cache lines of its own (128 bytes: two lines, for the
/// adjacent-line prefetcher), against false sharing between counters or
/// slots that different threads write.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// Orders a `SeqCst` access before every later `SeqCst` access of this
/// thread, for loom's sake only.
///
/// The store-buffering protocols here (a publisher's `SeqCst` increment
/// then `SeqCst` load of the bus state, against shutdown's `SeqCst` store
/// then `SeqCst` load of the counters) are correct because all `SeqCst`
/// accesses form one total order. loom does not model that order for
/// accesses, only for fences (tokio-rs/loom#180), and would report the
/// forbidden outcome. Under loom this is `fence(SeqCst)`, which loom does
/// model and which forbids the same outcome; in a real build it is nothing,
/// so the hot path pays no fence for the model.
#[inline(always)]
pub(crate) fn seqcst_for_loom() {
    #[cfg(topicbus_loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// Atomics for process-wide `static` counters (the message id sequence).
///
/// loom's atomics cannot live in statics, and these take part in no
/// protocol: a counter's uniqueness and order come from its single
/// modification order, which needs no model checking. They are the std
/// atomics under every cfg.
pub(crate) mod statics {
    pub(crate) use std::sync::atomic::AtomicU64;
}

/// The hasher the matcher's and registry's maps use: foldhash, seeded
/// randomly per process normally (so hash flooding through attacker-chosen
/// topics is not cheap; foldhash is "minimally DoS-resistant", as ahash's
/// portable fallback is), and fixed under loom and fuzzing so runs are
/// deterministic.
#[cfg(not(any(topicbus_loom, fuzzing)))]
pub(crate) type Hasher = foldhash::fast::RandomState;
/// The hasher, fixed-seeded under loom and fuzzing.
#[cfg(any(topicbus_loom, fuzzing))]
pub(crate) type Hasher = foldhash::fast::FixedState;

/// A fresh [`Hasher`].
pub(crate) fn hasher() -> Hasher {
    #[cfg(any(topicbus_loom, fuzzing))]
    {
        foldhash::fast::FixedState::with_seed(0x243f_6a88_85a3_08d3)
    }
    #[cfg(not(any(topicbus_loom, fuzzing)))]
    {
        foldhash::fast::RandomState::default()
    }
}

/// The process-wide seed of the matcher's hash tables keyed by level keys
/// and topic keys (random per process; fixed under loom and fuzzing).
#[inline]
pub(crate) fn table_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    use std::hash::BuildHasher;
    // `hasher` is already random per process and fixed under loom and fuzzing.
    *SEED.get_or_init(|| hasher().hash_one(0xa409_3822_299f_31d0_u64))
}

/// The process-wide seed of [`topic_key`]: random per process (fixed under
/// loom and fuzzing, like [`hasher`]).
static TOPIC_KEY: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();

/// A topic's key in the matcher's exact-pattern map: a seeded hash of its
/// whole text, taken once when the text is parsed and carried by the
/// [`Topic`](crate::Topic), so a match looks its exact patterns up without
/// hashing. Process-wide (every matcher uses the same seed), 32 bits (it
/// fits `Topic`'s padding; a collision costs one text comparison).
#[inline]
pub(crate) fn topic_key(text: &str) -> u32 {
    use std::hash::BuildHasher;
    let state = TOPIC_KEY.get_or_init(|| {
        #[cfg(any(topicbus_loom, fuzzing))]
        let seed = 0x1319_8a2e_0370_7344;
        #[cfg(not(any(topicbus_loom, fuzzing)))]
        let seed = foldhash::fast::RandomState::default().hash_one(0x1319_8a2e_0370_7344_u64);
        foldhash::fast::FixedState::with_seed(seed)
    });
    let h = state.hash_one(text);
    // Both halves: foldhash's high bits are as good as its low ones, and
    // folding keeps every input bit in the key.
    (h ^ (h >> 32)) as u32
}

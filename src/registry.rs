//! The copy-on-write subscription table.
//!
//! A [`Registry<E>`] holds the current [`Snapshot`] in an atomic `Arc` cell
//! (arc-swap). Readers call [`Registry::load`]: no lock, and in steady state
//! no reference-count traffic. Writers are serialised by one mutex; each
//! change clones the current snapshot (O(1): it is a persistent structure),
//! applies the change (O(depth + log n) node copies) and stores the result.
//! Several changes can share one swap with [`Registry::update`].
//!
//! # Visibility
//!
//! - A subscription is matched by every [`load`](Registry::load) that starts
//!   after [`subscribe`](Registry::subscribe) returns.
//! - A subscription is matched by no `load` that starts after
//!   [`unsubscribe`](Registry::unsubscribe) returns. A reader that loaded the
//!   snapshot earlier may still hold it (and the entry) until it drops its
//!   guard; the bus closes the subscription's mailbox so such a late match is
//!   accounted for, never run.
//!
//! Both follow from arc-swap's store and load being sequentially consistent
//! and are checked by the `registry` loom model in `loom-tests/`.
//!
//! # Examples
//!
//! ```
//! use topicbus::registry::Registry;
//! use topicbus::{Pattern, Topic};
//!
//! let reg = Registry::new();
//! let id = reg.subscribe([Pattern::parse("orders.#")?], "archive");
//!
//! let topic = Topic::parse("orders.eu.created")?;
//! let mut seen = Vec::new();
//! reg.load().for_each_match(&topic, |entry| seen.push(*entry.value()));
//! assert_eq!(seen, ["archive"]);
//!
//! reg.unsubscribe(id);
//! assert!(reg.load().matches(&topic).is_empty());
//! # Ok::<(), topicbus::TopicError>(())
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::matcher::{Matcher, PMap};
use crate::sync::{Arc, ArcCell, Guard, Mutex};
use crate::topic::{Pattern, Topic};

/// Identifies one registration in a [`Registry`]. Never reused.
///
/// # Examples
///
/// ```
/// # use topicbus::{registry::Registry, Pattern};
/// let reg = Registry::new();
/// let a = reg.subscribe([Pattern::parse("a")?], ());
/// let b = reg.subscribe([Pattern::parse("a")?], ());
/// assert_ne!(a, b);
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// An id made up by a test.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        Self(n)
    }

    /// The raw number, for logs and metrics labels.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], ());
    /// assert_eq!(id.get(), 1);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// One registration: its id, its patterns and the caller's value.
///
/// # Examples
///
/// ```
/// # use topicbus::{registry::Registry, Pattern};
/// let reg = Registry::new();
/// let id = reg.subscribe([Pattern::parse("a.*")?], 42);
/// let entry = reg.load().get(id).cloned().unwrap();
/// assert_eq!((entry.id(), *entry.value()), (id, 42));
/// assert_eq!(entry.patterns()[0].as_str(), "a.*");
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug)]
pub struct Entry<E> {
    id: SubscriptionId,
    patterns: Box<[Pattern]>,
    value: E,
}

impl<E> Entry<E> {
    /// The registration's id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The patterns, deduplicated, in the order given.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The caller's value.
    pub fn value(&self) -> &E {
        &self.value
    }
}

/// The matcher's value: an entry compared and hashed by id only.
struct ById<E>(std::sync::Arc<Entry<E>>);

impl<E> Clone for ById<E> {
    fn clone(&self) -> Self {
        Self(std::sync::Arc::clone(&self.0))
    }
}

impl<E> PartialEq for ById<E> {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl<E> Eq for ById<E> {}

impl<E> Hash for ById<E> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// An immutable version of the table. Obtained from [`Registry::load`].
///
/// # Examples
///
/// ```
/// # use topicbus::{registry::Registry, Pattern};
/// let reg = Registry::new();
/// let before = reg.load().version();
/// reg.subscribe([Pattern::parse("a")?], ());
/// let snap = reg.load();
/// assert_eq!((snap.len(), snap.version()), (1, before + 1));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
pub struct Snapshot<E> {
    matcher: Matcher<ById<E>>,
    entries: PMap<SubscriptionId, std::sync::Arc<Entry<E>>>,
    version: u64,
}

impl<E> Clone for Snapshot<E> {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.clone(),
            entries: self.entries.clone(),
            version: self.version,
        }
    }
}

impl<E> Snapshot<E> {
    fn empty() -> Self {
        Self {
            matcher: Matcher::new(),
            entries: PMap::with_hasher(crate::sync::hasher()),
            version: 0,
        }
    }

    /// Calls `f` once for every entry with a pattern matching `topic`, in an
    /// unspecified order. Lock-free and allocation-free.
    pub fn for_each_match<'a>(
        &'a self,
        topic: &Topic,
        mut f: impl FnMut(&'a std::sync::Arc<Entry<E>>),
    ) {
        self.matcher.for_each_match(topic, |v| f(&v.0));
    }

    /// The ids of the entries matching `topic` (convenience; allocates).
    pub fn matches(&self, topic: &Topic) -> Vec<SubscriptionId> {
        let mut ids = Vec::new();
        self.for_each_match(topic, |e| ids.push(e.id));
        ids
    }

    /// The entry registered under `id`, if any.
    pub fn get(&self, id: SubscriptionId) -> Option<&std::sync::Arc<Entry<E>>> {
        self.entries.get(&id)
    }

    /// The number of registrations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of swaps that produced this snapshot (0 for the initial,
    /// empty one). Strictly increasing across the registry's snapshots.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every registration, in an unspecified order.
    pub fn entries(&self) -> impl Iterator<Item = &std::sync::Arc<Entry<E>>> + '_ {
        self.entries.values()
    }
}

impl<E> fmt::Debug for Snapshot<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("entries", &self.entries.len())
            .field("matcher", &self.matcher)
            .finish()
    }
}

/// A loaded snapshot. Hold it briefly: while it lives, the snapshot (and the
/// entries it references) cannot be freed.
pub struct SnapshotRef<E>(Guard<Snapshot<E>>);

impl<E> Deref for SnapshotRef<E> {
    type Target = Snapshot<E>;
    #[inline]
    fn deref(&self) -> &Snapshot<E> {
        &self.0
    }
}

impl<E> fmt::Debug for SnapshotRef<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The writer side: the id counter. Holding the mutex serialises writers.
#[derive(Debug)]
struct Writer {
    next_id: u64,
}

/// A copy-on-write subscription table with lock-free reads.
///
/// See the [module docs](self) for the visibility rules.
pub struct Registry<E> {
    current: ArcCell<Snapshot<E>>,
    writer: Mutex<Writer>,
}

impl<E> Default for Registry<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> fmt::Debug for Registry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("current", &*self.load())
            .finish_non_exhaustive()
    }
}

impl<E> Registry<E> {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            current: ArcCell::new(Arc::new(Snapshot::empty())),
            writer: Mutex::new(Writer { next_id: 1 }),
        }
    }

    /// The current snapshot. Lock-free; never blocks on writers.
    #[inline]
    pub fn load(&self) -> SnapshotRef<E> {
        SnapshotRef(self.current.load())
    }

    /// Registers `value` under `patterns` (duplicates among them are ignored)
    /// and returns its id. Visible to every `load` that starts after this
    /// returns. A registration with no pattern matches nothing.
    pub fn subscribe(
        &self,
        patterns: impl IntoIterator<Item = Pattern>,
        value: E,
    ) -> SubscriptionId {
        self.update(|batch| batch.subscribe(patterns, value))
    }

    /// Removes the registration `id` and returns its entry, or `None` when it
    /// is not registered (already removed, or never was). Invisible to every
    /// `load` that starts after this returns.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Option<std::sync::Arc<Entry<E>>> {
        self.update(|batch| batch.unsubscribe(id))
    }

    /// Applies several changes under one writer lock and publishes them in one
    /// swap: readers see all of them or none. When `f` makes no change, no
    /// swap happens.
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let ids = reg.update(|b| {
    ///     (0..3)
    ///         .map(|i| b.subscribe([Pattern::parse("a.*").unwrap()], i))
    ///         .collect::<Vec<_>>()
    /// });
    /// assert_eq!((ids.len(), reg.load().len(), reg.load().version()), (3, 3, 1));
    /// ```
    pub fn update<R>(&self, f: impl FnOnce(&mut Batch<'_, E>) -> R) -> R {
        let mut writer = self.writer.lock();
        let current = self.current.load();
        let mut batch = Batch {
            next: (*current).clone(),
            writer: &mut writer,
            changed: false,
        };
        drop(current);
        let out = f(&mut batch);
        if batch.changed {
            let mut next = batch.next;
            next.version += 1;
            self.current.store(Arc::new(next));
        }
        out
    }
}

/// Changes being prepared by [`Registry::update`]; published together when
/// the closure returns.
pub struct Batch<'w, E> {
    next: Snapshot<E>,
    writer: &'w mut Writer,
    changed: bool,
}

impl<E> fmt::Debug for Batch<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("next", &self.next)
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl<E> Batch<'_, E> {
    /// Registers `value` under `patterns`; see [`Registry::subscribe`].
    pub fn subscribe(
        &mut self,
        patterns: impl IntoIterator<Item = Pattern>,
        value: E,
    ) -> SubscriptionId {
        self.subscribe_with(patterns, |_| value)
    }

    /// Registers the value `make` builds from the new registration's id
    /// (for values that carry their own id); otherwise as
    /// [`subscribe`](Self::subscribe).
    ///
    /// # Examples
    ///
    /// ```
    /// # use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let a = Pattern::parse("a")?;
    /// let id = reg.update(|b| b.subscribe_with([a], |id| id.get()));
    /// assert_eq!(*reg.load().get(id).unwrap().value(), id.get());
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn subscribe_with(
        &mut self,
        patterns: impl IntoIterator<Item = Pattern>,
        make: impl FnOnce(SubscriptionId) -> E,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.writer.next_id);
        self.writer.next_id += 1;
        let mut unique: Vec<Pattern> = Vec::new();
        for p in patterns {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        let entry = std::sync::Arc::new(Entry {
            id,
            patterns: unique.into_boxed_slice(),
            value: make(id),
        });
        for p in entry.patterns.iter() {
            self.next
                .matcher
                .insert(p, ById(std::sync::Arc::clone(&entry)));
        }
        self.next.entries.insert(id, entry);
        self.changed = true;
        id
    }

    /// Removes the registration `id`; see [`Registry::unsubscribe`].
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Option<std::sync::Arc<Entry<E>>> {
        let entry = self.next.entries.remove(&id)?;
        self.next
            .matcher
            .remove_value(&ById(std::sync::Arc::clone(&entry)));
        self.changed = true;
        Some(entry)
    }

    /// The snapshot as it stands with the changes so far.
    pub fn snapshot(&self) -> &Snapshot<E> {
        &self.next
    }
}

#[cfg(test)]
mod tests;

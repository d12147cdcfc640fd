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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], "v");
    /// assert_eq!(reg.load().get(id).map(|e| e.id()), Some(id));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The patterns, deduplicated, in the order given.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let (a, b) = (Pattern::parse("a.*")?, Pattern::parse("b.#")?);
    /// let id = reg.subscribe([a.clone(), b.clone(), a.clone()], ());
    /// assert_eq!(reg.load().get(id).map(|e| e.patterns().to_vec()), Some(vec![a, b])); // deduplicated
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The caller's value.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], String::from("handler-1"));
    /// assert_eq!(reg.load().get(id).map(|e| e.value().as_str()), Some("handler-1"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern, Topic};
    /// let reg = Registry::new();
    /// reg.subscribe([Pattern::parse("orders.#")?], 1);
    /// reg.subscribe([Pattern::parse("orders.*.created")?, Pattern::parse("#.created")?], 2);
    /// reg.subscribe([Pattern::parse("users.#")?], 3);
    /// let mut sum = 0;
    /// reg.load().for_each_match(&Topic::parse("orders.eu.created")?, |e| sum += *e.value());
    /// assert_eq!(sum, 3); // entries 1 and 2, each once
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn for_each_match<'a>(
        &'a self,
        topic: &Topic,
        mut f: impl FnMut(&'a std::sync::Arc<Entry<E>>),
    ) {
        self.matcher.for_each_match(topic, |v| f(&v.0));
    }

    /// The ids of the entries matching `topic` (convenience; allocates).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern, Topic};
    /// let reg = Registry::new();
    /// let a = reg.subscribe([Pattern::parse("a.*")?], ());
    /// let _b = reg.subscribe([Pattern::parse("b.*")?], ());
    /// assert_eq!(reg.load().matches(&Topic::parse("a.x")?), [a]);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn matches(&self, topic: &Topic) -> Vec<SubscriptionId> {
        let mut ids = Vec::new();
        self.for_each_match(topic, |e| ids.push(e.id));
        ids
    }

    /// The entry registered under `id`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], 7);
    /// assert_eq!(reg.load().get(id).map(|e| *e.value()), Some(7));
    /// reg.unsubscribe(id);
    /// assert!(reg.load().get(id).is_none());
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn get(&self, id: SubscriptionId) -> Option<&std::sync::Arc<Entry<E>>> {
        self.entries.get(&id)
    }

    /// The number of registrations.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// reg.subscribe([Pattern::parse("a")?], ());
    /// reg.subscribe([Pattern::parse("a")?], ()); // a second registration, same pattern
    /// assert_eq!(reg.load().len(), 2);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// assert!(reg.load().is_empty());
    /// reg.subscribe([Pattern::parse("a")?], ());
    /// assert!(!reg.load().is_empty());
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of swaps that produced this snapshot (0 for the initial,
    /// empty one). Strictly increasing across the registry's snapshots.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], ());
    /// reg.unsubscribe(id);
    /// assert_eq!(reg.load().version(), 2); // one swap per change
    /// assert!(reg.unsubscribe(id).is_none());
    /// assert_eq!(reg.load().version(), 2); // no change, no swap
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every registration, in an unspecified order.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// for i in 0..3 {
    ///     reg.subscribe([Pattern::parse("a")?], i);
    /// }
    /// let mut values: Vec<i32> = reg.load().entries().map(|e| *e.value()).collect();
    /// values.sort();
    /// assert_eq!(values, [0, 1, 2]);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
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
///
/// # Examples
///
/// ```
/// use topicbus::{registry::Registry, Pattern, Topic};
/// let reg = Registry::new();
/// reg.subscribe([Pattern::parse("a")?], ());
/// let snap = reg.load(); // derefs to a Snapshot
/// reg.subscribe([Pattern::parse("a")?], ()); // writers do not wait for readers
/// assert_eq!(snap.len(), 1); // the old version, unchanged
/// assert_eq!(reg.load().matches(&Topic::parse("a")?).len(), 2);
/// # Ok::<(), topicbus::TopicError>(())
/// ```
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
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use topicbus::{registry::Registry, Pattern, Topic};
/// let reg = Arc::new(Registry::new());
/// let topic = Topic::parse("metrics.cpu")?;
/// let reader = {
///     let (reg, topic) = (Arc::clone(&reg), topic.clone());
///     std::thread::spawn(move || (0..1_000).map(|_| reg.load().matches(&topic).len()).max())
/// };
/// let id = reg.subscribe([Pattern::parse("metrics.*")?], "dashboard");
/// assert_eq!(reg.load().matches(&topic), [id]); // visible once subscribe returned
/// assert!(reader.join().expect("no panic") <= Some(1));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::registry::Registry;
    /// let reg: Registry<u32> = Registry::new();
    /// assert!(reg.load().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            current: ArcCell::new(Arc::new(Snapshot::empty())),
            writer: Mutex::new(Writer { next_id: 1 }),
        }
    }

    /// The current snapshot. Lock-free; never blocks on writers.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern, Topic};
    /// let reg = Registry::new();
    /// reg.subscribe([Pattern::parse("a.#")?], 1);
    /// let snap = reg.load(); // lock-free
    /// assert_eq!(snap.matches(&Topic::parse("a.b")?).len(), 1);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[inline]
    pub fn load(&self) -> SnapshotRef<E> {
        SnapshotRef(self.current.load())
    }

    /// Registers `value` under `patterns` (duplicates among them are ignored)
    /// and returns its id. Visible to every `load` that starts after this
    /// returns. A registration with no pattern matches nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern, Topic};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a.*")?, Pattern::parse("b")?], "h");
    /// assert_eq!(reg.load().matches(&Topic::parse("b")?), [id]);
    /// let none = reg.subscribe([], "nothing"); // matches nothing
    /// assert!(reg.load().get(none).is_some());
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern, Topic};
    /// let reg = Registry::new();
    /// let id = reg.subscribe([Pattern::parse("a")?], "h");
    /// assert_eq!(reg.unsubscribe(id).map(|e| *e.value()), Some("h"));
    /// assert!(reg.load().matches(&Topic::parse("a")?).is_empty());
    /// assert!(reg.unsubscribe(id).is_none());
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
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
///
/// # Examples
///
/// ```
/// use topicbus::{registry::Registry, Pattern};
/// let reg = Registry::new();
/// let old = reg.subscribe([Pattern::parse("v1.#")?], "old");
/// // Replace one registration with another in one swap: no reader sees both or neither.
/// let v2 = Pattern::parse("v2.#")?;
/// let new = reg.update(|b| {
///     b.unsubscribe(old);
///     b.subscribe([v2], "new")
/// });
/// let snap = reg.load();
/// assert!(snap.get(old).is_none() && snap.get(new).is_some());
/// # Ok::<(), topicbus::TopicError>(())
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let (a, b) = reg.update(|batch| {
    ///     let a = batch.subscribe([Pattern::parse("a").unwrap()], 1);
    ///     let b = batch.subscribe([Pattern::parse("b").unwrap()], 2);
    ///     (a, b)
    /// });
    /// assert_ne!(a, b);
    /// assert_eq!(reg.load().version(), 1); // two registrations, one swap
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// let ids: Vec<_> = (0..3).map(|i| reg.subscribe([Pattern::parse("a").unwrap()], i)).collect();
    /// let removed = reg.update(|b| ids.iter().filter_map(|id| b.unsubscribe(*id)).count());
    /// assert_eq!((removed, reg.load().len()), (3, 0));
    /// ```
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Option<std::sync::Arc<Entry<E>>> {
        let entry = self.next.entries.remove(&id)?;
        self.next
            .matcher
            .remove_value(&ById(std::sync::Arc::clone(&entry)));
        self.changed = true;
        Some(entry)
    }

    /// The snapshot as it stands with the changes so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{registry::Registry, Pattern};
    /// let reg = Registry::new();
    /// reg.update(|b| {
    ///     b.subscribe([Pattern::parse("a").unwrap()], ());
    ///     assert_eq!(b.snapshot().len(), 1); // the batch sees its own changes
    /// });
    /// assert_eq!(reg.load().len(), 1);
    /// ```
    pub fn snapshot(&self) -> &Snapshot<E> {
        &self.next
    }
}

#[cfg(test)]
mod tests;

//! The persistent wildcard trie and its matching walk.
//!
//! # Shape
//!
//! A node has literal children keyed by level (a small vector for up to
//! [`SMALL_MAX`] children, a persistent hash map beyond), an optional `*`
//! child, an optional `#` child, and the value slots of the patterns that end
//! there. Nodes are shared between matcher versions through `Arc`; an edit
//! copies only the nodes on the path from the root to the edited node
//! (`Arc::make_mut`), so a change costs O(depth) node copies whatever the size.
//!
//! # Matching: a level-synchronous NFA
//!
//! The walk keeps the set of trie states alive after each topic level:
//!
//! - `cur`: nodes reached by a literal or `*` edge at exactly this level;
//! - `active`: `#` nodes. A `#` node entered at level `j` stays live at every
//!   level `>= j` (it absorbs any number of levels), so it is kept once, from
//!   its first (smallest) entry level on.
//!
//! Only `#` nodes can be reached twice (through their own self-loop and again
//! through their parent), and `active` is deduplicated, so by induction every
//! state set is duplicate-free: distinct parents have distinct children, and a
//! parent's literal and `*` children differ. Each level therefore costs
//! O(|cur| + |active|) child lookups, never more than the number of trie nodes:
//! the pathological pattern `#.#.…` (15 `#`) against 31 levels stays at a few
//! hundred steps instead of the exponential count a backtracking walk takes.

use std::ptr;
use std::sync::Arc;

use super::{Bucket, Slot};
use crate::topic::Level;

/// Children up to this count live in a vector searched linearly (by hash
/// first); beyond, in a persistent hash map keyed by the level hash.
pub(super) const SMALL_MAX: usize = 8;
/// A map shrinks back to a vector at this count (hysteresis against flapping).
const SMALL_BACK: usize = SMALL_MAX / 2;

/// One trie node.
#[derive(Clone)]
pub(super) struct Node<V> {
    /// Values whose pattern ends at this node.
    pub(super) values: Arc<[Slot<V>]>,
    children: Children<V>,
    star: Option<Arc<Node<V>>>,
    hash: Option<Arc<Node<V>>>,
}

/// Literal children of a node, found by the level's hash (computed once per
/// level of the topic being matched) and confirmed by comparing the text.
#[derive(Clone)]
enum Children<V> {
    Small(Vec<(u64, Arc<str>, Arc<Node<V>>)>),
    Map(Arc<FlatMap<Bucket<Arc<Node<V>>>>>),
}

/// A flat hash table keyed by level hash, copied whole when a shared version
/// is edited (O(fanout)), in exchange for one-probe lookups.
type FlatMap<T> = std::collections::HashMap<u64, T, std::hash::BuildHasherDefault<super::IdHasher>>;

impl<V: Clone> Node<V> {
    pub(super) fn empty() -> Self {
        Self {
            values: Arc::from(Vec::new()),
            children: Children::Small(Vec::new()),
            star: None,
            hash: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && match &self.children {
                Children::Small(v) => v.is_empty(),
                Children::Map(m) => m.is_empty(),
            }
    }

    #[inline]
    fn child(&self, level: &str, h: u64) -> Option<&Node<V>> {
        match &self.children {
            Children::Small(v) => v
                .iter()
                .find(|(kh, k, _)| *kh == h && k.as_ref() == level)
                .map(|(_, _, n)| &**n),
            Children::Map(m) => m
                .get(&h)?
                .iter()
                .find(|(k, _)| k.as_ref() == level)
                .map(|(_, n)| &**n),
        }
    }

    /// Walks (creating as needed) the path `levels` below `this`, applies `f`
    /// to the value slots of the final node, and prunes nodes left empty.
    /// Copies every node on the path that is shared with another version.
    /// `hash` is the matcher's level hash.
    ///
    /// Returns true when `this` is now empty and should be unlinked.
    pub(super) fn edit<'p>(
        this: &mut Arc<Node<V>>,
        mut levels: impl Iterator<Item = Level<'p>>,
        hash: &impl Fn(&str) -> u64,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) -> bool {
        let node = Arc::make_mut(this);
        match levels.next() {
            None => {
                let mut slots = node.values.to_vec();
                f(&mut slots);
                node.values = Arc::from(slots);
            }
            Some(Level::Star) => edit_optional(&mut node.star, levels, hash, f),
            Some(Level::Hash) => edit_optional(&mut node.hash, levels, hash, f),
            Some(Level::Literal(level)) => node.edit_child(level, levels, hash, f),
        }
        node.is_empty()
    }

    fn edit_child<'p>(
        &mut self,
        level: &str,
        levels: impl Iterator<Item = Level<'p>>,
        hash: &impl Fn(&str) -> u64,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) {
        let h = hash(level);
        match &mut self.children {
            Children::Small(v) => {
                if let Some(i) = v
                    .iter()
                    .position(|(kh, k, _)| *kh == h && k.as_ref() == level)
                {
                    if Node::edit(&mut v[i].2, levels, hash, f) {
                        v.swap_remove(i);
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, levels, hash, f) {
                        v.push((h, Arc::from(level), child));
                        if v.len() > SMALL_MAX {
                            let mut map: FlatMap<Bucket<Arc<Node<V>>>> = FlatMap::default();
                            for (h, k, n) in v.drain(..) {
                                map.entry(h).or_default().push((k, n));
                            }
                            self.children = Children::Map(Arc::new(map));
                        }
                    }
                }
            }
            Children::Map(m) => {
                let m = Arc::make_mut(m);
                let bucket = m.entry(h).or_default();
                if let Some(i) = bucket.iter().position(|(k, _)| k.as_ref() == level) {
                    if Node::edit(&mut bucket[i].1, levels, hash, f) {
                        bucket.swap_remove(i);
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, levels, hash, f) {
                        bucket.push((Arc::from(level), child));
                    }
                }
                if bucket.is_empty() {
                    m.remove(&h);
                    if m.len() <= SMALL_BACK {
                        let small = m
                            .iter()
                            .flat_map(|(h, b)| b.iter().map(|(k, n)| (*h, k.clone(), n.clone())))
                            .collect();
                        self.children = Children::Small(small);
                    }
                }
            }
        }
    }
}

fn edit_optional<'p, V: Clone>(
    slot: &mut Option<Arc<Node<V>>>,
    levels: impl Iterator<Item = Level<'p>>,
    hash: &impl Fn(&str) -> u64,
    f: impl FnOnce(&mut Vec<Slot<V>>),
) {
    let child = slot.get_or_insert_with(|| Arc::new(Node::empty()));
    if Node::edit(child, levels, hash, f) {
        *slot = None;
    }
}

/// Storage for one state set of the walk.
///
/// The fast path uses fixed-capacity inline arrays, which never allocate;
/// if a pattern set ever has more live states than fit (it takes dozens of
/// overlapping wildcard patterns all matching one topic prefix), the match is
/// rerun on heap vectors. Both are plain stacks with a fallible push.
pub(super) trait States<'a, V>: Default {
    /// Adds a state; false when the set is full.
    fn push(&mut self, node: &'a Node<V>) -> bool;
    fn as_slice(&self) -> &[&'a Node<V>];
    fn clear(&mut self);
}

/// The inline capacity of one state set.
pub(super) const INLINE_STATES: usize = 32;

/// Inline state set: never allocates, may be full.
pub(super) type Inline<'a, V> = arrayvec::ArrayVec<&'a Node<V>, INLINE_STATES>;

impl<'a, V> States<'a, V> for Inline<'a, V> {
    #[inline(always)]
    fn push(&mut self, node: &'a Node<V>) -> bool {
        self.try_push(node).is_ok()
    }
    #[inline(always)]
    fn as_slice(&self) -> &[&'a Node<V>] {
        self
    }
    #[inline(always)]
    fn clear(&mut self) {
        arrayvec::ArrayVec::clear(self);
    }
}

impl<'a, V> States<'a, V> for Vec<&'a Node<V>> {
    #[inline]
    fn push(&mut self, node: &'a Node<V>) -> bool {
        Vec::push(self, node);
        true
    }
    #[inline]
    fn as_slice(&self) -> &[&'a Node<V>] {
        self
    }
    #[inline]
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// One match in progress: fed the topic's levels one by one with [`step`],
/// then asked for the matching nodes with [`finish`].
///
/// [`step`]: Walk::step
/// [`finish`]: Walk::finish
pub(super) struct Walk<'a, V, S> {
    /// Live states reached by a literal or `*` edge; `bufs[cur]` holds the
    /// current level, the other buffer receives the next (toggled, not
    /// swapped, so no state set is ever copied).
    bufs: [S; 2],
    cur: usize,
    /// Live `#` states, each from its first entry level on.
    active: S,
    /// Set when no state is left (nothing can match) or a set overflowed.
    stopped: bool,
    /// A state set overflowed: the caller must rerun with heap state sets.
    pub(super) overflowed: bool,
    _values: std::marker::PhantomData<&'a V>,
}

impl<'a, V, S: States<'a, V>> Walk<'a, V, S> {
    #[inline]
    pub(super) fn new(root: &'a Node<V>) -> Self {
        let mut w = Walk {
            bufs: [S::default(), S::default()],
            cur: 0,
            active: S::default(),
            stopped: false,
            overflowed: false,
            _values: std::marker::PhantomData,
        };
        w.bufs[0].push(root);
        if !enter_hashes(root, &mut w.active) {
            w.overflow();
        }
        w
    }

    #[cold]
    fn overflow(&mut self) {
        self.overflowed = true;
        self.stopped = true;
    }

    /// Consumes one topic level (`h` is its hash).
    #[inline]
    pub(super) fn step(&mut self, level: &str, h: u64)
    where
        V: Clone,
    {
        if self.stopped {
            return;
        }
        let [a, b] = &mut self.bufs;
        let (cur, next) = if self.cur == 0 { (a, b) } else { (b, a) };
        next.clear();
        let active = &mut self.active;
        // `#` states entered while consuming this level are live from the
        // next level on, so only the ones live before it consume it.
        let live = active.as_slice().len();
        let mut ok = true;
        for &node in cur.as_slice() {
            ok &= transitions(node, level, h, next, active);
        }
        for i in 0..live {
            let node = active.as_slice()[i];
            ok &= transitions(node, level, h, next, active);
        }
        self.cur ^= 1;
        if !ok {
            self.overflow();
        } else if next.as_slice().is_empty() && active.as_slice().is_empty() {
            self.stopped = true;
        }
    }

    /// Calls `emit` for every node whose patterns match the levels consumed.
    /// Each node is emitted at most once. Must not be called after overflow.
    #[inline]
    pub(super) fn finish(&self, mut emit: impl FnMut(&'a Node<V>)) {
        debug_assert!(!self.overflowed);
        for &node in self.bufs[self.cur].as_slice() {
            emit(node);
        }
        for &node in self.active.as_slice() {
            emit(node);
        }
    }
}

/// Follows `node`'s literal edge for `level` and its `*` edge into `next`,
/// entering the `#` chains below the reached nodes. False on overflow.
#[inline(always)]
fn transitions<'a, V: Clone, S: States<'a, V>>(
    node: &'a Node<V>,
    level: &str,
    h: u64,
    next: &mut S,
    active: &mut S,
) -> bool {
    let mut ok = true;
    if let Some(c) = node.child(level, h) {
        ok &= next.push(c) && enter_hashes(c, active);
    }
    if let Some(c) = node.star.as_deref() {
        ok &= next.push(c) && enter_hashes(c, active);
    }
    ok
}

/// Adds the chain of `#` children below `node` (`x.#`, `x.#.#`, …) to
/// `active`, skipping the ones already there (and so their chains too).
/// False on overflow.
#[inline(always)]
fn enter_hashes<'a, V, S: States<'a, V>>(node: &'a Node<V>, active: &mut S) -> bool {
    let mut h = node.hash.as_deref();
    while let Some(x) = h {
        if active.as_slice().iter().any(|a| ptr::eq(*a, x)) {
            return true;
        }
        if !active.push(x) {
            return false;
        }
        h = x.hash.as_deref();
    }
    true
}

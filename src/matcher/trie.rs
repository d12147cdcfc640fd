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

use smallvec::SmallVec;

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

/// State sets of the walk. Inline up to this size: matching a topic against
/// any realistic pattern set allocates nothing; only a pattern set with more
/// than this many simultaneously live wildcard states spills to the heap.
type States<'a, V> = SmallVec<[&'a Node<V>; 16]>;

/// One match in progress: fed the topic's levels one by one with [`step`],
/// then asked for the matching nodes with [`finish`].
///
/// [`step`]: Walk::step
/// [`finish`]: Walk::finish
pub(super) struct Walk<'a, V> {
    cur: States<'a, V>,
    next: States<'a, V>,
    active: States<'a, V>,
}

impl<'a, V> Walk<'a, V> {
    #[inline]
    pub(super) fn new(root: &'a Node<V>) -> Self {
        let mut w = Walk {
            cur: SmallVec::new(),
            next: SmallVec::new(),
            active: SmallVec::new(),
        };
        w.cur.push(root);
        enter_hashes(root, &mut w.active);
        w
    }

    /// Consumes one topic level (`h` is its hash). Returns false when no state
    /// is left, so no pattern can match any more.
    #[inline]
    pub(super) fn step(&mut self, level: &str, h: u64) -> bool
    where
        V: Clone,
    {
        // `#` nodes entered while consuming this level are live from the next
        // level on, so only the ones live before it consume it.
        let live = self.active.len();
        self.next.clear();
        for i in 0..self.cur.len() + live {
            let node = if i < self.cur.len() {
                self.cur[i]
            } else {
                self.active[i - self.cur.len()]
            };
            if let Some(c) = node.child(level, h) {
                self.next.push(c);
                enter_hashes(c, &mut self.active);
            }
            if let Some(c) = node.star.as_deref() {
                self.next.push(c);
                enter_hashes(c, &mut self.active);
            }
        }
        std::mem::swap(&mut self.cur, &mut self.next);
        !(self.cur.is_empty() && self.active.is_empty())
    }

    /// Calls `emit` for every node whose patterns match the levels consumed.
    /// Each node is emitted at most once.
    #[inline]
    pub(super) fn finish(self, mut emit: impl FnMut(&'a Node<V>)) {
        for node in self.cur.iter().chain(self.active.iter()) {
            emit(node);
        }
    }
}

/// Adds the chain of `#` children below `node` (`x.#`, `x.#.#`, …) to
/// `active`, skipping the ones already there (and so their chains too).
#[inline]
fn enter_hashes<'a, V>(node: &'a Node<V>, active: &mut States<'a, V>) {
    let mut h = node.hash.as_deref();
    while let Some(x) = h {
        if active.iter().any(|a| ptr::eq(*a, x)) {
            return;
        }
        active.push(x);
        h = x.hash.as_deref();
    }
}

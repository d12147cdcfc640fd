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

use super::{PMap, Slot};
use crate::topic::Level;

/// Children up to this count live in a vector searched linearly; beyond, in a
/// persistent hash map.
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

/// Literal children of a node.
#[derive(Clone)]
enum Children<V> {
    Small(Vec<(Arc<str>, Arc<Node<V>>)>),
    Map(PMap<Arc<str>, Arc<Node<V>>>),
}

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
    fn child(&self, level: &str) -> Option<&Node<V>> {
        match &self.children {
            Children::Small(v) => v
                .iter()
                .find(|(k, _)| k.as_ref() == level)
                .map(|(_, n)| &**n),
            Children::Map(m) => m.get(level).map(|n| &**n),
        }
    }

    /// Walks (creating as needed) the path `levels` below `this`, applies `f`
    /// to the value slots of the final node, and prunes nodes left empty.
    /// Copies every node on the path that is shared with another version.
    ///
    /// Returns true when `this` is now empty and should be unlinked.
    pub(super) fn edit<'p>(
        this: &mut Arc<Node<V>>,
        mut levels: impl Iterator<Item = Level<'p>>,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) -> bool {
        let node = Arc::make_mut(this);
        match levels.next() {
            None => {
                let mut slots = node.values.to_vec();
                f(&mut slots);
                node.values = Arc::from(slots);
            }
            Some(Level::Star) => edit_optional(&mut node.star, levels, f),
            Some(Level::Hash) => edit_optional(&mut node.hash, levels, f),
            Some(Level::Literal(level)) => node.edit_child(level, levels, f),
        }
        node.is_empty()
    }

    fn edit_child<'p>(
        &mut self,
        level: &str,
        levels: impl Iterator<Item = Level<'p>>,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) {
        match &mut self.children {
            Children::Small(v) => {
                if let Some(i) = v.iter().position(|(k, _)| k.as_ref() == level) {
                    if Node::edit(&mut v[i].1, levels, f) {
                        v.swap_remove(i);
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, levels, f) {
                        v.push((Arc::from(level), child));
                        if v.len() > SMALL_MAX {
                            let mut map = PMap::with_hasher(crate::sync::hasher());
                            map.extend(v.drain(..));
                            self.children = Children::Map(map);
                        }
                    }
                }
            }
            Children::Map(m) => {
                if let Some(child) = m.get_mut(level) {
                    if Node::edit(child, levels, f) {
                        m.remove(level);
                        if m.len() <= SMALL_BACK {
                            let small = m.iter().map(|(k, n)| (k.clone(), n.clone())).collect();
                            self.children = Children::Small(small);
                        }
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, levels, f) {
                        m.insert(Arc::from(level), child);
                    }
                }
            }
        }
    }
}

fn edit_optional<'p, V: Clone>(
    slot: &mut Option<Arc<Node<V>>>,
    levels: impl Iterator<Item = Level<'p>>,
    f: impl FnOnce(&mut Vec<Slot<V>>),
) {
    let child = slot.get_or_insert_with(|| Arc::new(Node::empty()));
    if Node::edit(child, levels, f) {
        *slot = None;
    }
}

/// State sets of the walk. Inline up to these sizes: matching a topic against
/// any realistic pattern set allocates nothing; only a pattern set with more
/// than this many simultaneously live wildcard states spills to the heap.
type States<'a, V> = SmallVec<[&'a Node<V>; 16]>;

/// Calls `emit` for every node whose patterns match the topic `levels`.
/// Each node is emitted at most once.
#[inline]
pub(super) fn walk<'a, 't, V: Clone>(
    root: &'a Node<V>,
    levels: impl Iterator<Item = &'t str>,
    mut emit: impl FnMut(&'a Node<V>),
) {
    let mut cur: States<'a, V> = SmallVec::new();
    let mut next: States<'a, V> = SmallVec::new();
    let mut active: States<'a, V> = SmallVec::new();
    cur.push(root);
    enter_hashes(root, &mut active);
    for level in levels {
        // `#` nodes entered while consuming this level are live from the next
        // level on, so only the ones live before it consume it.
        let live = active.len();
        next.clear();
        for i in 0..cur.len() + live {
            let node = if i < cur.len() {
                cur[i]
            } else {
                active[i - cur.len()]
            };
            if let Some(c) = node.child(level) {
                next.push(c);
                enter_hashes(c, &mut active);
            }
            if let Some(c) = node.star.as_deref() {
                next.push(c);
                enter_hashes(c, &mut active);
            }
        }
        std::mem::swap(&mut cur, &mut next);
        if cur.is_empty() && active.is_empty() {
            return;
        }
    }
    for node in cur.iter().chain(active.iter()) {
        emit(node);
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

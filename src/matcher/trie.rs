//! The persistent wildcard trie and its matching walk.
//!
//! # Shape
//!
//! A node has literal children keyed by level (a small vector for up to
//! [`SMALL_MAX`] children, a flat hash table beyond), an optional `*` child,
//! an optional `#` child, the value slots of the patterns that end there and,
//! on nodes reached through a `#` edge, a table of *tails*. Nodes are shared
//! between matcher versions through `Arc`; an edit copies only the nodes on the
//! path from the root to the edited node (`Arc::make_mut`), plus the child
//! table of a copied wide node.
//!
//! # Tails
//!
//! Most patterns with a `#` end in literal levels after it (`#.error`,
//! `orders.#.failed`, `#.eu.created`). Walked level by level, such a tail
//! costs a child lookup at every level its `#` is live at. Instead, a `#` node
//! keeps its all-literal tails in a hash table keyed by their level hashes
//! folded with `mix` from the last level backwards (so one backward pass over
//! the topic yields every suffix's key), and the walk looks them up once per
//! distinct tail length, at the end of the topic, for the suffix that starts
//! after the `#` was entered. Tails that contain a wildcard stay in the trie.
//!
//! # Matching: a level-synchronous NFA
//!
//! The walk keeps the set of trie states alive after each topic level:
//!
//! - `cur`: nodes reached by a literal or `*` edge at exactly this level;
//! - `active`: `#` nodes with the level they were entered at. A `#` node
//!   entered at level `j` stays live at every level `>= j` (it absorbs any
//!   number of levels), so it is kept once, from its first (smallest) entry
//!   level on.
//!
//! Only `#` nodes can be reached twice (through their own self-loop and again
//! through their parent), and `active` is deduplicated, so by induction every
//! state set is duplicate-free: distinct parents have distinct children, and a
//! parent's literal and `*` children differ. Each level therefore costs
//! O(|cur| + |active|) child lookups, never more than the number of trie nodes:
//! the pathological pattern `#.#.…` (15 `#`) against 31 levels stays at a few
//! hundred steps instead of the exponential count a backtracking walk takes.

use std::collections::hash_map::Entry;
use std::ptr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{edit_bucket, mix, Bucket, Slot};
use crate::topic::Level;

/// Children up to this count live in a vector searched linearly (by hash
/// first); beyond, in a flat hash table keyed by the level hash.
pub(super) const SMALL_MAX: usize = 8;
/// A table shrinks back to a vector at this count (hysteresis).
const SMALL_BACK: usize = SMALL_MAX / 2;

/// A flat hash table keyed by an already computed level hash.
type FlatMap<T> = std::collections::HashMap<u64, T, std::hash::BuildHasherDefault<super::IdHasher>>;

/// One trie node.
#[derive(Clone)]
pub(super) struct Node<V> {
    /// Values whose pattern ends at this node, inline up to two.
    pub(super) values: SmallVec<[Slot<V>; 2]>,
    children: Children<V>,
    star: Option<Arc<Node<V>>>,
    hash: Option<Arc<Node<V>>>,
    /// All-literal tails of patterns whose last `#` is this node.
    tails: Option<Arc<Tails<V>>>,
    /// Has a literal or `*` child, so consuming a level can lead somewhere;
    /// a state without edges is skipped by the walk until the end.
    edges: bool,
}

/// Literal children of a node, found by the level's hash (computed once per
/// level of the topic being matched) and confirmed by comparing the text.
#[derive(Clone)]
enum Children<V> {
    Small(Vec<(u64, Arc<str>, Arc<Node<V>>)>),
    Wide(Arc<Wide<V>>),
}

/// The children of a wide node: a flat table keyed by level hash, copied whole
/// when a shared version is edited (O(fanout)) in exchange for one-probe
/// lookups. A level whose 64-bit hash is already taken by another level (a
/// collision: practically never, but possible) goes to `collided`, which a
/// lookup scans only when the table's entry for its hash has other text.
#[derive(Clone)]
struct Wide<V> {
    table: FlatMap<(Arc<str>, Arc<Node<V>>)>,
    collided: Vec<(u64, Arc<str>, Arc<Node<V>>)>,
}

/// The literal tails of one `#` node, keyed by the folded hash of their levels.
#[derive(Clone)]
struct Tails<V> {
    /// Distinct tail lengths in levels, each with how many tails have it.
    lens: SmallVec<[(usize, usize); 2]>,
    table: FlatMap<Bucket<Arc<[Slot<V>]>>>,
}

impl<V> Wide<V> {
    fn new() -> Self {
        Self {
            table: FlatMap::default(),
            collided: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.table.len() + self.collided.len()
    }

    #[inline]
    fn get(&self, level: &str, h: u64) -> Option<&Arc<Node<V>>> {
        let (text, node) = self.table.get(&h)?;
        if text.as_ref() == level {
            return Some(node);
        }
        self.collided
            .iter()
            .find(|(ch, t, _)| *ch == h && t.as_ref() == level)
            .map(|(_, _, n)| n)
    }

    fn get_mut(&mut self, level: &str, h: u64) -> Option<&mut Arc<Node<V>>> {
        match self.table.get_mut(&h) {
            Some((text, node)) if text.as_ref() == level => Some(node),
            Some(_) => self
                .collided
                .iter_mut()
                .find(|(ch, t, _)| *ch == h && t.as_ref() == level)
                .map(|(_, _, n)| n),
            None => None,
        }
    }

    fn insert(&mut self, h: u64, text: Arc<str>, node: Arc<Node<V>>) {
        match self.table.entry(h) {
            Entry::Occupied(_) => self.collided.push((h, text, node)),
            Entry::Vacant(slot) => {
                slot.insert((text, node));
            }
        }
    }

    fn remove(&mut self, level: &str, h: u64) {
        if let Some(i) = self
            .collided
            .iter()
            .position(|(ch, t, _)| *ch == h && t.as_ref() == level)
        {
            self.collided.swap_remove(i);
        } else if self.table.remove(&h).is_some() {
            // Promote a collided level with the same hash into the table.
            if let Some(i) = self.collided.iter().position(|(ch, _, _)| *ch == h) {
                let (_, t, n) = self.collided.swap_remove(i);
                self.table.insert(h, (t, n));
            }
        }
    }

    fn into_entries(self) -> impl Iterator<Item = (u64, Arc<str>, Arc<Node<V>>)> {
        self.table
            .into_iter()
            .map(|(h, (t, n))| (h, t, n))
            .chain(self.collided)
    }
}

impl<V: Clone> Node<V> {
    pub(super) fn empty() -> Self {
        Self {
            values: SmallVec::new(),
            children: Children::Small(Vec::new()),
            star: None,
            hash: None,
            tails: None,
            edges: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.tails.is_none()
            && match &self.children {
                Children::Small(v) => v.is_empty(),
                Children::Wide(m) => m.len() == 0,
            }
    }

    #[inline(always)]
    fn child(&self, level: &str, h: u64) -> Option<&Node<V>> {
        match &self.children {
            Children::Small(v) => v
                .iter()
                .find(|(kh, k, _)| *kh == h && k.as_ref() == level)
                .map(|(_, _, n)| &**n),
            Children::Wide(m) => m.get(level, h).map(|n| &**n),
        }
    }

    /// Walks (creating as needed) the path `levels` below `this`, applies `f`
    /// to the value slots at its end, and prunes nodes left empty. Copies
    /// every node on the path that is shared with another version. `hash` is
    /// the matcher's level hash; `after_hash` says `this` was reached through
    /// a `#` edge, so an all-literal rest of the pattern is one of its tails.
    ///
    /// Returns true when `this` is now empty and should be unlinked.
    pub(super) fn edit(
        this: &mut Arc<Node<V>>,
        levels: &[Level<'_>],
        after_hash: bool,
        hash: &impl Fn(&str) -> u64,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) -> bool {
        let node = Arc::make_mut(this);
        let tail = after_hash
            && !levels.is_empty()
            && levels.iter().all(|l| matches!(l, Level::Literal(_)));
        if tail {
            node.edit_tail(levels, hash, f);
        } else {
            match levels.split_first() {
                None => {
                    let mut slots = node.values.to_vec();
                    f(&mut slots);
                    node.values = SmallVec::from_vec(slots);
                }
                Some((Level::Star, rest)) => edit_optional(&mut node.star, rest, false, hash, f),
                Some((Level::Hash, rest)) => edit_optional(&mut node.hash, rest, true, hash, f),
                Some((Level::Literal(level), rest)) => node.edit_child(level, rest, hash, f),
            }
        }
        node.edges = node.star.is_some()
            || match &node.children {
                Children::Small(v) => !v.is_empty(),
                Children::Wide(m) => m.len() > 0,
            };
        node.is_empty()
    }

    fn edit_tail(
        &mut self,
        levels: &[Level<'_>],
        hash: &impl Fn(&str) -> u64,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) {
        // Tails are keyed by their level hashes folded from the last level
        // backwards, so the walk gets every suffix's key from one pass.
        let mut key = 0;
        let mut text = String::new();
        for level in levels.iter().rev() {
            if let Level::Literal(l) = level {
                key = mix(key, hash(l));
            }
        }
        for level in levels {
            if let Level::Literal(l) = level {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(l);
            }
        }
        let tails = Arc::make_mut(self.tails.get_or_insert_with(|| {
            Arc::new(Tails {
                lens: SmallVec::new(),
                table: FlatMap::default(),
            })
        }));
        let bucket = tails.table.entry(key).or_default();
        let delta = edit_bucket(bucket, &text, || Arc::from(text.as_str()), f);
        if bucket.is_empty() {
            tails.table.remove(&key);
        }
        let len = levels.len();
        let at = tails.lens.iter().position(|(l, _)| *l == len);
        match (delta, at) {
            (1, Some(i)) => tails.lens[i].1 += 1,
            (1, None) => tails.lens.push((len, 1)),
            (-1, Some(i)) => {
                tails.lens[i].1 -= 1;
                if tails.lens[i].1 == 0 {
                    tails.lens.swap_remove(i);
                }
            }
            _ => {}
        }
        if tails.table.is_empty() {
            self.tails = None;
        }
    }

    fn edit_child(
        &mut self,
        level: &str,
        rest: &[Level<'_>],
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
                    if Node::edit(&mut v[i].2, rest, false, hash, f) {
                        v.swap_remove(i);
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, rest, false, hash, f) {
                        v.push((h, Arc::from(level), child));
                        if v.len() > SMALL_MAX {
                            let mut wide = Wide::new();
                            for (h, k, n) in v.drain(..) {
                                wide.insert(h, k, n);
                            }
                            self.children = Children::Wide(Arc::new(wide));
                        }
                    }
                }
            }
            Children::Wide(m) => {
                let wide = Arc::make_mut(m);
                if let Some(child) = wide.get_mut(level, h) {
                    if Node::edit(child, rest, false, hash, f) {
                        wide.remove(level, h);
                        if wide.len() <= SMALL_BACK {
                            let wide = std::mem::replace(wide, Wide::new());
                            self.children = Children::Small(wide.into_entries().collect());
                        }
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, rest, false, hash, f) {
                        wide.insert(h, Arc::from(level), child);
                    }
                }
            }
        }
    }
}

fn edit_optional<V: Clone>(
    slot: &mut Option<Arc<Node<V>>>,
    rest: &[Level<'_>],
    after_hash: bool,
    hash: &impl Fn(&str) -> u64,
    f: impl FnOnce(&mut Vec<Slot<V>>),
) {
    let child = slot.get_or_insert_with(|| Arc::new(Node::empty()));
    if Node::edit(child, rest, after_hash, hash, f) {
        *slot = None;
    }
}

/// One level of the topic being matched: its text, hash and byte offset.
#[derive(Clone, Copy)]
pub(super) struct TopicLevel<'t> {
    pub(super) word: &'t str,
    pub(super) hash: u64,
    pub(super) start: usize,
}

/// A stack of walk states with a fallible push: inline arrays on the fast
/// path (never allocate, may be full), heap vectors on the rare slow path.
pub(super) trait Stack<T>: Default {
    /// The matching buffer for suffix keys (inline or heap, like the stack).
    type Keys: Default + Extend<u64> + AsRef<[u64]>;
    /// Adds an item; false when the stack is full.
    fn push_item(&mut self, item: T) -> bool;
    fn items(&self) -> &[T];
    fn reset(&mut self);
}

/// The inline capacity of every state set on the fast path.
pub(super) const INLINE: usize = 32;

impl<T> Stack<T> for arrayvec::ArrayVec<T, INLINE> {
    type Keys = arrayvec::ArrayVec<u64, INLINE>;
    #[inline(always)]
    fn push_item(&mut self, item: T) -> bool {
        self.try_push(item).is_ok()
    }
    #[inline(always)]
    fn items(&self) -> &[T] {
        self
    }
    #[inline(always)]
    fn reset(&mut self) {
        self.clear();
    }
}

impl<T> Stack<T> for Vec<T> {
    type Keys = Vec<u64>;
    #[inline]
    fn push_item(&mut self, item: T) -> bool {
        self.push(item);
        true
    }
    #[inline]
    fn items(&self) -> &[T] {
        self
    }
    #[inline]
    fn reset(&mut self) {
        self.clear();
    }
}

/// A state set outgrew its inline capacity; rerun on heap stacks.
pub(super) struct Overflow;

/// Matches the topic `text`, whose levels are `levels`, against the trie
/// below `root`, calling `emit` once for every slot list whose pattern
/// matches. Nothing is emitted unless the walk completes: on `Err(Overflow)`
/// the caller reruns it with heap stacks.
#[inline]
pub(super) fn walk<'a, V, S, A>(
    root: &'a Node<V>,
    text: &str,
    levels: &[TopicLevel<'_>],
    emit: &mut impl FnMut(&'a [Slot<V>]),
) -> Result<(), Overflow>
where
    V: Clone,
    S: Stack<&'a Node<V>>,
    A: Stack<(&'a Node<V>, usize)>,
{
    // `bufs[cur]` holds the states of the current level; the other buffer
    // receives the next level's (toggled, never copied).
    let mut bufs: [S; 2] = [S::default(), S::default()];
    let mut cur = 0;
    // Live `#` states with the level they were first entered at.
    let mut active = A::default();
    bufs[0].push_item(root);
    enter_hashes(root, 0, &mut active)?;
    let last = levels.len().saturating_sub(1);
    for (i, level) in levels.iter().enumerate() {
        let (word, h, is_last) = (level.word, level.hash, i == last);
        let [a, b] = &mut bufs;
        let (now, next) = if cur == 0 { (a, b) } else { (b, a) };
        next.reset();
        // `#` states entered while consuming this level are live from the
        // next level on, so only the ones live before it consume it.
        let live = active.items().len();
        for &node in now.items() {
            if node.edges {
                transitions(node, word, h, i + 1, is_last, next, &mut active)?;
            }
        }
        for k in 0..live {
            let node = active.items()[k].0;
            if node.edges {
                transitions(node, word, h, i + 1, is_last, next, &mut active)?;
            }
        }
        cur ^= 1;
        if next.items().is_empty() && active.items().is_empty() {
            return Ok(());
        }
    }
    for &node in bufs[cur].items() {
        emit(&node.values);
    }
    // `suffix_keys[k]`: the key of the topic's last k + 1 levels, computed on
    // first need and shared by every tail lookup.
    let mut suffix_keys: S::Keys = Default::default();
    for &(node, entered) in active.items() {
        emit(&node.values);
        if let Some(tails) = &node.tails {
            if suffix_keys.as_ref().is_empty() {
                fill_suffix_keys(levels, &mut suffix_keys);
            }
            match_tails(tails, entered, text, levels, suffix_keys.as_ref(), emit);
        }
    }
    Ok(())
}

/// `keys[k]` = the tail key of the topic's last `k + 1` levels.
#[inline]
fn fill_suffix_keys<K: Extend<u64>>(levels: &[TopicLevel<'_>], keys: &mut K) {
    let mut key = 0;
    keys.extend(levels.iter().rev().map(|l| {
        key = mix(key, l.hash);
        key
    }));
}

/// Looks up, for each tail length of a `#` node entered at level `entered`,
/// the topic suffix of that length (if it starts at or after `entered`).
#[inline]
fn match_tails<'a, V>(
    tails: &'a Tails<V>,
    entered: usize,
    text: &str,
    levels: &[TopicLevel<'_>],
    suffix_keys: &[u64],
    emit: &mut impl FnMut(&'a [Slot<V>]),
) {
    let n = levels.len();
    for &(len, _) in &tails.lens {
        if len > n || n - len < entered {
            continue;
        }
        if let Some(bucket) = tails.table.get(&suffix_keys[len - 1]) {
            let tail = &text[levels[n - len].start..];
            for (t, slots) in bucket {
                if **t == *tail {
                    emit(slots);
                }
            }
        }
    }
}

/// Follows `node`'s literal edge for `word` and its `*` edge, entering the
/// `#` chains below the reached nodes at `depth`. A reached node joins `next`
/// only if it can go further (it has edges) or this is the topic's last
/// level (its own values may match).
#[inline(always)]
fn transitions<'a, V: Clone, S: Stack<&'a Node<V>>, A: Stack<(&'a Node<V>, usize)>>(
    node: &'a Node<V>,
    word: &str,
    h: u64,
    depth: usize,
    is_last: bool,
    next: &mut S,
    active: &mut A,
) -> Result<(), Overflow> {
    if let Some(c) = node.child(word, h) {
        if c.edges || is_last {
            push(next, c)?;
        }
        enter_hashes(c, depth, active)?;
    }
    if let Some(c) = node.star.as_deref() {
        if c.edges || is_last {
            push(next, c)?;
        }
        enter_hashes(c, depth, active)?;
    }
    Ok(())
}

#[inline(always)]
fn push<T, S: Stack<T>>(stack: &mut S, item: T) -> Result<(), Overflow> {
    if stack.push_item(item) {
        Ok(())
    } else {
        Err(Overflow)
    }
}

/// Adds the chain of `#` children below `node` (`x.#`, `x.#.#`, …) to
/// `active` as entered at `depth`, skipping the ones already there (entered
/// earlier, so their chains too).
#[inline(always)]
fn enter_hashes<'a, V, A: Stack<(&'a Node<V>, usize)>>(
    node: &'a Node<V>,
    depth: usize,
    active: &mut A,
) -> Result<(), Overflow> {
    let mut h = node.hash.as_deref();
    while let Some(x) = h {
        if active.items().iter().any(|(a, _)| ptr::eq(*a, x)) {
            return Ok(());
        }
        push(active, (x, depth))?;
        h = x.hash.as_deref();
    }
    Ok(())
}

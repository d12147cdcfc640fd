//! The persistent wildcard trie and its matching walk.
//!
//! # Shape
//!
//! A node has literal children keyed by level key (a small vector for up to
//! [`SMALL_MAX`] children, an open-addressing [`KeyTable`] beyond), an
//! optional `*` child, an optional `#` child, the value slots of the patterns
//! that end there and, on nodes reached through a `#` edge, a table of
//! *tails*. Nodes are shared between matcher versions through `Arc`; an edit
//! copies only the nodes on the path from the root to the edited node
//! (`Arc::make_mut`), with the child table of a copied wide node and the tail
//! table of an edited `#` node.
//!
//! A level's key is the level itself when it is at most 7 bytes long (see
//! `LevelHash`), so a child found by key needs no text comparison; only
//! longer levels are confirmed against the child's stored text.
//!
//! # Tails
//!
//! Most patterns with a `#` end in literal levels after it (`#.error`,
//! `orders.#.failed`, `#.eu.created`). Walked level by level, such a tail
//! costs a child lookup at every level its `#` is live at. Instead, a `#` node
//! keeps its all-literal tails in a table keyed by their level keys folded
//! with `mix` from the last level backwards, and the walk looks them up once
//! per distinct tail length, at the end of the topic, for the suffix that
//! starts after the `#` was entered. A tail of one or two short levels is
//! confirmed by its level keys; any other by its text. Tails that contain a
//! wildcard stay in the trie.
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
//! The literal states of consecutive levels share one buffer: the next
//! level's are appended behind the current level's, which move to the front
//! only when the buffer fills, so a level costs no copying. `#` states that
//! have edges are also kept in a list of their own, `walkers`: only they can
//! consume a level, and most `#` states have none (`orders.#`, `#.error`).
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

use super::table::KeyTable;
use super::{key_is_level, mix, Slot};
use crate::topic::Level;

/// Children up to this count live in a vector searched linearly by key;
/// beyond, in a [`KeyTable`] (measured: 4 beats 8 by ~2 % on the 37 K set,
/// 2 is no better).
pub(super) const SMALL_MAX: usize = 4;
/// A table shrinks back to a vector at this count (hysteresis).
const SMALL_BACK: usize = SMALL_MAX / 2;

/// One trie node. The fields a walk reads at every visit (`lit`, `star`,
/// `hash`, `edges` and the children's lookup fields) come first, within the
/// node's first 64 bytes; what only the end of a walk or an edit reads
/// follows. (Aligning nodes to a cache line as well gained at most 2 % in
/// a match and cost 25–40 % on edits, through the allocator's aligned
/// path: measured, not kept.)
#[derive(Clone)]
#[repr(C)]
pub(super) struct Node<V> {
    /// Bit `r` set: a pattern below can match a topic with exactly `r` more
    /// levels through this node's own values or its literal and `*` edges
    /// (bit 63 stands for 63 or more). The walk keeps a reached node only if
    /// the topic has a matching number of levels left; most subtrees hold
    /// patterns of only a few lengths, so most dead ends stop at once.
    lit: u64,
    star: Option<Arc<Node<V>>>,
    hash: Option<Arc<Node<V>>>,
    /// Has a literal or `*` child, so consuming a level can lead somewhere;
    /// a state without edges is skipped by the walk until the end.
    edges: bool,
    children: Children<V>,
    /// All-literal tails of patterns whose last `#` is this node.
    tails: Option<Arc<Tails<V>>>,
    /// As `lit`, also through this node's `#` child and, on a `#` node, its
    /// tails: what a parent needs to know about this node.
    full: u64,
    /// The union of the literal children's `full` sets. Exact for a small
    /// child vector (recomputed on each edit); for a wide table only grown
    /// by edits (recomputed when it shrinks back to a vector), so an edit
    /// stays O(1) in the fanout. A superset only prunes less, never wrongly.
    kids: u64,
    /// Values whose pattern ends at this node, inline up to two.
    pub(super) values: SmallVec<[Slot<V>; 2]>,
}

/// Bit 63 of a depth set: "63 or more levels".
const MANY: u64 = 1 << 63;

/// The depth set `d` one level further up.
#[inline]
fn deeper(d: u64) -> u64 {
    (d << 1) | (d & MANY)
}

/// The depth bit for `r` levels left.
#[inline(always)]
fn depth_bit(r: usize) -> u64 {
    1 << r.min(63)
}

/// A literal child: its level's text (compared only for levels longer than
/// 7 bytes, whose keys are hashes) and its node.
type Child<V> = (Arc<str>, Arc<Node<V>>);

/// Literal children of a node, found by the level's key (computed once per
/// level of the topic being matched).
///
/// A wide node's table is copied whole when a shared version is edited
/// (O(fanout)) in exchange for one-probe lookups with no pointer to follow
/// before the slots.
#[derive(Clone)]
enum Children<V> {
    Small(Vec<(u64, Arc<str>, Arc<Node<V>>)>),
    Wide(KeyTable<Child<V>>),
}

/// One all-literal tail: the levels after a `#` to the end of a pattern.
/// What confirming a tail and emitting its values read comes first, so it
/// spans one cache line more often than the whole entry does.
#[derive(Clone)]
#[repr(C)]
struct Tail<V> {
    /// The keys of the first two levels (the rest are 0).
    keys: [u64; 2],
    slots: Arc<[Slot<V>]>,
    /// The tail has at most two levels, each at most 7 bytes long: equal
    /// keys then prove equal text, and the text is not read.
    exact: bool,
    /// The number of levels.
    len: u8,
    /// The tail's levels joined by `.`, compared when a key is a hash.
    text: Arc<str>,
}

/// The literal tails of one `#` node, keyed by the folded keys of their
/// levels. What a lookup reads comes first, within 64 bytes.
#[derive(Clone)]
#[repr(C)]
struct Tails<V> {
    /// Bit `k` set: some tail has `k + 1` levels (lengths up to 64; longer
    /// ones set `long` and are found through `lens`).
    mask: u64,
    long: bool,
    table: KeyTable<Tail<V>>,
    /// Distinct tail lengths in levels, each with how many tails have it.
    lens: SmallVec<[(usize, usize); 2]>,
}

/// Confirms that a child entry is the one for `level` with key `h`.
#[inline(always)]
fn is_level<V>(h: u64, level: &[u8]) -> impl Fn(&Child<V>) -> bool + '_ {
    move |(text, _)| key_is_level(h) || text.as_bytes() == level
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
            lit: 0,
            full: 0,
            kids: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.tails.is_none()
            && match &self.children {
                Children::Small(v) => v.is_empty(),
                Children::Wide(m) => m.is_empty(),
            }
    }

    #[inline(always)]
    fn child(&self, level: &[u8], h: u64) -> Option<&Node<V>> {
        match &self.children {
            Children::Small(v) => v
                .iter()
                .find(|(kh, k, _)| *kh == h && (key_is_level(h) || k.as_bytes() == level))
                .map(|(_, _, n)| &**n),
            Children::Wide(m) => m.find(h, is_level(h, level)).map(|(_, n)| &**n),
        }
    }

    /// Walks (creating as needed) the path `levels` below `this`, applies `f`
    /// to the value slots at its end, and prunes nodes left empty. Copies
    /// every node on the path that is shared with another version. `hash` is
    /// the matcher's level key; `after_hash` says `this` was reached through
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
                Children::Wide(m) => !m.is_empty(),
            };
        node.depths();
        node.is_empty()
    }

    /// Recomputes `lit` and `full` from the node's values, tails and its
    /// children's sets (already current: edits work bottom-up); `kids` of a
    /// wide table is kept by `edit_child`.
    fn depths(&mut self) {
        if let Children::Small(v) = &self.children {
            self.kids = v.iter().fold(0, |d, (_, _, c)| d | c.full);
        }
        let below = self.kids | self.star.as_ref().map_or(0, |c| c.full);
        self.lit = u64::from(!self.values.is_empty()) | deeper(below);
        // A `#` absorbs any number of levels: from its shortest match on.
        let hash = self.hash.as_ref().map_or(0, |h| match h.full {
            0 => 0,
            d => !0 << d.trailing_zeros(),
        });
        let tails = self.tails.as_ref().map_or(0, |t| {
            t.lens.iter().fold(0, |d, (len, _)| d | depth_bit(*len))
        });
        self.full = self.lit | hash | tails;
    }

    fn edit_tail(
        &mut self,
        levels: &[Level<'_>],
        hash: &impl Fn(&str) -> u64,
        f: impl FnOnce(&mut Vec<Slot<V>>),
    ) {
        // Tails are keyed by their level keys folded from the last level
        // backwards, as the walk folds the topic's suffixes.
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
        let mut keys = [0; 2];
        let mut exact = levels.len() <= keys.len();
        for (i, level) in levels.iter().enumerate() {
            if let Level::Literal(l) = level {
                let k = hash(l);
                exact &= key_is_level(k);
                if let Some(slot) = keys.get_mut(i) {
                    *slot = k;
                }
            }
        }
        let tails = Arc::make_mut(self.tails.get_or_insert_with(|| {
            Arc::new(Tails {
                lens: SmallVec::new(),
                mask: 0,
                long: false,
                table: KeyTable::new(),
            })
        }));
        let same = |t: &Tail<V>| *t.text == *text;
        let mut slots = tails
            .table
            .find(key, same)
            .map(|t| t.slots.to_vec())
            .unwrap_or_default();
        let existed = !slots.is_empty();
        f(&mut slots);
        let delta = match (existed, slots.is_empty()) {
            (true, true) => {
                tails.table.remove(key, same);
                -1
            }
            (true, false) => {
                if let Some(t) = tails.table.find_mut(key, same) {
                    t.slots = Arc::from(slots);
                }
                0
            }
            (false, false) => {
                tails.table.insert(
                    key,
                    Tail {
                        text: Arc::from(text.as_str()),
                        keys,
                        exact,
                        len: levels.len() as u8,
                        slots: Arc::from(slots),
                    },
                );
                1
            }
            (false, true) => 0,
        };
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
        tails.mask = tails
            .lens
            .iter()
            .filter(|(l, _)| *l <= 64)
            .fold(0, |m, (l, _)| m | 1 << (l - 1));
        tails.long = tails.lens.iter().any(|(l, _)| *l > 64);
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
                            let mut wide = KeyTable::new();
                            let mut kids = 0;
                            for (h, k, n) in v.drain(..) {
                                kids |= n.full;
                                wide.insert(h, (k, n));
                            }
                            self.children = Children::Wide(wide);
                            self.kids = kids;
                        }
                    }
                }
            }
            Children::Wide(wide) => {
                let same = |(t, _): &Child<V>| t.as_ref() == level;
                if let Some((_, child)) = wide.find_mut(h, same) {
                    if Node::edit(child, rest, false, hash, f) {
                        wide.remove(h, same);
                        if wide.len() <= SMALL_BACK {
                            // Back to a vector: `depths` recomputes `kids`.
                            let wide = std::mem::replace(wide, KeyTable::new());
                            self.children = Children::Small(
                                wide.into_entries().map(|(h, (t, n))| (h, t, n)).collect(),
                            );
                        }
                    } else {
                        self.kids |= child.full;
                    }
                } else {
                    let mut child = Arc::new(Node::empty());
                    if !Node::edit(&mut child, rest, false, hash, f) {
                        self.kids |= child.full;
                        wide.insert(h, (Arc::from(level), child));
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

/// One level of the topic being matched: its text, key and byte offset.
#[derive(Clone, Copy)]
pub(super) struct TopicLevel<'t> {
    pub(super) word: &'t [u8],
    pub(super) hash: u64,
    pub(super) start: usize,
}

/// A stack of walk states with a fallible push: an inline array on the fast
/// path (never allocates, may be full), a heap vector on the rare slow path.
pub(super) trait Stack<T: Copy>: Default {
    /// Adds an item; false when the stack is full.
    fn push_item(&mut self, item: T) -> bool;
    fn items(&self) -> &[T];
    /// Drops the first `n` items, moving the rest to the front.
    fn drop_front(&mut self, n: usize);
}

/// The inline capacity of the `#` state set and of the level array; the
/// literal state buffer holds two levels' worth ([`STATES`]).
pub(super) const INLINE: usize = 32;
/// The inline capacity of the literal state buffer: the current level's
/// states (compacted to at most [`INLINE`]) plus the next level's.
pub(super) const STATES: usize = 2 * INLINE;

impl<T: Copy, const N: usize> Stack<T> for arrayvec::ArrayVec<T, N> {
    #[inline(always)]
    fn push_item(&mut self, item: T) -> bool {
        self.try_push(item).is_ok()
    }
    #[inline(always)]
    fn items(&self) -> &[T] {
        self
    }
    #[inline]
    fn drop_front(&mut self, n: usize) {
        self.drain(..n);
    }
}

impl<T: Copy> Stack<T> for Vec<T> {
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
    fn drop_front(&mut self, n: usize) {
        self.drain(..n);
    }
}

/// A state set outgrew its inline capacity; rerun on heap stacks.
pub(super) struct Overflow;

/// The walk's state sets (see the module docs).
struct States<'a, V, S, A, W> {
    /// Literal states: the current level's are `lit[lo..]` before the level
    /// is consumed; the next level's are appended behind them.
    lit: S,
    /// Every live `#` state with the level it was first entered at (for
    /// deduplication and the end of the topic).
    active: A,
    /// The live `#` states that have literal or `*` edges, the only ones a
    /// level can lead anywhere from (most `#` states have none).
    walkers: W,
    _nodes: std::marker::PhantomData<&'a Node<V>>,
}

/// Matches the topic `text`, whose levels are `levels`, against the trie
/// below `root`, calling `emit` once for every slot list whose pattern
/// matches. Nothing is emitted unless the walk completes: on `Err(Overflow)`
/// the caller reruns it with heap stacks.
#[inline]
pub(super) fn walk<'a, V, S, A, W>(
    root: &'a Node<V>,
    text: &str,
    levels: &[TopicLevel<'_>],
    emit: &mut impl FnMut(&'a [Slot<V>]),
) -> Result<(), Overflow>
where
    V: Clone,
    S: Stack<&'a Node<V>>,
    A: Stack<(&'a Node<V>, usize)>,
    W: Stack<&'a Node<V>>,
{
    let mut st = States {
        lit: S::default(),
        active: A::default(),
        walkers: W::default(),
        _nodes: std::marker::PhantomData,
    };
    push(&mut st.lit, root)?;
    if root.hash.is_some() {
        st.enter_hashes(root, 0)?;
    }
    let mut lo = 0;
    let n = levels.len();
    for (i, level) in levels.iter().enumerate() {
        let (word, h, left) = (level.word, level.hash, depth_bit(n - i - 1));
        let mut hi = st.lit.items().len();
        if hi > INLINE {
            // Keep room for a next level of `INLINE` states: the current
            // level's states (at most `INLINE` on the fast path) move to the
            // front.
            st.lit.drop_front(lo);
            hi -= lo;
            lo = 0;
        }
        // `#` states entered while consuming this level are live from the
        // next level on, so only the ones live before it consume it.
        let live = st.walkers.items().len();
        for k in lo..hi {
            let node = st.lit.items()[k];
            st.transitions(node, word, h, i + 1, left)?;
        }
        for k in 0..live {
            let node = st.walkers.items()[k];
            st.transitions(node, word, h, i + 1, left)?;
        }
        lo = hi;
        if st.lit.items().len() == hi && st.active.items().is_empty() {
            return Ok(());
        }
    }
    for &node in &st.lit.items()[lo..] {
        emit(&node.values);
    }
    for &(node, entered) in st.active.items() {
        emit(&node.values);
        if let Some(tails) = &node.tails {
            match_tails(tails, entered, text, levels, emit);
        }
    }
    Ok(())
}

impl<'a, V, S, A, W> States<'a, V, S, A, W>
where
    V: Clone,
    S: Stack<&'a Node<V>>,
    A: Stack<(&'a Node<V>, usize)>,
    W: Stack<&'a Node<V>>,
{
    /// Follows `node`'s literal edge for `word` and its `*` edge, entering
    /// the `#` chains below the reached nodes at `depth`. A reached node
    /// joins the next level's states only if it can go further (it has
    /// edges) or this is the topic's last level (its own values may match).
    #[inline(always)]
    fn transitions(
        &mut self,
        node: &'a Node<V>,
        word: &[u8],
        h: u64,
        depth: usize,
        left: u64,
    ) -> Result<(), Overflow> {
        if !node.edges {
            return Ok(());
        }
        if let Some(c) = node.child(word, h) {
            self.reach(c, depth, left)?;
        }
        if let Some(c) = node.star.as_deref() {
            self.reach(c, depth, left)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn reach(&mut self, c: &'a Node<V>, depth: usize, left: u64) -> Result<(), Overflow> {
        if c.lit & left != 0 {
            push(&mut self.lit, c)?;
        }
        if c.hash.is_some() {
            self.enter_hashes(c, depth)?;
        }
        Ok(())
    }

    /// Adds the chain of `#` children below `node` (`x.#`, `x.#.#`, …) as
    /// entered at `depth`, skipping the ones already live (entered earlier,
    /// so their chains too).
    fn enter_hashes(&mut self, node: &'a Node<V>, depth: usize) -> Result<(), Overflow> {
        let mut h = node.hash.as_deref();
        while let Some(x) = h {
            if self.active.items().iter().any(|(a, _)| ptr::eq(*a, x)) {
                return Ok(());
            }
            push(&mut self.active, (x, depth))?;
            if x.edges {
                push(&mut self.walkers, x)?;
            }
            h = x.hash.as_deref();
        }
        Ok(())
    }
}

/// The tail key of `suffix`: its level keys folded from the last one back
/// (as tails are keyed). Tails are short, so this is a mix or two.
#[inline(always)]
fn suffix_key(suffix: &[TopicLevel<'_>]) -> u64 {
    suffix.iter().rev().fold(0, |key, l| mix(key, l.hash))
}

/// Looks up, for each tail length of a `#` node entered at level `entered`,
/// the topic suffix of that length (if it starts at or after `entered`).
#[inline(always)]
fn match_tails<'a, V>(
    tails: &'a Tails<V>,
    entered: usize,
    text: &str,
    levels: &[TopicLevel<'_>],
    emit: &mut impl FnMut(&'a [Slot<V>]),
) {
    // Lengths 1..=room fit after the level the `#` was entered at.
    let room = levels.len().saturating_sub(entered);
    let fits = if room >= 64 { !0 } else { (1u64 << room) - 1 };
    let mut lens = tails.mask & fits;
    while lens != 0 {
        match_tail(
            tails,
            lens.trailing_zeros() as usize + 1,
            text,
            levels,
            emit,
        );
        lens &= lens - 1;
    }
    if tails.long {
        for &(len, _) in &tails.lens {
            if len > 64 && len <= room {
                match_tail(tails, len, text, levels, emit);
            }
        }
    }
}

/// Looks up the topic's last `len` levels among `tails`.
#[inline(always)]
fn match_tail<'a, V>(
    tails: &'a Tails<V>,
    len: usize,
    text: &str,
    levels: &[TopicLevel<'_>],
    emit: &mut impl FnMut(&'a [Slot<V>]),
) {
    let Some(suffix) = levels.get(levels.len() - len..) else {
        return;
    };
    // An exact tail has `len` <= 2 levels, all confirmed by their keys;
    // any other is confirmed by its text (`len` is part of the match,
    // since tails of several lengths share the table).
    let confirm = |t: &Tail<V>| {
        if t.exact {
            usize::from(t.len) == len
                && t.keys[0] == suffix[0].hash
                && (len == 1 || t.keys[1] == suffix[1].hash)
        } else {
            *t.text == text[suffix[0].start..]
        }
    };
    if let Some(tail) = tails.table.find(suffix_key(suffix), confirm) {
        emit(&tail.slots);
    }
}

#[inline(always)]
fn push<T: Copy, S: Stack<T>>(stack: &mut S, item: T) -> Result<(), Overflow> {
    if stack.push_item(item) {
        Ok(())
    } else {
        Err(Overflow)
    }
}

#[cfg(test)]
mod layout {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// What a walk reads at every visit sits in a node's first 64 bytes, and
    /// what a tail lookup reads in a tail set's.
    #[test]
    fn hot_fields_come_first() {
        let all_before = |hot: [usize; 4], cold: usize| hot.iter().all(|&h| h < cold);
        type N = Node<u64>;
        let walk = [
            offset_of!(N, lit),
            offset_of!(N, star),
            offset_of!(N, hash),
            offset_of!(N, edges),
        ];
        assert!(all_before(walk, offset_of!(N, children)));
        // The children need no tag beside the table (the variants share its
        // niche), so a wide node's seed and key slice (all that a lookup
        // that misses reads) are in the first 64 bytes.
        assert_eq!(
            size_of::<Children<u64>>(),
            size_of::<KeyTable<Child<u64>>>()
        );
        assert!(offset_of!(N, children) + 3 * size_of::<u64>() <= 64);
        assert!(offset_of!(Tails<u64>, table) + 3 * size_of::<u64>() <= 64);
        // A tail's text, read only for long levels, comes last.
        type T = Tail<u64>;
        let confirm = [
            offset_of!(T, keys),
            offset_of!(T, slots),
            offset_of!(T, len),
            offset_of!(T, exact),
        ];
        assert!(all_before(confirm, offset_of!(T, text)));
    }
}

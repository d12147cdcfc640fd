//! The exact-pattern map: a persistent hash trie with dense inner nodes,
//! keyed by the 32-bit key a [`Topic`](crate::Topic) carries.
//!
//! Half the topics a bus routes hit an exact pattern, and every match probes
//! this map, so it is built for few *dependent* cache misses: once the map
//! outgrows the caches, a probe costs its chain of loads that each wait for
//! the previous one, not its instruction count.
//!
//! - An inner node is a dense array of 64 children indexed by the next 6 bits
//!   of the key (no bitmap, no popcount): one line per level. A map of 37 K
//!   patterns is two inner levels deep; the root stays in L1 and the second
//!   level (128 KiB) in L2.
//! - A child slot that holds a leaf carries the leaf's one-byte key *tags*
//!   (up to [`LEAF`] of them, compared eight at a time) next to the pointer to
//!   its entries. The probe goes from the parent's line straight to the one
//!   entry whose tag matches, and from there, in parallel, to the text that
//!   confirms it and the value. A separate key line in the leaf, as first
//!   built, cost one more dependent miss per probe and left the match no
//!   faster than the HAMT this replaces (`perf-reports/matcher.md`).
//! - Entries keep only their text and value: the keys needed to split or
//!   merge nodes are recomputed from the text (`key_of`), which keeps an
//!   entry at 32 bytes, half a line.
//!
//! Edits copy the path (`Arc::make_mut`): two or three nodes of 64 children
//! and one leaf of at most [`LEAF`] entries, so an edit is O(depth), never a
//! rebuild. A leaf that outgrows [`LEAF`] splits into an inner node; an inner
//! node whose entries fall to [`LEAF`]` / 2` collapses back into a leaf. Only
//! when all 32 key bits are used up (entries with equal keys) does a leaf grow
//! past [`LEAF`]; its entries beyond the tags are scanned by text.

use std::sync::Arc;

/// Key bits consumed per inner level.
const BITS: u32 = 6;
const FANOUT: usize = 1 << BITS;
const MASK: u32 = (1 << BITS) - 1;
/// Entries a leaf holds tags for (two words of one-byte tags).
pub(super) const LEAF: usize = 16;
/// An inner node holding at most this many entries collapses into a leaf.
const COLLAPSE: usize = LEAF / 2;

/// One slot of an inner node (or the root). A leaf's tags live here, in
/// its parent's line, so a probe goes from that line straight to the entry.
#[derive(Clone)]
enum Child<T> {
    Inner(Arc<Inner<T>>),
    Leaf {
        /// Byte `i` is the [`tag`] of `entries[i]`, for `i < LEAF`.
        tags: [u64; 2],
        /// Empty only in an empty slot (which shares one allocation with the
        /// other empty slots of its node, so an empty map allocates once). A
        /// leaf with more than [`LEAF`] entries exists only below the last
        /// key bit, where all keys are equal.
        entries: Arc<[Entry<T>]>,
    },
}

/// A dense node. Aligned to a cache line so no 32-byte child straddles two
/// (inner nodes are few and rarely allocated: one per split).
#[derive(Clone)]
#[repr(C, align(64))]
struct Inner<T> {
    kids: [Child<T>; FANOUT],
    /// Entries below.
    len: usize,
}

/// One pattern's text and value. (Aligning entries to 32 bytes, so none
/// straddles two lines, made no measurable difference to a match and sent
/// every leaf edit through the allocator's slower aligned path.)
#[derive(Clone)]
struct Entry<T> {
    text: Arc<str>,
    value: T,
}

/// A persistent map from `(key, text)` to `T`; see the module docs.
#[derive(Clone)]
pub(super) struct ExactMap<T> {
    root: Child<T>,
    len: usize,
}

impl<T> Default for ExactMap<T> {
    fn default() -> Self {
        Self {
            root: Child::empty(Arc::from(Vec::new())),
            len: 0,
        }
    }
}

impl<T> Child<T> {
    /// An empty slot.
    fn empty(none: Arc<[Entry<T>]>) -> Self {
        Child::Leaf {
            tags: [0; 2],
            entries: none,
        }
    }
}

/// A key's one-byte tag: its top bits, which the paths of all but the
/// deepest leaves leave unused.
#[inline(always)]
fn tag(key: u32) -> u64 {
    u64::from(key >> 24)
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of every byte of `w` that is zero, and nothing else (exact:
/// no carries between bytes).
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// Looks `text` (key `key`) up among a leaf's `entries` by their `tags`.
#[inline(always)]
fn leaf_find<T>(tags: &[u64; 2], entries: &[Entry<T>], key: u32, text: &str) -> Option<usize> {
    let n = entries.len();
    let probe = tag(key) * ONES;
    for (word, base) in [(tags[0], 0), (tags[1], 8)] {
        // Only bytes of existing entries count.
        let live = match n.saturating_sub(base) {
            0 => return None,
            k if k < 8 => (1u64 << (8 * k)) - 1,
            _ => !0,
        };
        let mut hits = zero_bytes(word ^ probe) & live;
        while hits != 0 {
            let i = base + (hits.trailing_zeros() / 8) as usize;
            if *entries[i].text == *text {
                return Some(i);
            }
            hits &= hits - 1;
        }
    }
    (LEAF..n).find(|&i| *entries[i].text == *text)
}

/// The entry an edit is aimed at, and how to key the entries it moves.
struct Target<'a, K> {
    key: u32,
    text: &'a str,
    key_of: &'a K,
}

impl<K> Clone for Target<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Target<'_, K> {}

impl<T: Clone> Child<T> {
    /// Moves every entry below into `out`.
    fn drain_into(self, out: &mut Vec<Entry<T>>) {
        match self {
            Child::Leaf { entries, .. } => out.extend(entries.iter().cloned()),
            Child::Inner(inner) => {
                for kid in Arc::unwrap_or_clone(inner).kids {
                    kid.drain_into(out);
                }
            }
        }
    }

    /// Builds the subtree holding `entries` (keyed by `key_of`), whose keys
    /// agree on the bits below `shift`.
    fn build(entries: Vec<Entry<T>>, shift: u32, key_of: &impl Fn(&str) -> u32) -> Self {
        if entries.len() <= LEAF || shift >= u32::BITS {
            let mut tags = [0; 2];
            for (i, e) in entries.iter().take(LEAF).enumerate() {
                set_tag(&mut tags, i, tag(key_of(&e.text)));
            }
            Child::Leaf {
                tags,
                entries: entries.into(),
            }
        } else {
            let len = entries.len();
            let mut parts: [Vec<_>; FANOUT] = std::array::from_fn(|_| Vec::new());
            for e in entries {
                parts[((key_of(&e.text) >> shift) & MASK) as usize].push(e);
            }
            let none: Arc<[Entry<T>]> = Arc::from(Vec::new());
            let kids = parts.map(|part| match part.is_empty() {
                true => Child::empty(none.clone()),
                false => Child::build(part, shift + BITS, key_of),
            });
            Child::Inner(Arc::new(Inner { kids, len }))
        }
    }

    /// Applies `f` to the value at `(key, text)` below this child (at
    /// `shift`), inserting, replacing or removing it as `f` returns. Returns
    /// the change in the number of entries.
    fn update<K: Fn(&str) -> u32>(
        &mut self,
        shift: u32,
        at: Target<'_, K>,
        make_text: impl FnOnce() -> Arc<str>,
        f: impl FnOnce(Option<&T>) -> Option<T>,
    ) -> isize {
        let Target { key, text, key_of } = at;
        match self {
            Child::Inner(inner) => {
                let node = Arc::make_mut(inner);
                let kid = &mut node.kids[((key >> shift) & MASK) as usize];
                let delta = kid.update(shift + BITS, at, make_text, f);
                node.len = node.len.saturating_add_signed(delta);
                if delta < 0 && node.len <= COLLAPSE {
                    let mut all = Vec::with_capacity(node.len);
                    self.clone().drain_into(&mut all);
                    *self = Child::build(all, shift, key_of);
                }
                delta
            }
            Child::Leaf { tags, entries } => {
                let found = leaf_find(tags, entries, key, text);
                let new = f(found.map(|i| &entries[i].value));
                let mut all = entries.to_vec();
                // Tags are kept in step here; only a split re-keys entries.
                let delta = match (found, new) {
                    (None, None) => return 0,
                    (Some(i), Some(value)) => {
                        all[i].value = value;
                        0
                    }
                    (Some(i), None) => {
                        all.swap_remove(i);
                        if let Some(moved) = all.get(i).filter(|_| i < LEAF) {
                            let last = all.len();
                            let t = match last < LEAF {
                                true => get_tag(tags, last),
                                false => tag(key_of(&moved.text)),
                            };
                            set_tag(tags, i, t);
                        }
                        -1
                    }
                    (None, Some(value)) => {
                        let entry = Entry {
                            text: make_text(),
                            value,
                        };
                        if all.len() >= LEAF && shift < u32::BITS {
                            all.push(entry);
                            *self = Child::build(all, shift, key_of);
                            return 1;
                        }
                        if all.len() < LEAF {
                            set_tag(tags, all.len(), tag(key));
                        }
                        all.push(entry);
                        1
                    }
                };
                *entries = all.into();
                delta
            }
        }
    }
}

/// The tag in byte `i` of a leaf's tag words.
fn get_tag(tags: &[u64; 2], i: usize) -> u64 {
    (tags[i / 8] >> (8 * (i % 8))) & 0xff
}

/// Sets byte `i` of a leaf's tag words to `t`.
fn set_tag(tags: &mut [u64; 2], i: usize, t: u64) {
    let shift = 8 * (i % 8);
    tags[i / 8] = (tags[i / 8] & !(0xff << shift)) | (t << shift);
}

impl<T: Clone> ExactMap<T> {
    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The value stored for `text`, whose key is `key`.
    #[inline]
    pub(super) fn get(&self, key: u32, text: &str) -> Option<&T> {
        let mut child = &self.root;
        let mut shift = 0;
        loop {
            match child {
                Child::Leaf { tags, entries } => {
                    return leaf_find(tags, entries, key, text).map(|i| &entries[i].value);
                }
                Child::Inner(inner) => {
                    child = &inner.kids[((key >> shift) & MASK) as usize];
                    shift += BITS;
                }
            }
        }
    }

    /// Applies `f` to the value for `text` (key `key`): `f` gets the current
    /// value, if any, and returns the new one, or `None` to remove the entry.
    /// A new entry takes its text from `make_text`; `key_of` gives the key of
    /// any stored text (entries keep only their text), for splitting and
    /// merging nodes. Copies only the path to the entry when it is shared
    /// with a clone. Returns +1 when an entry was added, -1 when one was
    /// removed, 0 otherwise.
    pub(super) fn update(
        &mut self,
        key: u32,
        text: &str,
        make_text: impl FnOnce() -> Arc<str>,
        key_of: &impl Fn(&str) -> u32,
        f: impl FnOnce(Option<&T>) -> Option<T>,
    ) -> isize {
        let at = Target { key, text, key_of };
        let delta = self.root.update(0, at, make_text, f);
        self.len = self.len.saturating_add_signed(delta);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Checks the structure's invariants below `child` at `shift`, whose
    /// keys must agree with `prefix` on the bits below `shift`; returns the
    /// number of entries.
    fn check<T>(child: &Child<T>, shift: u32, prefix: u32, key_of: &impl Fn(&str) -> u32) -> usize {
        let low = |k: u32| {
            if shift >= 32 {
                k
            } else {
                k & ((1 << shift) - 1)
            }
        };
        match child {
            Child::Leaf { tags, entries } => {
                let n = entries.len();
                assert!(
                    n <= LEAF || shift >= 32,
                    "oversized leaf above the last bit"
                );
                for (i, e) in entries.iter().enumerate() {
                    let k = key_of(&e.text);
                    assert_eq!(low(k), prefix, "entry under the wrong path");
                    if i < LEAF {
                        assert_eq!(get_tag(tags, i), tag(k), "stale tag");
                    }
                }
                n
            }
            Child::Inner(inner) => {
                assert!(shift < 32, "inner node past the last key bit");
                let n: usize = (0..FANOUT)
                    .map(|i| {
                        let p = prefix | ((i as u32) << shift);
                        check(&inner.kids[i], shift + BITS, p, key_of)
                    })
                    .sum();
                assert_eq!(inner.len, n, "stale inner count");
                assert!(n > COLLAPSE, "inner node that should have collapsed");
                n
            }
        }
    }

    /// Texts `t0`, `t1`, …; text `ti` has key `keys[i]`.
    fn key_fn(keys: &[u32]) -> impl Fn(&str) -> u32 + '_ {
        |t: &str| keys[t[1..].parse::<usize>().unwrap_or(0)]
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, u16),
        Del(usize),
    }

    const TEXTS: usize = 48;

    /// Keys from a few values (so collisions, equal tags and deep paths are
    /// common) or from anywhere.
    fn keys() -> impl Strategy<Value = Vec<u32>> {
        let key = prop_oneof![
            0u32..4,
            (0u32..64).prop_map(|k| k << 26),
            (0u32..8).prop_map(|k| k * 0x0100_0041),
            any::<u32>()
        ];
        prop::collection::vec(key, TEXTS)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..TEXTS, any::<u16>()).prop_map(|(t, v)| Op::Put(t, v)),
            (0..TEXTS).prop_map(Op::Del),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(keys in keys(), ops in prop::collection::vec(op(), 1..400)) {
            let key_of = key_fn(&keys);
            let mut map: ExactMap<u16> = ExactMap::default();
            let mut model: HashMap<String, u16> = HashMap::new();
            let mut versions = Vec::new();
            for op in &ops {
                versions.push((map.clone(), model.clone()));
                let (t, new) = match *op {
                    Op::Put(t, v) => (t, Some(v)),
                    Op::Del(t) => (t, None),
                };
                let text = format!("t{t}");
                let delta = map.update(keys[t], &text, || Arc::from(text.as_str()), &key_of, |_| new);
                let was = match new {
                    Some(v) => model.insert(text.clone(), v),
                    None => model.remove(&text),
                };
                prop_assert_eq!(delta, isize::from(new.is_some() && was.is_none()) - isize::from(new.is_none() && was.is_some()));
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(check(&map.root, 0, 0, &key_of), model.len());
                for (t, &key) in keys.iter().enumerate() {
                    let text = format!("t{t}");
                    prop_assert_eq!(map.get(key, &text), model.get(&text));
                }
            }
            // Older versions are untouched by later edits.
            for (old, old_model) in &versions {
                prop_assert_eq!(old.len(), old_model.len());
                for (t, v) in old_model {
                    prop_assert_eq!(old.get(key_of(t), t), Some(v));
                }
            }
        }
    }

    #[test]
    fn absent_keys_and_texts_miss() {
        let keys: Vec<u32> = (0..1000u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        let key_of = key_fn(&keys);
        let mut map = ExactMap::default();
        for (i, &key) in keys.iter().enumerate() {
            let text = format!("t{i}");
            map.update(key, &text, || Arc::from(&*text), &key_of, |_| Some(i));
        }
        assert_eq!(check(&map.root, 0, 0, &key_of), 1000);
        assert!(matches!(map.root, Child::Inner(_)));
        assert_eq!(map.get(keys[7], "t7"), Some(&7));
        // Right key, wrong text; right text, wrong key.
        assert_eq!(map.get(keys[7], "t8"), None);
        assert_eq!(map.get(keys[8], "t7"), None);
        for (i, &key) in keys.iter().enumerate() {
            let text = format!("t{i}");
            map.update(key, &text, || Arc::from(&*text), &key_of, |_| None);
        }
        assert!(
            map.len() == 0
                && matches!(&map.root, Child::Leaf { entries, .. } if entries.is_empty())
        );
    }

    #[test]
    fn equal_keys_overflow_a_leaf_below_the_last_bit() {
        let keys = vec![42; 3 * LEAF];
        let key_of = key_fn(&keys);
        let mut map = ExactMap::default();
        for i in 0..3 * LEAF {
            let text = format!("t{i}");
            map.update(42, &text, || Arc::from(&*text), &key_of, |_| Some(i));
        }
        assert_eq!(check(&map.root, 0, 0, &key_of), 3 * LEAF);
        for i in 0..3 * LEAF {
            assert_eq!(map.get(42, &format!("t{i}")), Some(&i));
        }
        assert_eq!(map.get(42, "other"), None);
        assert_eq!(map.get(43, "t0"), None);
    }

    #[test]
    fn a_child_fits_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Child<Arc<[u8]>>>(), 32);
        assert_eq!(std::mem::size_of::<Entry<Arc<[u8]>>>(), 32);
    }
}

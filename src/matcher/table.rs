//! A small open-addressing table keyed by `u64` level keys or seeded hashes.
//!
//! The trie's wide child sets and `#` tail sets are looked up several times
//! per match and edited rarely (a persistent edit copies the whole table
//! anyway), so this table is built for the lookup: one seeded multiply for the
//! home slot, then a linear scan of `(key, value)` slots stored inline, which
//! stops at the first empty slot. The table is at most half full, so a lookup
//! touches one or two cache lines and a miss ends within a few slots.
//!
//! Several entries may share a key (two long levels whose hashes collide);
//! [`KeyTable::find`] takes a predicate that confirms an entry, and keeps
//! scanning past entries it rejects. Removal shifts later entries of the run
//! back (no tombstones), so lookups never slow down with churn.

/// An open-addressing table of `(u64, T)` entries; see the module docs.
///
/// The fields a lookup reads come first (`repr(C)`), so in a trie node they
/// sit within the node's first 64 bytes, beside the walk's other fields.
#[derive(Clone)]
#[repr(C)]
pub(super) struct KeyTable<T> {
    seed: u64,
    /// Slot keys, [`EMPTY`] where the slot is free: a power of two in
    /// length (at least 2), at most half full. Kept apart from the values so
    /// a probe scans 8 keys per cache line and reads one value.
    keys: Box<[u64]>,
    vals: Box<[Option<T>]>,
    len: usize,
}

/// The key of a free slot. A real key 0 is stored (and looked up) as 1;
/// the entries' own check ([`KeyTable::find`]'s `confirm`) tells them apart.
const EMPTY: u64 = 0;

#[inline(always)]
fn stored(key: u64) -> u64 {
    key.max(1)
}

impl<T> KeyTable<T> {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self::with_slots(2)
    }

    fn with_slots(n: usize) -> Self {
        Self {
            keys: vec![EMPTY; n].into_boxed_slice(),
            vals: (0..n).map(|_| None).collect(),
            len: 0,
            seed: crate::sync::table_seed(),
        }
    }

    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The home slot of a stored key.
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (super::scatter(key, self.seed) as usize) & (self.keys.len() - 1)
    }

    /// The slot of the first entry with `key` that `confirm` accepts.
    #[inline(always)]
    fn position(&self, key: u64, mut confirm: impl FnMut(&T) -> bool) -> Option<usize> {
        let key = stored(key);
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            let k = *self.keys.get(i)?;
            if k == key {
                if let Some(v) = self.vals.get(i)?.as_ref() {
                    if confirm(v) {
                        return Some(i);
                    }
                }
            } else if k == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// The first entry with `key` that `confirm` accepts.
    #[inline(always)]
    pub(super) fn find(&self, key: u64, confirm: impl FnMut(&T) -> bool) -> Option<&T> {
        let i = self.position(key, confirm)?;
        self.vals.get(i)?.as_ref()
    }

    /// Like [`find`](Self::find), for editing the entry.
    pub(super) fn find_mut(&mut self, key: u64, confirm: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let i = self.position(key, confirm)?;
        self.vals.get_mut(i)?.as_mut()
    }

    /// Adds an entry (the caller has checked that no entry it would confirm
    /// for this key exists).
    pub(super) fn insert(&mut self, key: u64, value: T) {
        if (self.len() + 1) * 2 > self.keys.len() {
            let mut bigger = Self::with_slots(self.keys.len() * 2);
            bigger.seed = self.seed;
            let old = std::mem::replace(self, Self::with_slots(0));
            for (k, v) in old.into_entries() {
                bigger.place(k, v);
            }
            *self = bigger;
        }
        self.place(stored(key), value);
    }

    fn place(&mut self, key: u64, value: T) {
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        while self.keys[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.vals[i] = Some(value);
        self.len += 1;
    }

    /// Removes and returns the first entry with `key` that `confirm`
    /// accepts, shifting the rest of its run back so no lookup is cut short.
    pub(super) fn remove(&mut self, key: u64, confirm: impl FnMut(&T) -> bool) -> Option<T> {
        let mask = self.keys.len() - 1;
        let mut hole = self.position(key, confirm)?;
        let value = self.vals[hole].take()?;
        self.keys[hole] = EMPTY;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.keys[j];
            if k == EMPTY {
                break;
            }
            // An entry may move back into the hole only if its home slot is
            // not inside (hole, j]: moving it must not put it before its home.
            let home = self.home(k);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.keys[hole] = k;
                self.keys[j] = EMPTY;
                self.vals[hole] = self.vals[j].take();
                hole = j;
            }
        }
        Some(value)
    }

    /// Every entry, by value, with its stored key (a key 0 reads as 1; keys
    /// are only ever used to look entries up again, where the two are one).
    pub(super) fn into_entries(self) -> impl Iterator<Item = (u64, T)> {
        self.keys
            .into_vec()
            .into_iter()
            .zip(self.vals.into_vec())
            .filter_map(|(k, v)| Some((k, v?)))
    }

    /// Every entry, in slot order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.keys
            .iter()
            .zip(self.vals.iter())
            .filter_map(|(k, v)| Some((*k, v.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyTable;
    use proptest::prelude::*;

    /// Key 0 is stored as 1: both are found, told apart by their entries.
    #[test]
    fn key_zero_shares_a_slot_key_with_one() {
        let mut table = KeyTable::new();
        table.insert(0, "zero");
        table.insert(1, "one");
        assert_eq!(table.find(0, |v| *v == "zero"), Some(&"zero"));
        assert_eq!(table.find(1, |v| *v == "one"), Some(&"one"));
        assert_eq!(table.remove(0, |v| *v == "zero"), Some("zero"));
        assert_eq!(table.find(0, |v| *v == "zero"), None);
        assert_eq!(table.find(1, |v| *v == "one"), Some(&"one"));
        assert_eq!(table.len(), 1);
    }

    proptest! {
        /// Against a vector of entries: every insert/remove sequence, with
        /// keys from a tiny range so runs, wrap-around and shared keys are
        /// common, leaves the same entries findable.
        #[test]
        fn matches_a_vector(ops in proptest::collection::vec((any::<bool>(), 1u64..7, 0u8..4), 0..200)) {
            let mut table = KeyTable::new();
            let mut model: Vec<(u64, u8)> = Vec::new();
            for (add, key, tag) in ops {
                let present = model.contains(&(key, tag));
                if add && !present {
                    table.insert(key, tag);
                    model.push((key, tag));
                } else if !add {
                    let got = table.remove(key, |t| *t == tag);
                    prop_assert_eq!(got.is_some(), present);
                    model.retain(|e| *e != (key, tag));
                }
                prop_assert_eq!(table.len(), model.len());
                for key in 1..7 {
                    for tag in 0..4 {
                        let found = table.find(key, |t| *t == tag).is_some();
                        prop_assert_eq!(found, model.contains(&(key, tag)));
                    }
                }
            }
            let mut all: Vec<_> = table.iter().map(|(k, t)| (k, *t)).collect();
            all.sort_unstable();
            model.sort_unstable();
            prop_assert_eq!(all, model);
        }
    }
}

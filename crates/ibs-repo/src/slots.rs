//! A table that numbers distinct values (pack ids, data key ids) in the order they are first seen,
//! so the per-chunk maps of [`crate::index::Index`] and [`crate::dedup::DedupSet`] hold a 32-bit
//! slot instead of the value. Slots are dense (`0..len`) and never reused or renumbered.

use std::collections::HashMap;
use std::hash::Hash;

/// Distinct values and their slots (see the module docs).
#[derive(Debug, Clone)]
pub struct Slots<T> {
    values: Vec<T>,
    slot: HashMap<T, u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            values: Vec::new(),
            slot: HashMap::new(),
        }
    }
}

impl<T: Copy + Eq + Hash> Slots<T> {
    /// The slot of `v`, numbering it first if it is new; `true` when it was new.
    pub fn intern(&mut self, v: T) -> (u32, bool) {
        if let Some(&s) = self.slot.get(&v) {
            return (s, false);
        }
        let s = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.values.push(v);
        self.slot.insert(v, s);
        (s, true)
    }

    /// The slot of `v`, if it has one.
    pub fn slot_of(&self, v: &T) -> Option<u32> {
        self.slot.get(v).copied()
    }

    /// The value in `slot`. Panics on a slot this table did not hand out.
    pub fn get(&self, slot: u32) -> T {
        self.values[slot as usize]
    }

    /// Every value, in slot order.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Heap bytes held (vector plus hash table, counting a control byte per bucket).
    pub fn heap_bytes(&self) -> usize {
        let v = std::mem::size_of::<T>();
        self.values.capacity() * v + self.slot.capacity() * (v + 4 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dense_stable_and_first_seen() {
        let mut s = Slots::default();
        assert_eq!(s.intern('b'), (0, true));
        assert_eq!(s.intern('a'), (1, true));
        assert_eq!(s.intern('b'), (0, false));
        assert_eq!(
            (s.get(1), s.slot_of(&'a'), s.slot_of(&'z')),
            ('a', Some(1), None)
        );
        assert_eq!(s.values(), &['b', 'a']);
        assert_eq!(s.len(), 2);
    }
}

//! [`MemoryState`]: keyed state in a `BTreeMap`, with the semantics a task sees of
//! [`KeyedState`](super::KeyedState) — values per (key, sub-key), sub-keys scanned in byte order,
//! keys longer than [`MAX_KEY_LEN`] refused — but no RocksDB, directory, cache or checkpoint.
//! For unit tests of tasks: `TaskContext::in_memory` drives a custom task record by record.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::key::MAX_KEY_LEN;
use super::timer::{DueTimer, TimeDomain, Timer, TimerQueue};
use super::{StateError, SubEntry};

/// Keyed state held in memory (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    entries: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    timers: TimerQueue,
}

impl MemoryState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` (sub-key empty, as `TaskContext::get` reads it), for assertions.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.get_sub(key, b"")
    }

    /// The value of (`key`, `sub`), for assertions.
    pub fn get_sub(&self, key: &[u8], sub: &[u8]) -> Option<&[u8]> {
        self.entries
            .get(&(key.to_vec(), sub.to_vec()))
            .map(Vec::as_slice)
    }

    /// Every (key, sub-key, value), in key then sub-key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
        self.entries
            .iter()
            .map(|((k, s), v)| (k.as_slice(), s.as_slice(), v.as_slice()))
    }

    /// How many (key, sub-key) pairs have a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn check(key: &[u8]) -> Result<(), StateError> {
        if key.len() > MAX_KEY_LEN {
            return Err(StateError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(())
    }

    /// The registered timers, for assertions.
    pub fn timer_queue(&self) -> &TimerQueue {
        &self.timers
    }

    /// Registers `timer` for `key` (again: no change).
    pub fn register_timer(&mut self, key: &[u8], timer: Timer) -> Result<(), StateError> {
        Self::check(key)?;
        self.timers.insert(key, timer);
        Ok(())
    }

    /// Deletes `timer` of `key`; false if it was not registered.
    pub fn delete_timer(&mut self, key: &[u8], timer: Timer) -> Result<bool, StateError> {
        Self::check(key)?;
        Ok(self.timers.remove(key, timer))
    }

    /// Takes the earliest timer of `domain` due at `now`, with its key.
    pub fn pop_due_timer(
        &mut self,
        domain: TimeDomain,
        now: u64,
    ) -> Result<Option<DueTimer>, StateError> {
        Ok(self.timers.pop_due(domain, now))
    }

    /// Calls `f` with the current value of (`key`, `sub`).
    pub fn read<R>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StateError> {
        Self::check(key)?;
        Ok(f(self.get_sub(key, sub)))
    }

    /// Replaces the value of (`key`, `sub`) with `f(old)`; `None` deletes it.
    pub fn update<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<V>,
    ) -> Result<(), StateError> {
        Self::check(key)?;
        let slot = (key.to_vec(), sub.to_vec());
        match f(self.entries.get(&slot).map(Vec::as_slice)) {
            Some(value) => self.entries.insert(slot, value.as_ref().to_vec()),
            None => self.entries.remove(&slot),
        };
        Ok(())
    }

    /// All (sub-key, value) pairs of `key` with `from <= sub < to` (`to = None`: no upper
    /// bound), in sub-key order.
    pub fn scan(
        &mut self,
        key: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<Vec<SubEntry>, StateError> {
        Self::check(key)?;
        let start = Bound::Included((key.to_vec(), from.to_vec()));
        Ok(self
            .entries
            .range((start, Bound::Unbounded))
            .take_while(|((k, sub), _)| k == key && to.is_none_or(|to| sub.as_slice() < to))
            .map(|((_, sub), v)| (sub.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_scan_in_byte_order_within_their_key_only() {
        let mut s = MemoryState::new();
        for (key, sub) in [(b"a", b"2"), (b"a", b"1"), (b"b", b"0"), (b"a", b"3")] {
            s.update(key, sub, |_| Some(*sub)).unwrap();
        }
        let subs = |scan: Vec<SubEntry>| scan.into_iter().map(|(sub, _)| sub).collect::<Vec<_>>();
        assert_eq!(
            subs(s.scan(b"a", b"", None).unwrap()),
            [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
        );
        assert_eq!(
            subs(s.scan(b"a", b"2", Some(b"3")).unwrap()),
            [b"2".to_vec()]
        );
        s.update::<&[u8]>(b"a", b"2", |_| None).unwrap();
        assert_eq!(s.len(), 3);
        let long = vec![0u8; MAX_KEY_LEN + 1];
        assert!(matches!(
            s.update(&long, b"", |_| Some(b"x")),
            Err(StateError::KeyTooLong { .. })
        ));
    }
}

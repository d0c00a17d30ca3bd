//! Per-key timers: what a task registers to be called back for a key at a time, kept in the
//! keyed state so that every checkpoint and savepoint carries them.
//!
//! A timer is stored in the task database's `timers` column family under the same layout as
//! state ([`super::key`]: the key's partitioning hash first), with a 9-byte sub-key, the
//! domain and the time. Hash first means a re-split from N to N' partitions moves every timer
//! with its key by the same sorted scan that moves the state. What is due next is answered
//! from memory by a [`TimerQueue`], rebuilt from the column family when a task opens.

use std::collections::{BTreeMap, BTreeSet};

/// The clock a timer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Wall-clock time of the worker (milliseconds since the Unix epoch).
    Processing,
    /// Event time: the timer fires when the task's watermark reaches it.
    Event,
}

impl TimeDomain {
    const fn tag(self) -> u8 {
        match self {
            TimeDomain::Processing => b'p',
            TimeDomain::Event => b'e',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'p' => Some(TimeDomain::Processing),
            b'e' => Some(TimeDomain::Event),
            _ => None,
        }
    }

    const fn index(self) -> usize {
        match self {
            TimeDomain::Processing => 0,
            TimeDomain::Event => 1,
        }
    }
}

/// One timer of a key: fires once its domain's clock reaches `at` (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// The clock.
    pub domain: TimeDomain,
    /// When, in milliseconds (since the Unix epoch for processing time; in the records'
    /// timestamps for event time).
    pub at: u64,
}

/// A timer taken from the queue because it is due, with its key.
pub type DueTimer = (Box<[u8]>, Timer);

/// Every stored timer of a task with its key, in key order.
pub type StoredTimers = Vec<(Vec<u8>, Timer)>;

/// Length of a timer's sub-key: the domain's tag and the time, big-endian (so a key's timers
/// are stored in time order).
pub const SUB_LEN: usize = 9;

impl Timer {
    /// A processing-time timer at `at` ms since the Unix epoch.
    pub const fn processing(at: u64) -> Self {
        Timer {
            domain: TimeDomain::Processing,
            at,
        }
    }

    /// An event-time timer at `at`.
    pub const fn event(at: u64) -> Self {
        Timer {
            domain: TimeDomain::Event,
            at,
        }
    }

    /// The sub-key the timer is stored under.
    pub fn sub(&self) -> [u8; SUB_LEN] {
        let mut out = [0u8; SUB_LEN];
        out[0] = self.domain.tag();
        out[1..].copy_from_slice(&self.at.to_be_bytes());
        out
    }

    /// Reads a stored sub-key; `None` for one this version did not write.
    pub fn from_sub(sub: &[u8]) -> Option<Self> {
        let (&tag, at) = sub.split_first()?;
        Some(Timer {
            domain: TimeDomain::from_tag(tag)?,
            at: u64::from_be_bytes(at.try_into().ok()?),
        })
    }
}

/// Every timer of a task, ordered by time per domain, then by key: the next one due is the
/// first, and timers due at the same time fire in key order, whatever order they were
/// registered in (so a restored task fires them as a task that never failed would).
///
/// Grouped by time because keys share times: a tumbling window registers the same end for
/// every key. A lookup is one search among the distinct times and one among that time's keys,
/// by borrowed key (no allocation per lookup).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimerQueue {
    by_time: [BTreeMap<u64, BTreeSet<Box<[u8]>>>; 2],
    len: usize,
}

impl TimerQueue {
    /// No timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `timer` for `key`; false if it was already registered.
    pub fn insert(&mut self, key: &[u8], timer: Timer) -> bool {
        let keys = self.by_time[timer.domain.index()]
            .entry(timer.at)
            .or_default();
        if keys.contains(key) {
            return false;
        }
        keys.insert(key.into());
        self.len += 1;
        true
    }

    /// Removes `timer` of `key`; false if it was not registered.
    pub fn remove(&mut self, key: &[u8], timer: Timer) -> bool {
        let times = &mut self.by_time[timer.domain.index()];
        let Some(keys) = times.get_mut(&timer.at) else {
            return false;
        };
        if !keys.remove(key) {
            return false;
        }
        if keys.is_empty() {
            times.remove(&timer.at);
        }
        self.len -= 1;
        true
    }

    /// True if `key` has `timer`.
    pub fn contains(&self, key: &[u8], timer: Timer) -> bool {
        self.by_time[timer.domain.index()]
            .get(&timer.at)
            .is_some_and(|keys| keys.contains(key))
    }

    /// When the next timer of `domain` is due.
    pub fn next(&self, domain: TimeDomain) -> Option<u64> {
        self.by_time[domain.index()].keys().next().copied()
    }

    /// Takes the earliest timer of `domain` due at `now` (`at <= now`), with its key.
    pub fn pop_due(&mut self, domain: TimeDomain, now: u64) -> Option<(Box<[u8]>, Timer)> {
        let mut first = self.by_time[domain.index()].first_entry()?;
        let at = *first.key();
        if at > now {
            return None;
        }
        let key = first.get_mut().pop_first()?;
        if first.get().is_empty() {
            first.remove();
        }
        self.len -= 1;
        Some((key, Timer { domain, at }))
    }

    /// How many timers are registered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_reads_back_from_its_sub_key_and_sorts_by_time() {
        for timer in [
            Timer::processing(0),
            Timer::event(u64::MAX),
            Timer::event(1_700_000_000_123),
        ] {
            assert_eq!(Timer::from_sub(&timer.sub()), Some(timer));
        }
        assert!(Timer::event(255).sub() < Timer::event(256).sub());
        assert_eq!(Timer::from_sub(b"x12345678"), None);
        assert_eq!(Timer::from_sub(b"e1234"), None);
        assert_eq!(Timer::from_sub(b""), None);
    }

    #[test]
    fn the_queue_hands_out_due_timers_in_time_order_per_domain() {
        let mut q = TimerQueue::new();
        assert!(q.insert(b"b", Timer::event(20)));
        assert!(q.insert(b"a", Timer::event(20)));
        assert!(q.insert(b"a", Timer::event(10)));
        assert!(!q.insert(b"a", Timer::event(10)));
        assert!(q.insert(b"a", Timer::processing(5)));
        assert_eq!(q.len(), 4);
        assert_eq!(q.next(TimeDomain::Event), Some(10));
        assert_eq!(q.pop_due(TimeDomain::Event, 9), None);
        let due: Vec<_> = std::iter::from_fn(|| q.pop_due(TimeDomain::Event, 20)).collect();
        assert_eq!(
            due,
            [
                (b"a"[..].into(), Timer::event(10)),
                (b"a"[..].into(), Timer::event(20)),
                (b"b"[..].into(), Timer::event(20)),
            ]
        );
        assert!(q.contains(b"a", Timer::processing(5)));
        assert!(q.remove(b"a", Timer::processing(5)));
        assert!(!q.remove(b"a", Timer::processing(5)));
        assert!(q.is_empty());
    }
}

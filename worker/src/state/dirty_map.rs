//! [`DirtyMap`]: the write-back cache's map from encoded state key to pending value.
//!
//! Built for what the cache does and nothing else: entries are inserted and overwritten but
//! never removed one by one (a delete is a `None` value; the whole map is taken at a
//! checkpoint or a spill), and at millions of keys every probe misses the CPU caches. So:
//! - the entries live in one dense vector, in insertion order; a separate open-addressing
//!   index (8 bytes a slot: the hash's upper 32 bits and the entry's position, linear probing,
//!   at most half full) finds them. Iterating (a checkpoint writes every entry) reads memory in
//!   order, and growing copies only the vector and rebuilds the small index;
//! - a key's home slot is the *top* bits of its hash, so the index is ordered by hash and
//!   doubling it is one sequential pass over the old index (slot i's keys go to about 2i),
//!   without reading an entry or writing at random;
//! - the runtime can [`DirtyMap::prefetch`] the keys of the records it is about to process,
//!   so the two cache misses of a probe (index slot, entry) overlap with other records' work
//!   instead of stalling one after the other. With hashbrown the table's layout is private and
//!   a probe cannot be started early.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::FxBuildHasher;

use super::small_bytes::SmallBytes;

/// An encoded state key in the cache: inline up to 30 bytes (a user key of up to 24).
pub type CachedKey = SmallBytes<30>;

/// Most entries one map holds: positions are stored in 32 bits, and the index (twice as many
/// slots) must stay within the 2^32 homes the stored hash bits can name. The cache's byte
/// budget spills long before (64 bytes of overhead counted per entry), but the map checks.
pub const MAX_ENTRIES: usize = (1 << 31) - 1;

/// Smallest index, in slots.
const MIN_SLOTS: usize = 16;

/// Bytes every large allocation of the map reserves at least. glibc raises its mmap threshold
/// (to up to 32 MiB) when a mapped block below that size is freed, after which RocksDB's
/// allocations in the same process came from the heap and its loop ran 6x slower
/// (docs/benchmarks.md). A map that doubles frees such blocks all the time; reserving more
/// than 32 MiB of address space for each (untouched beyond what is used) keeps them out of
/// that range.
const LARGE_RESERVE: usize = 33 << 20;

/// Allocations below this many bytes stay small (glibc's initial mmap threshold).
const SMALL_BYTES: usize = 128 << 10;

/// A vector with room for `n` elements: exactly `n` when small, else at least
/// [`LARGE_RESERVE`] bytes of address space.
fn reserve<T>(n: usize) -> Vec<T> {
    let size = std::mem::size_of::<T>().max(1);
    if n.saturating_mul(size) < SMALL_BYTES {
        Vec::with_capacity(n)
    } else {
        Vec::with_capacity(n.max(LARGE_RESERVE / size))
    }
}

/// An index of `slots` empty slots (see [`reserve`]).
fn empty_index(slots: usize) -> Vec<u64> {
    let mut index = reserve(slots);
    index.resize(slots, 0);
    index
}

/// Where a probe for a key ended.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// The key is in the map, at this entry.
    Found(usize),
    /// The key is not in the map; inserting it takes this index slot (valid until the map
    /// changes).
    Vacant { slot: usize, hash: u64 },
}

/// See the module documentation.
pub struct DirtyMap<V> {
    /// 0: empty; otherwise `hash >> 32 << 32 | (position + 1)`.
    index: Vec<u64>,
    /// `64 - log2(index.len())`: a hash's home slot is `hash >> shift`.
    shift: u32,
    entries: Vec<(CachedKey, V)>,
}

impl<V> Default for DirtyMap<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V> DirtyMap<V> {
    /// An empty map that holds `n` entries without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self::sized(n, n)
    }

    /// An empty map with room for `entries` entries, indexed for `indexed` of them.
    ///
    /// Reserving entries costs address space only: their memory is touched in order as they
    /// come, so a generous reservation spares the copies of growing without holding memory.
    /// The index is written (zeros) up to its size, and keys land on it at random, so all of it
    /// is resident: it is sized for what is expected and doubles past that (one streaming pass).
    pub fn sized(entries: usize, indexed: usize) -> Self {
        let slots = slots_for(indexed);
        DirtyMap {
            index: empty_index(slots),
            shift: shift_for(slots),
            entries: reserve(entries.min(MAX_ENTRIES)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when one more entry would not fit (the caller spills first).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_ENTRIES
    }

    /// The hash every method derives from a key: Fx (fast on short keys), then a finaliser
    /// (splitmix64's) that spreads every input bit into the top bits the index uses.
    pub fn hash_of(key: &[u8]) -> u64 {
        let mut h = FxBuildHasher.build_hasher();
        h.write(key);
        let mut x = h.finish();
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Looks `key` up.
    pub fn probe(&self, key: &[u8]) -> Probe {
        self.probe_hashed(key, Self::hash_of(key))
    }

    /// [`Self::probe`] with the key's [`Self::hash_of`] already computed.
    pub fn probe_hashed(&self, key: &[u8], hash: u64) -> Probe {
        let mask = self.index.len() - 1;
        let tag = hash >> 32;
        let mut slot = self.home(hash);
        loop {
            let s = self.index[slot];
            if s == 0 {
                return Probe::Vacant { slot, hash };
            }
            if s >> 32 == tag {
                let at = (s as u32 - 1) as usize;
                if *self.entries[at].0 == *key {
                    return Probe::Found(at);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        match self.probe(key) {
            Probe::Found(at) => Some(&self.entries[at].1),
            Probe::Vacant { .. } => None,
        }
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        matches!(self.probe(key), Probe::Found(_))
    }

    /// The value of an entry a probe found.
    pub fn value_mut(&mut self, at: usize) -> &mut V {
        &mut self.entries[at].1
    }

    /// Inserts `key`, which the probe `vacant` found missing; the map must not have changed
    /// since. Returns the entry's position.
    pub fn insert_vacant(&mut self, vacant: Probe, key: &[u8], value: V) -> usize {
        let (slot, hash) = match vacant {
            Probe::Vacant { slot, hash } if self.index.get(slot) == Some(&0) => (slot, hash),
            // A stale or wrong probe must not corrupt the index: look again.
            _ => match self.probe(key) {
                Probe::Found(at) => {
                    self.entries[at].1 = value;
                    return at;
                }
                Probe::Vacant { slot, hash } => (slot, hash),
            },
        };
        assert!(!self.is_full(), "DirtyMap over {MAX_ENTRIES} entries");
        let at = self.entries.len();
        self.entries.push((key.into(), value));
        self.index[slot] = hash >> 32 << 32 | (at as u64 + 1);
        if (at + 1) * 2 > self.index.len() {
            self.grow_index();
        }
        at
    }

    /// Sets `key` to `value`, inserting it if missing.
    pub fn insert(&mut self, key: &[u8], value: V) {
        match self.probe(key) {
            Probe::Found(at) => self.entries[at].1 = value,
            vacant => {
                self.insert_vacant(vacant, key, value);
            }
        }
    }

    /// Every entry, in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&CachedKey, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Starts loading the index slot of `key`'s hash into the CPU cache.
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch(&self.index[self.home(hash)]);
    }

    /// Starts loading the entry `hash` most likely names (the first slot with its tag), if any.
    /// Best after [`Self::prefetch_slot`] of the same hash had time to land.
    pub fn prefetch_entry(&self, hash: u64) {
        let mask = self.index.len() - 1;
        let tag = hash >> 32;
        let mut slot = self.home(hash);
        // A few slots at most: the index is at most half full.
        for _ in 0..4 {
            let s = self.index[slot];
            if s == 0 {
                return;
            }
            if s >> 32 == tag {
                if let Some(entry) = self.entries.get((s as u32 - 1) as usize) {
                    prefetch(entry);
                }
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Doubles the index. The old one is read in order and, homes being the hash's top bits,
    /// written almost in order: a streaming pass, not a cache miss per entry. (Linear probing
    /// finds a key from any insertion order, so the few slots that wrapped around the old
    /// index's end may come first.)
    fn grow_index(&mut self) {
        let slots = self.index.len() * 2;
        let shift = shift_for(slots);
        let mask = slots - 1;
        let mut index = empty_index(slots);
        for &s in self.index.iter().filter(|&&s| s != 0) {
            // `shift >= 32` (MAX_ENTRIES), so the stored upper half names the home.
            let mut slot = (s >> shift) as usize;
            while index[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            index[slot] = s;
        }
        self.index = index;
        self.shift = shift;
    }
}

/// `DirtyMap::shift` of an index of `slots` slots (a power of two).
fn shift_for(slots: usize) -> u32 {
    64 - slots.trailing_zeros()
}

/// Index slots for `n` entries: a power of two, at least twice `n`, so probes stay short.
fn slots_for(n: usize) -> usize {
    n.min(MAX_ENTRIES)
        .saturating_mul(2)
        .max(MIN_SLOTS)
        .next_power_of_two()
}

/// A hint to the CPU to load the cache line of `value`; no effect on what the program computes.
#[inline]
#[allow(unsafe_code)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory; the pointer comes from a
    // reference, so it is valid anyway. SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::mix64;
    use std::collections::HashMap;

    #[test]
    fn behaves_as_a_hash_map_through_growth_and_overwrites() {
        let mut map = DirtyMap::<u64>::default();
        let mut model = HashMap::new();
        let mut order = Vec::new();
        for i in 0..200_000u64 {
            // Repeats keys (overwrites) and mixes short and heap-sized keys.
            let id = mix64(i) % 50_000;
            let key = if id.is_multiple_of(7) {
                format!("long-key-{id}-{}", "x".repeat(40))
            } else {
                format!("k{id}")
            };
            if !model.contains_key(&key) {
                order.push(key.clone());
            }
            model.insert(key.clone(), i);
            if i.is_multiple_of(3) {
                map.insert(key.as_bytes(), i);
            } else {
                let probe = map.probe(key.as_bytes());
                match probe {
                    Probe::Found(at) => *map.value_mut(at) = i,
                    vacant => {
                        map.insert_vacant(vacant, key.as_bytes(), i);
                    }
                }
            }
        }
        assert_eq!(map.len(), model.len());
        for (k, v) in &model {
            assert_eq!(map.get(k.as_bytes()), Some(v), "{k}");
        }
        assert_eq!(map.get(b"absent"), None);
        assert!(!map.contains_key(b"k50000"));
        // Insertion order, each key once.
        let keys: Vec<String> = map
            .iter()
            .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
            .collect();
        assert_eq!(keys, order);
    }

    #[test]
    fn a_stale_vacant_probe_is_probed_again() {
        let mut map = DirtyMap::<u32>::with_capacity(4);
        let stale = map.probe(b"a");
        map.insert(b"b", 1);
        map.insert(b"a", 2);
        // `stale` may name the slot `a` or `b` took since: inserting through it must not
        // corrupt the index or duplicate the key.
        map.insert_vacant(stale, b"a", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(b"a"), Some(&3));
        assert_eq!(map.get(b"b"), Some(&1));
    }

    #[test]
    fn colliding_tags_and_slots_are_told_apart_by_the_key() {
        // A tiny index and many keys: long probe runs with shared slots.
        let mut map = DirtyMap::<usize>::with_capacity(0);
        for i in 0..1000usize {
            map.insert(format!("{i}").as_bytes(), i);
            map.prefetch_slot(DirtyMap::<usize>::hash_of(b"0"));
            map.prefetch_entry(DirtyMap::<usize>::hash_of(format!("{i}").as_bytes()));
        }
        for i in 0..1000usize {
            assert_eq!(map.get(format!("{i}").as_bytes()), Some(&i));
        }
    }

    #[test]
    fn a_sized_map_does_not_grow_its_index() {
        let mut map = DirtyMap::<()>::with_capacity(1000);
        let slots = map.index.len();
        for i in 0..1000 {
            map.insert(format!("{i}").as_bytes(), ());
        }
        assert_eq!(map.index.len(), slots);
        assert!(slots >= 2000);
    }
}

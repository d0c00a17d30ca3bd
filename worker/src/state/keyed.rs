//! [`KeyedState`]: a task's keyed state, RocksDB behind a write-back cache.
//!
//! Between checkpoints every update lands in the `dirty` map, so a hot key costs one hash-map
//! update per record instead of a RocksDB write. At a checkpoint's synchronous phase the dirty
//! map is *frozen* (moved out in O(1)) and processing resumes at once; the asynchronous phase
//! writes the frozen map to RocksDB, flushes and hard-links the files ([`Snapshot::take`]).
//! Until that snapshot exists the task reads `dirty -> frozen -> RocksDB` and never writes to
//! RocksDB itself, so the snapshot holds exactly the state at the record boundary.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{checkpoint::Checkpoint, DBPinnableSlice, Direction, IteratorMode, WriteBatch, DB};
use rustc_hash::FxBuildHasher;

use super::db::{no_wal, StateError, TIMERS_CF};
use super::dirty_map::{CachedKey, DirtyMap, Probe};
use super::ingest;
use super::key::{self, MAX_KEY_LEN};
use super::small_bytes::SmallBytes;
use super::timer::{DueTimer, StoredTimers, TimeDomain, Timer, TimerQueue};

/// A value in the cache: inline up to 38 bytes (a counter, a window list of one window).
type CachedValue = SmallBytes<38>;

/// Dirty entries: encoded key -> new value, `None` for a delete. A map of its own
/// ([`DirtyMap`]): one probe for a read-modify-write, dense entries, and prefetching.
type Writes = DirtyMap<Option<CachedValue>>;

/// A timer's change since the last snapshot or spill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerWrite {
    /// Registered. `fresh` when neither RocksDB nor a frozen snapshot can hold it, so that
    /// deleting it again before the next snapshot needs no write at all: a window's timer is
    /// usually registered and fired within one checkpoint interval, and without this the map
    /// would grow by a tombstone per window per key.
    Put {
        fresh: bool,
    },
    Delete,
}

/// Dirty timers: encoded timer key -> its change.
type TimerWrites = hashbrown::HashMap<CachedKey, TimerWrite, FxBuildHasher>;

/// A (sub-key, value) pair returned by a scan.
pub type SubEntry = (Vec<u8>, Vec<u8>);

/// Rough per-entry overhead of the hash map, counted against the cache budget.
const ENTRY_OVERHEAD: usize = 64;

/// What a typical small entry counts against the budget (a short key and a counter): the
/// cache map reserves room for as many entries as the budget holds.
const TYPICAL_ENTRY: usize = ENTRY_OVERHEAD + 24;

/// The most entries a cache map reserves up front, whatever the budget: beyond it the map
/// grows as it fills (a reservation is address space, and a huge budget must not ask for more
/// than a small node can map).
const RESERVE_MAX_ENTRIES: usize = 1 << 24;

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// A plain key's two hashes: the cache's ([`KeyedState::prefetch_slot`]) and the
/// partitioning hash its encoding starts with.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainKeyHash {
    /// The write-back cache's hash of the encoded key.
    pub cache: u64,
    /// `partition::key_hash` of the key.
    pub partitioning: u32,
}

/// The writes of one checkpoint, handed from the task to the asynchronous phase.
struct Frozen {
    writes: Writes,
    /// Timers registered and deleted, for the timers column family.
    timers: TimerWrites,
    state: AtomicU8,
}

/// A task's keyed state store.
pub struct KeyedState {
    db: Arc<DB>,
    dirty: Writes,
    /// Timer writes since the last snapshot. Blind writes: nothing reads timers back while the
    /// task runs (`timers` knows them all), so no read path consults this map.
    dirty_timers: TimerWrites,
    /// Every timer of the task by time, loaded by [`Self::load_timers`].
    timers: TimerQueue,
    dirty_bytes: usize,
    cache_limit: usize,
    frozen: Option<Arc<Frozen>>,
    key_buf: Vec<u8>,
    /// The cache hash of `key_buf` when it holds the plain key (sub-key empty) of the record
    /// the task is processing, as [`Self::expect_plain_key`] set it; `None` after any other
    /// encoding. Spares the common access (a task's state for its record's key) hashing the
    /// key twice more.
    key_buf_hash: Option<u64>,
    /// RocksDB holds no state yet (a fresh task, before its first spill or snapshot), so a
    /// key missing from the cache is missing, without a lookup.
    db_empty: bool,
}

/// One checkpoint's view of the state, taken at a record boundary; consumed off the task thread.
pub struct Snapshot {
    db: Arc<DB>,
    frozen: Arc<Frozen>,
    /// The previous checkpoint's frozen map, handed over so that freeing it (a large map) happens
    /// off the task thread, outside the synchronous pause.
    _previous: Option<Arc<Frozen>>,
}

impl KeyedState {
    /// Wraps an open database; `cache_limit` bounds the bytes held in the write-back cache.
    pub fn new(db: Arc<DB>, cache_limit: u64) -> Self {
        let db_empty = db.iterator(IteratorMode::Start).next().is_none();
        KeyedState {
            db_empty,
            db,
            dirty: Writes::sized(reserved_entries(cache_limit as usize), 0),
            dirty_timers: TimerWrites::default(),
            timers: TimerQueue::new(),
            dirty_bytes: 0,
            cache_limit: cache_limit as usize,
            frozen: None,
            key_buf: Vec::with_capacity(64),
            key_buf_hash: None,
        }
    }

    /// The underlying database (for inspection and snapshots).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    fn encode(&mut self, key: &[u8], sub: &[u8]) -> Result<(), StateError> {
        if key.len() > MAX_KEY_LEN {
            return Err(StateError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        key::encode_into(&mut self.key_buf, key, sub);
        self.key_buf_hash = None;
        Ok(())
    }

    /// Encodes (`key`, `sub`) into `key_buf` and returns its cache hash. When `key_buf` already
    /// holds this plain key ([`Self::expect_plain_key`]), nothing is computed again.
    fn encode_hashed(&mut self, key: &[u8], sub: &[u8]) -> Result<u64, StateError> {
        if let Some(hash) = self.key_buf_hash {
            // `key_buf` is the header and a plain key: equal to `key` only if it is `key`'s.
            if sub.is_empty() && self.key_buf.get(key::HEADER_LEN..) == Some(key) {
                return Ok(hash);
            }
        }
        self.encode(key, sub)?;
        Ok(Writes::hash_of(&self.key_buf))
    }

    /// Calls `f` with the current value of (`key`, `sub`), without copying it.
    pub fn read<R>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StateError> {
        self.encode(key, sub)?;
        if let Some(v) = self.dirty.get(&self.key_buf[..]) {
            return Ok(f(v.as_deref()));
        }
        if let Some(frozen) = &self.frozen {
            if let Some(v) = frozen.writes.get(&self.key_buf[..]) {
                return Ok(f(v.as_deref()));
            }
        }
        Ok(f(self.stored()?.as_deref()))
    }

    /// What RocksDB holds for the encoded key in `key_buf`. While it holds no state the answer
    /// is known: a fresh task's first interval meets every key for the first time, and a
    /// RocksDB lookup (memtable, then each level's filter) is most of the cost of such a miss.
    fn stored(&self) -> Result<Option<DBPinnableSlice<'_>>, StateError> {
        stored(&self.db, self.db_empty, &self.key_buf)
    }

    /// The cache's hash of `key`'s plain value (sub-key empty), for the prefetches below;
    /// `None` for a key too long to have state.
    pub fn plain_key_hash(&mut self, key: &[u8]) -> Option<PlainKeyHash> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let partitioning = crate::partition::key_hash(key);
        key::encode_hashed_into(&mut self.key_buf, partitioning, key, b"");
        let cache = Writes::hash_of(&self.key_buf);
        // `key_buf` now holds this plain key: an access to it needs no hashing either.
        self.key_buf_hash = Some(cache);
        Some(PlainKeyHash {
            cache,
            partitioning,
        })
    }

    /// Says that the next accesses are likely to the plain value of `key`, whose hashes
    /// [`Self::plain_key_hash`] computed: encodes it without hashing it again, so that an
    /// access to it finds it ready ([`Self::encode_hashed`]).
    pub fn expect_plain_key(&mut self, key: &[u8], hashes: PlainKeyHash) {
        if key.len() <= MAX_KEY_LEN {
            key::encode_hashed_into(&mut self.key_buf, hashes.partitioning, key, b"");
            self.key_buf_hash = Some(hashes.cache);
        }
    }

    /// First of two hints that the value hashed `hash` (see [`Self::plain_key_hash`]) is about
    /// to be used: starts loading the cache's index slot for it.
    pub fn prefetch_slot(&self, hash: u64) {
        self.dirty.prefetch_slot(hash);
    }

    /// Second hint, a few records after the first: starts loading the cache entry the
    /// (by now loaded) index slot points to. Neither hint changes any result.
    pub fn prefetch_entry(&self, hash: u64) {
        self.dirty.prefetch_entry(hash);
    }

    /// Replaces the value of (`key`, `sub`) with `f(old)`; `None` deletes it.
    pub fn update<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<V>,
    ) -> Result<(), StateError> {
        let hash = self.encode_hashed(key, sub)?;
        if self.dirty.is_full() {
            self.spill()?;
        }
        // One probe for both outcomes: a miss inserts into the slot its lookup found. On a
        // cache larger than the CPU's caches each probe is a cache miss (unless prefetched).
        let added = match self.dirty.probe_hashed(&self.key_buf, hash) {
            Probe::Found(at) => {
                let slot = self.dirty.value_mut(at);
                let new = f(slot.as_deref());
                match (slot.as_mut(), new) {
                    // Same length: overwrite in place, no allocation (the common counter case).
                    (Some(old), Some(new)) if old.len() == new.as_ref().len() => {
                        old.copy_from_slice(new.as_ref())
                    }
                    (_, new) => {
                        let old_len = slot.as_ref().map_or(0, |v| v.len());
                        let new_len = new.as_ref().map_or(0, |v| v.as_ref().len());
                        self.dirty_bytes = (self.dirty_bytes + new_len).saturating_sub(old_len);
                        *slot = new.map(|v| v.as_ref().into());
                    }
                }
                return Ok(());
            }
            vacant => {
                let frozen_hit = self
                    .frozen
                    .as_ref()
                    .and_then(|fz| fz.writes.get(&self.key_buf[..]).map(|v| v.as_deref()));
                let new = match frozen_hit {
                    Some(old) => f(old),
                    None => f(stored(&self.db, self.db_empty, &self.key_buf)?.as_deref()),
                };
                let value: Option<CachedValue> = new.map(|v| v.as_ref().into());
                let bytes = self.key_buf.len() + value.as_ref().map_or(0, |v| v.len());
                self.dirty.insert_vacant(vacant, &self.key_buf, value);
                bytes + ENTRY_OVERHEAD
            }
        };
        self.dirty_bytes += added;
        if self.dirty_bytes > self.cache_limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Sets (`key`, `sub`) to `value`.
    pub fn put(&mut self, key: &[u8], sub: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.update(key, sub, |_| Some(value))
    }

    /// Deletes (`key`, `sub`).
    pub fn delete(&mut self, key: &[u8], sub: &[u8]) -> Result<(), StateError> {
        self.update::<&[u8]>(key, sub, |_| None)
    }

    /// All (sub-key, value) pairs of `key` with `from <= sub < to` (`to = None`: no upper bound),
    /// in sub-key order. Scans are rare (windows, timers), so they write the cache to RocksDB
    /// first and read RocksDB alone rather than merging three sources.
    pub fn scan(
        &mut self,
        key: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<Vec<SubEntry>, StateError> {
        self.spill()?;
        self.encode(key, from)?;
        let prefix_len = key::HEADER_LEN + key.len();
        let start = self.key_buf.clone();
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|source| StateError::Db { op: "scan", source })?;
            if k.len() < prefix_len || k[..prefix_len] != start[..prefix_len] {
                break;
            }
            let sub = &k[prefix_len..];
            if to.is_some_and(|to| sub >= to) {
                break;
            }
            out.push((sub.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Reads every stored timer into the queue the task's timers are served from; called once,
    /// when the task opens on restored state. Returns how many stored timers this version
    /// could not read (skipped).
    pub fn load_timers(&mut self) -> Result<u64, StateError> {
        let (stored, unreadable) = self.stored_timers()?;
        self.timers = TimerQueue::new();
        for (key, timer) in stored {
            self.timers.insert(&key, timer);
        }
        Ok(unreadable)
    }

    /// Registers `timer` for `key` (again: no change).
    pub fn register_timer(&mut self, key: &[u8], timer: Timer) -> Result<(), StateError> {
        if !self.timers.insert(key, timer) {
            return Ok(());
        }
        if let Err(e) = self.write_timer(key, timer, true) {
            self.timers.remove(key, timer);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes `timer` of `key`; false if it was not registered.
    pub fn delete_timer(&mut self, key: &[u8], timer: Timer) -> Result<bool, StateError> {
        if !self.timers.remove(key, timer) {
            return Ok(false);
        }
        if let Err(e) = self.write_timer(key, timer, false) {
            self.timers.insert(key, timer);
            return Err(e);
        }
        Ok(true)
    }

    /// Takes (and deletes) the earliest timer of `domain` due at `now`, with its key.
    pub fn pop_due_timer(
        &mut self,
        domain: TimeDomain,
        now: u64,
    ) -> Result<Option<DueTimer>, StateError> {
        let Some((key, timer)) = self.timers.pop_due(domain, now) else {
            return Ok(None);
        };
        if let Err(e) = self.write_timer(&key, timer, false) {
            self.timers.insert(&key, timer);
            return Err(e);
        }
        Ok(Some((key, timer)))
    }

    /// The task's timers.
    pub fn timer_queue(&self) -> &TimerQueue {
        &self.timers
    }

    /// Stores `timer` of `key` (registered), or removes it (`registered` false). Keys longer
    /// than a state key may be are refused, as for state. The caller keeps the queue: a timer
    /// is written only when it enters or leaves it, so a registration with no entry in the
    /// dirty map is one that RocksDB and the frozen snapshot do not hold (`fresh`).
    pub(crate) fn write_timer(
        &mut self,
        key: &[u8],
        timer: Timer,
        registered: bool,
    ) -> Result<(), StateError> {
        self.encode(key, &timer.sub())?;
        let entry_bytes = self.key_buf.len() + ENTRY_OVERHEAD;
        match (self.dirty_timers.get_mut(&self.key_buf[..]), registered) {
            // Registered and deleted again since the last snapshot: nothing to write.
            (Some(TimerWrite::Put { fresh: true }), false) => {
                self.dirty_timers.remove(&self.key_buf[..]);
                self.dirty_bytes = self.dirty_bytes.saturating_sub(entry_bytes);
                return Ok(());
            }
            (Some(write), false) => *write = TimerWrite::Delete,
            // Deleted and registered again: an older copy may be stored, so not fresh.
            (Some(write), true) => *write = TimerWrite::Put { fresh: false },
            (None, registered) => {
                let write = match registered {
                    true => TimerWrite::Put { fresh: true },
                    false => TimerWrite::Delete,
                };
                self.dirty_timers
                    .insert(self.key_buf.as_slice().into(), write);
                self.dirty_bytes += entry_bytes;
            }
        }
        if self.dirty_bytes > self.cache_limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Every stored timer with its key, in key order. An entry this version cannot read is
    /// skipped and counted in the second value.
    pub fn stored_timers(&mut self) -> Result<(StoredTimers, u64), StateError> {
        self.spill()?;
        let Some(cf) = self.db.cf_handle(TIMERS_CF) else {
            return Ok((Vec::new(), 0));
        };
        let (mut out, mut unreadable) = (Vec::new(), 0);
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item.map_err(|source| StateError::Db {
                op: "scan timers",
                source,
            })?;
            match key::decode(&k).and_then(|d| Some((d.key.to_vec(), Timer::from_sub(d.sub)?))) {
                Some(timer) => out.push(timer),
                None => unreadable += 1,
            }
        }
        Ok((out, unreadable))
    }

    /// Synchronous phase of a checkpoint: freezes the cache and returns the snapshot to take
    /// off the task thread. Waits first if the previous snapshot is still being taken (one
    /// checkpoint in flight per task).
    pub fn begin_snapshot(&mut self) -> Result<Snapshot, StateError> {
        let previous = self.settle_frozen()?;
        let writes = self.take_dirty();
        let timers = std::mem::take(&mut self.dirty_timers);
        self.dirty_bytes = 0;
        // Until the snapshot is written its entries are read from the frozen map; after, from
        // RocksDB.
        self.db_empty &= writes.is_empty();
        let frozen = Arc::new(Frozen {
            writes,
            timers,
            state: AtomicU8::new(PENDING),
        });
        self.frozen = Some(frozen.clone());
        Ok(Snapshot {
            db: self.db.clone(),
            frozen,
            _previous: previous,
        })
    }

    /// Takes the dirty map, leaving an empty one with room for what the budget holds and
    /// indexed for as many entries as this one had: the next interval usually changes about as
    /// many keys, and growing from empty copies the entries and re-indexes them at each
    /// doubling (a sixth of the time of the 10M-key count). See [`DirtyMap::sized`] for what
    /// each costs in memory.
    fn take_dirty(&mut self) -> Writes {
        let entries = reserved_entries(self.cache_limit).max(self.dirty.len());
        let sized = Writes::sized(entries, self.dirty.len());
        std::mem::replace(&mut self.dirty, sized)
    }

    /// Writes the cache to RocksDB (when it is over budget, or before a scan).
    fn spill(&mut self) -> Result<(), StateError> {
        drop(self.settle_frozen()?);
        if self.dirty.is_empty() && self.dirty_timers.is_empty() {
            return Ok(());
        }
        let writes = self.take_dirty();
        let timers = std::mem::take(&mut self.dirty_timers);
        self.dirty_bytes = 0;
        self.db_empty &= writes.is_empty();
        write_out(&self.db, &writes, &timers).map(drop)
    }

    /// Waits for an in-flight snapshot to reach RocksDB, then stops reading the frozen map,
    /// returning it for the caller to drop where that is cheap. If the snapshot failed, its
    /// writes go back into the cache so nothing is lost.
    fn settle_frozen(&mut self) -> Result<Option<Arc<Frozen>>, StateError> {
        let Some(frozen) = self.frozen.take() else {
            return Ok(None);
        };
        loop {
            match frozen.state.load(Ordering::Acquire) {
                DONE => return Ok(Some(frozen)),
                FAILED => {
                    for (k, v) in frozen.writes.iter() {
                        if !self.dirty.contains_key(k) {
                            self.dirty_bytes +=
                                k.len() + v.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD;
                            self.dirty.insert(k, v.clone());
                        }
                    }
                    for (k, write) in frozen.timers.iter() {
                        if !self.dirty_timers.contains_key(k) {
                            self.dirty_bytes += k.len() + ENTRY_OVERHEAD;
                            // The failed batch may have reached RocksDB in part: a timer
                            // it registered is no longer known to be absent there.
                            let write = match write {
                                TimerWrite::Put { .. } => TimerWrite::Put { fresh: false },
                                TimerWrite::Delete => TimerWrite::Delete,
                            };
                            self.dirty_timers.insert(k.clone(), write);
                        }
                    }
                    return Ok(None);
                }
                _ => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Number of entries in the write-back cache (for metrics).
    pub fn cached_entries(&self) -> usize {
        self.dirty.len()
    }
}

/// Entries a cache map of a `cache_limit`-byte budget reserves room for.
fn reserved_entries(cache_limit: usize) -> usize {
    (cache_limit / TYPICAL_ENTRY).min(RESERVE_MAX_ENTRIES)
}

/// See [`KeyedState::stored`] (a function of the fields it needs, so that it can be called
/// while the cache map is borrowed).
fn stored<'a>(
    db: &'a DB,
    db_empty: bool,
    key: &[u8],
) -> Result<Option<DBPinnableSlice<'a>>, StateError> {
    if db_empty {
        return Ok(None);
    }
    db.get_pinned(key)
        .map_err(|source| StateError::Db { op: "get", source })
}

/// How [`write_out`] wrote the default column family's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Batch,
    Ingested,
}

/// Writes cache entries to RocksDB: each column family with many entries as an ingested SST
/// file ([`ingest`]), the rest through one `WriteBatch`.
fn write_out(db: &DB, writes: &Writes, timers: &TimerWrites) -> Result<Written, StateError> {
    let timers_cf = match timers.is_empty() {
        true => None,
        false => Some(db.cf_handle(TIMERS_CF).ok_or(StateError::NoTimersFamily)?),
    };
    let mut batch = WriteBatch::default();
    let written = if writes.len() >= ingest::INGEST_MIN_ENTRIES {
        let entries = writes.iter().map(|(k, v)| (&k[..], v.as_deref()));
        ingest::ingest_sorted(db, None, "state", entries)?;
        Written::Ingested
    } else {
        for (k, v) in writes.iter() {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        Written::Batch
    };
    if let Some(cf) = timers_cf {
        let stored = |write: &TimerWrite| match write {
            TimerWrite::Put { .. } => Some(&[][..]),
            TimerWrite::Delete => None,
        };
        if timers.len() >= ingest::INGEST_MIN_ENTRIES {
            let entries = timers.iter().map(|(k, w)| (&k[..], stored(w)));
            ingest::ingest_sorted(db, Some(cf), TIMERS_CF, entries)?;
        } else {
            for (k, write) in timers {
                match stored(write) {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
            }
        }
    }
    if !batch.is_empty() {
        db.write_opt(batch, &no_wal())
            .map_err(|source| StateError::Db {
                op: "write",
                source,
            })?;
    }
    Ok(written)
}

impl Snapshot {
    /// Asynchronous part of the snapshot: writes the frozen cache, flushes the memtable and
    /// hard-links the database files into `dir` (which must not exist). Blocking.
    pub fn take(&self, dir: &Path) -> Result<(), StateError> {
        let result = (|| {
            write_out(&self.db, &self.frozen.writes, &self.frozen.timers)?;
            let flushed = match self.db.cf_handle(TIMERS_CF) {
                Some(timers) => self.db.flush().and_then(|()| self.db.flush_cf(timers)),
                None => self.db.flush(),
            };
            flushed.map_err(|source| StateError::Db {
                op: "flush",
                source,
            })?;
            let cp = Checkpoint::new(&self.db).map_err(|source| StateError::Db {
                op: "checkpoint",
                source,
            })?;
            cp.create_checkpoint(dir).map_err(|source| StateError::Db {
                op: "checkpoint",
                source,
            })
        })();
        let state = if result.is_ok() { DONE } else { FAILED };
        self.frozen.state.store(state, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::db::open_task_db;
    use rocksdb::Cache;
    use std::collections::BTreeMap;

    fn store(dir: &Path, limit: u64) -> KeyedState {
        let cache = Cache::new_lru_cache(8 << 20);
        KeyedState::new(open_task_db(&dir.join("db"), &cache).unwrap(), limit)
    }

    fn get_u64(s: &mut KeyedState, key: &[u8]) -> Option<u64> {
        s.read(key, b"", |v| {
            v.map(|v| u64::from_le_bytes(v.try_into().unwrap()))
        })
        .unwrap()
    }

    fn incr(s: &mut KeyedState, key: &[u8]) {
        s.update(key, b"", |old| {
            let n = old.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
            Some((n + 1).to_le_bytes())
        })
        .unwrap();
    }

    /// The record's key announced by the runtime is used only for that key's plain value:
    /// other keys, sub-keys and accesses after another encoding compute their own.
    #[test]
    fn an_expected_key_serves_only_its_own_plain_value() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 64 << 20);
        let a = s.plain_key_hash(b"a").unwrap();
        s.expect_plain_key(b"a", a);
        incr(&mut s, b"a");
        s.expect_plain_key(b"a", a);
        incr(&mut s, b"b");
        s.expect_plain_key(b"a", a);
        s.update(b"a", b"sub", |_| Some(*b"x")).unwrap();
        incr(&mut s, b"a");
        // A key that ends like the expected one is another key.
        s.expect_plain_key(b"a", a);
        incr(&mut s, b"ba");
        assert_eq!(get_u64(&mut s, b"a"), Some(2));
        assert_eq!(get_u64(&mut s, b"b"), Some(1));
        assert_eq!(get_u64(&mut s, b"ba"), Some(1));
        assert_eq!(
            s.read(b"a", b"sub", |v| v.map(<[u8]>::to_vec)).unwrap(),
            Some(b"x".to_vec())
        );
        // And what the cache holds is what a plain encoding finds.
        assert_eq!(s.cached_entries(), 4);
    }

    #[test]
    fn snapshot_holds_exactly_the_state_at_the_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 64 << 20);
        for _ in 0..3 {
            incr(&mut s, b"a");
        }
        incr(&mut s, b"b");
        let snap = s.begin_snapshot().unwrap();
        // Processing continues before the snapshot is taken; reads see frozen values.
        incr(&mut s, b"a");
        incr(&mut s, b"c");
        assert_eq!(get_u64(&mut s, b"b"), Some(1));
        snap.take(&tmp.path().join("cp")).unwrap();
        assert_eq!(get_u64(&mut s, b"a"), Some(4));

        let cache = Cache::new_lru_cache(1 << 20);
        let cp = open_task_db(&tmp.path().join("cp"), &cache).unwrap();
        let mut restored = KeyedState::new(cp, 1 << 20);
        assert_eq!(get_u64(&mut restored, b"a"), Some(3));
        assert_eq!(get_u64(&mut restored, b"b"), Some(1));
        assert_eq!(get_u64(&mut restored, b"c"), None);
    }

    #[test]
    fn spill_over_budget_keeps_every_value_and_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 10_000); // tiny: forces many spills
        for i in 0..5_000u32 {
            incr(&mut s, format!("k{}", i % 700).as_bytes());
        }
        s.delete(b"k3", b"").unwrap();
        assert!(s.cached_entries() < 700);
        for i in 0..700u32 {
            let expected = if i == 3 {
                None
            } else {
                Some(if i < 5000 % 700 { 8 } else { 7 })
            };
            assert_eq!(
                get_u64(&mut s, format!("k{i}").as_bytes()),
                expected,
                "k{i}"
            );
        }
    }

    #[test]
    fn scan_returns_sub_keys_in_order_within_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 64 << 20);
        for sub in [3u8, 1, 2, 9] {
            s.put(b"user", &[sub], &[sub * 10]).unwrap();
        }
        s.put(b"user2", &[1], b"x").unwrap();
        let all = s.scan(b"user", &[], None).unwrap();
        assert_eq!(
            all,
            vec![
                (vec![1], vec![10]),
                (vec![2], vec![20]),
                (vec![3], vec![30]),
                (vec![9], vec![90])
            ]
        );
        let bounded = s.scan(b"user", &[2], Some(&[9])).unwrap();
        assert_eq!(bounded, vec![(vec![2], vec![20]), (vec![3], vec![30])]);
    }

    #[test]
    fn a_failed_snapshot_returns_its_writes_to_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 64 << 20);
        incr(&mut s, b"a");
        let snap = s.begin_snapshot().unwrap();
        std::fs::create_dir(tmp.path().join("exists")).unwrap();
        // The target directory exists: RocksDB refuses, the snapshot fails.
        assert!(snap.take(&tmp.path().join("exists")).is_err());
        incr(&mut s, b"a");
        let _next = s.begin_snapshot().unwrap();
        assert_eq!(get_u64(&mut s, b"a"), Some(2));
    }

    /// The timers a snapshot holds are exactly those registered and not deleted or fired
    /// before it; a restored database gives them back, also after a snapshot that failed.
    #[test]
    fn a_snapshot_holds_exactly_the_live_timers() {
        let tmp = tempfile::tempdir().unwrap();
        // A tiny cache budget: timer writes spill to RocksDB before the snapshot, too.
        let mut s = store(tmp.path(), 256);
        let mut expected = TimerQueue::new();
        for i in 0..200u64 {
            let key = format!("k{}", i % 17);
            let timer = if i % 2 == 0 {
                Timer::processing(i)
            } else {
                Timer::event(i)
            };
            s.register_timer(key.as_bytes(), timer).unwrap();
            s.register_timer(key.as_bytes(), timer).unwrap(); // again: no change
            expected.insert(key.as_bytes(), timer);
        }
        for i in (0..200u64).step_by(3) {
            let key = format!("k{}", i % 17);
            let timer = if i % 2 == 0 {
                Timer::processing(i)
            } else {
                Timer::event(i)
            };
            assert!(s.delete_timer(key.as_bytes(), timer).unwrap());
            assert!(!s.delete_timer(key.as_bytes(), timer).unwrap());
            expected.remove(key.as_bytes(), timer);
        }
        while let Some((key, timer)) = s.pop_due_timer(TimeDomain::Processing, 50).unwrap() {
            assert!(expected.remove(&key, timer), "{timer:?}");
        }
        assert_eq!(s.timer_queue(), &expected);

        // A snapshot that fails keeps its timer writes for the next one.
        let failed = s.begin_snapshot().unwrap();
        std::fs::create_dir(tmp.path().join("exists")).unwrap();
        assert!(failed.take(&tmp.path().join("exists")).is_err());
        s.register_timer(b"late", Timer::event(7)).unwrap();
        expected.insert(b"late", Timer::event(7));
        s.begin_snapshot()
            .unwrap()
            .take(&tmp.path().join("cp"))
            .unwrap();

        let cache = Cache::new_lru_cache(8 << 20);
        let mut restored = KeyedState::new(
            open_task_db(&tmp.path().join("cp"), &cache).unwrap(),
            1 << 20,
        );
        assert_eq!(restored.load_timers().unwrap(), 0);
        assert_eq!(restored.timer_queue(), &expected);
        // Timers are not state: the state column family has none of them.
        assert_eq!(restored.db().iterator(IteratorMode::Start).count(), 0);
    }

    /// A timer registered and deleted within one interval writes nothing; one that an earlier
    /// snapshot (or a failed one, whose batch reached RocksDB) stored is deleted for real, also
    /// when it was deleted and registered again in between.
    #[test]
    fn a_timer_deleted_again_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 64 << 20);
        let open = |dir: &str| {
            let cache = Cache::new_lru_cache(8 << 20);
            let mut restored = KeyedState::new(
                open_task_db(&tmp.path().join(dir), &cache).unwrap(),
                1 << 20,
            );
            restored.load_timers().unwrap();
            restored.timer_queue().clone()
        };
        let (a, b, c) = (Timer::event(1), Timer::event(2), Timer::event(3));
        s.register_timer(b"a", a).unwrap();
        s.begin_snapshot()
            .unwrap()
            .take(&tmp.path().join("cp1"))
            .unwrap();

        s.register_timer(b"b", b).unwrap();
        assert!(s.delete_timer(b"b", b).unwrap());
        assert!(s.dirty_timers.is_empty(), "b never reaches RocksDB");
        assert!(s.delete_timer(b"a", a).unwrap());
        s.register_timer(b"a", a).unwrap();
        assert!(s.delete_timer(b"a", a).unwrap());
        // The snapshot fails after its batch reached RocksDB: c is stored there.
        s.register_timer(b"c", c).unwrap();
        let failed = s.begin_snapshot().unwrap();
        std::fs::create_dir(tmp.path().join("exists")).unwrap();
        assert!(failed.take(&tmp.path().join("exists")).is_err());
        assert!(s.delete_timer(b"c", c).unwrap());
        s.begin_snapshot()
            .unwrap()
            .take(&tmp.path().join("cp2"))
            .unwrap();

        let mut only_a = TimerQueue::new();
        only_a.insert(b"a", a);
        assert_eq!(open("cp1"), only_a);
        assert_eq!(open("cp2"), TimerQueue::new());
    }

    /// A checkpoint with more entries than a batch should carry goes to RocksDB as ingested SST
    /// files (state and timers); what it holds is exactly the state at its boundary, whether
    /// the files land on an empty database or over earlier ingested files, and also under a
    /// later small batch, with updates, deletes and deleted timers.
    #[test]
    fn large_checkpoints_are_ingested_and_read_back_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 1 << 30);
        let big = ingest::INGEST_MIN_ENTRIES as u64 + 10_000;
        let key = |i: u64| format!("key-{i}").into_bytes();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut timers = TimerQueue::new();
        let checkpoint = |s: &mut KeyedState, n: usize| {
            let dir = tmp.path().join(format!("cp{n}"));
            s.begin_snapshot().unwrap().take(&dir).unwrap();
            dir
        };
        let check = |dir: &Path, model: &BTreeMap<u64, u64>, timers: &TimerQueue| {
            let cache = Cache::new_lru_cache(8 << 20);
            let mut restored = KeyedState::new(open_task_db(dir, &cache).unwrap(), 1 << 20);
            for i in 0..big + 5_000 {
                let expected = model.get(&i).copied();
                assert_eq!(
                    get_u64(&mut restored, &key(i)),
                    expected,
                    "key {i} in {dir:?}"
                );
            }
            let stored = restored.db().iterator(IteratorMode::Start).count();
            assert_eq!(stored, model.len(), "no other entries in {dir:?}");
            restored.load_timers().unwrap();
            assert_eq!(restored.timer_queue(), timers, "timers in {dir:?}");
            let names = std::fs::read_dir(dir).unwrap();
            let names: Vec<_> = names.map(|e| e.unwrap().file_name()).collect();
            assert!(!names
                .iter()
                .any(|n| n.to_string_lossy().starts_with("cairn-ingest")));
        };

        // 1: an empty database; state and timers both over the threshold.
        for i in 0..big {
            s.put(&key(i), b"", &i.to_le_bytes()).unwrap();
            model.insert(i, i);
            s.register_timer(&key(i), Timer::event(i)).unwrap();
            timers.insert(&key(i), Timer::event(i));
        }
        let first = checkpoint(&mut s, 1);
        // 2: over those files: every key rewritten or (every fifth) deleted, new keys, and
        // every fourth timer deleted (the timers' change is a small batch this time).
        for i in 0..big + 5_000 {
            if i % 5 == 0 {
                s.delete(&key(i), b"").unwrap();
                model.remove(&i);
            } else {
                s.put(&key(i), b"", &(i * 7).to_le_bytes()).unwrap();
                model.insert(i, i * 7);
            }
            if i % 4 == 0 && i < big {
                assert!(s.delete_timer(&key(i), Timer::event(i)).unwrap());
                timers.remove(&key(i), Timer::event(i));
            }
        }
        let (model2, timers2) = (model.clone(), timers.clone());
        let second = checkpoint(&mut s, 2);
        // 3: a small batch over ingested files.
        for i in (1..big).step_by(1_000) {
            s.delete(&key(i), b"").unwrap();
            model.remove(&i);
        }
        s.put(&key(0), b"", &1u64.to_le_bytes()).unwrap();
        model.insert(0, 1);
        let third = checkpoint(&mut s, 3);

        let model1: BTreeMap<u64, u64> = (0..big).map(|i| (i, i)).collect();
        let mut timers1 = TimerQueue::new();
        for i in 0..big {
            timers1.insert(&key(i), Timer::event(i));
        }
        check(&first, &model1, &timers1);
        check(&second, &model2, &timers2);
        check(&third, &model, &timers);
        assert!(!std::fs::read_dir(tmp.path().join("db")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("cairn-ingest")));
    }

    /// Which path a write takes: a file only from the threshold on.
    #[test]
    fn only_a_large_write_is_ingested() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 1 << 20);
        let writes = |n: usize| -> Writes {
            let mut map = Writes::default();
            for i in 0..n {
                map.insert(&i.to_be_bytes(), Some(b"v"[..].into()));
            }
            map
        };
        let none = TimerWrites::default();
        let small = writes(ingest::INGEST_MIN_ENTRIES - 1);
        assert_eq!(write_out(s.db(), &small, &none).unwrap(), Written::Batch);
        let large = writes(ingest::INGEST_MIN_ENTRIES);
        assert_eq!(write_out(s.db(), &large, &none).unwrap(), Written::Ingested);
        assert_eq!(
            s.db().iterator(IteratorMode::Start).count(),
            ingest::INGEST_MIN_ENTRIES
        );
    }

    /// The point of inline keys and values: a cache entry is one bucket of the map.
    #[test]
    fn a_cache_entry_fits_in_its_bucket() {
        assert_eq!(std::mem::size_of::<(CachedKey, Option<CachedValue>)>(), 72);
    }

    #[test]
    fn over_long_keys_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = store(tmp.path(), 1 << 20);
        let long = vec![b'x'; MAX_KEY_LEN + 1];
        let err = s.put(&long, b"", b"v").unwrap_err();
        assert!(err.to_string().contains("longer than the maximum"));
    }
}

//! [`TaskContext`]: what a task may touch while it processes a record.

use crate::sink::Sink;
use crate::state::keyed::PlainKeyHash;
use crate::state::timer::DueTimer;
use crate::state::{KeyedState, MemoryState, StateError, SubEntry, TimeDomain, Timer};

use super::TaskError;

/// Keyed state and the output of one task, lent to it for one call.
pub struct TaskContext<'a> {
    state: State<'a>,
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) task_id: u32,
    pub(crate) emitted: u64,
    watermark: Option<u64>,
    late: u64,
}

/// The state behind a context: RocksDB when the job runs, memory in a task's unit test. An enum,
/// not a trait object: every record's state access stays a direct call.
enum State<'a> {
    Db(&'a mut KeyedState),
    Memory(&'a mut MemoryState),
}

impl State<'_> {
    fn read<R>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StateError> {
        match self {
            State::Db(s) => s.read(key, sub, f),
            State::Memory(s) => s.read(key, sub, f),
        }
    }

    fn update<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<V>,
    ) -> Result<(), StateError> {
        match self {
            State::Db(s) => s.update(key, sub, f),
            State::Memory(s) => s.update(key, sub, f),
        }
    }

    fn put(&mut self, key: &[u8], sub: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.update(key, sub, |_| Some(value))
    }

    fn delete(&mut self, key: &[u8], sub: &[u8]) -> Result<(), StateError> {
        self.update::<&[u8]>(key, sub, |_| None)
    }

    fn scan(
        &mut self,
        key: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<Vec<SubEntry>, StateError> {
        match self {
            State::Db(s) => s.scan(key, from, to),
            State::Memory(s) => s.scan(key, from, to),
        }
    }

    fn register_timer(&mut self, key: &[u8], timer: Timer) -> Result<(), StateError> {
        match self {
            State::Db(s) => s.register_timer(key, timer),
            State::Memory(s) => s.register_timer(key, timer),
        }
    }

    fn delete_timer(&mut self, key: &[u8], timer: Timer) -> Result<bool, StateError> {
        match self {
            State::Db(s) => s.delete_timer(key, timer),
            State::Memory(s) => s.delete_timer(key, timer),
        }
    }

    fn next_timer(&self, domain: TimeDomain) -> Option<u64> {
        match self {
            State::Db(s) => s.timer_queue().next(domain),
            State::Memory(s) => s.timer_queue().next(domain),
        }
    }

    fn pop_due_timer(
        &mut self,
        domain: TimeDomain,
        now: u64,
    ) -> Result<Option<DueTimer>, StateError> {
        match self {
            State::Db(s) => s.pop_due_timer(domain, now),
            State::Memory(s) => s.pop_due_timer(domain, now),
        }
    }
}

/// The timer service of a task, lent by [`TaskContext::timers`]: per-key timers in processing
/// or event time, kept in the keyed state (every checkpoint and savepoint carries them, and a
/// re-split moves each with its key). A due timer is removed, then passed to
/// [`super::StreamTask::on_timer`] with its key.
pub struct Timers<'c, 'a> {
    ctx: &'c mut TaskContext<'a>,
}

impl Timers<'_, '_> {
    /// Registers `timer` for `key`; registering the same (key, timer) again changes nothing.
    pub fn register(&mut self, key: &[u8], timer: Timer) -> Result<(), TaskError> {
        self.ctx
            .state
            .register_timer(key, timer)
            .map_err(record_error)
    }

    /// Deletes `timer` of `key`; false if it was not registered.
    pub fn delete(&mut self, key: &[u8], timer: Timer) -> Result<bool, TaskError> {
        self.ctx
            .state
            .delete_timer(key, timer)
            .map_err(record_error)
    }

    /// When the task's next timer of `domain` is due (any key).
    pub fn next(&self, domain: TimeDomain) -> Option<u64> {
        self.ctx.state.next_timer(domain)
    }
}

impl<'a> TaskContext<'a> {
    /// Builds a context over RocksDB-backed state (the runtime's).
    pub fn new(state: &'a mut KeyedState, sink: &'a mut dyn Sink, task_id: u32) -> Self {
        TaskContext {
            state: State::Db(state),
            sink,
            task_id,
            emitted: 0,
            watermark: None,
            late: 0,
        }
    }

    /// See [`KeyedState::prefetch_slot`] (no effect on in-memory test state).
    pub(crate) fn prefetch_slot(&self, hash: u64) {
        if let State::Db(state) = &self.state {
            state.prefetch_slot(hash);
        }
    }

    /// See [`KeyedState::expect_plain_key`].
    pub(crate) fn expect_plain_key(&mut self, key: &[u8], hash: PlainKeyHash) {
        if let State::Db(state) = &mut self.state {
            state.expect_plain_key(key, hash);
        }
    }

    /// See [`KeyedState::prefetch_entry`].
    pub(crate) fn prefetch_entry(&self, hash: u64) {
        if let State::Db(state) = &self.state {
            state.prefetch_entry(hash);
        }
    }

    /// Builds a context over in-memory state, for unit tests of a task: no RocksDB, no
    /// directory. The task sees the same state semantics (see [`MemoryState`]); pair it with a
    /// sink that collects, e.g. [`crate::sink::CollectSink`].
    pub fn in_memory(state: &'a mut MemoryState, sink: &'a mut dyn Sink, task_id: u32) -> Self {
        TaskContext {
            state: State::Memory(state),
            sink,
            task_id,
            emitted: 0,
            watermark: None,
            late: 0,
        }
    }

    /// The task's watermark (ms): every record with a timestamp at or below it is taken to have
    /// arrived, and event-time timers up to it have fired. `None` before the first watermark,
    /// and always in a job without `eventTime:`.
    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Counts a record the task dropped as late (`cairn_late_records_total`).
    pub fn count_late(&mut self) {
        self.late += 1;
    }

    /// Records counted with [`Self::count_late`] through this context so far.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Sets what [`Self::watermark`] answers: the runtime's clock, or a task's unit test.
    pub fn set_watermark(&mut self, watermark: Option<u64>) {
        self.watermark = watermark;
    }

    /// The task's id (= its input partition).
    pub fn task_id(&self) -> u32 {
        self.task_id
    }

    /// Records emitted through this context so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Calls `f` with the current value of `key` (borrowed, no copy) and returns its answer.
    pub fn read<R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, TaskError> {
        self.state.read(key, b"", f).map_err(record_error)
    }

    /// Current value of `key`, copied.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        self.state
            .read(key, b"", |v| v.map(<[u8]>::to_vec))
            .map_err(record_error)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.state.put(key, b"", value).map_err(record_error)
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), TaskError> {
        self.state.delete(key, b"").map_err(record_error)
    }

    /// Replaces the value of `key` with `f(old)` in one lookup; `None` deletes it.
    pub fn update<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<V>,
    ) -> Result<(), TaskError> {
        self.state.update(key, b"", f).map_err(record_error)
    }

    /// Reads the 64-bit counter stored at `key` (0 when absent), adds `delta`, stores and
    /// returns the new value. Stored as 8 little-endian bytes.
    ///
    /// A sum outside the 64-bit range is a [`TaskError::BadRecord`] (the runtime skips and
    /// counts the record) and leaves the counter as it was: it never wraps around.
    pub fn add_i64(&mut self, key: &[u8], delta: i64) -> Result<i64, TaskError> {
        let mut sum = Ok(0i64);
        self.state
            .update(key, b"", |old| {
                let current = old.map_or(0, decode_i64);
                sum = current.checked_add(delta).ok_or(current);
                // On overflow the current value is written back unchanged: `update` has no
                // "leave it" answer, and a second lookup would slow down every counter update.
                // Only an 8-byte value can overflow (anything else reads as 0), so this is the
                // stored value itself.
                Some(sum.unwrap_or(current).to_le_bytes())
            })
            .map_err(record_error)?;
        sum.map_err(|current| TaskError::BadRecord {
            reason: format!(
                "adding {delta} to the counter of this key ({current}) is outside the 64-bit \
                 range (-2^63 to 2^63-1); the counter is left at {current}"
            ),
        })
    }

    /// Reads `(key, sub)`: a value under a sub-key of `key` (a window, a list element), stored
    /// next to the key's other sub-keys.
    pub fn get_sub(&mut self, key: &[u8], sub: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        self.state
            .read(key, sub, |v| v.map(<[u8]>::to_vec))
            .map_err(record_error)
    }

    /// Sets `(key, sub)`.
    pub fn put_sub(&mut self, key: &[u8], sub: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.state.put(key, sub, value).map_err(record_error)
    }

    /// Deletes `(key, sub)`.
    pub fn delete_sub(&mut self, key: &[u8], sub: &[u8]) -> Result<(), TaskError> {
        self.state.delete(key, sub).map_err(record_error)
    }

    /// All sub-keys of `key` from `from` (inclusive) to `to` (exclusive, `None` = to the end),
    /// in byte order, with their values.
    pub fn scan(
        &mut self,
        key: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<Vec<SubEntry>, TaskError> {
        self.state.scan(key, from, to).map_err(record_error)
    }

    /// The task's per-key timers.
    pub fn timers(&mut self) -> Timers<'_, 'a> {
        Timers { ctx: self }
    }

    /// Takes the earliest timer of `domain` due at `now`, with its key (the runtime fires it).
    pub fn pop_due_timer(
        &mut self,
        domain: TimeDomain,
        now: u64,
    ) -> Result<Option<DueTimer>, TaskError> {
        Ok(self.state.pop_due_timer(domain, now)?)
    }

    /// Sends a record to the job's output. With the `file` sink it becomes visible exactly
    /// once, when the checkpoint covering it commits.
    pub fn emit(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.emitted += 1;
        Ok(self.sink.write(key, value)?)
    }
}

/// A state error caused by the record itself (a key longer than a state key may be) is a
/// [`TaskError::BadRecord`]: the runtime skips and counts it. As a task failure it would stop
/// the task at the same record again after every restart.
fn record_error(error: StateError) -> TaskError {
    match error {
        StateError::KeyTooLong { len, max } => TaskError::BadRecord {
            reason: format!(
                "its key of {len} bytes is longer than the {max}-byte maximum of a state key"
            ),
        },
        other => TaskError::State(other),
    }
}

/// Decodes a counter written by [`TaskContext::add_i64`]; a value of another length reads as 0.
pub fn decode_i64(v: &[u8]) -> i64 {
    v.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

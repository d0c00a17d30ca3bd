//! [`TaskContext`]: what a task may touch while it processes a record.

use crate::sink::Sink;
use crate::state::{KeyedState, SubEntry};

use super::TaskError;

/// Keyed state and the output of one task, lent to it for one call.
pub struct TaskContext<'a> {
    pub(crate) state: &'a mut KeyedState,
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) task_id: u32,
    pub(crate) emitted: u64,
}

impl<'a> TaskContext<'a> {
    /// Builds a context (used by the runtime and by tests of custom tasks).
    pub fn new(state: &'a mut KeyedState, sink: &'a mut dyn Sink, task_id: u32) -> Self {
        TaskContext {
            state,
            sink,
            task_id,
            emitted: 0,
        }
    }

    /// The task's id (= its input partition).
    pub fn task_id(&self) -> u32 {
        self.task_id
    }

    /// Records emitted through this context so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Current value of `key`, copied.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        Ok(self.state.read(key, b"", |v| v.map(<[u8]>::to_vec))?)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        Ok(self.state.put(key, b"", value)?)
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), TaskError> {
        Ok(self.state.delete(key, b"")?)
    }

    /// Replaces the value of `key` with `f(old)` in one lookup; `None` deletes it.
    pub fn update<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<V>,
    ) -> Result<(), TaskError> {
        Ok(self.state.update(key, b"", f)?)
    }

    /// Reads the 64-bit counter stored at `key` (0 when absent), adds `delta`, stores and
    /// returns the new value. Stored as 8 little-endian bytes.
    pub fn add_i64(&mut self, key: &[u8], delta: i64) -> Result<i64, TaskError> {
        let mut new = 0i64;
        self.state.update(key, b"", |old| {
            new = old.map_or(0, decode_i64).wrapping_add(delta);
            Some(new.to_le_bytes())
        })?;
        Ok(new)
    }

    /// Reads `(key, sub)`: a value under a sub-key of `key` (a window, a list element), stored
    /// next to the key's other sub-keys.
    pub fn get_sub(&mut self, key: &[u8], sub: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        Ok(self.state.read(key, sub, |v| v.map(<[u8]>::to_vec))?)
    }

    /// Sets `(key, sub)`.
    pub fn put_sub(&mut self, key: &[u8], sub: &[u8], value: &[u8]) -> Result<(), TaskError> {
        Ok(self.state.put(key, sub, value)?)
    }

    /// Deletes `(key, sub)`.
    pub fn delete_sub(&mut self, key: &[u8], sub: &[u8]) -> Result<(), TaskError> {
        Ok(self.state.delete(key, sub)?)
    }

    /// All sub-keys of `key` from `from` (inclusive) to `to` (exclusive, `None` = to the end),
    /// in byte order, with their values.
    pub fn scan(
        &mut self,
        key: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<Vec<SubEntry>, TaskError> {
        Ok(self.state.scan(key, from, to)?)
    }

    /// Sends a record to the job's output. With the `file` sink it becomes visible exactly
    /// once, when the checkpoint covering it commits.
    pub fn emit(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.emitted += 1;
        Ok(self.sink.write(key, value)?)
    }
}

/// Decodes a counter written by [`TaskContext::add_i64`]; a value of another length reads as 0.
pub fn decode_i64(v: &[u8]) -> i64 {
    v.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

//! [`RecordBatch`]: records read by one poll, stored in one reusable buffer so the hot loop
//! does not allocate per record.

use crate::task::Record;

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    key_len: u32,
    value_len: u32,
    offset: u64,
}

/// A batch of records of one partition.
#[derive(Debug, Default)]
pub struct RecordBatch {
    partition: u32,
    data: Vec<u8>,
    entries: Vec<Entry>,
}

impl RecordBatch {
    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self, partition: u32) {
        self.partition = partition;
        self.data.clear();
        self.entries.clear();
    }

    /// Appends a record.
    pub fn push(&mut self, offset: u64, key: &[u8], value: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.entries.push(Entry {
            start,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            offset,
        });
    }

    /// Appends a record whose key and value are written by `fill` into the buffer: `fill`
    /// returns the key length; the rest it wrote is the value.
    pub fn push_with(&mut self, offset: u64, fill: impl FnOnce(&mut Vec<u8>) -> usize) {
        let start = self.data.len();
        let key_len = fill(&mut self.data);
        let total = self.data.len() - start;
        self.entries.push(Entry {
            start: start as u32,
            key_len: key_len as u32,
            value_len: (total - key_len) as u32,
            offset,
        });
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`-th record.
    pub fn get(&self, i: usize) -> Record<'_> {
        let e = self.entries[i];
        let s = e.start as usize;
        let k = s + e.key_len as usize;
        Record {
            partition: self.partition,
            offset: e.offset,
            key: &self.data[s..k],
            value: &self.data[k..k + e.value_len as usize],
        }
    }
}

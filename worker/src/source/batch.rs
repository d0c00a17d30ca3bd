//! [`RecordBatch`]: records read by one poll, stored in one reusable buffer so the hot loop
//! does not allocate per record.

use crate::task::Record;

/// Bytes of keys and values after which a source stops adding records to a batch (a soft
/// limit: the record that crosses it is kept). Bounds the memory of one batch whatever the
/// record sizes, e.g. 1024 lines of 16 MiB.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Where one record is in the buffer. Plain `usize`s: a batch may exceed 4 GiB only if a
/// source ignores [`MAX_BATCH_BYTES`], and then it must still never wrap.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    key_len: usize,
    value_len: usize,
    offset: u64,
    /// The input's own timestamp of the record (ms since the epoch), if it has one.
    timestamp: Option<u64>,
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
        let start = self.data.len();
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.entries.push(Entry {
            start,
            key_len: key.len(),
            value_len: value.len(),
            offset,
            timestamp: None,
        });
    }

    /// Appends a record whose key and value are written by `fill` into the buffer: `fill`
    /// returns the key length; the rest it wrote is the value.
    pub fn push_with(&mut self, offset: u64, fill: impl FnOnce(&mut Vec<u8>) -> usize) {
        let start = self.data.len();
        let key_len = fill(&mut self.data);
        let total = self.data.len() - start;
        self.entries.push(Entry {
            start,
            key_len,
            value_len: total - key_len,
            offset,
            timestamp: None,
        });
    }

    /// Gives the record pushed last the input's own timestamp (a Kafka record's, a generated
    /// one): the event time of jobs whose `eventTime` names no field.
    pub fn stamp_last(&mut self, timestamp: u64) {
        if let Some(last) = self.entries.last_mut() {
            last.timestamp = Some(timestamp);
        }
    }

    /// Bytes of keys and values in the batch; sources stop adding records at
    /// [`MAX_BATCH_BYTES`].
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether the batch has reached [`MAX_BATCH_BYTES`].
    pub fn is_full(&self) -> bool {
        self.data.len() >= MAX_BATCH_BYTES
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
        let k = e.start + e.key_len;
        Record {
            partition: self.partition,
            offset: e.offset,
            timestamp: e.timestamp,
            key: &self.data[e.start..k],
            value: &self.data[k..k + e.value_len],
        }
    }
}

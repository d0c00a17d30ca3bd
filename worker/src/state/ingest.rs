//! Writing many cache entries at once: as one sorted SST file that RocksDB ingests, instead of
//! through the memtable.
//!
//! A checkpoint of a large key space writes millions of entries. Through a `WriteBatch` each
//! one is inserted into the memtable's skip list (a random walk over memory), then flushed into
//! L0 files: 14 s for 10M keys on 2 cores (docs/benchmarks.md). Sorted once here (on an 8-byte
//! prefix kept beside each entry), the same entries stream into an SST in one sequential pass, and
//! ingestion links the file into the database (`move_files`), flushing only an overlapping
//! memtable. The result reads back exactly as the batch would: an ingested file gets a
//! sequence number above everything already in the database, so its values and deletes win.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, IngestExternalFileOptions, SstFileWriter, DB};

use super::db::{sst_writer_options, StateError};

/// One entry to write: the encoded key and its value, `None` for a delete.
pub type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

/// Below this many entries a `WriteBatch` is cheaper than a file, an fsync and an ingestion,
/// and it does not add an L0 file per checkpoint for compaction to merge.
pub const INGEST_MIN_ENTRIES: usize = 50_000;

/// Sorts `entries` by key and ingests them as one SST file into column family `cf` of `db`
/// (`None`: the default one). Keys must be distinct (they come from a hash map). `name` tells
/// apart the files of one database's column families. Blocking.
pub fn ingest_sorted<'a>(
    db: &DB,
    cf: Option<&ColumnFamily>,
    name: &str,
    entries: impl ExactSizeIterator<Item = Entry<'a>>,
) -> Result<(), StateError> {
    let sorted = sort_by_key(entries);
    // The file lives inside the database directory: the same filesystem, so ingestion can
    // hard-link it. RocksDB ignores names that are not its own; a file left by a crash is
    // removed here next time, and a crashed database directory is never reopened anyway.
    let path = db.path().join(format!("cairn-ingest-{name}.sst"));
    remove_if_present(&path)?;
    let written = write_sst(&path, &sorted).and_then(|()| {
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        match cf {
            Some(cf) => db.ingest_external_file_cf_opts(cf, &opts, vec![&path]),
            None => db.ingest_external_file_opts(&opts, vec![&path]),
        }
        .map_err(|source| StateError::Db {
            op: "ingest",
            source,
        })
    });
    // With move_files the name is unlinked by a successful ingestion; after a failure the
    // file must not stay behind.
    let removed = remove_if_present(&path);
    written.and(removed)
}

/// The entries in key order. The sort runs on each key's first 8 bytes, kept beside the entry
/// so that comparing touches no key memory; whole keys are compared only when those tie.
/// (Zero-padding a key to 8 bytes keeps byte order: a shorter key pads below any extension.)
fn sort_by_key<'a>(entries: impl ExactSizeIterator<Item = Entry<'a>>) -> Vec<Entry<'a>> {
    let mut keyed: Vec<(u64, Entry<'a>)> = Vec::with_capacity(entries.len());
    keyed.extend(entries.map(|e| (prefix(e.0), e)));
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1 .0.cmp(b.1 .0)));
    keyed.into_iter().map(|(_, e)| e).collect()
}

fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

fn write_sst(path: &Path, sorted: &[Entry<'_>]) -> Result<(), StateError> {
    let db_err = |op| move |source| StateError::Db { op, source };
    let opts = sst_writer_options();
    let mut writer = SstFileWriter::create(&opts);
    writer.open(path).map_err(db_err("open sst"))?;
    for (key, value) in sorted {
        match value {
            Some(v) => writer.put(key, v),
            None => writer.delete(key),
        }
        .map_err(db_err("write sst"))?;
    }
    writer.finish().map_err(db_err("finish sst"))
}

fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::File {
            path: PathBuf::from(path),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_sort_is_byte_order() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1],
            vec![1, 0, 0, 0, 0, 0, 0, 0],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 5],
            vec![1, 0, 0, 0, 0, 0, 0, 1],
            vec![255; 3],
            vec![255; 12],
            vec![2, 9, 9],
        ];
        let entries: Vec<Entry<'_>> = keys.iter().rev().map(|k| (&k[..], None)).collect();
        let sorted: Vec<&[u8]> = sort_by_key(entries.into_iter())
            .into_iter()
            .map(|e| e.0)
            .collect();
        let mut expected: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        expected.sort();
        assert_eq!(sorted, expected);
    }
}

//! Re-splitting keyed state from N to N' partitions (architecture decision 2).
//!
//! Every state key starts with the big-endian partitioning hash of its key, so an old task's
//! database, scanned in key order, yields each new partition's entries already sorted: one
//! sequential pass per old task writes one SST file per new partition with RocksDB's
//! `SstFileWriter`, and each new task ingests the files addressed to it (moved, not copied).
//! No entry goes through a memtable. Old tasks are split in parallel, one thread per core.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rocksdb::{IngestExternalFileOptions, IteratorMode, Options, SstFileWriter, DB};

use super::CheckpointError;
use crate::partition::partition_of_hash;
use crate::state::key;

/// What splitting produced.
#[derive(Debug, Default)]
pub struct Split {
    /// For each new partition, the SST files written for it (one per old task that had keys).
    pub files: Vec<Vec<PathBuf>>,
    /// Entries moved.
    pub entries: u64,
    /// Bytes of keys and values moved.
    pub bytes: u64,
}

fn err(what: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Repartition(what.to_string())
}

/// Splits the databases in `old_dbs` (one per old task, any order) into `new_partitions`
/// partitions, writing SST files under `out_dir`.
pub fn split_all(
    old_dbs: &[PathBuf],
    new_partitions: u32,
    out_dir: &Path,
) -> Result<Split, CheckpointError> {
    std::fs::create_dir_all(out_dir).map_err(|e| err(format!("{}: {e}", out_dir.display())))?;
    let result = Mutex::new(Split {
        files: vec![Vec::new(); new_partitions as usize],
        ..Split::default()
    });
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(old_dbs.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), CheckpointError> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(db_dir) = old_dbs.get(i) else {
                            return Ok(());
                        };
                        let (files, entries, bytes) =
                            split_one(db_dir, new_partitions, out_dir, i)?;
                        let mut r = result.lock().expect("split lock");
                        for (p, f) in files.into_iter().enumerate() {
                            r.files[p].extend(f);
                        }
                        r.entries += entries;
                        r.bytes += bytes;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("split thread panicked"))
    })?;
    Ok(result.into_inner().expect("split lock"))
}

type OneSplit = (Vec<Option<PathBuf>>, u64, u64);

fn split_one(
    db_dir: &Path,
    n: u32,
    out_dir: &Path,
    index: usize,
) -> Result<OneSplit, CheckpointError> {
    let db = DB::open_for_read_only(&Options::default(), db_dir, false)
        .map_err(|e| err(format!("opening {}: {e}", db_dir.display())))?;
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut writers: Vec<Option<(SstFileWriter, PathBuf)>> = (0..n).map(|_| None).collect();
    let (mut entries, mut bytes) = (0u64, 0u64);
    for item in db.iterator(IteratorMode::Start) {
        let (k, v) = item.map_err(err)?;
        let hash = key::hash_of(&k).ok_or_else(|| {
            err(format!(
                "a key of {} bytes in {} has no hash prefix",
                k.len(),
                db_dir.display()
            ))
        })?;
        let target = partition_of_hash(hash, n) as usize;
        if writers[target].is_none() {
            let path = out_dir.join(format!("old-{index:04}-to-{target:04}.sst"));
            let w = SstFileWriter::create(&opts);
            w.open(&path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            writers[target] = Some((w, path));
        }
        let (w, _) = writers[target].as_mut().expect("opened above");
        w.put(&k, &v).map_err(err)?;
        entries += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    let mut files = Vec::with_capacity(n as usize);
    for w in writers {
        files.push(match w {
            Some((mut w, path)) => {
                w.finish().map_err(err)?;
                Some(path)
            }
            None => None,
        });
    }
    Ok((files, entries, bytes))
}

/// Ingests `files` into `db` by moving them (each may overlap the others; RocksDB places
/// overlapping files in level 0 and compacts them later).
pub fn ingest(db: &DB, files: &[PathBuf]) -> Result<(), CheckpointError> {
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    for f in files {
        db.ingest_external_file_opts(&opts, vec![f])
            .map_err(|e| err(format!("ingesting {}: {e}", f.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::partition_of;
    use crate::state::{open_task_db, KeyedState};

    #[test]
    fn every_entry_lands_in_the_partition_of_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = rocksdb::Cache::new_lru_cache(4 << 20);
        // Two old tasks (N = 2) with 1000 keys between them, values = key number.
        let mut old_dirs = Vec::new();
        for t in 0..2u32 {
            let dir = tmp.path().join(format!("old-{t}"));
            let mut s = KeyedState::new(open_task_db(&dir, &cache).unwrap(), 1 << 20);
            for i in 0..1000u32 {
                let k = format!("k{i}");
                if partition_of(k.as_bytes(), 2) == t {
                    s.put(k.as_bytes(), b"", &i.to_le_bytes()).unwrap();
                    s.put(k.as_bytes(), b"sub", b"x").unwrap();
                }
            }
            let snap = s.begin_snapshot().unwrap();
            snap.take(&tmp.path().join(format!("cp-{t}"))).unwrap();
            old_dirs.push(tmp.path().join(format!("cp-{t}")));
        }
        // N' = 3, not a multiple.
        let split = split_all(&old_dirs, 3, &tmp.path().join("split")).unwrap();
        assert_eq!(split.entries, 2000);
        for p in 0..3u32 {
            let db = open_task_db(&tmp.path().join(format!("new-{p}")), &cache).unwrap();
            ingest(&db, &split.files[p as usize]).unwrap();
            let mut seen = 0;
            for item in db.iterator(IteratorMode::Start) {
                let (k, v) = item.unwrap();
                let d = key::decode(&k).unwrap();
                assert_eq!(partition_of(d.key, 3), p);
                if d.sub.is_empty() {
                    let i: u32 = std::str::from_utf8(&d.key[1..]).unwrap().parse().unwrap();
                    assert_eq!(v.as_ref(), i.to_le_bytes());
                }
                seen += 1;
            }
            let expected = (0..1000)
                .filter(|i| partition_of(format!("k{i}").as_bytes(), 3) == p)
                .count()
                * 2;
            assert_eq!(seen, expected);
        }
    }
}

//! Re-splitting keyed state from N to N' partitions (architecture decision 2).
//!
//! Every state key starts with the big-endian partitioning hash of its key, so an old task's
//! database, scanned in key order, yields each new partition's entries already sorted: one
//! sequential pass per old task writes one SST file per new partition with RocksDB's
//! `SstFileWriter`, and each new task ingests the files addressed to it (moved, not copied).
//! No entry goes through a memtable. Each old task is split as soon as it is restored, one
//! pipeline per core (`start::resplit`).
//!
//! The work happens in a [`Scratch`] directory of the job's state directory, one per process
//! (`repartition-<generation>-<process>`): the processes of one job on one machine re-split at
//! the same time, each for its own new tasks. Each holds a lock on its scratch while it works,
//! and every start removes the scratch nobody holds any more ([`remove_dead_scratch`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rocksdb::{
    DBCompressionType, IngestExternalFileOptions, IteratorMode, Options, ReadOptions,
    SstFileWriter, DB, DEFAULT_COLUMN_FAMILY_NAME,
};

use super::CheckpointError;
use crate::partition::partition_of_hash;
use crate::state::db::{open_read_only, sst_writer_options, COLUMN_FAMILIES};
use crate::state::key;

/// An SST file written for a new partition, and the column family it goes into (state or
/// timers: both are laid out hash first, so both split the same way).
pub type FamilyFile = (&'static str, PathBuf);

/// What splitting produced.
#[derive(Debug, Default)]
pub struct Split {
    /// For each new partition, the SST files written for it (per old task, one for each column
    /// family that had keys of the partition).
    pub files: Vec<Vec<FamilyFile>>,
    /// Entries moved.
    pub entries: u64,
    /// Bytes of keys and values moved.
    pub bytes: u64,
}

fn err(what: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Repartition(what.to_string())
}

impl Split {
    /// Nothing split yet, for `partitions` new partitions.
    pub fn empty(partitions: u32) -> Self {
        Split {
            files: vec![Vec::new(); partitions as usize],
            ..Split::default()
        }
    }

    /// Adds what another old database's split produced.
    pub fn merge(&mut self, other: Split) {
        if self.files.len() < other.files.len() {
            self.files.resize(other.files.len(), Vec::new());
        }
        for (mine, theirs) in self.files.iter_mut().zip(other.files) {
            mine.extend(theirs);
        }
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// How many old databases to split at once: one per core.
pub fn split_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Splits one old database (`index`: its number among the old databases, naming its files)
/// into SST files under `out_dir`, for the new partitions in `wanted` only.
pub fn split_db(
    db_dir: &Path,
    n: u32,
    wanted: &[u32],
    out_dir: &Path,
    index: usize,
) -> Result<Split, CheckpointError> {
    std::fs::create_dir_all(out_dir).map_err(|e| err(format!("{}: {e}", out_dir.display())))?;
    let mut keep = vec![false; n as usize];
    for &p in wanted {
        if let Some(k) = keep.get_mut(p as usize) {
            *k = true;
        }
    }
    let db =
        open_read_only(db_dir).map_err(|e| err(format!("opening {}: {e}", db_dir.display())))?;
    let families = DB::list_cf(&Options::default(), db_dir).map_err(|e| {
        err(format!(
            "listing the column families of {}: {e}",
            db_dir.display()
        ))
    })?;
    if let Some(unknown) = families
        .iter()
        .find(|f| !COLUMN_FAMILIES.contains(&f.as_str()))
    {
        return Err(err(format!(
            "{} has a column family '{unknown}' this worker does not know (it knows {COLUMN_FAMILIES:?}); it was written by a newer Cairn: upgrade the worker image",
            db_dir.display()
        )));
    }
    let mut split = Split::empty(n);
    for family in COLUMN_FAMILIES {
        // A database from before timers existed has only the default family.
        let Some(cf) = db.cf_handle(family) else {
            continue;
        };
        let (paths, e, b) = split_family(&db, cf, family, db_dir, n, &keep, out_dir, index)?;
        for (target, path) in paths.into_iter().enumerate() {
            if let Some(path) = path {
                split.files[target].push((family, path));
            }
        }
        split.entries += e;
        split.bytes += b;
    }
    Ok(split)
}

/// Splits one column family of an old task's database: one SST per new partition it has keys
/// for, in key order (which is hash order).
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn split_family(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    family: &str,
    db_dir: &Path,
    n: u32,
    keep: &[bool],
    out_dir: &Path,
    index: usize,
) -> Result<(Vec<Option<PathBuf>>, u64, u64), CheckpointError> {
    // The format of every task SST (block size, bloom filter), so the new databases read their
    // ingested files like their own.
    let mut opts = sst_writer_options();
    if !compresses(db, cf) {
        // RocksDB kept most of this family's blocks uncompressed (LZ4 saved less than 1/8):
        // compressing them again would cost the split the most CPU of anything and store the
        // same bytes. Compaction compresses later writes as usual.
        opts.set_compression_type(DBCompressionType::None);
        opts.set_bottommost_compression_type(DBCompressionType::None);
    }
    let mut read = ReadOptions::default();
    // One pass over blocks nobody reads again: keep them out of the block cache, and read
    // ahead (the files are in the page cache or on a local disk, read in order).
    read.fill_cache(false);
    read.set_readahead_size(READAHEAD);
    let mut writers: Vec<Option<(SstFileWriter, PathBuf)>> = (0..n).map(|_| None).collect();
    let (mut entries, mut bytes) = (0u64, 0u64);
    for item in db.iterator_cf_opt(cf, read, IteratorMode::Start) {
        let (k, v) = item.map_err(err)?;
        let hash = key::hash_of(&k).ok_or_else(|| {
            err(format!(
                "a key of {} bytes in {} has no hash prefix",
                k.len(),
                db_dir.display()
            ))
        })?;
        let target = partition_of_hash(hash, n) as usize;
        if !keep[target] {
            continue;
        }
        if writers[target].is_none() {
            let path = out_dir.join(format!("old-{index:04}-to-{target:04}-{family}.sst"));
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

/// Readahead of the split's scans.
const READAHEAD: usize = 4 << 20;

/// Whether compression pays for a column family of an old database: true unless RocksDB
/// rejected compression (LZ4 saving less than 1/8 of a block) for most of its data blocks,
/// according to its tables' aggregated properties. Unknown (no tables, an unreadable property)
/// counts as compressing, the task databases' default.
fn compresses(db: &DB, cf: &rocksdb::ColumnFamily) -> bool {
    let Ok(Some(props)) = db.property_value_cf(cf, "rocksdb.aggregated-table-properties") else {
        return true;
    };
    match (
        table_property(&props, "# data blocks"),
        table_property(&props, "# data blocks compression rejected"),
    ) {
        (Some(blocks), Some(rejected)) if blocks > 0 => rejected * 2 <= blocks,
        _ => true,
    }
}

/// A numeric entry of RocksDB's table properties text (`name=value; name=value; ...`).
fn table_property(props: &str, name: &str) -> Option<u64> {
    props.split(';').find_map(|entry| {
        let (key, value) = entry.split_once('=')?;
        (key.trim() == name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Ingests `files` into their column families of `db` by moving them (each may overlap the
/// others; RocksDB places overlapping files in level 0 and compacts them later).
pub fn ingest(db: &DB, files: &[FamilyFile]) -> Result<(), CheckpointError> {
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    for (family, f) in files {
        let ingested = if *family == DEFAULT_COLUMN_FAMILY_NAME {
            db.ingest_external_file_opts(&opts, vec![f])
        } else {
            let cf = db.cf_handle(family).ok_or_else(|| {
                err(format!(
                    "the new task database has no column family '{family}' for {}",
                    f.display()
                ))
            })?;
            db.ingest_external_file_cf_opts(cf, &opts, vec![f])
        };
        ingested.map_err(|e| err(format!("ingesting {}: {e}", f.display())))?;
    }
    Ok(())
}

/// Name prefix of scratch directories (and their lock files) in a job's state directory.
const SCRATCH_PREFIX: &str = "repartition-";
/// Suffix of a scratch directory's lock file, `repartition-<…>.lock` next to it.
const LOCK_SUFFIX: &str = ".lock";

/// A re-split's scratch directory, `<job dir>/repartition-<generation>-<process>`, in use by
/// this process. Its lock file (the same name plus `.lock`, next to it rather than inside, so
/// that it exists before the directory does) is locked with `flock(2)` for as long as this
/// value lives: a starting process never removes a scratch whose lock is held, and the kernel
/// releases the lock of a process that dies. Dropping it removes the directory and the lock
/// file, also when the re-split failed.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    lock_path: PathBuf,
    /// Holds the lock; unlocked and closed after the files are gone.
    _lock: Flock<File>,
}

impl Scratch {
    /// Takes the scratch directory of `process` (e.g. `c2` for container 2, `all` for a
    /// process running every container) for `generation`, empty. Whatever an earlier process of
    /// the same name left there is removed; if a live process holds it, that is an error.
    pub fn acquire(
        job_dir: &Path,
        generation: u64,
        process: &str,
    ) -> Result<Scratch, CheckpointError> {
        let dir = job_dir.join(format!("{SCRATCH_PREFIX}{generation}-{process}"));
        let lock_path = lock_path_of(&dir);
        let local = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Local { path, source }
        };
        let Some(lock) = try_lock(&lock_path).map_err(local(&lock_path))? else {
            return Err(err(format!(
                "{} is in use by another live process (it holds the lock {}): two processes of this job, both `{process}` (`all`: every container, `cK`: container K), share this state directory; stop one of them, or give each its own state.dir",
                dir.display(),
                lock_path.display()
            )));
        };
        remove_path(&dir).map_err(local(&dir))?;
        std::fs::create_dir_all(&dir).map_err(local(&dir))?;
        Ok(Scratch {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Directory first, then the lock file, both while the lock is still held.
        for path in [&self.dir, &self.lock_path] {
            if let Err(e) = remove_path(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove repartition scratch; the next start removes it");
            }
        }
    }
}

/// Removes every re-split scratch directory (and lock file) in `job_dir` whose lock no live
/// process holds: those of processes killed while re-splitting, of any generation. Scratch in
/// use by another process of the job on this machine is left alone. Failures are logged; they
/// never stop a start.
pub fn remove_dead_scratch(job_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    let names: std::collections::BTreeSet<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(SCRATCH_PREFIX))
        .map(|name| match name.strip_suffix(LOCK_SUFFIX) {
            Some(base) => base.to_owned(),
            None => name,
        })
        .collect();
    for name in names {
        let dir = job_dir.join(&name);
        let lock_path = lock_path_of(&dir);
        let removed = match try_lock(&lock_path) {
            Ok(Some(_lock)) => remove_path(&dir).and_then(|()| remove_path(&lock_path)),
            Ok(None) => {
                tracing::debug!(path = %dir.display(), "repartition scratch in use by a live process; left alone");
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %dir.display(), error = %e, "could not remove stale repartition scratch");
        }
    }
}

/// `<dir>.lock`.
fn lock_path_of(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

/// Removes a directory tree, or a file or symbolic link (never following it); absent is fine.
fn remove_path(path: &Path) -> io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Locks the file at `path` (created if missing) exclusively without waiting; `Ok(None)` when
/// another open file holds the lock. The lock is on the file that is at `path` once it is held:
/// if a concurrent clean-up unlinked the file between our open and our lock, it starts over.
fn try_lock(path: &Path) -> io::Result<Option<Flock<File>>> {
    const ATTEMPTS: u32 = 8;
    for _ in 0..ATTEMPTS {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // A planted symbolic link must not make us create or lock a file elsewhere.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(errno.into()),
        };
        let held = locked.metadata()?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                return Ok(Some(locked))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "the lock file was replaced {ATTEMPTS} times while locking it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::partition_of;
    use crate::state::{open_task_db, KeyedState, Timer};

    /// Every database of `old_dbs` split in turn (the worker pipelines restore and split in
    /// `start::resplit`).
    fn split_all(
        old_dbs: &[PathBuf],
        n: u32,
        wanted: &[u32],
        out_dir: &Path,
    ) -> Result<Split, CheckpointError> {
        let mut split = Split::empty(n);
        for (index, db) in old_dbs.iter().enumerate() {
            split.merge(split_db(db, n, wanted, out_dir, index)?);
        }
        Ok(split)
    }

    /// State and timers: each moves with its key.
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
                    s.write_timer(k.as_bytes(), Timer::event(i.into()), true)
                        .unwrap();
                }
            }
            let snap = s.begin_snapshot().unwrap();
            snap.take(&tmp.path().join(format!("cp-{t}"))).unwrap();
            old_dirs.push(tmp.path().join(format!("cp-{t}")));
        }
        // Only the new partitions asked for get files.
        let only_one = split_all(&old_dirs, 3, &[1], &tmp.path().join("split-1")).unwrap();
        assert!(only_one.files[0].is_empty() && only_one.files[2].is_empty());
        // Two old tasks, each with state and timers.
        assert_eq!(only_one.files[1].len(), 4);
        let in_1 = (0..1000)
            .filter(|i| partition_of(format!("k{i}").as_bytes(), 3) == 1)
            .count();
        assert_eq!(only_one.entries, 3 * in_1 as u64);
        // N' = 3, not a multiple.
        let split = split_all(&old_dirs, 3, &[0, 1, 2], &tmp.path().join("split")).unwrap();
        assert_eq!(split.entries, 3000);
        for p in 0..3u32 {
            let db = open_task_db(&tmp.path().join(format!("new-{p}")), &cache).unwrap();
            ingest(&db, &split.files[p as usize]).unwrap();
            let mut state = KeyedState::new(db.clone(), 1 << 20);
            let (timers, unreadable) = state.stored_timers().unwrap();
            assert_eq!(unreadable, 0);
            let mut expected_timers: Vec<(Vec<u8>, Timer)> = (0..1000u32)
                .map(|i| (format!("k{i}").into_bytes(), Timer::event(i.into())))
                .filter(|(k, _)| partition_of(k, 3) == p)
                .collect();
            expected_timers.sort_by(|a, b| {
                (crate::state::key::prefix_of(&a.0), a.1)
                    .cmp(&(crate::state::key::prefix_of(&b.0), b.1))
            });
            assert_eq!(timers, expected_timers);
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

    /// Random values are split without compression (RocksDB rejected it for their blocks),
    /// repetitive ones with it.
    #[test]
    fn only_state_that_compressed_is_compressed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = rocksdb::Cache::new_lru_cache(4 << 20);
        for (name, random, expected) in [("random", true, false), ("zeros", false, true)] {
            let db = open_task_db(&tmp.path().join(name), &cache).unwrap();
            let mut value = vec![0u8; 1024];
            for i in 0..2000u64 {
                if random {
                    for (j, chunk) in value.chunks_mut(8).enumerate() {
                        let x = crate::partition::mix64(i << 8 | j as u64);
                        chunk.copy_from_slice(&x.to_le_bytes());
                    }
                }
                db.put(i.to_be_bytes(), &value).unwrap();
            }
            db.flush().unwrap();
            let cf = db.cf_handle(DEFAULT_COLUMN_FAMILY_NAME).unwrap();
            assert_eq!(compresses(&db, cf), expected, "{name}");
        }
    }

    #[test]
    fn table_properties_are_read_by_name() {
        let props = "# data blocks=120; # data blocks compression rejected=100; # entries=7; raw key size=9";
        assert_eq!(table_property(props, "# data blocks"), Some(120));
        assert_eq!(
            table_property(props, "# data blocks compression rejected"),
            Some(100)
        );
        assert_eq!(table_property(props, "raw key size"), Some(9));
        assert_eq!(table_property(props, "# deletions"), None);
        assert_eq!(table_property("# data blocks=x", "# data blocks"), None);
    }

    #[test]
    fn a_scratch_is_held_until_dropped_and_then_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path();
        let scratch = Scratch::acquire(job, 4, "c1").unwrap();
        assert_eq!(scratch.path(), job.join("repartition-4-c1"));
        std::fs::write(scratch.path().join("x.sst"), b"x").unwrap();
        // Another process (here: another open file) cannot take it, and a start leaves it.
        let err = Scratch::acquire(job, 4, "c1").unwrap_err().to_string();
        assert!(err.contains("in use by another live process"), "{err}");
        remove_dead_scratch(job);
        assert!(scratch.path().join("x.sst").is_file());
        drop(scratch);
        assert_eq!(std::fs::read_dir(job).unwrap().count(), 0);
    }

    #[test]
    fn a_start_removes_only_scratch_nobody_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path();
        let live = Scratch::acquire(job, 7, "c2").unwrap();
        std::fs::write(live.path().join("x.sst"), b"x").unwrap();
        for dead in ["repartition-3/old-0000", "repartition-5-c1/split"] {
            std::fs::create_dir_all(job.join(dead)).unwrap();
            std::fs::write(job.join(dead).join("y.sst"), b"y").unwrap();
        }
        std::fs::write(job.join("repartition-5-c1.lock"), b"").unwrap();
        std::fs::write(job.join("repartition-6-all.lock"), b"").unwrap();
        std::fs::create_dir_all(job.join("task-0000")).unwrap();

        remove_dead_scratch(job);

        let mut left: Vec<String> = std::fs::read_dir(job)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["repartition-7-c2", "repartition-7-c2.lock", "task-0000"]
        );
        assert!(live.path().join("x.sst").is_file());
    }
}

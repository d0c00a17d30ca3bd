//! Restoring a task's database from a committed checkpoint.
//!
//! Files are verified against the manifest's size and CRC32C. Every immutable file (SST) the
//! restored database will reference is read back from the store once and checksummed: a store
//! copy that rotted while a local copy kept the checkpoint restorable would otherwise go
//! unnoticed — later checkpoints reference it instead of uploading it again — until the local
//! copy is lost too. Reading it costs what reusing a local copy cost before (one read per file):
//! on a `file://` store on the same filesystem the stored file is hard-linked and checksummed
//! in place; on an object store the stored copy is streamed through the checksum and, when an
//! identical local copy from a previous run exists, that copy is linked instead of writing the
//! download. If the store's copy is corrupt and an identical local copy exists, the task is
//! restored from the local copy, the corruption is logged and counted
//! (`cairn_checkpoint_store_corrupt_files_total`), and the file is left out of the files known
//! to be stored, so the next checkpoint uploads it again under a new key.
//!
//! A warm standby's takeover links the files it fetched and verified while following commits
//! ([`Prefetched`]) without reading the store's copies again: that is what makes a takeover
//! cost the same whatever the state's size.
//!
//! Names come from a [`TaskManifest`], whose file list cannot hold anything but plain, distinct
//! file names: every file lands inside the directory being built. That directory is built under
//! a temporary name and renamed when complete, so a crash mid-restore never leaves a
//! half-restored database that looks usable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::manifest::{ManifestFile, TaskManifest};
use super::prefetch::Prefetched;
use super::{paths, CheckpointError};
use crate::storage::{file_crc32c, CheckpointStore, StorageError};

/// How a task database was rebuilt.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    /// Files taken from a local copy of a previous run (hard-linked).
    pub linked: u64,
    /// Files taken from the store (downloaded, or hard-linked from a `file://` store).
    pub downloaded: u64,
    /// Bytes taken from the store.
    pub downloaded_bytes: u64,
    /// Immutable files whose copy in the store is corrupt; restored from an identical local
    /// copy. They must not be referenced by later checkpoints (see [`stored_files`]).
    pub corrupt_in_store: Vec<String>,
}

fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// Previous database directories of a task (`db-*`).
pub fn old_db_dirs(task_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(task_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("db-"))
        })
        .collect()
}

/// The immutable files of `manifest` that later checkpoints of the restored database may
/// reference instead of uploading them again: all of them, except those whose store copy the
/// restore found corrupt.
pub fn stored_files(manifest: &TaskManifest, stats: &RestoreStats) -> Vec<ManifestFile> {
    manifest
        .files
        .iter()
        .filter(|f| paths::is_immutable_db_file(&f.name))
        .filter(|f| !stats.corrupt_in_store.contains(&f.name))
        .cloned()
        .collect()
}

/// Rebuilds `manifest`'s database into `task_dir/db-<db_id>` and returns that directory.
pub async fn restore_task_db(
    store: &CheckpointStore,
    manifest: &TaskManifest,
    task_dir: &Path,
    db_id: &str,
) -> Result<(PathBuf, RestoreStats), CheckpointError> {
    restore_task_db_with(store, manifest, task_dir, db_id, &Prefetched::none()).await
}

/// [`restore_task_db`], linking the files a warm standby holds ([`Prefetched`]).
pub async fn restore_task_db_with(
    store: &CheckpointStore,
    manifest: &TaskManifest,
    task_dir: &Path,
    db_id: &str,
    prefetched: &Prefetched,
) -> Result<(PathBuf, RestoreStats), CheckpointError> {
    let final_dir = task_dir.join(format!("db-{db_id}"));
    let tmp_dir = task_dir.join(format!("restoring-{db_id}"));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::create_dir_all(&tmp_dir).map_err(local_err(&tmp_dir))?;
    match fill(store, manifest, task_dir, &tmp_dir, prefetched).await {
        Ok(stats) => {
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&tmp_dir, &final_dir).map_err(local_err(&final_dir))?;
            Ok((final_dir, stats))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            Err(e)
        }
    }
}

/// Puts every file of `manifest` into `tmp_dir`.
async fn fill(
    store: &CheckpointStore,
    manifest: &TaskManifest,
    task_dir: &Path,
    tmp_dir: &Path,
    prefetched: &Prefetched,
) -> Result<RestoreStats, CheckpointError> {
    let mut local: HashMap<String, PathBuf> = HashMap::new();
    for dir in old_db_dirs(task_dir) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(|e| e.ok()) {
                local
                    .entry(e.file_name().to_string_lossy().into_owned())
                    .or_insert(e.path());
            }
        }
    }
    check_present(store, manifest).await?;

    let mut stats = RestoreStats::default();
    for file in &manifest.files {
        // A plain file name (checked when the manifest was parsed): inside `tmp_dir`.
        let target = tmp_dir.join(&file.name);
        if !paths::is_immutable_db_file(&file.name) {
            // MANIFEST and friends are rewritten by RocksDB: always a private copy.
            store
                .download_file(&file.key, &target, file.meta)
                .await
                .map_err(CheckpointError::from)?;
            stats.downloaded += 1;
            stats.downloaded_bytes += file.meta.size;
            continue;
        }
        // Verified against this manifest's meta when the standby fetched it.
        if let Some(copy) = prefetched.copy_of(file) {
            link_local(&copy, &target)?;
            stats.linked += 1;
            continue;
        }
        let candidate = local.get(&file.name).map(PathBuf::as_path);
        restore_immutable(store, file, candidate, &target, &mut stats).await?;
    }
    Ok(stats)
}

/// Every immutable file must be in the store even when a local copy exists: later checkpoints
/// reference it instead of uploading it again. One listing per directory checks presence and
/// size; content is checked when each file is read.
async fn check_present(
    store: &CheckpointStore,
    manifest: &TaskManifest,
) -> Result<(), CheckpointError> {
    let dirs: std::collections::BTreeSet<&str> = manifest
        .files
        .iter()
        .filter(|f| paths::is_immutable_db_file(&f.name))
        .map(|f| f.key.rsplit_once('/').map_or("", |(dir, _)| dir))
        .collect();
    let mut stored: HashMap<String, u64> = HashMap::new();
    for dir in dirs {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        stored.extend(
            store
                .list(&prefix)
                .await?
                .into_iter()
                .map(|o| (o.key, o.size)),
        );
    }
    for file in manifest
        .files
        .iter()
        .filter(|f| paths::is_immutable_db_file(&f.name))
    {
        let found = stored.get(&file.key).copied();
        if found != Some(file.meta.size) {
            return Err(CheckpointError::MissingInStore {
                key: file.key.clone(),
                expected: file.meta.size,
                found,
            });
        }
    }
    Ok(())
}

/// Restores one immutable file to `target`, reading the store's copy once (see the module
/// doc); `candidate` is a local copy of the same name from a previous run, if any.
async fn restore_immutable(
    store: &CheckpointStore,
    file: &ManifestFile,
    candidate: Option<&Path>,
    target: &Path,
    stats: &mut RestoreStats,
) -> Result<(), CheckpointError> {
    let good_local = |path: &Path| file_crc32c(path).is_ok_and(|m| m == file.meta);
    let candidate = match candidate {
        // An object store's copy must be read to be verified: stream it through the checksum
        // without writing, and link the identical local copy.
        Some(path) if store.local_root().is_none() && good_local(path) => {
            let verified = store.verify(&file.key, file.meta).await;
            return match verified {
                Ok(()) => {
                    link_local(path, target)?;
                    stats.linked += 1;
                    Ok(())
                }
                Err(e @ StorageError::Corrupt { .. }) => {
                    use_local_copy(path, target, &e, stats, &file.name)
                }
                Err(e) => Err(e.into()),
            };
        }
        other => other,
    };
    match store.link_or_download(&file.key, target, file.meta).await {
        Ok(()) => {
            stats.downloaded += 1;
            stats.downloaded_bytes += file.meta.size;
            Ok(())
        }
        Err(e @ StorageError::Corrupt { .. }) => match candidate {
            Some(path) if good_local(path) => use_local_copy(path, target, &e, stats, &file.name),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The store's copy of `name` is corrupt (`error`) but `local` is identical to what the
/// manifest records: restore from it, and report the store's copy.
fn use_local_copy(
    local: &Path,
    target: &Path,
    error: &StorageError,
    stats: &mut RestoreStats,
    name: &str,
) -> Result<(), CheckpointError> {
    link_local(local, target)?;
    tracing::error!(%error, local = %local.display(), "checkpoint store file is corrupt; restored from an identical local copy, and the next checkpoint uploads it again instead of referencing it");
    crate::metrics::store_corrupt_files().inc();
    stats.linked += 1;
    stats.corrupt_in_store.push(name.to_owned());
    Ok(())
}

/// Hard-links a verified local copy into the directory being built (a copy if linking fails).
fn link_local(local: &Path, target: &Path) -> Result<(), CheckpointError> {
    if std::fs::hard_link(local, target).is_ok() {
        return Ok(());
    }
    std::fs::copy(local, target)
        .map(|_| ())
        .map_err(local_err(target))
}

/// Removes the task's other database directories and leftover checkpoint directories once a
/// restore has succeeded.
pub fn remove_stale_local_dirs(task_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(task_dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let stale =
            name.starts_with("db-") || name.starts_with("ckpt-") || name.starts_with("restoring-");
        if stale && path != keep {
            if let Err(err) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), %err, "could not remove stale local state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::{memory::InMemory, ObjectStoreExt};

    use super::*;
    use crate::checkpoint::manifest::{ManifestFiles, FORMAT_VERSION};

    /// Serialises the tests that read the process-wide corruption counter.
    static COUNTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    const SST: &[u8] = b"immutable sst content";
    const SST_KEY: &str = "tasks/task-0000/db-000001-aa/000001.sst";
    const OPTIONS_KEY: &str = "checkpoints/000000000003/g0000000001/task-0000/OPTIONS-000007";

    /// Uploads one SST and one small file; returns the manifest naming them.
    async fn stored_checkpoint(store: &CheckpointStore, scratch: &Path) -> TaskManifest {
        std::fs::create_dir_all(scratch).unwrap();
        std::fs::write(scratch.join("000001.sst"), SST).unwrap();
        std::fs::write(scratch.join("OPTIONS-000007"), b"options").unwrap();
        let metas = store
            .upload_files(&[
                (scratch.join("000001.sst"), SST_KEY.to_owned()),
                (scratch.join("OPTIONS-000007"), OPTIONS_KEY.to_owned()),
            ])
            .await
            .unwrap();
        let files = vec![
            ManifestFile {
                name: "000001.sst".into(),
                key: SST_KEY.into(),
                meta: metas[0],
            },
            ManifestFile {
                name: "OPTIONS-000007".into(),
                key: OPTIONS_KEY.into(),
                meta: metas[1],
            },
        ];
        TaskManifest {
            format: FORMAT_VERSION,
            checkpoint: 3,
            generation: 1,
            task: 0,
            db_id: "000001-aa".into(),
            offsets: Default::default(),
            watermarks: Default::default(),
            files: ManifestFiles::new(files).unwrap(),
            uploaded_bytes: 0,
            new_sst_bytes: 0,
            created_at_ms: 0,
        }
    }

    /// The same size, one byte different: what bit rot does.
    fn rotten() -> Vec<u8> {
        let mut bytes = SST.to_vec();
        bytes[3] ^= 0x40;
        bytes
    }

    /// A previous run's database directory holding an identical copy of the SST.
    fn local_copy(task_dir: &Path) {
        let old = task_dir.join("db-000001-aa");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("000001.sst"), SST).unwrap();
    }

    #[tokio::test]
    async fn a_rotten_store_copy_is_detected_even_with_a_local_copy() {
        let _serial = COUNTER.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::from_url("file:store", tmp.path()).unwrap();
        let manifest = stored_checkpoint(&store, &tmp.path().join("scratch")).await;
        std::fs::write(store.local_root().unwrap().join(SST_KEY), rotten()).unwrap();
        let task_dir = tmp.path().join("task-0000");
        local_copy(&task_dir);

        let before = crate::metrics::store_corrupt_files().get();
        let (db, stats) = restore_task_db(&store, &manifest, &task_dir, "000002-bb")
            .await
            .unwrap();
        assert_eq!(std::fs::read(db.join("000001.sst")).unwrap(), SST);
        assert_eq!(
            std::fs::read(db.join("OPTIONS-000007")).unwrap(),
            b"options"
        );
        assert_eq!(stats.corrupt_in_store, ["000001.sst"]);
        assert_eq!((stats.linked, stats.downloaded), (1, 1));
        assert_eq!(crate::metrics::store_corrupt_files().get(), before + 1);
        // The next checkpoint must upload it again rather than reference the rotten copy.
        assert!(stored_files(&manifest, &stats).is_empty());

        // Without the local copy the checkpoint is damaged, as before.
        std::fs::remove_dir_all(&task_dir).unwrap();
        let err = restore_task_db(&store, &manifest, &task_dir, "000003-cc")
            .await
            .unwrap_err();
        assert!(err.is_damage(), "{err}");
        assert!(err.to_string().contains(SST_KEY), "{err}");
        assert!(!task_dir.join("restoring-000003-cc").exists());
    }

    #[tokio::test]
    async fn a_sound_store_copy_is_used_and_stays_known() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::from_url("file:store", tmp.path()).unwrap();
        let manifest = stored_checkpoint(&store, &tmp.path().join("scratch")).await;
        let task_dir = tmp.path().join("task-0000");
        local_copy(&task_dir);
        let (db, stats) = restore_task_db(&store, &manifest, &task_dir, "000002-bb")
            .await
            .unwrap();
        assert_eq!(std::fs::read(db.join("000001.sst")).unwrap(), SST);
        assert!(stats.corrupt_in_store.is_empty());
        assert_eq!((stats.linked, stats.downloaded), (0, 2));
        assert_eq!(
            stored_files(&manifest, &stats)
                .iter()
                .map(|f| f.key.as_str())
                .collect::<Vec<_>>(),
            [SST_KEY]
        );
    }

    #[tokio::test]
    async fn object_stores_verify_the_stored_copy_and_link_the_local_one() {
        let _serial = COUNTER.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let inner = Arc::new(InMemory::new());
        let store = CheckpointStore::with_object_store("memory://t", inner.clone());
        let manifest = stored_checkpoint(&store, &tmp.path().join("scratch")).await;
        let task_dir = tmp.path().join("task-0000");
        local_copy(&task_dir);

        let (_, stats) = restore_task_db(&store, &manifest, &task_dir, "000002-bb")
            .await
            .unwrap();
        assert!(stats.corrupt_in_store.is_empty());
        assert_eq!((stats.linked, stats.downloaded), (1, 1));

        inner.put(&SST_KEY.into(), rotten().into()).await.unwrap();
        let before = crate::metrics::store_corrupt_files().get();
        let (db, stats) = restore_task_db(&store, &manifest, &task_dir, "000003-cc")
            .await
            .unwrap();
        assert_eq!(std::fs::read(db.join("000001.sst")).unwrap(), SST);
        assert_eq!(stats.corrupt_in_store, ["000001.sst"]);
        assert_eq!(crate::metrics::store_corrupt_files().get(), before + 1);
    }
}

//! Restoring a task's database from a committed checkpoint.
//!
//! Files are verified against the manifest's size and CRC32C. An SST that a previous local
//! database directory of the same task still holds with the same name, size and checksum is
//! hard-linked instead of copied (the common case after a process restart on the same
//! volume); everything else is downloaded. The new directory is built under a temporary name
//! and renamed when complete, so a crash mid-restore never leaves a half-restored database that
//! looks usable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::manifest::TaskManifest;
use super::{paths, CheckpointError};
use crate::storage::{file_crc32c, CheckpointStore};

/// How a task database was rebuilt.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreStats {
    /// Files hard-linked from a local copy.
    pub linked: u64,
    /// Files downloaded from the store.
    pub downloaded: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
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

/// Rebuilds `manifest`'s database into `task_dir/db-<db_id>` and returns that directory.
pub async fn restore_task_db(
    store: &CheckpointStore,
    manifest: &TaskManifest,
    task_dir: &Path,
    db_id: &str,
) -> Result<(PathBuf, RestoreStats), CheckpointError> {
    let final_dir = task_dir.join(format!("db-{db_id}"));
    let tmp_dir = task_dir.join(format!("restoring-{db_id}"));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::create_dir_all(&tmp_dir).map_err(local_err(&tmp_dir))?;

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

    // Every immutable file must be in the store even when a local copy lets us skip the
    // download: later checkpoints reference it instead of uploading it again. One listing per
    // task checks presence and size; content is checksummed whenever a file is downloaded.
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
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(CheckpointError::MissingInStore {
                key: file.key.clone(),
                expected: file.meta.size,
                found,
            });
        }
    }

    let mut stats = RestoreStats::default();
    for file in &manifest.files {
        let target = tmp_dir.join(&file.name);
        if paths::is_immutable_db_file(&file.name) {
            if let Some(candidate) = local.get(&file.name) {
                let same = file_crc32c(candidate).is_ok_and(|m| m == file.meta);
                if same && std::fs::hard_link(candidate, &target).is_ok() {
                    stats.linked += 1;
                    continue;
                }
            }
        }
        let fetched = if paths::is_immutable_db_file(&file.name) {
            store.link_or_download(&file.key, &target, file.meta).await
        } else {
            // MANIFEST and friends are rewritten by RocksDB: always a private copy.
            store.download_file(&file.key, &target, file.meta).await
        };
        if let Err(e) = fetched {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(e.into());
        }
        stats.downloaded += 1;
        stats.downloaded_bytes += file.meta.size;
    }
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp_dir, &final_dir).map_err(local_err(&final_dir))?;
    Ok((final_dir, stats))
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

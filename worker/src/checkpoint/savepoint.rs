//! Savepoints: self-contained, immutable, relocatable copies of a committed checkpoint.
//!
//! ```text
//! savepoints/sp-000000000042/_IN_PROGRESS.json        written first: when the copy started
//! savepoints/sp-000000000042/task-0000/000123.sst     every file of every task, own copies
//! savepoints/sp-000000000042/_SAVEPOINT.json          the manifest, written last, create-only
//! ```
//! Keys inside the manifest are relative to the savepoint directory, so the directory can be
//! copied or moved anywhere (another bucket, another disk) and restored from its new URL.
//! Checkpoint retention never looks inside `savepoints/`, and restoring never writes to a
//! savepoint: the first checkpoint after a restore uploads its own copies of every file.
//!
//! A savepoint interrupted mid-copy leaves a directory without `_SAVEPOINT.json`. Such a
//! directory is removed by a later [`create`] (of a newer checkpoint) once its `_IN_PROGRESS.json`
//! is older than [`ABANDONED_AFTER`] — an age bound rather than generation fencing, because the
//! offline `cairn-worker savepoint` command writes savepoints too and has no generation. It is
//! sound because a writer never completes a savepoint that took longer than [`WRITE_LIMIT`],
//! half the age bound: a directory that old cannot become a savepoint any more. Completed
//! savepoints are never touched, nor are incomplete directories without a marker (left by
//! Cairn versions that wrote none; they are logged).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::manifest::{self, ManifestFiles, TaskManifest, FORMAT_VERSION};
use super::{catalog, now_ms, CheckpointError};
use crate::storage::CheckpointStore;

/// Prefix of savepoints inside a job's checkpoint store.
pub const SAVEPOINTS: &str = "savepoints/";
/// File name of a savepoint manifest.
pub const SAVEPOINT_FILE: &str = "_SAVEPOINT.json";
/// File name of the marker of a savepoint being written.
pub const IN_PROGRESS_FILE: &str = "_IN_PROGRESS.json";
/// A savepoint whose copy took longer than this is not completed (its writer gives up).
pub const WRITE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// An incomplete savepoint directory whose marker is older than this is abandoned: its writer
/// is dead or has given up (see [`WRITE_LIMIT`]; the margin covers clock skew between hosts).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// The marker of a savepoint being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InProgress {
    /// When the writer started (ms since the epoch, its clock).
    pub started_at_ms: u64,
    /// Who writes it, for people.
    pub writer: String,
}

/// One task's part of a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointTask {
    /// Task id (= input partition) in the job that took it.
    pub task: u32,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
    /// Input partition -> watermark.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub watermarks: BTreeMap<u32, u64>,
    /// Files; keys relative to the savepoint directory.
    pub files: ManifestFiles,
}

/// The manifest of a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointManifest {
    /// Format version.
    pub format: u32,
    /// Unique id (name and creation time); checkpoints restored from it record it as origin.
    pub id: String,
    /// Directory name, `sp-<checkpoint>`.
    pub name: String,
    /// Creation time.
    pub created_at_ms: u64,
    /// The checkpoint it copies.
    pub source_checkpoint: u64,
    /// The spec of the job that took it.
    pub spec: cairn_contract::JobSpec,
    /// Its hash.
    pub spec_hash: String,
    /// N.
    pub partitions: u32,
    /// P.
    pub parallelism: u32,
    /// Task -> container at the time.
    pub assignment: BTreeMap<u32, u32>,
    /// Name of the task whose state this is.
    pub task_name: String,
    /// State version the task declared (see `StreamTask::state_version`).
    pub state_version: u32,
    /// One entry per task.
    pub tasks: Vec<SavepointTask>,
    /// Total bytes.
    pub total_bytes: u64,
}

impl SavepointManifest {
    /// Task manifests whose keys point into `location`, for restore.
    pub fn task_manifests(&self, location: &SavepointLocation) -> Vec<TaskManifest> {
        self.tasks
            .iter()
            .map(|t| TaskManifest {
                format: FORMAT_VERSION,
                checkpoint: self.source_checkpoint,
                generation: 0,
                task: t.task,
                db_id: format!("savepoint-{}", self.name),
                offsets: t.offsets.clone(),
                watermarks: t.watermarks.clone(),
                files: t.files.with_key_prefix(&location.prefix),
                uploaded_bytes: 0,
                new_sst_bytes: 0,
                created_at_ms: self.created_at_ms,
            })
            .collect()
    }
}

/// Where a savepoint is: a store and the key prefix of its directory (empty when the store is
/// rooted at the savepoint directory itself).
#[derive(Debug, Clone)]
pub struct SavepointLocation {
    /// The store holding it.
    pub store: CheckpointStore,
    /// Its directory inside the store, ending in `/` (or empty).
    pub prefix: String,
}

impl SavepointLocation {
    /// The savepoint at a URL (its directory), opened for reading: nothing is created. A
    /// directory that does not exist is reported by [`Self::load`], naming it; until then the
    /// location only gives its URL (a job that has moved past its savepoint never reads it).
    pub fn from_url(url: &str, base_dir: &std::path::Path) -> Result<Self, CheckpointError> {
        Ok(SavepointLocation {
            store: CheckpointStore::open_unchecked(url, base_dir)?,
            prefix: String::new(),
        })
    }

    /// A URL for it, when the store is a directory (file://).
    pub fn url(&self) -> String {
        match self.store.local_root() {
            Some(root) => format!("file://{}", root.join(&self.prefix).display())
                .trim_end_matches('/')
                .to_owned(),
            None => format!(
                "{}/{}",
                self.store.url().trim_end_matches('/'),
                self.prefix.trim_end_matches('/')
            ),
        }
    }

    /// Reads and checks the manifest: its format, its file lists (see [`ManifestFiles`]) and
    /// that no task appears twice.
    pub async fn load(&self) -> Result<SavepointManifest, CheckpointError> {
        let key = format!("{}{SAVEPOINT_FILE}", self.prefix);
        let bytes = self.store.get_bytes(&key).await.map_err(|e| {
            let missing_dir = self
                .store
                .local_root()
                .map(|root| match self.prefix.trim_end_matches('/') {
                    "" => root.to_path_buf(),
                    dir => root.join(dir),
                })
                .filter(|dir| !dir.is_dir());
            match missing_dir {
                Some(dir) if e.is_not_found() => CheckpointError::NoSuchSavepoint {
                    location: self.url(),
                    path: dir,
                },
                _ if e.is_not_found() => CheckpointError::NoSavepoint {
                    location: self.url(),
                },
                _ => e.into(),
            }
        })?;
        let named = format!("{}/{SAVEPOINT_FILE}", self.url());
        let manifest: SavepointManifest = manifest::parse(&named, &bytes)?;
        let mut seen = BTreeSet::new();
        if let Some(t) = manifest.tasks.iter().find(|t| !seen.insert(t.task)) {
            return Err(CheckpointError::BadSavepoint {
                location: named,
                reason: format!("task {} is listed twice in tasks[]", t.task),
            });
        }
        Ok(manifest)
    }
}

/// Name of the savepoint of checkpoint `id`.
pub fn name_for(id: u64) -> String {
    format!("sp-{id:012}")
}

/// Copies committed checkpoint `id` of `store` into `savepoints/sp-<id>/` and writes its
/// manifest (create-only). `task_name`/`state_version` describe the state for later upgrades.
/// Then removes abandoned incomplete savepoints of older checkpoints (see the module doc);
/// failing to do so is logged, never an error of this savepoint.
pub async fn create(
    store: &CheckpointStore,
    id: u64,
    state_version: u32,
) -> Result<(SavepointLocation, SavepointManifest), CheckpointError> {
    let started = Instant::now();
    let (commit, mut manifests) = catalog::load_checkpoint(store, id).await?;
    manifests.sort_by_key(|m| m.task);
    let name = name_for(id);
    let location = SavepointLocation {
        store: store.clone(),
        prefix: format!("{SAVEPOINTS}{name}/"),
    };
    let key = format!("{}{SAVEPOINT_FILE}", location.prefix);
    // A completed savepoint is immutable: not even a marker is written into it.
    if store.exists(&key).await? {
        return Err(crate::storage::StorageError::AlreadyExists { key }.into());
    }
    let marker_key = format!("{}{IN_PROGRESS_FILE}", location.prefix);
    let marker = InProgress {
        started_at_ms: now_ms(),
        writer: format!("pid {}", std::process::id()),
    };
    let marker_bytes = serde_json::to_vec(&marker).expect("markers always serialise");
    store.put_bytes(&marker_key, marker_bytes.into()).await?;
    let mut pairs = Vec::new();
    let mut tasks = Vec::new();
    for m in &manifests {
        let mut files = Vec::new();
        for f in m.files.iter() {
            let rel = format!("task-{:04}/{}", m.task, f.name);
            pairs.push((f.key.clone(), format!("{}{rel}", location.prefix)));
            files.push(super::manifest::ManifestFile {
                key: rel,
                ..f.clone()
            });
        }
        let files = ManifestFiles::new(files).map_err(|e| CheckpointError::BadSavepoint {
            location: location.url(),
            reason: e.to_string(),
        })?;
        tasks.push(SavepointTask {
            task: m.task,
            offsets: m.offsets.clone(),
            watermarks: m.watermarks.clone(),
            files,
        });
    }
    store.copy_within(&pairs).await?;
    if started.elapsed() > WRITE_LIMIT {
        // A later savepoint may already treat this directory as abandoned and remove it.
        return Err(CheckpointError::BadSavepoint {
            location: location.url(),
            reason: format!(
                "copying its files took {:?}, longer than the limit of {WRITE_LIMIT:?}; it was not completed (a later savepoint removes the directory)",
                started.elapsed()
            ),
        });
    }
    let created_at_ms = now_ms();
    let manifest = SavepointManifest {
        format: FORMAT_VERSION,
        id: format!("{name}@{created_at_ms}"),
        name,
        created_at_ms,
        source_checkpoint: id,
        spec_hash: commit.spec_hash.clone(),
        partitions: commit.partitions,
        parallelism: commit.parallelism,
        assignment: commit.tasks.iter().map(|t| (t.task, t.container)).collect(),
        task_name: commit.spec.task.name.clone(),
        state_version,
        spec: commit.spec,
        tasks,
        total_bytes: manifests.iter().map(|m| m.total_bytes()).sum(),
    };
    store
        .put_bytes_create_only(&key, manifest::to_bytes(&manifest))
        .await?;
    if let Err(e) = store.delete(&marker_key).await {
        tracing::warn!(error = %e, key = %marker_key, "could not remove the in-progress marker of a completed savepoint");
    }
    match remove_abandoned(store, id).await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "removed abandoned incomplete savepoints")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not remove abandoned incomplete savepoints"),
    }
    Ok((location, manifest))
}

/// Removes the incomplete savepoint directories (no `_SAVEPOINT.json`) of checkpoints older
/// than `below` whose in-progress marker is older than [`ABANDONED_AFTER`]; returns their
/// names. Files go first and the marker last, so an interrupted removal is finished by the
/// next one.
pub async fn remove_abandoned(
    store: &CheckpointStore,
    below: u64,
) -> Result<Vec<String>, CheckpointError> {
    let mut dirs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let listing = store.list(SAVEPOINTS).await?;
    for obj in &listing {
        let rest = &obj.key[SAVEPOINTS.len()..];
        if let Some((dir, _)) = rest.split_once('/') {
            dirs.entry(dir).or_default().push(&obj.key);
        }
    }
    let now = now_ms();
    let mut removed = Vec::new();
    for (dir, keys) in dirs {
        let id = dir.strip_prefix("sp-").and_then(|n| n.parse::<u64>().ok());
        if id.is_none_or(|id| id >= below) {
            continue; // not ours by name, or not older than the savepoint being written
        }
        let prefix = format!("{SAVEPOINTS}{dir}/");
        let manifest_key = format!("{prefix}{SAVEPOINT_FILE}");
        let marker_key = format!("{prefix}{IN_PROGRESS_FILE}");
        if keys.contains(&manifest_key.as_str()) {
            continue; // completed: never touched
        }
        if !keys.contains(&marker_key.as_str()) {
            tracing::warn!(savepoint = %prefix, "incomplete savepoint directory without an in-progress marker (left by an older Cairn?); not removed: delete it by hand if no savepoint is being written to it");
            continue;
        }
        let marker: InProgress = match store.get_bytes(&marker_key).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(key = %marker_key, error = %e, "unreadable in-progress marker; the savepoint directory is not removed");
                    continue;
                }
            },
            Err(e) if e.is_not_found() => continue, // completed or removed meanwhile
            Err(e) => return Err(e.into()),
        };
        let age_ms = now.saturating_sub(marker.started_at_ms);
        if u128::from(age_ms) < ABANDONED_AFTER.as_millis() {
            continue; // its writer may still be copying
        }
        // Written after the listing? Then it completed after all: keep it.
        if store.exists(&manifest_key).await? {
            continue;
        }
        for key in keys.iter().filter(|k| **k != marker_key) {
            store.delete(key).await?;
        }
        store.delete(&marker_key).await?;
        removed.push(dir.to_owned());
    }
    Ok(removed)
}

/// Savepoints stored in a job's store, oldest first.
pub async fn list(
    store: &CheckpointStore,
) -> Result<Vec<(SavepointLocation, SavepointManifest)>, CheckpointError> {
    let mut out = Vec::new();
    for obj in store.list(SAVEPOINTS).await? {
        if let Some(dir) = obj.key.strip_suffix(SAVEPOINT_FILE) {
            let location = SavepointLocation {
                store: store.clone(),
                prefix: dir.to_owned(),
            };
            out.push((location.clone(), location.load().await?));
        }
    }
    out.sort_by_key(|(_, m)| m.created_at_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    async fn put(store: &CheckpointStore, key: &str, data: &[u8]) {
        store
            .put_bytes(key, Bytes::copy_from_slice(data))
            .await
            .unwrap();
    }

    async fn marker(store: &CheckpointStore, dir: &str, age: Duration) {
        let m = InProgress {
            started_at_ms: now_ms() - age.as_millis() as u64,
            writer: "pid 1".into(),
        };
        put(
            store,
            &format!("{SAVEPOINTS}{dir}/{IN_PROGRESS_FILE}"),
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
    }

    #[tokio::test]
    async fn only_abandoned_incomplete_savepoints_of_older_checkpoints_are_removed() {
        let store = CheckpointStore::in_memory();
        let old = ABANDONED_AFTER + Duration::from_secs(60);
        let fresh = Duration::from_secs(60);
        // Abandoned: incomplete, marker older than the bound, older checkpoint.
        marker(&store, "sp-000000000001", old).await;
        put(
            &store,
            "savepoints/sp-000000000001/task-0000/000001.sst",
            b"x",
        )
        .await;
        // Its writer may still be copying.
        marker(&store, "sp-000000000002", fresh).await;
        put(
            &store,
            "savepoints/sp-000000000002/task-0000/000001.sst",
            b"x",
        )
        .await;
        // No marker: written by a version that wrote none, or by someone else.
        put(
            &store,
            "savepoints/sp-000000000003/task-0000/000001.sst",
            b"x",
        )
        .await;
        // Completed (its marker was not removed before a crash): never touched.
        marker(&store, "sp-000000000004", old).await;
        put(&store, "savepoints/sp-000000000004/_SAVEPOINT.json", b"{}").await;
        // Not older than the savepoint being written.
        marker(&store, "sp-000000000009", old).await;
        // Not a name Cairn gives.
        marker(&store, "mine", old).await;

        let before: Vec<String> = store
            .list(SAVEPOINTS)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            remove_abandoned(&store, 9).await.unwrap(),
            ["sp-000000000001"]
        );
        let after: Vec<String> = store
            .list(SAVEPOINTS)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let expected: Vec<String> = before
            .into_iter()
            .filter(|k| !k.starts_with("savepoints/sp-000000000001/"))
            .collect();
        assert_eq!(after, expected);
        assert_eq!(
            remove_abandoned(&store, 9).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_savepoint_listing_a_task_twice_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sp");
        std::fs::create_dir_all(&dir).unwrap();
        let spec = cairn_contract::JobSpec::from_yaml_str(
            "name: t\ninput:\n  type: generator\n  partitions: 1\ntask:\n  name: count\n",
        )
        .unwrap();
        let task = serde_json::json!({ "task": 0, "offsets": {}, "files": [] });
        let doc = serde_json::json!({
            "format": FORMAT_VERSION, "id": "sp-1@1", "name": "sp-1", "createdAtMs": 1,
            "sourceCheckpoint": 1, "spec": spec, "specHash": "h", "partitions": 1,
            "parallelism": 1, "assignment": {}, "taskName": "count", "stateVersion": 1,
            "tasks": [task.clone(), task], "totalBytes": 0,
        });
        std::fs::write(dir.join(SAVEPOINT_FILE), doc.to_string()).unwrap();
        let location =
            SavepointLocation::from_url(&format!("file://{}", dir.display()), tmp.path()).unwrap();
        let err = location.load().await.unwrap_err().to_string();
        assert!(err.contains("task 0 is listed twice"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_missing_savepoint_directory_is_named_and_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("typo/savepoints/sp-1");
        let url = format!("file://{}", dir.display());
        let location = SavepointLocation::from_url(&url, tmp.path()).unwrap();
        assert_eq!(location.url(), url);
        let err = location.load().await.unwrap_err();
        assert!(
            matches!(&err, CheckpointError::NoSuchSavepoint { path, .. } if *path == dir),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("no such savepoint"), "{err}");
        assert!(!tmp.path().join("typo").exists());
    }
}

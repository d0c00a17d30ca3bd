//! Savepoints: self-contained, immutable, relocatable copies of a committed checkpoint.
//!
//! ```text
//! savepoints/sp-000000000042/_SAVEPOINT.json          the manifest, written last, create-only
//! savepoints/sp-000000000042/task-0000/000123.sst     every file of every task, own copies
//! ```
//! Keys inside the manifest are relative to the savepoint directory, so the directory can be
//! copied or moved anywhere (another bucket, another disk) and restored from its new URL.
//! Checkpoint retention never looks inside `savepoints/`, and restoring never writes to a
//! savepoint: the first checkpoint after a restore uploads its own copies of every file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::{self, ManifestFile, TaskManifest, FORMAT_VERSION};
use super::{catalog, now_ms, CheckpointError};
use crate::storage::CheckpointStore;

/// Prefix of savepoints inside a job's checkpoint store.
pub const SAVEPOINTS: &str = "savepoints/";
/// File name of a savepoint manifest.
pub const SAVEPOINT_FILE: &str = "_SAVEPOINT.json";

/// One task's part of a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointTask {
    /// Task id (= input partition) in the job that took it.
    pub task: u32,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
    /// Files; keys relative to the savepoint directory.
    pub files: Vec<ManifestFile>,
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
    pub spec: cairn_spec::JobSpec,
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
                files: t
                    .files
                    .iter()
                    .map(|f| ManifestFile {
                        key: format!("{}{}", location.prefix, f.key),
                        ..f.clone()
                    })
                    .collect(),
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
    /// The savepoint at a URL (its directory).
    pub fn from_url(url: &str, base_dir: &std::path::Path) -> Result<Self, CheckpointError> {
        Ok(SavepointLocation {
            store: CheckpointStore::from_url(url, base_dir)?,
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

    /// Reads and checks the manifest.
    pub async fn load(&self) -> Result<SavepointManifest, CheckpointError> {
        let key = format!("{}{SAVEPOINT_FILE}", self.prefix);
        let bytes = self.store.get_bytes(&key).await.map_err(|e| {
            if e.is_not_found() {
                CheckpointError::NoSavepoint {
                    location: self.url(),
                }
            } else {
                e.into()
            }
        })?;
        manifest::parse(&key, &bytes)
    }
}

/// Name of the savepoint of checkpoint `id`.
pub fn name_for(id: u64) -> String {
    format!("sp-{id:012}")
}

/// Copies committed checkpoint `id` of `store` into `savepoints/sp-<id>/` and writes its
/// manifest (create-only). `task_name`/`state_version` describe the state for later upgrades.
pub async fn create(
    store: &CheckpointStore,
    id: u64,
    state_version: u32,
) -> Result<(SavepointLocation, SavepointManifest), CheckpointError> {
    let (commit, mut manifests) = catalog::load_checkpoint(store, id).await?;
    manifests.sort_by_key(|m| m.task);
    let name = name_for(id);
    let location = SavepointLocation {
        store: store.clone(),
        prefix: format!("{SAVEPOINTS}{name}/"),
    };
    let mut pairs = Vec::new();
    let mut tasks = Vec::new();
    for m in &manifests {
        let mut files = Vec::new();
        for f in &m.files {
            let rel = format!("task-{:04}/{}", m.task, f.name);
            pairs.push((f.key.clone(), format!("{}{rel}", location.prefix)));
            files.push(ManifestFile {
                key: rel,
                ..f.clone()
            });
        }
        tasks.push(SavepointTask {
            task: m.task,
            offsets: m.offsets.clone(),
            files,
        });
    }
    store.copy_within(&pairs).await?;
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
    let key = format!("{}{SAVEPOINT_FILE}", location.prefix);
    store
        .put_bytes_create_only(&key, manifest::to_bytes(&manifest))
        .await?;
    Ok((location, manifest))
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

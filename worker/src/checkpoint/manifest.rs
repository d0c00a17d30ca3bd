//! The JSON documents of a checkpoint: one manifest per task and the job's commit record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CheckpointError;
use crate::storage::FileMeta;

/// Format version written by this worker; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;

/// One file of a task's database in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// File name inside the RocksDB directory.
    pub name: String,
    /// Where it is in the store.
    pub key: String,
    /// Size and checksum, verified on restore.
    #[serde(flatten)]
    pub meta: FileMeta,
}

/// What one task contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManifest {
    /// [`FORMAT_VERSION`] at writing.
    pub format: u32,
    /// Checkpoint id.
    pub checkpoint: u64,
    /// Generation of the process that wrote it.
    pub generation: u64,
    /// Task id (= input partition).
    pub task: u32,
    /// The RocksDB instance the files come from.
    pub db_id: String,
    /// Input partition -> next offset to read.
    pub offsets: BTreeMap<u32, u64>,
    /// Every file of the database at the checkpoint.
    pub files: Vec<ManifestFile>,
    /// Bytes uploaded for this checkpoint (new SSTs + small files).
    pub uploaded_bytes: u64,
    /// Bytes of SSTs that were new since the task's previous checkpoint.
    pub new_sst_bytes: u64,
    /// When the manifest was written.
    pub created_at_ms: u64,
}

impl TaskManifest {
    /// Total bytes of the task's state files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.meta.size).sum()
    }
}

/// A task's entry in the commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommittedTask {
    /// Task id.
    pub task: u32,
    /// Container (worker) that ran it.
    pub container: u32,
    /// Key of its manifest.
    pub manifest: String,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
}

/// The commit record: its presence makes checkpoint `checkpoint` usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// [`FORMAT_VERSION`] at writing.
    pub format: u32,
    /// Checkpoint id.
    pub checkpoint: u64,
    /// Generation of the committing process.
    pub generation: u64,
    /// When the coordinator triggered it.
    pub triggered_at_ms: u64,
    /// When it was committed.
    pub committed_at_ms: u64,
    /// The job spec in force.
    pub spec: cairn_spec::JobSpec,
    /// Its hash.
    pub spec_hash: String,
    /// N.
    pub partitions: u32,
    /// P.
    pub parallelism: u32,
    /// One entry per task.
    pub tasks: Vec<CommittedTask>,
    /// Total bytes of state referenced.
    pub total_bytes: u64,
    /// Bytes uploaded by this checkpoint.
    pub uploaded_bytes: u64,
    /// Bytes of new SSTs since the previous checkpoint.
    pub new_sst_bytes: u64,
    /// URL of the savepoint this lineage of checkpoints was restored from, if any: a job whose
    /// spec names that savepoint resumes from its own checkpoints instead of the savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Parses a manifest-like document, checking its format version.
pub fn parse<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, CheckpointError> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|source| CheckpointError::BadManifest {
            key: key.to_owned(),
            source,
        })?;
    if version.format > FORMAT_VERSION {
        return Err(CheckpointError::FormatTooNew {
            key: key.to_owned(),
            found: version.format,
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| CheckpointError::BadManifest {
        key: key.to_owned(),
        source,
    })
}

/// Serialises a manifest-like document.
pub fn to_bytes<T: Serialize>(doc: &T) -> bytes::Bytes {
    serde_json::to_vec_pretty(doc)
        .expect("manifests always serialise")
        .into()
}

//! Coordinated incremental checkpoints (seed section 3, architecture decision 3): the store-side
//! mechanics. The coordinator that drives them lives in the runtime
//! (`runtime::coordinator`), which uses this module and is never used by it.
//!
//! * [`upload`] is a task's asynchronous phase: snapshot, upload only the files the store lacks,
//!   write the task manifest, acknowledge.
//! * [`restore`] rebuilds tasks from the latest usable committed checkpoint; [`start`] plans
//!   where a run starts (its checkpoint, a savepoint, a repartition, or nothing).
//! * [`prefetch`] is a warm standby's copy of the files it may take over.
//! * [`retention`] classifies every stored file, then deletes only what no retained checkpoint
//!   references.
//! * [`paths`], [`manifest`], [`catalog`] and [`generation`] are the store layout, the file
//!   formats, the read side and the fencing of zombie processes.

pub mod catalog;
pub mod generation;
pub mod manifest;
pub mod paths;
pub mod prefetch;
pub mod repartition;
pub mod restore;
pub mod retention;
pub mod savepoint;
pub mod start;
pub mod upload;

use crate::storage::StorageError;

/// Errors of the checkpoint protocol.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The durable store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A manifest or commit record cannot be parsed.
    #[error(
        "{key} is not a valid Cairn manifest ({source}); the checkpoint that uses it is unusable"
    )]
    BadManifest {
        /// The stored object.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest was written by a newer Cairn.
    #[error("{key} has format version {found}, this worker reads up to {supported}; upgrade the worker image")]
    FormatTooNew {
        /// The stored object.
        key: String,
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// A newer process of this job has started: this one must not commit.
    #[error("fenced: generation {newer} of this job started after ours ({ours}); this process stops without committing")]
    Fenced {
        /// Our generation.
        ours: u64,
        /// The newer one.
        newer: u64,
    },
    /// An id read from the store (a generation claim, a checkpoint directory, a savepoint's
    /// source checkpoint) is the largest a 64-bit id can be, so no later id is left: refused
    /// instead of wrapping around to 0 (which would reuse old ids) or panicking.
    #[error("{key} holds {what} {id}, the largest id there is, so this job cannot number a newer one; {fix}")]
    IdsExhausted {
        /// The store key (or savepoint manifest) the id was read from.
        key: String,
        /// Which id: "generation", "checkpoint", "source checkpoint".
        what: &'static str,
        /// The id.
        id: u64,
        /// How to recover.
        fix: &'static str,
    },
    /// Snapshotting local state failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// Making sealed output durable failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Local file handling failed.
    #[error("local checkpoint files at {path}: {source}")]
    Local {
        /// The path involved.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file the checkpoint references is missing from the store or has the wrong size.
    #[error("checkpoint file {key} is {}; the checkpoint that uses it is unusable", match found { Some(size) => format!("{size} bytes in the store, expected {expected}"), None => "missing from the store".to_owned() })]
    MissingInStore {
        /// The stored object.
        key: String,
        /// Size the manifest records.
        expected: u64,
        /// Size found, if any.
        found: Option<u64>,
    },
    /// A named checkpoint does not exist or is not committed.
    #[error("checkpoint {id} is not a committed checkpoint of the store {store}; list them with `cairn-worker checkpoints {store}`")]
    NotCommitted {
        /// The id asked for.
        id: u64,
        /// The store URL.
        store: String,
    },
    /// No savepoint manifest at the given location.
    #[error("no savepoint at {location} (no _SAVEPOINT.json): give the URL of a savepoint directory, e.g. file://./.cairn/checkpoints/savepoints/sp-000000000012; list them with `cairn-worker savepoints <store-url>`")]
    NoSavepoint {
        /// Where it was looked for.
        location: String,
    },
    /// A savepoint is malformed, or could not be completed.
    #[error("savepoint {location}: {reason}")]
    BadSavepoint {
        /// Its URL (or manifest).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The directory a savepoint URL names does not exist.
    #[error("no such savepoint: {} does not exist (from {location}); give the URL of a savepoint directory, e.g. file://./.cairn/checkpoints/savepoints/sp-000000000012; list them with `cairn-worker savepoints <store-url>`", path.display())]
    NoSuchSavepoint {
        /// The URL.
        location: String,
        /// The missing directory.
        path: std::path::PathBuf,
    },
    /// The savepoint's state does not belong to this task.
    #[error("the savepoint holds state of task '{saved}' (state version {saved_version}), this job runs '{now}' (state version {now_version}); restore it with the matching task, or set restore.allowStateDrop: true to start with empty state and the savepoint's offsets")]
    IncompatibleState {
        /// Task in the savepoint.
        saved: String,
        /// Its state version.
        saved_version: u32,
        /// Task now.
        now: String,
        /// Its state version.
        now_version: u32,
    },
    /// Re-splitting state failed.
    #[error("repartitioning state: {0}")]
    Repartition(String),
    /// No usable checkpoint could be restored although committed ones exist.
    #[error("no committed checkpoint could be restored; tried {tried:?}: {last}")]
    NothingRestorable {
        /// Ids tried, newest first.
        tried: Vec<u64>,
        /// The last failure.
        last: String,
    },
}

impl CheckpointError {
    /// True when the checkpoint itself is damaged (a file missing, corrupt or unparsable), as
    /// opposed to a passing failure to reach it: only then is it marked unusable.
    pub fn is_damage(&self) -> bool {
        match self {
            CheckpointError::MissingInStore { .. } | CheckpointError::BadManifest { .. } => true,
            CheckpointError::Storage(e) => {
                e.is_not_found() || matches!(e, crate::storage::StorageError::Corrupt { .. })
            }
            _ => false,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

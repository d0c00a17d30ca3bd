//! Errors of the checkpoint file store.
//!
//! Every variant names the key (or local path) it is about, because the reader of a failed
//! checkpoint or restore has to find that file.

use std::io;

use super::FileMeta;

/// Why a checkpoint store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store URL has a scheme or form this build does not support.
    #[error(
        "unsupported checkpoint store URL {url:?}: use `file://./<dir>` (relative to the base \
         directory), `file:///<absolute dir>`, `file:<dir>`, `s3://<bucket>[/<prefix>]`, \
         `gs://<bucket>[/<prefix>]`, `az://<container>[/<prefix>]`, \
         `abfss://<container>@<account>.dfs.core.windows.net[/<prefix>]`, \
         `hdfs://<namenode>[:<port>]/<path>`, `hdfs:///<path>` (default file system of \
         HADOOP_CONF_DIR), or `memory://[name]` (in-process, for tests)"
    )]
    UnsupportedUrl {
        /// The URL as it was given.
        url: String,
    },
    /// A store opened for reading does not exist (nothing is created for a reader).
    #[error(
        "no such checkpoint store or savepoint: {} {problem} (from the URL {url:?}); check the \
         URL (list savepoints with `cairn-worker savepoints <store-url>`)", path.display()
    )]
    NoSuchStore {
        /// The URL as it was given.
        url: String,
        /// The directory it names.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A connection setting of a remote store (an environment variable or the Hadoop
    /// configuration, see docs/stores.md) is unusable.
    #[error("{setting}: {problem}; {fix}")]
    Config {
        /// The variable.
        setting: String,
        /// What is wrong with it.
        problem: String,
        /// What to set instead.
        fix: String,
    },
    /// A key (or list prefix) is not a well-formed relative `/`-separated path.
    #[error("invalid checkpoint store key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key or prefix.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No object is stored under the key.
    #[error("checkpoint store has no file {key:?}")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A create-only put found the key already present (another writer won, or a fenced-off
    /// writer is still running).
    #[error("checkpoint store file {key:?} already exists (create-only write refused)")]
    AlreadyExists {
        /// The key that already exists.
        key: String,
    },
    /// An upload found the key already stored with different content. Stored files are
    /// immutable once published, because committed manifests record their size and CRC32C, so
    /// the upload is refused rather than silently breaking those checkpoints.
    #[error(
        "checkpoint store file {key:?} already exists with different content (stored: \
         {existing}; uploading: {uploading}); refusing to overwrite a file that committed \
         checkpoints may reference"
    )]
    Conflict {
        /// The key being uploaded.
        key: String,
        /// Size and CRC32C of what is stored.
        existing: FileMeta,
        /// Size and CRC32C of the file that was to be uploaded.
        uploading: FileMeta,
    },
    /// A stored file does not have the size and CRC32C that its manifest recorded.
    #[error(
        "checkpoint store file {key:?} is corrupt: expected {expected}, found {actual}; the \
         checkpoint that uses this file is unusable"
    )]
    Corrupt {
        /// The corrupt file.
        key: String,
        /// Size and CRC32C recorded in the manifest.
        expected: FileMeta,
        /// Size and CRC32C of the bytes actually read.
        actual: FileMeta,
    },
    /// A filesystem operation failed.
    #[error("I/O error on {key_or_path}: {source}")]
    Io {
        /// The store key, or the local path when the failure is on a local file.
        key_or_path: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The object store backend failed (after retries, for transient failures).
    #[error("object store error on {key:?}: {source}")]
    ObjectStore {
        /// The key (or list prefix) of the failed request.
        key: String,
        /// The underlying failure.
        #[source]
        source: object_store::Error,
    },
}

impl StorageError {
    /// `Ok` when a file already stored under `key` is the one being written (an idempotent
    /// retry), [`StorageError::Conflict`] otherwise.
    pub(crate) fn same_or_conflict(
        key: &str,
        existing: FileMeta,
        uploading: FileMeta,
    ) -> Result<(), StorageError> {
        if existing == uploading {
            Ok(())
        } else {
            Err(StorageError::Conflict {
                key: key.to_owned(),
                existing,
                uploading,
            })
        }
    }

    /// True when the error says the key does not exist, so callers can treat a missing object
    /// (e.g. no manifest yet) differently from a failing store.
    pub fn is_not_found(&self) -> bool {
        match self {
            StorageError::NotFound { .. } => true,
            StorageError::ObjectStore { source, .. } => {
                matches!(source, object_store::Error::NotFound { .. })
            }
            _ => false,
        }
    }

    /// True for failures that may succeed when retried (network hiccups reported by the object
    /// store). Missing, existing, conflicting, corrupt or invalid objects are never transient.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            StorageError::ObjectStore { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            _ => false,
        }
    }

    /// An I/O error on a local path.
    pub(crate) fn io_path(path: &std::path::Path, source: io::Error) -> Self {
        StorageError::Io {
            key_or_path: path.display().to_string(),
            source,
        }
    }

    /// Maps an object store error on `key` to the matching variant.
    pub(crate) fn object(key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists {
                key: key.to_owned(),
            },
            source => StorageError::ObjectStore {
                key: key.to_owned(),
                source,
            },
        }
    }
}

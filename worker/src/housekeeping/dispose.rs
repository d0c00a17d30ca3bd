//! Disposing of one savepoint directory, crash-safely: a pod killed at any point leaves a
//! directory that is never listed or restored as a savepoint, and that the next disposal
//! recognises and finishes.
//!
//! 1. `_DISPOSING.json` is written: from now on the directory is being disposed of, whatever
//!    else it holds (a retry skips the checks below, which the first attempt passed);
//! 2. `_SAVEPOINT.json` is deleted: the directory is no longer a savepoint (`savepoints` does
//!    not list it, a restore refuses it), although its files are still there;
//! 3. every other file is deleted;
//! 4. the marker is deleted, last.
//!
//! A directory is only disposed of if it is a Cairn savepoint: it holds `_SAVEPOINT.json`,
//! `_IN_PROGRESS.json` or the marker. One whose `_IN_PROGRESS.json` is younger than
//! `savepoint::ABANDONED_AFTER` (and that has no `_SAVEPOINT.json`) may still be being copied:
//! deleting its files would let its writer complete a savepoint with files missing, so it is
//! refused until its writer has given up.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::checkpoint::savepoint::{InProgress, ABANDONED_AFTER, IN_PROGRESS_FILE, SAVEPOINT_FILE};
use crate::checkpoint::{now_ms, CheckpointError};
use crate::storage::{CheckpointStore, ObjectInfo, StorageError};

/// The marker of a savepoint directory being disposed of.
pub const DISPOSING_FILE: &str = "_DISPOSING.json";

/// Largest `_IN_PROGRESS.json` read (Cairn writes about 60 bytes).
const MAX_MARKER_LEN: u64 = 64 << 10;

/// Deletes in flight at once on an object store (one request each). A `file://` store deletes
/// one at a time: each delete also removes the directories it empties, which two concurrent
/// deletes in one directory would race on.
const OBJECT_DELETES_IN_FLIGHT: usize = 16;

/// What disposing of a directory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposed {
    /// Its files are deleted.
    Done {
        /// How many.
        files: usize,
        /// Their total size.
        bytes: u64,
    },
    /// It held nothing (already disposed of, or never there).
    AlreadyGone,
}

/// Why a directory was not disposed of.
#[derive(Debug, thiserror::Error)]
pub enum DisposeError {
    /// It is not a Cairn savepoint: nothing was deleted.
    #[error("{0}")]
    NotASavepoint(String),
    /// It may still be being written: nothing was deleted; retry later.
    #[error("{0}")]
    StillWriting(String),
    /// The store failed (maybe after some files were deleted: a retry finishes).
    #[error(transparent)]
    Store(#[from] CheckpointError),
}

impl From<StorageError> for DisposeError {
    fn from(e: StorageError) -> Self {
        DisposeError::Store(e.into())
    }
}

/// The marker's content: for people who find a half-disposed directory.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Disposing {
    started_at_ms: u64,
    by: String,
}

/// Disposes of the savepoint directory `prefix` (`…savepoints/sp-<id>/`) of `store` (see the
/// module doc). Deletes only keys under `prefix`.
pub async fn dispose_dir(store: &CheckpointStore, prefix: &str) -> Result<Disposed, DisposeError> {
    debug_assert!(prefix.ends_with('/'));
    let listing = store.list(prefix).await?;
    if listing.is_empty() {
        return Ok(Disposed::AlreadyGone);
    }
    let key = |file: &str| format!("{prefix}{file}");
    let find = |file: &str| listing.iter().find(|o| o.key == key(file));
    let marker = key(DISPOSING_FILE);
    if find(DISPOSING_FILE).is_none() {
        check_disposable(store, prefix, &listing).await?;
        let body = Disposing {
            started_at_ms: now_ms(),
            by: format!("cairn-worker store, pid {}", std::process::id()),
        };
        let body = serde_json::to_vec(&body).expect("markers always serialise");
        store.put_bytes(&marker, body.into()).await?;
    }
    // No longer a savepoint from here on, even if the pod dies now.
    if find(SAVEPOINT_FILE).is_some() {
        store.delete(&key(SAVEPOINT_FILE)).await?;
    }
    let rest: Vec<&ObjectInfo> = listing
        .iter()
        .filter(|o| o.key != marker && o.key != key(SAVEPOINT_FILE))
        .collect();
    let in_flight = if store.local_root().is_some() {
        1
    } else {
        OBJECT_DELETES_IN_FLIGHT
    };
    futures::stream::iter(rest.iter().map(|o| store.delete(&o.key)))
        .buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await?;
    store.delete(&marker).await?;
    Ok(Disposed::Done {
        files: listing.len(),
        bytes: listing.iter().map(|o| o.size).sum(),
    })
}

/// Checks that a directory without a disposal marker may be disposed of: it is a Cairn
/// savepoint, and not one that may still be being written.
async fn check_disposable(
    store: &CheckpointStore,
    prefix: &str,
    listing: &[ObjectInfo],
) -> Result<(), DisposeError> {
    let find = |file: &str| listing.iter().find(|o| o.key == format!("{prefix}{file}"));
    if find(SAVEPOINT_FILE).is_some() {
        return Ok(()); // complete: a leftover _IN_PROGRESS.json does not matter
    }
    let Some(in_progress) = find(IN_PROGRESS_FILE) else {
        return Err(DisposeError::NotASavepoint(format!(
            "it holds {} file(s) but no {SAVEPOINT_FILE}, {IN_PROGRESS_FILE} or {DISPOSING_FILE}, \
             so it is not a Cairn savepoint; nothing was deleted (delete it by hand if it is \
             not needed)",
            listing.len()
        )));
    };
    let unreadable = |why: String| {
        DisposeError::NotASavepoint(format!(
            "its {IN_PROGRESS_FILE} {why}, so it is not a savepoint Cairn is writing; nothing \
             was deleted (delete it by hand if it is not needed)"
        ))
    };
    if in_progress.size > MAX_MARKER_LEN {
        return Err(unreadable(format!("has {} bytes", in_progress.size)));
    }
    let bytes = match store.get_bytes(&in_progress.key).await {
        Ok(bytes) => bytes,
        // Completed (and its marker removed) or disposed of since the listing: look again.
        Err(e) if e.is_not_found() => {
            return if store.exists(&format!("{prefix}{SAVEPOINT_FILE}")).await? {
                Ok(())
            } else {
                Err(DisposeError::StillWriting(
                    "it changed while it was being checked; retry".to_owned(),
                ))
            };
        }
        Err(e) => return Err(e.into()),
    };
    let marker: InProgress =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("is not readable ({e})")))?;
    let age = Duration::from_millis(now_ms().saturating_sub(marker.started_at_ms));
    if age < ABANDONED_AFTER {
        return Err(DisposeError::StillWriting(format!(
            "it is an incomplete savepoint started {}s ago, which its writer may still be \
             copying; nothing was deleted: retry in {}s, when any writer has given up",
            age.as_secs(),
            (ABANDONED_AFTER - age).as_secs().max(1)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const DIR: &str = "savepoints/sp-000000000005/";

    async fn put(store: &CheckpointStore, key: &str, data: &[u8]) {
        store
            .put_bytes(key, Bytes::copy_from_slice(data))
            .await
            .unwrap();
    }

    async fn keys(store: &CheckpointStore) -> Vec<String> {
        store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    async fn in_progress(store: &CheckpointStore, age: Duration) {
        let m = InProgress {
            started_at_ms: now_ms() - age.as_millis() as u64,
            writer: "pid 1".into(),
        };
        put(
            store,
            &format!("{DIR}{IN_PROGRESS_FILE}"),
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_complete_savepoint_is_deleted_and_nothing_else() {
        let store = CheckpointStore::in_memory();
        put(&store, &format!("{DIR}{SAVEPOINT_FILE}"), b"{}").await;
        put(&store, &format!("{DIR}task-0000/000001.sst"), b"12345").await;
        put(&store, "savepoints/sp-000000000050/_SAVEPOINT.json", b"{}").await;
        put(&store, "checkpoints/000000000005/_COMMIT.json", b"{}").await;
        assert_eq!(
            dispose_dir(&store, DIR).await.unwrap(),
            Disposed::Done { files: 2, bytes: 7 }
        );
        assert_eq!(
            keys(&store).await,
            [
                "checkpoints/000000000005/_COMMIT.json",
                "savepoints/sp-000000000050/_SAVEPOINT.json"
            ]
        );
        assert_eq!(
            dispose_dir(&store, DIR).await.unwrap(),
            Disposed::AlreadyGone
        );
    }

    #[tokio::test]
    async fn a_directory_without_cairns_markers_is_refused_untouched() {
        let store = CheckpointStore::in_memory();
        put(&store, &format!("{DIR}task-0000/000001.sst"), b"x").await;
        let err = dispose_dir(&store, DIR).await.unwrap_err();
        assert!(matches!(err, DisposeError::NotASavepoint(_)), "{err}");
        assert!(err.to_string().contains("not a Cairn savepoint"), "{err}");
        assert_eq!(keys(&store).await, [format!("{DIR}task-0000/000001.sst")]);
        // An unreadable in-progress marker is not Cairn's either.
        put(&store, &format!("{DIR}{IN_PROGRESS_FILE}"), b"not json").await;
        let err = dispose_dir(&store, DIR).await.unwrap_err();
        assert!(err.to_string().contains("is not readable"), "{err}");
        assert_eq!(keys(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn an_incomplete_savepoint_is_refused_until_its_writer_has_given_up() {
        let store = CheckpointStore::in_memory();
        in_progress(&store, Duration::from_secs(60)).await;
        put(&store, &format!("{DIR}task-0000/000001.sst"), b"x").await;
        let err = dispose_dir(&store, DIR).await.unwrap_err();
        assert!(matches!(err, DisposeError::StillWriting(_)), "{err}");
        assert!(err.to_string().contains("started 60s ago"), "{err}");
        assert_eq!(keys(&store).await.len(), 2);
        in_progress(&store, ABANDONED_AFTER + Duration::from_secs(1)).await;
        let bytes = store.list(DIR).await.unwrap().iter().map(|o| o.size).sum();
        assert_eq!(
            dispose_dir(&store, DIR).await.unwrap(),
            Disposed::Done { files: 2, bytes }
        );
        assert!(keys(&store).await.is_empty());
    }

    /// A disposal interrupted after the manifest and some files went is finished by the next,
    /// which trusts the marker (the directory no longer looks like a savepoint).
    #[tokio::test]
    async fn a_half_disposed_directory_is_finished_by_a_retry() {
        let store = CheckpointStore::in_memory();
        put(&store, &format!("{DIR}{DISPOSING_FILE}"), b"{}").await;
        put(&store, &format!("{DIR}task-0001/000002.sst"), b"abc").await;
        assert_eq!(
            dispose_dir(&store, DIR).await.unwrap(),
            Disposed::Done { files: 2, bytes: 5 }
        );
        assert!(keys(&store).await.is_empty());
    }
}

//! Reading what a store holds: committed checkpoints, their records and manifests.

use super::manifest::{self, CommitRecord, TaskManifest};
use super::{paths, CheckpointError};
use crate::storage::CheckpointStore;

/// Ids of committed checkpoints, ascending.
pub async fn committed_ids(store: &CheckpointStore) -> Result<Vec<u64>, CheckpointError> {
    let mut ids: Vec<u64> = store
        .list(paths::CHECKPOINTS)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(paths::COMMIT_FILE))
        .filter_map(|o| paths::checkpoint_id_of(&o.key))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The highest checkpoint id present in any form (committed, aborted or in flight); new ids
/// start above it so an id is never reused.
pub async fn max_checkpoint_id(store: &CheckpointStore) -> Result<u64, CheckpointError> {
    Ok(store
        .list(paths::CHECKPOINTS)
        .await?
        .iter()
        .filter_map(|o| paths::checkpoint_id_of(&o.key))
        .max()
        .unwrap_or(0))
}

/// The commit record of checkpoint `id`.
pub async fn load_commit(
    store: &CheckpointStore,
    id: u64,
) -> Result<CommitRecord, CheckpointError> {
    let key = paths::commit_key(id);
    let bytes = store.get_bytes(&key).await?;
    manifest::parse(&key, &bytes)
}

/// A task manifest by key.
pub async fn load_task_manifest(
    store: &CheckpointStore,
    key: &str,
) -> Result<TaskManifest, CheckpointError> {
    let bytes = store.get_bytes(key).await?;
    manifest::parse(key, &bytes)
}

/// A commit record with all its task manifests.
pub async fn load_checkpoint(
    store: &CheckpointStore,
    id: u64,
) -> Result<(CommitRecord, Vec<TaskManifest>), CheckpointError> {
    let commit = load_commit(store, id).await?;
    let mut manifests = Vec::with_capacity(commit.tasks.len());
    for t in &commit.tasks {
        manifests.push(load_task_manifest(store, &t.manifest).await?);
    }
    Ok((commit, manifests))
}

//! Reading what a store holds: committed checkpoints, their records and manifests.

use super::manifest::{self, CommitRecord, TaskManifest};
use super::{paths, CheckpointError};
use crate::storage::CheckpointStore;

/// Ids of committed checkpoints, ascending; checkpoints marked unusable are left out.
pub async fn committed_ids(store: &CheckpointStore) -> Result<Vec<u64>, CheckpointError> {
    let listing = store.list(paths::CHECKPOINTS).await?;
    let ids_with = |file: &str| -> std::collections::BTreeSet<u64> {
        listing
            .iter()
            .filter(|o| o.key.ends_with(file))
            .filter_map(|o| paths::checkpoint_id_of(&o.key))
            .collect()
    };
    let unusable = ids_with(paths::UNUSABLE_FILE);
    Ok(ids_with(paths::COMMIT_FILE)
        .difference(&unusable)
        .copied()
        .collect())
}

/// Ids of committed checkpoints marked unusable, ascending.
pub async fn unusable_ids(store: &CheckpointStore) -> Result<Vec<u64>, CheckpointError> {
    let mut ids: Vec<u64> = store
        .list(paths::CHECKPOINTS)
        .await?
        .iter()
        .filter(|o| o.key.ends_with(paths::UNUSABLE_FILE))
        .filter_map(|o| paths::checkpoint_id_of(&o.key))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Marks committed checkpoint `id` unusable (restore found a file missing or corrupt), so that
/// it is not tried again and retention collects it.
pub async fn mark_unusable(
    store: &CheckpointStore,
    id: u64,
    reason: &str,
) -> Result<(), CheckpointError> {
    let body = serde_json::json!({ "checkpoint": id, "reason": reason, "atMs": super::now_ms() });
    store
        .put_bytes(&paths::unusable_key(id), body.to_string().into())
        .await?;
    Ok(())
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

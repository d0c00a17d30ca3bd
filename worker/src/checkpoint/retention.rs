//! Retention and garbage collection: classify every stored object first ([`plan`], a pure
//! function), then delete only what the plan marks unreferenced ([`execute`]).
//!
//! Runs only right after a commit, before the next checkpoint is triggered: at that moment
//! every task has finished every asynchronous phase up to the committed id, so no upload can
//! race with a deletion.

use std::collections::{BTreeSet, HashSet};

use super::manifest::TaskManifest;
use super::{catalog, paths, CheckpointError};
use crate::storage::{CheckpointStore, ObjectInfo};

/// What happens to each object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Committed checkpoints kept.
    pub retained: Vec<u64>,
    /// Commit records of retired checkpoints: deleted first, so a half-finished collection
    /// never leaves a commit record pointing at deleted files.
    pub retire_commits: Vec<String>,
    /// Every other object to delete.
    pub delete: Vec<String>,
    /// Objects kept.
    pub kept: usize,
}

/// Classifies `listing`. `committed` are the committed ids ascending; `retained_manifests` the
/// task manifests of the newest `retain` of them.
pub fn plan(
    listing: &[ObjectInfo],
    committed: &[u64],
    retain: usize,
    retained_manifests: &[TaskManifest],
) -> GcPlan {
    let retained: BTreeSet<u64> = committed
        .iter()
        .rev()
        .take(retain.max(1))
        .copied()
        .collect();
    let newest = committed.last().copied().unwrap_or(0);
    let referenced: HashSet<&str> = retained_manifests
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.key.as_str()))
        .collect();
    let mut out = GcPlan {
        retained: retained.iter().copied().collect(),
        ..GcPlan::default()
    };
    for obj in listing {
        let key = obj.key.as_str();
        let delete = if let Some(id) = paths::checkpoint_id_of(key) {
            // Newer than the newest commit: in flight, or another writer's; never ours to judge.
            id < newest && !retained.contains(&id)
        } else if key.starts_with(paths::TASKS) {
            !referenced.contains(key)
        } else {
            false // generations/, savepoints/, anything unknown: kept
        };
        if !delete {
            out.kept += 1;
        } else if key.ends_with(paths::COMMIT_FILE) {
            out.retire_commits.push(obj.key.clone());
        } else {
            out.delete.push(obj.key.clone());
        }
    }
    out
}

/// Lists the store, plans, and deletes. Returns the executed plan.
pub async fn collect(store: &CheckpointStore, retain: usize) -> Result<GcPlan, CheckpointError> {
    let committed = catalog::committed_ids(store).await?;
    let mut manifests = Vec::new();
    for id in committed.iter().rev().take(retain.max(1)) {
        manifests.extend(catalog::load_checkpoint(store, *id).await?.1);
    }
    let mut listing = store.list(paths::CHECKPOINTS).await?;
    listing.extend(store.list(paths::TASKS).await?);
    let plan = plan(&listing, &committed, retain, &manifests);
    execute(store, &plan).await?;
    for prefix in [paths::CHECKPOINTS, paths::TASKS] {
        store.purge_abandoned_uploads(prefix).await?;
    }
    Ok(plan)
}

/// Deletes what `plan` marks: retired commit records first, then the rest.
pub async fn execute(store: &CheckpointStore, plan: &GcPlan) -> Result<(), CheckpointError> {
    for key in plan.retire_commits.iter().chain(&plan.delete) {
        store.delete(key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::{ManifestFile, FORMAT_VERSION};
    use crate::storage::FileMeta;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1,
        }
    }

    fn manifest(id: u64, files: &[&str]) -> TaskManifest {
        TaskManifest {
            format: FORMAT_VERSION,
            checkpoint: id,
            generation: 1,
            task: 0,
            db_id: "a".into(),
            offsets: Default::default(),
            files: files
                .iter()
                .map(|k| ManifestFile {
                    name: k.rsplit('/').next().unwrap().into(),
                    key: (*k).into(),
                    meta: FileMeta { size: 1, crc32c: 0 },
                })
                .collect(),
            uploaded_bytes: 0,
            new_sst_bytes: 0,
            created_at_ms: 0,
        }
    }

    #[test]
    fn keeps_everything_retained_checkpoints_reference_and_nothing_else() {
        let listing: Vec<ObjectInfo> = [
            "checkpoints/000000000001/_COMMIT.json",
            "checkpoints/000000000001/task-0000.json",
            "checkpoints/000000000002/task-0000.json", // aborted: no commit record
            "checkpoints/000000000003/_COMMIT.json",
            "checkpoints/000000000003/task-0000.json",
            "checkpoints/000000000004/_COMMIT.json",
            "checkpoints/000000000004/task-0000.json",
            "checkpoints/000000000004/task-0000/MANIFEST-000005",
            "checkpoints/000000000005/task-0000.json", // in flight
            "tasks/task-0000/db-a/000001.sst",         // only in checkpoint 1
            "tasks/task-0000/db-a/000002.sst",         // shared by 3 and 4
            "tasks/task-0000/db-a/000003.sst",         // in 4
            "tasks/task-0000/db-a/000009.sst",         // uploaded by an aborted checkpoint
            "generations/0000000001",
            "savepoints/sp-1/_SAVEPOINT.json",
        ]
        .iter()
        .map(|k| obj(k))
        .collect();
        let manifests = vec![
            manifest(3, &["tasks/task-0000/db-a/000002.sst"]),
            manifest(
                4,
                &[
                    "tasks/task-0000/db-a/000002.sst",
                    "tasks/task-0000/db-a/000003.sst",
                ],
            ),
        ];
        let p = plan(&listing, &[1, 3, 4], 2, &manifests);
        assert_eq!(p.retained, vec![3, 4]);
        assert_eq!(
            p.retire_commits,
            vec!["checkpoints/000000000001/_COMMIT.json".to_string()]
        );
        assert_eq!(
            p.delete,
            vec![
                "checkpoints/000000000001/task-0000.json".to_string(),
                "checkpoints/000000000002/task-0000.json".to_string(),
                "tasks/task-0000/db-a/000001.sst".to_string(),
                "tasks/task-0000/db-a/000009.sst".to_string(),
            ]
        );
        assert_eq!(p.kept, listing.len() - 5);
    }
}

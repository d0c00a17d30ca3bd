//! Retention and garbage collection: classify every stored object first ([`plan`], a pure
//! function), then delete only what the plan marks unreferenced ([`execute`]).
//!
//! Runs only right after a commit, before the next checkpoint is triggered: at that moment
//! every task of this process's generation has finished every asynchronous phase up to the
//! committed id, so none of its own uploads can race with a deletion.
//!
//! A process that a newer generation has fenced out may still reach this point (its last
//! commit can slip in before the newer process's claim, see `generation`), and the newer
//! process may be uploading at the same time. So a pass deletes nothing of a newer generation:
//!
//! * it checks fencing before it starts and again before every single delete, and stops at the
//!   first sign of a newer generation ([`CheckpointError::Fenced`]; the coordinator then stops
//!   the process). A pass that passed its checks only ever deletes objects it listed before the
//!   newer process claimed its generation, which cannot be that process's files;
//! * independently of those checks, files whose key names a newer writer generation
//!   (`paths::writer_generation_of`), committed checkpoints of a newer generation, and temp
//!   files of newer writers are never deleted.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use super::manifest::TaskManifest;
use super::{catalog, generation, paths, CheckpointError};
use crate::storage::{CheckpointStore, ObjectInfo};

/// Fault injection for tests: a path; each retention pass waits until a file exists there
/// before it lists anything, so that a test can let another process start and upload first.
pub const RETENTION_GATE_ENV: &str = "CAIRN_FAULT_RETENTION_GATE";

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

/// The committed checkpoints a pass keeps: the newest `retain` (at least one).
pub fn newest(committed: &[u64], retain: usize) -> BTreeSet<u64> {
    committed
        .iter()
        .rev()
        .take(retain.max(1))
        .copied()
        .collect()
}

/// Classifies `listing` for a pass of generation `ours`. `committed` are the committed ids
/// ascending; `retained` the committed ids kept (see [`newest`]; plus any a newer generation
/// committed); `retained_manifests` their task manifests.
pub fn plan(
    listing: &[ObjectInfo],
    committed: &[u64],
    retained: &BTreeSet<u64>,
    retained_manifests: &[TaskManifest],
    ours: u64,
) -> GcPlan {
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
        let delete = if paths::writer_generation_of(key).is_some_and(|g| g > ours) {
            false // a newer generation's file: never ours to judge
        } else if let Some(id) = paths::checkpoint_id_of(key) {
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

/// Lists the store, plans and deletes, as generation `ours`. Returns the executed plan;
/// [`CheckpointError::Fenced`] as soon as a newer generation is seen (what was deleted until
/// then was listed before that generation existed).
pub async fn collect(
    store: &CheckpointStore,
    retain: usize,
    ours: u64,
) -> Result<GcPlan, CheckpointError> {
    if let Some(gate) = std::env::var_os(RETENTION_GATE_ENV) {
        wait_for_gate(std::path::Path::new(&gate)).await;
    }
    generation::check_not_fenced(store, ours).await?;
    let committed = catalog::committed_ids(store).await?;
    let mut retained = newest(&committed, retain);
    for id in &committed {
        if !retained.contains(id) && committed_by_newer(store, *id, ours).await? {
            retained.insert(*id);
        }
    }
    let mut manifests = Vec::new();
    for id in &retained {
        manifests.extend(catalog::load_checkpoint(store, *id).await?.1);
    }
    let mut listing = store.list(paths::CHECKPOINTS).await?;
    listing.extend(store.list(paths::TASKS).await?);
    let plan = plan(&listing, &committed, &retained, &manifests, ours);
    execute(store, &plan, ours).await?;
    generation::check_successor_absent(store, ours).await?;
    for prefix in [paths::CHECKPOINTS, paths::TASKS] {
        store.purge_abandoned_uploads(prefix, ours).await?;
    }
    Ok(plan)
}

/// True when committed checkpoint `id` was committed by a generation newer than `ours`. A
/// commit record that cannot be read as one (a leftover of a damaged store) counts as not
/// newer; one that vanished meanwhile was retired by someone else.
async fn committed_by_newer(
    store: &CheckpointStore,
    id: u64,
    ours: u64,
) -> Result<bool, CheckpointError> {
    match catalog::load_commit(store, id).await {
        Ok(commit) => Ok(commit.generation > ours),
        // Written by a newer Cairn: not ours to retire.
        Err(CheckpointError::FormatTooNew { .. }) => Ok(true),
        Err(CheckpointError::Storage(e)) if !e.is_not_found() => Err(e.into()),
        Err(_) => Ok(false),
    }
}

/// Deletes what `plan` marks: retired commit records first, then the rest; checks before each
/// delete that no newer generation has started.
pub async fn execute(
    store: &CheckpointStore,
    plan: &GcPlan,
    ours: u64,
) -> Result<(), CheckpointError> {
    for key in plan.retire_commits.iter().chain(&plan.delete) {
        generation::check_successor_absent(store, ours).await?;
        store.delete(key).await?;
    }
    Ok(())
}

/// Waits until `gate` exists (see [`RETENTION_GATE_ENV`]).
async fn wait_for_gate(gate: &std::path::Path) {
    tracing::warn!(gate = %gate.display(), "{RETENTION_GATE_ENV} is set: retention waits for the gate file");
    while !gate.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::{ManifestFile, ManifestFiles, FORMAT_VERSION};
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
            watermarks: Default::default(),
            files: ManifestFiles::new(
                files
                    .iter()
                    .map(|k| ManifestFile {
                        name: k.rsplit('/').next().unwrap().into(),
                        key: (*k).into(),
                        meta: FileMeta { size: 1, crc32c: 0 },
                    })
                    .collect(),
            )
            .unwrap(),
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
        let p = plan(&listing, &[1, 3, 4], &newest(&[1, 3, 4], 2), &manifests, 1);
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

    #[test]
    fn a_newer_generations_files_are_never_deleted() {
        let listing: Vec<ObjectInfo> = [
            "checkpoints/000000000001/_COMMIT.json",
            "checkpoints/000000000001/g0000000002/task-0000.json",
            "checkpoints/000000000002/g0000000003/task-0000.json", // gen 3: in flight
            "checkpoints/000000000002/g0000000002/task-0000.json", // ours: aborted
            "checkpoints/000000000003/_COMMIT.json",
            "checkpoints/000000000003/g0000000002/task-0000.json",
            "tasks/task-0000/db-000002-aa/000001.sst", // ours, referenced
            "tasks/task-0000/db-000002-aa/000002.sst", // ours, unreferenced
            "tasks/task-0000/db-000003-bb/000003.sst", // gen 3, not committed yet
            "tasks/task-0000/db-a/000004.sst",         // unattributable: as before
        ]
        .iter()
        .map(|k| obj(k))
        .collect();
        let manifests = vec![manifest(3, &["tasks/task-0000/db-000002-aa/000001.sst"])];
        let p = plan(&listing, &[1, 3], &newest(&[1, 3], 1), &manifests, 2);
        assert_eq!(p.retire_commits, ["checkpoints/000000000001/_COMMIT.json"]);
        assert_eq!(
            p.delete,
            [
                "checkpoints/000000000001/g0000000002/task-0000.json",
                "checkpoints/000000000002/g0000000002/task-0000.json",
                "tasks/task-0000/db-000002-aa/000002.sst",
                "tasks/task-0000/db-a/000004.sst",
            ]
        );
    }

    mod store {
        use bytes::Bytes;

        use super::super::*;
        use crate::checkpoint::manifest::{
            self, CommitRecord, CommittedTask, ManifestFile, ManifestFiles, FORMAT_VERSION,
        };
        use crate::storage::FileMeta;

        const SPEC: &str =
            "name: t\ninput:\n  type: generator\n  partitions: 1\ntask:\n  name: count\n";

        /// Stores `ssts` (one byte each) and commits checkpoint `id` referencing them, as
        /// generation `generation`.
        async fn commit(store: &CheckpointStore, id: u64, generation: u64, ssts: &[&str]) {
            let mut files = Vec::new();
            for key in ssts {
                store
                    .put_bytes(key, Bytes::from_static(b"s"))
                    .await
                    .unwrap();
                files.push(ManifestFile {
                    name: key.rsplit('/').next().unwrap().into(),
                    key: (*key).into(),
                    meta: FileMeta {
                        size: 1,
                        crc32c: crate::storage::crc32c_of(b"s"),
                    },
                });
            }
            let m = TaskManifest {
                format: FORMAT_VERSION,
                checkpoint: id,
                generation,
                task: 0,
                db_id: "x".into(),
                offsets: Default::default(),
                watermarks: Default::default(),
                files: ManifestFiles::new(files).unwrap(),
                uploaded_bytes: 0,
                new_sst_bytes: 0,
                created_at_ms: 0,
            };
            let manifest_key = paths::task_manifest_key(id, generation, 0);
            store
                .put_bytes(&manifest_key, manifest::to_bytes(&m))
                .await
                .unwrap();
            let spec = cairn_contract::JobSpec::from_yaml_str(SPEC).unwrap();
            let record = CommitRecord {
                format: FORMAT_VERSION,
                checkpoint: id,
                generation,
                triggered_at_ms: 0,
                committed_at_ms: 0,
                spec_hash: spec.spec_hash(),
                spec,
                partitions: 1,
                parallelism: 1,
                tasks: vec![CommittedTask {
                    task: 0,
                    container: 0,
                    manifest: manifest_key,
                    offsets: Default::default(),
                    watermarks: Default::default(),
                }],
                total_bytes: 0,
                uploaded_bytes: 0,
                new_sst_bytes: 0,
                origin: None,
                state_version: None,
            };
            store
                .put_bytes_create_only(&paths::commit_key(id), manifest::to_bytes(&record))
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

        /// Temp files below the store root, by name.
        fn temps(root: &std::path::Path) -> Vec<String> {
            let mut out = Vec::new();
            let mut stack = vec![root.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let e = e.unwrap();
                    let name = e.file_name().into_string().unwrap();
                    if name.contains(".tmp-") {
                        out.push(name);
                    } else if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                    }
                }
            }
            out.sort();
            out
        }

        #[tokio::test]
        async fn a_fenced_pass_deletes_nothing_and_a_newer_one_collects() {
            let tmp = tempfile::tempdir().unwrap();
            let store = CheckpointStore::from_url("file:store", tmp.path()).unwrap();
            let root = store.local_root().unwrap().to_path_buf();
            assert_eq!(generation::claim(&store, "old").await.unwrap(), 1);
            commit(&store, 1, 1, &["tasks/task-0000/db-000001-aa/000001.sst"]).await;
            commit(&store, 2, 1, &["tasks/task-0000/db-000001-aa/000002.sst"]).await;

            // A newer process starts and uploads for a checkpoint it has not committed yet;
            // one of its uploads is in progress (a temp file) and so is an old writer's.
            assert_eq!(generation::claim(&store, "new").await.unwrap(), 2);
            commit(&store, 3, 2, &["tasks/task-0000/db-000002-bb/000003.sst"]).await;
            store
                .put_bytes(
                    "tasks/task-0000/db-000002-bb/000004.sst",
                    Bytes::from_static(b"s"),
                )
                .await
                .unwrap();
            let dir = root.join("tasks/task-0000/db-000002-bb");
            std::fs::write(
                dir.join(".000005.sst.tmp-g2-1-00000000000000aa"),
                b"partial",
            )
            .unwrap();
            std::fs::write(dir.join(".000006.sst.tmp-1-00000000000000bb"), b"partial").unwrap();
            let before = keys(&store).await;

            // The old process runs retention after its last commit: fenced, nothing deleted.
            let err = collect(&store, 1, 1).await.unwrap_err();
            assert!(
                matches!(err, CheckpointError::Fenced { ours: 1, newer: 2 }),
                "{err}"
            );
            assert_eq!(keys(&store).await, before);
            assert_eq!(
                temps(&root),
                [
                    ".000005.sst.tmp-g2-1-00000000000000aa",
                    ".000006.sst.tmp-1-00000000000000bb"
                ]
            );

            // The same pass without the fence check (as if it slipped in before the claim)
            // still spares every file of generation 2.
            let committed = catalog::committed_ids(&store).await.unwrap();
            let retained = newest(&committed, 1);
            let manifests = catalog::load_checkpoint(&store, 3).await.unwrap().1;
            let listing = store.list("").await.unwrap();
            let p = plan(&listing, &committed, &retained, &manifests, 1);
            assert!(
                p.delete
                    .iter()
                    .all(|k| paths::writer_generation_of(k) == Some(1)),
                "{p:?}"
            );
            assert_eq!(
                store
                    .purge_abandoned_uploads(paths::TASKS, 1)
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(temps(&root), [".000005.sst.tmp-g2-1-00000000000000aa"]);

            // The new process collects the old one's garbage, its own dead temp and the files
            // no retained checkpoint references.
            let p = collect(&store, 1, 2).await.unwrap();
            assert_eq!(p.retained, [3]);
            assert_eq!(
                keys(&store).await,
                [
                    "checkpoints/000000000003/_COMMIT.json",
                    "checkpoints/000000000003/g0000000002/task-0000.json",
                    "generations/0000000001",
                    "generations/0000000002",
                    "tasks/task-0000/db-000002-bb/000003.sst",
                ]
            );
            assert!(temps(&root).is_empty());
            // Emptied directories are gone; top-level ones stay.
            assert!(!root.join("checkpoints/000000000001").exists());
            assert!(!root.join("tasks/task-0000/db-000001-aa").exists());
            assert!(root.join("tasks/task-0000/db-000002-bb").is_dir());
        }

        #[tokio::test]
        async fn a_checkpoint_a_newer_generation_committed_is_never_retired() {
            let store = CheckpointStore::in_memory();
            assert_eq!(generation::claim(&store, "a").await.unwrap(), 1);
            // Generation 5's commit without a visible claim: only its record says so.
            commit(&store, 1, 5, &["tasks/task-0000/db-000005-aa/000001.sst"]).await;
            commit(&store, 2, 1, &["tasks/task-0000/db-000001-aa/000002.sst"]).await;
            commit(&store, 3, 1, &["tasks/task-0000/db-000001-aa/000003.sst"]).await;
            let p = collect(&store, 1, 1).await.unwrap();
            assert_eq!(p.retained, [1, 3]);
            assert_eq!(p.retire_commits, ["checkpoints/000000000002/_COMMIT.json"]);
            assert_eq!(catalog::committed_ids(&store).await.unwrap(), [1, 3]);
        }
    }
}

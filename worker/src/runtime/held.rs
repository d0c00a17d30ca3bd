//! A job whose run has ended — its finite input processed, or stopped on request — with its
//! final checkpoint committed, in a process that holds (`--hold-after-stop`, how pods run).
//! The coordinator's run loop is over, so this takes over its request channel and answers in
//! its place, so that the job stays manageable: a savepoint copies the final checkpoint (the
//! job's whole state) for an upgrade or a restore with more input; a checkpoint is refused,
//! naming the final one, since no task runs to take it.
//!
//! The final checkpoint never changes, so it is copied once: later savepoint requests answer
//! with the same savepoint, also one found already written to its directory (by a
//! stop-with-savepoint of the same checkpoint), provided it records the task's state version.

use tokio::sync::mpsc;

use super::failure::{RequestError, SavepointReply};
use super::job_progress::Ended;
use super::messages::Request;
use crate::checkpoint::savepoint::{self, SavepointLocation, SAVEPOINTS, SAVEPOINT_FILE};
use crate::checkpoint::CheckpointError;
use crate::storage::{CheckpointStore, StorageError};
use cairn_contract::control::SavepointInfo;

/// What an ended job answers requests with.
pub struct HeldJob {
    store: CheckpointStore,
    ended: Ended,
    /// The task's state version, recorded in savepoints (the offline command cannot know it).
    state_version: u32,
    /// The savepoint of the final checkpoint, once made or found.
    savepoint: Option<SavepointInfo>,
}

impl HeldJob {
    /// The job that ended as `ended`, its checkpoints in `store`.
    pub fn new(store: CheckpointStore, ended: Ended, state_version: u32) -> Self {
        HeldJob {
            store,
            ended,
            state_version,
            savepoint: None,
        }
    }

    /// Answers `requests`, one at a time, until every sender is gone.
    pub async fn serve(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(request) = requests.recv().await {
            self.answer(request).await;
        }
    }

    async fn answer(&mut self, request: Request) {
        match request {
            Request::Checkpoint(reply) => {
                let _ = reply.send(Err(RequestError::Ended(self.ended)));
            }
            // A stop changes nothing here (the job has ended already); the control API records
            // which savepoint the job stopped with.
            Request::Savepoint { stop, reply } => {
                let result = self.savepoint().await;
                match &result {
                    Ok(info) => {
                        tracing::info!(url = %info.url, checkpoint = info.checkpoint, stop, "savepoint of the final checkpoint")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "savepoint of the final checkpoint failed")
                    }
                }
                let _ = reply.send(result);
            }
        }
    }

    /// The savepoint of the final checkpoint: the one already made, or a new copy.
    async fn savepoint(&mut self) -> SavepointReply {
        if let Some(info) = &self.savepoint {
            return Ok(info.clone());
        }
        let checkpoint = self.ended.checkpoint();
        let failed = |detail: String| RequestError::EndedSavepointWrite { checkpoint, detail };
        let info = match savepoint::create(&self.store, checkpoint, self.state_version).await {
            Ok((location, manifest)) => SavepointInfo {
                url: location.url(),
                id: manifest.id,
                checkpoint,
            },
            Err(CheckpointError::Storage(StorageError::AlreadyExists { .. })) => {
                self.existing(checkpoint).await.map_err(failed)?
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        self.savepoint = Some(info.clone());
        Ok(info)
    }

    /// The completed savepoint already in checkpoint `checkpoint`'s savepoint directory, if it
    /// is one this job would have written.
    async fn existing(&self, checkpoint: u64) -> Result<SavepointInfo, String> {
        let location = SavepointLocation {
            store: self.store.clone(),
            prefix: format!("{SAVEPOINTS}{}/", savepoint::name_for(checkpoint)),
        };
        let manifest = location.load().await.map_err(|e| e.to_string())?;
        if manifest.source_checkpoint != checkpoint || manifest.state_version != self.state_version
        {
            return Err(format!(
                "{}/{SAVEPOINT_FILE} already exists, a savepoint of checkpoint {} with state version {} (`cairn-worker savepoint` records 1), but the task's state version is {}: move that directory elsewhere and ask again",
                location.url(),
                manifest.source_checkpoint,
                manifest.state_version,
                self.state_version
            ));
        }
        Ok(SavepointInfo {
            url: location.url(),
            id: manifest.id,
            checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;
    use crate::checkpoint::manifest::{
        self, CommitRecord, CommittedTask, ManifestFile, ManifestFiles, TaskManifest,
        FORMAT_VERSION,
    };
    use crate::checkpoint::paths;
    use crate::storage::FileMeta;

    const SPEC: &str =
        "name: t\ninput:\n  type: generator\n  partitions: 1\ntask:\n  name: count\n";

    /// Commits checkpoint `id` of task 0 with one stored SST, at offset 42.
    async fn commit(store: &CheckpointStore, id: u64) {
        let sst = format!("tasks/task-0000/g1/{id:06}.sst");
        store
            .put_bytes(&sst, Bytes::from_static(b"s"))
            .await
            .unwrap();
        let file = ManifestFile {
            name: format!("{id:06}.sst"),
            key: sst,
            meta: FileMeta {
                size: 1,
                crc32c: crate::storage::crc32c_of(b"s"),
            },
        };
        let task = TaskManifest {
            format: FORMAT_VERSION,
            checkpoint: id,
            generation: 1,
            task: 0,
            db_id: "x".into(),
            offsets: [(0, 42)].into(),
            watermarks: Default::default(),
            files: ManifestFiles::new(vec![file]).unwrap(),
            uploaded_bytes: 1,
            new_sst_bytes: 1,
            created_at_ms: 0,
        };
        let manifest_key = paths::task_manifest_key(id, 1, 0);
        store
            .put_bytes(&manifest_key, manifest::to_bytes(&task))
            .await
            .unwrap();
        let spec = cairn_contract::JobSpec::from_yaml_str(SPEC).unwrap();
        let record = CommitRecord {
            format: FORMAT_VERSION,
            checkpoint: id,
            generation: 1,
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
                offsets: [(0, 42)].into(),
                watermarks: Default::default(),
            }],
            total_bytes: 1,
            uploaded_bytes: 1,
            new_sst_bytes: 1,
            origin: None,
            state_version: None,
        };
        store
            .put_bytes_create_only(&paths::commit_key(id), manifest::to_bytes(&record))
            .await
            .unwrap();
    }

    async fn ask_savepoint(held: &mut HeldJob, stop: bool) -> SavepointReply {
        let (reply, answer) = oneshot::channel();
        held.answer(Request::Savepoint { stop, reply }).await;
        answer.await.unwrap()
    }

    async fn savepoint_dirs(store: &CheckpointStore) -> Vec<String> {
        let mut dirs: Vec<String> = store
            .list(SAVEPOINTS)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(SAVEPOINTS)?;
                Some(rest.split_once('/')?.0.to_owned())
            })
            .collect();
        dirs.dedup();
        dirs
    }

    #[tokio::test]
    async fn a_savepoint_copies_the_final_checkpoint_once_with_the_tasks_state_version() {
        let store = CheckpointStore::in_memory();
        commit(&store, 5).await;
        let mut held = HeldJob::new(store.clone(), Ended::Finished { checkpoint: 5 }, 7);

        let first = ask_savepoint(&mut held, false).await.unwrap();
        assert_eq!(first.checkpoint, 5);
        let location = SavepointLocation {
            store: store.clone(),
            prefix: format!("{SAVEPOINTS}sp-000000000005/"),
        };
        let manifest = location.load().await.unwrap();
        assert_eq!(manifest.id, first.id);
        assert_eq!(manifest.source_checkpoint, 5);
        assert_eq!(manifest.state_version, 7, "the task's own version, not 1");
        assert_eq!(manifest.task_name, "count");
        assert_eq!(manifest.tasks[0].offsets, [(0, 42)].into());
        let copied = store
            .get_bytes("savepoints/sp-000000000005/task-0000/000005.sst")
            .await
            .unwrap();
        assert_eq!(&copied[..], b"s");

        // Asked again (a stop this time): the same savepoint, no second copy.
        assert_eq!(ask_savepoint(&mut held, true).await.unwrap(), first);
        assert_eq!(savepoint_dirs(&store).await, ["sp-000000000005"]);
        // A fresh server (nothing remembered) finds it in the store.
        let mut again = HeldJob::new(store.clone(), Ended::Stopped { checkpoint: 5 }, 7);
        assert_eq!(ask_savepoint(&mut again, false).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_checkpoint_is_refused_naming_the_final_one() {
        let store = CheckpointStore::in_memory();
        let mut held = HeldJob::new(store, Ended::Finished { checkpoint: 9 }, 1);
        let (reply, answer) = oneshot::channel();
        held.answer(Request::Checkpoint(reply)).await;
        let err = answer.await.unwrap().unwrap_err();
        assert_eq!(err, RequestError::Ended(Ended::Finished { checkpoint: 9 }));
        assert_eq!(
            err.to_string(),
            "the job has finished: all its input is processed and its final checkpoint 9 is \
             committed; it takes no more checkpoints (a savepoint copies checkpoint 9)"
        );
    }

    #[tokio::test]
    async fn a_savepoint_of_another_state_version_in_the_way_is_named_and_kept() {
        let store = CheckpointStore::in_memory();
        commit(&store, 3).await;
        // What `cairn-worker savepoint` writes: state version 1.
        let (_, offline) = savepoint::create(&store, 3, 1).await.unwrap();
        let mut held = HeldJob::new(store.clone(), Ended::Finished { checkpoint: 3 }, 2);
        let err = ask_savepoint(&mut held, false).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, RequestError::EndedSavepointWrite { checkpoint: 3, .. }),
            "{err:?}"
        );
        assert!(
            text.contains("savepoints/sp-000000000003/_SAVEPOINT.json already exists")
                && text.contains("state version 1")
                && text.contains("the task's state version is 2"),
            "{text}"
        );
        let location = SavepointLocation {
            store: store.clone(),
            prefix: format!("{SAVEPOINTS}sp-000000000003/"),
        };
        assert_eq!(
            location.load().await.unwrap().id,
            offline.id,
            "left as it was"
        );
    }

    #[tokio::test]
    async fn a_missing_final_checkpoint_fails_the_savepoint_naming_it() {
        let store = CheckpointStore::in_memory();
        let mut held = HeldJob::new(store, Ended::Finished { checkpoint: 4 }, 1);
        let err = ask_savepoint(&mut held, false).await.unwrap_err();
        assert!(
            matches!(err, RequestError::EndedSavepointWrite { checkpoint: 4, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("savepoint failed: writing it from the final checkpoint 4 failed:"),
            "{err}"
        );
    }
}

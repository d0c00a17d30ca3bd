//! A task's asynchronous checkpoint phase, run off the processing thread: take the snapshot
//! (write the frozen cache, flush, hard-link), make sealed output durable, upload only the
//! files the store does not have yet, write the task manifest, and report to the coordinator.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manifest::{self, ManifestFile, ManifestFiles, TaskManifest, FORMAT_VERSION};
use super::{now_ms, paths, CheckpointError};
use crate::sink::Sealed;
use crate::state::Snapshot;
use crate::storage::CheckpointStore;

/// Per-task checkpoint state shared by the task thread and its asynchronous phases.
pub struct TaskCheckpointer {
    store: CheckpointStore,
    task: u32,
    generation: u64,
    db_id: String,
    local_dir: PathBuf,
    /// Immutable files already in the store, by local name. Held locked for a whole phase,
    /// which also keeps one asynchronous phase in flight per task.
    known: tokio::sync::Mutex<HashMap<String, ManifestFile>>,
    upload_delay: Option<Duration>,
}

/// What the synchronous phase hands over.
pub struct PhaseInput {
    /// Checkpoint id.
    pub id: u64,
    /// The frozen state.
    pub snapshot: Snapshot,
    /// Output sealed for this checkpoint.
    pub sealed: Sealed,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
    /// Input partition -> watermark (jobs with event time, once known).
    pub watermarks: BTreeMap<u32, u64>,
}

/// What a task reports when its part of a checkpoint is durable.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseReport {
    /// Key of the task manifest written.
    pub manifest_key: String,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
    /// Input partition -> watermark.
    #[serde(default)]
    pub watermarks: BTreeMap<u32, u64>,
    /// Total state bytes referenced.
    pub total_bytes: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Bytes of SSTs new since the previous checkpoint.
    pub new_sst_bytes: u64,
    /// Duration of the asynchronous phase.
    pub duration: Duration,
}

impl TaskCheckpointer {
    /// State for task `task` whose database instance is `db_id`. `known` lists the immutable
    /// files already in the store (those of the checkpoint it was restored from).
    /// `upload_delay` is a fault-injection knob for tests: a pause before each uploaded file.
    pub fn new(
        store: CheckpointStore,
        task: u32,
        generation: u64,
        db_id: String,
        local_dir: PathBuf,
        known: impl IntoIterator<Item = ManifestFile>,
        upload_delay: Option<Duration>,
    ) -> Self {
        let known = known.into_iter().map(|f| (f.name.clone(), f)).collect();
        TaskCheckpointer {
            store,
            task,
            generation,
            db_id,
            local_dir,
            known: tokio::sync::Mutex::new(known),
            upload_delay,
        }
    }

    /// Runs the asynchronous phase of checkpoint `input.id`.
    pub async fn run(self: Arc<Self>, input: PhaseInput) -> Result<PhaseReport, CheckpointError> {
        let mut known = self.known.lock().await;
        let started = Instant::now();
        let PhaseInput {
            id,
            snapshot,
            sealed,
            offsets,
            watermarks,
        } = input;
        let dir = self.local_dir.join(format!("ckpt-{id:012}"));
        let snap_dir = dir.clone();
        let taken = tokio::task::spawn_blocking(move || -> Result<(), CheckpointError> {
            remove_dir_if_exists(&snap_dir)?;
            snapshot.take(&snap_dir)?;
            sealed.make_durable()?;
            Ok(())
        })
        .await
        .expect("snapshot task panicked");

        // The local directory goes whatever happened: a snapshot that failed half-way (a full
        // disk) or output that could not be made durable leaves hard links that would hold the
        // SSTs' space until the next checkpoint of the same id, which never comes.
        let result = match taken {
            Ok(()) => {
                self.upload(&mut known, id, &dir, (offsets, watermarks), started)
                    .await
            }
            Err(e) => Err(e),
        };
        let cleanup = dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_dir_if_exists(&cleanup)).await;
        result
    }

    async fn upload(
        &self,
        known: &mut HashMap<String, ManifestFile>,
        id: u64,
        dir: &Path,
        (offsets, watermarks): (BTreeMap<u32, u64>, BTreeMap<u32, u64>),
        started: Instant,
    ) -> Result<PhaseReport, CheckpointError> {
        let local = |source| CheckpointError::Local {
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<(String, u64)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(local)? {
            let entry = entry.map_err(local)?;
            let size = entry.metadata().map_err(local)?.len();
            names.push((entry.file_name().to_string_lossy().into_owned(), size));
        }
        names.sort();

        let mut files = Vec::with_capacity(names.len());
        let mut to_upload = Vec::new();
        let mut new_sst_bytes = 0;
        for (name, size) in names {
            if paths::is_immutable_db_file(&name) {
                if let Some(f) = known.get(&name) {
                    files.push(f.clone());
                    continue;
                }
                new_sst_bytes += size;
                to_upload.push((name.clone(), paths::sst_key(self.task, &self.db_id, &name)));
            } else {
                to_upload.push((
                    name.clone(),
                    paths::checkpoint_file_key(id, self.generation, self.task, &name),
                ));
            }
        }

        let batch: Vec<(PathBuf, String)> = to_upload
            .iter()
            .map(|(name, key)| (dir.join(name), key.clone()))
            .collect();
        // Without the hook the match has one arm left.
        #[cfg_attr(not(feature = "test-hooks"), allow(clippy::match_single_binding))]
        let metas = match self.upload_delay {
            // Fault injection: one file at a time with a pause, so a kill lands mid-upload.
            // Test builds only (feature `test-hooks`): release builds always upload at once.
            #[cfg(feature = "test-hooks")]
            Some(delay) => {
                let mut metas = Vec::with_capacity(batch.len());
                for one in &batch {
                    tokio::time::sleep(delay).await;
                    metas.extend(self.store.upload_files(std::slice::from_ref(one)).await?);
                }
                metas
            }
            _ => self.store.upload_files(&batch).await?,
        };
        let mut uploaded_bytes = 0;
        for ((name, key), meta) in to_upload.into_iter().zip(metas) {
            uploaded_bytes += meta.size;
            let file = ManifestFile {
                name: name.clone(),
                key,
                meta,
            };
            if paths::is_immutable_db_file(&name) {
                known.insert(name, file.clone());
            }
            files.push(file);
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        // Names come from our own database directory, so this only fails on a bug; checked
        // anyway, because a manifest that restore would refuse must never be written.
        let files = ManifestFiles::new(files).map_err(|e| CheckpointError::Local {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;

        let manifest = TaskManifest {
            format: FORMAT_VERSION,
            checkpoint: id,
            generation: self.generation,
            task: self.task,
            db_id: self.db_id.clone(),
            offsets: offsets.clone(),
            watermarks: watermarks.clone(),
            files,
            uploaded_bytes,
            new_sst_bytes,
            created_at_ms: now_ms(),
        };
        let manifest_key = paths::task_manifest_key(id, self.generation, self.task);
        self.store
            .put_bytes(&manifest_key, manifest::to_bytes(&manifest))
            .await?;
        Ok(PhaseReport {
            manifest_key,
            offsets,
            watermarks,
            total_bytes: manifest.total_bytes(),
            uploaded_bytes,
            new_sst_bytes,
            duration: started.elapsed(),
        })
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Local {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The asynchronous phase in process, on a real RocksDB and a real file store: what it uploads,
/// what it reuses, and that a failure leaves no local files behind.
#[cfg(test)]
mod tests {
    use rocksdb::Cache;

    use super::*;
    use crate::sink::{DurableWait, SinkError};
    use crate::state::{open_task_db, KeyedState};

    const GENERATION: u64 = 1;
    const TASK: u32 = 0;

    struct Task {
        state: KeyedState,
        checkpointer: Arc<TaskCheckpointer>,
        local_dir: PathBuf,
        store: CheckpointStore,
        _tmp: tempfile::TempDir,
    }

    fn task() -> Task {
        let tmp = tempfile::tempdir().unwrap();
        let local_dir = tmp.path().join("task-0000");
        let db = open_task_db(&local_dir.join("db"), &Cache::new_lru_cache(1 << 20)).unwrap();
        let url = format!("file://{}", tmp.path().join("store").display());
        let store = CheckpointStore::from_url(&url, tmp.path()).unwrap();
        let checkpointer = Arc::new(TaskCheckpointer::new(
            store.clone(),
            TASK,
            GENERATION,
            "db-000001-aa".into(),
            local_dir.clone(),
            [],
            None,
        ));
        Task {
            state: KeyedState::new(db, 1 << 20),
            checkpointer,
            local_dir,
            store,
            _tmp: tmp,
        }
    }

    impl Task {
        async fn checkpoint(
            &mut self,
            id: u64,
            sealed: Sealed,
        ) -> Result<PhaseReport, CheckpointError> {
            let input = PhaseInput {
                id,
                snapshot: self.state.begin_snapshot().unwrap(),
                sealed,
                offsets: BTreeMap::from([(TASK, 100 * id)]),
                watermarks: BTreeMap::from([(TASK, 7 * id)]),
            };
            self.checkpointer.clone().run(input).await
        }

        fn local_checkpoint_dirs(&self) -> Vec<String> {
            std::fs::read_dir(&self.local_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("ckpt-"))
                .collect()
        }

        async fn manifest(&self, report: &PhaseReport) -> TaskManifest {
            let bytes = self.store.get_bytes(&report.manifest_key).await.unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    #[tokio::test]
    async fn uploads_new_files_and_reuses_the_ssts_the_store_has() {
        let mut task = task();
        for k in 0..1000u32 {
            task.state.put(&k.to_be_bytes(), b"", &[7; 100]).unwrap();
        }
        let first = task.checkpoint(1, Sealed::default()).await.unwrap();
        assert_eq!(
            first.manifest_key,
            paths::task_manifest_key(1, GENERATION, TASK)
        );
        assert_eq!(first.offsets, BTreeMap::from([(TASK, 100)]));
        // The watermark travels with the offsets, into the report and the manifest.
        assert_eq!(first.watermarks, BTreeMap::from([(TASK, 7)]));
        assert_eq!(
            task.manifest(&first).await.watermarks,
            BTreeMap::from([(TASK, 7)])
        );
        let manifest = task.manifest(&first).await;
        let ssts: Vec<&ManifestFile> = manifest
            .files
            .iter()
            .filter(|f| paths::is_immutable_db_file(&f.name))
            .collect();
        assert!(!ssts.is_empty(), "{:?}", manifest.files);
        assert_eq!(
            first.new_sst_bytes,
            ssts.iter().map(|f| f.meta.size).sum::<u64>()
        );
        assert_eq!(first.uploaded_bytes, manifest.total_bytes());
        assert_eq!(first.total_bytes, manifest.total_bytes());
        for f in manifest.files.iter() {
            assert!(task.store.exists(&f.key).await.unwrap(), "{}", f.key);
        }

        // Nothing written since: the SSTs are the first checkpoint's, not uploaded again.
        let second = task.checkpoint(2, Sealed::default()).await.unwrap();
        let again = task.manifest(&second).await;
        assert_eq!(second.new_sst_bytes, 0);
        for sst in &ssts {
            let reused = again.files.iter().find(|f| f.name == sst.name).unwrap();
            assert_eq!(reused.key, sst.key);
        }
        assert_eq!(
            second.uploaded_bytes,
            again
                .files
                .iter()
                .filter(|f| !paths::is_immutable_db_file(&f.name))
                .map(|f| f.meta.size)
                .sum::<u64>()
        );
        assert!(task.local_checkpoint_dirs().is_empty());
    }

    #[tokio::test]
    async fn output_that_cannot_be_made_durable_fails_the_phase_and_leaves_no_local_files() {
        let mut task = task();
        task.state.put(b"k", b"", b"v").unwrap();
        let sealed = Sealed {
            waits: vec![DurableWait::new(|| {
                Err(SinkError::Kafka {
                    topic: "out".into(),
                    message: "not acknowledged".into(),
                })
            })],
            ..Sealed::default()
        };
        let err = task.checkpoint(1, sealed).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Sink(_)), "{err}");
        assert!(
            task.local_checkpoint_dirs().is_empty(),
            "{:?}",
            task.local_checkpoint_dirs()
        );
        assert!(!task
            .store
            .exists(&paths::task_manifest_key(1, GENERATION, TASK))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_store_that_refuses_writes_fails_the_phase_leaves_no_local_files_and_the_next_one_uploads_everything(
    ) {
        let mut task = task();
        task.state.put(b"k", b"", b"v").unwrap();
        let root = task.store.local_root().unwrap().to_path_buf();
        // The store's directory replaced by a file: every write fails (even for root).
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, b"not a directory").unwrap();
        let err = task.checkpoint(1, Sealed::default()).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Storage(_)), "{err}");
        assert!(task.local_checkpoint_dirs().is_empty());

        // Once the store is back, nothing of the failed attempt counts as uploaded.
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let report = task.checkpoint(2, Sealed::default()).await.unwrap();
        let manifest = task.manifest(&report).await;
        for f in manifest.files.iter() {
            assert!(task.store.exists(&f.key).await.unwrap(), "{}", f.key);
        }
        assert_eq!(report.uploaded_bytes, manifest.total_bytes());
    }
}

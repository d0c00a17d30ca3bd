//! A warm standby's copy of the state it may take over (docs/recovery.md#warm-standbys).
//!
//! After each commit the standby fetches the immutable files (SSTs) of its container's tasks
//! that the checkpoint references and it does not hold yet, into a directory of its own, each
//! checked against the manifest's size and CRC32C as it arrives. Files no longer referenced are
//! dropped once a checkpoint is complete. At takeover the restore links these files instead of
//! reading them from the store again: they were verified when fetched, so only the small
//! mutable files (MANIFEST, OPTIONS, CURRENT) are fetched then, whatever the state's size.
//!
//! What this process verified is remembered in memory only: a file in the directory that the
//! map does not name (left by an earlier process, or cut short by a takeover) is never used,
//! and the directory is emptied when the process starts standing by.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::manifest::ManifestFile;
use super::{catalog, paths, CheckpointError};
use crate::storage::{CheckpointStore, FileMeta};

/// The files a standby holds, by store key: verified copies the restore may link.
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    files: Arc<Mutex<HashMap<String, (PathBuf, FileMeta)>>>,
}

impl Prefetched {
    /// Nothing prefetched (every process that is not a standby).
    pub fn none() -> Self {
        Self::default()
    }

    /// The verified local copy of `file`, if this process fetched it with the same size and
    /// checksum and it is still there with that size.
    pub fn copy_of(&self, file: &ManifestFile) -> Option<PathBuf> {
        let (path, meta) = self
            .files
            .lock()
            .expect("prefetch lock")
            .get(&file.key)
            .cloned()?;
        let size = std::fs::metadata(&path).ok()?.len();
        (meta == file.meta && size == file.meta.size).then_some(path)
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.files.lock().expect("prefetch lock").len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn holds(&self, key: &str) -> bool {
        self.files.lock().expect("prefetch lock").contains_key(key)
    }

    fn insert(&self, key: String, path: PathBuf, meta: FileMeta) {
        self.files
            .lock()
            .expect("prefetch lock")
            .insert(key, (path, meta));
    }

    /// Forgets every file not in `keep`, and deletes whatever `dir` holds that it does not
    /// name (those, and copies cut short).
    fn retain(&self, keep: &BTreeSet<String>, dir: &Path) {
        let mut files = self.files.lock().expect("prefetch lock");
        files.retain(|key, _| keep.contains(key));
        let held: BTreeSet<&PathBuf> = files.values().map(|(path, _)| path).collect();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if !held.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// What following one checkpoint fetched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// Files fetched now.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files the checkpoint references that were held already.
    pub held: u64,
}

/// Fetches the files a standby follows into `dir`, for a set of tasks.
pub struct Prefetcher {
    store: CheckpointStore,
    dir: PathBuf,
    tasks: Vec<u32>,
    prefetched: Prefetched,
    /// Names local copies: never reused within the process, so a copy cut short is never
    /// mistaken for another.
    next_name: u64,
}

impl Prefetcher {
    /// A prefetcher for `tasks`' files in `dir`, which it empties first (see the module doc).
    pub fn new(
        store: CheckpointStore,
        dir: PathBuf,
        tasks: Vec<u32>,
    ) -> Result<Self, CheckpointError> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Local {
            path: dir.clone(),
            source,
        })?;
        Ok(Prefetcher {
            store,
            dir,
            tasks,
            prefetched: Prefetched::none(),
            next_name: 0,
        })
    }

    /// What it holds; shared, so a takeover can use it while a follow is cut short.
    pub fn prefetched(&self) -> Prefetched {
        self.prefetched.clone()
    }

    /// Fetches what committed checkpoint `id` references for our tasks and is not held yet,
    /// then drops what it no longer references. Cancel-safe: a file counts as held only once
    /// it is complete and verified.
    pub async fn follow(&mut self, id: u64) -> Result<Followed, CheckpointError> {
        // Only our tasks' manifests: a standby of one container of P reads 1/P of them.
        let commit = catalog::load_commit(&self.store, id).await?;
        let mut manifests = Vec::new();
        for task in commit.tasks.iter().filter(|t| self.tasks.contains(&t.task)) {
            manifests.push(catalog::load_task_manifest(&self.store, &task.manifest).await?);
        }
        let mut referenced = BTreeSet::new();
        let mut followed = Followed::default();
        for manifest in &manifests {
            for file in manifest
                .files
                .iter()
                .filter(|f| paths::is_immutable_db_file(&f.name))
            {
                referenced.insert(file.key.clone());
                if self.prefetched.holds(&file.key) {
                    followed.held += 1;
                    continue;
                }
                self.next_name += 1;
                let local = self
                    .dir
                    .join(format!("{:08}-{}", self.next_name, file.name));
                self.store
                    .link_or_download(&file.key, &local, file.meta)
                    .await?;
                self.prefetched.insert(file.key.clone(), local, file.meta);
                followed.files += 1;
                followed.bytes += file.meta.size;
            }
        }
        self.prefetched.retain(&referenced, &self.dir);
        Ok(followed)
    }
}

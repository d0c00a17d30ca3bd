//! Restore planning — where a run starts: the job's own latest usable checkpoint, a savepoint
//! (same N), a savepoint re-split to a new partition count, or nothing. Produces, per task, a
//! database directory to open, the input offset to seek to, and the files already in the job's
//! store. It also owns the layout of the job's local directory (`task-NNNN` per task).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_contract::JobSpec;
use futures::{StreamExt, TryStreamExt};
use rocksdb::Cache;

use super::manifest::{ManifestFile, TaskManifest};
use super::prefetch::Prefetched;
use super::restore::{
    remove_stale_local_dirs, restore_task_db, restore_task_db_with, stored_files,
};
use super::savepoint::{self, SavepointLocation, SavepointManifest};
use super::{catalog, paths, repartition, CheckpointError};
use crate::partition::mix64;
use crate::state::{open_task_db, StateError};
use crate::storage::{CheckpointStore, StorageError};

/// The local directory of `task` in the job's directory.
pub fn task_dir(job_dir: &Path, task: u32) -> PathBuf {
    job_dir.join(format!("task-{task:04}"))
}

/// The file in a task's local directory where a running task marks its progress
/// (`runtime::recovery`).
pub const PROGRESS_MARK_FILE: &str = "progress-mark";

/// Why a run cannot start from what the store holds.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Restore failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A restored state database could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// The checkpoint does not fit this job.
    #[error("checkpoint {checkpoint} was taken with input.partitions = {found}, this spec has {expected}; changing the partition count needs a repartition from a savepoint, or restore nothing (a new checkpoint store)")]
    PartitionsChanged {
        /// The checkpoint.
        checkpoint: u64,
        /// N in the checkpoint.
        found: u32,
        /// N in the spec.
        expected: u32,
    },
}

/// One task, ready to open.
pub struct PreparedTask {
    /// Task id.
    pub task: u32,
    /// Its database directory (restored, re-split, or to be created).
    pub db_dir: PathBuf,
    /// The database instance id (namespaces its SSTs in the store).
    pub db_id: String,
    /// Input offset to seek to.
    pub offset: u64,
    /// Watermark to start from (jobs with event time; `None`: none yet).
    pub watermark: Option<u64>,
    /// Immutable files of this database already in the job's store (not uploaded again).
    pub known: Vec<ManifestFile>,
}

/// What a run starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No checkpoint, no savepoint: the beginning of the input.
    Fresh,
    /// The job's own committed checkpoint.
    Checkpoint(u64),
    /// A savepoint, re-split when `from_partitions` differs from the spec's N.
    Savepoint {
        /// Its URL.
        url: String,
        /// N when it was taken.
        from_partitions: u32,
        /// Whether its state was dropped (`restore.allowStateDrop`).
        state_dropped: bool,
    },
}

/// The prepared start of a run.
pub struct StartPoint {
    /// Per task, in task order.
    pub tasks: Vec<PreparedTask>,
    /// What it starts from.
    pub origin: Origin,
    /// Checkpoint id the file sink recovers to (publishes up to, discards after).
    pub sink_checkpoint: Option<u64>,
    /// Savepoint lineage recorded in every commit of this run.
    pub lineage: Option<String>,
    /// Bytes of state fetched from a store to start (what was already local is not counted).
    pub fetched_bytes: u64,
    /// The first checkpoint id of this run (set by [`prepare`] once the rest is ready): above
    /// every id in the store and, after a savepoint, above the checkpoint it was taken from
    /// (the file sink's epochs go on from it).
    pub first_id: u64,
}

/// Inputs of [`prepare`].
pub struct StartRequest<'a> {
    /// The job's checkpoint store.
    pub store: &'a CheckpointStore,
    /// The spec to run.
    pub spec: &'a JobSpec,
    /// `<state.dir>/<name>`.
    pub job_dir: &'a Path,
    /// Our generation.
    pub generation: u64,
    /// `--from-checkpoint`.
    pub checkpoint: Option<u64>,
    /// `--from-savepoint` (explicit: always used) or `restore.savepoint` (used until this
    /// lineage has a checkpoint of its own).
    pub savepoint: Option<(String, bool)>,
    /// Resolves relative URLs.
    pub base_dir: &'a Path,
    /// The task's state version.
    pub state_version: u32,
    /// Block cache for databases opened while re-splitting.
    pub cache: &'a Cache,
    /// The tasks this process runs (all of them, or one container's).
    pub only: &'a [u32],
    /// Names this process among the job's processes sharing `job_dir` (`all` in local mode,
    /// `c<K>` for container K): its re-split scratch is `repartition-<generation>-<process>`.
    pub process: &'a str,
    /// A warm standby's verified copies of checkpoint files, linked instead of read again
    /// (empty for every other process).
    pub prefetched: &'a Prefetched,
}

/// A fresh database instance id: generation plus randomness, never reused.
pub fn new_db_id(generation: u64, task: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let salt = mix64(nanos ^ ((std::process::id() as u64) << 32) ^ task as u64);
    format!("{generation:06}-{:08x}", salt as u32)
}

/// What to do about a checkpoint id at `u64::MAX` in the job's store.
const FIX_CHECKPOINT_ID: &str = "if that checkpoint was written by mistake remove it; otherwise start the job in a new, empty checkpoint store from a savepoint of an earlier checkpoint (`cairn-worker checkpoints <store-url>` lists them, `cairn-worker savepoint <store-url> --checkpoint <id>` takes one, `cairn-worker run --from-savepoint <savepoint-url>` starts from it)";

/// What to do about a savepoint taken from checkpoint `u64::MAX`.
const FIX_SAVEPOINT_ID: &str = "restore a savepoint of an earlier checkpoint instead (`cairn-worker savepoint <store-url> --checkpoint <id>`)";

/// The id after `id`, read from `key`; [`CheckpointError::IdsExhausted`] when there is none.
fn id_after(
    id: u64,
    key: impl FnOnce() -> String,
    what: &'static str,
    fix: &'static str,
) -> Result<u64, CheckpointError> {
    id.checked_add(1)
        .ok_or_else(|| CheckpointError::IdsExhausted {
            key: key(),
            what,
            id,
            fix,
        })
}

/// Decides where to start and rebuilds every task's state for it.
pub async fn prepare(req: StartRequest<'_>) -> Result<StartPoint, StartError> {
    // Scratch left by a process killed while re-splitting, before anything else uses the
    // job's directory.
    repartition::remove_dead_scratch(req.job_dir);
    let start = prepare_tasks(&req).await?;
    remove_dropped_task_dirs(req.job_dir, req.spec.input.partitions());
    Ok(start)
}

/// [`prepare`] without the clean-up of the job's local directory.
async fn prepare_tasks(req: &StartRequest<'_>) -> Result<StartPoint, StartError> {
    let max_id = catalog::max_checkpoint_id(req.store).await?;
    // New ids go above every id the store holds, checked before any state is restored.
    let above_store = id_after(
        max_id,
        || paths::checkpoint_prefix(max_id),
        "checkpoint",
        FIX_CHECKPOINT_ID,
    )?;
    if let Some((url, explicit)) = &req.savepoint {
        let location = SavepointLocation::from_url(url, req.base_dir)?;
        // Checked before reading the savepoint: once the job has checkpoints of its own, the
        // savepoint may be deleted.
        let resumed = !explicit && lineage_continues(req.store, &location.url()).await?;
        if !resumed {
            let manifest = location.load().await?;
            let above_savepoint = id_after(
                manifest.source_checkpoint,
                || format!("{}/{}", location.url(), savepoint::SAVEPOINT_FILE),
                "source checkpoint",
                FIX_SAVEPOINT_ID,
            )?;
            let mut start = from_savepoint(req, &location, &manifest).await?;
            start.first_id = above_savepoint.max(above_store);
            return Ok(start);
        }
        tracing::info!(savepoint = %location.url(), "this job already checkpointed after restoring the savepoint named in its spec; resuming from its own checkpoints");
    }
    let mut start = from_checkpoints(req).await?;
    start.first_id = above_store;
    Ok(start)
}

/// True when the job's newest commit descends from the savepoint at `url`.
async fn lineage_continues(store: &CheckpointStore, url: &str) -> Result<bool, CheckpointError> {
    let Some(newest) = catalog::committed_ids(store).await?.last().copied() else {
        return Ok(false);
    };
    Ok(catalog::load_commit(store, newest).await?.origin.as_deref() == Some(url))
}

/// Logs why a committed checkpoint cannot be restored and what happens next (`next`: the
/// checkpoint tried after it, if any) and, if it is damaged (not merely unreachable) and
/// restore may fall back, marks it unusable so that it is not tried again and retention
/// collects it.
async fn quarantine(req: &StartRequest<'_>, id: u64, e: &CheckpointError, next: Option<u64>) {
    let then = match (req.checkpoint, next) {
        (Some(_), _) => "--from-checkpoint asked for this one, so there is no fallback".to_owned(),
        (None, Some(next)) => format!("trying the previous one, checkpoint {next}"),
        (None, None) => "no older committed checkpoint to fall back to".to_owned(),
    };
    tracing::error!(checkpoint = id, error = %e, "checkpoint unusable; {then}");
    if req.checkpoint.is_none() && e.is_damage() {
        if let Err(mark) = catalog::mark_unusable(req.store, id, &e.to_string()).await {
            tracing::warn!(checkpoint = id, error = %mark, "could not mark the checkpoint unusable");
        }
    }
}

/// The newest usable committed checkpoint (or the requested one), falling back past unusable
/// ones with an error in the log naming what was wrong; fresh state if there is none.
async fn from_checkpoints(req: &StartRequest<'_>) -> Result<StartPoint, StartError> {
    let partitions = req.spec.input.partitions();
    let committed = catalog::committed_ids(req.store).await?;
    let candidates: Vec<u64> = match req.checkpoint {
        Some(id) if committed.contains(&id) => vec![id],
        Some(id) => {
            return Err(CheckpointError::NotCommitted {
                id,
                store: req.store.url().to_owned(),
            }
            .into())
        }
        None => committed.iter().rev().copied().collect(),
    };
    let mut last_error = String::new();
    for (i, id) in candidates.iter().enumerate() {
        let next = candidates.get(i + 1).copied();
        let (commit, manifests) = match catalog::load_checkpoint(req.store, *id).await {
            Ok(c) => c,
            Err(e) => {
                quarantine(req, *id, &e, next).await;
                last_error = e.to_string();
                continue;
            }
        };
        if commit.partitions != partitions {
            return Err(StartError::PartitionsChanged {
                checkpoint: *id,
                found: commit.partitions,
                expected: partitions,
            });
        }
        match restore_all(
            req.store,
            &manifests,
            req.job_dir,
            req.generation,
            true,
            req.only,
            req.prefetched,
        )
        .await
        {
            Ok((tasks, fetched_bytes)) => {
                return Ok(StartPoint {
                    tasks,
                    fetched_bytes,
                    origin: Origin::Checkpoint(*id),
                    sink_checkpoint: Some(*id),
                    lineage: commit.origin,
                    first_id: 0,
                })
            }
            Err(e) => {
                quarantine(req, *id, &e, next).await;
                last_error = e.to_string();
            }
        }
    }
    // Every checkpoint this job committed is damaged: never start from empty state silently.
    if candidates.is_empty() && req.checkpoint.is_none() {
        let unusable = catalog::unusable_ids(req.store).await?;
        if !unusable.is_empty() {
            return Err(CheckpointError::NothingRestorable {
                tried: unusable,
                last: "every committed checkpoint is marked unusable (see their _UNUSABLE.json); restore a savepoint, or point checkpoint.store at a new location to start from empty state".into(),
            }
            .into());
        }
    }
    if !candidates.is_empty() {
        return Err(CheckpointError::NothingRestorable {
            tried: candidates,
            last: last_error,
        }
        .into());
    }
    let offsets = BTreeMap::new();
    Ok(StartPoint {
        tasks: fresh(req, &offsets),
        fetched_bytes: 0,
        origin: Origin::Fresh,
        sink_checkpoint: None,
        lineage: None,
        first_id: 0,
    })
}

fn fresh(req: &StartRequest<'_>, offsets: &BTreeMap<u32, u64>) -> Vec<PreparedTask> {
    req.only
        .iter()
        .map(|&task| {
            let db_id = new_db_id(req.generation, task);
            let dir = task_dir(req.job_dir, task);
            let db_dir = dir.join(format!("db-{db_id}"));
            remove_stale_local_dirs(&dir, &db_dir);
            PreparedTask {
                task,
                db_dir,
                db_id,
                offset: offsets.get(&task).copied().unwrap_or(0),
                watermark: None,
                known: Vec::new(),
            }
        })
        .collect()
}

async fn from_savepoint(
    req: &StartRequest<'_>,
    location: &SavepointLocation,
    sp: &SavepointManifest,
) -> Result<StartPoint, StartError> {
    let spec = req.spec;
    let partitions = spec.input.partitions();
    let compatible = sp.task_name == spec.task.name && sp.state_version == req.state_version;
    if !compatible && !spec.restore.allow_state_drop {
        return Err(CheckpointError::IncompatibleState {
            saved: sp.task_name.clone(),
            saved_version: sp.state_version,
            now: spec.task.name.clone(),
            now_version: req.state_version,
        }
        .into());
    }
    // Partitions that still exist keep their offsets, new ones start at 0 (see docs/savepoints.md).
    let offsets: BTreeMap<u32, u64> = if spec.restore.reset_offsets {
        BTreeMap::new()
    } else {
        sp.tasks
            .iter()
            .flat_map(|t| t.offsets.clone())
            .filter(|(p, _)| *p < partitions)
            .collect()
    };
    let (mut tasks, fetched_bytes) = if !compatible {
        tracing::warn!(saved = %sp.task_name, now = %spec.task.name, "restore.allowStateDrop: starting with empty state and the savepoint's offsets");
        (fresh(req, &offsets), 0)
    } else if sp.partitions == partitions {
        let (mut tasks, fetched) = restore_all(
            &location.store,
            &sp.task_manifests(location),
            req.job_dir,
            req.generation,
            false,
            req.only,
            &Prefetched::none(),
        )
        .await?;
        for t in tasks.iter_mut() {
            t.offset = offsets.get(&t.task).copied().unwrap_or(0);
        }
        (tasks, fetched)
    } else {
        resplit(req, location, sp, &offsets).await?
    };
    let watermarks = savepoint_watermarks(sp, partitions, spec.restore.reset_offsets);
    for t in tasks.iter_mut() {
        t.watermark = watermarks(t.task);
    }
    tracing::info!(savepoint = %sp.id, from_partitions = sp.partitions, to_partitions = partitions, "restored from savepoint");
    Ok(StartPoint {
        tasks,
        fetched_bytes,
        origin: Origin::Savepoint {
            url: location.url(),
            from_partitions: sp.partitions,
            state_dropped: !compatible,
        },
        sink_checkpoint: Some(sp.source_checkpoint),
        lineage: Some(location.url()),
        first_id: 0,
    })
}

/// The watermark each task of a job with `partitions` partitions starts from when restored
/// from `sp`. With the same N every task keeps its own. A re-split moves keys (and their
/// timers) between partitions, so every task starts at the lowest of the savepoint's
/// watermarks (none if any task had none): no window is closed earlier than in the task the
/// key came from, and no record is late that was not late there. `restore.resetOffsets`
/// (another input) drops them.
fn savepoint_watermarks(
    sp: &SavepointManifest,
    partitions: u32,
    reset_offsets: bool,
) -> impl Fn(u32) -> Option<u64> {
    let kept: BTreeMap<u32, u64> = if reset_offsets || sp.partitions != partitions {
        BTreeMap::new()
    } else {
        sp.tasks
            .iter()
            .flat_map(|t| t.watermarks.clone())
            .filter(|(p, _)| *p < partitions)
            .collect()
    };
    let lowest = if reset_offsets {
        None
    } else {
        sp.tasks
            .iter()
            .map(|t| t.watermarks.get(&t.task).copied())
            .try_fold(u64::MAX, |low, w| w.map(|w| low.min(w)))
            .filter(|_| !sp.tasks.is_empty())
    };
    move |task| kept.get(&task).copied().or(lowest)
}

/// N -> N': restore the old tasks into scratch directories, split them into one SST per new
/// partition, ingest into fresh databases.
async fn resplit(
    req: &StartRequest<'_>,
    location: &SavepointLocation,
    sp: &SavepointManifest,
    offsets: &BTreeMap<u32, u64>,
) -> Result<(Vec<PreparedTask>, u64), StartError> {
    let partitions = req.spec.input.partitions();
    // Every process of the job re-splits for its own tasks, at the same time, in its own
    // scratch (removed when `scratch` is dropped, on success or error).
    let scratch = repartition::Scratch::acquire(req.job_dir, req.generation, req.process)?;
    let started = std::time::Instant::now();
    // A pipeline per core: restore an old task, then split it while the next one restores
    // (reading the store and checksumming overlaps with splitting, which is CPU-bound).
    let manifests = sp.task_manifests(location);
    let scratch_dir = scratch.path();
    let split_dir = scratch_dir.join("split");
    let splits: Vec<(repartition::Split, u64)> =
        futures::stream::iter(manifests.iter().enumerate().map(|(index, m)| {
            let split_dir = split_dir.clone();
            let wanted = req.only.to_vec();
            async move {
                let dir = scratch_dir.join(format!("old-{:04}", m.task));
                let (db_dir, stats) = restore_task_db(&location.store, m, &dir, "old").await?;
                let split = tokio::task::spawn_blocking(move || {
                    repartition::split_db(&db_dir, partitions, &wanted, &split_dir, index)
                })
                .await
                .expect("split thread panicked")?;
                Ok::<_, StartError>((split, stats.downloaded_bytes))
            }
        }))
        .buffer_unordered(repartition::split_parallelism())
        .try_collect()
        .await?;
    let mut split = repartition::Split::empty(partitions);
    let mut fetched = 0;
    for (one, downloaded) in splits {
        split.merge(one);
        fetched += downloaded;
    }
    let split_seconds = started.elapsed().as_secs_f64();
    let mut tasks = fresh(req, offsets);
    for task in &tasks {
        let db = open_task_db(&task.db_dir, req.cache)?;
        repartition::ingest(&db, &split.files[task.task as usize])?;
    }
    drop(scratch);
    tracing::info!(
        from = sp.partitions,
        to = partitions,
        entries = split.entries,
        bytes = split.bytes,
        restore_and_split_seconds = split_seconds,
        seconds = started.elapsed().as_secs_f64(),
        "state re-split"
    );
    for t in &mut tasks {
        t.known.clear();
    }
    Ok((tasks, fetched))
}

/// Restores every task of a checkpoint (or same-N savepoint) in parallel. `reuse` keeps the
/// manifests' immutable files as already stored (true for the job's own checkpoints; false for
/// savepoints, whose files must not be referenced by the job's checkpoints).
async fn restore_all(
    store: &CheckpointStore,
    manifests: &[TaskManifest],
    job_dir: &Path,
    generation: u64,
    reuse: bool,
    only: &[u32],
    prefetched: &Prefetched,
) -> Result<(Vec<PreparedTask>, u64), CheckpointError> {
    let mut sorted: Vec<&TaskManifest> = manifests
        .iter()
        .filter(|m| only.contains(&m.task))
        .collect();
    sorted.sort_by_key(|m| m.task);
    let restores = sorted.iter().map(|m| {
        let dir = task_dir(job_dir, m.task);
        let db_id = new_db_id(generation, m.task);
        async move {
            let (db_dir, stats) = restore_task_db_with(store, m, &dir, &db_id, prefetched).await?;
            tracing::debug!(task = m.task, ?stats, "task state restored");
            let known = if reuse {
                stored_files(m, &stats)
            } else {
                Vec::new()
            };
            let offset = m.offsets.get(&m.task).copied().unwrap_or(0);
            Ok::<_, CheckpointError>((
                dir,
                stats.downloaded_bytes,
                PreparedTask {
                    task: m.task,
                    db_dir,
                    db_id,
                    offset,
                    watermark: m.watermarks.get(&m.task).copied(),
                    known,
                },
            ))
        }
    });
    let results = futures::future::join_all(restores).await;
    let mut prepared = Vec::with_capacity(results.len());
    for r in results {
        prepared.push(r?);
    }
    for (dir, _, p) in &prepared {
        remove_stale_local_dirs(dir.as_path(), &p.db_dir);
    }
    let fetched = prepared.iter().map(|(_, bytes, _)| bytes).sum();
    Ok((prepared.into_iter().map(|(_, _, p)| p).collect(), fetched))
}

/// Entries of a task's local directory that the worker writes there (see
/// `restore::remove_stale_local_dirs`): database instances, checkpoint snapshots, restores in
/// progress, the progress mark (and its temporary file).
const TASK_DIR_ENTRIES: [&str; 4] = ["db-", "ckpt-", "restoring-", PROGRESS_MARK_FILE];

/// After a successful start, removes the local directories `task-NNNN` of tasks the job no
/// longer has (NNNN >= N, left by a run with more partitions; each holds a whole database).
/// Tasks below N belong to this process or another of the job and are never touched. Only
/// directories holding nothing but the worker's own state entries are removed: anything else
/// (say, output a misconfigured sink wrote there) is left with a warning.
fn remove_dropped_task_dirs(job_dir: &Path, partitions: u32) {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Some(task) = entry.file_name().to_str().and_then(task_of_dir_name) else {
            continue;
        };
        // `file_type` does not follow symbolic links: a link is never a task directory.
        if task < partitions || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if !holds_only_task_state(&path) {
            tracing::warn!(path = %path.display(), task, partitions, "directory of a task this job no longer has holds files the worker did not write; left in place");
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), task, partitions, "removed the local state of a task this job no longer has")
            }
            // Another process of the job removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove the local state of a task this job no longer has")
            }
        }
    }
}

/// The task of a directory named `task-NNNN` (exactly as [`task_dir`] names them: `task-`
/// and at least four digits).
fn task_of_dir_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("task-")?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True when every entry of `dir` is one the worker writes into a task directory.
fn holds_only_task_state(dir: &Path) -> bool {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.all(|e| {
        e.ok()
            .and_then(|e| e.file_name().into_string().ok())
            .is_some_and(|name| TASK_DIR_ENTRIES.iter().any(|p| name.starts_with(p)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_directory_names_parse_back_and_nothing_else_does() {
        assert_eq!(task_of_dir_name("task-0007"), Some(7));
        assert_eq!(task_of_dir_name("task-12345"), Some(12345));
        for other in [
            "task-7",
            "task-00a7",
            "task-",
            "tasks-0007",
            "task-0007x",
            "task--007",
        ] {
            assert_eq!(task_of_dir_name(other), None, "{other}");
        }
    }

    #[test]
    fn only_directories_of_dropped_tasks_holding_only_state_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path();
        for task in 0..6u32 {
            let dir = task_dir(job, task);
            std::fs::create_dir_all(dir.join("db-000001-0000abcd")).unwrap();
            std::fs::write(dir.join("db-000001-0000abcd/000001.sst"), b"x").unwrap();
            std::fs::create_dir_all(dir.join("ckpt-000000000003")).unwrap();
            std::fs::write(dir.join(PROGRESS_MARK_FILE), b"10 20\n").unwrap();
        }
        // Task 5's directory also holds something the worker never writes there.
        std::fs::write(task_dir(job, 5).join("000000000007.out"), b"k\t1\n").unwrap();
        // A symbolic link named like a dropped task, pointing at state that must survive.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("db-x")).unwrap();
        std::os::unix::fs::symlink(&outside, job.join("task-0009")).unwrap();

        remove_dropped_task_dirs(job, 4);

        let mut left: Vec<String> = std::fs::read_dir(job)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "outside",
                "task-0000",
                "task-0001",
                "task-0002",
                "task-0003",
                "task-0005",
                "task-0009"
            ]
        );
        assert!(task_dir(job, 3)
            .join("db-000001-0000abcd/000001.sst")
            .exists());
        assert!(outside.join("db-x").is_dir());
    }
}

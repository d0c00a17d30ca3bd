//! Running a whole job in this process: claim a generation, restore the latest usable
//! committed checkpoint (falling back past unusable ones), start the containers and the
//! coordinator, serve metrics, and stop cleanly on a signal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_spec::JobSpec;
use rocksdb::Cache;
use tokio::sync::{mpsc, watch};

use super::container;
use super::progress;
use super::task_instance::{InstanceError, TaskInstance};
use crate::checkpoint::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, Ending, JobProgress, TriggerRequest,
};
use crate::checkpoint::manifest::{CommitRecord, TaskManifest};
use crate::checkpoint::restore::{remove_stale_local_dirs, restore_task_db};
use crate::checkpoint::upload::TaskCheckpointer;
use crate::checkpoint::{catalog, generation, paths, CheckpointError};
use crate::metrics::Metrics;
use crate::partition::mix64;
use crate::source::SourceFactory;
use crate::state::{open_task_db, KeyedState, StateError};
use crate::storage::{CheckpointStore, StorageError};
use crate::task::{TaskError, TaskRegistry};

/// Everything `cairn-worker run` needs.
pub struct RunOptions {
    /// The validated job spec.
    pub spec: JobSpec,
    /// Tasks this binary knows.
    pub registry: TaskRegistry,
    /// Restore this checkpoint instead of the latest.
    pub from_checkpoint: Option<u64>,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Show live progress on the terminal.
    pub show_progress: bool,
    /// Where the run reports metrics and progress (injected so embedders and benchmarks can
    /// read them).
    pub metrics: Arc<Metrics>,
    /// Checkpoint progress of the run.
    pub progress: Arc<JobProgress>,
    /// Directory that relative paths in the spec are resolved against.
    pub base_dir: PathBuf,
    /// Fault-injection knob for tests: pause before each uploaded file.
    pub upload_delay: Option<Duration>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Finished or stopped, with the final checkpoint.
    pub ending: Ending,
    /// The checkpoint restored at start, if any.
    pub restored_from: Option<u64>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store URL is unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Restore or the checkpoint protocol failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The task could not be built (unknown name, bad config).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The state database could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// A task could not start.
    #[error("task {task}: {source}")]
    Instance {
        /// Task id.
        task: u32,
        /// Why.
        #[source]
        source: InstanceError,
    },
    /// The job stopped on an error.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
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
    /// Local files could not be prepared.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the job to completion (finite input) or until SIGINT/SIGTERM.
pub fn run_job(opts: RunOptions) -> Result<Outcome, RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cairn-io")
        .build()
        .map_err(|source| RunError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (trigger_tx, trigger_rx) = mpsc::channel(8);
    runtime.spawn(forward_signals(shutdown_tx, trigger_tx));
    runtime.block_on(run_async(opts, shutdown_rx, trigger_rx))
}

/// SIGINT/SIGTERM: stop with a final checkpoint (a second one exits at once). SIGUSR1: take a
/// checkpoint now (the on-demand trigger of local mode; the operator uses the control API).
async fn forward_signals(shutdown: watch::Sender<bool>, triggers: mpsc::Sender<TriggerRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the job with SIGKILL");
        return;
    };
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = usr1.recv() => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                if triggers.try_send(reply).is_ok() {
                    tokio::spawn(async move {
                        match answer.await {
                            Ok(Ok(id)) => tracing::info!(checkpoint = id, "on-demand checkpoint committed"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "on-demand checkpoint failed"),
                            Err(_) => {}
                        }
                    });
                }
                continue;
            }
        }
        if stopping {
            tracing::warn!("second stop request: exiting without a final checkpoint");
            std::process::exit(130);
        }
        stopping = true;
        tracing::info!(
            "stop requested: taking a final checkpoint (press Ctrl-C again to exit at once)"
        );
        let _ = shutdown.send(true);
    }
}

/// The job's local directory: `<state.dir>/<job name>`.
pub fn job_state_dir(spec: &JobSpec, base: &Path) -> PathBuf {
    base.join(&spec.state.dir).join(&spec.name)
}

/// Directory of task `task`.
pub fn task_dir(job_dir: &Path, task: u32) -> PathBuf {
    job_dir.join(format!("task-{task:04}"))
}

fn new_db_id(generation: u64, task: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let salt = mix64(nanos ^ ((std::process::id() as u64) << 32) ^ task as u64);
    format!("{generation:06}-{:08x}", salt as u32)
}

/// A task's restored (or fresh) database.
struct PreparedTask {
    db_dir: PathBuf,
    db_id: String,
    manifest: Option<TaskManifest>,
}

async fn run_async(
    opts: RunOptions,
    shutdown: watch::Receiver<bool>,
    trigger_rx: mpsc::Receiver<TriggerRequest>,
) -> Result<Outcome, RunError> {
    let spec = &opts.spec;
    let partitions = spec.input.partitions();
    let store = CheckpointStore::from_url(&spec.checkpoint.store, &opts.base_dir)?;
    let job_dir = job_state_dir(spec, &opts.base_dir);
    std::fs::create_dir_all(&job_dir).map_err(|source| RunError::Io {
        path: job_dir.clone(),
        source,
    })?;
    let who = format!("pid {} on {}", std::process::id(), hostname());
    let generation = generation::claim(&store, &who).await?;
    let metrics = opts.metrics.clone();

    // Restore.
    let restore_started = Instant::now();
    let (restored, prepared) =
        restore(&store, spec, &job_dir, generation, opts.from_checkpoint).await?;
    metrics
        .restore_seconds
        .set(restore_started.elapsed().as_secs_f64());
    let restored_id = restored.as_ref().map(|c| c.checkpoint);
    match &restored {
        Some(c) => tracing::info!(
            checkpoint = c.checkpoint,
            generation,
            seconds = restore_started.elapsed().as_secs_f64(),
            "restored"
        ),
        None => tracing::info!(
            generation,
            "no committed checkpoint: starting from the beginning of the input"
        ),
    }
    let first_id = catalog::max_checkpoint_id(&store).await? + 1;

    // Build task instances.
    let block_cache = Cache::new_lru_cache(spec.state.cache_size as usize);
    let sources = SourceFactory::new(&spec.input);
    let mut instances = Vec::with_capacity(partitions as usize);
    for (task, prepared) in (0..partitions).zip(prepared) {
        let db = open_task_db(&prepared.db_dir, &block_cache)?;
        let state = KeyedState::new(db, spec.state.cache_size);
        let mut source = sources.open(task);
        let offset = prepared
            .manifest
            .as_ref()
            .and_then(|m| m.offsets.get(&task).copied())
            .unwrap_or(0);
        source.seek(offset).map_err(|e| RunError::Instance {
            task,
            source: e.into(),
        })?;
        let sink =
            crate::sink::open(&spec.output, task, restored_id).map_err(|e| RunError::Instance {
                task,
                source: e.into(),
            })?;
        let known = prepared
            .manifest
            .iter()
            .flat_map(|m| {
                m.files
                    .iter()
                    .filter(|f| paths::is_immutable_db_file(&f.name))
                    .cloned()
            })
            .collect::<Vec<_>>();
        let checkpointer = Arc::new(TaskCheckpointer::new(
            store.clone(),
            task,
            generation,
            prepared.db_id.clone(),
            task_dir(&job_dir, task),
            known,
            opts.upload_delay,
        ));
        let user_task = opts.registry.build(&spec.task.name, &spec.task.config)?;
        let instance = TaskInstance::open(
            task,
            user_task,
            state,
            source,
            sink,
            checkpointer,
            metrics.clone(),
        )
        .map_err(|source| RunError::Instance { task, source })?;
        instances.push(instance);
    }

    // Containers: task t runs in container t % P.
    let parallelism = spec.parallelism.max(1);
    let assignment: BTreeMap<u32, u32> = (0..partitions).map(|t| (t, t % parallelism)).collect();
    let mut groups: Vec<Vec<TaskInstance>> = (0..parallelism).map(|_| Vec::new()).collect();
    for inst in instances {
        groups[(inst.id % parallelism) as usize].push(inst);
    }
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for (index, tasks) in groups.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        senders.push(tx);
        let events = event_tx.clone();
        let handle = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("cairn-container-{index}"))
            .spawn(move || container::run(tasks, rx, events, handle))
            .map_err(|source| RunError::Io {
                path: "container thread".into(),
                source,
            })?;
        threads.push(thread);
    }
    drop(event_tx);

    let progress = opts.progress.clone();
    if let Some(addr) = opts.metrics_addr {
        crate::http::serve(addr, metrics.clone(), progress.clone()).await?;
    }
    let progress_thread = opts
        .show_progress
        .then(|| progress::spawn(metrics.clone(), progress.clone()));

    let coordinator = Coordinator::new(
        CoordinatorConfig {
            store: store.clone(),
            generation,
            spec: spec.clone(),
            assignment,
            first_id,
            restored: restored_id,
        },
        senders,
        event_rx,
        trigger_rx,
        metrics.clone(),
        progress.clone(),
    );
    let ending = coordinator.run(shutdown).await;
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .expect("joining containers");
    if let Some(p) = progress_thread {
        p.stop();
    }
    Ok(Outcome {
        ending: ending?,
        restored_from: restored_id,
    })
}

/// Picks and rebuilds the checkpoint to start from. With `requested`, only that one; otherwise
/// the newest committed checkpoint whose files are all present and intact, falling back to
/// older ones with an error in the log naming what was wrong.
async fn restore(
    store: &CheckpointStore,
    spec: &JobSpec,
    job_dir: &Path,
    generation: u64,
    requested: Option<u64>,
) -> Result<(Option<CommitRecord>, Vec<PreparedTask>), RunError> {
    let partitions = spec.input.partitions();
    let committed = catalog::committed_ids(store).await?;
    let candidates: Vec<u64> = match requested {
        Some(id) if committed.contains(&id) => vec![id],
        Some(id) => {
            return Err(CheckpointError::NotCommitted {
                id,
                store: store.url().to_owned(),
            }
            .into())
        }
        None => committed.iter().rev().copied().collect(),
    };
    let mut last_error = String::new();
    for id in &candidates {
        let (commit, manifests) = match catalog::load_checkpoint(store, *id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(checkpoint = id, error = %e, "checkpoint unusable; trying the previous one");
                last_error = e.to_string();
                continue;
            }
        };
        if commit.partitions != partitions {
            return Err(RunError::PartitionsChanged {
                checkpoint: *id,
                found: commit.partitions,
                expected: partitions,
            });
        }
        match restore_all(store, &manifests, job_dir, generation).await {
            Ok(prepared) => return Ok((Some(commit), prepared)),
            Err(e) => {
                tracing::error!(checkpoint = id, error = %e, "checkpoint unusable; trying the previous one");
                last_error = e.to_string();
            }
        }
    }
    if !candidates.is_empty() {
        return Err(CheckpointError::NothingRestorable {
            tried: candidates,
            last: last_error,
        }
        .into());
    }
    let fresh = (0..partitions)
        .map(|task| {
            let db_id = new_db_id(generation, task);
            let dir = task_dir(job_dir, task);
            let db_dir = dir.join(format!("db-{db_id}"));
            remove_stale_local_dirs(&dir, &db_dir);
            PreparedTask {
                db_dir,
                db_id,
                manifest: None,
            }
        })
        .collect();
    Ok((None, fresh))
}

async fn restore_all(
    store: &CheckpointStore,
    manifests: &[TaskManifest],
    job_dir: &Path,
    generation: u64,
) -> Result<Vec<PreparedTask>, CheckpointError> {
    let mut sorted: Vec<&TaskManifest> = manifests.iter().collect();
    sorted.sort_by_key(|m| m.task);
    let restores = sorted.iter().map(|m| {
        let dir = task_dir(job_dir, m.task);
        let db_id = new_db_id(generation, m.task);
        async move {
            let (db_dir, stats) = restore_task_db(store, m, &dir, &db_id).await?;
            tracing::debug!(task = m.task, ?stats, "task state restored");
            Ok::<_, CheckpointError>((
                dir,
                PreparedTask {
                    db_dir,
                    db_id,
                    manifest: Some((*m).clone()),
                },
            ))
        }
    });
    let results = futures::future::join_all(restores).await;
    let mut prepared = Vec::with_capacity(results.len());
    let mut first_error = None;
    for r in results {
        match r {
            Ok(p) => prepared.push(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    for (dir, p) in &prepared {
        remove_stale_local_dirs(dir, &p.db_dir);
    }
    Ok(prepared.into_iter().map(|(_, p)| p).collect())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

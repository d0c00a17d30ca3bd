//! Running a whole job in this process: claim a generation, restore the latest usable
//! committed checkpoint (falling back past unusable ones), start the containers and the
//! coordinator, serve metrics, and stop cleanly on a signal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_contract::control::Recovery;
use cairn_contract::JobSpec;
use rocksdb::Cache;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as Deadline;

use super::container;
use super::event_time::EventClock;
use super::held::HeldJob;
use super::job_progress::Ended;
use super::messages::{Command, Event, Request};
use super::objective::Objective;
use super::progress::{self, ProgressThread};
use super::recovery::{self, MarkFile, TaskRecovery, TaskRestart};
use super::remote::{self, ContainerLink, CoordinatorConnection, Introduction, Joined, RelayEnd};
use super::standby::{self, StandbyEnd};
use super::task_instance::{InstanceError, TaskInstance};
use crate::checkpoint::prefetch::{Prefetched, Prefetcher};
use crate::checkpoint::start::{self, task_dir, Origin, StartError, StartPoint, StartRequest};
use crate::checkpoint::upload::TaskCheckpointer;
use crate::checkpoint::{generation, CheckpointError};
use crate::control::{self, read_token, ControlConfig, ControlError, ControlHandles};
use crate::metrics::Metrics;
use crate::runtime::coordinator::{
    deadline_after, place_tasks, Coordinator, CoordinatorConfig, CoordinatorError, Ending,
    JobProgress,
};
use crate::source::{SourceError, SourceFactory};
use crate::state::{open_task_db, KeyedState, StateError};
use crate::storage::{CheckpointStore, StorageError};
use crate::task::{TaskError, TaskRegistry};

/// How long the control API stays up after a stop-with-savepoint whose result nobody has read.
const CONTROL_LINGER: Duration = Duration::from_secs(30);

// Default `--stop-timeout`, and how much longer the other containers wait: the pod contract,
// with the operator's termination grace period they must fit in.
pub use cairn_contract::pod::{CONTAINER_STOP_MARGIN, DEFAULT_STOP_TIMEOUT};

/// Everything `cairn-worker run` needs.
pub struct RunOptions {
    /// The validated job spec.
    pub spec: JobSpec,
    /// Tasks this binary knows.
    pub registry: TaskRegistry,
    /// Restore this checkpoint instead of the latest.
    pub from_checkpoint: Option<u64>,
    /// Start from this savepoint (URL of its directory), whatever the store holds.
    pub from_savepoint: Option<String>,
    /// Serve the authenticated control API (docs/control-api.md).
    pub control: Option<ControlConfig>,
    /// Which containers this process runs.
    pub role: Role,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Timeouts and connection limit of the `/metrics` server.
    pub http_limits: crate::http::HttpLimits,
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
    /// After the job stops (stop-with-savepoint, `/v1/stop`), keep the process alive until
    /// SIGTERM/SIGINT instead of exiting. On Kubernetes an exited worker is restarted by the
    /// kubelet and would resume from its last checkpoint; holding keeps a stopped job stopped
    /// until the operator deletes its pods.
    pub hold_after_stop: bool,
}

/// Which of the job's P containers a process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Role {
    /// All of them, as threads, with the coordinator (local mode).
    #[default]
    AllContainers,
    /// Container 0 and the coordinator, accepting containers 1..P on `listen`.
    Coordinator {
        /// Where containers connect.
        listen: std::net::SocketAddr,
        /// File with the token every container must present.
        token_file: PathBuf,
        /// After SIGTERM, how long the final checkpoint may take; then the coordinator stops
        /// the containers without it and exits with an error (the job resumes from the last
        /// committed checkpoint).
        stop_timeout: Duration,
    },
    /// Container `index` (1..P) of the coordinator at `coordinator` (host:port).
    Container {
        /// Container index.
        index: u32,
        /// The coordinator's address.
        coordinator: String,
        /// File with the token to present to the coordinator.
        token_file: PathBuf,
        /// The coordinator's stop timeout: after SIGTERM this container keeps serving the
        /// coordinator's final checkpoint, and exits with an error if it has not been told to
        /// stop within this (plus a margin).
        stop_timeout: Duration,
    },
}

impl Role {
    /// After SIGTERM, how long this process may take to stop; `None`: no deadline (local
    /// mode has no other process to wait for).
    fn stop_wait(&self) -> Option<Duration> {
        match self {
            Role::AllContainers => None,
            Role::Coordinator { stop_timeout, .. } => Some(*stop_timeout),
            Role::Container { stop_timeout, .. } => {
                Some(stop_timeout.saturating_add(CONTAINER_STOP_MARGIN))
            }
        }
    }

    /// The file with the token the job's processes authenticate to each other with; `None`
    /// in local mode (one process, nothing to authenticate).
    fn token_file(&self) -> Option<&Path> {
        match self {
            Role::AllContainers => None,
            Role::Coordinator { token_file, .. } | Role::Container { token_file, .. } => {
                Some(token_file)
            }
        }
    }

    /// What the process says it does when a signal asks it to stop.
    fn stop_message(&self, parallelism: u32) -> String {
        match (self, self.stop_wait()) {
            (Role::Coordinator { .. }, Some(wait)) => format!(
                "stop requested: taking a final checkpoint with every container (parallelism {parallelism}), then stopping them (giving up after {wait:?}; signal again to exit at once)"
            ),
            (Role::Container { index, .. }, Some(wait)) => format!(
                "stop requested: container {index} keeps running its tasks until the coordinator has taken its final checkpoint and stops it (waiting at most {wait:?}; signal again to exit at once)"
            ),
            _ => "stop requested: taking a final checkpoint (press Ctrl-C again to exit at once)"
                .to_owned(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Finished or stopped, with the final checkpoint.
    pub ending: Ending,
    /// What the run started from; `None` for a warm standby that never took over.
    pub origin: Option<Origin>,
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
    /// The input does not match the spec (a Kafka topic that is missing or has another
    /// partition count), found before anything was restored.
    #[error(transparent)]
    Input(#[from] SourceError),
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
    /// The store holds nothing this run can start from as the spec asks.
    #[error(transparent)]
    Start(#[from] StartError),
    /// This container lost its coordinator (it restarts and reconnects).
    #[error("lost the coordinator at {addr}; restart this container to restore its tasks from the last committed checkpoint and rejoin")]
    CoordinatorLost {
        /// The coordinator's address.
        addr: String,
    },
    /// This container was told to terminate and its coordinator did not stop the job in time.
    #[error("stop requested by a signal, but the coordinator at {addr} did not stop the job within {waited:?}: exiting without a final checkpoint; this container's tasks restart from the last committed checkpoint")]
    StopTimedOut {
        /// The coordinator's address.
        addr: String,
        /// How long the container waited.
        waited: Duration,
    },
    /// Joining the coordinator failed.
    #[error(transparent)]
    Remote(#[from] crate::runtime::remote::RemoteError),
    /// The control API could not start.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The metrics address cannot be bound.
    #[error(transparent)]
    MetricsBind(#[from] crate::http::BindError),
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
    let shutdown_tx = Arc::new(shutdown_tx);
    let (signalled_tx, signalled_rx) = watch::channel(false);
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let (request_tx, request_rx) = mpsc::channel(8);
    let parallelism = opts.spec.parallelism.max(1);
    runtime.spawn(forward_signals(SignalTargets {
        shutdown: shutdown_tx.clone(),
        requests: request_tx.clone(),
        signalled: signalled_tx,
        stop_deadline: deadline_tx,
        stop_wait: opts.role.stop_wait(),
        stop_message: opts.role.stop_message(parallelism),
    }));
    let controls = Controls {
        shutdown: shutdown_tx,
        requests: request_tx,
        stop: shutdown_rx,
        signalled: signalled_rx,
        stop_deadline: deadline_rx,
    };
    runtime.block_on(run_async(opts, controls, request_rx))
}

/// What the signal handler steers.
struct SignalTargets {
    /// Set on SIGINT/SIGTERM: the coordinator stops the job.
    shutdown: Arc<watch::Sender<bool>>,
    /// On-demand checkpoints and savepoints.
    requests: mpsc::Sender<Request>,
    /// Set on SIGINT/SIGTERM: this process was told to terminate, so it never holds.
    signalled: watch::Sender<bool>,
    /// Set on SIGINT/SIGTERM to now + `stop_wait`, if there is one.
    stop_deadline: watch::Sender<Option<Deadline>>,
    /// See [`Role::stop_wait`].
    stop_wait: Option<Duration>,
    /// See [`Role::stop_message`].
    stop_message: String,
}

/// SIGINT/SIGTERM: stop with a final checkpoint (a second one exits at once). SIGUSR1: take a
/// checkpoint now; SIGUSR2: take a savepoint and keep running (local mode's on-demand triggers;
/// the operator uses the control API).
async fn forward_signals(targets: SignalTargets) {
    use tokio::signal::unix::{signal, SignalKind};
    let SignalTargets {
        shutdown,
        requests,
        signalled,
        stop_deadline,
        stop_wait,
        stop_message,
    } = targets;
    let (Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
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
                if requests.try_send(Request::Checkpoint(reply)).is_ok() {
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = answer.await {
                            tracing::warn!(error = %e, "on-demand checkpoint failed");
                        }
                    });
                }
                continue;
            }
            _ = usr2.recv() => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                if requests.try_send(Request::Savepoint { stop: false, reply }).is_ok() {
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = answer.await {
                            tracing::warn!(error = %e, "on-demand savepoint failed");
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
        if let Some(wait) = stop_wait {
            let _ = stop_deadline.send(Some(deadline_after(Deadline::now(), wait)));
        }
        if *shutdown.borrow() {
            tracing::info!("signal received while the job is stopping or stopped: exiting once it has stopped (signal again to exit at once)");
        } else {
            tracing::info!("{stop_message}");
        }
        let _ = signalled.send(true);
        let _ = shutdown.send(true);
    }
}

/// The ways a run is steered: stop, and requests to the coordinator.
struct Controls {
    shutdown: Arc<watch::Sender<bool>>,
    requests: mpsc::Sender<Request>,
    stop: watch::Receiver<bool>,
    /// True once a signal asked this process to terminate.
    signalled: watch::Receiver<bool>,
    /// When this process must have stopped, once a signal asked it to terminate.
    stop_deadline: watch::Receiver<Option<Deadline>>,
}

async fn run_async(
    opts: RunOptions,
    controls: Controls,
    trigger_rx: mpsc::Receiver<Request>,
) -> Result<Outcome, RunError> {
    // A process that may stand by serves `/healthz` while it does: it is alive while it
    // follows commits. Every other process serves once its tasks are ready.
    let may_stand_by = opts.spec.standby && matches!(opts.role, Role::Container { .. });
    let mut observers = None;
    if may_stand_by {
        observers = Some(serve_observers(&opts).await?);
    }
    let mut job = match assemble(&opts, &controls).await? {
        Assembly::Ready(job) => *job,
        Assembly::StoodBy(end) => {
            if let Some(Some(progress)) = observers {
                progress.stop();
            }
            return stood_by(&opts, controls, end).await;
        }
    };
    opts.metrics.liveness.started();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let (mut local_links, threads) = spawn_containers(std::mem::take(&mut job.groups), &event_tx)?;
    let progress = match observers {
        Some(progress) => progress,
        None => serve_observers(&opts).await?,
    };
    let running = Running { threads, progress };
    match (&opts.role, job.connection.take()) {
        (
            Role::Container {
                index, coordinator, ..
            },
            Some(conn),
        ) => {
            drop(event_tx);
            let commands = local_links.remove(index).expect("own container");
            let relay = Relay {
                conn,
                index: *index,
                coordinator,
                commands,
                events: event_rx,
            };
            relay_for_coordinator(&opts, controls, relay, running, job.start.origin).await
        }
        _ => {
            let links = (0..job.parallelism)
                .map(|c| match local_links.remove(&c) {
                    Some(tx) => ContainerLink::Local(tx),
                    None => ContainerLink::Remote(Default::default()),
                })
                .collect();
            coordinate(
                &opts,
                controls,
                trigger_rx,
                job,
                links,
                (event_tx, event_rx),
                running,
            )
            .await
        }
    }
}

/// How a warm standby that never took over ends: released by the coordinator (holding if
/// asked, like a container), or told to terminate.
async fn stood_by(
    opts: &RunOptions,
    controls: Controls,
    end: StandbyEnd,
) -> Result<Outcome, RunError> {
    let released = Ok(Outcome {
        ending: Ending::Released,
        origin: None,
    });
    match end {
        StandbyEnd::Released(RelayEnd::JobStopped) => {
            if opts.hold_after_stop {
                hold_until_signal(controls.signalled).await;
            }
            released
        }
        StandbyEnd::Signalled => {
            tracing::info!("stop requested: a warm standby has nothing to finish; exiting");
            released
        }
        StandbyEnd::Released(_) => {
            tracing::info!("the coordinator is shutting down; exiting (a restarted process joins its successor)");
            released
        }
        StandbyEnd::TakeOver { .. } => unreachable!("a takeover restores and runs"),
    }
}

/// What [`assemble`] ends with: this process's tasks ready to run, or, for a warm standby that
/// never took over, how standing by ended.
enum Assembly {
    Ready(Box<Assembled>),
    StoodBy(StandbyEnd),
}

/// What [`assemble`] prepared: this process's tasks, restored and open, grouped by container,
/// and what the roles need to run them.
struct Assembled {
    store: CheckpointStore,
    spec_hash: String,
    partitions: u32,
    parallelism: u32,
    /// Task -> container.
    assignment: BTreeMap<u32, u32>,
    generation: u64,
    state_version: u32,
    /// Where the run starts (its tasks are in `groups`).
    start: StartPoint,
    /// What the start cost (`runtime::recovery`), for the status.
    recovery: Recovery,
    /// Container -> its task instances, for the containers of this process.
    groups: BTreeMap<u32, Vec<TaskInstance>>,
    /// A container of another process's coordinator: its connection.
    connection: Option<CoordinatorConnection>,
    control_token: Option<String>,
    coordinator_token: Option<String>,
}

/// Everything before processing starts: the store, the tokens and the input checked (before
/// any state is touched), a generation claimed (or learnt from the coordinator), the start
/// point decided and restored, and this process's task instances built.
async fn assemble(opts: &RunOptions, controls: &Controls) -> Result<Assembly, RunError> {
    // The origin of the recovery measures (runtime::recovery).
    let (process_started, process_started_ms) = (Instant::now(), crate::checkpoint::now_ms());
    let spec = &opts.spec;
    let spec_hash = spec.spec_hash();
    let partitions = spec.input.partitions();
    let parallelism = spec.parallelism.max(1);
    let store = CheckpointStore::from_url(&spec.checkpoint.store, &opts.base_dir)?;
    let job_dir = job_state_dir(spec, &opts.base_dir);
    std::fs::create_dir_all(&job_dir).map_err(|source| RunError::Io {
        path: job_dir.clone(),
        source,
    })?;
    // A bad token file fails the start before any state is touched.
    let control_token = opts
        .control
        .as_ref()
        .map(|c| read_token(&c.token_file))
        .transpose()?;
    let coordinator_token = opts.role.token_file().map(remote::read_token).transpose()?;
    let metrics = &opts.metrics;
    // So does an input that does not match the spec (a Kafka topic that is missing or has
    // another partition count): no generation claimed, no state restored.
    let sources = checked_sources(SourceFactory::new(&spec.input).with_metrics(metrics)).await?;

    // This process runs every container, or one.
    let assignment: BTreeMap<u32, u32> = (0..partitions)
        .map(|t| (t, cairn_contract::container_of(t, parallelism)))
        .collect();
    let my_containers: Vec<u32> = match &opts.role {
        Role::AllContainers => (0..parallelism).collect(),
        Role::Coordinator { .. } => vec![0],
        Role::Container { index, .. } => vec![*index],
    };
    let my_tasks: Vec<u32> = assignment
        .iter()
        .filter(|(_, c)| my_containers.contains(c))
        .map(|(t, _)| *t)
        .collect();
    // Names this process's local scratch among the job's processes sharing its directory.
    let process = match &opts.role {
        Role::AllContainers => "all".to_owned(),
        Role::Coordinator { .. } => "c0".to_owned(),
        Role::Container { index, .. } => format!("c{index}"),
    };

    // Only the process that commits claims a generation (see checkpoint::generation); a
    // container of another process writes under its coordinator's, which it learns on joining.
    let claimed = match &opts.role {
        Role::Container { .. } => None,
        _ => Some(
            generation::claim(
                &store,
                &format!("pid {} on {}", std::process::id(), hostname()),
            )
            .await?,
        ),
    };

    // Restore.
    let mut restore_started = Instant::now();
    let block_cache = Cache::new_lru_cache(spec.state.cache_size as usize);
    let state_version = opts.registry.build_task(&spec.task)?.state_version();
    // A container of another process restores what its coordinator says (decided between
    // checkpoints); the others decide themselves.
    let mut connection = None;
    let mut prefetched = Prefetched::none();
    let (generation, checkpoint, savepoint) = match &opts.role {
        Role::Container {
            index, coordinator, ..
        } => {
            let join = async {
                let (mut conn, joined) = remote::connect(
                    coordinator,
                    Introduction {
                        container: *index,
                        job: spec.name.clone(),
                        spec_hash: spec_hash.clone(),
                        token: coordinator_token
                            .clone()
                            .expect("a container has a token file"),
                        standby: spec.standby,
                    },
                )
                .await?;
                if joined == Joined::Container {
                    let restore = conn.await_restore().await?;
                    return Ok::<_, RunError>((
                        conn,
                        StandbyEnd::TakeOver {
                            restore,
                            prefetched: Prefetched::none(),
                        },
                    ));
                }
                // Its own directory: the active process may share this machine's.
                let prefetcher = Prefetcher::new(
                    store.clone(),
                    job_dir.join(format!("standby-{process}")),
                    my_tasks.clone(),
                )?;
                let end = standby::stand_by(
                    &mut conn,
                    *index,
                    prefetcher,
                    metrics,
                    controls.signalled.clone(),
                )
                .await?;
                Ok((conn, end))
            };
            // A signal while joining is bounded like one while running (a standby ends at
            // once).
            let (conn, end) = tokio::select! {
                joined = join => joined?,
                () = stop_deadline_reached(controls.stop_deadline.clone()) => {
                    return Err(RunError::StopTimedOut {
                        addr: coordinator.clone(),
                        waited: opts.role.stop_wait().unwrap_or_default(),
                    })
                }
            };
            let restore = match end {
                StandbyEnd::TakeOver {
                    restore,
                    prefetched: held,
                } => {
                    prefetched = held;
                    restore
                }
                other => return Ok(Assembly::StoodBy(other)),
            };
            // A standby's restore starts now.
            restore_started = Instant::now();
            connection = Some(conn);
            (
                restore.generation,
                restore.checkpoint,
                restore.savepoint.map(|url| (url, true)),
            )
        }
        _ => {
            let savepoint = match &opts.from_savepoint {
                Some(url) => Some((url.clone(), true)),
                None => spec.restore.savepoint.clone().map(|url| (url, false)),
            };
            let generation = claimed.expect("every other role claimed a generation");
            (generation, opts.from_checkpoint, savepoint)
        }
    };
    // Our temp files in a file:// store name our generation (see checkpoint::retention).
    store.set_writer_generation(generation);
    let mut start = start::prepare(StartRequest {
        store: &store,
        spec,
        job_dir: &job_dir,
        generation,
        checkpoint,
        savepoint,
        base_dir: &opts.base_dir,
        state_version,
        cache: &block_cache,
        only: &my_tasks,
        process: &process,
        prefetched: &prefetched,
    })
    .await?;
    // A standby's copies are in the restored databases now (hard links that would keep
    // compacted files alive).
    let _ = std::fs::remove_dir_all(job_dir.join(format!("standby-{process}")));
    let restarts: Vec<TaskRestart> = start
        .tasks
        .iter()
        .map(|t| TaskRestart {
            task: t.task,
            offset: t.offset,
            previous: MarkFile::in_task_dir(&task_dir(&job_dir, t.task)).read(),
        })
        .collect();
    let recovery = recovery::summarize(
        &restarts,
        process_started_ms,
        start.fetched_bytes,
        restore_started.elapsed(),
    );
    recovery::export(metrics, &recovery);
    tracing::info!(origin = ?start.origin, generation, tasks = ?my_tasks, ?recovery, "state ready");

    // Build task instances.
    let mut groups: BTreeMap<u32, Vec<TaskInstance>> =
        my_containers.iter().map(|c| (*c, Vec::new())).collect();
    for prepared in std::mem::take(&mut start.tasks) {
        let task = prepared.task;
        let instance_err = |source: InstanceError| RunError::Instance { task, source };
        let db = open_task_db(&prepared.db_dir, &block_cache)?;
        let state = KeyedState::new(db, spec.state.cache_size);
        let mut source = sources.open(task);
        source
            .seek(prepared.offset)
            .map_err(|e| instance_err(e.into()))?;
        let sink = crate::sink::open(&spec.output, task, start.sink_checkpoint)
            .map_err(|e| instance_err(e.into()))?;
        let checkpointer = Arc::new(TaskCheckpointer::new(
            store.clone(),
            task,
            generation,
            prepared.db_id,
            task_dir(&job_dir, task),
            prepared.known,
            opts.upload_delay,
        ));
        let previous = restarts
            .iter()
            .find(|r| r.task == task)
            .and_then(|r| r.previous);
        let task_recovery = TaskRecovery::new(
            MarkFile::in_task_dir(&task_dir(&job_dir, task)),
            process_started,
            previous,
        );
        let user_task = opts.registry.build_task(&spec.task)?;
        let instance = TaskInstance::open(
            task,
            user_task,
            state,
            source,
            sink,
            checkpointer,
            metrics.clone(),
            spec.event_time
                .as_ref()
                .map(|event_time| EventClock::new(event_time, prepared.watermark)),
            task_recovery,
        )
        .map_err(instance_err)?;
        groups
            .get_mut(&assignment[&task])
            .expect("own container")
            .push(instance);
    }
    Ok(Assembly::Ready(Box::new(Assembled {
        store,
        spec_hash,
        partitions,
        parallelism,
        assignment,
        generation,
        state_version,
        start,
        recovery,
        groups,
        connection,
        control_token,
        coordinator_token,
    })))
}

/// One processing thread per container of this process; returns each container's command
/// channel and the threads.
#[allow(clippy::type_complexity)]
fn spawn_containers(
    groups: BTreeMap<u32, Vec<TaskInstance>>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<
    (
        BTreeMap<u32, std::sync::mpsc::Sender<Command>>,
        Vec<std::thread::JoinHandle<()>>,
    ),
    RunError,
> {
    let mut local_links = BTreeMap::new();
    let mut threads = Vec::new();
    for (index, tasks) in groups {
        let (tx, rx) = std::sync::mpsc::channel();
        local_links.insert(index, tx);
        let events = events.clone();
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
    Ok((local_links, threads))
}

/// `/metrics` and `/healthz` (with `--metrics-addr`), and the live progress line.
async fn serve_observers(opts: &RunOptions) -> Result<Option<ProgressThread>, RunError> {
    if let Some(addr) = opts.metrics_addr {
        let rule = crate::metrics::HealthRule {
            interval: opts.spec.checkpoint.health_interval(),
            timeout: opts.spec.checkpoint.timeout,
        };
        crate::http::serve(
            addr,
            opts.metrics.clone(),
            opts.progress.clone(),
            rule,
            opts.http_limits,
        )
        .await?;
    }
    Ok(opts
        .show_progress
        .then(|| progress::spawn(opts.metrics.clone(), opts.progress.clone())))
}

/// The container threads and the progress line of a running process.
struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
    progress: Option<ProgressThread>,
}

impl Running {
    /// Waits for the containers (told to stop) to finish, and stops the progress line.
    async fn finish(self) {
        let threads = self.threads;
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())))
            .await
            .expect("joining containers");
        if let Some(p) = self.progress {
            p.stop();
        }
    }
}

/// A container of another process's coordinator, and its link to it.
struct Relay<'a> {
    conn: CoordinatorConnection,
    index: u32,
    coordinator: &'a str,
    commands: std::sync::mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// The container of another process's coordinator: relay, and stop when told. A signal does not
/// stop it by itself: the final checkpoint needs its tasks, so it keeps serving the coordinator
/// until told to stop, up to its stop deadline.
async fn relay_for_coordinator(
    opts: &RunOptions,
    controls: Controls,
    relay: Relay<'_>,
    running: Running,
    origin: Origin,
) -> Result<Outcome, RunError> {
    let Relay {
        conn,
        index,
        coordinator,
        commands,
        events,
    } = relay;
    let relayed = tokio::select! {
        relayed = conn.relay(index, commands.clone(), events) => relayed.map(Some),
        () = stop_deadline_reached(controls.stop_deadline.clone()) => Ok(None),
    };
    // From here on a signal finds this process stopping.
    let _ = controls.shutdown.send(true);
    let _ = commands.send(Command::Stop);
    running.finish().await;
    let released = Ok(Outcome {
        ending: Ending::Released,
        origin: Some(origin),
    });
    match relayed {
        Ok(Some(RelayEnd::JobStopped)) => {
            if opts.hold_after_stop {
                hold_until_signal(controls.signalled).await;
            }
            released
        }
        Ok(Some(RelayEnd::CoordinatorShutDown)) => {
            tracing::info!("the coordinator took its final checkpoint and is shutting down; exiting (a restarted container rejoins its successor)");
            released
        }
        Ok(Some(RelayEnd::CoordinatorLost)) => Err(RunError::CoordinatorLost {
            addr: coordinator.to_owned(),
        }),
        Ok(Some(RelayEnd::TaskFailed { task, failure })) => {
            Err(CoordinatorError::TaskFailed { task, failure }.into())
        }
        Ok(None) => Err(RunError::StopTimedOut {
            addr: coordinator.to_owned(),
            waited: opts.role.stop_wait().unwrap_or_default(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The coordinator's process: admits the containers of other processes, serves the control
/// API, runs the checkpoint coordinator until the job ends, and holds or lingers as asked.
#[allow(clippy::too_many_arguments)]
async fn coordinate(
    opts: &RunOptions,
    controls: Controls,
    trigger_rx: mpsc::Receiver<Request>,
    job: Assembled,
    links: Vec<ContainerLink>,
    (event_tx, event_rx): (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    running: Running,
) -> Result<Outcome, RunError> {
    let spec = &opts.spec;
    if let Role::Coordinator { listen, .. } = &opts.role {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| RunError::Io {
                path: format!("coordinator address {listen}").into(),
                source,
            })?;
        tracing::info!(%listen, "waiting for containers 1..{}", job.parallelism - 1);
        remote::accept_containers(
            listener,
            links.clone(),
            event_tx.clone(),
            remote::Admission {
                job: spec.name.clone(),
                spec_hash: job.spec_hash.clone(),
                token: job
                    .coordinator_token
                    .clone()
                    .expect("the coordinator has a token file"),
                assignment: job.assignment.clone(),
                standby: spec.standby,
            },
        );
    }
    drop(event_tx);

    place_tasks(&opts.progress, &job.assignment, &links);
    let mut control_server = None;
    if let (Some(cfg), Some(token)) = (&opts.control, job.control_token) {
        let facts = cairn_contract::control::JobStatus {
            job: spec.name.clone(),
            generation: job.generation,
            partitions: job.partitions,
            parallelism: job.parallelism,
            spec_hash: job.spec_hash,
            deployment: cfg.deployment.clone(),
            assignment: job.assignment.clone(),
            checkpoint_interval_ms: spec.checkpoint.health_interval().as_millis() as u64,
            started_at_ms: crate::checkpoint::now_ms(),
            recovery: Some(job.recovery.clone()),
            ..Default::default()
        };
        let handles = ControlHandles {
            requests: controls.requests.clone(),
            shutdown: controls.shutdown.clone(),
            facts,
            metrics: opts.metrics.clone(),
            progress: opts.progress.clone(),
        };
        control_server = Some(control::serve(cfg, token, handles).await?);
    }

    let start = job.start;
    let held_store = job.store.clone();
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            store: job.store.clone(),
            generation: job.generation,
            spec: spec.clone(),
            assignment: job.assignment,
            first_id: start.first_id,
            restored: match start.origin {
                Origin::Checkpoint(id) => Some(id),
                _ => None,
            },
            start_savepoint: match &start.origin {
                Origin::Savepoint { url, .. } => Some(url.clone()),
                _ => None,
            },
            origin: start.lineage,
            state_version: job.state_version,
            objective: recovery_objective(&spec.checkpoint, &job.recovery),
        },
        links,
        event_rx,
        trigger_rx,
        opts.metrics.clone(),
        opts.progress.clone(),
    );
    let (ending, requests) = coordinator
        .run_and_hand_over(controls.stop, controls.stop_deadline.clone())
        .await;
    // Ended with a committed final checkpoint: the status says so, and requests (control API,
    // signals) are answered for as long as the process serves, e.g. savepoints of a finished
    // job. Otherwise the channel closes and anything still queued hears that the job stopped.
    let ended = match &ending {
        Ok(Ending::Finished { checkpoint }) => Some(Ended::Finished {
            checkpoint: *checkpoint,
        }),
        Ok(Ending::Stopped { checkpoint, .. }) => Some(Ended::Stopped {
            checkpoint: *checkpoint,
        }),
        _ => None,
    };
    let held = ended.map(|ended| {
        let _ = opts.progress.ended.set(ended);
        tokio::spawn(HeldJob::new(held_store, ended, job.state_version).serve(requests))
    });
    let signalled = controls.signalled;
    if let (
        Ok(Ending::Stopped {
            savepoint: Some(url),
            ..
        }),
        Some(server),
    ) = (&ending, &control_server)
    {
        if !opts.hold_after_stop && !*signalled.borrow() {
            tracing::info!(%url, "stopped with a savepoint; waiting for its result to be read from the control API");
            tokio::select! {
                () = server.wait_for_stop_result(CONTROL_LINGER) => {}
                () = signal_received(signalled.clone()) => {}
            }
        }
    }
    if matches!(ending, Ok(Ending::Stopped { .. } | Ending::Finished { .. }))
        && opts.hold_after_stop
    {
        hold_until_signal(signalled).await;
    }
    if let Some(held) = held {
        held.abort();
    }
    running.finish().await;
    Ok(Outcome {
        ending: ending?,
        origin: Some(start.origin),
    })
}

/// Runs the sources' start-up check ([`SourceFactory::check`]: a blocking metadata request for
/// Kafka) off the runtime's threads, and hands the factory back.
async fn checked_sources(sources: SourceFactory) -> Result<SourceFactory, SourceError> {
    tokio::task::spawn_blocking(move || sources.check().map(|()| sources))
        .await
        .expect("the input check panicked")
}

/// Keeps a stopped job's process (and its control API) alive until SIGTERM/SIGINT — unless
/// one has already arrived: a process stopped by the signal itself (a deleted pod) exits at
/// once, since nobody will send a second one before the kubelet's SIGKILL.
async fn hold_until_signal(mut signalled: watch::Receiver<bool>) {
    if *signalled.borrow() {
        tracing::info!("job stopped; exiting (the stop was requested by a signal, so not holding)");
        return;
    }
    tracing::info!("job stopped; holding until SIGTERM (--hold-after-stop)");
    if signalled.wait_for(|s| *s).await.is_err() {
        tracing::warn!("cannot wait for signals; exiting instead of holding");
    }
}

/// Resolves when a signal has asked this process to terminate; never if none can arrive.
async fn signal_received(mut signalled: watch::Receiver<bool>) {
    if signalled.wait_for(|s| *s).await.is_err() {
        std::future::pending().await
    }
}

/// Resolves when this process's stop deadline passes; never if it gets none.
async fn stop_deadline_reached(mut deadline: watch::Receiver<Option<Deadline>>) {
    let at = match deadline.wait_for(Option::is_some).await {
        Ok(at) => (*at).expect("waited for Some"),
        Err(_) => return std::future::pending().await,
    };
    tokio::time::sleep_until(at).await;
}

/// This machine's host name (a pod's name on Kubernetes).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The job's local directory: `<state.dir>/<job name>`.
pub fn job_state_dir(spec: &JobSpec, base: &Path) -> PathBuf {
    base.join(&spec.state.dir).join(&spec.name)
}

/// The spec's recovery-time objective, told what this process's own restore measured.
fn recovery_objective(
    checkpoint: &cairn_contract::CheckpointSpec,
    restore: &Recovery,
) -> Option<Objective> {
    let object_store = matches!(
        checkpoint.store_location(),
        Ok(cairn_contract::StoreUrl::Object { .. })
    );
    let mut objective = Objective::for_spec(checkpoint, object_store)?;
    objective.restored(
        restore.fetched_bytes,
        Duration::from_millis(restore.restore_ms),
    );
    Some(objective)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_stop_timeouts_give_deadlines_without_overflowing() {
        let longest = Duration::from_secs(8760 * 3600);
        let container = Role::Container {
            index: 1,
            coordinator: "c:1".into(),
            token_file: PathBuf::from("token"),
            stop_timeout: longest,
        };
        assert_eq!(container.stop_wait(), Some(longest + CONTAINER_STOP_MARGIN));
        let beyond = Role::Container {
            index: 1,
            coordinator: "c:1".into(),
            token_file: PathBuf::from("token"),
            stop_timeout: Duration::MAX,
        };
        assert_eq!(beyond.stop_wait(), Some(Duration::MAX));

        let now = Deadline::now();
        assert_eq!(deadline_after(now, longest), now + longest);
        // Not representable: the farthest deadline there is instead of a panic.
        assert!(deadline_after(now, Duration::MAX) >= now + longest);
    }
}

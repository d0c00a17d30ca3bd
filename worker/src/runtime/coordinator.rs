//! The checkpoint coordinator (seed section 3, the JobCoordinator): triggers checkpoint `n` on
//! the interval or on demand, waits until every task has acknowledged, and commits `n` by
//! writing its commit record create-only — or aborts it on a failure or at the timeout. One
//! checkpoint is in flight at a time. It lives with the job, so checkpoints keep being taken
//! whatever happens to the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_contract::control::StandbyStatus;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::failure::{AbortReason, CheckpointFailure, ReportRejected, RequestError, TaskFailure};
use super::messages::{Command, Event, Request, TaskLoad};
use super::objective::{ContainerLoad, Objective};
use super::remote::ContainerLink;
use crate::checkpoint::manifest::{self, CommitRecord, CommittedTask, FORMAT_VERSION};
use crate::checkpoint::upload::PhaseReport;
use crate::checkpoint::{generation, now_ms, paths, retention, savepoint, CheckpointError};
use crate::metrics::Metrics;
use crate::storage::{CheckpointStore, StorageError};

/// How many times a final checkpoint (before a stop) is tried.
const FINAL_ATTEMPTS: u32 = 5;
/// Wait before the second attempt of a final checkpoint, doubled before each further one
/// (0.5 + 1 + 2 + 4 s): an aborted final checkpoint is most often a store that is briefly
/// unreachable (an HDFS NameNode restarting, an object store failing over), which retrying at
/// once would only meet again.
const FINAL_BACKOFF: Duration = Duration::from_millis(500);
/// How long the coordinator waits, after telling the containers of other processes to stop,
/// for them to close their connections: the `Stop` must reach them before this process exits,
/// or they would take the closed connection for a crash of the coordinator.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

pub use super::job_progress::JobProgress;
pub use cairn_contract::control::{CommittedCheckpoint, SavepointInfo};

/// Why the coordinator stopped the job.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A task failed.
    #[error("task {task} failed: {failure}")]
    TaskFailed {
        /// Task id.
        task: u32,
        /// Why.
        failure: TaskFailure,
    },
    /// The checkpoint protocol failed (store unreachable, fenced).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The final checkpoint could not be committed.
    #[error("the final checkpoint before stopping could not be committed after {attempts} attempts; the job stopped and will resume from checkpoint {last:?}")]
    FinalCheckpointFailed {
        /// Attempts made.
        attempts: u32,
        /// The last committed checkpoint.
        last: Option<u64>,
    },
    /// Every container is gone.
    #[error("all containers exited unexpectedly")]
    ContainersGone,
    /// The process was told to terminate and the final checkpoint did not commit before the
    /// stop deadline (`--stop-timeout`).
    #[error("stop requested by a signal, but the final checkpoint was not committed within the stop timeout ({}); the containers were told to stop and the job will resume from {}", last_attempt(.failure), resume_point(*.last))]
    StopTimedOut {
        /// Why the last attempt did not commit (none: the deadline passed before one started).
        failure: Option<CheckpointFailure>,
        /// The last committed checkpoint.
        last: Option<u64>,
    },
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// All finite input processed; the final checkpoint is committed.
    Finished {
        /// The final checkpoint.
        checkpoint: u64,
    },
    /// A container of another process's coordinator was told to stop.
    Released,
    /// Stopped on request; the final checkpoint is committed.
    Stopped {
        /// The final checkpoint.
        checkpoint: u64,
        /// URL of the savepoint taken from it (stop-with-savepoint).
        savepoint: Option<String>,
    },
}

/// Static facts the coordinator needs.
pub struct CoordinatorConfig {
    /// The durable store.
    pub store: CheckpointStore,
    /// Our generation.
    pub generation: u64,
    /// The spec in force (recorded in every commit).
    pub spec: cairn_contract::JobSpec,
    /// Task -> container.
    pub assignment: BTreeMap<u32, u32>,
    /// First id to use.
    pub first_id: u64,
    /// The checkpoint restored from, if any.
    pub restored: Option<u64>,
    /// The savepoint the lineage started from (recorded in every commit).
    pub origin: Option<String>,
    /// The savepoint this run restored (containers joining before the first commit restore it).
    pub start_savepoint: Option<String>,
    /// The task's state version (recorded in commit records and savepoints).
    pub state_version: u32,
    /// The recovery-time objective, if the spec sets one: it chooses the interval.
    pub objective: Option<Objective>,
}

/// The coordinator of one job.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    containers: Vec<ContainerLink>,
    events: mpsc::UnboundedReceiver<Event>,
    triggers: mpsc::Receiver<Request>,
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
    next_id: u64,
    finished: BTreeSet<u32>,
    last_committed: Option<u64>,
    /// Containers of other processes that restored and run their tasks.
    ready: BTreeSet<u32>,
    /// Containers that connected while a checkpoint was in flight; told where to restore from
    /// once it is committed or aborted.
    deferred: Vec<u32>,
    /// When this process must have stopped: set when it is told to terminate (SIGTERM), after
    /// which checkpoints give up at this instant instead of at the checkpoint timeout.
    stop_deadline: watch::Receiver<Option<Instant>>,
    /// Why the last checkpoint did not commit.
    last_failure: Option<CheckpointFailure>,
    /// When the next periodic checkpoint is due.
    due: Instant,
    /// When the last checkpoint was triggered.
    last_trigger: Instant,
    /// Per container, the time its tasks spent processing since the last trigger (from
    /// `Event::Busy`): what replaying their input since then would cost.
    replay_debt: BTreeMap<u32, Duration>,
    /// The warm standbys connected now, by container.
    standbys: BTreeMap<u32, StandbyStatus>,
}

impl Coordinator {
    /// A coordinator sending commands to `containers` and receiving task events on `events`.
    pub fn new(
        cfg: CoordinatorConfig,
        containers: Vec<ContainerLink>,
        events: mpsc::UnboundedReceiver<Event>,
        triggers: mpsc::Receiver<Request>,
        metrics: Arc<Metrics>,
        progress: Arc<JobProgress>,
    ) -> Self {
        let next_id = cfg.first_id;
        let last_committed = cfg.restored;
        Coordinator {
            cfg,
            containers,
            events,
            triggers,
            metrics,
            progress,
            next_id,
            finished: BTreeSet::new(),
            last_committed,
            ready: BTreeSet::new(),
            deferred: Vec::new(),
            // No deadline until `run` is given one.
            stop_deadline: watch::channel(None).1,
            last_failure: None,
            due: Instant::now(),
            last_trigger: Instant::now(),
            replay_debt: BTreeMap::new(),
            standbys: BTreeMap::new(),
        }
    }

    fn tasks(&self) -> usize {
        self.cfg.assignment.len()
    }

    fn broadcast(&self, cmd: Command) {
        for c in &self.containers {
            // A container that has exited reports why through a Failed or Disconnected event.
            c.send(cmd.clone());
        }
    }

    /// Sends a command to every warm standby.
    fn broadcast_standbys(&self, cmd: Command) {
        for c in &self.containers {
            c.send_standby(cmd.clone());
        }
    }

    /// Keeps the standbys' record (warm standbys, docs/recovery.md) and shows it in the
    /// status and the metrics.
    fn on_standby_event(&mut self, event: Event) {
        match event {
            Event::StandbyJoined { container, host } => {
                self.standbys.insert(
                    container,
                    StandbyStatus {
                        container,
                        host,
                        checkpoint: None,
                    },
                );
                // What it must hold now; later commits follow.
                if let Some(id) = self.last_committed {
                    self.containers[container as usize].send_standby(Command::Follow(id));
                }
            }
            Event::StandbyLeft(container) => {
                self.standbys.remove(&container);
            }
            Event::Following {
                container,
                checkpoint,
            } => {
                // Ignored from a standby promoted since (its record is gone).
                if let Some(standby) = self.standbys.get_mut(&container) {
                    standby.checkpoint = Some(checkpoint);
                }
            }
            _ => return,
        }
        let warm = self
            .standbys
            .values()
            .filter(|s| s.checkpoint.is_some())
            .count();
        self.metrics.standbys_warm.set(warm as i64);
        *self.progress.standbys.lock().expect("progress lock") =
            self.standbys.values().cloned().collect();
    }

    /// Containers (in other processes) not connected right now.
    fn missing_containers(&self) -> Vec<u32> {
        (0..self.containers.len() as u32)
            .filter(|k| match &self.containers[*k as usize] {
                ContainerLink::Local(_) => false,
                link => !link.is_connected() || !self.ready.contains(k),
            })
            .collect()
    }

    /// Tells a newly connected container where to restore from: the last committed
    /// checkpoint, or what this run started from.
    fn send_restore(&self, container: u32) {
        let savepoint = if self.last_committed.is_none() {
            self.cfg.start_savepoint.clone()
        } else {
            None
        };
        tracing::info!(container, checkpoint = ?self.last_committed, ?savepoint, "container connected; restoring its tasks");
        self.containers[container as usize].send(Command::Restore {
            generation: self.cfg.generation,
            checkpoint: self.last_committed,
            savepoint,
        });
    }

    /// Answers the containers that connected during the last checkpoint.
    fn flush_deferred(&mut self) {
        for container in std::mem::take(&mut self.deferred) {
            self.send_restore(container);
        }
    }

    /// Waits (handling events) until every container is connected; false at `deadline` or
    /// at the stop deadline.
    async fn await_containers(&mut self, deadline: Instant) -> Result<bool, CoordinatorError> {
        while !self.missing_containers().is_empty() {
            tokio::select! {
                event = self.events.recv() => self.on_idle_event(event)?,
                _ = deadline_passed(deadline, &mut self.stop_deadline) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// True once the stop deadline has passed.
    fn past_stop_deadline(&self) -> bool {
        self.stop_deadline
            .borrow()
            .is_some_and(|at| at <= Instant::now())
    }

    /// Runs until the input is finished or `shutdown` turns true; either way ends with a
    /// committed final checkpoint and every container told to stop. `stop_deadline` turns
    /// `Some` when the process is told to terminate: from then on checkpoints give up at that
    /// instant, and the containers are told to exit (`Shutdown`) rather than to hold (`Stop`).
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
        stop_deadline: watch::Receiver<Option<Instant>>,
    ) -> Result<Ending, CoordinatorError> {
        self.run_and_hand_over(shutdown, stop_deadline).await.0
    }

    /// [`Self::run`], handing back the request channel with whatever is still queued in it: a
    /// process that holds after the end keeps answering requests ([`super::held`]), among them
    /// those that arrived while the final checkpoint was being taken.
    pub async fn run_and_hand_over(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        stop_deadline: watch::Receiver<Option<Instant>>,
    ) -> (Result<Ending, CoordinatorError>, mpsc::Receiver<Request>) {
        self.stop_deadline = stop_deadline;
        self.publish_objective();
        // The next checkpoint is due an interval after the previous one started (at once if
        // that one took longer). The interval is fixed, or chosen anew after each commit by
        // the recovery-time objective.
        self.last_trigger = Instant::now();
        self.due = deadline_after(self.last_trigger, self.interval());
        let result = loop {
            if self.finished.len() == self.tasks() {
                break self
                    .final_checkpoint()
                    .await
                    .map(|checkpoint| Ending::Finished { checkpoint });
            }
            if *shutdown.borrow() {
                break self
                    .final_checkpoint()
                    .await
                    .map(|checkpoint| Ending::Stopped {
                        checkpoint,
                        savepoint: None,
                    });
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.due) => {
                    let started = Instant::now();
                    if let Err(e) = self.checkpoint(false).await {
                        break Err(e);
                    }
                    self.due = deadline_after(started, self.interval());
                }
                event = self.events.recv() => {
                    if let Err(e) = self.on_idle_event(event) {
                        break Err(e);
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        // The sender is gone: treat as a stop request.
                        break self.final_checkpoint().await.map(|checkpoint| Ending::Stopped { checkpoint, savepoint: None });
                    }
                }
                Some(request) = self.triggers.recv() => {
                    match self.on_request(request).await {
                        Ok(Some(ending)) => break Ok(ending),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        self.release(result.is_err()).await;
        (result, self.triggers)
    }

    /// Tells every container to stop — `Shutdown` if this process is terminating or the job
    /// failed, `Stop` otherwise — and waits (at most [`RELEASE_WAIT`]) until the containers of
    /// other processes have closed their connections, i.e. received it. A job that failed must
    /// not leave containers holding as if it had stopped: they exit, and rejoin the
    /// coordinator's restarted process.
    async fn release(&mut self, failed: bool) {
        let terminating = failed || self.stop_deadline.borrow().is_some();
        let release = if terminating {
            Command::Shutdown
        } else {
            Command::Stop
        };
        self.broadcast(release.clone());
        self.broadcast_standbys(release);
        let connected = |links: &[ContainerLink]| -> Vec<u32> {
            (0..links.len() as u32)
                .filter(|k| {
                    let link = &links[*k as usize];
                    matches!(link, ContainerLink::Remote(_)) && link.is_connected()
                })
                .collect()
        };
        let deadline = deadline_after(Instant::now(), RELEASE_WAIT);
        while !connected(&self.containers).is_empty() {
            tokio::select! {
                event = self.events.recv() => {
                    if event.is_none() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(containers = ?connected(&self.containers), "containers still connected {RELEASE_WAIT:?} after being told to stop");
                    break;
                }
            }
        }
    }

    /// Serves one request; `Some` when it ends the run (stop-with-savepoint).
    async fn on_request(&mut self, request: Request) -> Result<Option<Ending>, CoordinatorError> {
        match request {
            Request::Checkpoint(reply) => {
                let result = self.checkpoint(false).await;
                let _ = reply.send(match &result {
                    Ok(Some(id)) => Ok(*id),
                    Ok(None) => Err(self.aborted()),
                    Err(e) => Err(RequestError::JobFailed(e.to_string())),
                });
                result.map(|_| None)
            }
            Request::Savepoint { stop, reply } => {
                let id = match self.checkpoint(stop).await {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        let _ = reply.send(Err(self.aborted()));
                        self.resume(stop);
                        return Ok(None);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::JobFailed(e.to_string())));
                        return Err(e);
                    }
                };
                match savepoint::create(&self.cfg.store, id, self.cfg.state_version).await {
                    Ok((location, manifest)) => {
                        let info = SavepointInfo {
                            url: location.url(),
                            id: manifest.id,
                            checkpoint: id,
                        };
                        tracing::info!(url = %info.url, checkpoint = id, stop, "savepoint taken");
                        let _ = reply.send(Ok(info.clone()));
                        Ok(stop.then_some(Ending::Stopped {
                            checkpoint: id,
                            savepoint: Some(info.url),
                        }))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "savepoint failed; the job keeps running");
                        let _ = reply.send(Err(RequestError::SavepointWrite {
                            checkpoint: id,
                            detail: e.to_string(),
                        }));
                        self.resume(stop);
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The answer to a request whose checkpoint did not commit: why the last one did not.
    fn aborted(&self) -> RequestError {
        RequestError::CheckpointFailed(self.last_failure.clone().unwrap_or(CheckpointFailure {
            checkpoint: None,
            reason: AbortReason::NotConnected {
                missing: self.missing_containers(),
            },
        }))
    }

    /// Lets paused containers read input again after a stop-with-savepoint that failed.
    fn resume(&self, paused: bool) {
        if paused {
            self.broadcast(Command::Resume);
        }
    }

    fn on_idle_event(&mut self, event: Option<Event>) -> Result<(), CoordinatorError> {
        match event {
            None => Err(CoordinatorError::ContainersGone),
            Some(Event::Finished(task)) => {
                // Only the job's own tasks count towards "every task finished".
                if self.cfg.assignment.contains_key(&task) {
                    self.finished.insert(task);
                }
                Ok(())
            }
            Some(Event::Failed { task, failure }) => {
                Err(CoordinatorError::TaskFailed { task, failure })
            }
            Some(Event::Busy {
                task,
                busy_us,
                records,
                lag,
            }) => {
                self.count_load(task, busy_us, records, lag);
                self.on_busy(task, busy_us);
                Ok(())
            }
            Some(Event::Ack { .. }) => Ok(()), // late acknowledgement of an aborted checkpoint
            Some(Event::Connected(container)) => {
                self.send_restore(container);
                Ok(())
            }
            Some(Event::Ready(container)) => {
                tracing::info!(container, "container ready");
                self.ready.insert(container);
                Ok(())
            }
            Some(
                event @ (Event::StandbyJoined { .. }
                | Event::StandbyLeft(_)
                | Event::Following { .. }),
            ) => {
                self.on_standby_event(event);
                Ok(())
            }
            Some(Event::Disconnected(container)) => {
                // Its tasks restart from the last committed checkpoint and report again (in
                // its warm standby, if it has one: that joins at once).
                tracing::warn!(
                    container,
                    standby = self.standbys.contains_key(&container),
                    "container disconnected; its tasks restart from the last committed checkpoint"
                );
                let assignment = &self.cfg.assignment;
                self.finished
                    .retain(|t| assignment.get(t) != Some(&container));
                self.ready.remove(&container);
                Ok(())
            }
        }
    }

    /// Takes the checkpoint a stop ends with, retrying an aborted one, within the stop
    /// deadline if there is one.
    async fn final_checkpoint(&mut self) -> Result<u64, CoordinatorError> {
        for attempt in 1..=FINAL_ATTEMPTS {
            if self.past_stop_deadline() {
                break;
            }
            if let Some(id) = self.checkpoint(true).await? {
                return Ok(id);
            }
            if attempt < FINAL_ATTEMPTS && !self.past_stop_deadline() {
                let mut wait = FINAL_BACKOFF * 2u32.pow(attempt - 1);
                if let Some(at) = *self.stop_deadline.borrow() {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
                tracing::warn!(attempt, ?wait, "final checkpoint aborted; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        if self.stop_deadline.borrow().is_some() {
            return Err(CoordinatorError::StopTimedOut {
                failure: self.last_failure.clone(),
                last: self.last_committed,
            });
        }
        Err(CoordinatorError::FinalCheckpointFailed {
            attempts: FINAL_ATTEMPTS,
            last: self.last_committed,
        })
    }

    /// Takes one checkpoint. `Ok(Some(id))` committed, `Ok(None)` aborted, `Err` fatal.
    pub async fn checkpoint(&mut self, pause: bool) -> Result<Option<u64>, CoordinatorError> {
        let started = Instant::now();
        let deadline = deadline_after(started, self.cfg.spec.checkpoint.timeout);
        self.last_failure = None;
        // A container in another process that is restarting cannot take part: wait for it
        // (within the checkpoint timeout) rather than trigger a checkpoint that must fail.
        if !self.await_containers(deadline).await? {
            let missing = self.missing_containers();
            tracing::warn!(?missing, "checkpoint skipped: containers not connected");
            self.last_failure = Some(CheckpointFailure {
                checkpoint: None,
                reason: AbortReason::NotConnected { missing },
            });
            self.metrics
                .checkpoints
                .with_label_values(&["skipped"])
                .inc();
            return Ok(None);
        }
        let id = self.next_id;
        // Ids come from the store (the highest one there, plus one): one at the maximum must
        // stop the job with a clear error, not wrap around to reuse id 0.
        self.next_id = id
            .checked_add(1)
            .ok_or_else(|| CheckpointError::IdsExhausted {
                key: paths::checkpoint_prefix(id),
                what: "checkpoint",
                id,
                fix: "start the job in a new, empty checkpoint store from a savepoint (`cairn-worker savepoint <store-url>`, then `cairn-worker run --from-savepoint <savepoint-url>` with checkpoint.store pointing at the new location)",
            })?;
        let triggered_at_ms = now_ms();
        self.broadcast(Command::Checkpoint { id, pause });
        self.last_trigger = Instant::now();
        self.replay_debt.clear();

        let mut acks: BTreeMap<u32, PhaseReport> = BTreeMap::new();
        let mut loads: BTreeMap<u32, TaskLoad> = BTreeMap::new();
        let mut failure: Option<AbortReason> = None;
        while acks.len() < self.tasks() && failure.is_none() {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::Ack { task, checkpoint, result, sync_seconds, load }) if checkpoint == id => {
                        self.metrics.sync_seconds.observe(sync_seconds);
                        self.progress.record_sync_pause(sync_seconds);
                        match result.map(|report| (self.check_report(id, task, &report), report)) {
                            Ok((Err(why), _)) => {
                                tracing::warn!(checkpoint = id, task, %why, "refusing an acknowledgement");
                                failure = Some(AbortReason::Rejected(why));
                            }
                            Ok((Ok(()), report)) => {
                                self.metrics.async_seconds.observe(report.duration.as_secs_f64());
                                self.metrics.uploaded_bytes.inc_by(report.uploaded_bytes);
                                acks.insert(task, report);
                                loads.insert(task, load);
                            }
                            Err(failure_of_task) => failure = Some(AbortReason::TaskFailed { task, failure: failure_of_task }),
                        }
                    }
                    Some(Event::Disconnected(container)) => {
                        self.on_idle_event(Some(Event::Disconnected(container)))?;
                        failure = Some(AbortReason::Disconnected { container });
                    }
                    Some(Event::Connected(container)) => self.deferred.push(container),
                    other => self.on_idle_event(other)?,
                },
                _ = deadline_passed(deadline, &mut self.stop_deadline) => {
                    let (missing, tasks) = (self.tasks() - acks.len(), self.tasks());
                    failure = Some(if self.past_stop_deadline() {
                        AbortReason::StopDeadline { missing, tasks }
                    } else {
                        AbortReason::TimedOut { timeout: self.cfg.spec.checkpoint.timeout, missing, tasks }
                    });
                }
            }
        }
        if let Some(reason) = failure {
            return self.abort(id, reason);
        }

        let record = self.commit_record(id, triggered_at_ms, &acks);
        generation::check_not_fenced(&self.cfg.store, self.cfg.generation).await?;
        match self
            .cfg
            .store
            .put_bytes_create_only(&paths::commit_key(id), manifest::to_bytes(&record))
            .await
        {
            Ok(()) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                return self.abort(id, AbortReason::CommittedElsewhere);
            }
            Err(e) => return self.abort(id, AbortReason::commit_write(&e)),
        }
        self.committed(&record, started.elapsed());
        self.adapt_interval(started.elapsed(), &acks, &loads);
        self.broadcast(Command::Committed(id));
        self.broadcast_standbys(Command::Follow(id));
        let retain = self.cfg.spec.checkpoint.retained as usize;
        match retention::collect(&self.cfg.store, retain, self.cfg.generation).await {
            Ok(_) => {}
            // A newer process has started: it owns the store now; stop before doing more.
            Err(e @ CheckpointError::Fenced { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint retention failed; will retry after the next commit")
            }
        }
        Ok(Some(id))
    }

    /// `Ok` if `report` is what task `task` of this job writes for checkpoint `id`: a task
    /// of the assignment, its own manifest, and offsets of its own partition only. A report
    /// that is not (from a buggy or hostile container) aborts the checkpoint instead of being
    /// committed.
    fn check_report(&self, id: u64, task: u32, report: &PhaseReport) -> Result<(), ReportRejected> {
        if !self.cfg.assignment.contains_key(&task) {
            return Err(ReportRejected::UnknownTask { task });
        }
        let manifest = paths::task_manifest_key(id, self.cfg.generation, task);
        if report.manifest_key != manifest {
            return Err(ReportRejected::ForeignManifest {
                task,
                reported: report.manifest_key.clone(),
                expected: manifest,
            });
        }
        if let Some(p) = report.offsets.keys().find(|p| **p != task) {
            return Err(ReportRejected::ForeignOffset {
                task,
                partition: *p,
            });
        }
        Ok(())
    }

    fn abort(&mut self, id: u64, reason: AbortReason) -> Result<Option<u64>, CoordinatorError> {
        tracing::warn!(checkpoint = id, %reason, "checkpoint aborted");
        self.last_failure = Some(CheckpointFailure {
            checkpoint: Some(id),
            reason,
        });
        self.flush_deferred();
        self.metrics
            .checkpoints
            .with_label_values(&["aborted"])
            .inc();
        self.progress
            .aborted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.broadcast(Command::Aborted(id));
        Ok(None)
    }

    fn commit_record(
        &self,
        id: u64,
        triggered_at_ms: u64,
        acks: &BTreeMap<u32, PhaseReport>,
    ) -> CommitRecord {
        let spec = &self.cfg.spec;
        CommitRecord {
            format: FORMAT_VERSION,
            checkpoint: id,
            generation: self.cfg.generation,
            triggered_at_ms,
            committed_at_ms: now_ms(),
            spec: spec.clone(),
            spec_hash: spec.spec_hash(),
            partitions: spec.input.partitions(),
            parallelism: spec.parallelism,
            tasks: acks
                .iter()
                .map(|(task, r)| CommittedTask {
                    task: *task,
                    container: self.cfg.assignment[task],
                    manifest: r.manifest_key.clone(),
                    offsets: r.offsets.clone(),
                    watermarks: r.watermarks.clone(),
                })
                .collect(),
            total_bytes: acks.values().map(|r| r.total_bytes).sum(),
            uploaded_bytes: acks.values().map(|r| r.uploaded_bytes).sum(),
            new_sst_bytes: acks.values().map(|r| r.new_sst_bytes).sum(),
            origin: self.cfg.origin.clone(),
            state_version: Some(self.cfg.state_version),
        }
    }

    /// The interval in force: chosen by the objective, or the spec's.
    fn interval(&self) -> Duration {
        self.cfg
            .objective
            .as_ref()
            .map_or(self.cfg.spec.checkpoint.interval, Objective::interval)
    }

    /// Under a recovery-time objective, chooses the next interval from what checkpoint `took`
    /// and the tasks reported: per container, its tasks' busy time and state size.
    fn adapt_interval(
        &mut self,
        took: Duration,
        acks: &BTreeMap<u32, PhaseReport>,
        loads: &BTreeMap<u32, TaskLoad>,
    ) {
        let Some(objective) = self.cfg.objective.as_mut() else {
            return;
        };
        let mut containers: BTreeMap<u32, ContainerLoad> = BTreeMap::new();
        for (task, report) in acks {
            let container = self.cfg.assignment[task];
            let load = loads.get(task).copied().unwrap_or_default();
            let c = containers
                .entry(container)
                .or_insert_with(|| ContainerLoad {
                    // Local containers restore in this process, one after another; each
                    // container of another process restores in its own.
                    process: match self.containers.get(container as usize) {
                        Some(ContainerLink::Local(_)) | None => 0,
                        Some(_) => container + 1,
                    },
                    ..Default::default()
                });
            // Saturating: the numbers come from other processes.
            c.busy = c.busy.saturating_add(Duration::from_micros(load.busy_us));
            c.window = c.window.max(Duration::from_micros(load.window_us));
            c.state_bytes = c.state_bytes.saturating_add(report.total_bytes);
        }
        let before = objective.interval();
        let loads: Vec<ContainerLoad> = containers.into_values().collect();
        let interval = objective.committed(took, &loads);
        if interval != before {
            tracing::info!(
                interval_ms = interval.as_millis() as u64,
                predicted_s = objective.predicted_seconds(),
                "checkpoint interval adapted to the recovery-time objective"
            );
        }
        self.publish_objective();
    }

    /// Adds a task's `Event::Busy` report to its totals in the job's progress, for the status.
    fn count_load(&self, task: u32, busy_us: u64, records: u64, lag: i64) {
        // Only the job's own tasks (a container of another process may only report its own,
        // see `remote::check_event`; this keeps the status to the assignment regardless).
        let Some(container) = self.cfg.assignment.get(&task) else {
            return;
        };
        let remote = is_remote(&self.containers, *container);
        self.progress
            .record_busy(task, remote, busy_us, records, lag);
    }

    /// Under a recovery-time objective, adds a task's busy time to its container's replay debt,
    /// and moves the next checkpoint to now when that debt would put a recovery over the
    /// budget: the input rate rose since the interval was chosen (at the last commit), and
    /// waiting for the interval would let a failure cost more than the target.
    fn on_busy(&mut self, task: u32, busy_us: u64) {
        // A report of records or lag alone adds no debt, and must not move the checkpoint at
        // a time the busy reports alone would not have.
        if busy_us == 0 {
            return;
        }
        let (Some(objective), Some(container)) =
            (self.cfg.objective.as_ref(), self.cfg.assignment.get(&task))
        else {
            return;
        };
        let debt = self.replay_debt.entry(*container).or_default();
        // Saturating: the number comes from another process.
        *debt = debt.saturating_add(Duration::from_micros(busy_us));
        let now = Instant::now();
        let (min, _) = self.cfg.spec.checkpoint.interval_bounds();
        let earliest = deadline_after(self.last_trigger, min);
        if now < self.due && now >= earliest && objective.overdue(*debt) {
            tracing::info!(
                container,
                replay_debt_s = debt.as_secs_f64(),
                "checkpointing early: replaying the input since the last checkpoint would take the recovery over its objective"
            );
            self.due = now;
        }
    }

    /// Shows the interval and the objective in the metrics and the status.
    fn publish_objective(&self) {
        self.metrics
            .checkpoint_interval_seconds
            .set(self.interval().as_secs_f64());
        let objective = self.cfg.objective.as_ref();
        self.metrics
            .recovery_target_seconds
            .set(objective.map_or(-1.0, |o| o.target().as_secs_f64()));
        self.metrics
            .recovery_predicted_seconds
            .set(objective.map_or(-1.0, Objective::predicted_seconds));
        *self.progress.objective.lock().expect("progress lock") = objective.map(Objective::status);
    }

    fn committed(&mut self, record: &CommitRecord, took: Duration) {
        self.last_committed = Some(record.checkpoint);
        self.flush_deferred();
        self.metrics
            .checkpoints
            .with_label_values(&["committed"])
            .inc();
        self.metrics.last_committed_id.set(record.checkpoint as i64);
        self.metrics
            .last_committed_timestamp
            .set(record.committed_at_ms as f64 / 1000.0);
        self.metrics
            .last_committed_bytes
            .set(record.total_bytes as i64);
        let info = CommittedCheckpoint {
            id: record.checkpoint,
            committed_at_ms: record.committed_at_ms,
            total_bytes: record.total_bytes,
            uploaded_bytes: record.uploaded_bytes,
            duration_ms: took.as_millis() as u64,
        };
        tracing::info!(
            checkpoint = info.id,
            total_bytes = info.total_bytes,
            uploaded_bytes = info.uploaded_bytes,
            duration_ms = info.duration_ms,
            "checkpoint committed"
        );
        *self.progress.last_committed.lock().expect("progress lock") = Some(info);
    }
}

/// Tells the job's progress which tasks run in another process, before the control API
/// answers (the status reports those from their containers' reports, not from this process's
/// metrics) and before any report.
pub fn place_tasks(
    progress: &JobProgress,
    assignment: &BTreeMap<u32, u32>,
    containers: &[ContainerLink],
) {
    for (task, container) in assignment {
        progress.place_task(*task, is_remote(containers, *container));
    }
}

/// Whether `container` runs in another process (anything but a container thread of this one).
fn is_remote(containers: &[ContainerLink], container: u32) -> bool {
    !matches!(
        containers.get(container as usize),
        Some(ContainerLink::Local(_))
    )
}

/// The last attempt of a final checkpoint, for messages.
fn last_attempt(failure: &Option<CheckpointFailure>) -> String {
    match failure {
        Some(failure) => failure.to_string(),
        None => "the deadline had passed before it started".into(),
    }
}

/// Where a job whose last committed checkpoint is `last` resumes, for messages.
fn resume_point(last: Option<u64>) -> String {
    match last {
        Some(id) => format!("checkpoint {id}"),
        None => "where this run started (it committed no checkpoint)".into(),
    }
}

/// `start + wait`, or if that instant cannot be represented, the latest one that can within a
/// factor of two: a deadline that far away never comes anyway. Specs bound intervals and
/// timeouts (`cairn_contract::units::MAX_DURATION`, 8760h), so this only matters for callers that
/// bypass them; either way, no duration panics.
pub fn deadline_after(start: Instant, wait: Duration) -> Instant {
    let mut wait = wait;
    loop {
        if let Some(at) = start.checked_add(wait) {
            return at;
        }
        // Terminates: `start + 0` is always representable.
        wait /= 2;
    }
}

/// Resolves at `deadline`, or earlier at the stop deadline if one is (or becomes) set.
async fn deadline_passed(deadline: Instant, stop: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let until = match *stop.borrow_and_update() {
            Some(at) => at.min(deadline),
            None => deadline,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return,
            changed = stop.changed() => {
                if changed.is_err() {
                    // Nobody can set a stop deadline any more.
                    tokio::time::sleep_until(until).await;
                    return;
                }
            }
        }
    }
}

/// The coordinator in process, with the test playing the container: it answers the coordinator's
/// commands with acknowledgements (or a failure) and checks what is committed in an in-memory
/// store.
#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use tokio::sync::oneshot;

    use super::*;
    use crate::checkpoint::upload::PhaseReport;
    use crate::runtime::failure::FailureKind;
    use crate::runtime::job_progress::TaskTotals;

    const GENERATION_WHO: &str = "coordinator test";

    /// Plays container 0 (tasks 0 and 1): acknowledges every checkpoint, except that task 1
    /// fails checkpoint `fail`. Returns every command it received, once told to stop.
    fn container(
        commands: std_mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        generation: u64,
        fail: u64,
    ) -> std::thread::JoinHandle<Vec<Command>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(command) = commands.recv() {
                seen.push(command.clone());
                match command {
                    Command::Checkpoint { id, .. } => {
                        for task in [0, 1] {
                            let result = if task == 1 && id == fail {
                                Err(TaskFailure::new(FailureKind::State, "disk full"))
                            } else {
                                Ok(PhaseReport {
                                    manifest_key: paths::task_manifest_key(id, generation, task),
                                    offsets: BTreeMap::from([(task, 10 * id)]),
                                    watermarks: Default::default(),
                                    total_bytes: 100,
                                    uploaded_bytes: 10,
                                    new_sst_bytes: 10,
                                    duration: Duration::from_millis(1),
                                })
                            };
                            let ack = Event::Ack {
                                task,
                                checkpoint: id,
                                result,
                                sync_seconds: 0.001,
                                load: TaskLoad::default(),
                            };
                            events.send(ack).unwrap();
                        }
                    }
                    Command::Stop | Command::Shutdown => break,
                    _ => {}
                }
            }
            seen
        })
    }

    /// Busy reports add up per task in the job's progress, marked remote for the tasks of a
    /// container of another process, from the start (before any report); a report for a task
    /// the job does not have changes nothing.
    #[tokio::test]
    async fn busy_reports_add_up_per_task_and_say_which_tasks_run_elsewhere() {
        let spec = cairn_contract::JobSpec::from_yaml_str(
            "name: t\ninput: {type: generator, partitions: 3}\ntask: {name: count}\n\
             checkpoint: {interval: 1h, store: 'memory://t'}\n",
        )
        .unwrap();
        let (_events_tx, events_rx) = mpsc::unbounded_channel();
        let (_requests_tx, requests_rx) = mpsc::channel(1);
        let progress = Arc::new(JobProgress::default());
        let assignment = BTreeMap::from([(0, 0), (1, 1), (2, 1)]);
        let links = vec![
            ContainerLink::Local(std_mpsc::channel().0),
            ContainerLink::Remote(Default::default()),
        ];
        place_tasks(&progress, &assignment, &links);
        let mut coordinator = Coordinator::new(
            CoordinatorConfig {
                store: CheckpointStore::in_memory(),
                generation: 1,
                spec,
                assignment,
                first_id: 1,
                restored: None,
                origin: None,
                start_savepoint: None,
                state_version: 1,
                objective: None,
            },
            links,
            events_rx,
            requests_rx,
            Arc::new(Metrics::new()),
            progress.clone(),
        );
        let remote = |progress: &JobProgress| -> Vec<bool> {
            progress.task_totals().values().map(|t| t.remote).collect()
        };
        assert_eq!(remote(&progress), [false, true, true]);
        let busy = |task, busy_us, records, lag| {
            Some(Event::Busy {
                task,
                busy_us,
                records,
                lag,
            })
        };
        for event in [
            busy(0, 100, 5, 7),
            busy(1, 2_000, 40, 9),
            busy(1, 0, 0, 3), // the lag alone moved
            busy(9, 1, 1, 1), // not a task of this job
        ] {
            coordinator.on_idle_event(event).unwrap();
        }
        let totals = progress.task_totals();
        assert_eq!(totals.len(), 3, "{totals:?}");
        assert_eq!(
            (totals[&0].busy_us, totals[&0].records, totals[&0].lag),
            (100, 5, 7)
        );
        assert_eq!(
            (totals[&1].busy_us, totals[&1].records, totals[&1].lag),
            (2_000, 40, 3)
        );
        assert_eq!(
            totals[&2],
            TaskTotals {
                remote: true,
                ..Default::default()
            }
        );
        assert_eq!(remote(&progress), [false, true, true]);
    }

    #[tokio::test]
    async fn commits_what_every_task_acknowledged_aborts_a_failed_one_and_stops_with_a_final_checkpoint(
    ) {
        let store = CheckpointStore::in_memory();
        let generation = generation::claim(&store, GENERATION_WHO).await.unwrap();
        let spec = cairn_contract::JobSpec::from_yaml_str(
            "name: t\ninput: {type: generator, partitions: 2}\ntask: {name: count}\n\
             checkpoint: {interval: 1h, store: 'memory://t'}\n",
        )
        .unwrap();
        let (commands_tx, commands_rx) = std_mpsc::channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests_rx) = mpsc::channel(4);
        let progress = Arc::new(JobProgress::default());
        let coordinator = Coordinator::new(
            CoordinatorConfig {
                store: store.clone(),
                generation,
                spec,
                assignment: BTreeMap::from([(0, 0), (1, 0)]),
                first_id: 1,
                restored: None,
                origin: None,
                start_savepoint: None,
                state_version: 1,
                objective: None,
            },
            vec![ContainerLink::Local(commands_tx)],
            events_rx,
            requests_rx,
            Arc::new(Metrics::new()),
            progress.clone(),
        );
        let played = container(commands_rx, events_tx, generation, 2);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (_deadline_tx, deadline_rx) = watch::channel(None);
        let running = tokio::spawn(coordinator.run(shutdown_rx, deadline_rx));

        let ask = || async {
            let (reply, answer) = oneshot::channel();
            requests_tx.send(Request::Checkpoint(reply)).await.unwrap();
            answer.await.unwrap()
        };
        assert_eq!(ask().await, Ok(1));
        assert!(store.exists(&paths::commit_key(1)).await.unwrap());
        // The caller hears which checkpoint was aborted, which task failed it and why.
        let failed = ask().await.unwrap_err();
        assert_eq!(
            failed,
            RequestError::CheckpointFailed(CheckpointFailure {
                checkpoint: Some(2),
                reason: AbortReason::TaskFailed {
                    task: 1,
                    failure: TaskFailure::new(FailureKind::State, "disk full"),
                },
            })
        );
        assert!(
            failed
                .to_string()
                .contains("checkpoint 2 aborted: task 1: disk full"),
            "{failed}"
        );
        assert!(!store.exists(&paths::commit_key(2)).await.unwrap());
        assert_eq!(
            progress.aborted.load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        shutdown_tx.send(true).unwrap();
        let ending = running.await.unwrap().unwrap();
        let Ending::Stopped {
            checkpoint,
            savepoint: None,
        } = ending
        else {
            panic!("{ending:?}");
        };
        assert!(checkpoint > 2, "final checkpoint {checkpoint}");
        assert!(store.exists(&paths::commit_key(checkpoint)).await.unwrap());
        let last = progress.last_committed.lock().unwrap().clone().unwrap();
        assert_eq!(last.id, checkpoint);

        // What the container was told, in order: checkpoint 1 committed, 2 aborted, the final
        // one taken paused and committed, then stop.
        let told: Vec<Command> = played
            .join()
            .unwrap()
            .into_iter()
            .filter(|c| !matches!(c, Command::Resume))
            .collect();
        assert_eq!(
            told,
            [
                Command::Checkpoint {
                    id: 1,
                    pause: false
                },
                Command::Committed(1),
                Command::Checkpoint {
                    id: 2,
                    pause: false
                },
                Command::Aborted(2),
                Command::Checkpoint {
                    id: checkpoint,
                    pause: true
                },
                Command::Committed(checkpoint),
                Command::Stop,
            ]
        );
    }
}

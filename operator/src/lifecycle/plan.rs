//! One step of the lifecycle: [`plan`] maps (desired spec, status, observation, now) to the next
//! status, the effects and the events.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::autoscale::LoadMemory;
use super::classify::{classify, Change};
use super::{conditions, standby};
use crate::children::Housekeeping;
use crate::control::ControlError;
use crate::crd::{
    CheckpointInfo, Deployment, DesiredState, Operation, OperationKind, Phase,
    RecoveryObjectiveInfo, SavepointRecord, Step, StreamJobStatus, UpgradeMode,
};
use crate::pods::PodDocument;
use crate::validate::ValidatedJob;
use cairn_contract::control::{self as wire, JobStatus, OperationState};
use cairn_contract::deploy::Start;
use cairn_contract::JobSpec;

/// Poll interval while an operation is in flight.
const BUSY_REQUEUE: Duration = Duration::from_secs(2);
/// Poll interval while the job processes nothing and only the operator's next look moves it on:
/// a stop's savepoint pending (the job stops at its barrier, and nothing Kubernetes watches
/// changes when the savepoint completes), and new workers that have not committed yet. At
/// [`BUSY_REQUEUE`] the savepoint alone waited 1 s on average, up to 2 s, in every upgrade,
/// rescale and repartition (docs/benchmarks.md, kind pauses); a look is one control API
/// request.
const STOPPED_REQUEUE: Duration = Duration::from_millis(250);
/// Poll interval of a running job (status refresh).
const STEADY_REQUEUE: Duration = Duration::from_secs(10);
/// Poll interval of a finished job: its state no longer changes, only its pods might.
const FINISHED_REQUEUE: Duration = Duration::from_secs(60);
/// First savepoint retry delay; doubles per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest savepoint retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest time between two reconciles of a job. Requeue times come partly from status (a retry
/// time) and spec (a savepoint interval); kube-runtime's scheduler panics on a delay more than
/// about two years away, so every plan is capped here.
pub const MAX_REQUEUE: Duration = Duration::from_secs(600);

/// What the operator saw of the job's pods: the workers' and the standbys' together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workers {
    /// The workers' StatefulSet exists.
    pub stateful_set: bool,
    /// The standbys' StatefulSet exists.
    pub standby_set: bool,
    /// Pods of either set that exist (terminating ones included).
    pub pods: u32,
    /// Container restarts summed over the pods.
    pub restarts: i32,
    /// Why pods are failing (e.g. `worker-1: CrashLoopBackOff: ...`), if they are.
    pub failing: Option<String>,
}

impl Workers {
    /// No StatefulSet and no pod left (standbys included: an old standby must not outlive its
    /// spec).
    pub fn gone(&self) -> bool {
        !self.stateful_set && !self.standby_set && self.pods == 0
    }
}

/// Everything observed this round.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The pods.
    pub workers: Workers,
    /// The job's control API status, when it answered.
    pub report: Option<JobStatus>,
    /// The answer to polling `status.operation.controlOperation`, when there is one.
    pub operation: Option<Result<wire::Operation, ControlError>>,
    /// The housekeeping Jobs named in status (`disposal.job`, `operation.housekeeping`) that
    /// exist, by name; one missing here does not exist.
    pub housekeeping: BTreeMap<String, Outcome>,
    /// What the autoscaler remembers of earlier looks at the job (kept by the operator between
    /// reconciles, see [`Plan::load`]); `None` at first.
    pub load: Option<LoadMemory>,
}

/// How a housekeeping pod ([`crate::children::housekeeping_job`]) is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished. `stuck`: why its pod cannot start (`ImagePullBackOff: …`), if it cannot.
    Running {
        /// Why the pod cannot start.
        stuck: Option<String>,
    },
    /// The command succeeded.
    Succeeded,
    /// The command failed: its one-line reason (the pod's termination message), or the Job's.
    Failed {
        /// What went wrong.
        message: String,
    },
}

/// The inputs of one step.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The desired spec, validated.
    pub desired: &'a ValidatedJob,
    /// What the deployed pods run (`status.deployed.pods`, read back as recorded).
    pub deployed: Option<&'a PodDocument>,
    /// Status so far.
    pub status: &'a StreamJobStatus,
    /// What was observed.
    pub observed: &'a Observed,
    /// The StreamJob is being deleted and still carries the final-savepoint finalizer.
    pub deleting: bool,
    /// Now.
    pub now: Timestamp,
}

/// Something to do after the status is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Server-side apply the children of this deployment (with or without the worker pods).
    Apply {
        /// The deployment to build from.
        deployment: Deployment,
        /// Include the StatefulSets and PDB.
        with_workers: bool,
    },
    /// Delete the StatefulSets (foreground) and their pods, standbys included.
    DeleteWorkers,
    /// Ask the job for a savepoint. Carried out *before* the status is written, because its
    /// answer (the operation id, or why the job refused) belongs in that status: see
    /// [`savepoint_answered`].
    RequestSavepoint {
        /// Stop the job after it.
        stop: bool,
    },
    /// Create a housekeeping Job (an existing one of that name is left as it is).
    RunHousekeeping {
        /// The Job's name.
        name: String,
        /// What it does.
        kind: Housekeeping,
        /// Whose settings its pod runs with (image, credentials, volumes).
        pods: Box<PodDocument>,
        /// The `cairn-worker` arguments ([`cairn_contract::housekeeping`]).
        args: Vec<String>,
        /// Extra environment.
        env: Vec<(&'static str, String)>,
    },
    /// Delete a housekeeping Job and its pod.
    DeleteHousekeeping {
        /// The Job's name.
        name: String,
    },
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// What happened, and what to do if anything.
    pub message: String,
}

/// The result of one step: the status (conditions included) to write once, then the effects.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Status to write (before the effects).
    pub status: StreamJobStatus,
    /// Effects, in order.
    pub effects: Vec<Effect>,
    /// Events.
    pub notes: Vec<Note>,
    /// Reconcile again after this long.
    pub requeue: Duration,
    /// An operation that just finished: (kind, seconds it took), for metrics.
    pub finished: Option<(OperationKind, f64)>,
    /// Deletion may proceed: remove the finalizer.
    pub release_finalizer: bool,
    /// What the autoscaler remembers for the next reconcile ([`Observed::load`]); `None`:
    /// forget the job (it has no autoscaler).
    pub load: Option<LoadMemory>,
}

/// Decides the next step.
pub fn plan(input: &Input) -> Plan {
    let mut step = Stepper::new(input, input.status.clone());
    step.status.observed_generation = input.generation;
    step.observe_job();
    match step.status.operation.clone() {
        Some(op) if !input.deleting || op.kind == OperationKind::Delete => {
            step.continue_operation(op)
        }
        _ if input.deleting => step.start_deletion(),
        _ => step.idle(),
    }
    if !input.deleting {
        step.dispose_pruned();
    }
    step.autoscale();
    step.into_plan()
}

/// Folds the job's answer to the plan's [`Effect::RequestSavepoint`] into the plan, before its
/// status is written: the control API's operation id is recorded in the operation, or a refusal
/// counts as a failed attempt (back off, or fall back when the spec allows it).
///
/// Asking before the status holds the operation is safe: a job asked again while a savepoint is
/// pending answers with that same operation, so a reconcile that dies between the request and
/// the status write loses nothing; the next one asks again and records the id.
pub fn savepoint_answered(input: &Input, plan: Plan, answer: Result<String, String>) -> Plan {
    let mut step = Stepper::new(input, plan.status);
    step.effects = plan.effects;
    step.effects
        .retain(|e| !matches!(e, Effect::RequestSavepoint { .. }));
    step.notes = plan.notes;
    step.requeue = plan.requeue;
    step.finished = plan.finished;
    step.release_finalizer = plan.release_finalizer;
    step.load = plan.load;
    if let Some(mut op) = step.status.operation.clone() {
        match answer {
            Ok(id) => {
                let stop = op.kind != OperationKind::Savepoint;
                op.control_operation = Some(id);
                op.message = Some(format!("savepoint requested (stop: {stop})"));
                step.status.operation = Some(op);
                if stop {
                    step.requeue = step.requeue.min(STOPPED_REQUEUE);
                }
            }
            Err(reason) => step.savepoint_failed(op, reason),
        }
    }
    step.into_plan()
}

/// A refused desired spec (invalid, or against the operator's policy): the status says why
/// (`lastError`, `Degraded`; `Failed` while nothing is deployed) and nothing else changes, so a
/// running job keeps running its deployed spec.
pub fn refused(
    status: &StreamJobStatus,
    generation: Option<i64>,
    refusal: conditions::Refusal,
    now: Timestamp,
) -> StreamJobStatus {
    let mut next = status.clone();
    next.observed_generation = generation;
    next.last_error = Some(refusal.message.to_owned());
    if next.deployed.is_none() {
        next.phase = Some(Phase::Failed);
    }
    let facts = conditions::Facts {
        observed: &Observed::default(),
        checkpoint_interval: cairn_contract::DEFAULT_CHECKPOINT_INTERVAL,
        recovery_objective: false,
        standby: None,
        desired_failed_before: false,
        refused: Some(refusal),
        now,
    };
    conditions::update(&mut next, &facts);
    next
}

/// One step in the making: [`plan`]'s state, shared with the store work of
/// [`super::store_work`].
pub(super) struct Stepper<'a> {
    pub(super) input: &'a Input<'a>,
    pub(super) status: StreamJobStatus,
    pub(super) effects: Vec<Effect>,
    pub(super) notes: Vec<Note>,
    pub(super) requeue: Duration,
    pub(super) finished: Option<(OperationKind, f64)>,
    pub(super) release_finalizer: bool,
    pub(super) load: Option<LoadMemory>,
}

impl<'a> Stepper<'a> {
    fn new(input: &'a Input<'a>, status: StreamJobStatus) -> Self {
        Stepper {
            input,
            status,
            effects: Vec::new(),
            notes: Vec::new(),
            requeue: STEADY_REQUEUE,
            finished: None,
            release_finalizer: false,
            load: input.observed.load.clone(),
        }
    }

    /// The plan, with the conditions computed from its status.
    fn into_plan(mut self) -> Plan {
        let input = self.input;
        let deployed = self.deployed_job();
        let checkpoint = &deployed.checkpoint;
        let facts = conditions::Facts {
            observed: input.observed,
            // The longest interval the job may use: under a recovery-time objective the
            // coordinator lengthens it up to `maxInterval`, and the workers' health rule counts
            // from that too.
            checkpoint_interval: checkpoint.health_interval(),
            recovery_objective: checkpoint.target_recovery_time.is_some(),
            standby: deployed.standby.then_some(deployed.parallelism),
            desired_failed_before: self.status.failed_hash.as_deref() == Some(&input.desired.hash),
            refused: None,
            now: input.now,
        };
        conditions::update(&mut self.status, &facts);
        Plan {
            status: self.status,
            effects: self.effects,
            notes: self.notes,
            requeue: self.requeue.min(MAX_REQUEUE),
            finished: self.finished,
            release_finalizer: self.release_finalizer,
            load: self.load,
        }
    }

    pub(super) fn now(&self) -> String {
        self.input.now.to_string()
    }

    /// The job the deployed pods run (the desired one before anything is deployed).
    pub(super) fn deployed_job(&self) -> &'a JobSpec {
        self.input
            .deployed
            .map_or(&self.input.desired.pods.job, |d| &d.job)
    }

    pub(super) fn note(&mut self, warning: bool, reason: &'static str, message: String) {
        self.notes.push(Note {
            warning,
            reason,
            message,
        });
    }

    /// Copies what the job reports into status.
    fn observe_job(&mut self) {
        let obs = self.input.observed;
        self.status.worker_restarts = self.status.deployed.as_ref().map(|_| obs.workers.restarts);
        if let Some(report) = &obs.report {
            if let Some(c) = &report.last_checkpoint {
                self.status.last_checkpoint = Some(CheckpointInfo {
                    id: c.id,
                    // The job reports the time; one out of range is shown as unknown.
                    time: i64::try_from(c.committed_at_ms)
                        .ok()
                        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    duration_ms: c.duration_ms,
                    bytes: c.total_bytes,
                    uploaded_bytes: c.uploaded_bytes,
                });
            }
            if report.observed_partitions.is_some() {
                self.status.observed_input_partitions = report.observed_partitions;
            }
            self.status.standbys = standby::mirror(report);
            self.status.recovery_objective =
                report
                    .recovery_objective
                    .as_ref()
                    .map(|o| RecoveryObjectiveInfo {
                        target_ms: o.target_ms,
                        interval_ms: o.interval_ms,
                        predicted_ms: o.predicted.as_ref().map(|p| p.total_ms),
                        problem: o.problem.clone(),
                    });
        }
        // Kept while the job does not answer, like `lastCheckpoint`; gone with the pods (nothing
        // stands by) or with `standby`.
        if obs.workers.pods == 0 || !self.deployed_job().standby {
            self.status.standbys.clear();
        }
        // Kept while the job does not answer, like `lastCheckpoint`; gone with the objective.
        if self
            .deployed_job()
            .checkpoint
            .target_recovery_time
            .is_none()
        {
            self.status.recovery_objective = None;
        }
        if let (Some(_), Some(job)) = (&self.status.deployed, self.input.deployed) {
            self.status.parallelism = Some(job.job.parallelism);
            self.status.partitions = Some(job.job.input.partitions());
        }
        let desired = self.input.desired.job();
        self.status.target_parallelism = Some(desired.parallelism);
        self.status.target_partitions = Some(desired.input.partitions());
    }

    /// True when the pods of `deployment` run and have committed a checkpoint.
    pub(super) fn committed(&self, deployment: &Deployment) -> bool {
        self.input.observed.report.as_ref().is_some_and(|r| {
            r.deployment.as_deref() == Some(deployment.hash.as_str()) && r.last_checkpoint.is_some()
        })
    }

    /// A deployment of the desired spec.
    pub(super) fn new_deployment(&self, savepoint: Option<String>, state_epoch: u32) -> Deployment {
        let desired = self.input.desired;
        Deployment::new(
            &desired.pods,
            desired.restore_from.clone(),
            Start {
                savepoint,
                state_epoch,
            },
            self.now(),
        )
    }

    fn start_operation(&mut self, kind: OperationKind, step: Step, target: Option<Deployment>) {
        let now = self.now();
        self.status.operation = Some(Operation {
            kind,
            step,
            target,
            control_operation: None,
            savepoint: None,
            attempts: 0,
            retry_after: None,
            started_at: now.clone(),
            step_started_at: now,
            message: None,
            trigger: None,
            housekeeping: None,
        });
        self.requeue = Duration::ZERO;
    }

    /// No operation in flight: deploy, keep running, or start the next operation.
    fn idle(&mut self) {
        let desired = self.input.desired;
        let Some(deployed) = self.status.deployed.clone() else {
            return self.first_deployment();
        };
        if self.status.phase == Some(Phase::Suspended) {
            if desired.desired_state == DesiredState::Running {
                self.note(false, "Resuming", "resuming the job".into());
                self.status.phase = Some(Phase::Upgrading);
                return self.start_operation(OperationKind::Resume, Step::StoppingWorkers, None);
            }
            self.requeue = Duration::from_secs(300);
            return self.keep_children(&deployed, false);
        }
        if desired.desired_state == DesiredState::Suspended {
            self.note(
                false,
                "Suspending",
                format!(
                    "suspending the job ({} mode)",
                    desired.upgrade_mode.as_str()
                ),
            );
            self.status.phase = Some(Phase::Suspending);
            let first = self.first_step_of_stop(OperationKind::Suspend);
            return self.start_operation(OperationKind::Suspend, first, None);
        }
        let change = match self.input.deployed {
            Some(current) => classify(current, &desired.pods),
            None => Change::Upgrade,
        };
        let failed_before = self.status.failed_hash.as_deref() == Some(&desired.hash);
        if let (Some(kind), false) = (change.operation(), failed_before) {
            self.note(
                false,
                "SpecChanged",
                format!(
                    "{} requested (P {} -> {}, N {} -> {}); {} mode",
                    kind.as_str(),
                    self.status.parallelism.unwrap_or_default(),
                    desired.job().parallelism,
                    self.status.partitions.unwrap_or_default(),
                    desired.job().input.partitions(),
                    self.mode_for(kind).as_str(),
                ),
            );
            self.status.phase = Some(Phase::Upgrading);
            let first = if self.checks_restore(kind) {
                Step::CheckingRestore
            } else {
                self.first_step_of_stop(kind)
            };
            return self.start_operation(kind, first, None);
        }
        if self.status.failed_hash.as_deref() != Some(&desired.hash) {
            // The refused spec was changed: its refusal no longer applies.
            self.status.not_restorable = None;
        }
        if desired.restart_nonce.is_some()
            && desired.restart_nonce != self.status.handled_restart_nonce
        {
            self.status.handled_restart_nonce = desired.restart_nonce;
            self.note(false, "Restarting", "restartNonce changed: restarting every worker pod; they restore the latest committed checkpoint".into());
            self.status.phase = Some(Phase::Upgrading);
            return self.start_operation(OperationKind::Restart, Step::StoppingWorkers, None);
        }
        // The spec matches what runs: keep the children in shape and follow the job.
        if self.committed(&deployed) {
            self.keep_children(&deployed, true);
            let phase = self.settled_phase();
            if self.status.phase != Some(phase) {
                let (reason, message) = match phase {
                    Phase::Finished => ("Finished", format!("the input ended and the final checkpoint {} committed; the pods hold the state: take a savepoint, change the spec to resume with new input, suspend or delete", self.status.last_checkpoint.as_ref().map_or(0, |c| c.id))),
                    _ => ("Running", "the job committed its first checkpoint".into()),
                };
                self.note(false, reason, message);
            }
            self.status.phase = Some(phase);
            if self.status.last_good.as_ref().map(|g| &g.hash) != Some(&deployed.hash) {
                self.status.last_good = Some(deployed.clone());
            }
        } else if self.status.phase.is_none() {
            self.status.phase = Some(Phase::Deploying);
        }
        match self.status.phase {
            Some(Phase::Running) => self.maybe_savepoint(true),
            // Its state no longer changes: manual savepoints only, and no need to look often.
            Some(Phase::Finished) => {
                self.requeue = FINISHED_REQUEUE;
                self.maybe_savepoint(false);
            }
            _ => {}
        }
    }

    /// Deletion with `deletion.finalSavepoint` (stop with a savepoint, report it) and/or
    /// `checkpointData: delete` (stop the workers, purge the store), then let go.
    fn start_deletion(&mut self) {
        self.status.phase = Some(Phase::Deleting);
        let desired = self.input.desired;
        let pods = self.input.observed.workers.pods > 0;
        // The finalizer is there for a final savepoint unless it is there for the data alone.
        let final_savepoint = desired.final_savepoint || !desired.delete_data;
        if final_savepoint && pods {
            self.note(
                false,
                "Deleting",
                "taking a final savepoint before deletion".into(),
            );
            return self.start_operation(OperationKind::Delete, Step::TakingSavepoint, None);
        }
        if final_savepoint {
            self.note(true, "NoFinalSavepoint", "deleted while no worker pod ran: no final savepoint was taken; the latest committed checkpoint stays in the store unless checkpointData is delete".into());
        }
        if desired.delete_data {
            self.note(
                false,
                "Deleting",
                "stopping the workers, then deleting the job's data in its store (checkpointData: delete)".into(),
            );
            return self.start_operation(OperationKind::Delete, Step::StoppingWorkers, None);
        }
        self.release_finalizer = true;
    }

    /// The first deployment of this StreamJob.
    fn first_deployment(&mut self) {
        let desired = self.input.desired;
        self.status.handled_restart_nonce = desired.restart_nonce;
        self.status.handled_trigger_nonce = desired.savepoints.trigger_nonce;
        let savepoint = match desired.upgrade_mode {
            UpgradeMode::Stateless => None,
            _ => desired.restore_from.savepoint.clone(),
        };
        let deployment = self.new_deployment(savepoint, 0);
        let running = desired.desired_state == DesiredState::Running;
        self.status.phase = Some(if running {
            Phase::Deploying
        } else {
            Phase::Suspended
        });
        self.status.deployed = Some(deployment.clone());
        self.note(
            false,
            if running { "Deploying" } else { "Suspended" },
            match (&deployment.savepoint, running) {
                (_, false) => "created suspended: no pods until spec.state is running".into(),
                (Some(sp), true) => format!("deploying, restoring savepoint {sp}"),
                (None, true) => "deploying".into(),
            },
        );
        self.effects.push(Effect::Apply {
            deployment,
            with_workers: running,
        });
        self.requeue = BUSY_REQUEUE;
    }

    fn keep_children(&mut self, deployment: &Deployment, with_workers: bool) {
        self.effects.push(Effect::Apply {
            deployment: deployment.clone(),
            with_workers,
        });
    }

    /// The mode an operation of `kind` runs in: repartitioning needs a savepoint (only
    /// savepoints are re-split), so `last-state` takes one for it.
    pub(super) fn mode_for(&self, kind: OperationKind) -> UpgradeMode {
        let mode = self.input.desired.upgrade_mode;
        if kind == OperationKind::Repartition && mode == UpgradeMode::LastState {
            UpgradeMode::Savepoint
        } else {
            mode
        }
    }

    pub(super) fn first_step_of_stop(&self, kind: OperationKind) -> Step {
        if self.mode_for(kind) == UpgradeMode::Savepoint && self.input.observed.workers.pods > 0 {
            Step::TakingSavepoint
        } else {
            Step::StoppingWorkers
        }
    }

    /// Manual (`triggerNonce`) and, when `periodic` allows, periodic savepoints of a running
    /// job (a finished one's state does not change: one copy is enough).
    fn maybe_savepoint(&mut self, periodic: bool) {
        let policy = &self.input.desired.savepoints;
        let manual = policy.trigger_nonce.is_some()
            && policy.trigger_nonce != self.status.handled_trigger_nonce;
        let periodic = periodic
            && policy.interval.is_some_and(|interval| {
                let since = self
                    .status
                    .savepoints
                    .iter()
                    .map(|s| s.time.as_str())
                    .chain(
                        self.status
                            .deployed
                            .as_ref()
                            .and_then(|d| d.deployed_at.as_deref()),
                    )
                    .filter_map(|t| t.parse::<Timestamp>().ok())
                    .max();
                since.is_none_or(|t| elapsed(t, self.input.now) >= interval)
            });
        if manual || periodic {
            if manual {
                self.status.handled_trigger_nonce = policy.trigger_nonce;
            }
            let reason = if manual { "manual" } else { "periodic" };
            self.start_operation(OperationKind::Savepoint, Step::TakingSavepoint, None);
            if let Some(op) = &mut self.status.operation {
                op.message = Some(format!("{reason} savepoint"));
                op.trigger = Some(reason.into());
            }
        } else if let (Some(interval), true) =
            (policy.interval, self.status.phase == Some(Phase::Running))
        {
            self.requeue = self.requeue.min(interval);
        }
    }

    fn continue_operation(&mut self, op: Operation) {
        self.requeue = BUSY_REQUEUE;
        match op.step {
            Step::TakingSavepoint => self.taking_savepoint(op),
            Step::StoppingWorkers => self.stopping_workers(op),
            Step::AwaitingCheckpoint => self.awaiting_checkpoint(op),
            Step::CheckingRestore => self.checking_restore(op),
            Step::PurgingStore => self.purging_store(op),
        }
    }

    fn taking_savepoint(&mut self, mut op: Operation) {
        if let Some(wait) = self.retry_wait(op.retry_after.as_deref()) {
            self.requeue = wait;
            return;
        }
        let stop = op.kind != OperationKind::Savepoint;
        if op.control_operation.is_none() {
            if self.input.observed.workers.pods == 0 && stop {
                // Nothing runs that could take it: nothing is lost by not taking one.
                return self.set_step(op, Step::StoppingWorkers);
            }
            self.effects.push(Effect::RequestSavepoint { stop });
            self.status.operation = Some(op);
            return;
        }
        match self.input.observed.operation.clone() {
            Some(Ok(r)) if r.state == OperationState::Pending => {
                if stop {
                    self.requeue = STOPPED_REQUEUE;
                }
            }
            Some(Ok(r)) if r.state == OperationState::Succeeded && r.savepoint.is_some() => {
                let sp = r.savepoint.expect("checked");
                let reason = match op.kind {
                    OperationKind::Savepoint => {
                        op.trigger.clone().unwrap_or_else(|| "manual".into())
                    }
                    kind => kind.as_str().to_owned(),
                };
                self.record_savepoint(&sp.url, sp.checkpoint, &reason);
                self.note(
                    false,
                    "SavepointTaken",
                    format!(
                        "{reason} savepoint {} (checkpoint {})",
                        sp.url, sp.checkpoint
                    ),
                );
                if op.kind == OperationKind::Savepoint {
                    self.finish();
                    self.status.phase = Some(self.settled_phase());
                    return;
                }
                if op.kind == OperationKind::Delete && !self.input.desired.delete_data {
                    self.release_finalizer = true;
                    return self.finish();
                }
                op.savepoint = Some(sp.url);
                op.control_operation = None;
                self.set_step(op, Step::StoppingWorkers);
            }
            other => {
                let reason = match other {
                    Some(Ok(r)) => r
                        .error
                        .unwrap_or_else(|| format!("operation ended {}", r.state.as_str())),
                    Some(Err(e)) if e.is_not_found() => {
                        "the job restarted and lost the savepoint operation".into()
                    }
                    Some(Err(e)) => e.to_string(),
                    None => "no answer from the job".into(),
                };
                self.savepoint_failed(op, reason);
            }
        }
    }

    /// How long a recorded retry time (`retryAfter`) still holds the next attempt back; `None`
    /// when it has passed. A retry time further away than the longest backoff was not written
    /// by this operator (status edited by hand?): retry now rather than wait for it.
    pub(super) fn retry_wait(&self, retry_after: Option<&str>) -> Option<Duration> {
        let after = retry_after.and_then(|t| t.parse::<Timestamp>().ok())?;
        let wait = elapsed(self.input.now, after);
        (after > self.input.now && wait <= MAX_BACKOFF).then(|| wait.max(Duration::from_secs(1)))
    }

    fn savepoint_failed(&mut self, mut op: Operation, reason: String) {
        op.attempts = op.attempts.saturating_add(1);
        op.control_operation = None;
        if op.kind == OperationKind::Delete {
            // Deletion never gets stuck on a job that cannot take a savepoint.
            if self.input.desired.delete_data {
                self.note(true, "FinalSavepointFailed", format!("final savepoint failed ({reason}); deleting without it, and the job's data with it (checkpointData: delete)"));
                return self.set_step(op, Step::StoppingWorkers);
            }
            self.note(true, "FinalSavepointFailed", format!("final savepoint failed ({reason}); deleting without it: the latest committed checkpoint stays in the store"));
            self.release_finalizer = true;
            return self.finish();
        }
        let fallback = self.input.desired.savepoints.fallback_after;
        let upgrade_like = !matches!(
            op.kind,
            OperationKind::Savepoint | OperationKind::Repartition
        );
        if upgrade_like && fallback.is_some_and(|n| op.attempts >= n) {
            let message = format!(
                "savepoint failed {} times (last: {reason}); continuing from the latest committed checkpoint as spec.savepoints.fallbackToLastStateAfter allows: state newer than that checkpoint is replayed from the input",
                op.attempts
            );
            self.note(true, "FallbackToLastState", message.clone());
            op.message = Some(message);
            op.retry_after = None;
            return self.set_step(op, Step::StoppingWorkers);
        }
        let delay = backoff(op.attempts);
        let message = format!(
            "savepoint attempt {} failed: {reason}; the running job is untouched; retrying in {}s",
            op.attempts,
            delay.as_secs()
        );
        self.note(true, "SavepointFailed", message.clone());
        self.status.last_error = Some(message.clone());
        op.message = Some(message);
        op.retry_after = Some((self.input.now + delay).to_string());
        self.requeue = delay;
        if op.kind == OperationKind::Savepoint {
            // A periodic or manual savepoint is not retried forever: the next period tries again.
            self.finish();
            return;
        }
        self.status.operation = Some(op);
    }

    fn stopping_workers(&mut self, op: Operation) {
        if !self.input.observed.workers.gone() {
            self.effects.push(Effect::DeleteWorkers);
            self.status.operation = Some(op);
            return;
        }
        let Some(deployed) = self.status.deployed.clone() else {
            return self.finish();
        };
        let mode = self.mode_for(op.kind);
        match op.kind {
            OperationKind::Delete if self.input.desired.delete_data => {
                self.set_step(op, Step::PurgingStore)
            }
            OperationKind::Delete => {
                self.release_finalizer = true;
                self.finish();
            }
            OperationKind::Suspend => {
                let mut kept = deployed.clone();
                if mode == UpgradeMode::Savepoint {
                    kept.savepoint = op.savepoint.clone().or(kept.savepoint);
                }
                self.status.deployed = Some(kept.clone());
                self.keep_children(&kept, false);
                self.status.phase = Some(Phase::Suspended);
                self.note(
                    false,
                    "Suspended",
                    match &op.savepoint {
                        Some(sp) => format!("suspended with savepoint {sp}"),
                        None => {
                            "suspended; resuming restores the latest committed checkpoint".into()
                        }
                    },
                );
                self.finish();
                self.requeue = Duration::from_secs(300);
            }
            OperationKind::Restart => self.deploy(op, deployed),
            OperationKind::Rollback => match op.target.clone() {
                Some(target) => self.deploy(op, target),
                None => self.rollback_without_target(),
            },
            _ => {
                let target = match mode {
                    UpgradeMode::Savepoint => self.new_deployment(
                        op.savepoint.clone().or_else(|| {
                            // Resume of a suspended job, or a savepoint that fell back.
                            (op.kind == OperationKind::Resume)
                                .then(|| deployed.savepoint.clone())
                                .flatten()
                        }),
                        deployed.state_epoch,
                    ),
                    UpgradeMode::LastState => self.new_deployment(None, deployed.state_epoch),
                    // Saturating: the epoch comes from status; 2^32 stateless restarts do not
                    // happen, a status edited to u32::MAX must not panic the operator.
                    UpgradeMode::Stateless => {
                        self.new_deployment(None, deployed.state_epoch.saturating_add(1))
                    }
                };
                self.deploy(op, target)
            }
        }
    }

    /// A rollback whose target is missing from status. The operator always records one, so the
    /// status was edited or written by something else: there is no spec to roll back to, and
    /// redeploying the failed spec would undo the rollback. The workers are already stopped (this
    /// is the step after their deletion): stop here, say what is wrong and how to get out of it
    /// (phase `Failed`, `Degraded`, a Warning event), and wait for a spec change.
    fn rollback_without_target(&mut self) {
        let message = "status.operation is a Rollback without a target (status.operation.target was removed or never written), so there is no spec to roll back to; the worker pods are stopped. To deploy again, change the spec, or set spec.restartNonce to a new value to restart the deployed spec".to_owned();
        self.note(true, "RollbackWithoutTarget", message.clone());
        self.status.last_error = Some(message);
        self.status.phase = Some(Phase::Failed);
        self.finish();
    }

    fn deploy(&mut self, mut op: Operation, target: Deployment) {
        op.target = Some(target.clone());
        self.status.deployed = Some(target.clone());
        self.effects.push(Effect::Apply {
            deployment: target,
            with_workers: true,
        });
        op.message =
            Some("new workers started; waiting for their first committed checkpoint".into());
        self.set_step(op, Step::AwaitingCheckpoint);
    }

    fn awaiting_checkpoint(&mut self, op: Operation) {
        let Some(deployed) = self.status.deployed.clone() else {
            return self.finish();
        };
        if self.committed(&deployed) {
            self.keep_children(&deployed, true);
            let seconds = op
                .started_at
                .parse::<Timestamp>()
                .map(|t| elapsed(t, self.input.now).as_secs_f64())
                .unwrap_or_default();
            self.status.phase = Some(self.settled_phase());
            self.status.last_good = Some(deployed.clone());
            self.status.last_error = None;
            if op.kind == OperationKind::Rollback {
                self.note(true, "RolledBack", format!("rolled back to the last good spec in {seconds:.0}s; the failed spec is not retried until spec changes"));
            } else {
                self.status.failed_hash = None;
                self.status.not_restorable = None;
                self.note(
                    false,
                    "OperationSucceeded",
                    format!("{} finished in {seconds:.0}s", op.kind.as_str()),
                );
            }
            self.finished = Some((op.kind, seconds));
            return self.finish();
        }
        let started = op
            .step_started_at
            .parse::<Timestamp>()
            .unwrap_or(self.input.now);
        let timeout = self.input.desired.upgrade_timeout;
        if elapsed(started, self.input.now) < timeout {
            self.requeue = STOPPED_REQUEUE;
            self.keep_children(&deployed, true);
            if let Some(failing) = &self.input.observed.workers.failing {
                self.status.last_error = Some(format!("worker pods failing: {failing}"));
            }
            self.status.operation = Some(op);
            return;
        }
        let why = self
            .input
            .observed
            .workers
            .failing
            .clone()
            .unwrap_or_else(|| "no checkpoint committed".into());
        if op.kind == OperationKind::Rollback {
            let message = format!("the rollback did not commit a checkpoint within {}s either ({why}); the job needs attention: fix the spec", timeout.as_secs());
            self.note(true, "RollbackFailed", message.clone());
            self.status.last_error = Some(message);
            self.status.phase = Some(Phase::Failed);
            return self.finish();
        }
        let Some(last_good) = self
            .status
            .last_good
            .clone()
            .filter(|g| g.hash != deployed.hash)
        else {
            let message = format!("the new workers did not commit a checkpoint within {}s ({why}) and there is no earlier good spec to roll back to; still waiting", timeout.as_secs());
            self.status.last_error = Some(message);
            self.keep_children(&deployed, true);
            self.status.operation = Some(op);
            return;
        };
        let message = format!(
            "{} did not commit a checkpoint within {}s ({why}); rolling back to the last good spec{}",
            op.kind.as_str(),
            timeout.as_secs(),
            op.savepoint.as_ref().map(|s| format!(" from savepoint {s}")).unwrap_or_default()
        );
        self.note(true, "UpgradeFailed", message.clone());
        self.status.last_error = Some(message);
        self.status.failed_hash = Some(deployed.hash.clone());
        let target = Deployment {
            savepoint: op.savepoint.clone().or(last_good.savepoint.clone()),
            deployed_at: Some(self.now()),
            ..last_good
        };
        self.status.phase = Some(Phase::RollingBack);
        let savepoint = op.savepoint.clone();
        self.start_operation(OperationKind::Rollback, Step::StoppingWorkers, Some(target));
        if let Some(new) = &mut self.status.operation {
            new.savepoint = savepoint;
        }
        self.effects.push(Effect::DeleteWorkers);
    }

    pub(super) fn set_step(&mut self, mut op: Operation, step: Step) {
        op.step = step;
        op.step_started_at = self.now();
        op.retry_after = None;
        self.status.operation = Some(op);
        self.requeue = Duration::ZERO;
    }

    pub(super) fn finish(&mut self) {
        self.status.operation = None;
    }

    fn record_savepoint(&mut self, url: &str, checkpoint: u64, reason: &str) {
        self.status.savepoints.push(SavepointRecord {
            url: url.into(),
            checkpoint,
            time: self.now(),
            reason: reason.into(),
            disposing: false,
        });
        self.status.last_savepoint = Some(url.into());
        // Prune the history; never forget a savepoint a deployment restores from.
        let policy = &self.input.desired.savepoints;
        let keep: Vec<String> = [
            self.status.deployed.as_ref(),
            self.status.last_good.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|d| d.savepoint.clone())
        .chain(std::iter::once(url.to_owned()))
        .collect();
        let now = self.input.now;
        let too_old = |s: &SavepointRecord| {
            policy.max_age.is_some_and(|age| {
                s.time
                    .parse::<Timestamp>()
                    .is_ok_and(|t| elapsed(t, now) > age)
            })
        };
        let kept = self
            .status
            .savepoints
            .iter()
            .filter(|s| !s.disposing)
            .count();
        let mut excess = kept.saturating_sub(policy.max_count as usize);
        // Pruned entries are marked, not dropped: they leave status once their files are
        // disposed of (`dispose_pruned`), so a failing disposal never leaks them unseen.
        for s in self.status.savepoints.iter_mut().filter(|s| !s.disposing) {
            if keep.contains(&s.url) {
                continue;
            }
            if excess > 0 {
                excess -= 1;
                s.disposing = true;
            } else if too_old(s) {
                s.disposing = true;
            }
        }
    }
}

/// Time from `from` to `to` (zero if `to` is earlier).
pub fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// Savepoint retry delay after `attempts` failures: 10 s doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(5))
        .min(MAX_BACKOFF)
}

//! `StreamJob.status`: what the operator knows, and its write-ahead log. The deployed spec and
//! any operation in flight (with its savepoint) are recorded here *before* the operator acts on
//! them, so a restarted operator resumes exactly where the last one stopped.

use cairn_contract::deploy::{worker_document, Start};
use cairn_contract::{JobSpec, RestoreSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RestoreFrom;
use crate::pods::{PodDocument, RecordedError};

/// Observed state of a StreamJob.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `Progressing`, `Degraded`, `CheckpointsHealthy`, `RecoveryObjectiveMet` when
    /// the deployed job has a recovery-time objective, and `StandbyReady` when it has
    /// `standby: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Containers (P) of the deployed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Partitions (N) of the deployed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// P of the spec being moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_parallelism: Option<u32>,
    /// N of the spec being moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_partitions: Option<u32>,
    /// Label selector of the worker pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The spec the worker pods run (or will run once deployed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployment>,
    /// The last spec that reached Running: the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<Deployment>,
    /// The operation in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The last committed checkpoint reported by the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointInfo>,
    /// The recovery-time objective (`spec.job.checkpoint.targetRecoveryTime`) as the job last
    /// reported it: kept while the job does not answer, absent when the deployed job has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_objective: Option<RecoveryObjectiveInfo>,
    /// The warm standbys (`spec.job.standby`) connected to the coordinator, by container, as the
    /// job last reported them: kept while the job does not answer, empty while no pod runs or
    /// when the deployed job has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<StandbyInfo>,
    /// The one-off pod disposing of pruned savepoints (`disposing` in `savepoints`), or the
    /// retry after its last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposal: Option<Disposal>,
    /// Why the desired spec (`failedHash`) was refused before the running job was touched: the
    /// restorability check found that it cannot restore the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_restorable: Option<String>,
    /// URL of the newest savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<String>,
    /// Savepoints taken by the operator, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoints: Vec<SavepointRecord>,
    /// The [`Deployment::hash`] of a spec whose deployment failed and was rolled back; that
    /// spec is not retried until it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_hash: Option<String>,
    /// The `savepoints.triggerNonce` already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_trigger_nonce: Option<i64>,
    /// The `restartNonce` already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_restart_nonce: Option<i64>,
    /// Container restarts of the current worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_restarts: Option<i32>,
    /// Partition count of the input as the job last observed it (differs from `partitions` when a
    /// topic grew: repartition to use the new partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_input_partitions: Option<u32>,
    /// The last error, with what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The autoscaler's choice of P, its latest look at the load and its decisions; absent
    /// without `spec.autoscaler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
}

/// What the autoscaler chose and why (docs/autoscaling.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// The P the autoscaler chose: the desired spec runs it instead of `job.parallelism`.
    /// Absent until its first decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// The latest evaluation of the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<LoadEvaluation>,
    /// Its decisions, oldest first; the last ten are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ScalingDecision>,
    /// No scale-up before this time (RFC 3339): a scale-up did not raise the processing rate,
    /// so the bottleneck is not the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_blocked_until: Option<String>,
    /// No scale-down before this time (RFC 3339): a scale-down did not keep up and was rolled
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_blocked_until: Option<String>,
}

/// The load the autoscaler measured between two looks at the job, summed over its tasks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadMetrics {
    /// Records arriving per second: read plus the backlog's growth.
    pub input_rate: f64,
    /// Records read per second.
    pub processing_rate: f64,
    /// Records not read yet (the tasks' lag).
    pub backlog: u64,
    /// The busy fraction of the busiest container now (1 = always processing).
    pub busiest_utilization: f64,
}

/// One evaluation: the load, the P it calls for, and what the autoscaler does about it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadEvaluation {
    /// When (RFC 3339).
    pub time: String,
    /// The load measured; absent when it could not be (`message` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadMetrics>,
    /// The smallest P whose busiest container stays under the target utilization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended: Option<u32>,
    /// The busiest container's predicted utilization at `recommended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_utilization: Option<f64>,
    /// What the autoscaler does now (holding, stabilizing, cooling down, scaling) and why.
    pub message: String,
}

/// A change of P the autoscaler made, with the metrics behind it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingDecision {
    /// When (RFC 3339).
    pub time: String,
    /// P before.
    pub from: u32,
    /// P after.
    pub to: u32,
    /// `ScaleUp`, `ScaleDown` or `RollBack`.
    pub reason: String,
    /// Why, in words.
    pub message: String,
    /// The load it was decided on.
    pub load: LoadMetrics,
    /// `KeptUp`, `RolledBack` or `Failed` once verified (after the cooldown); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Lifecycle phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Children created; waiting for the first committed checkpoint.
    Deploying,
    /// Checkpoints commit.
    Running,
    /// Moving to a new spec (upgrade, rescale, repartition, restart).
    Upgrading,
    /// A new spec failed; going back to the last good one.
    RollingBack,
    /// Saving state before removing the pods.
    Suspending,
    /// No pods; state kept in a savepoint or the latest checkpoint.
    Suspended,
    /// The finite input ended and the final checkpoint committed: the pods hold the state and
    /// answer savepoint requests; a spec change resumes it (with new input), suspend and delete
    /// work as for a running job.
    Finished,
    /// The spec is invalid, or a rollback failed too: waits for a spec change.
    Failed,
    /// Being deleted.
    Deleting,
}

impl Phase {
    /// Name for metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploying => "Deploying",
            Phase::Running => "Running",
            Phase::Upgrading => "Upgrading",
            Phase::RollingBack => "RollingBack",
            Phase::Suspending => "Suspending",
            Phase::Suspended => "Suspended",
            Phase::Finished => "Finished",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }

    /// Every phase, for the jobs-by-phase gauge.
    pub const ALL: [Phase; 9] = [
        Phase::Deploying,
        Phase::Running,
        Phase::Upgrading,
        Phase::RollingBack,
        Phase::Suspending,
        Phase::Suspended,
        Phase::Finished,
        Phase::Failed,
        Phase::Deleting,
    ];
}

/// One deployment: what its pods run, rendered once when it was made, and how they start.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// What the pods run ([`PodDocument`]): the validated job and the pod settings with the
    /// operator's defaults written in. Read back as it was written and never validated again,
    /// so a later operator with other defaults or rules rebuilds the same pods. Kept as JSON
    /// here so that a document this operator cannot read fails that one StreamJob's reconcile
    /// (see [`Deployment::pods`]), not the decoding of every StreamJob the operator watches.
    #[schemars(schema_with = "super::job_schema::any_object")]
    pub pods: serde_json::Value,
    /// [`PodDocument::hash`] of `pods`: the one hash of a deployment. The pods carry it and the
    /// job reports it back (`/v1/status` `deployment`); equal hashes need no new pods.
    pub hash: String,
    /// The StreamJob's `restoreFrom` when this deployment was made: the worker document's
    /// `restore` flags ([`cairn_contract::deploy::worker_document`]).
    #[serde(default, skip_serializing_if = "RestoreFrom::is_unset")]
    pub restore_from: RestoreFrom,
    /// Savepoint the pods restore (until they commit a checkpoint of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// Bumped by each stateless (re)start: the store path gets `/epoch-<n>` so the job starts
    /// empty without deleting older data.
    #[serde(default)]
    pub state_epoch: u32,
    /// When it was deployed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}

impl Deployment {
    /// A deployment of `pods` started as `start`.
    pub fn new(pods: &PodDocument, restore_from: RestoreFrom, start: Start, at: String) -> Self {
        Deployment {
            pods: pods.to_value(),
            hash: pods.hash(),
            restore_from,
            savepoint: start.savepoint,
            state_epoch: start.state_epoch,
            deployed_at: Some(at),
        }
    }

    /// The recorded pod document; `field` names where the deployment is in status, for the
    /// error.
    pub fn pods(&self, field: &'static str) -> Result<PodDocument, RecordedError> {
        PodDocument::read(field, &self.pods)
    }

    /// How the pods start.
    pub fn start(&self) -> Start {
        Start {
            savepoint: self.savepoint.clone(),
            state_epoch: self.state_epoch,
        }
    }

    /// The job document the pods run (their ConfigMap): `pods.job` with the store moved to this
    /// deployment's epoch and the restore section of its start.
    pub fn worker_document(&self, pods: &PodDocument) -> JobSpec {
        let first = RestoreSpec {
            savepoint: self.restore_from.savepoint.clone(),
            reset_offsets: self.restore_from.reset_offsets,
            allow_state_drop: self.restore_from.allow_state_drop,
        };
        worker_document(&pods.job, &first, &self.start())
    }
}

/// The operation in flight. Steps are recorded before they are carried out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// What the operation does.
    pub kind: OperationKind,
    /// Where it is.
    pub step: Step,
    /// The spec being moved to (for upgrades, rescales, repartitions, resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Deployment>,
    /// The control API operation id of a savepoint being taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_operation: Option<String>,
    /// The savepoint taken for this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// What asked for a `Savepoint` operation: `manual` (triggerNonce) or `periodic`; recorded
    /// as the savepoint's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Failed savepoint attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Do not retry before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// When the operation started (RFC 3339).
    pub started_at: String,
    /// When the current step started (RFC 3339): deadlines count from here.
    pub step_started_at: String,
    /// Human-readable progress or the reason of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The one-off pod's Kubernetes Job of a `CheckingRestore` or `PurgingStore` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub housekeeping: Option<String>,
}

/// The disposal of pruned savepoints: one one-off pod (a Kubernetes Job running
/// `cairn-worker store dispose`) at a time.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disposal {
    /// The savepoints this pod disposes of.
    pub savepoints: Vec<String>,
    /// Its Kubernetes Job; absent while waiting for `retryAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Do not retry before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Kinds of operation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// New image, task, config... (anything else).
    Upgrade,
    /// P changes.
    Rescale,
    /// N changes (possibly P too).
    Repartition,
    /// `restartNonce` changed.
    Restart,
    /// `state: suspended`.
    Suspend,
    /// `state: running` again.
    Resume,
    /// A manual or periodic savepoint; the job keeps running.
    Savepoint,
    /// Going back to the last good spec.
    Rollback,
    /// The StreamJob is being deleted (final savepoint, if asked for).
    Delete,
}

impl OperationKind {
    /// Name for metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Upgrade => "upgrade",
            OperationKind::Rescale => "rescale",
            OperationKind::Repartition => "repartition",
            OperationKind::Restart => "restart",
            OperationKind::Suspend => "suspend",
            OperationKind::Resume => "resume",
            OperationKind::Savepoint => "savepoint",
            OperationKind::Rollback => "rollback",
            OperationKind::Delete => "delete",
        }
    }
}

/// Steps of an operation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Step {
    /// Asking the job for a savepoint (with stop, unless the kind is `Savepoint`).
    TakingSavepoint,
    /// Deleting the worker pods.
    StoppingWorkers,
    /// New workers created; waiting for their first committed checkpoint.
    AwaitingCheckpoint,
    /// Before an upgrade or repartition touches the running job: a one-off pod with the new
    /// spec's settings checks that it can restore the current state.
    CheckingRestore,
    /// Deletion with `checkpointData: delete`: a one-off pod purges the job's store.
    PurgingStore,
}

impl Step {
    /// The name in status and conditions (`TakingSavepoint`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::TakingSavepoint => "TakingSavepoint",
            Step::StoppingWorkers => "StoppingWorkers",
            Step::AwaitingCheckpoint => "AwaitingCheckpoint",
            Step::CheckingRestore => "CheckingRestore",
            Step::PurgingStore => "PurgingStore",
        }
    }
}

/// A committed checkpoint as the job reports it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    /// Checkpoint id.
    pub id: u64,
    /// Commit time (RFC 3339).
    pub time: String,
    /// Trigger-to-commit duration in milliseconds.
    pub duration_ms: u64,
    /// State bytes the checkpoint references.
    pub bytes: u64,
    /// Bytes uploaded by it.
    pub uploaded_bytes: u64,
}

/// The recovery-time objective as the job reports it (docs/recovery.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryObjectiveInfo {
    /// The target (`targetRecoveryTime`) in milliseconds.
    pub target_ms: u64,
    /// The checkpoint interval the coordinator chose for it, in milliseconds.
    pub interval_ms: u64,
    /// Predicted recovery time (detect + restore + replay, for a failure just before the next
    /// commit) in milliseconds. Absent until a checkpoint has committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<u64>,
    /// Why the prediction is over the target or missing, and what would help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A warm standby as the job reports it (`/v1/status` `standbys`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandbyInfo {
    /// The container it stands by for (1..P-1).
    pub container: u32,
    /// Its pod (the host name it introduced itself with). Roles swap after a takeover, so this is
    /// a pod of either StatefulSet, `<job>-K` or `<job>-standby-K`.
    pub pod: String,
    /// The newest committed checkpoint whose files it holds; absent until it has followed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
}

/// A savepoint in the history.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRecord {
    /// Where it is (use it in `restoreFrom.savepoint`).
    pub url: String,
    /// The checkpoint it copies.
    pub checkpoint: u64,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// `upgrade`, `rescale`, `repartition`, `suspend`, `manual`, `periodic`, `deletion`.
    pub reason: String,
    /// Pruned from the history (`maxCount`, `maxAge`): being disposed of in the store; the
    /// entry leaves status once its files are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disposing: bool,
}

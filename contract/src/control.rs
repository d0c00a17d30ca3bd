//! The control API's wire types (docs/control-api.md): the worker serves them, the operator
//! reads them, and both use these definitions, so a field renamed on one side is a compile error
//! on the other, not a value that silently stays empty.
//!
//! ```text
//! GET  /v1/status                     JobStatus
//! POST /v1/checkpoints                take a checkpoint now            -> 202 Operation
//! POST /v1/savepoints SavepointRequest take a savepoint (and stop)     -> 202 Operation
//! GET  /v1/operations/{id}            Operation
//! POST /v1/stop                       stop with a final checkpoint     -> 202 StopAccepted
//! ```
//! Every request carries `Authorization: Bearer <token>`; an error answer is an [`ErrorBody`].
//!
//! Compatibility: the operator and the workers of a job may run different releases for a while
//! (an operator upgrade does not restart running jobs). Readers ignore fields they do not know,
//! and fields added after the first release are `#[serde(default)]`, so an answer from an older
//! worker still reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET`: the job's status.
pub const STATUS_PATH: &str = "/v1/status";
/// `POST`: take a checkpoint now.
pub const CHECKPOINTS_PATH: &str = "/v1/checkpoints";
/// `POST` a [`SavepointRequest`]: take a savepoint.
pub const SAVEPOINTS_PATH: &str = "/v1/savepoints";
/// `POST`: stop with a final checkpoint.
pub const STOP_PATH: &str = "/v1/stop";

/// `GET`: the operation `id` (as a POST returned it).
pub fn operation_path(id: &str) -> String {
    format!("/v1/operations/{id}")
}

/// Shortest bearer token a worker accepts: a token is random, and a short one is a mistake.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest bearer token a worker accepts: one that does not fit in a request header or a hello
/// line is a wrong file, not a token.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Where the job's run is.
///
/// `finished` and `stopped` are new in this release: an operator of an earlier release cannot
/// read a status that has them (its `RunState` has only `running` and `stopping`), so upgrade
/// the operator before the workers. From this release on, a state a reader does not know reads
/// as [`RunState::Unknown`] instead of failing the whole status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Processing records.
    #[default]
    Running,
    /// Taking its final checkpoint or savepoint, then stopping.
    Stopping,
    /// All of its finite input is processed and its final checkpoint committed; the process
    /// holds (`--hold-after-stop`) and still takes savepoints of that checkpoint. Health is
    /// `healthy`: nothing is expected to commit any more.
    Finished,
    /// Stopped on request (`POST /v1/stop`, a stop-with-savepoint) before its input ended, its
    /// final checkpoint committed; the process holds and still takes savepoints of that
    /// checkpoint. Health is `healthy`, as for `finished`.
    Stopped,
    /// A state this release does not know, sent by a worker of a later release. Never sent.
    #[serde(other)]
    Unknown,
}

/// The job's health by [`crate::health::HealthRule::late_after`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// A checkpoint committed recently enough.
    #[default]
    Healthy,
    /// No checkpoint committed for longer than the rule allows (the operator's
    /// `CheckpointsLate`).
    Degraded,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// `POST /v1/checkpoints`.
    Checkpoint,
    /// `POST /v1/savepoints`.
    Savepoint,
}

impl OperationKind {
    /// The lowercase name, as on the wire (also the prefix of operation ids).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Checkpoint => "checkpoint",
            OperationKind::Savepoint => "savepoint",
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationState {
    /// Not finished: poll again.
    #[default]
    Pending,
    /// Done; the result is in the operation.
    Succeeded,
    /// Given up; `error` says why.
    Failed,
}

impl OperationState {
    /// The lowercase name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }
}

/// One task in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task id.
    pub task: u32,
    /// Its container.
    pub container: u32,
    /// Records read.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Records or bytes not read yet.
    pub lag: i64,
    /// The task's event-time watermark, ms since the epoch (jobs with `eventTime:`, once the
    /// task has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<u64>,
    /// Wall-clock time minus the watermark, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_lag_ms: Option<u64>,
    /// From the process's start until the task processed its first record: the time to be
    /// processing again after a restart. Absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_ms: Option<u64>,
    /// From the process's start until the task is back at the input position the previous
    /// run had reached: the end of recovery (docs/recovery.md). Absent until then, and when
    /// the previous run left no progress mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_ms: Option<u64>,
    /// Time the task spent reading and processing records since the process serving the status
    /// started, ms (for a task of another process: what its container reported, counting each
    /// run of that container since then). The operator's autoscaler divides it by the records
    /// read to get a per-record cost. 0 from a worker of an earlier release.
    #[serde(default)]
    pub busy_ms: u64,
}

/// What this run's start cost (docs/recovery.md). Detect and replay come from the progress
/// marks a previous run left in the same local directory; without them they are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// From the previous run's last progress mark to this run's start: the failure, its
    /// detection and the restart, overstated by at most the mark period (1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<u64>,
    /// Bytes of state fetched from the checkpoint store (the rest was local or nothing).
    pub fetched_bytes: u64,
    /// Duration of the restore (fetch, re-split if any, open).
    pub restore_ms: u64,
    /// Input between the restored checkpoint and where the previous run had got to, processed
    /// again: records for Kafka and the generator, bytes for files. Understated by at most one
    /// mark period of input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_offsets: Option<u64>,
}

/// A committed checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommittedCheckpoint {
    /// Id.
    pub id: u64,
    /// Commit time, ms since the epoch.
    pub committed_at_ms: u64,
    /// Bytes the checkpoint references.
    pub total_bytes: u64,
    /// Bytes uploaded for it (the rest was shared with earlier checkpoints).
    pub uploaded_bytes: u64,
    /// Trigger-to-commit duration.
    pub duration_ms: u64,
}

/// A savepoint the job took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    /// URL of its directory: what `restore.savepoint` (or `--from-savepoint`) takes.
    pub url: String,
    /// Its unique id (the name of its directory).
    pub id: String,
    /// The checkpoint it copies.
    pub checkpoint: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Job name.
    pub job: String,
    /// Process generation.
    pub generation: u64,
    /// N: the job's partitions.
    pub partitions: u32,
    /// P: its containers.
    pub parallelism: u32,
    /// `spec_hash` of the job document running ([`crate::JobSpec::spec_hash`]): the job's own
    /// identity, recorded in its checkpoints and savepoints.
    pub spec_hash: String,
    /// The deployment the process was started as (`--deployment`, [`crate::pod::env::DEPLOYMENT`]),
    /// reported back as it was given: the operator sets its deployment hash there and knows from
    /// it which of its deployments runs. Absent when none was given (a local run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Task -> container.
    #[serde(default)]
    pub assignment: BTreeMap<u32, u32>,
    /// Checkpoint interval, for the health rule.
    pub checkpoint_interval_ms: u64,
    /// When the run started, ms since the epoch.
    pub started_at_ms: u64,
    /// Running, stopping, finished or stopped.
    pub state: RunState,
    /// Healthy, or degraded when checkpoints are late (a finished or stopped job is healthy).
    pub health: Health,
    /// Tasks.
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
    /// The last checkpoint this run committed.
    #[serde(default)]
    pub last_checkpoint: Option<CommittedCheckpoint>,
    /// Checkpoints aborted since start.
    #[serde(default)]
    pub aborted_checkpoints: u64,
    /// The input's partition count as last observed (a Kafka topic re-read every
    /// `input.partitionCheckInterval`); more than `partitions` means the topic grew and the job
    /// needs a repartition. Absent until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_partitions: Option<u32>,
    /// What this run's start cost. Absent from a process that restores nothing itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// The recovery-time objective as the coordinator keeps it (`checkpoint.targetRecoveryTime`).
    /// Absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_objective: Option<RecoveryObjective>,
    /// The warm standbys connected now (`standby: true`), by container. Empty without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<StandbyStatus>,
}

/// A warm standby of one container (docs/recovery.md#warm-standbys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyStatus {
    /// The container it stands by for.
    pub container: u32,
    /// The standby's host name as it introduced itself (its pod's name on Kubernetes).
    #[serde(default)]
    pub host: String,
    /// The newest committed checkpoint whose files it holds: a takeover now fetches nothing
    /// older. Absent until it has followed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
}

/// The recovery-time objective (docs/recovery.md): the target, the interval the coordinator
/// chose for it, and the recovery time it predicts with that interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryObjective {
    /// `checkpoint.targetRecoveryTime`.
    pub target_ms: u64,
    /// The interval in force.
    pub interval_ms: u64,
    /// The prediction for a failure at the worst moment (just before the next commit). Absent
    /// until a checkpoint has committed, when there is nothing measured to predict from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<PredictedRecovery>,
    /// When the prediction is over the target, or there is none yet: why, and what would help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl RecoveryObjective {
    /// Whether the prediction is within the target; `None` while there is no prediction.
    pub fn met(&self) -> Option<bool> {
        self.predicted
            .as_ref()
            .map(|p| p.total_ms <= self.target_ms)
    }
}

/// A predicted recovery: its parts add up to the total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictedRecovery {
    /// Failure to a restarted process (assumed; docs/recovery.md says from what).
    pub detect_ms: u64,
    /// Fetching and opening the state of the last checkpoint onto an empty volume.
    pub restore_ms: u64,
    /// Processing again the input since that checkpoint, at the measured processing rate.
    pub replay_ms: u64,
    /// The sum: failure to processing where the job had got to.
    pub total_ms: u64,
}

/// An asynchronous operation (`POST /v1/checkpoints`, `POST /v1/savepoints`,
/// `GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Id to poll.
    pub id: String,
    /// Checkpoint or savepoint.
    pub kind: OperationKind,
    /// For savepoints: the job stops afterwards.
    #[serde(default)]
    pub stop: bool,
    /// Pending, succeeded or failed.
    pub state: OperationState,
    /// The checkpoint taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// The savepoint taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<SavepointInfo>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was asked for, ms since the epoch.
    #[serde(default)]
    pub started_at_ms: u64,
}

/// The body of `POST /v1/savepoints`. Unknown fields are refused (a caller that thinks it can
/// ask for more than this must hear that it cannot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavepointRequest {
    /// Stop the job once the savepoint is taken.
    #[serde(default)]
    pub stop: bool,
}

/// The answer to `POST /v1/stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAccepted {
    /// Always stopping.
    pub state: RunState,
}

/// The body of every error answer (4xx, 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, and what to do about it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire format, spelled out: what docs/control-api.md documents and any client reads.
    #[test]
    fn status_fields_and_states_have_their_documented_names() {
        let status = JobStatus {
            job: "count".into(),
            generation: 2,
            partitions: 4,
            parallelism: 2,
            spec_hash: "abc".into(),
            deployment: Some("d3p".into()),
            assignment: BTreeMap::from([(0, 0), (1, 1)]),
            checkpoint_interval_ms: 10_000,
            started_at_ms: 5,
            state: RunState::Stopping,
            health: Health::Degraded,
            tasks: vec![TaskStatus {
                task: 1,
                container: 1,
                records_in: 200,
                records_out: 190,
                lag: 3,
                watermark_ms: Some(1_000),
                event_time_lag_ms: Some(20),
                resumed_ms: Some(40),
                caught_up_ms: None,
                busy_ms: 410,
            }],
            last_checkpoint: None,
            aborted_checkpoints: 1,
            observed_partitions: Some(6),
            recovery: Some(Recovery {
                detect_ms: Some(700),
                fetched_bytes: 9,
                restore_ms: 30,
                replay_offsets: None,
            }),
            recovery_objective: Some(RecoveryObjective {
                target_ms: 30_000,
                interval_ms: 12_000,
                predicted: Some(PredictedRecovery {
                    detect_ms: 2_000,
                    restore_ms: 1_500,
                    replay_ms: 6_000,
                    total_ms: 9_500,
                }),
                problem: None,
            }),
            standbys: vec![StandbyStatus {
                container: 1,
                host: "count-standby-1".into(),
                checkpoint: Some(41),
            }],
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "job": "count", "generation": 2, "partitions": 4, "parallelism": 2,
                "specHash": "abc", "deployment": "d3p", "assignment": {"0": 0, "1": 1},
                "checkpointIntervalMs": 10000, "startedAtMs": 5,
                "state": "stopping", "health": "degraded",
                "tasks": [{"task": 1, "container": 1, "recordsIn": 200, "recordsOut": 190,
                    "lag": 3, "watermarkMs": 1000, "eventTimeLagMs": 20, "resumedMs": 40,
                    "busyMs": 410}],
                "lastCheckpoint": null, "abortedCheckpoints": 1, "observedPartitions": 6,
                "recovery": {"detectMs": 700, "fetchedBytes": 9, "restoreMs": 30},
                "recoveryObjective": {"targetMs": 30000, "intervalMs": 12000, "predicted":
                    {"detectMs": 2000, "restoreMs": 1500, "replayMs": 6000, "totalMs": 9500}},
                "standbys": [{"container": 1, "host": "count-standby-1", "checkpoint": 41}],
            })
        );
        assert_eq!(serde_json::from_value::<JobStatus>(json).unwrap(), status);
    }

    /// An answer from a worker of an earlier release, without the fields added since, and with
    /// one a later release may add, still reads.
    #[test]
    fn a_status_without_later_fields_or_with_unknown_ones_reads() {
        let status: JobStatus = serde_json::from_str(
            r#"{"job":"count","generation":1,"partitions":2,"parallelism":1,"specHash":"h",
                "checkpointIntervalMs":1000,"startedAtMs":0,"state":"running",
                "health":"healthy","lastCheckpoint":null,"somethingNew":true}"#,
        )
        .unwrap();
        assert_eq!(status.observed_partitions, None);
        assert_eq!(status.deployment, None);
        assert!(status.tasks.is_empty() && status.assignment.is_empty());
        // A task from a worker without `busyMs` reads as 0.
        let task: TaskStatus = serde_json::from_str(
            r#"{"task":0,"container":0,"recordsIn":5,"recordsOut":5,"lag":0}"#,
        )
        .unwrap();
        assert_eq!((task.records_in, task.busy_ms), (5, 0));
    }

    /// Every run state's spelling; a state from a later release reads as `Unknown`, so a
    /// new state no longer makes the whole status unreadable.
    #[test]
    fn run_states_have_their_documented_names_and_unknown_ones_read() {
        for (state, wire) in [
            (RunState::Running, "running"),
            (RunState::Stopping, "stopping"),
            (RunState::Finished, "finished"),
            (RunState::Stopped, "stopped"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{wire}\"")
            );
            assert_eq!(
                serde_json::from_str::<RunState>(&format!("\"{wire}\"")).unwrap(),
                state
            );
        }
        assert_eq!(
            serde_json::from_str::<RunState>(r#""draining""#).unwrap(),
            RunState::Unknown
        );
        let status: JobStatus = serde_json::from_str(
            r#"{"job":"count","generation":1,"partitions":2,"parallelism":1,"specHash":"h",
                "checkpointIntervalMs":1000,"startedAtMs":0,"state":"finished",
                "health":"healthy","lastCheckpoint":{"id":7,"committedAtMs":1,"totalBytes":2,
                "uploadedBytes":0,"durationMs":3}}"#,
        )
        .unwrap();
        assert_eq!(status.state, RunState::Finished);
        assert_eq!(status.last_checkpoint.map(|c| c.id), Some(7));
    }

    #[test]
    fn operations_round_trip_and_a_savepoint_request_refuses_unknown_fields() {
        let op = Operation {
            id: "savepoint-3".into(),
            kind: OperationKind::Savepoint,
            stop: true,
            state: OperationState::Succeeded,
            checkpoint: Some(9),
            savepoint: Some(SavepointInfo {
                url: "s3://b/job/savepoints/sp-000000000001".into(),
                id: "sp-000000000001".into(),
                checkpoint: 9,
            }),
            error: None,
            started_at_ms: 7,
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains(r#""kind":"savepoint""#) && json.contains(r#""state":"succeeded""#));
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
        for state in [
            OperationState::Pending,
            OperationState::Succeeded,
            OperationState::Failed,
        ] {
            let wire = serde_json::to_string(&state).unwrap();
            assert_eq!(wire, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(
            serde_json::from_str::<SavepointRequest>(r#"{"stop": true}"#).unwrap(),
            SavepointRequest { stop: true }
        );
        let err = serde_json::from_str::<SavepointRequest>(r#"{"stop": true, "drain": 1}"#);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("unknown field `drain`"));
        assert_eq!(
            serde_json::to_string(&StopAccepted {
                state: RunState::Stopping
            })
            .unwrap(),
            r#"{"state":"stopping"}"#
        );
        assert_eq!(
            operation_path("checkpoint-1"),
            "/v1/operations/checkpoint-1"
        );
    }
}

//! Why things failed, as they cross the coordinator's channels: a task's failure (container ->
//! coordinator), why a checkpoint was aborted, and why a request (a checkpoint or savepoint asked
//! for by a signal or the control API) was not carried out. Typed so that the coordinator, the
//! control API and the tests decide on the kind, not on the words; turned into text only at the
//! edges (the log, the control API's `error` field) and into JSON only on the link to a container
//! of another process ([`super::remote`]), which is why [`TaskFailure`] keeps its cause's
//! message rather than the cause itself (RocksDB, I/O and Kafka errors do not serialise).

use std::time::Duration;

use crate::checkpoint::CheckpointError;
use crate::runtime::job_progress::Ended;
use crate::runtime::task_instance::InstanceError;
use crate::storage::StorageError;

/// The part of a task that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The task's own code (`process`, a timer, `after_checkpoint`).
    Task,
    /// Its input.
    Source,
    /// Its output.
    Sink,
    /// Its local state store (RocksDB and the checkpoint directory next to it).
    State,
    /// The durable checkpoint store.
    Storage,
    /// The checkpoint protocol (a manifest, a fence, an id).
    Checkpoint,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Task => "task",
            FailureKind::Source => "source",
            FailureKind::Sink => "sink",
            FailureKind::State => "state store",
            FailureKind::Storage => "checkpoint store",
            FailureKind::Checkpoint => "checkpoint protocol",
        })
    }
}

/// A task's failure: a task that stopped, or its part of a checkpoint that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{detail}")]
pub struct TaskFailure {
    /// Which part failed.
    pub kind: FailureKind,
    /// The cause's message (it names what to fix).
    pub detail: String,
}

impl TaskFailure {
    /// A failure of `kind` described by `detail`.
    pub fn new(kind: FailureKind, detail: impl std::fmt::Display) -> Self {
        TaskFailure {
            kind,
            detail: detail.to_string(),
        }
    }
}

impl From<&InstanceError> for TaskFailure {
    fn from(e: &InstanceError) -> Self {
        let kind = match e {
            InstanceError::Task(_) => FailureKind::Task,
            InstanceError::Source(_) => FailureKind::Source,
            InstanceError::Sink(_) => FailureKind::Sink,
            InstanceError::StateStoreBroken { .. } => FailureKind::State,
        };
        TaskFailure::new(kind, e)
    }
}

impl From<&CheckpointError> for TaskFailure {
    fn from(e: &CheckpointError) -> Self {
        let kind = match e {
            CheckpointError::Storage(_) => FailureKind::Storage,
            CheckpointError::State(_) | CheckpointError::Local { .. } => FailureKind::State,
            CheckpointError::Sink(_) => FailureKind::Sink,
            _ => FailureKind::Checkpoint,
        };
        TaskFailure::new(kind, e)
    }
}

/// Why the coordinator refused a task's acknowledgement (from a buggy or hostile container):
/// the checkpoint is aborted instead of committing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRejected {
    /// The task is not one of this job's.
    #[error("task {task} is not a task of this job")]
    UnknownTask {
        /// The task id reported.
        task: u32,
    },
    /// The report names a manifest other than the task's own.
    #[error("task {task} reported manifest {reported:?}, its manifest is {expected:?}")]
    ForeignManifest {
        /// Task id.
        task: u32,
        /// The key reported.
        reported: String,
        /// The task's key.
        expected: String,
    },
    /// The report carries an offset of another task's partition.
    #[error("task {task} reported an offset of partition {partition}")]
    ForeignOffset {
        /// Task id.
        task: u32,
        /// The partition that is not the task's.
        partition: u32,
    },
}

/// Why a checkpoint did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbortReason {
    /// Containers of other processes were not connected within the wait: the checkpoint was
    /// not triggered.
    #[error("containers {missing:?} not connected")]
    NotConnected {
        /// The containers missing.
        missing: Vec<u32>,
    },
    /// A task's part failed.
    #[error("task {task}: {failure}")]
    TaskFailed {
        /// Task id.
        task: u32,
        /// Why.
        failure: TaskFailure,
    },
    /// A task's acknowledgement was refused.
    #[error("refused an acknowledgement: {0}")]
    Rejected(ReportRejected),
    /// A container went away while the checkpoint was in flight.
    #[error("container {container} disconnected")]
    Disconnected {
        /// The container.
        container: u32,
    },
    /// `checkpoint.timeout` passed before every task acknowledged.
    #[error("timed out after {timeout:?} waiting for {missing} of {tasks} tasks")]
    TimedOut {
        /// The timeout.
        timeout: Duration,
        /// Tasks that had not acknowledged.
        missing: usize,
        /// Tasks of the job.
        tasks: usize,
    },
    /// The stop deadline (SIGTERM plus `--stop-timeout`) passed first.
    #[error("the stop deadline passed waiting for {missing} of {tasks} tasks")]
    StopDeadline {
        /// Tasks that had not acknowledged.
        missing: usize,
        /// Tasks of the job.
        tasks: usize,
    },
    /// Another process wrote this id's commit record first.
    #[error("another process committed this id first")]
    CommittedElsewhere,
    /// Writing the commit record failed.
    #[error("writing the commit record failed: {0}")]
    CommitWrite(String),
}

impl AbortReason {
    /// The commit record could not be written.
    pub fn commit_write(e: &StorageError) -> Self {
        AbortReason::CommitWrite(e.to_string())
    }
}

/// A checkpoint that did not commit: which one (none if it was never triggered) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CheckpointFailure {
    /// The checkpoint's id, if one was triggered.
    pub checkpoint: Option<u64>,
    /// Why it did not commit.
    pub reason: AbortReason,
}

impl std::fmt::Display for CheckpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.checkpoint {
            Some(id) => write!(f, "checkpoint {id} aborted: {}", self.reason),
            // Never triggered: the reason says why (containers not connected).
            None => write!(f, "{}", self.reason),
        }
    }
}

/// Why a request to the coordinator (a checkpoint or savepoint on demand) was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The checkpoint did not commit; the job keeps running.
    #[error("{0}; the job keeps running")]
    CheckpointFailed(CheckpointFailure),
    /// The checkpoint committed but the savepoint could not be written from it; the job keeps
    /// running.
    #[error("savepoint failed: writing it from checkpoint {checkpoint} failed: {detail}; the job keeps running")]
    SavepointWrite {
        /// The committed checkpoint the savepoint was to be made from.
        checkpoint: u64,
        /// Why.
        detail: String,
    },
    /// The job failed while serving the request: it stops, and its restart resumes from the
    /// last committed checkpoint.
    #[error("the job failed: {0}")]
    JobFailed(String),
    /// The job stopped before answering.
    #[error("the job stopped before answering")]
    Stopped,
    /// A checkpoint asked of a job whose run has ended: it has no tasks running to take one.
    #[error("{0}; it takes no more checkpoints (a savepoint copies checkpoint {cp})", cp = .0.checkpoint())]
    Ended(Ended),
    /// A savepoint of an ended job's final checkpoint could not be written.
    #[error("savepoint failed: writing it from the final checkpoint {checkpoint} failed: {detail}; nothing else changed, ask again")]
    EndedSavepointWrite {
        /// The final checkpoint.
        checkpoint: u64,
        /// Why.
        detail: String,
    },
}

/// What a checkpoint request is answered with.
pub type CheckpointReply = Result<u64, RequestError>;
/// What a savepoint request is answered with.
pub type SavepointReply = Result<cairn_contract::control::SavepointInfo, RequestError>;

//! Messages between the coordinator, the containers and whoever asks the coordinator for a
//! checkpoint or savepoint (signals, the control API).

use tokio::sync::oneshot;

use super::failure::{CheckpointReply, SavepointReply, TaskFailure};
use crate::checkpoint::upload::PhaseReport;

/// Coordinator -> container. Serialisable: containers in other processes receive them as JSON
/// lines (see [`super::remote`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Take checkpoint `id` at the next record boundary; with `pause`, stop processing after
    /// its synchronous phase (final checkpoint before a stop).
    Checkpoint {
        /// Checkpoint id.
        id: u64,
        /// Stop reading input afterwards.
        pause: bool,
    },
    /// Checkpoint `id` is committed: publish output, run `after_checkpoint`.
    Committed(u64),
    /// Checkpoint `id` was aborted.
    Aborted(u64),
    /// Read input again after a pause (a stop-with-savepoint that failed).
    Resume,
    /// To a container of another process that just connected: restore your tasks from this
    /// committed checkpoint (or, before the run's first commit, from this savepoint; neither:
    /// start fresh), then report `Ready`. Decided by the coordinator between checkpoints, so
    /// the container never restores from a checkpoint older than one being committed.
    Restore {
        /// The coordinator's process generation: the container writes under it (task files
        /// and manifests name their writer's generation, and the coordinator commits only the
        /// manifests of its own). Read from the store instead, a container that started before
        /// its coordinator claimed would write under the previous generation.
        generation: u64,
        /// Checkpoint id.
        checkpoint: Option<u64>,
        /// Savepoint URL.
        savepoint: Option<String>,
    },
    /// To a warm standby: checkpoint `id` committed; fetch the files of your container's tasks
    /// that you do not hold yet, and report `Following` (docs/recovery.md#warm-standbys).
    Follow(u64),
    /// Exit the run loop: the job stopped (finished, stopped on request, or stopped with a
    /// savepoint). A container of another process with `--hold-after-stop` then holds until
    /// SIGTERM, so that a supervisor restarting exited processes cannot resume a stopped job.
    Stop,
    /// Exit the run loop and the process, never holding: the coordinator's process was told to
    /// terminate (SIGTERM) and has taken its final checkpoint. When only the coordinator's pod
    /// goes away, the other containers exit too, are restarted, and rejoin its successor.
    Shutdown,
}

/// What a task did between two checkpoints (its synchronous phases): the coordinator's
/// measure of input and processing rates for the recovery-time objective
/// ([`super::objective`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskLoad {
    /// Records read.
    pub records: u64,
    /// Time spent reading and processing them, µs.
    pub busy_us: u64,
    /// The time between the two checkpoints, µs.
    pub window_us: u64,
}

/// Container -> coordinator.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A task's part of a checkpoint is durable (or failed).
    Ack {
        /// Task id.
        task: u32,
        /// Checkpoint id.
        checkpoint: u64,
        /// The report, or why it failed.
        result: Result<PhaseReport, TaskFailure>,
        /// The synchronous pause it took.
        sync_seconds: f64,
        /// What the task did since its previous checkpoint (absent from an older worker).
        #[serde(default)]
        load: TaskLoad,
    },
    /// The time a task spent reading and processing records since its previous `Busy`, sent
    /// about once a second: what replaying its input since then would cost. The recovery-time
    /// objective checkpoints early when that grows past its budget ([`super::objective`]).
    /// With the records and the lag, also how the status reports tasks of other processes
    /// (the coordinator keeps the totals in [`super::job_progress::JobProgress::task_load`]).
    /// Sent when any of them changed, and once more before `Finished` and before the
    /// synchronous phase of a final checkpoint, so the totals are complete when the run ends.
    Busy {
        /// Task id.
        task: u32,
        /// Busy time, µs.
        busy_us: u64,
        /// Records read since the previous `Busy` (absent from an older worker).
        #[serde(default)]
        records: u64,
        /// The task's lag now: records or bytes not read yet (absent from an older worker).
        #[serde(default)]
        lag: i64,
    },
    /// A task read all of its finite input.
    Finished(u32),
    /// A task failed and its container stopped.
    Failed {
        /// Task id.
        task: u32,
        /// Why.
        failure: TaskFailure,
    },
    /// A container in another process connected; it waits for `Restore`.
    Connected(u32),
    /// A container in another process restored its tasks and runs them.
    Ready(u32),
    /// A container in another process went away; its tasks restart from the last commit.
    Disconnected(u32),
    /// A warm standby for a container connected. Raised by the coordinator's own link.
    StandbyJoined {
        /// The container it stands by for.
        container: u32,
        /// Its host name, as it introduced itself.
        host: String,
    },
    /// A warm standby that was not promoted went away. Raised by the coordinator's own link.
    StandbyLeft(u32),
    /// A warm standby holds every file of its container's tasks in committed checkpoint
    /// `checkpoint`: a takeover now fetches nothing older.
    Following {
        /// The container it stands by for.
        container: u32,
        /// The checkpoint.
        checkpoint: u64,
    },
}

/// Something asked of a running coordinator (SIGUSR1/SIGUSR2 locally, the control API).
#[derive(Debug)]
pub enum Request {
    /// Take a checkpoint now; answered with its id.
    Checkpoint(oneshot::Sender<CheckpointReply>),
    /// Take a savepoint; with `stop`, stop the job after it (stop-with-savepoint). If it fails
    /// the job keeps running.
    Savepoint {
        /// Stop after the savepoint.
        stop: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<SavepointReply>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Busy` from a container of an earlier release (busy time only) still reads, so a
    /// job whose processes are upgraded one by one keeps running.
    #[test]
    fn a_busy_event_without_records_or_lag_reads() {
        let event: Event = serde_json::from_str(r#"{"Busy":{"task":3,"busy_us":70}}"#).unwrap();
        let Event::Busy {
            task,
            busy_us,
            records,
            lag,
        } = event
        else {
            panic!("{event:?}");
        };
        assert_eq!((task, busy_us, records, lag), (3, 70, 0, 0));
    }
}

//! What a running job shows of its checkpoints: written by the coordinator, read by the control
//! API's status, `/healthz` and the live progress line. A leaf: those readers need not know the
//! coordinator.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use cairn_contract::control::{CommittedCheckpoint, RecoveryObjective, StandbyStatus};

/// Shared, observable job progress.
#[derive(Debug, Default)]
pub struct JobProgress {
    /// The last committed checkpoint.
    pub last_committed: Mutex<Option<CommittedCheckpoint>>,
    /// Checkpoints aborted so far.
    pub aborted: std::sync::atomic::AtomicU64,
    /// The most recent synchronous pauses (seconds, one per task and checkpoint), newest last;
    /// bounded, for status reports and benchmarks that need exact percentiles.
    pub sync_pauses: Mutex<std::collections::VecDeque<f64>>,
    /// The recovery-time objective as the coordinator last computed it; `None` without one.
    pub objective: Mutex<Option<RecoveryObjective>>,
    /// The warm standbys connected now (the coordinator's process only).
    pub standbys: Mutex<Vec<StandbyStatus>>,
    /// How the run ended, set once the coordinator's run loop is over with a committed final
    /// checkpoint (the coordinator's process only; see [`super::held`]).
    pub ended: OnceLock<Ended>,
    /// Per task, the totals of its containers' `Event::Busy` reports since this process
    /// started (the coordinator's process only): every task's busy time in the status, and the
    /// records and lag of tasks whose container runs in another process (this process's
    /// metrics have only its own tasks).
    pub task_load: Mutex<BTreeMap<u32, TaskTotals>>,
}

/// What a task's `Event::Busy` reports added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskTotals {
    /// Busy time, µs.
    pub busy_us: u64,
    /// Records read.
    pub records: u64,
    /// The lag last reported.
    pub lag: i64,
    /// The task's container runs in another process: the status takes its records and lag
    /// from here rather than from this process's metrics.
    pub remote: bool,
}

impl TaskTotals {
    /// Adds one report. Saturating, and a negative lag counts as none: the numbers may come
    /// from another process, and a wrong one must not panic or wrap the status.
    fn add(&mut self, busy_us: u64, records: u64, lag: i64) {
        self.busy_us = self.busy_us.saturating_add(busy_us);
        self.records = self.records.saturating_add(records);
        self.lag = lag.max(0);
    }
}

/// How a job's run ended with its final checkpoint committed, while its process still serves
/// the control API (holding after the end, or waiting for a stop result to be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// All finite input processed.
    Finished {
        /// The final checkpoint.
        checkpoint: u64,
    },
    /// Stopped on request before the input ended.
    Stopped {
        /// The final checkpoint.
        checkpoint: u64,
    },
}

impl Ended {
    /// The final checkpoint: the job's whole state, and what its savepoints copy.
    pub fn checkpoint(self) -> u64 {
        match self {
            Ended::Finished { checkpoint } | Ended::Stopped { checkpoint } => checkpoint,
        }
    }
}

impl std::fmt::Display for Ended {
    /// What happened, for messages: "the job has finished: …" and the like.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Finished { checkpoint } => write!(
                f,
                "the job has finished: all its input is processed and its final checkpoint {checkpoint} is committed"
            ),
            Ended::Stopped { checkpoint } => write!(
                f,
                "the job has stopped: its final checkpoint {checkpoint} is committed"
            ),
        }
    }
}

/// How many synchronous pauses [`JobProgress`] keeps.
pub const SYNC_PAUSES_KEPT: usize = 10_000;

impl JobProgress {
    pub(crate) fn record_sync_pause(&self, seconds: f64) {
        let mut pauses = self.sync_pauses.lock().expect("progress lock");
        if pauses.len() == SYNC_PAUSES_KEPT {
            pauses.pop_front();
        }
        pauses.push_back(seconds);
    }

    /// Starts the totals of task `task` (none reported yet), so that the status knows from
    /// the start which tasks run in another process.
    pub(crate) fn place_task(&self, task: u32, remote: bool) {
        let mut load = self.task_load.lock().expect("progress lock");
        load.entry(task).or_default().remote = remote;
    }

    /// Adds task `task`'s `Event::Busy` report to its totals; `remote` says where its
    /// container runs.
    pub(crate) fn record_busy(
        &self,
        task: u32,
        remote: bool,
        busy_us: u64,
        records: u64,
        lag: i64,
    ) {
        let mut load = self.task_load.lock().expect("progress lock");
        let totals = load.entry(task).or_default();
        totals.remote = remote;
        totals.add(busy_us, records, lag);
    }

    /// The totals of every task reported so far.
    pub(crate) fn task_totals(&self) -> BTreeMap<u32, TaskTotals> {
        self.task_load.lock().expect("progress lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_reports_add_up_per_task_and_keep_the_last_lag() {
        let progress = JobProgress::default();
        progress.record_busy(1, true, 500, 10, 90);
        progress.record_busy(1, true, 700, 20, 70);
        progress.record_busy(0, false, 30, 1, 0);
        let totals = progress.task_totals();
        assert_eq!(
            totals[&1],
            TaskTotals {
                busy_us: 1_200,
                records: 30,
                lag: 70,
                remote: true,
            }
        );
        assert!(!totals[&0].remote);
        assert_eq!(totals.len(), 2);
    }

    /// Numbers from another process are not trusted: they saturate instead of overflowing,
    /// and a negative lag reads as none.
    #[test]
    fn totals_saturate_and_a_negative_lag_is_none() {
        let progress = JobProgress::default();
        progress.record_busy(2, true, u64::MAX - 1, u64::MAX, 5);
        progress.record_busy(2, true, 10, 10, -3);
        let totals = progress.task_totals()[&2];
        assert_eq!((totals.busy_us, totals.records), (u64::MAX, u64::MAX));
        assert_eq!(totals.lag, 0);
    }
}

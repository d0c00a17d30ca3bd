//! What a running job shows of its checkpoints: written by the coordinator, read by the control
//! API's status, `/healthz` and the live progress line. A leaf: those readers need not know the
//! coordinator.

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
}

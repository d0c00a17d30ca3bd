//! What a running job shows of its checkpoints: written by the coordinator, read by the control
//! API's status, `/healthz` and the live progress line. A leaf: those readers need not know the
//! coordinator.

use std::sync::Mutex;

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

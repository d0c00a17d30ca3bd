//! Messages between the coordinator and the containers.

use crate::checkpoint::upload::PhaseReport;

/// Coordinator -> container.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Exit the run loop.
    Stop,
}

/// Container -> coordinator.
#[derive(Debug)]
pub enum Event {
    /// A task's part of a checkpoint is durable (or failed).
    Ack {
        /// Task id.
        task: u32,
        /// Checkpoint id.
        checkpoint: u64,
        /// The report, or why it failed.
        result: Result<PhaseReport, String>,
        /// The synchronous pause it took.
        sync_seconds: f64,
    },
    /// A task read all of its finite input.
    Finished(u32),
    /// A task failed and its container stopped.
    Failed {
        /// Task id.
        task: u32,
        /// Why.
        error: String,
    },
}

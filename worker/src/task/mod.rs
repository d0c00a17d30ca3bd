//! The task API: what a job author implements, and the registry that builds tasks by name.
//!
//! A [`StreamTask`] is instantiated once per input partition (a TaskInstance). It sees each
//! record of its partition once, in offset order, with keyed state that is checkpointed and
//! restored for it. It never needs to know about checkpoint files, offsets or retries.

pub mod builtin;
mod context;
pub mod fields;
mod registry;
pub mod wasm;
pub mod window;

pub use context::{TaskContext, Timers};
pub use registry::{TaskFactory, TaskRegistry};

use std::time::Duration;

use crate::source::batch::RecordBatch;
use crate::state::StateError;
pub use crate::state::{TimeDomain, Timer};

/// One input record, borrowed from the source's batch buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Input partition (= the task's partition).
    pub partition: u32,
    /// Offset of the record in its partition; the checkpoint stores the next offset to read.
    pub offset: u64,
    /// Event time of the record, ms since the Unix epoch. In a job with `eventTime:` it is
    /// always set (the input's own timestamp, or the one read from
    /// `eventTime.timestampField`; a record without one is skipped as bad). Without
    /// `eventTime:` it is the input's own timestamp when it has one (Kafka, generator).
    pub timestamp: Option<u64>,
    /// Partitioning key.
    pub key: &'a [u8],
    /// Payload.
    pub value: &'a [u8],
}

/// Why a task could not go on.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task's `config` in the job spec is wrong.
    #[error("task.config.{field}: {problem}")]
    Config {
        /// The config key at fault.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// One record cannot be processed (e.g. a non-numeric value for `sum`). The runtime counts
    /// it, logs it with its partition and offset, and goes on with the next record.
    #[error("bad record: {reason}")]
    BadRecord {
        /// What is wrong with the record.
        reason: String,
    },
    /// The state store failed; the task stops and restarts from the last checkpoint.
    #[error(transparent)]
    State(#[from] StateError),
    /// The sink could not take the output; the task stops and restarts from the last checkpoint.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// A WebAssembly task's component cannot be read or is not a component this worker runs.
    #[error("task.wasm.module: {0}")]
    Module(#[from] wasm::LoadError),
    /// A WebAssembly task's component failed: it trapped (a bug, `maxCallTime` or
    /// `maxMemory`), answered `fatal`, or could not be instantiated. The task stops and
    /// restarts from its last committed checkpoint with a new instance.
    #[error("task.wasm {module}: `{function}` {problem}")]
    Guest {
        /// The spec's `task.wasm.module`.
        module: String,
        /// The component's function that failed.
        function: String,
        /// What happened.
        problem: String,
    },
    /// No task of that name is registered.
    #[error("task.name: unknown task '{name}'; built-in tasks are {known}, or register your own with TaskRegistry::register in your worker binary")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
}

/// The records of a batch a task refused as bad: their index in the batch (when the task could
/// tell which) and why.
pub type BatchRejects = Vec<(Option<usize>, String)>;

/// Calls `process` for each record of `batch`, in order: [`StreamTask::process_batch`] of a
/// task that has no faster way.
pub fn process_each<T: StreamTask + ?Sized>(
    task: &mut T,
    batch: &RecordBatch,
    ctx: &mut TaskContext<'_>,
) -> Result<BatchRejects, TaskError> {
    let mut rejects = Vec::new();
    for i in 0..batch.len() {
        match task.process(&batch.get(i), ctx) {
            Ok(()) => {}
            Err(TaskError::BadRecord { reason }) => rejects.push((Some(i), reason)),
            Err(e) => return Err(e),
        }
    }
    Ok(rejects)
}

/// A stateful stream task. Only `process` is required.
pub trait StreamTask: Send {
    /// Called once after the task's state has been restored, before the first record.
    fn open(&mut self, _ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Processes one record: read and update keyed state, emit output.
    fn process(&mut self, record: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError>;

    /// Called for a timer of `key` registered with [`TaskContext::timers`] once it is due: a
    /// processing-time timer when the worker's clock reaches `timer.at`, an event-time timer
    /// when the task's watermark does. The timer is removed first; register another here for
    /// a repeating one. A timer restored from a checkpoint that is already due fires at once.
    fn on_timer(
        &mut self,
        _key: &[u8],
        _timer: Timer,
        _ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// True when [`StreamTask::process_batch`] is faster than `process` record by record (a
    /// WebAssembly component: one call into it per batch instead of per record). The runtime
    /// then hands it whole batches, in jobs without event time (there the watermark, and the
    /// timers it fires, move between records).
    fn processes_batches(&self) -> bool {
        false
    }

    /// Processes every record of `batch`, in offset order, exactly as `process` would one by
    /// one; returns the records refused as bad (counted and skipped, as `BadRecord` from
    /// `process`). Any other error stops the task. Called only when `processes_batches`.
    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &mut TaskContext<'_>,
    ) -> Result<BatchRejects, TaskError> {
        process_each(self, batch, ctx)
    }

    /// True when `process` reads or updates the plain state of the record's own key (sub-key
    /// empty: `ctx.add_i64(r.key, ..)`, `ctx.get(r.key)`). The runtime then starts loading
    /// that state a few records ahead, so that at millions of keys the cache misses of
    /// consecutive records overlap instead of stalling one after another. A hint: a wrong
    /// answer costs time, never correctness.
    fn state_keyed_by_record(&self) -> bool {
        false
    }

    /// If `Some`, [`StreamTask::on_tick`] runs at this processing-time interval: a callback
    /// for the task as a whole, not for a key, and not kept in checkpoints (use
    /// [`StreamTask::on_timer`] for anything a restore must bring back).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// The periodic callback of [`StreamTask::tick_interval`].
    fn on_tick(&mut self, _ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Seed section 5 `beforeCheckpoint`: runs at the record boundary of the synchronous
    /// phase, before the snapshot; flush anything the task buffers outside keyed state here.
    fn before_checkpoint(&mut self, _ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Seed section 5 `afterCheckpoint`: runs once checkpoint `checkpoint_id` is committed by
    /// the whole job (so its output is final); clean-up only.
    fn after_checkpoint(&mut self, _checkpoint_id: u64) {}

    /// Version of the layout of this task's state. A savepoint records it; restoring a
    /// savepoint whose version differs is refused unless `restore.allowStateDrop` is set. Bump
    /// it when a new version of the task can no longer read the old state.
    fn state_version(&self) -> u32 {
        1
    }

    /// How `cairn-worker state dump` shows a stored value. The default shows UTF-8 text as a
    /// string and anything else as hex.
    fn describe_value(&self, value: &[u8]) -> serde_json::Value {
        describe_bytes(value)
    }
}

/// UTF-8 as a JSON string, other bytes as `"0x…"` hex.
pub fn describe_bytes(value: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(value) {
        Ok(s) => serde_json::Value::String(s.to_owned()),
        Err(_) => {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::Value::String(format!("0x{hex}"))
        }
    }
}

//! Tasks compiled to WebAssembly components (`task: {wasm: {module: …}}` in the job spec): the
//! world `cairn:task/task` of `wit/task.wit`, run with wasmtime. docs/wasm-tasks.md is the
//! author's guide.
//!
//! A component task is a [`StreamTask`] like any other: the runtime restores its state,
//! checkpoints it and moves it on a repartition exactly as for a built-in task, because the
//! component keeps nothing that matters outside the keyed state the host lends it. What this
//! module adds is the sandbox: each task instance has its own store (its own linear memory,
//! bounded by `maxMemory`), each call into it a deadline (`maxCallTime`), and a trap is a
//! [`TaskError::Guest`] naming the module and the function: the task stops and restarts from its
//! last committed checkpoint, so nothing of the state is lost.

mod bindings;
mod host;
mod load;
mod sandbox;

use std::sync::Arc;

use wasmtime::component::TypedFunc;
use wasmtime::Store;

use self::bindings::{
    GuestError, GuestTimer, InputRecordRef, PackedBatch, RecordBatchRef, Rejected,
};
use self::host::HostData;
pub use self::load::{LoadError, WasmModule};
use super::{BatchRejects, Record, StreamTask, TaskContext, TaskError, Timer};
use crate::source::batch::RecordBatch;

type Outcome = (Result<(), GuestError>,);
type BatchOutcome = (Result<Vec<Rejected>, String>,);

/// The component's entry points; all but `process` are optional (a missing one does nothing).
/// `state-version` is asked once per module ([`WasmModule::state_version`]).
struct Exports {
    process: TypedFunc<(InputRecordRef<'static>,), Outcome>,
    process_batch: Option<TypedFunc<(RecordBatchRef<'static>,), BatchOutcome>>,
    open: Option<TypedFunc<(), Outcome>>,
    on_timer: Option<TypedFunc<(&'static [u8], GuestTimer), Outcome>>,
    before_checkpoint: Option<TypedFunc<(), Outcome>>,
    after_checkpoint: Option<TypedFunc<(u64,), ()>>,
}

/// One task instance of a component: its own store and instance.
pub struct WasmTask {
    module: Arc<WasmModule>,
    store: Store<HostData>,
    exports: Exports,
    /// The batch being handed to `process-batch`, kept for its buffers.
    packed: PackedBatch,
    /// Set once a call trapped: the instance may be half-way through an update of its own
    /// memory, so it is never entered again (the runtime restarts the task from its last
    /// checkpoint with a new instance).
    poisoned: Option<String>,
}

impl WasmTask {
    /// Instantiates `module` for one task instance.
    pub fn new(module: Arc<WasmModule>) -> Result<Self, TaskError> {
        let mut store = module.new_store();
        let instance = module
            .instantiate(&mut store)
            .map_err(|e| module.error("instantiate", &e))?;
        let required = |name: &str| module.error(name, &"the component does not export it");
        let exports = Exports {
            process: sandbox::typed(&instance, &mut store, "process")
                .map_err(|e| module.error("process", &e))?
                .ok_or_else(|| required("process"))?,
            process_batch: sandbox::typed(&instance, &mut store, "process-batch")
                .map_err(|e| module.error("process-batch", &e))?,
            open: sandbox::typed(&instance, &mut store, "open")
                .map_err(|e| module.error("open", &e))?,
            on_timer: sandbox::typed(&instance, &mut store, "on-timer")
                .map_err(|e| module.error("on-timer", &e))?,
            before_checkpoint: sandbox::typed(&instance, &mut store, "before-checkpoint")
                .map_err(|e| module.error("before-checkpoint", &e))?,
            after_checkpoint: sandbox::typed(&instance, &mut store, "after-checkpoint")
                .map_err(|e| module.error("after-checkpoint", &e))?,
        };
        Ok(WasmTask {
            module,
            store,
            exports,
            packed: PackedBatch::default(),
            poisoned: None,
        })
    }

    /// Calls `function` with the task's context lent to the host imports. Returns what it
    /// returned, and the record error a host import raised during the call (a key too long for
    /// the store), if any; a state or sink error, or a trap, is the task's error.
    fn enter<R>(
        &mut self,
        function: &'static str,
        ctx: &mut TaskContext<'_>,
        f: impl FnOnce(&mut Store<HostData>) -> wasmtime::Result<R>,
    ) -> Result<(R, Option<(String, usize)>), TaskError> {
        if let Some(trap) = &self.poisoned {
            return Err(self
                .module
                .error(function, &format!("not entered again after {trap}")));
        }
        self.module.arm_deadline(&mut self.store);
        let result = host::with_lent_context(&mut self.store, ctx, f);
        let raised = self.store.data_mut().take_raised();
        match (result, raised) {
            (_, Some(host::Raised::Fatal(e))) => {
                self.poisoned = Some(format!("a failed host call in `{function}`"));
                Err(e)
            }
            (Err(trap), _) => {
                let e = self.module.trap(&mut self.store, function, &trap);
                self.poisoned = Some(format!("the trap in `{function}`"));
                Err(e)
            }
            (Ok(r), Some(host::Raised::BadRecord { reason, count })) => {
                Ok((r, Some((reason, count))))
            }
            (Ok(r), None) => Ok((r, None)),
        }
    }

    /// [`Self::enter`] for the functions that answer `result<_, task-error>`.
    fn call(
        &mut self,
        function: &'static str,
        ctx: &mut TaskContext<'_>,
        f: impl FnOnce(&mut Store<HostData>) -> wasmtime::Result<Outcome>,
    ) -> Result<(), TaskError> {
        let ((outcome,), raised) = self.enter(function, ctx, f)?;
        if let Some((reason, _)) = raised {
            return Err(TaskError::BadRecord { reason });
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(GuestError::BadRecord(reason)) => Err(TaskError::BadRecord {
                reason: bounded(reason),
            }),
            Err(GuestError::Fatal(reason)) => Err(self.module.error(function, &bounded(reason))),
        }
    }
}

/// A guest's error message, cut to a length a log line can carry.
fn bounded(text: String) -> String {
    bounded_to(text, 1024)
}

/// `text` cut to at most `max` bytes (at a character boundary).
fn bounded_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl StreamTask for WasmTask {
    fn open(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match self.exports.open {
            Some(open) => self.call("open", ctx, |store| open.call(store, ())),
            None => Ok(()),
        }
    }

    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let process = self.exports.process;
        let record = InputRecordRef {
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
        };
        self.call("process", ctx, |store| process.call(store, (record,)))
    }

    fn processes_batches(&self) -> bool {
        self.exports.process_batch.is_some()
    }

    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &mut TaskContext<'_>,
    ) -> Result<BatchRejects, TaskError> {
        let Some(process_batch) = self.exports.process_batch else {
            return super::process_each(self, batch, ctx);
        };
        let mut packed = std::mem::take(&mut self.packed);
        if packed.fill(batch).is_none() {
            // Over 4 GiB of keys or values: one record at a time (never with today's sources,
            // whose batches stop at 64 MiB).
            self.packed = packed;
            return super::process_each(self, batch, ctx);
        }
        let entered = self.enter("process-batch", ctx, |store| {
            process_batch.call(store, (packed.as_arg(),))
        });
        self.packed = packed;
        let ((answer,), raised) = entered?;
        let refused =
            answer.map_err(|reason| self.module.error("process-batch", &bounded(reason)))?;
        let mut rejects: BatchRejects = refused
            .into_iter()
            // An index outside the batch names no record: the component's bug, not the
            // input's. Counted as a record of the batch.
            .map(|r| {
                let index = usize::try_from(r.index).ok().filter(|i| *i < batch.len());
                (index, bounded(r.reason))
            })
            .collect();
        if let Some((reason, count)) = raised {
            rejects.extend(std::iter::repeat_n((None, reason), count));
        }
        Ok(rejects)
    }

    fn on_timer(
        &mut self,
        key: &[u8],
        timer: Timer,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        match self.exports.on_timer {
            Some(on_timer) => self.call("on-timer", ctx, |store| {
                on_timer.call(store, (key, GuestTimer::from(timer)))
            }),
            None => Ok(()),
        }
    }

    fn before_checkpoint(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match self.exports.before_checkpoint {
            Some(before) => self.call("before-checkpoint", ctx, |store| before.call(store, ())),
            None => Ok(()),
        }
    }

    fn after_checkpoint(&mut self, checkpoint_id: u64) {
        let Some(after) = self.exports.after_checkpoint else {
            return;
        };
        if self.poisoned.is_some() {
            return;
        }
        // No context is lent: clean-up only (the checkpoint is final). A trap here cannot
        // fail the committed checkpoint; it poisons the instance, so the next call fails the
        // task and it restarts from this checkpoint.
        self.module.arm_deadline(&mut self.store);
        if let Err(trap) = after.call(&mut self.store, (checkpoint_id,)) {
            let e = self.module.trap(&mut self.store, "after-checkpoint", &trap);
            tracing::error!(error = %e, "the component trapped after a checkpoint");
            self.poisoned = Some("the trap in `after-checkpoint`".to_owned());
        }
        self.store.data_mut().take_raised();
    }

    fn state_version(&self) -> u32 {
        self.module.state_version()
    }
}

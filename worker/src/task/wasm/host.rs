//! The host side of the component's imports (`state`, `output`, `timers`, `host`): each is a
//! call on the [`TaskContext`] the runtime lends for the duration of one call into the
//! component, so state goes through the same write-back cache, checkpoints and restore as a
//! built-in task's.

use std::ptr::NonNull;
use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable, WasmList};
use wasmtime::{ResourceLimiter, Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::cairn::task::{host, output, state, timers, types};
use super::bindings::{Entry, Level};
use crate::task::{TaskContext, TaskError};

/// What a host import raised for the call in progress, read when the call returns.
pub(super) enum Raised {
    /// The current record cannot be processed (a key longer than the store allows, a counter
    /// that would leave the 64-bit range): counted as a bad record, whatever the component
    /// answers. In a batch, `count` such records (the first one's reason).
    BadRecord { reason: String, count: usize },
    /// The state store or the sink failed: the component was trapped and the task stops.
    Fatal(TaskError),
}

/// The data of a task instance's store.
pub(super) struct HostData {
    lent: Option<Lent>,
    raised: Option<Raised>,
    config_json: Arc<str>,
    module: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: MemoryLimit,
}

/// `task.wasm.maxMemory`: the size each linear memory of the instance may grow to. Growing
/// past it traps (rather than failing the `memory.grow`, which most language runtimes turn into
/// an abort that gives no reason), and the trap is reported as this limit.
pub(super) struct MemoryLimit {
    max: usize,
    /// The size a refused growth asked for, until the task's error has reported it.
    pub(super) refused: Option<usize>,
}

impl MemoryLimit {
    pub(super) fn new(max: usize) -> Self {
        MemoryLimit { max, refused: None }
    }
}

/// Table elements an instance may have: far above any real component's function tables, low
/// enough that a table cannot take the worker's memory.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "growing a memory to {desired} bytes, past task.wasm.maxMemory ({} bytes)",
                self.max
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The context lent for one call. A pointer, not a reference, because a store's data must be
/// `'static` while the context borrows the task's state and sink for the length of the call.
struct Lent(NonNull<TaskContext<'static>>);

// SAFETY: a `Lent` exists only while `with_lent_context` runs on the thread that owns both the
// store and the context; the store is never moved to another thread during a call.
#[allow(unsafe_code)]
unsafe impl Send for Lent {}

impl HostData {
    /// A store's data: the component sees its config and nothing of the machine (WASI with no
    /// preopened directory, no environment, no arguments, no network; stdout and stderr are
    /// dropped: the component logs through `host.log`).
    pub(super) fn new(config_json: Arc<str>, module: Arc<str>, limits: MemoryLimit) -> Self {
        HostData {
            lent: None,
            raised: None,
            config_json,
            module,
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
        }
    }

    /// What a host import raised during the last call (and forgets it).
    pub(super) fn take_raised(&mut self) -> Option<Raised> {
        self.raised.take()
    }

    /// The pointer to the lent context (see [`Self::ctx`]).
    fn lent_pointer(&self, function: &str) -> wasmtime::Result<NonNull<TaskContext<'static>>> {
        match &self.lent {
            Some(lent) => Ok(lent.0),
            None => Err(outside_a_call(function)),
        }
    }

    /// The lent context, or a trap when the component calls a state function outside a call
    /// that has one (e.g. from `state-version`).
    fn ctx(&mut self, function: &str) -> wasmtime::Result<&mut TaskContext<'static>> {
        match &mut self.lent {
            // SAFETY: the pointer was made from a `&mut TaskContext` that outlives the call in
            // progress (`with_lent_context` clears it before returning), and nothing else
            // uses that context while the call runs.
            #[allow(unsafe_code)]
            Some(lent) => Ok(unsafe { lent.0.as_mut() }),
            None => Err(outside_a_call(function)),
        }
    }

    /// Turns a context call's error into what the component sees: a record error is
    /// remembered and the import answers `fallback`; anything else traps the component.
    fn settle<T>(&mut self, result: Result<T, TaskError>, fallback: T) -> wasmtime::Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(TaskError::BadRecord { reason }) => {
                match &mut self.raised {
                    None => self.raised = Some(Raised::BadRecord { reason, count: 1 }),
                    Some(Raised::BadRecord { count, .. }) => *count += 1,
                    Some(Raised::Fatal(_)) => {}
                }
                Ok(fallback)
            }
            Err(e) => {
                let message = e.to_string();
                self.raised = Some(Raised::Fatal(e));
                Err(wasmtime::Error::msg(message))
            }
        }
    }
}

/// Redefines the two imports a task calls for every record, `state.add-i64` and `output.emit`,
/// to read their keys and values in place in the component's memory: the generated bindings
/// copy each `list<u8>` into a new `Vec` first, which costs a tenth of a record's time in a
/// compiled component. The rest stay as generated.
pub(super) fn link_per_record_imports(linker: &mut Linker<HostData>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance("cairn:task/state@0.1.0")?.func_wrap(
        "add-i64",
        |mut store: StoreContextMut<'_, HostData>,
         (key, sub_key, delta): (WasmList<u8>, WasmList<u8>, i64)| {
            let lent = store.data().lent_pointer("state.add-i64")?;
            let (key, sub_key) = (key.as_le_slice(&store), sub_key.as_le_slice(&store));
            // SAFETY: as in `HostData::ctx`; the context is not in the component's memory, so
            // the slices borrowed from that memory do not alias it.
            #[allow(unsafe_code)]
            let ctx = unsafe { &mut *lent.as_ptr() };
            let result = if sub_key.is_empty() {
                ctx.add_i64(key, delta)
            } else {
                add_i64_sub(ctx, key, sub_key, delta)
            };
            Ok((store.data_mut().settle(result.map(Some), None)?,))
        },
    )?;
    linker.instance("cairn:task/output@0.1.0")?.func_wrap(
        "emit",
        |mut store: StoreContextMut<'_, HostData>, (key, value): (WasmList<u8>, WasmList<u8>)| {
            let lent = store.data().lent_pointer("output.emit")?;
            let (key, value) = (key.as_le_slice(&store), value.as_le_slice(&store));
            // SAFETY: as above.
            #[allow(unsafe_code)]
            let ctx = unsafe { &mut *lent.as_ptr() };
            let result = ctx.emit(key, value);
            store.data_mut().settle(result, ())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The trap for a state, output or timer function called where there is no context.
fn outside_a_call(function: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "`{function}` was called outside open, process, process-batch, on-timer and \
         before-checkpoint, where there is no record and no keyed state"
    ))
}

/// Runs `f` (a call into the component) with `ctx` lent to the host imports.
pub(super) fn with_lent_context<R>(
    store: &mut Store<HostData>,
    ctx: &mut TaskContext<'_>,
    f: impl FnOnce(&mut Store<HostData>) -> R,
) -> R {
    /// Clears the loan when the call ends, even by unwinding.
    struct Loan<'s>(&'s mut Store<HostData>);
    impl Drop for Loan<'_> {
        fn drop(&mut self) {
            self.0.data_mut().lent = None;
        }
    }
    let pointer = NonNull::from(ctx).cast::<TaskContext<'static>>();
    store.data_mut().lent = Some(Lent(pointer));
    let loan = Loan(store);
    f(loan.0)
}

impl WasiView for HostData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostData {}

/// The generated traits. `state.add-i64` and `output.emit` are linked by
/// [`link_per_record_imports`] instead (in place, without copies); their methods here are what
/// the generated trait requires, with the same meaning.
impl state::Host for HostData {
    fn get(&mut self, key: Vec<u8>, sub_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let result = self.ctx("state.get")?.get_sub(&key, &sub_key);
        self.settle(result, None)
    }

    fn put(&mut self, key: Vec<u8>, sub_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        let result = self.ctx("state.put")?.put_sub(&key, &sub_key, &value);
        self.settle(result, ())
    }

    fn delete(&mut self, key: Vec<u8>, sub_key: Vec<u8>) -> wasmtime::Result<()> {
        let result = self.ctx("state.delete")?.delete_sub(&key, &sub_key);
        self.settle(result, ())
    }

    fn add_i64(
        &mut self,
        key: Vec<u8>,
        sub_key: Vec<u8>,
        delta: i64,
    ) -> wasmtime::Result<Option<i64>> {
        let ctx = self.ctx("state.add-i64")?;
        let result = if sub_key.is_empty() {
            ctx.add_i64(&key, delta)
        } else {
            add_i64_sub(ctx, &key, &sub_key, delta)
        };
        self.settle(result.map(Some), None)
    }

    fn sub_keys(&mut self, key: Vec<u8>) -> wasmtime::Result<Vec<Vec<u8>>> {
        let result = self.ctx("state.sub-keys")?.scan(&key, b"", None);
        let keys = result.map(|entries| entries.into_iter().map(|(sub, _)| sub).collect());
        self.settle(keys, Vec::new())
    }

    fn scan(
        &mut self,
        key: Vec<u8>,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
    ) -> wasmtime::Result<Vec<Entry>> {
        let result = self.ctx("state.scan")?.scan(&key, &from, to.as_deref());
        let entries = result.map(|entries| {
            entries
                .into_iter()
                .map(|(sub_key, value)| Entry { sub_key, value })
                .collect()
        });
        self.settle(entries, Vec::new())
    }
}

/// `add-i64` at a sub-key: a read and a write (the context's one-lookup counter is for the
/// plain value of a key only).
fn add_i64_sub(
    ctx: &mut TaskContext<'_>,
    key: &[u8],
    sub: &[u8],
    delta: i64,
) -> Result<i64, TaskError> {
    let current = ctx
        .get_sub(key, sub)?
        .map_or(0, |v| crate::task::context::decode_i64(&v));
    let sum = current
        .checked_add(delta)
        .ok_or_else(|| TaskError::BadRecord {
            reason: format!(
                "adding {delta} to the counter of this key ({current}) is outside the 64-bit range"
            ),
        })?;
    ctx.put_sub(key, sub, &sum.to_le_bytes())?;
    Ok(sum)
}

impl output::Host for HostData {
    fn emit(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        let result = self.ctx("output.emit")?.emit(&key, &value);
        self.settle(result, ())
    }
}

impl timers::Host for HostData {
    fn register(&mut self, key: Vec<u8>, timer: super::GuestTimer) -> wasmtime::Result<()> {
        let result = self
            .ctx("timers.register")?
            .timers()
            .register(&key, timer.into());
        self.settle(result, ())
    }

    fn delete(&mut self, key: Vec<u8>, timer: super::GuestTimer) -> wasmtime::Result<bool> {
        let result = self
            .ctx("timers.delete")?
            .timers()
            .delete(&key, timer.into());
        self.settle(result, false)
    }

    fn watermark(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(self.ctx("timers.watermark")?.watermark())
    }
}

/// The longest log line a component may write; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

impl host::Host for HostData {
    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }

    fn task_id(&mut self) -> wasmtime::Result<u32> {
        Ok(self.ctx("host.task-id")?.task_id())
    }

    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = super::bounded_to(message, MAX_LOG_LINE);
        let task = self.ctx("host.log").ok().map(|ctx| ctx.task_id());
        let module = &*self.module;
        match level {
            Level::Debug => tracing::debug!(module, ?task, "{message}"),
            Level::Info => tracing::info!(module, ?task, "{message}"),
            Level::Warn => tracing::warn!(module, ?task, "{message}"),
            Level::Error => tracing::error!(module, ?task, "{message}"),
        }
        Ok(())
    }
}

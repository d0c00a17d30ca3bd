//! Reading a component (a path or a store URL), compiling it once per process (and once per
//! machine, through the compile cache of `sandbox`), and what every task instance of it
//! shares: the pre-linked component, its config, its limits and its state version.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_contract::WasmTaskSpec;
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{Store, Trap};

use super::host::{HostData, MemoryLimit};
use super::sandbox;
use crate::storage::CheckpointStore;
use crate::task::TaskError;

/// The largest component the worker reads (a Python component with its interpreter is about
/// 40 MiB).
pub const MAX_MODULE_SIZE: u64 = 256 << 20;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or object could not be read.
    #[error("cannot read the component {module}: {reason}")]
    Read {
        /// The spec's `module`.
        module: String,
        /// What failed, and how to fix it.
        reason: String,
    },
    /// It is not a component of the `cairn:task` world this worker runs.
    #[error("{module} is not a component this worker can run: {reason}")]
    Invalid {
        /// The spec's `module`.
        module: String,
        /// What wasmtime or the link step said.
        reason: String,
    },
}

/// A compiled component, ready to instantiate once per task instance.
pub struct WasmModule {
    /// How logs and errors name it: the spec's `module`.
    name: Arc<str>,
    pre: InstancePre<HostData>,
    config_json: Arc<str>,
    max_memory: usize,
    deadline_ticks: u64,
    max_call_time: Duration,
    state_version: u32,
}

impl WasmModule {
    /// Reads, compiles and links the component of `spec`, and asks it its state version.
    pub fn load(spec: &WasmTaskSpec) -> Result<Self, LoadError> {
        let name: Arc<str> = Arc::from(spec.module.as_str());
        let bytes = read_module(&spec.module)?;
        let invalid = |reason: String| LoadError::Invalid {
            module: spec.module.clone(),
            reason,
        };
        let component = sandbox::compile(&bytes).map_err(|e| invalid(format!("{e:#}")))?;
        let pre = sandbox::link(&component).map_err(|e| invalid(format!("{e:#}")))?;
        let config_json = serde_json::Value::Object(spec.config.clone()).to_string();
        let mut module = WasmModule {
            name,
            pre,
            config_json: Arc::from(config_json),
            max_memory: usize::try_from(spec.max_memory).unwrap_or(usize::MAX),
            deadline_ticks: sandbox::deadline_ticks(spec.max_call_time),
            max_call_time: spec.max_call_time,
            state_version: 1,
        };
        module.state_version = module
            .ask_state_version()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(module)
    }

    /// `state-version` of a fresh instance (1 when the component does not export it). Asked
    /// once: a savepoint records it before any task instance exists.
    fn ask_state_version(&self) -> Result<u32, TaskError> {
        let mut store = self.new_store();
        let instance = self
            .instantiate(&mut store)
            .map_err(|e| self.error("instantiate", &format!("{e:#}")))?;
        let Some(state_version) =
            sandbox::typed::<(), (u32,)>(&instance, &mut store, "state-version")
                .map_err(|e| self.error("state-version", &e))?
        else {
            return Ok(1);
        };
        self.arm_deadline(&mut store);
        state_version
            .call(&mut store, ())
            .map(|(v,)| v)
            .map_err(|trap| self.trap(&mut store, "state-version", &trap))
    }

    /// The state version the component reported.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// A store for one instance, with its memory limit.
    pub(super) fn new_store(&self) -> Store<HostData> {
        let limits = MemoryLimit::new(self.max_memory);
        let data = HostData::new(self.config_json.clone(), self.name.clone(), limits);
        let mut store = Store::new(self.pre.engine(), data);
        store.limiter(|data| &mut data.limits);
        store
    }

    /// Instantiates the component in `store`.
    pub(super) fn instantiate(&self, store: &mut Store<HostData>) -> wasmtime::Result<Instance> {
        self.arm_deadline(store);
        self.pre.instantiate(store)
    }

    /// Gives the next call `maxCallTime`.
    pub(super) fn arm_deadline(&self, store: &mut Store<HostData>) {
        store.set_epoch_deadline(self.deadline_ticks);
    }

    /// A task error naming this module and `function`.
    pub(super) fn error(&self, function: &str, problem: &dyn Display) -> TaskError {
        TaskError::Guest {
            module: self.name.to_string(),
            function: function.to_owned(),
            problem: super::bounded(problem.to_string()),
        }
    }

    /// The task error for a trap in `function`: what stopped it and where.
    pub(super) fn trap(
        &self,
        store: &mut Store<HostData>,
        function: &str,
        trap: &wasmtime::Error,
    ) -> TaskError {
        let problem = match (
            trap.downcast_ref::<Trap>(),
            store.data_mut().limits.refused.take(),
        ) {
            (_, Some(desired)) => format!(
                "needed more memory than task.wasm.maxMemory ({}): it tried to grow a memory to \
                 {} and was stopped; raise maxMemory if the task needs it",
                cairn_contract::format_size(self.max_memory as u64),
                cairn_contract::format_size(desired as u64)
            ),
            (Some(Trap::Interrupt), None) => format!(
                "ran longer than task.wasm.maxCallTime ({}) and was stopped",
                cairn_contract::units::format_duration(self.max_call_time)
            ),
            _ => format!("trapped: {trap:#}"),
        };
        self.error(function, &problem)
    }
}

/// The component's bytes: a store URL (`s3://bucket/key`, `file:///dir/name.wasm`) read with
/// the store's settings, or a path.
fn read_module(module: &str) -> Result<Vec<u8>, LoadError> {
    let fail = |reason: String| LoadError::Read {
        module: module.to_owned(),
        reason,
    };
    if module.contains("://") {
        let (dir, key) = module
            .rsplit_once('/')
            .filter(|(dir, key)| !key.is_empty() && !dir.ends_with(':') && !dir.ends_with('/'))
            .ok_or_else(|| {
                fail("a store URL names an object, e.g. s3://bucket/tasks/count.wasm".into())
            })?;
        let base = std::env::current_dir().map_err(|e| fail(e.to_string()))?;
        let store = CheckpointStore::open_existing(dir, &base).map_err(|e| fail(e.to_string()))?;
        // Loading runs before any job runtime exists, and also from inside one (a restore
        // check): a thread of its own with its own small runtime works in both.
        let bytes = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?
                        .block_on(store.get_bytes(key))
                        .map_err(|e| e.to_string())
                })
                .join()
                .unwrap_or_else(|_| Err("the reading thread panicked".to_owned()))
        })
        .map_err(fail)?;
        if bytes.len() as u64 > MAX_MODULE_SIZE {
            return Err(fail(too_big(bytes.len() as u64)));
        }
        return Ok(bytes.to_vec());
    }
    let path = Path::new(module);
    let size = std::fs::metadata(path)
        .map_err(|e| {
            fail(format!(
                "{e} (a path is relative to the worker's working directory)"
            ))
        })?
        .len();
    if size > MAX_MODULE_SIZE {
        return Err(fail(too_big(size)));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn too_big(size: u64) -> String {
    format!(
        "it is {size} bytes, more than the {MAX_MODULE_SIZE}-byte limit of a component; strip \
         its debug sections or split the task"
    )
}

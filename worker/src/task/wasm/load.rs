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
/// the store's settings, or a path. Either way at most [`MAX_MODULE_SIZE`] bytes are read: an
/// object or file over the limit is refused before it is downloaded or read whole.
fn read_module(module: &str) -> Result<Vec<u8>, LoadError> {
    let fail = |reason: String| LoadError::Read {
        module: module.to_owned(),
        reason,
    };
    let bytes = if module.contains("://") {
        read_from_store(module)
    } else {
        read_from_path(Path::new(module))
    }
    .map_err(fail)?;
    match bytes.len() as u64 {
        // Checked again after reading: the file or object may have grown in between.
        size if size > MAX_MODULE_SIZE => Err(fail(too_big(size))),
        _ => Ok(bytes),
    }
}

fn read_from_store(url: &str) -> Result<Vec<u8>, String> {
    let (dir, key) = url
        .rsplit_once('/')
        .filter(|(dir, key)| !key.is_empty() && !dir.ends_with(':') && !dir.ends_with('/'))
        .ok_or("a store URL names an object, e.g. s3://bucket/tasks/count.wasm")?;
    let base = std::env::current_dir().map_err(|e| e.to_string())?;
    let store = CheckpointStore::open_existing(dir, &base).map_err(|e| e.to_string())?;
    let read = async {
        // The size first (a listing), so that an oversized object is never downloaded.
        let listed = store.list(key).await.map_err(|e| e.to_string())?;
        let size = listed
            .iter()
            .find(|object| object.key == key)
            .map(|object| object.size)
            .ok_or_else(|| format!("the store {dir} has no object {key:?}"))?;
        if size > MAX_MODULE_SIZE {
            return Err(too_big(size));
        }
        store.get_bytes(key).await.map_err(|e| e.to_string())
    };
    // Loading runs before any job runtime exists, and also from inside one (a restore check):
    // a thread of its own with its own small runtime works in both.
    let bytes = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(read)
            })
            .join()
            .unwrap_or_else(|_| Err("the reading thread panicked".to_owned()))
    })?;
    Ok(bytes.into())
}

fn read_from_path(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{e} (a path is relative to the worker's working directory)"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > MAX_MODULE_SIZE {
        return Err(too_big(size));
    }
    // One byte more than the limit, so that a file grown since is seen to be too big.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_MODULE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn too_big(size: u64) -> String {
    format!(
        "it is {size} bytes, more than the {MAX_MODULE_SIZE}-byte limit of a component; strip \
         its debug sections or split the task"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.wasm");
        // Sparse: the size is there, the bytes are not (reading them would take a while).
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_MODULE_SIZE + 1).unwrap();
        let err = read_module(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("more than the 268435456-byte limit"), "{err}");
        assert!(err.contains("huge.wasm"), "{err}");
    }

    #[test]
    fn a_store_url_must_name_an_object() {
        let err = read_module("s3://bucket/").unwrap_err().to_string();
        assert!(err.contains("a store URL names an object"), "{err}");
    }
}

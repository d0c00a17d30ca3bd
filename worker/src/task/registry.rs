//! [`TaskRegistry`]: task names -> constructors. A user's worker binary registers its own tasks
//! next to the built-ins and hands the registry to [`crate::cli::main_with`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cairn_contract::TaskSpec;

use serde_json::{Map, Value};

use super::wasm::{WasmModule, WasmTask};
use super::{builtin, StreamTask, TaskError};

/// Builds one task instance from the job's `task.config`.
pub type TaskFactory =
    Arc<dyn Fn(&Map<String, Value>) -> Result<Box<dyn StreamTask>, TaskError> + Send + Sync>;

/// The tasks a worker binary can run, by name.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    factories: BTreeMap<String, TaskFactory>,
    /// WebAssembly components loaded so far, by their spec: each is read and compiled once
    /// per process, however many task instances and checks build it.
    components: Arc<Mutex<BTreeMap<String, Arc<WasmModule>>>>,
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in tasks: `count`, `sum`, `dedupe`, `filter`, `passthrough`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        builtin::register_all(&mut r);
        r
    }

    /// Registers (or replaces) a task under `name`.
    pub fn register<F>(&mut self, name: &str, factory: F) -> &mut Self
    where
        F: Fn(&Map<String, Value>) -> Result<Box<dyn StreamTask>, TaskError>
            + Send
            + Sync
            + 'static,
    {
        self.factories.insert(name.to_owned(), Arc::new(factory));
        self
    }

    /// Builds a task; an unknown name or a bad config is an error naming the problem.
    pub fn build(
        &self,
        name: &str,
        config: &Map<String, Value>,
    ) -> Result<Box<dyn StreamTask>, TaskError> {
        let factory = self.factories.get(name).ok_or_else(|| TaskError::Unknown {
            name: name.to_owned(),
            known: self.names().join(", "),
        })?;
        factory(config)
    }

    /// Builds the task of a job spec: a WebAssembly component when it has `wasm`, a
    /// registered task by name otherwise.
    pub fn build_task(&self, spec: &TaskSpec) -> Result<Box<dyn StreamTask>, TaskError> {
        match &spec.wasm {
            Some(wasm) => {
                let key = serde_json::to_string(wasm).expect("a spec serializes");
                // Loading under the lock: two tasks of one module must not compile it twice.
                let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
                let module = match components.get(&key) {
                    Some(module) => Arc::clone(module),
                    None => {
                        let module = Arc::new(WasmModule::load(wasm)?);
                        components.insert(key, Arc::clone(&module));
                        module
                    }
                };
                drop(components);
                Ok(Box::new(WasmTask::new(module)?))
            }
            None => self.build(&spec.name, &spec.config),
        }
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }
}

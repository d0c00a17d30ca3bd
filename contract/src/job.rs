//! The job spec types: what one streaming job is, as a user writes it in `job.yaml` and as the
//! operator stores it in `spec.job` of a StreamJob resource.
//!
//! YAML keys are camelCase and every struct denies unknown keys, so a typo fails loudly naming
//! the key instead of silently falling back to a default.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::input::InputSpec;
use crate::output::OutputSpec;
use crate::time::EventTimeSpec;

/// Default `checkpoint.store`: a directory under the working directory.
pub const DEFAULT_CHECKPOINT_STORE: &str = "file://./.cairn/checkpoints";
/// Default `state.dir`: where each task's local state lives.
pub const DEFAULT_STATE_DIR: &str = "./.cairn/state";
/// Default `checkpoint.interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `checkpoint.timeout`.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `checkpoint.minInterval` under a recovery-time objective.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default `checkpoint.maxInterval` under a recovery-time objective.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Default `checkpoint.retained`.
pub const DEFAULT_CHECKPOINTS_RETAINED: u32 = 3;
/// Default `state.cacheSize`: 64 MiB of write-back cache per task.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;
/// Task names the worker provides itself; any other `task.name` must be registered as a custom
/// task with the worker binary that runs the job.
pub const BUILTIN_TASKS: &[&str] = &["count", "sum", "dedupe", "filter", "passthrough", "window"];

/// One streaming job: its input, the task run on every input partition, where output goes, how
/// many containers share the partitions, and how state is kept and checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a job spec: a map with at least `name`, `input` and `task`"
)]
pub struct JobSpec {
    /// Job name, a DNS-1123 label (it names Kubernetes objects and checkpoint directories).
    pub name: String,
    /// Where records come from, and how many partitions (N) they are split into.
    pub input: InputSpec,
    /// The task run once per input partition.
    pub task: TaskSpec,
    /// Where output records go (default: discarded).
    #[serde(default)]
    pub output: OutputSpec,
    /// Number of containers (P) the N partitions are spread over; 1 <= P <= N.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// How and how often state and input offsets are checkpointed.
    #[serde(default, deserialize_with = "null_is_default")]
    pub checkpoint: CheckpointSpec,
    /// Where local task state lives and how much it may cache.
    #[serde(default, deserialize_with = "null_is_default")]
    pub state: StateSpec,
    /// Warm standbys (docs/recovery.md#warm-standbys): every container of another process
    /// (1..P) may have a second process that follows each committed checkpoint, fetching only
    /// its new files, and takes over that container's tasks when it fails. On Kubernetes the
    /// operator runs one standby pod per container 1..P, away from its active pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// Event time: record timestamps and watermarks (docs/windows.md). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,
    /// How to start: from a savepoint, with offsets reset, dropping incompatible state. Not
    /// part of the job's identity, so it is left out of [`JobSpec::spec_hash`].
    #[serde(
        default,
        skip_serializing_if = "RestoreSpec::is_default",
        deserialize_with = "null_is_default"
    )]
    pub restore: RestoreSpec,
}

/// An empty section (`checkpoint:` alone, or `null`) reads as the section's defaults. The YAML
/// text and an object (a StreamJob's `spec.job`) read it alike: serde_yaml reads a null object
/// as an empty map, but refuses null text for a struct.
fn null_is_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// How a job starts when it has no checkpoint of its own yet, or is upgraded, rescaled or
/// repartitioned (see docs/savepoints.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RestoreSpec {
    /// URL of a savepoint directory to start from, e.g.
    /// `file://./.cairn/checkpoints/savepoints/sp-000000000012`. Takes precedence over the
    /// job's own latest checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// Start every input partition at offset 0 (the input was replaced, e.g. a new topic).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset_offsets: bool,
    /// Allow starting with empty state when the savepoint's state is not compatible with the
    /// task (another task, or a task whose state version changed). Without it such a restore
    /// is refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_state_drop: bool,
}

impl RestoreSpec {
    /// True when nothing is set (the section is omitted when serialised).
    pub fn is_default(&self) -> bool {
        *self == RestoreSpec::default()
    }
}

fn default_parallelism() -> u32 {
    1
}

/// The container task `task` runs in when the job has `parallelism` containers: task t runs in
/// container t % P. The worker assigns tasks by it and the operator's autoscaler predicts a
/// container's load by it, so both use this one definition. A P of 0 reads as 1.
pub fn container_of(task: u32, parallelism: u32) -> u32 {
    task % parallelism.max(1)
}

impl JobSpec {
    /// A spec with the given name, input and task and every other section at its default;
    /// a starting point for programmatic specs and tests.
    pub fn new(name: impl Into<String>, input: InputSpec, task: TaskSpec) -> Self {
        JobSpec {
            name: name.into(),
            input,
            task,
            output: OutputSpec::default(),
            parallelism: default_parallelism(),
            checkpoint: CheckpointSpec::default(),
            state: StateSpec::default(),
            standby: false,
            event_time: None,
            restore: RestoreSpec::default(),
        }
    }
}

/// Which task to run and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, from = "TaskSpecFields")]
pub struct TaskSpec {
    /// A built-in task ([`BUILTIN_TASKS`]) or the name a custom task was registered under. For
    /// a WebAssembly task it is optional ([`WASM_TASK_NAME`] when absent): the name a savepoint
    /// records, so a new version of the module keeps the state only under the same name.
    pub name: String,
    /// Free-form settings handed to the task as they are (e.g. `field: word` for `count`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// A task compiled to a WebAssembly component (docs/wasm-tasks.md) instead of one built
    /// into the worker binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmTaskSpec>,
}

/// The name of a WebAssembly task whose spec gives none.
pub const WASM_TASK_NAME: &str = "wasm";

/// [`TaskSpec`] as written: the name may be left out for a WebAssembly task.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TaskSpecFields {
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    wasm: Option<WasmTaskSpec>,
}

impl From<TaskSpecFields> for TaskSpec {
    fn from(f: TaskSpecFields) -> Self {
        let name = match (&f.wasm, f.name.is_empty()) {
            (Some(_), true) => WASM_TASK_NAME.to_owned(),
            _ => f.name,
        };
        TaskSpec {
            name,
            config: f.config,
            wasm: f.wasm,
        }
    }
}

/// Default `task.wasm.maxMemory`: linear memory (and tables) one task instance may grow to.
pub const DEFAULT_WASM_MAX_MEMORY: u64 = 256 << 20;
/// Default `task.wasm.maxCallTime`: how long one call into the component may run.
pub const DEFAULT_WASM_MAX_CALL_TIME: Duration = Duration::from_secs(10);

/// A task compiled to a WebAssembly component of the world `cairn:task/task` (wit/task.wit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmTaskSpec {
    /// Where the component is: a path (relative to the working directory unless absolute; on
    /// Kubernetes a file of a mounted ConfigMap or volume) or a store URL (`s3://bucket/key`,
    /// `file:///dir/name.wasm`) read with the checkpoint store's credentials.
    pub module: String,
    /// Settings handed to the component as JSON text (`host.config()`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Largest linear memory one task instance may grow to (a size such as `256MiB`, the
    /// default); growing past it fails inside the component.
    #[serde(default = "default_wasm_max_memory", with = "crate::units::size")]
    pub max_memory: u64,
    /// Longest time one call into the component (one record, one timer, ...) may take (default
    /// 10s); a call that runs longer is stopped and the task restarts from its last checkpoint.
    #[serde(
        default = "default_wasm_max_call_time",
        with = "crate::units::duration"
    )]
    pub max_call_time: Duration,
}

fn default_wasm_max_memory() -> u64 {
    DEFAULT_WASM_MAX_MEMORY
}

fn default_wasm_max_call_time() -> Duration {
    DEFAULT_WASM_MAX_CALL_TIME
}

impl WasmTaskSpec {
    /// A component at `module` with the default limits and no config.
    pub fn new(module: impl Into<String>) -> Self {
        WasmTaskSpec {
            module: module.into(),
            config: serde_json::Map::new(),
            max_memory: DEFAULT_WASM_MAX_MEMORY,
            max_call_time: DEFAULT_WASM_MAX_CALL_TIME,
        }
    }
}

impl TaskSpec {
    /// A task with the given name and empty config.
    pub fn new(name: impl Into<String>) -> Self {
        TaskSpec {
            name: name.into(),
            config: serde_json::Map::new(),
            wasm: None,
        }
    }

    /// A WebAssembly task named [`WASM_TASK_NAME`].
    pub fn wasm(wasm: WasmTaskSpec) -> Self {
        TaskSpec {
            name: WASM_TASK_NAME.to_owned(),
            config: serde_json::Map::new(),
            wasm: Some(wasm),
        }
    }

    /// Whether the worker provides this task itself (see [`BUILTIN_TASKS`]).
    pub fn is_builtin(&self) -> bool {
        self.wasm.is_none() && BUILTIN_TASKS.contains(&self.name.as_str())
    }
}

/// Coordinated checkpoint settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Time between checkpoint starts (>= 10ms; default 60s).
    #[serde(with = "crate::units::duration")]
    pub interval: Duration,
    /// Store URL (see [`crate::StoreUrl`]): `file://`, `memory://` (tests) or `s3://`.
    pub store: String,
    /// How many completed checkpoints to keep (>= 1; default 3).
    pub retained: u32,
    /// How long one checkpoint may take before it is abandoned (> 0; default 10m).
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// The recovery-time objective (docs/recovery.md): after a failure the job should be back
    /// where it was within this time. When set, the coordinator predicts the recovery time
    /// and adapts the interval between `minInterval` and `maxInterval`, starting from
    /// `interval`. Absent (the default): the interval is fixed.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::units::optional_duration"
    )]
    pub target_recovery_time: Option<Duration>,
    /// Shortest interval the objective may choose (default 1s). Only with
    /// `targetRecoveryTime`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::units::optional_duration"
    )]
    pub min_interval: Option<Duration>,
    /// Longest interval the objective may choose (default 10m). Only with
    /// `targetRecoveryTime`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::units::optional_duration"
    )]
    pub max_interval: Option<Duration>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            store: DEFAULT_CHECKPOINT_STORE.to_owned(),
            retained: DEFAULT_CHECKPOINTS_RETAINED,
            timeout: DEFAULT_CHECKPOINT_TIMEOUT,
            target_recovery_time: None,
            min_interval: None,
            max_interval: None,
        }
    }
}

impl CheckpointSpec {
    /// The bounds of the interval: `[minInterval, maxInterval]` (defaults filled in) under a
    /// recovery-time objective, else `interval` alone.
    pub fn interval_bounds(&self) -> (Duration, Duration) {
        match self.target_recovery_time {
            Some(_) => (
                self.min_interval.unwrap_or(DEFAULT_MIN_INTERVAL),
                self.max_interval.unwrap_or(DEFAULT_MAX_INTERVAL),
            ),
            None => (self.interval, self.interval),
        }
    }

    /// The first interval: `interval`, moved into the bounds.
    pub fn first_interval(&self) -> Duration {
        let (min, max) = self.interval_bounds();
        self.interval.max(min).min(max.max(min))
    }

    /// The interval the health rule counts late commits from: the longest one the coordinator
    /// may choose, so an objective that lengthens the interval never makes the job look late.
    pub fn health_interval(&self) -> Duration {
        self.interval_bounds().1.max(self.first_interval())
    }

    /// The parsed [`crate::StoreUrl`] of `store`; errors as validation would.
    pub fn store_location(&self) -> Result<crate::StoreUrl, crate::FieldError> {
        crate::StoreUrl::parse_spec(&self.store)
    }
}

/// Local state settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StateSpec {
    /// Directory holding each task's local state, relative to the working directory unless
    /// absolute.
    pub dir: PathBuf,
    /// Write-back cache per task, in bytes (>= 1MiB; default 64MiB). Written as a size
    /// (`"64MiB"`).
    #[serde(with = "crate::units::size")]
    pub cache_size: u64,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

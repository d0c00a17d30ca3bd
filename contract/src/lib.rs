//! What the Cairn worker and operator agree on, defined once so that neither side can drift:
//!
//! - the job spec: the document a user runs locally (`cairn-worker run job.yaml`) and that the
//!   operator stores as `spec.job` of a StreamJob and mounts in the worker pods — its types
//!   ([`JobSpec`] and its sections), defaults, human-readable durations and sizes ([`units`]),
//!   validation with actionable messages ([`SpecError`]), the Samza-style properties form
//!   ([`properties`]) and a stable [`JobSpec::spec_hash`];
//! - the checkpoint store URL: one grammar ([`StoreUrl`]), and the pattern the CRD checks it
//!   with ([`CLUSTER_PATTERN`]);
//! - the control API's wire types ([`control`]);
//! - the worker pod: arguments, environment, ports, paths, and the timeouts that must fit in the
//!   pod's grace period ([`pod`]);
//! - the document a deployment's pods run, whose hash both sides report ([`deploy`]);
//! - the health rule both report from ([`health`]);
//! - the store housekeeping commands the operator runs in one-off pods ([`housekeeping`]).
//!
//! It deliberately has no runtime dependencies (no RocksDB, tokio or kube): serde only.
//!
//! ```
//! let spec = cairn_contract::JobSpec::from_yaml_str(
//!     "name: wordcount\n\
//!      input: {type: generator, partitions: 4}\n\
//!      task: {name: count}\n",
//! )
//! .unwrap();
//! assert_eq!(spec.input.partitions(), 4);
//! assert_eq!(spec.parallelism, 1);
//! assert_eq!(spec.checkpoint.interval, std::time::Duration::from_secs(60));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod deploy;
mod error;
mod hash;
pub mod health;
pub mod housekeeping;
pub use hash::fingerprint;
mod input;
mod job;
mod kafka;
mod output;
mod parse;
pub mod pod;
pub mod properties;
mod store;
mod tagged;
mod time;
pub mod units;
mod validate;

pub use error::{FieldError, PropertyError, SpecError};
pub use input::{
    FileInput, GeneratorInput, InputSpec, KafkaInput, KeyDistribution,
    DEFAULT_PARTITION_CHECK_INTERVAL, DEFAULT_TIMESTAMP_STEP,
};
pub use job::{
    container_of, CheckpointSpec, JobSpec, RestoreSpec, StateSpec, TaskSpec, WasmTaskSpec,
    BUILTIN_TASKS, DEFAULT_CACHE_SIZE, DEFAULT_CHECKPOINTS_RETAINED, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_CHECKPOINT_STORE, DEFAULT_CHECKPOINT_TIMEOUT, DEFAULT_MAX_INTERVAL,
    DEFAULT_MIN_INTERVAL, DEFAULT_STATE_DIR, DEFAULT_WASM_MAX_CALL_TIME, DEFAULT_WASM_MAX_MEMORY,
    WASM_TASK_NAME,
};
pub use kafka::{
    KafkaProtocol, KafkaSecurity, SaslMechanism, SaslSpec, KAFKA_CLIENT_PROPERTIES,
    KAFKA_CONSUMER_PROPERTIES, KAFKA_PRODUCER_PROPERTIES, RESERVED_KAFKA_PROPERTIES,
};
pub use output::{KafkaDelivery, KafkaOutput, OutputSpec, DEFAULT_KAFKA_SPOOL_DIR};
pub use parse::MAX_SPEC_LEN;
pub use store::{ObjectService, StoreUrl, CLUSTER_PATTERN};
pub use time::{EventTimeSpec, MAX_TIMESTAMP_FIELD_LEN};
pub use units::{format_duration, format_size, parse_duration, parse_size, UnitError};
pub use validate::{
    MAX_CACHE_SIZE, MAX_CHECKPOINTS_RETAINED, MAX_GENERATOR_KEYS, MAX_NAME_LEN, MAX_PARTITIONS,
    MAX_RATE_PER_SECOND, MAX_RECORDS_PER_PARTITION, MIN_CACHE_SIZE, MIN_CHECKPOINT_INTERVAL,
};

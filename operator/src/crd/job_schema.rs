//! OpenAPI schema of `spec.job`, written out by hand.
//!
//! The job types live in the contract crate, which has no schema dependency and uses tagged
//! unions (`input.type`) that derive into `oneOf` schemas Kubernetes cannot use (structural
//! schemas need every property declared once). So the section is described here, field for field,
//! with the CEL rules that let the API server reject a bad job with a message naming the field.
//! A test (`job_schema_covers_every_spec_field`) fails when the contract crate grows a field this
//! schema does not declare.

use schemars::{json_schema, Schema, SchemaGenerator};

/// Duration syntax accepted by the CRD: components such as `250ms`, `10s`, `5m`, `1h`, `1m30s`
/// (units h, m, s, ms, us, ns; spaces between them allowed), or whole milliseconds. The spec
/// crate reads all of these (and a little more: `µs`, tabs).
pub const DURATION_PATTERN: &str = r"^ *([0-9]+ *(h|m|s|ms|us|ns) *)+$|^ *[0-9]+ *$";

/// A whole number of milliseconds (the contract crate's bare-number form).
const BARE_MILLIS_PATTERN: &str = r"^ *[0-9]+ *$";

/// Matches a duration with one component that alone is longer than
/// [`cairn_contract::units::MAX_DURATION`]: more significant digits than the maximum has in that
/// unit (`10000h`, `1000000m`, ...).
///
/// The bound rule checks this before it calls CEL's `duration()`, for two reasons: the message
/// then says "too long" instead of an evaluation error, and what reaches `duration()` is small
/// (every component under 28000h, at most 64 characters, so under 200000h in all), far from the
/// ~2.5 million hours at which Go's duration parser overflows.
pub fn duration_too_long_pattern() -> String {
    let max = cairn_contract::units::MAX_DURATION.as_nanos();
    cairn_contract::units::DURATION_UNITS
        .iter()
        .map(|(unit, nanos)| {
            let digits = (max / nanos).to_string().len();
            // After minutes comes a space, a digit or the end; never the `s` of `ms`.
            let after = if *unit == "m" { "( |[0-9]|$)" } else { "" };
            format!("[1-9][0-9]{{{digits},}} *{unit}{after}")
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The CEL rule bounding a duration string to [`cairn_contract::units::MAX_DURATION`] (8760h), as
/// `cairn_contract::parse_duration` does. It passes strings that do not match [`DURATION_PATTERN`]
/// (the syntax rule reports those). Whole milliseconds are compared as an integer (at most 11
/// significant digits first, so `int()` cannot overflow); components are checked against
/// [`duration_too_long_pattern`], then summed by CEL's `duration()` (which needs no spaces).
pub fn duration_bound_rule() -> String {
    let max = cairn_contract::units::MAX_DURATION;
    let max_millis = max.as_millis();
    let millis_digits = max_millis.to_string().len();
    format!(
        "!self.matches('{pattern}') || (self.matches('{bare}') ? (self.matches('^ *0*[0-9]{{1,{millis_digits}}} *$') && int(self.replace(' ', '')) <= {max_millis}) : (!self.matches('{too_long}') && duration(self.replace(' ', '')) <= duration('{max_text}')))",
        pattern = DURATION_PATTERN,
        bare = BARE_MILLIS_PATTERN,
        too_long = duration_too_long_pattern(),
        max_text = cairn_contract::format_duration(max),
    )
}

/// Store URLs usable on Kubernetes: the contract's pattern, tested there against the store URL
/// grammar the workers parse.
pub const STORE_PATTERN: &str = cairn_contract::CLUSTER_PATTERN;

/// A string with a maximum length (CEL cost estimation needs one on every string a rule reads).
fn string(max: u32, description: &str) -> serde_json::Value {
    serde_json::json!({"type": "string", "maxLength": max, "description": description})
}

/// A duration string, checked by CEL so the message names the field: its syntax, and the same
/// upper bound as the contract crate ([`cairn_contract::units::MAX_DURATION`], 8760h), so that an
/// absurd value is refused by the API server and never reaches interval or timeout arithmetic.
pub fn duration(field: &str, description: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "string",
        "maxLength": 64,
        "description": description,
        "x-kubernetes-validations": [
            {
                "rule": format!("self.matches('{DURATION_PATTERN}')"),
                "message": format!("{field} must be a duration such as 250ms, 10s, 5m, 1h or 1m30s"),
            },
            {
                "rule": duration_bound_rule(),
                "message": format!(
                    "{field} must be at most {} (one year)",
                    cairn_contract::format_duration(cairn_contract::units::MAX_DURATION)
                ),
            },
        ],
    })
}

/// A store or savepoint URL usable on Kubernetes ([`STORE_PATTERN`]), checked by CEL so the
/// message names the field.
pub fn store_url(max: u32, description: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "string",
        "maxLength": max,
        "description": description,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{STORE_PATTERN}')"),
            "message": message,
        }],
    })
}

/// The schema of `spec.job`.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "The job spec: the same document `cairn-worker run job.yaml` runs locally (docs/job-spec.md).",
        "required": ["input", "task"],
        "properties": {
            "name": {
                "type": "string",
                "maxLength": 63,
                "description": "Job name; defaults to the StreamJob's name and must equal it when set.",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.job.name is immutable"}]
            },
            "input": input(),
            "task": {
                "type": "object",
                "properties": {
                    "name": string(253, "A built-in task (count, sum, dedupe, filter, passthrough, window) or a custom task of the worker image; for a WebAssembly task, optional (`wasm`): the name its savepoints record."),
                    "config": {
                        "type": "object",
                        "description": "Task settings, handed to the task as they are.",
                        "x-kubernetes-preserve-unknown-fields": true
                    },
                    "wasm": {
                        "type": "object",
                        "description": "A task compiled to a WebAssembly component of the world cairn:task/task (docs/wasm-tasks.md), run by the stock worker image.",
                        "required": ["module"],
                        "properties": {
                            "module": string(1024, "The component: a path in the worker pod (a mounted ConfigMap or volume, see podTemplate) or a store URL (s3://bucket/key), read with the job's store credentials."),
                            "config": {
                                "type": "object",
                                "description": "Settings handed to the component as JSON (host.config()).",
                                "x-kubernetes-preserve-unknown-fields": true
                            },
                            "maxMemory": {
                                "x-kubernetes-int-or-string": true,
                                "description": "Largest linear memory of one task instance: bytes, or a size such as 256MiB (the default); 1MiB to 4GiB."
                            },
                            "maxCallTime": duration("spec.job.task.wasm.maxCallTime", "Longest one call into the component may run (default 10s); a longer one stops the task, which restarts from its last checkpoint.")
                        }
                    }
                },
                "x-kubernetes-validations": [{
                    "rule": "has(self.name) || has(self.wasm)",
                    "message": "spec.job.task needs a name (a built-in or custom task) or wasm (a WebAssembly component)"
                }]
            },
            "output": output(),
            "parallelism": {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "description": "Worker pods (P) the partitions are spread over; 1 <= P <= input.partitions."
            },
            "standby": {
                "type": "boolean",
                "description": "Warm standbys: a second pod for each container 1..P-1 follows every committed checkpoint and takes the container over at once when its pod fails (docs/operator.md#warm-standbys). Needs parallelism >= 2."
            },
            "checkpoint": {
                "type": "object",
                "properties": {
                    "interval": duration("spec.job.checkpoint.interval", "Time between checkpoints (default 60s); with targetRecoveryTime, the first interval only."),
                    "store": store_url(
                        1024,
                        "Durable store: s3://bucket/prefix, or file:///path on a volume every worker pod mounts.",
                        "spec.job.checkpoint.store must be s3://bucket[/prefix] or file:///absolute/path on a volume shared by every worker pod (memory:// and relative paths are for local mode)",
                    ),
                    "retained": {"type": "integer", "minimum": 1, "maximum": crate::validate::MAX_RETAINED, "description": "Completed checkpoints kept (default 3)."},
                    "timeout": duration("spec.job.checkpoint.timeout", "How long one checkpoint may take (default 10m)."),
                    "targetRecoveryTime": duration("spec.job.checkpoint.targetRecoveryTime", "Recovery-time objective: after a failure the job is back where it was within this time; the coordinator adapts the interval between minInterval and maxInterval (docs/recovery.md). Absent: a fixed interval."),
                    "minInterval": duration("spec.job.checkpoint.minInterval", "Shortest interval the objective may choose (default 1s); only with targetRecoveryTime."),
                    "maxInterval": duration("spec.job.checkpoint.maxInterval", "Longest interval the objective may choose (default 10m); only with targetRecoveryTime.")
                }
            },
            "eventTime": {
                "type": "object",
                "description": "Event time: record timestamps and watermarks (docs/windows.md).",
                "properties": {
                    "timestampField": string(256, "Top-level field of a JSON record value holding its timestamp in ms (default: the input's own timestamp; required for file input)."),
                    "maxOutOfOrderness": duration("spec.job.eventTime.maxOutOfOrderness", "How far behind the highest timestamp seen a record may arrive without being late (default 0)."),
                    "idleTimeout": duration("spec.job.eventTime.idleTimeout", "After this long without records a partition's watermark follows the clock (default: never).")
                }
            },
            "state": {
                "type": "object",
                "description": "Local state settings; the directory is the pod's state volume, set by the operator.",
                "properties": {
                    "cacheSize": {
                        "x-kubernetes-int-or-string": true,
                        "description": "Write-back cache per task: bytes, or a size such as 64MiB."
                    }
                }
            }
        },
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.parallelism) || self.parallelism <= self.input.partitions",
                "message": "spec.job.parallelism must be <= spec.job.input.partitions: each worker pod needs at least one partition",
                "fieldPath": ".parallelism"
            },
            {
                "rule": "!has(self.standby) || !self.standby || (has(self.parallelism) && self.parallelism >= 2)",
                "message": "spec.job.standby needs spec.job.parallelism >= 2: standbys cover containers 1..P-1 (container 0 runs in the coordinator's process, which has none); raise parallelism or remove standby",
                "fieldPath": ".standby"
            },
            {
                "rule": "has(self.checkpoint) && has(self.checkpoint.store)",
                "message": "spec.job.checkpoint.store is required on Kubernetes: s3://bucket/prefix, or file:///path on a volume every worker pod mounts",
                "fieldPath": ".checkpoint"
            }
        ]
    })
}

fn input() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["type", "partitions"],
        "description": "Where records come from and how many partitions (N) they have.",
        "properties": {
            "type": {"type": "string", "enum": ["generator", "file", "kafka"], "description": "Input type."},
            "partitions": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Partitions (N): one task each."},
            "seed": {"type": "integer", "minimum": 0, "description": "generator: seed."},
            "keys": {"type": "integer", "minimum": 1, "description": "generator: key cardinality."},
            "distribution": {"type": "string", "enum": ["uniform", "zipf"], "description": "generator: key distribution."},
            "zipfExponent": {"type": "number", "description": "generator: zipf skew (> 0)."},
            "recordsPerPartition": {"type": "integer", "minimum": 0, "description": "generator: records per partition (endless when absent)."},
            "ratePerSecond": {"type": "integer", "minimum": 0, "description": "generator: records per second per partition (0: unthrottled)."},
            "timestampStep": duration("spec.job.input.timestampStep", "generator: event time between consecutive records of a partition (default 1ms)."),
            "timestampDisorder": duration("spec.job.input.timestampDisorder", "generator: largest amount a timestamp is moved back (default 0)."),
            "path": string(4096, "file: directory with partition-<i> files (on a mounted volume)."),
            "follow": {"type": "boolean", "description": "file: keep reading as the files grow."},
            "topic": string(249, "kafka: topic to read (its partition count must equal partitions)."),
            "brokers": string(4096, "kafka: bootstrap brokers, host:port comma-separated."),
            "partitionCheckInterval": duration("spec.job.input.partitionCheckInterval", "kafka: how often the topic's partition count is re-read (default 30s)."),
            "security": kafka_security("spec.job.input.security"),
            "properties": kafka_properties("consumer")
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.type != 'file' || has(self.path)",
                "message": "spec.job.input.path is required when spec.job.input.type is file",
                "fieldPath": ".path"
            },
            {
                "rule": "self.type == 'file' || !has(self.path)",
                "message": "spec.job.input.path only applies to type: file",
                "fieldPath": ".path"
            },
            {
                "rule": "self.type != 'kafka' || (has(self.topic) && has(self.brokers))",
                "message": "spec.job.input.topic and spec.job.input.brokers are required when spec.job.input.type is kafka",
                "fieldPath": ".topic"
            }
        ]
    })
}

fn output() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["type"],
        "description": "Where output records go (default: discarded).",
        "properties": {
            "type": {"type": "string", "enum": ["stdout", "null", "file", "kafka"], "description": "Output type."},
            "path": string(4096, "file: output directory (on a mounted volume)."),
            "topic": string(249, "kafka: topic to write (records partitioned by key)."),
            "brokers": string(4096, "kafka: bootstrap brokers, host:port comma-separated."),
            "delivery": {"type": "string", "enum": ["atLeastOnce", "exactlyOnce"], "description": "kafka: atLeastOnce (default) or exactlyOnce (one Kafka transaction per checkpoint, published after it commits)."},
            "transactionalId": string(200, "kafka exactlyOnce: prefix of the transactional ids; stable across upgrades and unique to the job."),
            "spoolDir": string(4096, "kafka exactlyOnce: where output waits for its checkpoint (default: on the state volume)."),
            "security": kafka_security("spec.job.output.security"),
            "properties": kafka_properties("producer")
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.type != 'file' || has(self.path)",
                "message": "spec.job.output.path is required when spec.job.output.type is file",
                "fieldPath": ".path"
            },
            {
                "rule": "self.type != 'kafka' || (has(self.topic) && has(self.brokers))",
                "message": "spec.job.output.topic and spec.job.output.brokers are required when spec.job.output.type is kafka",
                "fieldPath": ".topic"
            },
            {
                "rule": "!has(self.delivery) || self.delivery != 'exactlyOnce' || has(self.transactionalId)",
                "message": "spec.job.output.transactionalId is required by delivery exactlyOnce: a prefix unique to this job that stays the same across upgrades",
                "fieldPath": ".transactionalId"
            }
        ]
    })
}

/// TLS and SASL settings of a Kafka client. Files (CA, client certificate, key, password) come
/// from volumes mounted through `spec.podTemplate`; a password may also come from an env var
/// filled from a Secret.
fn kafka_security(field: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "description": "kafka: TLS and SASL settings (files from volumes mounted with spec.podTemplate).",
        "properties": {
            "protocol": {"type": "string", "enum": ["plaintext", "ssl", "saslPlaintext", "saslSsl"], "description": "Transport and authentication (default plaintext)."},
            "caFile": string(4096, "PEM CA certificates of the brokers (default: system trust store)."),
            "certFile": string(4096, "PEM client certificate (mutual TLS, with keyFile)."),
            "keyFile": string(4096, "PEM private key of certFile."),
            "sasl": {
                "type": "object",
                "required": ["mechanism", "username"],
                "description": "SASL credentials (saslPlaintext, saslSsl).",
                "properties": {
                    "mechanism": {"type": "string", "enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], "description": "SASL mechanism."},
                    "username": string(1024, "User name."),
                    "passwordFile": string(4096, "File holding the password (a mounted Secret)."),
                    "passwordEnv": string(256, "Environment variable holding the password (spec.podTemplate.env from a Secret).")
                },
                "x-kubernetes-validations": [{
                    "rule": "has(self.passwordFile) != has(self.passwordEnv)",
                    "message": format!("{field}.sasl: set exactly one of passwordFile and passwordEnv"),
                }]
            }
        }
    })
}

fn kafka_properties(client: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "description": format!("kafka: extra librdkafka {client} properties; the ones Cairn sets itself are refused."),
        "additionalProperties": {"type": "string"}
    })
}

/// An arbitrary object kept as it is (deployed specs recorded in status).
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

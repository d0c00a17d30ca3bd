//! Checks a parsed spec for values that are well-typed but unusable, and says how to fix each.
//!
//! Every rule runs and every problem is reported, so a user fixes a spec in one edit instead of
//! one error per run.

use std::time::Duration;

use crate::error::{FieldError, SpecError};
use crate::input::InputSpec;
use crate::job::JobSpec;
use crate::kafka;
use crate::output::{KafkaDelivery, OutputSpec};
use crate::store::StoreUrl;
use crate::time::{EventTimeSpec, MAX_TIMESTAMP_FIELD_LEN};
use crate::units::{format_duration, format_size, MAX_DURATION};

/// Most input partitions one job may have.
pub const MAX_PARTITIONS: u32 = 4096;
/// Longest job name: a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;
/// Shortest checkpoint interval; anything shorter spends the job's time checkpointing.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);
/// Smallest per-task write-back cache.
pub const MIN_CACHE_SIZE: u64 = 1 << 20;
/// Largest per-task write-back cache (1 TiB): far above any machine's memory, so the cache
/// arithmetic (and the process-wide block cache of the same size) is far from overflow.
pub const MAX_CACHE_SIZE: u64 = 1 << 40;
/// Smallest `task.wasm.maxMemory`.
pub const MIN_WASM_MEMORY: u64 = 1 << 20;
/// Largest `task.wasm.maxMemory`: all a 32-bit component can address.
pub const MAX_WASM_MEMORY: u64 = 4 << 30;
/// Most distinct keys of a generator input: the worker builds a table of every key id (8 bytes
/// each, 800 MB at this maximum) before the first record.
pub const MAX_GENERATOR_KEYS: u64 = 100_000_000;
/// Most records per partition of a finite generator input (10^15): keeps the record index
/// `j·N + p` of every record within 64 bits for any N up to [`MAX_PARTITIONS`].
pub const MAX_RECORDS_PER_PARTITION: u64 = 1_000_000_000_000_000;
/// Highest generator rate, records per second per partition (10^9).
pub const MAX_RATE_PER_SECOND: u64 = 1_000_000_000;
/// Most committed checkpoints kept. Every commit reads the manifests of the retained
/// checkpoints to decide what may be deleted; keep older states as savepoints instead.
pub const MAX_CHECKPOINTS_RETAINED: u32 = 10_000;

impl JobSpec {
    /// Checks every rule and returns all problems found as [`SpecError::Invalid`].
    ///
    /// Parsing ([`JobSpec::from_yaml_str`] and friends) already calls this; call it again after
    /// changing a spec in code.
    pub fn validate(&self) -> Result<(), SpecError> {
        let errors = self.problems();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(errors))
        }
    }

    /// Every rule violation, in document order.
    fn problems(&self) -> Vec<FieldError> {
        let mut errors = Problems::default();

        if let Some(problem) = dns_label_problem(&self.name) {
            errors.push(FieldError::new(
                "name",
                problem,
                "use a DNS-1123 label: 1 to 63 lowercase letters, digits or '-', starting and \
                 ending with a letter or digit, e.g. `wordcount`",
            ));
        }

        let partitions = self.input.partitions();
        let partitions_ok = (1..=MAX_PARTITIONS).contains(&partitions);
        errors.check(
            partitions_ok,
            "input.partitions",
            || format!("{partitions} is not between 1 and {MAX_PARTITIONS}"),
            "set how many partitions the input is split into, e.g. `partitions: 4`",
        );
        match &self.input {
            InputSpec::Generator(generator) => {
                let keys = generator.keys;
                errors.check(
                    keys >= 1,
                    "input.keys",
                    || "0 keys leaves nothing to generate".to_owned(),
                    "set `keys` to 1 or more (default 1000)",
                );
                errors.check(
                    keys <= MAX_GENERATOR_KEYS,
                    "input.keys",
                    || format!("{keys} is more than the maximum of {MAX_GENERATOR_KEYS}"),
                    "use fewer distinct keys (the generator keeps a table of every key), e.g. \
                     `keys: 1000000`",
                );
                let exponent = generator.zipf_exponent;
                errors.check(
                    exponent.is_finite() && exponent > 0.0,
                    "input.zipfExponent",
                    || format!("{exponent} is not a finite number greater than 0"),
                    "use e.g. `zipfExponent: 1.1` (higher means more skew; default 1.0)",
                );
                if let Some(records) = generator.records_per_partition {
                    errors.check(
                        records <= MAX_RECORDS_PER_PARTITION,
                        "input.recordsPerPartition",
                        || {
                            format!(
                                "{records} is more than the maximum of \
                                 {MAX_RECORDS_PER_PARTITION}"
                            )
                        },
                        "write fewer records, or leave `recordsPerPartition` out for an endless \
                         input",
                    );
                }
                errors.check(
                    generator.timestamp_step >= Duration::from_micros(1),
                    "input.timestampStep",
                    || "0s would give every record the same timestamp".to_owned(),
                    "set the event time between consecutive records, e.g. `timestampStep: 1ms` \
                     (the default)",
                );
                errors.at_most_a_year("input.timestampStep", generator.timestamp_step);
                errors.at_most_a_year("input.timestampDisorder", generator.timestamp_disorder);
                if let Some(rate) = generator.rate_per_second {
                    errors.check(
                        rate <= MAX_RATE_PER_SECOND,
                        "input.ratePerSecond",
                        || format!("{rate} is more than the maximum of {MAX_RATE_PER_SECOND}"),
                        "write a lower rate, or leave `ratePerSecond` out to run as fast as \
                         possible",
                    );
                }
            }
            InputSpec::File(file) => errors.check(
                !file.path.as_os_str().is_empty(),
                "input.path",
                || "is empty".to_owned(),
                "set the directory holding partition-0, partition-1, ..., e.g. `path: ./input`",
            ),
            InputSpec::Kafka(input) => {
                for err in kafka::problems(
                    "input",
                    &input.topic,
                    &input.brokers,
                    &input.security,
                    &input.properties,
                ) {
                    errors.push(err);
                }
                let interval = input.partition_check_interval;
                errors.check(
                    interval >= Duration::from_secs(1),
                    "input.partitionCheckInterval",
                    || format!("{} is shorter than 1s", format_duration(interval)),
                    "check the topic's partition count less often, e.g. \
                     `partitionCheckInterval: 30s` (the default)",
                );
                errors.at_most_a_year("input.partitionCheckInterval", interval);
            }
        }

        errors.check(
            self.task.name.trim() != "",
            "task.name",
            || "is empty".to_owned(),
            "name a built-in task (count, sum, dedupe, filter, passthrough, window) or a \
             registered custom task",
        );
        if let Some(wasm) = &self.task.wasm {
            errors.check(
                !wasm.module.trim().is_empty(),
                "task.wasm.module",
                || "is empty".to_owned(),
                "give the component's path or store URL, e.g. `module: tasks/count.wasm`",
            );
            errors.check(
                self.task.config.is_empty(),
                "task.config",
                || "is set next to task.wasm".to_owned(),
                "a WebAssembly task reads its settings from `task.wasm.config`: move them there",
            );
            errors.check(
                (MIN_WASM_MEMORY..=MAX_WASM_MEMORY).contains(&wasm.max_memory),
                "task.wasm.maxMemory",
                || format!("{} is outside 1MiB..4GiB", format_size(wasm.max_memory)),
                "a 32-bit component addresses at most 4GiB; e.g. `maxMemory: 256MiB` (the default)",
            );
            errors.check(
                wasm.max_call_time >= Duration::from_millis(10),
                "task.wasm.maxCallTime",
                || {
                    format!(
                        "{} is shorter than 10ms",
                        format_duration(wasm.max_call_time)
                    )
                },
                "the limit is checked every 10ms; e.g. `maxCallTime: 10s` (the default)",
            );
            errors.at_most_a_year("task.wasm.maxCallTime", wasm.max_call_time);
        }

        if let OutputSpec::File { path } = &self.output {
            errors.check(
                !path.as_os_str().is_empty(),
                "output.path",
                || "is empty".to_owned(),
                "set the output directory, e.g. `path: ./out`",
            );
        }
        if let OutputSpec::Kafka(output) = &self.output {
            for err in kafka::problems(
                "output",
                &output.topic,
                &output.brokers,
                &output.security,
                &output.properties,
            ) {
                errors.push(err);
            }
            match (output.delivery, &output.transactional_id) {
                (KafkaDelivery::ExactlyOnce, None) => errors.push(FieldError::new(
                    "output.transactionalId",
                    "is required by `delivery: exactlyOnce`",
                    format!(
                        "set a prefix that is unique to this job and never changes, e.g. \
                         `transactionalId: {}`",
                        self.name
                    ),
                )),
                (KafkaDelivery::AtLeastOnce, Some(_)) => errors.push(FieldError::new(
                    "output.transactionalId",
                    "is only used by `delivery: exactlyOnce`",
                    "remove it, or set `delivery: exactlyOnce`",
                )),
                (_, Some(id)) => {
                    if let Some(problem) = transactional_id_problem(id) {
                        errors.push(FieldError::new(
                            "output.transactionalId",
                            problem,
                            "use 1 to 200 ASCII letters, digits, '.', '_' or '-' (but not \
                             `.` or `..`), e.g. the job name",
                        ));
                    }
                }
                (KafkaDelivery::AtLeastOnce, None) => {}
            }
            errors.check(
                !output.spool_dir.as_os_str().is_empty(),
                "output.spoolDir",
                || "is empty".to_owned(),
                "set a local directory on persistent storage, e.g. `spoolDir: \
                 ./.cairn/kafka-spool` (the default)",
            );
        }

        let parallelism = self.parallelism;
        errors.check(
            parallelism >= 1,
            "parallelism",
            || "0 containers cannot run the job".to_owned(),
            "run at least 1 container (the default)",
        );
        errors.check(
            partitions_ok || parallelism <= MAX_PARTITIONS,
            "parallelism",
            || format!("{parallelism} is more than the maximum of {MAX_PARTITIONS}"),
            "run at most one container per input partition",
        );
        errors.check(
            !partitions_ok || parallelism <= partitions,
            "parallelism",
            || format!("{parallelism} is more than input.partitions ({partitions})"),
            "each container runs at least one task, so lower parallelism or raise \
             input.partitions",
        );

        errors.check(
            !self.standby || parallelism >= 2,
            "standby",
            || format!("needs parallelism 2 or more, not {parallelism}"),
            "standbys cover containers 1..P, which run in processes of their own; container 0 \
             runs in the coordinator's process, which has no standby yet, so raise parallelism \
             or remove `standby`",
        );

        let checkpoint = &self.checkpoint;
        errors.check(
            checkpoint.interval >= MIN_CHECKPOINT_INTERVAL,
            "checkpoint.interval",
            || {
                format!(
                    "{} is shorter than the {} minimum",
                    format_duration(checkpoint.interval),
                    format_duration(MIN_CHECKPOINT_INTERVAL)
                )
            },
            "checkpoint less often, e.g. `interval: 10s` (default 1m)",
        );
        errors.at_most_a_year("checkpoint.interval", checkpoint.interval);
        if let Err(err) = StoreUrl::parse_spec(&checkpoint.store) {
            errors.push(err);
        }
        if let Some(savepoint) = &self.restore.savepoint {
            if let Err(mut err) = StoreUrl::parse_spec(savepoint) {
                err.field = "restore.savepoint".to_owned();
                errors.push(err);
            }
        }
        errors.check(
            checkpoint.retained >= 1,
            "checkpoint.retained",
            || "0 would keep no checkpoint to restore from".to_owned(),
            "keep at least 1 (default 3)",
        );
        errors.check(
            checkpoint.retained <= MAX_CHECKPOINTS_RETAINED,
            "checkpoint.retained",
            || {
                format!(
                    "{} is more than the maximum of {MAX_CHECKPOINTS_RETAINED}",
                    checkpoint.retained
                )
            },
            "keep fewer (default 3), and keep older states as savepoints (docs/savepoints.md)",
        );
        errors.check(
            !checkpoint.timeout.is_zero(),
            "checkpoint.timeout",
            || "0s would abandon every checkpoint".to_owned(),
            "allow checkpoints time to finish, e.g. `timeout: 10m` (the default)",
        );
        errors.at_most_a_year("checkpoint.timeout", checkpoint.timeout);
        recovery_objective_problems(checkpoint, &mut errors);

        if let Some(event_time) = &self.event_time {
            self.event_time_problems(event_time, &mut errors);
        }
        errors.check(
            self.task.name != "window" || self.event_time.is_some(),
            "eventTime",
            || "is required by the `window` task, which groups records by their timestamps".to_owned(),
            "add an `eventTime:` section, e.g. `eventTime: {maxOutOfOrderness: 5s}` (docs/windows.md)",
        );

        errors.check(
            !self.state.dir.as_os_str().is_empty(),
            "state.dir",
            || "is empty".to_owned(),
            "set a directory for local state, e.g. `dir: ./.cairn/state` (the default)",
        );
        errors.check(
            self.state.cache_size >= MIN_CACHE_SIZE,
            "state.cacheSize",
            || {
                format!(
                    "{} is below the {} minimum",
                    format_size(self.state.cache_size),
                    format_size(MIN_CACHE_SIZE)
                )
            },
            "give each task at least 1MiB of cache, e.g. `cacheSize: 64MiB` (the default)",
        );
        errors.check(
            self.state.cache_size <= MAX_CACHE_SIZE,
            "state.cacheSize",
            || {
                format!(
                    "{} is more than the maximum of {}",
                    format_size(self.state.cache_size),
                    format_size(MAX_CACHE_SIZE)
                )
            },
            "give each task a cache that fits in memory, e.g. `cacheSize: 64MiB` (the default)",
        );
        errors.0
    }
}

impl JobSpec {
    fn event_time_problems(&self, event_time: &EventTimeSpec, errors: &mut Problems) {
        match &event_time.timestamp_field {
            Some(field) => errors.check(
                !field.is_empty() && field.len() <= MAX_TIMESTAMP_FIELD_LEN,
                "eventTime.timestampField",
                || format!("has {} characters", field.len()),
                "name the top-level field of the JSON record value that holds the timestamp \
                 in milliseconds, 1 to 256 characters, e.g. `timestampField: ts`",
            ),
            None => errors.check(
                !matches!(self.input, InputSpec::File(_)),
                "eventTime.timestampField",
                || "is required with file input: a line carries no timestamp of its own".to_owned(),
                "write each line's value as a JSON object with the timestamp (milliseconds since \
                 the epoch) in a field, and name it, e.g. `timestampField: ts`",
            ),
        }
        errors.at_most_a_year(
            "eventTime.maxOutOfOrderness",
            event_time.max_out_of_orderness,
        );
        if let Some(idle) = event_time.idle_timeout {
            errors.check(
                idle >= Duration::from_millis(1),
                "eventTime.idleTimeout",
                || "0s would move every watermark with the clock".to_owned(),
                "set how long a partition may be quiet before its watermark follows the clock, \
                 e.g. `idleTimeout: 30s`, or leave it out",
            );
            errors.at_most_a_year("eventTime.idleTimeout", idle);
        }
    }
}

/// Collects rule violations; `check` builds the message only when the rule fails.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn check(&mut self, ok: bool, field: &str, problem: impl FnOnce() -> String, fix: &str) {
        if !ok {
            self.0.push(FieldError::new(field, problem(), fix));
        }
    }

    fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Durations read from text are bounded by [`crate::units::parse_duration`]; this catches
    /// the ones set in code, so a validated spec never holds a duration over [`MAX_DURATION`].
    fn at_most_a_year(&mut self, field: &str, duration: Duration) {
        self.check(
            duration <= MAX_DURATION,
            field,
            || {
                format!(
                    "{} is longer than the maximum of {} (one year)",
                    format_duration(duration),
                    format_duration(MAX_DURATION)
                )
            },
            "write a shorter duration",
        );
    }
}

/// Why `id` is not a usable transactional id prefix, or `None`. Kafka itself takes any
/// string; Cairn also names the exactly-once spool directory after it, so it keeps to the
/// topic alphabet, and `.` and `..` (which would name the spool directory itself or its
/// parent) are refused as they are for topics.
fn transactional_id_problem(id: &str) -> Option<String> {
    crate::kafka::name_problem(id, 200, "not allowed", "a transactional id")
}

/// Why `name` is not a DNS-1123 label, or `None` if it is one.
fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    let bad: String = name
        .chars()
        .filter(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        .collect();
    if !bad.is_empty() {
        return Some(format!(
            "{name:?} contains characters not allowed in a DNS label: {bad:?}"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "{name:?} is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!("{name:?} starts or ends with '-'"));
    }
    None
}

/// Shortest `checkpoint.targetRecoveryTime`: a restart alone takes about this long.
pub const MIN_TARGET_RECOVERY_TIME: Duration = Duration::from_secs(1);

/// `checkpoint.targetRecoveryTime` and its bounds (docs/recovery.md).
fn recovery_objective_problems(checkpoint: &crate::CheckpointSpec, errors: &mut Problems) {
    let Some(target) = checkpoint.target_recovery_time else {
        for (field, value) in [
            ("checkpoint.minInterval", checkpoint.min_interval),
            ("checkpoint.maxInterval", checkpoint.max_interval),
        ] {
            errors.check(
                value.is_none(),
                field,
                || "set without checkpoint.targetRecoveryTime, which it bounds".to_owned(),
                "set `targetRecoveryTime` (e.g. `30s`) for an adaptive interval, or remove it and \
                 set a fixed `interval`",
            );
        }
        return;
    };
    errors.check(
        target >= MIN_TARGET_RECOVERY_TIME,
        "checkpoint.targetRecoveryTime",
        || {
            format!(
                "{} is shorter than the {} minimum (a restart alone takes about that long)",
                format_duration(target),
                format_duration(MIN_TARGET_RECOVERY_TIME)
            )
        },
        "set a longer objective, e.g. `targetRecoveryTime: 30s`",
    );
    errors.at_most_a_year("checkpoint.targetRecoveryTime", target);
    let (min, max) = checkpoint.interval_bounds();
    errors.check(
        min >= MIN_CHECKPOINT_INTERVAL,
        "checkpoint.minInterval",
        || {
            format!(
                "{} is shorter than the {} minimum",
                format_duration(min),
                format_duration(MIN_CHECKPOINT_INTERVAL)
            )
        },
        "checkpoint less often, e.g. `minInterval: 1s` (the default)",
    );
    errors.at_most_a_year("checkpoint.maxInterval", max);
    errors.check(
        min <= max,
        "checkpoint.maxInterval",
        || {
            format!(
                "{} is shorter than checkpoint.minInterval ({})",
                format_duration(max),
                format_duration(min)
            )
        },
        "make maxInterval at least minInterval (defaults 1s and 10m)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_keep_to_the_topic_alphabet() {
        assert_eq!(transactional_id_problem("clicks-v2.a_b"), None);
        assert_eq!(transactional_id_problem(""), Some("is empty".to_owned()));
        assert_eq!(
            transactional_id_problem("a/b c"),
            Some("\"a/b c\" contains characters not allowed: \"/ \"".to_owned())
        );
        assert_eq!(transactional_id_problem(&"x".repeat(200)), None);
        assert_eq!(
            transactional_id_problem(".."),
            Some("\"..\" is not allowed as a transactional id".to_owned())
        );
        assert!(transactional_id_problem(".").is_some());
        assert_eq!(transactional_id_problem("..a"), None);
        assert_eq!(
            transactional_id_problem(&"x".repeat(201)),
            Some(format!(
                "{:?} is 201 characters long, more than 200",
                "x".repeat(201)
            ))
        );
    }
}

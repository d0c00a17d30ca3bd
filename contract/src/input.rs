//! The `input:` section: where records come from and how many partitions they are split into.
//!
//! `input` is a tagged union on its `type:` key. Serde's built-in internally tagged enums buffer
//! the whole map before picking a variant, which loses both the field path (an unknown key would
//! be reported at `input`, not `input.partitons`) and the YAML line. So [`InputSpec`] reads the
//! map itself, key by key, and every error keeps its path and position.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::kafka::KafkaSecurity;
use crate::tagged::{expected_list, set_once, union_of};

/// Default `input.partitionCheckInterval` of a Kafka input.
pub const DEFAULT_PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Where a job's records come from; selected by `type:` (`generator`, `file` or `kafka`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InputSpec {
    /// Synthetic keyed records from a seeded pseudo-random generator (`type: generator`): for
    /// demos, benchmarks and deterministic recovery tests.
    Generator(GeneratorInput),
    /// Newline-delimited files, one per partition (`type: file`).
    File(FileInput),
    /// A Kafka topic, one task per topic partition (`type: kafka`).
    Kafka(KafkaInput),
}

impl InputSpec {
    /// Number of input partitions (N): the unit of parallelism, of keyed state and of checkpoint
    /// offsets, whatever the input type.
    pub fn partitions(&self) -> u32 {
        match self {
            InputSpec::Generator(g) => g.partitions,
            InputSpec::File(f) => f.partitions,
            InputSpec::Kafka(k) => k.partitions,
        }
    }

    /// The `type:` value of this input (`"generator"`, `"file"` or `"kafka"`), for messages
    /// and metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            InputSpec::Generator(_) => "generator",
            InputSpec::File(_) => "file",
            InputSpec::Kafka(_) => "kafka",
        }
    }
}

/// Parameters of `type: generator` input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorInput {
    /// Number of partitions, 1..=4096.
    pub partitions: u32,
    /// Seed of the generator, so a run (and its replay after a restore) is reproducible.
    #[serde(default)]
    pub seed: u64,
    /// Key cardinality: records use keys drawn from this many distinct values (>= 1).
    #[serde(default = "default_keys")]
    pub keys: u64,
    /// How keys are drawn.
    #[serde(default)]
    pub distribution: KeyDistribution,
    /// Skew of a `zipf` distribution (> 0; larger means a few keys get most records). Ignored
    /// for `uniform`.
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    /// Records to produce per partition before the input ends; `None` means endless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_partition: Option<u64>,
    /// Records per second per partition; `None` or `Some(0)` means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<u64>,
    /// Event time of record `j` of a partition: `j` times this (default 1ms, at least 1us;
    /// timestamps are whole milliseconds, rounded down), moved back by up to
    /// `timestampDisorder`. The records' own timestamps under `eventTime:`.
    #[serde(
        default = "default_timestamp_step",
        with = "crate::units::duration",
        skip_serializing_if = "is_default_timestamp_step"
    )]
    pub timestamp_step: Duration,
    /// Largest amount a generated timestamp is moved back, pseudo-randomly per record (default
    /// 0: timestamps in order); out-of-order input for event-time jobs.
    #[serde(
        default,
        with = "crate::units::duration",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub timestamp_disorder: Duration,
}

/// Default `timestampStep` of a generator.
pub const DEFAULT_TIMESTAMP_STEP: Duration = Duration::from_millis(1);

fn default_timestamp_step() -> Duration {
    DEFAULT_TIMESTAMP_STEP
}

fn is_default_timestamp_step(step: &Duration) -> bool {
    *step == DEFAULT_TIMESTAMP_STEP
}

impl GeneratorInput {
    /// A generator with `partitions` partitions and every other setting at its default.
    pub fn new(partitions: u32) -> Self {
        GeneratorInput {
            partitions,
            seed: 0,
            keys: default_keys(),
            distribution: KeyDistribution::default(),
            zipf_exponent: default_zipf_exponent(),
            records_per_partition: None,
            rate_per_second: None,
            timestamp_step: DEFAULT_TIMESTAMP_STEP,
            timestamp_disorder: Duration::ZERO,
        }
    }

    /// The per-partition rate limit, or `None` when the generator should run unthrottled
    /// (`ratePerSecond` absent or 0), so callers need not treat 0 specially.
    pub fn rate_limit(&self) -> Option<NonZeroU64> {
        self.rate_per_second.and_then(NonZeroU64::new)
    }
}

/// Parameters of `type: file` input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileInput {
    /// Number of partitions, 1..=4096; partition `i` reads `<path>/partition-<i>`.
    pub partitions: u32,
    /// Directory holding one newline-delimited file per partition, relative to the working
    /// directory unless absolute.
    pub path: PathBuf,
    /// Keep reading as the files grow (`true`, the default), or stop at their end (`false`).
    #[serde(default = "default_follow")]
    pub follow: bool,
}

impl FileInput {
    /// The file that partition `partition` reads: `<path>/partition-<partition>`.
    pub fn partition_file(&self, partition: u32) -> PathBuf {
        self.path.join(format!("partition-{partition}"))
    }
}

/// Parameters of `type: kafka` input: the partitions of one topic, assigned explicitly to tasks
/// (partition `i` to task `i`, no consumer group), with offsets kept only in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaInput {
    /// Number of partitions (N); must equal the topic's partition count when the job starts.
    pub partitions: u32,
    /// The topic to read.
    pub topic: String,
    /// Bootstrap brokers, `host:port` comma-separated.
    pub brokers: String,
    /// How often a running job re-reads the topic's partition count, to report a topic that
    /// grew (metric `cairn_input_partitions_observed`, `observedPartitions` in the status).
    #[serde(
        default = "default_partition_check_interval",
        with = "crate::units::duration"
    )]
    pub partition_check_interval: Duration,
    /// TLS and SASL settings.
    #[serde(default, skip_serializing_if = "KafkaSecurity::is_default")]
    pub security: KafkaSecurity,
    /// Extra librdkafka consumer properties (e.g. `fetch.max.bytes`); the ones Cairn sets
    /// itself are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl KafkaInput {
    /// A Kafka input of `partitions` partitions of `topic` on `brokers`, other settings at
    /// their defaults.
    pub fn new(partitions: u32, topic: impl Into<String>, brokers: impl Into<String>) -> Self {
        KafkaInput {
            partitions,
            topic: topic.into(),
            brokers: brokers.into(),
            partition_check_interval: DEFAULT_PARTITION_CHECK_INTERVAL,
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

fn default_partition_check_interval() -> Duration {
    DEFAULT_PARTITION_CHECK_INTERVAL
}

/// A duration field read through [`crate::units`] (`30s`, `1m`, or milliseconds).
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        crate::units::duration::deserialize(de).map(DurationValue)
    }
}

/// How a generator draws keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    #[default]
    Uniform,
    /// Zipf-distributed (hot keys), skewed by `zipfExponent`.
    Zipf,
}

fn default_keys() -> u64 {
    1000
}

fn default_zipf_exponent() -> f64 {
    1.0
}

fn default_follow() -> bool {
    true
}

/// The `type:` values of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InputType {
    Generator,
    File,
    Kafka,
}

const INPUT_TYPES: [InputType; 3] = [InputType::Generator, InputType::File, InputType::Kafka];

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::Generator => "generator",
            InputType::File => "file",
            InputType::Kafka => "kafka",
        }
    }

    /// The keys an input of this type accepts, in the order the docs list them.
    fn fields(self) -> &'static [&'static str] {
        match self {
            InputType::Generator => GENERATOR_FIELDS,
            InputType::File => FILE_FIELDS,
            InputType::Kafka => KAFKA_FIELDS,
        }
    }
}

const GENERATOR_FIELDS: &[&str] = &[
    "type",
    "partitions",
    "seed",
    "keys",
    "distribution",
    "zipfExponent",
    "recordsPerPartition",
    "ratePerSecond",
    "timestampStep",
    "timestampDisorder",
];
const FILE_FIELDS: &[&str] = &["type", "partitions", "path", "follow"];
const KAFKA_FIELDS: &[&str] = &[
    "type",
    "partitions",
    "topic",
    "brokers",
    "partitionCheckInterval",
    "security",
    "properties",
];
/// Every key of every input type, in the order the types list them.
static ALL_FIELDS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| union_of(INPUT_TYPES.map(InputType::fields)));

/// Reads one key of the `input` map. Knowing the type already (it is usually written first), it
/// rejects keys of the other type right at the key, so the error points at it.
struct FieldSeed(Option<InputType>);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldSeed {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an input setting name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let Some(&known) = ALL_FIELDS.iter().find(|name| **name == key) else {
            let expected = self.0.map_or(&ALL_FIELDS[..], InputType::fields);
            return Err(E::unknown_field(key, expected));
        };
        match self.0 {
            Some(ty) if !ty.fields().contains(&known) => {
                Err(E::custom(wrong_type_message(key, ty)))
            }
            _ => Ok(known),
        }
    }
}

fn wrong_type_message(key: &str, ty: InputType) -> String {
    let owner = INPUT_TYPES
        .iter()
        .find(|t| t.fields().contains(&key))
        .map_or("another", |t| t.name());
    format!(
        "`{key}` is a setting of `type: {owner}` input, not of `type: {}`; expected one of {}",
        ty.name(),
        expected_list(ty.fields())
    )
}

impl<'de> Deserialize<'de> for InputSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an input map with `type: generator`, `type: file` or `type: kafka`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputSpec, A::Error> {
        let mut ty: Option<InputType> = None;
        let mut partitions: Option<u32> = None;
        let mut seed: Option<u64> = None;
        let mut keys: Option<u64> = None;
        let mut distribution: Option<KeyDistribution> = None;
        let mut zipf_exponent: Option<f64> = None;
        let mut records: Option<Option<u64>> = None;
        let mut rate: Option<Option<u64>> = None;
        let mut timestamp_step: Option<DurationValue> = None;
        let mut timestamp_disorder: Option<DurationValue> = None;
        let mut path: Option<PathBuf> = None;
        let mut follow: Option<bool> = None;
        let mut topic: Option<String> = None;
        let mut brokers: Option<String> = None;
        let mut check_interval: Option<DurationValue> = None;
        let mut security: Option<KafkaSecurity> = None;
        let mut properties: Option<BTreeMap<String, String>> = None;
        let mut seen: Vec<&'static str> = Vec::new();

        while let Some(key) = map.next_key_seed(FieldSeed(ty))? {
            seen.push(key);
            match key {
                "type" => set_once(&mut ty, key, &mut map)?,
                "partitions" => set_once(&mut partitions, key, &mut map)?,
                "seed" => set_once(&mut seed, key, &mut map)?,
                "keys" => set_once(&mut keys, key, &mut map)?,
                "distribution" => set_once(&mut distribution, key, &mut map)?,
                "zipfExponent" => set_once(&mut zipf_exponent, key, &mut map)?,
                "recordsPerPartition" => set_once(&mut records, key, &mut map)?,
                "ratePerSecond" => set_once(&mut rate, key, &mut map)?,
                "timestampStep" => set_once(&mut timestamp_step, key, &mut map)?,
                "timestampDisorder" => set_once(&mut timestamp_disorder, key, &mut map)?,
                "path" => set_once(&mut path, key, &mut map)?,
                "follow" => set_once(&mut follow, key, &mut map)?,
                "topic" => set_once(&mut topic, key, &mut map)?,
                "brokers" => set_once(&mut brokers, key, &mut map)?,
                "partitionCheckInterval" => set_once(&mut check_interval, key, &mut map)?,
                "security" => set_once(&mut security, key, &mut map)?,
                "properties" => set_once(&mut properties, key, &mut map)?,
                _ => unreachable!("FieldSeed only yields names from ALL_FIELDS"),
            }
        }

        let Some(ty) = ty else {
            return Err(de::Error::custom(
                "missing field `type`; write `type: generator`, `type: file` or `type: kafka`",
            ));
        };
        // Keys written before `type:` could not be checked against it yet.
        if let Some(key) = seen.iter().find(|key| !ty.fields().contains(key)) {
            return Err(de::Error::custom(wrong_type_message(key, ty)));
        }
        let partitions = partitions.ok_or_else(|| de::Error::missing_field("partitions"))?;
        Ok(match ty {
            InputType::Generator => InputSpec::Generator(GeneratorInput {
                partitions,
                seed: seed.unwrap_or(0),
                keys: keys.unwrap_or_else(default_keys),
                distribution: distribution.unwrap_or_default(),
                zipf_exponent: zipf_exponent.unwrap_or_else(default_zipf_exponent),
                records_per_partition: records.flatten(),
                rate_per_second: rate.flatten(),
                timestamp_step: timestamp_step.map_or(DEFAULT_TIMESTAMP_STEP, |d| d.0),
                timestamp_disorder: timestamp_disorder.map_or(Duration::ZERO, |d| d.0),
            }),
            InputType::File => InputSpec::File(FileInput {
                partitions,
                path: path.ok_or_else(|| de::Error::missing_field("path"))?,
                follow: follow.unwrap_or_else(default_follow),
            }),
            InputType::Kafka => InputSpec::Kafka(KafkaInput {
                partitions,
                topic: topic.ok_or_else(|| de::Error::missing_field("topic"))?,
                brokers: brokers.ok_or_else(|| de::Error::missing_field("brokers"))?,
                partition_check_interval: check_interval
                    .map_or_else(default_partition_check_interval, |d| d.0),
                security: security.unwrap_or_default(),
                properties: properties.unwrap_or_default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order of the union is the order of `expected one of ...` in unknown-key messages.
    #[test]
    fn every_key_is_listed_once_in_the_order_of_the_types() {
        assert_eq!(
            *ALL_FIELDS,
            [
                "type",
                "partitions",
                "seed",
                "keys",
                "distribution",
                "zipfExponent",
                "recordsPerPartition",
                "ratePerSecond",
                "timestampStep",
                "timestampDisorder",
                "path",
                "follow",
                "topic",
                "brokers",
                "partitionCheckInterval",
                "security",
                "properties",
            ]
        );
    }
}

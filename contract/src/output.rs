//! The `output:` section: where a task's output records go.
//!
//! Like `input`, it is tagged on `type:` and read by hand so errors keep their field path and
//! YAML position (see [`crate::input`]). The hand-written reader also accepts an unquoted
//! `type: null`, which YAML reads as a null rather than the string `"null"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::kafka::KafkaSecurity;
use crate::tagged::{expected_list, set_once, union_of};

/// Default `output.spoolDir` of an exactly-once Kafka output.
pub const DEFAULT_KAFKA_SPOOL_DIR: &str = "./.cairn/kafka-spool";

/// Where output records go; selected by `type:` (`stdout`, `null`, `file` or `kafka`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OutputSpec {
    /// One line per record on standard output (`type: stdout`): for trying a job locally.
    Stdout,
    /// Discard output (`type: null`, the default): for benchmarks and jobs whose result is their
    /// state.
    #[default]
    Null,
    /// Append records to files under a directory (`type: file`).
    File {
        /// Output directory, relative to the working directory unless absolute.
        path: PathBuf,
    },
    /// Produce records to a Kafka topic (`type: kafka`). Boxed: it is much larger than the
    /// other variants.
    Kafka(Box<KafkaOutput>),
}

/// Parameters of `type: kafka` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaOutput {
    /// The topic to write; records are partitioned by key with Kafka's default partitioner.
    pub topic: String,
    /// Bootstrap brokers, `host:port` comma-separated.
    pub brokers: String,
    /// `atLeastOnce` (default): produced at once, acknowledged before each checkpoint commits.
    /// `exactlyOnce`: published in one Kafka transaction per checkpoint, after it commits.
    #[serde(default)]
    pub delivery: KafkaDelivery,
    /// Prefix of the transactional ids (`<prefix>-task-NNNN`), required by `exactlyOnce`: it
    /// must stay the same across restarts and upgrades of the job and be unique to it, because
    /// a new process fences off the old one through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// Local directory where `exactlyOnce` output waits for its checkpoint to commit; put it on
    /// the same persistent volume as `state.dir`.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// TLS and SASL settings.
    #[serde(default, skip_serializing_if = "KafkaSecurity::is_default")]
    pub security: KafkaSecurity,
    /// Extra librdkafka producer properties (e.g. `compression.type: lz4`, `linger.ms: "20"`);
    /// the ones Cairn sets itself are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl KafkaOutput {
    /// An at-least-once Kafka output to `topic` on `brokers`, other settings at their defaults.
    pub fn new(topic: impl Into<String>, brokers: impl Into<String>) -> Self {
        KafkaOutput {
            topic: topic.into(),
            brokers: brokers.into(),
            delivery: KafkaDelivery::default(),
            transactional_id: None,
            spool_dir: default_spool_dir(),
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from(DEFAULT_KAFKA_SPOOL_DIR)
}

/// Delivery guarantee of a Kafka output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KafkaDelivery {
    /// Every record reaches the topic at least once; a restart may repeat the records produced
    /// since the last checkpoint.
    #[default]
    AtLeastOnce,
    /// Every record is visible exactly once to `read_committed` consumers.
    ExactlyOnce,
}

const TYPES: &[&str] = &["stdout", "null", "file", "kafka"];
/// Keys of the types that have no settings of their own (`stdout`, `null`).
const TYPE_ONLY_FIELDS: &[&str] = &["type"];
const FILE_FIELDS: &[&str] = &["type", "path"];
const KAFKA_FIELDS: &[&str] = &[
    "type",
    "topic",
    "brokers",
    "delivery",
    "transactionalId",
    "spoolDir",
    "security",
    "properties",
];
/// Every key of every output type, in the order the types list them.
static ALL_FIELDS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| union_of(OUTPUT_TYPES.map(OutputType::fields)));

/// The `type:` values of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputType {
    Stdout,
    Null,
    File,
    Kafka,
}

const OUTPUT_TYPES: [OutputType; 4] = [
    OutputType::Stdout,
    OutputType::Null,
    OutputType::File,
    OutputType::Kafka,
];

impl OutputType {
    fn name(self) -> &'static str {
        match self {
            OutputType::Stdout => "stdout",
            OutputType::Null => "null",
            OutputType::File => "file",
            OutputType::Kafka => "kafka",
        }
    }

    /// The keys an output of this type accepts.
    fn fields(self) -> &'static [&'static str] {
        match self {
            OutputType::Stdout | OutputType::Null => TYPE_ONLY_FIELDS,
            OutputType::File => FILE_FIELDS,
            OutputType::Kafka => KAFKA_FIELDS,
        }
    }
}

impl<'de> Deserialize<'de> for OutputType {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(OutputTypeVisitor)
    }
}

struct OutputTypeVisitor;

impl Visitor<'_> for OutputTypeVisitor {
    type Value = OutputType;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "one of {}", expected_list(TYPES))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<OutputType, E> {
        match value {
            "stdout" => Ok(OutputType::Stdout),
            "null" => Ok(OutputType::Null),
            "file" => Ok(OutputType::File),
            "kafka" => Ok(OutputType::Kafka),
            _ => Err(E::unknown_variant(value, TYPES)),
        }
    }

    /// An unquoted `type: null` (or `type: ~`) arrives as a YAML null.
    fn visit_unit<E: de::Error>(self) -> Result<OutputType, E> {
        Ok(OutputType::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<OutputType, E> {
        Ok(OutputType::Null)
    }
}

/// Reads one key of the `output` map, rejecting a key of another type right at the key once
/// the type is known.
struct FieldSeed(Option<OutputType>);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldSeed {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an output setting name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let Some(&known) = ALL_FIELDS.iter().find(|name| **name == key) else {
            return Err(E::unknown_field(
                key,
                self.0.map_or(&ALL_FIELDS[..], OutputType::fields),
            ));
        };
        match self.0 {
            Some(ty) if !ty.fields().contains(&known) => {
                Err(E::custom(wrong_type_message(key, ty)))
            }
            _ => Ok(known),
        }
    }
}

fn wrong_type_message(key: &str, ty: OutputType) -> String {
    let owner = OUTPUT_TYPES
        .iter()
        .find(|t| t.fields().contains(&key))
        .map_or("another", |t| t.name());
    format!(
        "`{key}` is a setting of `type: {owner}` output, not of `type: {}`; remove it or write \
         `type: {owner}`",
        ty.name()
    )
}

impl<'de> Deserialize<'de> for OutputSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(OutputVisitor)
    }
}

struct OutputVisitor;

impl<'de> Visitor<'de> for OutputVisitor {
    type Value = OutputSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an output map with `type: stdout`, `type: null`, `type: file` or `type: kafka`",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OutputSpec, A::Error> {
        let mut ty: Option<OutputType> = None;
        let mut path: Option<PathBuf> = None;
        let mut topic: Option<String> = None;
        let mut brokers: Option<String> = None;
        let mut delivery: Option<KafkaDelivery> = None;
        let mut transactional_id: Option<String> = None;
        let mut spool_dir: Option<PathBuf> = None;
        let mut security: Option<KafkaSecurity> = None;
        let mut properties: Option<BTreeMap<String, String>> = None;
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key_seed(FieldSeed(ty))? {
            seen.push(key);
            match key {
                "type" => set_once(&mut ty, key, &mut map)?,
                "path" => set_once(&mut path, key, &mut map)?,
                "topic" => set_once(&mut topic, key, &mut map)?,
                "brokers" => set_once(&mut brokers, key, &mut map)?,
                "delivery" => set_once(&mut delivery, key, &mut map)?,
                "transactionalId" => set_once(&mut transactional_id, key, &mut map)?,
                "spoolDir" => set_once(&mut spool_dir, key, &mut map)?,
                "security" => set_once(&mut security, key, &mut map)?,
                "properties" => set_once(&mut properties, key, &mut map)?,
                _ => unreachable!("FieldSeed only yields names from ALL_FIELDS"),
            }
        }
        let Some(ty) = ty else {
            return Err(de::Error::custom(
                "missing field `type`; write `type: stdout`, `type: null`, `type: file` or \
                 `type: kafka`",
            ));
        };
        // Keys written before `type:` could not be checked against it yet.
        if let Some(key) = seen.iter().find(|key| !ty.fields().contains(key)) {
            return Err(de::Error::custom(wrong_type_message(key, ty)));
        }
        Ok(match ty {
            OutputType::File => OutputSpec::File {
                path: path.ok_or_else(|| de::Error::missing_field("path"))?,
            },
            OutputType::Stdout => OutputSpec::Stdout,
            OutputType::Null => OutputSpec::Null,
            OutputType::Kafka => OutputSpec::Kafka(Box::new(KafkaOutput {
                topic: topic.ok_or_else(|| de::Error::missing_field("topic"))?,
                brokers: brokers.ok_or_else(|| de::Error::missing_field("brokers"))?,
                delivery: delivery.unwrap_or_default(),
                transactional_id,
                spool_dir: spool_dir.unwrap_or_else(default_spool_dir),
                security: security.unwrap_or_default(),
                properties: properties.unwrap_or_default(),
            })),
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
                "path",
                "topic",
                "brokers",
                "delivery",
                "transactionalId",
                "spoolDir",
                "security",
                "properties",
            ]
        );
    }
}

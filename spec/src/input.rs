//! The `input:` section: where records come from and how many partitions they are split into.
//!
//! `input` is a tagged union on its `type:` key. Serde's built-in internally tagged enums buffer
//! the whole map before picking a variant, which loses both the field path (an unknown key would
//! be reported at `input`, not `input.partitons`) and the YAML line. So [`InputSpec`] reads the
//! map itself, key by key, and every error keeps its path and position.

use std::num::NonZeroU64;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::tagged::{expected_list, set_once};

/// Where a job's records come from; selected by `type:` (`generator` or `file`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InputSpec {
    /// Synthetic keyed records from a seeded pseudo-random generator (`type: generator`): for
    /// demos, benchmarks and deterministic recovery tests.
    Generator(GeneratorInput),
    /// Newline-delimited files, one per partition (`type: file`).
    File(FileInput),
}

impl InputSpec {
    /// Number of input partitions (N): the unit of parallelism, of keyed state and of checkpoint
    /// offsets, whatever the input type.
    pub fn partitions(&self) -> u32 {
        match self {
            InputSpec::Generator(g) => g.partitions,
            InputSpec::File(f) => f.partitions,
        }
    }

    /// The `type:` value of this input (`"generator"` or `"file"`), for messages and metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            InputSpec::Generator(_) => "generator",
            InputSpec::File(_) => "file",
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
}

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::Generator => "generator",
            InputType::File => "file",
        }
    }

    /// The keys an input of this type accepts, in the order the docs list them.
    fn fields(self) -> &'static [&'static str] {
        match self {
            InputType::Generator => GENERATOR_FIELDS,
            InputType::File => FILE_FIELDS,
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
];
const FILE_FIELDS: &[&str] = &["type", "partitions", "path", "follow"];
const ALL_FIELDS: &[&str] = &[
    "type",
    "partitions",
    "seed",
    "keys",
    "distribution",
    "zipfExponent",
    "recordsPerPartition",
    "ratePerSecond",
    "path",
    "follow",
];

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
            let expected = self.0.map_or(ALL_FIELDS, InputType::fields);
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
    let owner = if GENERATOR_FIELDS.contains(&key) {
        "generator"
    } else {
        "file"
    };
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
        f.write_str("an input map with `type: generator` or `type: file`")
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
        let mut path: Option<PathBuf> = None;
        let mut follow: Option<bool> = None;
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
                "path" => set_once(&mut path, key, &mut map)?,
                "follow" => set_once(&mut follow, key, &mut map)?,
                _ => unreachable!("FieldSeed only yields names from ALL_FIELDS"),
            }
        }

        let Some(ty) = ty else {
            return Err(de::Error::custom(
                "missing field `type`; write `type: generator` or `type: file`",
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
            }),
            InputType::File => InputSpec::File(FileInput {
                partitions,
                path: path.ok_or_else(|| de::Error::missing_field("path"))?,
                follow: follow.unwrap_or_else(default_follow),
            }),
        })
    }
}

//! The `output:` section: where a task's output records go.
//!
//! Like `input`, it is tagged on `type:` and read by hand so errors keep their field path and
//! YAML position (see [`crate::input`]). The hand-written reader also accepts an unquoted
//! `type: null`, which YAML reads as a null rather than the string `"null"`.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::tagged::{expected_list, set_once};

/// Where output records go; selected by `type:` (`stdout`, `null` or `file`).
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
}

const TYPES: &[&str] = &["stdout", "null", "file"];
const ALL_FIELDS: &[&str] = &["type", "path"];

/// The `type:` values of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputType {
    Stdout,
    Null,
    File,
}

impl OutputType {
    fn name(self) -> &'static str {
        match self {
            OutputType::Stdout => "stdout",
            OutputType::Null => "null",
            OutputType::File => "file",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            OutputType::File => ALL_FIELDS,
            OutputType::Stdout | OutputType::Null => &ALL_FIELDS[..1],
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

/// Reads one key of the `output` map, rejecting `path` right at the key once the type is known
/// to be one without a path.
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
                self.0.map_or(ALL_FIELDS, OutputType::fields),
            ));
        };
        match self.0 {
            Some(ty) if !ty.fields().contains(&known) => Err(E::custom(wrong_type_message(ty))),
            _ => Ok(known),
        }
    }
}

fn wrong_type_message(ty: OutputType) -> String {
    format!(
        "`path` is a setting of `type: file` output, not of `type: {}`; remove it or write \
         `type: file`",
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
        f.write_str("an output map with `type: stdout`, `type: null` or `type: file`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OutputSpec, A::Error> {
        let mut ty: Option<OutputType> = None;
        let mut path: Option<PathBuf> = None;
        while let Some(key) = map.next_key_seed(FieldSeed(ty))? {
            match key {
                "type" => set_once(&mut ty, key, &mut map)?,
                _ => set_once(&mut path, key, &mut map)?,
            }
        }
        let Some(ty) = ty else {
            return Err(de::Error::custom(
                "missing field `type`; write `type: stdout`, `type: null` or `type: file`",
            ));
        };
        match (ty, path) {
            (OutputType::File, Some(path)) => Ok(OutputSpec::File { path }),
            (OutputType::File, None) => Err(de::Error::missing_field("path")),
            (OutputType::Stdout, None) => Ok(OutputSpec::Stdout),
            (OutputType::Null, None) => Ok(OutputSpec::Null),
            (other, Some(_)) => Err(de::Error::custom(wrong_type_message(other))),
        }
    }
}

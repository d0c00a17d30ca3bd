//! Loading a spec from YAML, properties or a file, and writing it back as YAML.
//!
//! Both input forms go through one serde deserializer wrapped in `serde_path_to_error`, so every
//! parse error names the dotted path of the field it is about, and through
//! [`JobSpec::validate`].

use std::io::Read;
use std::path::Path;

use serde::Deserializer;

use crate::error::SpecError;
use crate::job::JobSpec;
use crate::properties::{self, PropertiesTree};

/// Largest job spec document, YAML or properties (1 MiB). Real specs are a few kilobytes;
/// the bound keeps a wrong or hostile file from being parsed at all.
pub const MAX_SPEC_LEN: usize = 1 << 20;

/// Refuses a document over [`MAX_SPEC_LEN`].
fn check_len(text: &str) -> Result<(), SpecError> {
    if text.len() > MAX_SPEC_LEN {
        return Err(SpecError::TooLarge { max: MAX_SPEC_LEN });
    }
    Ok(())
}

impl JobSpec {
    /// Parses and validates a YAML job spec.
    pub fn from_yaml_str(yaml: &str) -> Result<JobSpec, SpecError> {
        check_len(yaml)?;
        let spec = deserialize(serde_yaml::Deserializer::from_str(yaml))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Deserializes and validates a spec already parsed into a YAML value (e.g. converted from
    /// a Kubernetes object's JSON). Errors name the field but no line: there is no text.
    pub fn from_yaml_value(value: serde_yaml::Value) -> Result<JobSpec, SpecError> {
        let spec = deserialize(value)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates a Java-style properties job spec (`cairn.*` keys and the Samza
    /// names; see [`crate::properties`]).
    pub fn from_properties_str(text: &str) -> Result<JobSpec, SpecError> {
        check_len(text)?;
        let tree = properties::parse(text)?;
        let spec = deserialize(tree.value.clone()).map_err(|err| point_at_line(err, &tree))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file: `.properties` files as properties, anything
    /// else as YAML.
    ///
    /// Errors other than [`SpecError::Read`] do not repeat the file name; callers that show
    /// them should say which file they loaded.
    pub fn from_path(path: &Path) -> Result<JobSpec, SpecError> {
        // Read at most one byte more than a spec may have: enough to tell it is too large
        // without reading all of a huge (or endless) file.
        let read_error = |source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(read_error)?
            .take(MAX_SPEC_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge { max: MAX_SPEC_LEN });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let is_properties = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("properties"));
        if is_properties {
            JobSpec::from_properties_str(&text)
        } else {
            JobSpec::from_yaml_str(&text)
        }
    }

    /// The spec as YAML, with durations and sizes in their canonical human forms; parsing the
    /// result gives back an equal spec.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a job spec always serializes to YAML")
    }
}

/// Deserializes a spec, turning errors into [`SpecError::Parse`] with the field's dotted path.
fn deserialize<'de, D>(de: D) -> Result<JobSpec, SpecError>
where
    D: Deserializer<'de, Error = serde_yaml::Error>,
{
    serde_path_to_error::deserialize(de).map_err(|err| {
        // `.` is the root and `?` a key that could not be read (e.g. a YAML syntax error in
        // it); neither names a field.
        let path = err.path().to_string();
        let mut field = path.as_str();
        while let Some(parent) = field.strip_suffix(".?") {
            field = parent;
        }
        let field = if field == "." || field == "?" {
            String::new()
        } else {
            field.to_owned()
        };
        let message = strip_path_prefix(&err.inner().to_string(), &field);
        SpecError::Parse { field, message }
    })
}

/// serde_yaml starts its messages with its own idea of the path (which for an unknown key is the
/// enclosing map); drop it, since [`SpecError::Parse`] shows the precise path itself.
fn strip_path_prefix(message: &str, field: &str) -> String {
    let mut prefix = field;
    while !prefix.is_empty() {
        if let Some(rest) = message
            .strip_prefix(prefix)
            .and_then(|m| m.strip_prefix(": "))
        {
            return rest.to_owned();
        }
        prefix = prefix.rfind('.').map_or("", |at| &prefix[..at]);
    }
    message.to_owned()
}

/// Adds the properties line that set the offending field, standing in for the YAML line and
/// column a YAML document would have given.
fn point_at_line(err: SpecError, tree: &PropertiesTree) -> SpecError {
    match err {
        SpecError::Parse { field, message } => {
            let message = match tree.origins.get(&field) {
                Some(origin) => format!("{message} (line {}: `{}`)", origin.line, origin.key),
                None => message,
            };
            SpecError::Parse { field, message }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_deepest_matching_path_prefix() {
        assert_eq!(
            strip_path_prefix("input: unknown field", "input.partitons"),
            "unknown field"
        );
        assert_eq!(
            strip_path_prefix(
                "checkpoint.interval: bad at line 3 column 4",
                "checkpoint.interval"
            ),
            "bad at line 3 column 4"
        );
        assert_eq!(
            strip_path_prefix("no prefix here", "name"),
            "no prefix here"
        );
        assert_eq!(strip_path_prefix("name: x", ""), "name: x");
    }
}

//! Errors from reading, parsing and validating a job spec.
//!
//! Every error names where the problem is (a file, a dotted field path such as
//! `checkpoint.interval`, or a properties line) because the person reading it has to go and edit
//! that place; validation errors also say how to fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a job spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read at all.
    #[error("cannot read job spec {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O failure.
        source: io::Error,
    },
    /// The document is not a job spec: bad YAML, a typo'd or unknown key, a value of the wrong
    /// type, an unknown `type:`, or an unreadable duration or size.
    #[error("{}", display_parse(field, message))]
    Parse {
        /// Dotted path of the offending field (`checkpoint.interval`, `input.partitons`); empty
        /// when the problem is with the document as a whole (e.g. a YAML syntax error).
        field: String,
        /// What is wrong, as serde and serde_yaml describe it (for an unknown key this lists the
        /// expected keys), with the line and column when they are known.
        message: String,
    },
    /// The document is larger than [`crate::MAX_SPEC_LEN`]: not a job spec (a job spec is a
    /// few kilobytes), and too large to parse safely.
    #[error(
        "the job spec is larger than the maximum of {max} bytes; a job spec is a few kilobytes \
         at most: check that this is the right file"
    )]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// A properties file has lines that cannot be mapped onto the spec (unknown key, a key set
    /// twice, an unsupported Samza setting). All bad lines are reported together.
    #[error("{}", display_lines(.0))]
    Properties(Vec<PropertyError>),
    /// The document parsed, but some settings are out of range or inconsistent. All problems are
    /// reported together so they can be fixed in one edit.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<FieldError>),
}

fn display_parse(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("{field}: {message}")
    }
}

fn display_lines<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One validation problem: which field, what is wrong with it, and how to fix it.
///
/// Displays as `<field>: <problem>; <fix>`, e.g.
/// `parallelism: 6 is more than input.partitions (4); each container runs at least one task, so
/// lower parallelism or raise input.partitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted YAML path of the field, e.g. `checkpoint.interval`.
    pub field: String,
    /// What is wrong with the current value.
    pub problem: String,
    /// What to write instead.
    pub fix: String,
}

impl FieldError {
    /// Builds a field error; a shorthand used by validation and store URL parsing.
    pub fn new(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}; {}", self.field, self.problem, self.fix)
    }
}

/// One problem with a line of a `.properties` job spec.
///
/// Displays as `line <n>: <key>: <problem>; <fix>`, so the line can be found and edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    /// 1-based line number where the property starts.
    pub line: usize,
    /// The property key as written (or the whole line when it has no key).
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to write instead.
    pub fix: String,
}

impl fmt::Display for PropertyError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}; {}",
            self.line, self.key, self.problem, self.fix
        )
    }
}

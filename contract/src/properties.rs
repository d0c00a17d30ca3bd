//! Job specs written as Java-style `.properties`, for people coming from Samza.
//!
//! A properties file is turned into the same YAML tree a `job.yaml` would give, and then read by
//! exactly the same deserializer and validation, so both forms accept the same things and fail
//! with the same messages. Two kinds of key are accepted:
//!
//! * `cairn.<path>` sets that camelCase path of the YAML document, e.g.
//!   `cairn.input.partitions=4` or `cairn.task.config.field=word`. Values are read as YAML
//!   scalars (`4` is a number, `true` a bool, `null`/`~` a null, `"4"` a string); anything else is
//!   taken literally as a string.
//! * The Samza names listed in [`SAMZA_KEYS`].
//!
//! Syntax: one `key=value` or `key: value` per line, whitespace around key and value trimmed;
//! lines starting with `#` or `!` are comments; a line ending in `\` continues on the next line.
//! Backslash escapes (`\n`, `\uXXXX`, ...) are not interpreted. Any other key, a key set twice,
//! or two keys that set the same field are errors naming the line: a misspelt key must never be
//! silently ignored.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::error::{PropertyError, SpecError};
use crate::store::StoreUrl;

/// The Samza-style property names Cairn understands, and what each one sets.
pub const SAMZA_KEYS: &[(&str, &str)] = &[
    ("job.name", "name"),
    ("job.container.count", "parallelism"),
    ("task.class", "task.name"),
    (
        "task.checkpoint.interval.ms",
        "checkpoint.interval (in milliseconds)",
    ),
    ("task.checkpoint.retained", "checkpoint.retained"),
    (
        "task.checkpoint.store.factory",
        "which store: filesystem (default), hdfs, s3, gcs or azure",
    ),
    (
        "task.checkpoint.store.filesystem.path",
        "checkpoint.store, as a file:// URL",
    ),
    (
        "task.checkpoint.store.hdfs.path",
        "checkpoint.store, as an hdfs:// URL",
    ),
];

/// Most field names in one `cairn.` key (`cairn.input.security.sasl.passwordFile` has 5).
/// Every level becomes a nested map that is later read and dropped recursively, so a key with
/// thousands of segments must be refused before it is built.
pub const MAX_PROPERTY_DEPTH: usize = 32;
/// Most properties in one document. A job spec has a few dozen; the bound keeps the checks
/// between properties (which compare every pair) cheap.
pub const MAX_PROPERTIES: usize = 1000;
/// Longest key shown in full in an error; longer ones are cut, with their length.
const MAX_SHOWN_KEY: usize = 80;

/// A properties document turned into a YAML tree, remembering which line set which field so
/// parse errors can point back at the line.
#[derive(Debug)]
pub(crate) struct PropertiesTree {
    /// The YAML document the properties describe.
    pub(crate) value: Value,
    /// Dotted field path (`checkpoint.interval`) -> the property that set it.
    pub(crate) origins: BTreeMap<String, Origin>,
}

/// Where a field of a [`PropertiesTree`] came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The property key as written.
    pub(crate) key: String,
}

/// One `key=value` entry, after joining continuation lines.
struct Entry {
    line: usize,
    key: String,
    value: String,
}

/// What one property does to the tree.
enum Action {
    /// Set a field of the YAML tree.
    Set(Vec<String>, Value),
    /// `task.checkpoint.store.factory`, checked against the store once every line is read.
    Factory(Factory),
    /// `task.checkpoint.store.<factory>.path`: a candidate store URL. Which one is used is
    /// known once every line is read (the factory chooses, as in Samza).
    StorePath(Factory, String),
}

/// The values of `task.checkpoint.store.factory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Factory {
    Filesystem,
    Hdfs,
    S3,
    Gcs,
    Azure,
}

impl Factory {
    /// The store URL schemes of this kind of store.
    fn schemes(self) -> &'static [&'static str] {
        match self {
            Factory::Filesystem => &["file://"],
            Factory::Hdfs => &["hdfs://"],
            Factory::S3 => &["s3://"],
            Factory::Gcs => &["gs://"],
            Factory::Azure => &["az://", "abfs://", "abfss://"],
        }
    }

    /// How to set a store of this kind, for error messages.
    fn example(self) -> &'static str {
        match self {
            Factory::Filesystem => "`task.checkpoint.store.filesystem.path=/path`",
            Factory::Hdfs => {
                "`task.checkpoint.store.hdfs.path=/path` (on the default file system of \
                 HADOOP_CONF_DIR) or `task.checkpoint.store.hdfs.path=hdfs://namenode:8020/path`"
            }
            Factory::S3 => "`cairn.checkpoint.store=s3://bucket/prefix`",
            Factory::Gcs => "`cairn.checkpoint.store=gs://bucket/prefix`",
            Factory::Azure => "`cairn.checkpoint.store=az://container/prefix`",
        }
    }

    /// The property that names its directory, for the kinds that have one.
    fn path_key(self) -> Option<&'static str> {
        match self {
            Factory::Filesystem => Some("task.checkpoint.store.filesystem.path"),
            Factory::Hdfs => Some("task.checkpoint.store.hdfs.path"),
            _ => None,
        }
    }
}

/// Reads a properties document into a YAML tree, or reports every bad line.
pub(crate) fn parse(text: &str) -> Result<PropertiesTree, SpecError> {
    let mut errors = Vec::new();
    let entries = split_entries(text, &mut errors);
    if let Some(first_extra) = entries.get(MAX_PROPERTIES) {
        return Err(SpecError::Properties(vec![error(
            first_extra,
            format!("is past the maximum of {MAX_PROPERTIES} properties in one job spec"),
            "a job spec needs a few dozen properties at most: check that this is the right file",
        )]));
    }

    let mut first_seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tree = PropertiesTree {
        value: Value::Mapping(Mapping::new()),
        origins: BTreeMap::new(),
    };
    let mut factory: Option<(Factory, Origin)> = None;
    let mut paths: BTreeMap<Factory, (String, Origin)> = BTreeMap::new();
    for entry in &entries {
        if let Some(first) = first_seen.insert(&entry.key, entry.line) {
            errors.push(error(
                entry,
                format!("is set twice (first on line {first})"),
                "keep only one of the two lines",
            ));
            continue;
        }
        let origin = Origin {
            line: entry.line,
            key: entry.key.clone(),
        };
        match action(entry) {
            Ok(Action::Set(path, value)) => {
                if let Err(problem) = tree.insert(&path, value, origin) {
                    errors.push(error(entry, problem, "keep only one of the settings"));
                }
            }
            Ok(Action::Factory(kind)) => factory = Some((kind, origin)),
            Ok(Action::StorePath(kind, url)) => {
                paths.insert(kind, (url, origin));
            }
            Err(err) => errors.push(err),
        }
    }
    if let Err(err) = choose_store_path(factory.as_ref().map(|(kind, _)| *kind), paths, &mut tree) {
        errors.push(err);
    }
    if let Some((kind, origin)) = factory {
        if let Err(err) = check_factory(kind, &origin, &tree) {
            errors.push(err);
        }
    }
    if errors.is_empty() {
        Ok(tree)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(SpecError::Properties(errors))
    }
}

fn error(entry: &Entry, problem: impl Into<String>, fix: impl Into<String>) -> PropertyError {
    PropertyError {
        line: entry.line,
        key: shown_key(&entry.key),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// `key` as an error shows it: in full up to [`MAX_SHOWN_KEY`] characters, else its start and
/// its length, so a hostile key cannot make a megabyte of error message.
fn shown_key(key: &str) -> String {
    match key.char_indices().nth(MAX_SHOWN_KEY) {
        None => key.to_owned(),
        Some((cut, _)) => format!("{}... ({} bytes)", &key[..cut], key.len()),
    }
}

/// Splits the text into entries: drops comments and blank lines, joins `\` continuations, and
/// splits each line at its first `=` or `:`.
fn split_entries(text: &str, errors: &mut Vec<PropertyError>) -> Vec<Entry> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let mut logical = raw.trim().to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let line = index + 1;
        match logical.find(['=', ':']) {
            Some(at) if !logical[..at].trim().is_empty() => entries.push(Entry {
                line,
                key: logical[..at].trim().to_owned(),
                value: logical[at + 1..].trim().to_owned(),
            }),
            _ => errors.push(PropertyError {
                line,
                key: shown_key(&logical),
                problem: "is not a `key=value` line".to_owned(),
                fix: "write `key=value` or `key: value`, and start comments with `#` or `!`"
                    .to_owned(),
            }),
        }
    }
    entries
}

/// Whether a line ends in an odd number of backslashes, i.e. continues on the next line.
fn ends_with_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// What one entry sets, or why it cannot be used.
fn action(entry: &Entry) -> Result<Action, PropertyError> {
    let set = |path: &[&str], value: Value| {
        Ok(Action::Set(
            path.iter().map(|s| (*s).to_owned()).collect(),
            value,
        ))
    };
    let value = entry.value.as_str();
    match entry.key.as_str() {
        "job.name" => set(&["name"], Value::String(value.to_owned())),
        "task.class" => set(&["task", "name"], Value::String(value.to_owned())),
        "job.container.count" => set(&["parallelism"], scalar(value)),
        "task.checkpoint.retained" => set(&["checkpoint", "retained"], scalar(value)),
        "task.checkpoint.interval.ms" => match value.parse::<u64>() {
            Ok(millis) => set(&["checkpoint", "interval"], Value::Number(millis.into())),
            Err(_) => Err(error(
                entry,
                format!("{value:?} is not a whole number of milliseconds"),
                "write e.g. `task.checkpoint.interval.ms=60000`, or \
                 `cairn.checkpoint.interval=60s`",
            )),
        },
        "task.checkpoint.store.filesystem.path" => {
            let url = StoreUrl::for_dir(value.as_ref()).to_url();
            Ok(Action::StorePath(Factory::Filesystem, url))
        }
        "task.checkpoint.store.hdfs.path" => {
            // A bare path is on the default file system (`fs.defaultFS` of HADOOP_CONF_DIR), as
            // a path in a Hadoop configuration is; a URL names its NameNode.
            let url = if value.starts_with("hdfs://") {
                value.to_owned()
            } else if value.starts_with('/') {
                format!("hdfs://{value}")
            } else {
                return Err(error(
                    entry,
                    format!("{value:?} is neither an absolute path nor an hdfs:// URL"),
                    "write e.g. `/path/to/checkpoint` (on the default file system of \
                     HADOOP_CONF_DIR) or `hdfs://namenode:8020/path/to/checkpoint`",
                ));
            };
            Ok(Action::StorePath(Factory::Hdfs, url))
        }
        "task.checkpoint.store.factory" => match value {
            "filesystem" => Ok(Action::Factory(Factory::Filesystem)),
            "hdfs" => Ok(Action::Factory(Factory::Hdfs)),
            "s3" => Ok(Action::Factory(Factory::S3)),
            "gcs" => Ok(Action::Factory(Factory::Gcs)),
            "azure" => Ok(Action::Factory(Factory::Azure)),
            _ => Err(error(
                entry,
                format!("{value:?} is not a checkpoint store factory"),
                "write `filesystem` (the default), `hdfs`, `s3`, `gcs` or `azure`",
            )),
        },
        key => match key.strip_prefix("cairn.") {
            Some(path) if path.split('.').nth(MAX_PROPERTY_DEPTH).is_some() => Err(error(
                entry,
                format!(
                    "has {} field names, more than the maximum of {MAX_PROPERTY_DEPTH}",
                    path.split('.').count()
                ),
                "write a dotted camelCase path such as `cairn.input.partitions`; no job spec \
                 field is nested that deep",
            )),
            Some(path) if !path.split('.').any(str::is_empty) => Ok(Action::Set(
                path.split('.').map(str::to_owned).collect(),
                scalar(value),
            )),
            Some(_) => Err(error(
                entry,
                "has an empty field name",
                "write a dotted camelCase path such as `cairn.input.partitions`",
            )),
            None => Err(unknown_key(entry)),
        },
    }
}

/// The error for a key that is neither `cairn.*` nor a Samza alias, suggesting a near miss.
fn unknown_key(entry: &Entry) -> PropertyError {
    let names: Vec<String> = SAMZA_KEYS
        .iter()
        .map(|(key, _)| format!("`{key}`"))
        .collect();
    let mut fix = format!(
        "write `cairn.<field path>` (e.g. `cairn.input.partitions=4`) or one of the Samza names {}",
        names.join(", ")
    );
    // A near miss is at most two edits away, so its length differs by at most two: skip the
    // (quadratic) distance for keys that cannot be one.
    let near = SAMZA_KEYS
        .iter()
        .filter(|(key, _)| key.len().abs_diff(entry.key.len()) <= 2)
        .map(|(key, _)| (edit_distance(key, &entry.key), *key))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    if let Some((_, key)) = near {
        fix = format!("did you mean `{key}`? {fix}");
    }
    error(entry, "is not a Cairn or Samza job property", fix)
}

/// Levenshtein distance, for "did you mean" hints on misspelt keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Reads a property value as a YAML scalar: null, bool or number when YAML says so, a quoted
/// string without its quotes, and anything else literally as a string (so `a # b` keeps its
/// `# b`, which YAML would drop as a comment).
fn scalar(text: &str) -> Value {
    if text.is_empty() {
        return Value::String(String::new());
    }
    let quoted = text.starts_with('"') || text.starts_with('\'');
    match serde_yaml::from_str::<Value>(text) {
        Ok(value @ (Value::Null | Value::Bool(_) | Value::Number(_))) => value,
        Ok(value @ Value::String(_)) if quoted => value,
        _ => Value::String(text.to_owned()),
    }
}

/// Sets `checkpoint.store` from the `task.checkpoint.store.<kind>.path` lines. With a factory,
/// the path of that kind is used and any other is ignored: Samza's own configurations (and
/// the seed's example) set both paths and let the factory choose. Without one, a single path
/// says which store it is; two are ambiguous.
fn choose_store_path(
    factory: Option<Factory>,
    mut paths: BTreeMap<Factory, (String, Origin)>,
    tree: &mut PropertiesTree,
) -> Result<(), PropertyError> {
    let chosen = match factory {
        Some(kind) => paths.remove(&kind),
        None if paths.len() > 1 => {
            let mut lines: Vec<Origin> = paths.into_values().map(|(_, origin)| origin).collect();
            lines.sort_by_key(|origin| origin.line);
            let (first, second) = (lines[0].clone(), lines[1].clone());
            return Err(PropertyError {
                line: second.line,
                key: second.key,
                problem: format!(
                    "names a second store next to line {} (`{}`)",
                    first.line, first.key
                ),
                fix: "set `task.checkpoint.store.factory` to `filesystem` or `hdfs` to choose \
                      one, or keep only one of the two lines"
                    .to_owned(),
            });
        }
        None => paths.pop_first().map(|(_, chosen)| chosen),
    };
    let Some((url, origin)) = chosen else {
        return Ok(());
    };
    let at = (origin.line, origin.key.clone());
    tree.insert(
        &["checkpoint".to_owned(), "store".to_owned()],
        Value::String(url),
        origin,
    )
    .map_err(|problem| PropertyError {
        line: at.0,
        key: at.1,
        problem,
        fix: "keep only one of the settings".to_owned(),
    })
}

/// Checks `task.checkpoint.store.factory` against the store the other lines chose.
fn check_factory(
    kind: Factory,
    factory: &Origin,
    tree: &PropertiesTree,
) -> Result<(), PropertyError> {
    let store_origin = tree.origins.get("checkpoint.store");
    let store = tree.get(&["checkpoint", "store"]).and_then(Value::as_str);
    let problem = match (store_origin, store) {
        (Some(origin), Some(url)) if !kind.schemes().iter().any(|s| url.starts_with(s)) => format!(
            "does not match line {} (`{}`), which makes the store {url:?}",
            origin.line, origin.key
        ),
        (Some(_), Some(_)) => return Ok(()),
        (Some(origin), None) => {
            format!(
                "does not match line {} (`{}`), which is not a URL",
                origin.line, origin.key
            )
        }
        (None, _) if kind == Factory::Filesystem => return Ok(()),
        (None, _) => match kind.path_key() {
            Some(key) => format!("needs the directory to write to (`{key}`)"),
            None => "needs the bucket to write to".to_owned(),
        },
    };
    Err(PropertyError {
        line: factory.line,
        key: factory.key.clone(),
        problem,
        fix: format!("set the store with {}", kind.example()),
    })
}

impl PropertiesTree {
    /// Sets the field at `path`, refusing to overwrite a field, or a section holding fields,
    /// that an earlier line set.
    fn insert(&mut self, path: &[String], value: Value, origin: Origin) -> Result<(), String> {
        let dotted = path.join(".");
        let within = |path: &str, section: &str| {
            path.strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        let clash = self.origins.iter().find(|(other, _)| {
            **other == dotted || within(&dotted, other) || within(other, &dotted)
        });
        if let Some((other, earlier)) = clash {
            return Err(format!(
                "sets `{dotted}`, but line {} (`{}`) already sets `{other}`",
                earlier.line, earlier.key
            ));
        }
        let (last, parents) = path.split_last().expect("property paths are never empty");
        let mut node = &mut self.value;
        for segment in parents {
            let Value::Mapping(map) = node else {
                unreachable!("clash check keeps every parent a mapping")
            };
            node = map
                .entry(Value::String(segment.clone()))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
        }
        let Value::Mapping(map) = node else {
            unreachable!("clash check keeps every parent a mapping")
        };
        map.insert(Value::String(last.clone()), value);
        self.origins.insert(dotted, origin);
        Ok(())
    }

    /// The value at `path`, if the properties set it.
    fn get(&self, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(&self.value, |node, segment| node.get(*segment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> PropertiesTree {
        parse(text).unwrap_or_else(|err| panic!("{err}"))
    }

    fn errors(text: &str) -> Vec<PropertyError> {
        match parse(text) {
            Err(SpecError::Properties(errors)) => errors,
            other => panic!("expected property errors, got {other:?}"),
        }
    }

    #[test]
    fn syntax_comments_separators_and_continuations() {
        let t = tree(
            "# comment\n! also a comment\n\n  cairn.name = wc  \ncairn.task.name: count\n\
             cairn.task.config.pattern=a # b\ncairn.task.config.long=one \\\n    two\n",
        );
        let expected: Value = serde_yaml::from_str(
            "name: wc\ntask: {name: count, config: {pattern: 'a # b', long: one two}}",
        )
        .unwrap();
        assert_eq!(t.value, expected);
        assert_eq!(t.origins["task.config.long"].line, 7);
    }

    #[test]
    fn values_are_yaml_scalars() {
        assert_eq!(scalar("4"), Value::Number(4.into()));
        assert_eq!(scalar("true"), Value::Bool(true));
        assert_eq!(scalar("~"), Value::Null);
        assert_eq!(scalar("\"4\""), Value::String("4".into()));
        assert_eq!(scalar("file://./x"), Value::String("file://./x".into()));
        assert_eq!(scalar("[1, 2]"), Value::String("[1, 2]".into()));
        assert_eq!(scalar("a: b"), Value::String("a: b".into()));
        assert_eq!(scalar(""), Value::String(String::new()));
    }

    #[test]
    fn samza_names_are_strings_even_when_numeric() {
        let t = tree("job.name=123\ntask.class=007");
        assert_eq!(t.get(&["name"]), Some(&Value::String("123".into())));
        assert_eq!(t.get(&["task", "name"]), Some(&Value::String("007".into())));
    }

    #[test]
    fn bad_lines_are_all_reported_with_their_line() {
        let errs = errors("job.name=a\njust some words\njob.name=b\nfoo.bar=1\ncairn..x=1\n");
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{shown:#?}");
        assert_eq!(
            shown[0],
            "line 2: just some words: is not a `key=value` line; write `key=value` or \
             `key: value`, and start comments with `#` or `!`"
        );
        assert_eq!(
            shown[1],
            "line 3: job.name: is set twice (first on line 1); keep only one of the two lines"
        );
        assert!(shown[2].starts_with("line 4: foo.bar: is not a Cairn or Samza job property;"));
        assert!(shown[3].starts_with("line 5: cairn..x: has an empty field name;"));
    }

    #[test]
    fn a_near_miss_gets_a_suggestion() {
        let errs = errors("job.container.cont=2");
        assert!(
            errs[0]
                .fix
                .starts_with("did you mean `job.container.count`?"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn aliases_and_generic_keys_may_not_set_the_same_field() {
        let errs = errors(
            "job.container.count=2\ncairn.parallelism=3\ncairn.input=x\ncairn.input.type=file",
        );
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "line 2: cairn.parallelism: sets `parallelism`, but line 1 (`job.container.count`) \
             already sets `parallelism`; keep only one of the settings"
        );
        assert_eq!(errs[1].line, 4);
        assert!(
            errs[1].problem.contains("already sets `input`"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn factory_must_agree_with_the_store() {
        assert_eq!(
            errors("task.checkpoint.store.factory=s3")[0].to_string(),
            "line 1: task.checkpoint.store.factory: needs the bucket to write to; set the store \
             with `cairn.checkpoint.store=s3://bucket/prefix`"
        );
        // The factory chooses among the paths (Samza's rule): a filesystem path next to
        // `s3` is not the store, so the bucket is still missing.
        let errs =
            errors("task.checkpoint.store.factory=s3\ntask.checkpoint.store.filesystem.path=/ckpt");
        assert_eq!(errs[0].problem, "needs the bucket to write to");
        let errs = errors("task.checkpoint.store.factory=hdfs\ncairn.checkpoint.store=file:///c");
        assert_eq!(
            errs[0].problem,
            "does not match line 2 (`cairn.checkpoint.store`), which makes the store \
             \"file:///c\""
        );
        let ok = tree("task.checkpoint.store.factory=s3\ncairn.checkpoint.store=s3://b/p");
        assert_eq!(
            ok.get(&["checkpoint", "store"]),
            Some(&Value::String("s3://b/p".into()))
        );
        let default = tree("task.checkpoint.store.factory=filesystem");
        assert_eq!(default.get(&["checkpoint"]), None);
        let errs = errors("task.checkpoint.store.factory=rocks");
        assert_eq!(
            errs[0].problem,
            "\"rocks\" is not a checkpoint store factory"
        );
    }

    #[test]
    fn interval_ms_must_be_whole_milliseconds() {
        let errs = errors("task.checkpoint.interval.ms=10s");
        assert_eq!(
            errs[0].problem,
            "\"10s\" is not a whole number of milliseconds"
        );
        let t = tree("task.checkpoint.interval.ms=2500");
        assert_eq!(
            t.get(&["checkpoint", "interval"]),
            Some(&Value::Number(2500.into()))
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("job.name", "job.name"), 0);
        assert_eq!(edit_distance("job.nme", "job.name"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}

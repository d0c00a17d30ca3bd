//! Fuzz targets for the job spec: the YAML form and the properties form.
//!
//! Each target first runs every seed document as it is, then bolero-generated mutations of
//! them (see `fuzz/mutate.rs`), bounded by `CAIRN_FUZZ_ITERATIONS` / `CAIRN_FUZZ_SECONDS`
//! (docs/fuzzing.md). For every input:
//!
//! * parsing never panics;
//! * an error says what is wrong: a non-empty message, and for validation and properties errors
//!   every entry names its field or line, the problem and the fix;
//! * an accepted spec survives every way it is written back: its YAML parses to an equal spec
//!   with the same `spec_hash` and the same YAML, and its JSON (what a commit record and a
//!   Kubernetes object hold) reads back equal, with and without validation;
//! * the operator's path (`JobSpec::from_yaml_value` on the edited tree as an object) meets the
//!   same checks and gives the same answer as the YAML text of that tree.

#[path = "fuzz/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_contract::{JobSpec, SpecError};
use mutate::{Budget, Case, Dict};
use serde_json::{Map, Value};

/// The workspace root (seeds come from the examples as well as from this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("spec/ is inside the workspace")
        .to_path_buf()
}

/// Seed documents as written, their trees (what edits start from) and the edit dictionary.
struct Seeds {
    docs: Vec<(PathBuf, Vec<u8>)>,
    trees: Vec<Value>,
    dict: Dict,
}

impl Seeds {
    fn tree(&self, case: &Case) -> Value {
        self.trees[usize::from(case.seed) % self.trees.len()].clone()
    }
}

/// Every example job, the test fixtures, the `spec.job` of the Kubernetes examples, the seeds
/// of `fuzz/seeds/`, and the findings kept in `fuzz/findings/`.
fn yaml_seeds() -> Seeds {
    let root = root();
    let mut docs = Vec::new();
    for dir in [
        root.join("examples"),
        root.join("examples/custom-task"),
        root.join("contract/tests/fixtures"),
        root.join("contract/tests/fuzz/seeds"),
    ] {
        docs.extend(mutate::read_dir_files(&dir, &["yaml"]));
    }
    for (path, bytes) in mutate::read_dir_files(&root.join("examples/k8s"), &["yaml"]) {
        let resource: serde_yaml::Value =
            serde_yaml::from_slice(&bytes).expect("examples/k8s are YAML");
        if let Some(job) = resource.get("spec").and_then(|s| s.get("job")) {
            // The operator names the job after the resource.
            let mut job = job.clone();
            if let (Some(map), Some(name)) =
                (job.as_mapping_mut(), resource["metadata"].get("name"))
            {
                map.entry("name".into()).or_insert_with(|| name.clone());
            }
            let text = serde_yaml::to_string(&job).expect("a YAML value serialises");
            docs.push((path, text.into_bytes()));
        }
    }
    let trees: Vec<Value> = docs
        .iter()
        .map(|(path, bytes)| {
            serde_yaml::from_slice(bytes)
                .unwrap_or_else(|e| panic!("seed {} is not YAML: {e}", path.display()))
        })
        .collect();
    // Findings run as they are but are not mutated: they are usually not valid documents.
    docs.extend(findings(&["yaml"]));
    let dict = Dict::from_seeds(&trees, &[]);
    Seeds { docs, trees, dict }
}

/// Every properties example and seed, as trees of `key -> value`; the dictionary's keys are
/// every `cairn.<path>` the YAML seeds have and every Samza name.
fn properties_seeds() -> Seeds {
    let root = root();
    let mut docs = Vec::new();
    for dir in [
        root.join("examples"),
        root.join("contract/tests/fixtures"),
        root.join("contract/tests/fuzz/seeds"),
    ] {
        docs.extend(mutate::read_dir_files(&dir, &["properties"]));
    }
    let trees: Vec<Value> = docs
        .iter()
        .map(|(_, bytes)| properties_tree(&String::from_utf8_lossy(bytes)))
        .collect();
    let mut keys: Vec<String> = cairn_contract::properties::SAMZA_KEYS
        .iter()
        .map(|(key, _)| (*key).to_owned())
        .collect();
    for tree in &yaml_seeds().trees {
        dotted_paths(tree, "cairn", &mut keys);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    docs.extend(findings(&["properties"]));
    let dict = Dict::from_seeds(&trees, &keys);
    Seeds { docs, trees, dict }
}

/// Inputs a target once failed on (docs/fuzzing.md): always run, never mutated.
fn findings(extensions: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    mutate::read_dir_files(&root().join("contract/tests/fuzz/findings"), extensions)
}

/// `prefix.<path>` of every leaf of `value`.
fn dotted_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                dotted_paths(item, &format!("{prefix}.{key}"), out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// A properties document as `key -> value` (comments dropped, continuations joined): a
/// simple reading for mutation only; the parser under test is the crate's own.
fn properties_tree(text: &str) -> Value {
    let mut map = Map::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        if let Some(at) = entry.find(['=', ':']) {
            let (key, value) = entry.split_at(at);
            map.insert(key.trim().to_owned(), value[1..].trim().into());
        }
    }
    Value::Object(map)
}

/// Writes a tree back as properties: nested objects become dotted keys, strings are written
/// raw and every other value as JSON text.
fn render_properties(tree: &Value) -> String {
    fn write(value: &Value, key: &str, out: &mut String) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, item) in map {
                    let key = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    write(item, &key, out);
                }
            }
            Value::String(s) => out.push_str(&format!("{key}={s}\n")),
            other => out.push_str(&format!("{key}={other}\n")),
        }
    }
    let mut out = String::new();
    write(tree, "", &mut out);
    out
}

fn render_yaml(tree: &Value) -> String {
    serde_yaml::to_string(tree).expect("a JSON value serialises as YAML")
}

/// An error must say what is wrong, where, and how to fix it.
fn assert_explains(err: &SpecError, input: &str) {
    let shown = err.to_string();
    assert!(
        !shown.trim().is_empty(),
        "empty error message ({err:?}) for\n{input}"
    );
    match err {
        SpecError::Read { .. } => panic!("a parse from text reported a read error: {err:?}"),
        // A document over the size limit: the message names the limit.
        SpecError::TooLarge { max } => {
            assert!(
                shown.contains(&max.to_string()),
                "{err:?} for a {}-byte input",
                input.len()
            );
        }
        SpecError::Parse { message, .. } => {
            assert!(!message.trim().is_empty(), "{err:?} for\n{input}");
        }
        SpecError::Properties(lines) => {
            assert!(!lines.is_empty(), "no bad lines in {err:?} for\n{input}");
            for line in lines {
                assert!(
                    line.line >= 1 && !line.problem.is_empty() && !line.fix.is_empty(),
                    "{line:?} does not name its line, problem and fix, for\n{input}"
                );
            }
        }
        SpecError::Invalid(fields) => {
            assert!(!fields.is_empty(), "no problems in {err:?} for\n{input}");
            for field in fields {
                assert!(
                    !field.field.is_empty() && !field.problem.is_empty() && !field.fix.is_empty(),
                    "{field:?} does not name its field, problem and fix, for\n{input}"
                );
            }
        }
    }
}

/// An accepted spec reads back equal from everything it is written as.
fn assert_round_trips(spec: &JobSpec, input: &str) {
    let hash = spec.spec_hash();
    let yaml = spec.to_yaml();
    let again = JobSpec::from_yaml_str(&yaml).unwrap_or_else(|e| {
        panic!("the YAML of an accepted spec does not parse: {e}\ninput:\n{input}\nYAML:\n{yaml}")
    });
    assert_eq!(
        &again, spec,
        "YAML round trip changed the spec\ninput:\n{input}\nYAML:\n{yaml}"
    );
    assert_eq!(again.spec_hash(), hash, "hash changed; YAML:\n{yaml}");
    assert_eq!(again.to_yaml(), yaml, "YAML is not a fixed point");

    // A commit record or savepoint stores the spec as JSON and reads it back without
    // validation; the operator reads it from the JSON of a StreamJob with validation.
    let json = serde_json::to_value(spec).expect("a spec serialises as JSON");
    let from_json: JobSpec = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
        panic!("the JSON of an accepted spec does not read back: {e}\nJSON: {json}")
    });
    assert_eq!(&from_json, spec, "JSON round trip changed the spec: {json}");
    let as_yaml_value = serde_yaml::to_value(&json).expect("JSON converts to a YAML value");
    let from_value = JobSpec::from_yaml_value(as_yaml_value).unwrap_or_else(|e| {
        panic!("the JSON of an accepted spec is not accepted as an object: {e}\nJSON: {json}")
    });
    assert_eq!(
        &from_value, spec,
        "object round trip changed the spec: {json}"
    );
    assert_eq!(from_value.spec_hash(), hash);
}

/// How many inputs ended how, per target: printed at the end so a run shows whether the
/// mutations still reach validation and the round trips, not only the first parse error.
struct Outcomes {
    accepted: AtomicUsize,
    parse: AtomicUsize,
    properties: AtomicUsize,
    invalid: AtomicUsize,
}

impl Outcomes {
    fn count(&self, result: &Result<JobSpec, SpecError>) {
        let counter = match result {
            Ok(_) => &self.accepted,
            Err(SpecError::Parse { .. } | SpecError::Read { .. } | SpecError::TooLarge { .. }) => {
                &self.parse
            }
            Err(SpecError::Properties(_)) => &self.properties,
            Err(SpecError::Invalid(_)) => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, target: &str) {
        let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        eprintln!(
            "{target}: {} accepted, {} invalid, {} bad properties, {} parse errors",
            get(&self.accepted),
            get(&self.invalid),
            get(&self.properties),
            get(&self.parse)
        );
    }
}

static YAML_OUTCOMES: Outcomes = Outcomes::new();
static PROPERTIES_OUTCOMES: Outcomes = Outcomes::new();

impl Outcomes {
    const fn new() -> Outcomes {
        Outcomes {
            accepted: AtomicUsize::new(0),
            parse: AtomicUsize::new(0),
            properties: AtomicUsize::new(0),
            invalid: AtomicUsize::new(0),
        }
    }
}

fn check_yaml(input: &str) {
    let result = JobSpec::from_yaml_str(input);
    YAML_OUTCOMES.count(&result);
    match result {
        Ok(spec) => assert_round_trips(&spec, input),
        Err(err) => assert_explains(&err, input),
    }
}

/// The operator's path: a StreamJob's `spec.job` arrives as JSON and is read with
/// `JobSpec::from_yaml_value`. The same checks as for text, and the same answer as the text the
/// tree is written as (`yaml`, when no text edit changed it).
fn check_object(tree: &Value, yaml: Option<&str>) {
    let shown = || tree.to_string();
    let value = serde_yaml::to_value(tree).expect("JSON converts to a YAML value");
    let result = JobSpec::from_yaml_value(value);
    match &result {
        Ok(spec) => assert_round_trips(spec, &shown()),
        Err(err) => assert_explains(err, &shown()),
    }
    if let Some(yaml) = yaml {
        match (result, JobSpec::from_yaml_str(yaml)) {
            (Ok(object), Ok(text)) => {
                assert_eq!(object, text, "object and text disagree\n{}\n{yaml}", shown())
            }
            (Err(_), Err(_)) => {}
            // YAML text reads a plain scalar as a string where the spec wants one
            // (`path: 4294967296` is the path "4294967296"); an object keeps its JSON type and is
            // refused for it. On Kubernetes the CRD schema refuses such an object first.
            (Err(SpecError::Parse { message, .. }), Ok(_))
                if message.starts_with("invalid type:") && message.contains("string") => {}
            (object, text) => panic!(
                "the object is {} but its YAML text is {}:\n{}\n{yaml}\nobject: {object:?}\ntext: {text:?}",
                if object.is_ok() { "accepted" } else { "refused" },
                if text.is_ok() { "accepted" } else { "refused" },
                shown()
            ),
        }
    }
}

fn check_properties(input: &str) {
    let result = JobSpec::from_properties_str(input);
    PROPERTIES_OUTCOMES.count(&result);
    match result {
        Ok(spec) => assert_round_trips(&spec, input),
        Err(err) => assert_explains(&err, input),
    }
}

/// Runs `check` on every seed as written (open findings in a child process, expecting them to
/// still fail), then on generated cases; `check_tree` also gets each case's edited tree.
fn fuzz(
    test: &str,
    seeds: &Seeds,
    to_text: fn(&Value) -> String,
    check: fn(&str),
    check_tree: Option<fn(&Value, Option<&str>)>,
) {
    assert!(!seeds.trees.is_empty(), "no seeds found");
    for (path, bytes) in &seeds.docs {
        if mutate::is_open_finding(path) {
            mutate::expect_open_finding_fails(test, path);
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        let outcome = std::panic::catch_unwind(|| check(&text));
        if let Err(panic) = outcome {
            eprintln!("seed {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    let budget = Budget::from_env();
    bolero::check!()
        .with_type::<Case>()
        .with_iterations(budget.iterations)
        .with_test_time(budget.time)
        .for_each(|case| {
            let mut tree = seeds.tree(case);
            let bytes = mutate::apply(case, &mut tree, &seeds.dict, |t| to_text(t).into_bytes());
            let text = String::from_utf8_lossy(&bytes);
            mutate::remember_input(test, text.as_bytes());
            check(&text);
            if let Some(check_tree) = check_tree {
                // `tree` is the edited document; `text` is it written out unless a text edit
                // changed it.
                let written = to_text(&tree);
                check_tree(&tree, (written == text).then_some(written.as_str()));
            }
        });
}

/// When started to replay one input (see `mutate::expect_open_finding_fails`), checks it and
/// returns true.
fn replayed(check: fn(&str)) -> bool {
    let Some(path) = mutate::replay_path() else {
        return false;
    };
    let bytes = std::fs::read(&path).expect("the input to replay");
    check(&String::from_utf8_lossy(&bytes));
    true
}

#[test]
fn yaml_spec() {
    if replayed(check_yaml) {
        return;
    }
    let seeds = yaml_seeds();
    for (path, text) in valid_seeds(&seeds) {
        JobSpec::from_yaml_str(&text)
            .unwrap_or_else(|e| panic!("seed {} is not a valid spec: {e}", path.display()));
    }
    fuzz(
        "yaml_spec",
        &seeds,
        render_yaml,
        check_yaml,
        Some(check_object),
    );
    YAML_OUTCOMES.report("yaml_spec");
}

#[test]
fn properties_spec() {
    if replayed(check_properties) {
        return;
    }
    let seeds = properties_seeds();
    for (path, text) in valid_seeds(&seeds) {
        JobSpec::from_properties_str(&text)
            .unwrap_or_else(|e| panic!("seed {} is not a valid spec: {e}", path.display()));
        // The simple rendering used for mutation must still be a valid document, or every
        // mutated case would start from an error.
        let tree = properties_tree(&text);
        JobSpec::from_properties_str(&render_properties(&tree))
            .unwrap_or_else(|e| panic!("seed {} rendered back is not valid: {e}", path.display()));
    }
    fuzz(
        "properties_spec",
        &seeds,
        render_properties,
        check_properties,
        None,
    );
    PROPERTIES_OUTCOMES.report("properties_spec");
}

/// The seeds that must be valid specs (every one but the kept findings), as text: a target
/// whose seeds were errors would only fuzz the first parse error.
fn valid_seeds(seeds: &Seeds) -> impl Iterator<Item = (&PathBuf, String)> {
    let findings = findings_dir();
    seeds
        .docs
        .iter()
        .filter(move |(path, _)| !path.starts_with(&findings))
        .map(|(path, bytes)| (path, String::from_utf8_lossy(bytes).into_owned()))
}

fn findings_dir() -> PathBuf {
    root().join("contract/tests/fuzz/findings")
}

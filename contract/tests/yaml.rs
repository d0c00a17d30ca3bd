//! YAML parsing: the documented example, defaults, round trips, parse errors and the spec hash.

use std::path::PathBuf;
use std::time::Duration;

use cairn_contract::{
    CheckpointSpec, FileInput, GeneratorInput, InputSpec, JobSpec, KeyDistribution, OutputSpec,
    SpecError, StateSpec, TaskSpec,
};

/// The full example from the spec documentation, every key set.
const EXAMPLE: &str = r#"
name: wordcount
input:
  type: generator
  partitions: 4
  seed: 42
  keys: 1000
  distribution: zipf
  zipfExponent: 1.1
  recordsPerPartition: 50000
  ratePerSecond: 0
task:
  name: count
  config:
    field: word
    minLength: 3
output:
  type: file
  path: ./out
parallelism: 2
checkpoint:
  interval: 1m30s
  store: file://./.cairn/checkpoints
  retained: 3
  timeout: 10m
state:
  dir: ./.cairn/state
  cacheSize: 64MiB
"#;

const MINIMAL: &str = "name: wc\ninput: {type: generator, partitions: 4}\ntask: {name: count}\n";

fn parse_error(yaml: &str) -> (String, String) {
    match JobSpec::from_yaml_str(yaml) {
        Err(SpecError::Parse { field, message }) => (field, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn the_documented_example_parses_to_the_expected_spec() {
    let spec = JobSpec::from_yaml_str(EXAMPLE).unwrap();
    let mut config = serde_json::Map::new();
    config.insert("field".into(), "word".into());
    config.insert("minLength".into(), 3.into());
    let expected = JobSpec {
        name: "wordcount".into(),
        input: InputSpec::Generator(GeneratorInput {
            partitions: 4,
            seed: 42,
            keys: 1000,
            distribution: KeyDistribution::Zipf,
            zipf_exponent: 1.1,
            records_per_partition: Some(50_000),
            rate_per_second: Some(0),
            timestamp_step: cairn_contract::DEFAULT_TIMESTAMP_STEP,
            timestamp_disorder: Duration::ZERO,
        }),
        task: TaskSpec {
            name: "count".into(),
            config,
            wasm: None,
        },
        output: OutputSpec::File {
            path: PathBuf::from("./out"),
        },
        parallelism: 2,
        checkpoint: CheckpointSpec {
            interval: Duration::from_secs(90),
            store: "file://./.cairn/checkpoints".into(),
            retained: 3,
            timeout: Duration::from_secs(600),
            ..Default::default()
        },
        state: StateSpec {
            dir: PathBuf::from("./.cairn/state"),
            cache_size: 64 << 20,
        },
        standby: false,
        event_time: None,
        restore: Default::default(),
    };
    assert_eq!(spec, expected);
    assert_eq!(spec.input.partitions(), 4);
    assert_eq!(spec.input.type_name(), "generator");
    let InputSpec::Generator(generator) = &spec.input else {
        unreachable!()
    };
    assert_eq!(generator.rate_limit(), None);
}

#[test]
fn yaml_round_trips_through_canonical_forms() {
    let spec = JobSpec::from_yaml_str(EXAMPLE).unwrap();
    let yaml = spec.to_yaml();
    assert!(yaml.contains("interval: 90s"), "{yaml}");
    assert!(yaml.contains("timeout: 10m"), "{yaml}");
    assert!(yaml.contains("cacheSize: 64MiB"), "{yaml}");
    assert!(yaml.contains("zipfExponent: 1.1"), "{yaml}");
    let again = JobSpec::from_yaml_str(&yaml).unwrap();
    assert_eq!(again, spec);
    assert_eq!(again.to_yaml(), yaml, "serializing is a fixed point");
}

#[test]
fn every_output_type_round_trips() {
    for (output, written) in [
        (OutputSpec::Stdout, "type: stdout"),
        (OutputSpec::Null, "type: 'null'"),
        (
            OutputSpec::File {
                path: "/data/out".into(),
            },
            "path: /data/out",
        ),
    ] {
        let mut spec = JobSpec::from_yaml_str(MINIMAL).unwrap();
        spec.output = output.clone();
        let yaml = spec.to_yaml();
        assert!(yaml.contains(written), "{yaml}");
        assert_eq!(JobSpec::from_yaml_str(&yaml).unwrap().output, output);
    }
    let file_input = "name: wc\ninput: {type: file, partitions: 2, path: ./in, follow: false}\n\
                      task: {name: passthrough}\n";
    let spec = JobSpec::from_yaml_str(file_input).unwrap();
    let expected = FileInput {
        partitions: 2,
        path: "./in".into(),
        follow: false,
    };
    assert_eq!(spec.input, InputSpec::File(expected.clone()));
    assert_eq!(
        expected.partition_file(1),
        PathBuf::from("./in/partition-1")
    );
    assert_eq!(JobSpec::from_yaml_str(&spec.to_yaml()).unwrap(), spec);
}

#[test]
fn omitted_sections_get_their_defaults() {
    let spec = JobSpec::from_yaml_str(MINIMAL).unwrap();
    assert_eq!(
        spec,
        JobSpec::new(
            "wc",
            InputSpec::Generator(GeneratorInput::new(4)),
            TaskSpec::new("count")
        )
    );
    assert_eq!(spec.output, OutputSpec::Null);
    assert_eq!(spec.parallelism, 1);
    assert_eq!(spec.task.config, serde_json::Map::new());
    assert!(spec.task.is_builtin());
    assert_eq!(
        spec.checkpoint,
        CheckpointSpec {
            interval: Duration::from_secs(60),
            store: "file://./.cairn/checkpoints".into(),
            retained: 3,
            timeout: Duration::from_secs(600),
            ..Default::default()
        }
    );
    assert_eq!(
        spec.state,
        StateSpec {
            dir: "./.cairn/state".into(),
            cache_size: 64 * 1024 * 1024
        }
    );
    let InputSpec::Generator(generator) = &spec.input else {
        unreachable!()
    };
    assert_eq!(generator.seed, 0);
    assert_eq!(generator.keys, 1000);
    assert_eq!(generator.distribution, KeyDistribution::Uniform);
    assert_eq!(generator.zipf_exponent, 1.0);
    assert_eq!(generator.records_per_partition, None);
    assert_eq!(generator.rate_per_second, None);

    let partial =
        JobSpec::from_yaml_str(&format!("{MINIMAL}checkpoint: {{retained: 7}}\n")).unwrap();
    assert_eq!(partial.checkpoint.retained, 7);
    assert_eq!(partial.checkpoint.interval, Duration::from_secs(60));

    let file_input = "name: wc\ninput: {type: file, partitions: 1, path: in}\ntask: {name: x}\n";
    let InputSpec::File(file) = JobSpec::from_yaml_str(file_input).unwrap().input else {
        panic!("expected file input")
    };
    assert!(file.follow, "file input follows by default");
}

#[test]
fn unquoted_null_output_type_means_null_output() {
    let spec = JobSpec::from_yaml_str(&format!("{MINIMAL}output: {{type: null}}\n")).unwrap();
    assert_eq!(spec.output, OutputSpec::Null);
}

#[test]
fn durations_and_sizes_accept_bare_numbers() {
    let yaml = format!("{MINIMAL}checkpoint: {{interval: 250}}\nstate: {{cacheSize: 2097152}}\n");
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    assert_eq!(spec.checkpoint.interval, Duration::from_millis(250));
    assert_eq!(spec.state.cache_size, 2 << 20);
    let yaml = format!("{MINIMAL}state: {{cacheSize: 64MB}}\n");
    assert_eq!(
        JobSpec::from_yaml_str(&yaml).unwrap().state.cache_size,
        64_000_000
    );
}

#[test]
fn a_misspelt_top_level_key_is_named_with_the_expected_keys() {
    let (field, message) = parse_error(&format!("{MINIMAL}paralelism: 2\n"));
    assert_eq!(field, "paralelism");
    assert!(message.starts_with("unknown field `paralelism`, expected one of `name`, `input`, `task`, `output`, `parallelism`, `checkpoint`, `state`"), "{message}");
    assert!(message.ends_with("at line 4 column 1"), "{message}");
    let err = JobSpec::from_yaml_str(&format!("{MINIMAL}paralelism: 2\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("paralelism: unknown field `paralelism`"),
        "{err}"
    );
}

#[test]
fn a_misspelt_nested_key_is_named_with_its_full_path() {
    let yaml = "name: wc\ninput:\n  type: generator\n  partitons: 4\ntask: {name: count}\n";
    let (field, message) = parse_error(yaml);
    assert_eq!(field, "input.partitons");
    assert!(
        message
            .starts_with("unknown field `partitons`, expected one of `type`, `partitions`, `seed`"),
        "{message}"
    );
    assert!(message.contains("line 4 column 3"), "{message}");

    let (field, message) = parse_error(&format!("{MINIMAL}checkpoint: {{intervall: 5s}}\n"));
    assert_eq!(field, "checkpoint.intervall");
    assert!(
        message.starts_with(
            "unknown field `intervall`, expected one of `interval`, `store`, `retained`, `timeout`"
        ),
        "{message}"
    );
}

#[test]
fn a_key_of_the_other_input_type_is_rejected() {
    let yaml =
        "name: wc\ninput: {type: generator, partitions: 4, path: ./in}\ntask: {name: count}\n";
    let (field, message) = parse_error(yaml);
    assert_eq!(field, "input.path");
    assert!(message.starts_with("`path` is a setting of `type: file` input, not of `type: generator`; expected one of `type`, `partitions`, `seed`"), "{message}");

    // Written before `type:`, it can only be caught once the whole map is read.
    let yaml =
        "name: wc\ninput: {seed: 1, type: file, partitions: 4, path: ./in}\ntask: {name: count}\n";
    let (field, message) = parse_error(yaml);
    assert_eq!(field, "input");
    assert!(
        message.starts_with("`seed` is a setting of `type: generator` input, not of `type: file`"),
        "{message}"
    );

    let yaml = format!("{MINIMAL}output: {{type: stdout, path: ./out}}\n");
    let (field, message) = parse_error(&yaml);
    assert_eq!(field, "output.path");
    assert!(
        message.starts_with("`path` is a setting of `type: file` output, not of `type: stdout`"),
        "{message}"
    );
}

#[test]
fn missing_required_keys_are_named() {
    let (field, message) =
        parse_error("input: {type: generator, partitions: 4}\ntask: {name: count}\n");
    assert_eq!(
        (field.as_str(), message.starts_with("missing field `name`")),
        ("", true),
        "{message}"
    );

    let (field, message) = parse_error("name: wc\ninput: {type: generator}\ntask: {name: count}\n");
    assert_eq!(field, "input");
    assert!(
        message.starts_with("missing field `partitions`"),
        "{message}"
    );

    let (field, message) = parse_error("name: wc\ninput: {partitions: 4}\ntask: {name: count}\n");
    assert_eq!(field, "input");
    assert!(
        message.starts_with(
            "missing field `type`; write `type: generator`, `type: file` or `type: kafka`"
        ),
        "{message}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}output: {{type: file}}\n"));
    assert_eq!(field, "output");
    assert!(message.starts_with("missing field `path`"), "{message}");

    let (field, message) =
        parse_error("name: wc\ninput: {type: file, partitions: 1}\ntask: {name: count}\n");
    assert_eq!(field, "input");
    assert!(message.starts_with("missing field `path`"), "{message}");
}

#[test]
fn wrong_enum_values_list_the_accepted_ones() {
    let (field, message) =
        parse_error("name: wc\ninput: {type: kafkaa, partitions: 4}\ntask: {name: count}\n");
    assert_eq!(field, "input.type");
    assert!(
        message
            .starts_with("unknown variant `kafkaa`, expected one of `generator`, `file`, `kafka`"),
        "{message}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}output: {{type: s3}}\n"));
    assert_eq!(field, "output.type");
    assert!(
        message
            .starts_with("unknown variant `s3`, expected one of `stdout`, `null`, `file`, `kafka`"),
        "{message}"
    );

    let yaml = "name: wc\ninput: {type: generator, partitions: 4, distribution: normal}\ntask: {name: count}\n";
    let (field, message) = parse_error(yaml);
    assert_eq!(field, "input.distribution");
    assert!(
        message.starts_with("unknown variant `normal`, expected `uniform` or `zipf`"),
        "{message}"
    );
}

#[test]
fn bad_durations_and_sizes_name_the_field_and_the_fix() {
    let err = JobSpec::from_yaml_str(&format!("{MINIMAL}checkpoint:\n  interval: 10 parsecs\n"))
        .unwrap_err();
    let SpecError::Parse { field, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(field, "checkpoint.interval");
    assert!(
        message.starts_with(r#""10 parsecs" is not a duration; write e.g. "10s", "500ms" or "2m""#),
        "{message}"
    );
    assert!(
        err.to_string().starts_with(r#"checkpoint.interval: "10 parsecs" is not a duration; write e.g. "10s", "500ms" or "2m""#),
        "{err}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}checkpoint: {{timeout: -5}}\n"));
    assert_eq!(field, "checkpoint.timeout");
    assert!(
        message.starts_with(r#""-5" is not a duration"#),
        "{message}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}state: {{cacheSize: lots}}\n"));
    assert_eq!(field, "state.cacheSize");
    assert!(
        message.starts_with(r#""lots" is not a size; write e.g. "64MiB", "512KiB" or "1GiB""#),
        "{message}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}state: {{cacheSize: 1.5}}\n"));
    assert_eq!(field, "state.cacheSize");
    assert!(message.starts_with(r#""1.5" is not a size"#), "{message}");
}

#[test]
fn wrongly_typed_values_name_the_field() {
    let (field, message) =
        parse_error("name: wc\ninput: {type: generator, partitions: four}\ntask: {name: count}\n");
    assert_eq!(field, "input.partitions");
    assert!(
        message.starts_with("invalid type: string \"four\", expected u32"),
        "{message}"
    );

    let (field, message) = parse_error(&format!("{MINIMAL}parallelism: -1\n"));
    assert_eq!(field, "parallelism");
    assert!(
        message.starts_with("invalid type: integer `-1`, expected u32"),
        "{message}"
    );

    let (field, message) = parse_error(
        "name: wc\ninput: {type: generator, partitions: 4, partitions: 5}\ntask: {name: count}\n",
    );
    assert_eq!(field, "input");
    assert!(
        message.starts_with("duplicate field `partitions`"),
        "{message}"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let (field, message) = parse_error("name: \"unterminated\ninput: {}\n");
    assert_eq!(field, "name");
    assert!(
        message.starts_with("found unexpected end of stream at line 3 column 1"),
        "{message}"
    );

    let (field, message) = parse_error("name: wc\n  bad: indent\n");
    assert_eq!(field, "", "a syntax error in a key names no field");
    assert_eq!(
        message,
        "mapping values are not allowed in this context at line 2 column 6"
    );

    let (field, message) = parse_error("- name: wc\n");
    assert_eq!(
        field, "",
        "a problem with the whole document names no field"
    );
    assert_eq!(
        message,
        "invalid type: sequence, expected a job spec: a map with at least `name`, `input` and `task`"
    );
}

#[test]
fn spec_hash_is_stable_and_order_independent() {
    let spec = JobSpec::from_yaml_str(EXAMPLE).unwrap();
    let hash = spec.spec_hash();
    assert_eq!(hash.len(), 16);
    assert!(hash
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(JobSpec::from_yaml_str(EXAMPLE).unwrap().spec_hash(), hash);
    // Pinned so an accidental change of the canonical form (which would make restores think the
    // spec changed) fails here first.
    assert_eq!(hash, "72761ea599e02b9b");

    let reordered = r#"
state: {cacheSize: 64MiB, dir: ./.cairn/state}
checkpoint: {timeout: 600s, retained: 3, store: "file://./.cairn/checkpoints", interval: 90000}
parallelism: 2
output: {path: ./out, type: file}
task:
  config: {minLength: 3, field: word}
  name: count
input:
  ratePerSecond: 0
  recordsPerPartition: 50000
  zipfExponent: 1.1
  distribution: zipf
  keys: 1000
  seed: 42
  partitions: 4
  type: generator
name: wordcount
"#;
    assert_eq!(JobSpec::from_yaml_str(reordered).unwrap().spec_hash(), hash);

    let mut changed = spec.clone();
    changed.parallelism = 4;
    assert_ne!(changed.spec_hash(), hash);
    let mut changed = spec.clone();
    changed.checkpoint.interval = Duration::from_secs(91);
    assert_ne!(changed.spec_hash(), hash);
    let mut changed = spec;
    changed.task.config.insert("field".into(), "line".into());
    assert_ne!(changed.spec_hash(), hash);
}

#[test]
fn a_parsed_yaml_value_gives_the_same_spec_and_errors_without_lines() {
    let value: serde_yaml::Value = serde_yaml::from_str(MINIMAL).unwrap();
    assert_eq!(
        JobSpec::from_yaml_value(value).unwrap(),
        JobSpec::from_yaml_str(MINIMAL).unwrap()
    );
    let bad: serde_yaml::Value = serde_yaml::from_str(
        "name: wc\ninput: {type: generator, partitions: four}\ntask: {name: count}\n",
    )
    .unwrap();
    match JobSpec::from_yaml_value(bad) {
        Err(SpecError::Parse { field, message }) => {
            assert_eq!(field, "input.partitions");
            assert!(!message.contains(" at line "), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn event_time_parses_round_trips_and_is_checked() {
    let yaml = "name: w\ninput: {type: generator, partitions: 2, timestampStep: 10us, timestampDisorder: 2s}\n\
                eventTime: {maxOutOfOrderness: 5s, idleTimeout: 1m}\n\
                task: {name: window, config: {window: tumbling, size: 10s}}\n";
    let spec = JobSpec::from_yaml_str(yaml).unwrap();
    let event_time = spec.event_time.clone().unwrap();
    assert_eq!(event_time.max_out_of_orderness, Duration::from_secs(5));
    assert_eq!(event_time.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(event_time.timestamp_field, None);
    let InputSpec::Generator(g) = &spec.input else {
        unreachable!()
    };
    assert_eq!(
        (g.timestamp_step, g.timestamp_disorder),
        (Duration::from_micros(10), Duration::from_secs(2))
    );
    assert_eq!(JobSpec::from_yaml_str(&spec.to_yaml()).unwrap(), spec);
    // A job without the new fields keeps its hash: they are left out when absent or default.
    let plain = JobSpec::from_yaml_str(
        "name: w\ninput: {type: generator, partitions: 2}\ntask: {name: count}\n",
    )
    .unwrap();
    assert!(!plain.to_yaml().contains("timestamp") && !plain.to_yaml().contains("eventTime"));

    let err = |yaml: &str| JobSpec::from_yaml_str(yaml).unwrap_err().to_string();
    let e = err("name: w\ninput: {type: generator, partitions: 2}\ntask: {name: window}\n");
    assert!(e.contains("eventTime") && e.contains("window"), "{e}");
    let e = err("name: w\ninput: {type: file, partitions: 2, path: ./in}\neventTime: {}\ntask: {name: count}\n");
    assert!(e.contains("eventTime.timestampField"), "{e}");
    let e = err("name: w\ninput: {type: generator, partitions: 2}\neventTime: {idleTimeout: 0s}\ntask: {name: count}\n");
    assert!(e.contains("eventTime.idleTimeout"), "{e}");
    let e = err("name: w\ninput: {type: generator, partitions: 2}\neventTime: {maxOutOfOrder: 1s}\ntask: {name: count}\n");
    assert!(e.contains("maxOutOfOrder"), "{e}");
    let e = err("name: w\ninput: {type: generator, partitions: 2, timestampStep: 0s}\ntask: {name: count}\n");
    assert!(e.contains("input.timestampStep"), "{e}");
    let e = err("name: w\ninput: {type: kafka, partitions: 2, topic: t, brokers: b:1, timestampStep: 1ms}\ntask: {name: count}\n");
    assert!(
        e.contains("timestampStep") && e.contains("generator"),
        "{e}"
    );
}

/// Found by the fuzz test: an empty section was accepted in an object and refused as text.
#[test]
fn an_empty_section_reads_as_its_defaults_in_text_and_in_objects() {
    let text = "name: w\ninput: {type: generator, partitions: 2}\ntask: {name: count}\ncheckpoint:\nstate: null\nrestore: ~\n";
    let spec = JobSpec::from_yaml_str(text).unwrap();
    let object = JobSpec::from_yaml_value(serde_yaml::from_str(text).unwrap()).unwrap();
    assert_eq!(spec, object);
    assert_eq!(spec.checkpoint, CheckpointSpec::default());
    assert_eq!(spec.state, StateSpec::default());
}

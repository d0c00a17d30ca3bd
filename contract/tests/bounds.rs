//! Hostile documents: a properties key nested 100,000 levels deep, too many properties, a spec
//! of many megabytes, an endless file, numbers past every maximum. Each is a clear error naming
//! what is wrong; none crashes or hangs.

use cairn_contract::{JobSpec, SpecError, MAX_SPEC_LEN};

/// Runs `f` on a thread with the default 2 MiB stack of spawned threads (the test harness may
/// be given a bigger one through RUST_MIN_STACK), so recursion as deep as the input would
/// overflow it.
fn on_default_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn property_errors(text: &str) -> Vec<String> {
    match JobSpec::from_properties_str(text) {
        Err(SpecError::Properties(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected property errors, got {other:?}"),
    }
}

#[test]
fn a_properties_key_with_100000_segments_is_an_error_not_a_stack_overflow() {
    let errors = on_default_stack(|| {
        let key = format!("cairn.{}", vec!["a"; 100_000].join("."));
        property_errors(&format!(
            "job.name=deep\ntask.class=count\ncairn.input.type=generator\n\
             cairn.input.partitions=1\n{key}=1\n"
        ))
    });
    assert_eq!(
        errors,
        [format!(
            "line 5: cairn.{}... (200005 bytes): has 100000 field names, more than the maximum \
             of 32; write a dotted camelCase path such as `cairn.input.partitions`; no job spec \
             field is nested that deep",
            "a.".repeat(37)
        )]
    );
}

#[test]
fn a_key_32_segments_deep_is_still_read() {
    // 32 field names: `task.config` and 30 levels of the task's own config.
    let key = format!("cairn.task.config.{}", vec!["a"; 30].join("."));
    let spec = on_default_stack(move || {
        JobSpec::from_properties_str(&format!(
            "job.name=deep\ntask.class=count\ncairn.input.type=generator\n\
             cairn.input.partitions=1\n{key}=1\n"
        ))
    })
    .unwrap();
    let mut node = &serde_json::Value::Object(spec.task.config);
    for _ in 0..30 {
        node = &node["a"];
    }
    assert_eq!(node, &serde_json::Value::from(1));
}

#[test]
fn more_than_1000_properties_are_refused() {
    let mut text = String::from("job.name=many\ntask.class=count\n");
    for i in 0..1000 {
        text.push_str(&format!("cairn.task.config.k{i}=1\n"));
    }
    assert_eq!(
        property_errors(&text),
        [
            "line 1001: cairn.task.config.k998: is past the maximum of 1000 properties in one job \
          spec; a job spec needs a few dozen properties at most: check that this is the right \
          file"
        ]
    );
}

#[test]
fn a_spec_over_1mib_is_refused_before_parsing() {
    let padding = format!("# {}\n", "x".repeat(MAX_SPEC_LEN));
    let yaml = format!(
        "name: big\ninput: {{type: generator, partitions: 1}}\ntask: {{name: count}}\n{padding}"
    );
    for result in [
        JobSpec::from_yaml_str(&yaml),
        JobSpec::from_properties_str(&padding),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, SpecError::TooLarge { max: MAX_SPEC_LEN }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the job spec is larger than the maximum of 1048576 bytes; a job spec is a few \
             kilobytes at most: check that this is the right file"
        );
    }
    let file = std::env::temp_dir().join(format!("cairn-contract-big-{}.yaml", std::process::id()));
    std::fs::write(&file, &yaml).unwrap();
    let result = JobSpec::from_path(&file);
    std::fs::remove_file(&file).unwrap();
    assert!(
        matches!(result, Err(SpecError::TooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn an_endless_file_is_not_read_to_its_end() {
    let endless = std::path::Path::new("/dev/zero");
    if !endless.exists() {
        return;
    }
    let result = JobSpec::from_path(endless);
    assert!(
        matches!(result, Err(SpecError::TooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn numbers_past_their_type_are_parse_errors_naming_the_field() {
    for (yaml, field) in [
        (
            "name: j\ninput: {type: generator, partitions: 99999999999}\ntask: {name: count}\n",
            "input.partitions",
        ),
        (
            "name: j\ninput: {type: generator, partitions: 1, keys: -1}\ntask: {name: count}\n",
            "input.keys",
        ),
        (
            "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: count}\n\
             parallelism: 4294967296\n",
            "parallelism",
        ),
        (
            "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: count}\n\
             state: {cacheSize: 99999999TiB}\n",
            "state.cacheSize",
        ),
    ] {
        match JobSpec::from_yaml_str(yaml) {
            Err(SpecError::Parse { field: got, .. }) => assert_eq!(got, field, "{yaml}"),
            other => panic!("{yaml}: expected a parse error, got {other:?}"),
        }
    }
}

//! Validation: every rule rejects a bad value naming the field and the fix, and all problems are
//! reported at once.

use std::time::Duration;

use cairn_contract::{
    FieldError, FileInput, GeneratorInput, InputSpec, JobSpec, OutputSpec, SpecError, TaskSpec,
    WasmTaskSpec, DEFAULT_MAX_INTERVAL, DEFAULT_MIN_INTERVAL, WASM_TASK_NAME,
};

fn valid() -> JobSpec {
    JobSpec::new(
        "wordcount",
        InputSpec::Generator(GeneratorInput::new(4)),
        TaskSpec::new("count"),
    )
}

fn generator(spec: &mut JobSpec) -> &mut GeneratorInput {
    match &mut spec.input {
        InputSpec::Generator(generator) => generator,
        _ => panic!("expected a generator input"),
    }
}

fn problems(spec: &JobSpec) -> Vec<FieldError> {
    match spec.validate() {
        Err(SpecError::Invalid(errors)) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

/// Asserts the spec fails with exactly one error, on `field`, whose text contains `fix`.
fn assert_rejected(spec: &JobSpec, field: &str, problem: &str, fix: &str) {
    let errors = problems(spec);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert_eq!(error.field, field);
    assert_eq!(error.problem, problem);
    assert!(
        error.fix.contains(fix),
        "fix {:?} should mention {fix:?}",
        error.fix
    );
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{field}: {problem}; ")),
        "{shown}"
    );
}

#[test]
fn a_valid_spec_passes() {
    assert!(valid().validate().is_ok());
    let mut spec = valid();
    spec.name = "a".repeat(63);
    spec.parallelism = 4;
    generator(&mut spec).partitions = 4096;
    assert!(spec.validate().is_ok());
}

#[test]
fn name_must_be_a_dns_label() {
    let fix = "use a DNS-1123 label";
    for (name, problem) in [
        ("", "is empty".to_owned()),
        (
            "Word_Count",
            r#""Word_Count" contains characters not allowed in a DNS label: "W_C""#.into(),
        ),
        ("-wc", r#""-wc" starts or ends with '-'"#.into()),
        ("wc-", r#""wc-" starts or ends with '-'"#.into()),
        (
            "wc.1",
            r#""wc.1" contains characters not allowed in a DNS label: ".""#.into(),
        ),
    ] {
        let mut spec = valid();
        spec.name = name.into();
        assert_rejected(&spec, "name", &problem, fix);
    }
    let mut spec = valid();
    spec.name = "a".repeat(64);
    assert_rejected(
        &spec,
        "name",
        &format!("{:?} is 64 characters long, more than 63", spec.name),
        fix,
    );
}

#[test]
fn partitions_must_be_between_1_and_4096() {
    let mut spec = valid();
    generator(&mut spec).partitions = 0;
    assert_rejected(
        &spec,
        "input.partitions",
        "0 is not between 1 and 4096",
        "partitions: 4",
    );
    generator(&mut spec).partitions = 4097;
    assert_rejected(
        &spec,
        "input.partitions",
        "4097 is not between 1 and 4096",
        "partitions: 4",
    );
}

#[test]
fn a_standby_needs_a_container_of_its_own_process() {
    let mut spec = valid();
    spec.standby = true;
    spec.parallelism = 1;
    assert_rejected(
        &spec,
        "standby",
        "needs parallelism 2 or more, not 1",
        "container 0 runs in the coordinator's process, which has no standby yet",
    );
    spec.parallelism = 2;
    assert!(spec.validate().is_ok(), "{:?}", spec.validate());
    // Off by default, and left out of the serialised spec (so older specs keep their hash).
    let plain = valid();
    assert!(!plain.standby);
    assert!(!serde_json::to_string(&plain).unwrap().contains("standby"));
}

#[test]
fn parallelism_must_be_between_1_and_partitions() {
    let mut spec = valid();
    spec.parallelism = 6;
    assert_rejected(
        &spec,
        "parallelism",
        "6 is more than input.partitions (4)",
        "each container runs at least one task, so lower parallelism or raise input.partitions",
    );
    assert_eq!(
        problems(&spec)[0].to_string(),
        "parallelism: 6 is more than input.partitions (4); each container runs at least one \
         task, so lower parallelism or raise input.partitions"
    );
    spec.parallelism = 0;
    assert_rejected(
        &spec,
        "parallelism",
        "0 containers cannot run the job",
        "at least 1",
    );
}

#[test]
fn generator_settings_are_checked() {
    let mut spec = valid();
    generator(&mut spec).keys = 0;
    assert_rejected(
        &spec,
        "input.keys",
        "0 keys leaves nothing to generate",
        "1 or more",
    );

    for (exponent, shown) in [
        (0.0, "0"),
        (-1.5, "-1.5"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
    ] {
        let mut spec = valid();
        generator(&mut spec).zipf_exponent = exponent;
        assert_rejected(
            &spec,
            "input.zipfExponent",
            &format!("{shown} is not a finite number greater than 0"),
            "zipfExponent: 1.1",
        );
    }
}

#[test]
fn paths_must_not_be_empty() {
    let mut spec = valid();
    spec.input = InputSpec::File(FileInput {
        partitions: 4,
        path: "".into(),
        follow: true,
    });
    assert_rejected(&spec, "input.path", "is empty", "partition-0");

    let mut spec = valid();
    spec.output = OutputSpec::File { path: "".into() };
    assert_rejected(&spec, "output.path", "is empty", "path: ./out");

    let mut spec = valid();
    spec.state.dir = "".into();
    assert_rejected(&spec, "state.dir", "is empty", "dir: ./.cairn/state");
}

#[test]
fn task_name_must_not_be_empty() {
    let mut spec = valid();
    spec.task.name = "  ".into();
    assert_rejected(&spec, "task.name", "is empty", "built-in task");
}

#[test]
fn a_wasm_task_needs_no_name_and_is_named_wasm() {
    let yaml = "name: j\ninput: {type: generator, partitions: 2}\n\
                task: {wasm: {module: tasks/count.wasm, config: {stateVersion: 2}}}\n";
    let spec = JobSpec::from_yaml_str(yaml).unwrap();
    assert_eq!(spec.task.name, WASM_TASK_NAME);
    let wasm = spec.task.wasm.as_ref().unwrap();
    assert_eq!(wasm.module, "tasks/count.wasm");
    assert_eq!(wasm.max_memory, 256 << 20);
    assert_eq!(wasm.max_call_time, Duration::from_secs(10));
    assert_eq!(wasm.config["stateVersion"], 2);
    assert!(!spec.task.is_builtin());
    // A name, when given, is kept: it is what a savepoint records.
    let named = JobSpec::from_yaml_str(&yaml.replace("{wasm:", "{name: clicks, wasm:")).unwrap();
    assert_eq!(named.task.name, "clicks");
    // Written back and read again, it is the same spec.
    assert_eq!(JobSpec::from_yaml_str(&spec.to_yaml()).unwrap(), spec);
}

#[test]
fn a_wasm_task_is_checked() {
    let with = |edit: &dyn Fn(&mut WasmTaskSpec)| {
        let mut spec = valid();
        let mut wasm = WasmTaskSpec::new("count.wasm");
        edit(&mut wasm);
        spec.task = TaskSpec::wasm(wasm);
        spec
    };
    assert_rejected(
        &with(&|w| w.module = " ".into()),
        "task.wasm.module",
        "is empty",
        "path or store URL",
    );
    assert_rejected(
        &with(&|w| w.max_memory = 1 << 10),
        "task.wasm.maxMemory",
        "1KiB is outside 1MiB..4GiB",
        "maxMemory: 256MiB",
    );
    assert_rejected(
        &with(&|w| w.max_memory = 8 << 30),
        "task.wasm.maxMemory",
        "8GiB is outside 1MiB..4GiB",
        "at most 4GiB",
    );
    assert_rejected(
        &with(&|w| w.max_call_time = Duration::from_millis(2)),
        "task.wasm.maxCallTime",
        "2ms is shorter than 10ms",
        "maxCallTime: 10s",
    );
    let mut spec = with(&|_| {});
    spec.task.config.insert("field".into(), "word".into());
    assert_rejected(
        &spec,
        "task.config",
        "is set next to task.wasm",
        "task.wasm.config",
    );
    let err = JobSpec::from_yaml_str(
        "name: j\ninput: {type: generator, partitions: 2}\ntask: {wasm: {modul: x.wasm}}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("modul"), "a misspelt key is named: {err}");
}

#[test]
fn checkpoint_settings_are_checked() {
    let mut spec = valid();
    spec.checkpoint.interval = Duration::from_millis(5);
    assert_rejected(
        &spec,
        "checkpoint.interval",
        "5ms is shorter than the 10ms minimum",
        "interval: 10s",
    );
    spec.checkpoint.interval = Duration::from_millis(10);
    assert!(spec.validate().is_ok(), "10ms is the minimum, inclusive");

    let mut spec = valid();
    spec.checkpoint.retained = 0;
    assert_rejected(
        &spec,
        "checkpoint.retained",
        "0 would keep no checkpoint to restore from",
        "at least 1",
    );

    let mut spec = valid();
    spec.checkpoint.timeout = Duration::ZERO;
    assert_rejected(
        &spec,
        "checkpoint.timeout",
        "0s would abandon every checkpoint",
        "timeout: 10m",
    );
}

#[test]
fn checkpoint_store_must_be_a_supported_url() {
    let accepted = "`file://./.cairn/checkpoints` (relative to the working directory), \
                    `file:///var/lib/cairn/checkpoints` (absolute)";
    for (store, problem) in [
        (
            "./checkpoints",
            "\"./checkpoints\" is not a URL (it has no `scheme://`)",
        ),
        (
            "webhdfs://nn/ckpt",
            "\"webhdfs://nn/ckpt\" uses the scheme `webhdfs`, which is not one of `file`, `s3`, \
             `gs`, `az`, `abfs`, `abfss`, `hdfs`, `memory`",
        ),
        (
            "hdfs://nn:8020",
            "\"hdfs://nn:8020\" has no directory path (write e.g. \
          `hdfs://nn:8020/cairn/jobs`)",
        ),
        ("file://", "\"file://\" has no directory path"),
        ("memory://", "\"memory://\" has no store name"),
        ("s3://", "\"s3://\" has no bucket name"),
    ] {
        let mut spec = valid();
        spec.checkpoint.store = store.into();
        assert_rejected(&spec, "checkpoint.store", problem, accepted);
    }
    for store in [
        "file:///var/lib/cairn",
        "file://ckpt",
        "memory://test",
        "s3://bucket/prefix",
        "gs://bucket/prefix",
        "az://container/prefix",
        "abfss://container@account.dfs.core.windows.net/prefix",
        "hdfs://nn:8020/cairn",
        "hdfs:///cairn",
    ] {
        let mut spec = valid();
        spec.checkpoint.store = store.into();
        assert!(spec.validate().is_ok(), "{store} should be accepted");
    }
}

#[test]
fn cache_size_must_be_at_least_1mib() {
    let mut spec = valid();
    spec.state.cache_size = 512 * 1024;
    assert_rejected(
        &spec,
        "state.cacheSize",
        "512KiB is below the 1MiB minimum",
        "cacheSize: 64MiB",
    );
    spec.state.cache_size = 1 << 20;
    assert!(spec.validate().is_ok());
}

#[test]
fn every_count_has_a_maximum_named_in_its_error() {
    let mut spec = valid();
    generator(&mut spec).keys = 100_000_001;
    assert_rejected(
        &spec,
        "input.keys",
        "100000001 is more than the maximum of 100000000",
        "use fewer distinct keys",
    );
    generator(&mut spec).keys = 100_000_000;
    assert!(spec.validate().is_ok());

    let mut spec = valid();
    generator(&mut spec).records_per_partition = Some(u64::MAX);
    assert_rejected(
        &spec,
        "input.recordsPerPartition",
        "18446744073709551615 is more than the maximum of 1000000000000000",
        "leave `recordsPerPartition` out for an endless input",
    );
    generator(&mut spec).records_per_partition = Some(1_000_000_000_000_000);
    assert!(spec.validate().is_ok());

    let mut spec = valid();
    generator(&mut spec).rate_per_second = Some(1_000_000_001);
    assert_rejected(
        &spec,
        "input.ratePerSecond",
        "1000000001 is more than the maximum of 1000000000",
        "write a lower rate",
    );

    let mut spec = valid();
    spec.checkpoint.retained = 10_001;
    assert_rejected(
        &spec,
        "checkpoint.retained",
        "10001 is more than the maximum of 10000",
        "keep older states as savepoints",
    );
    // Tests keep every checkpoint of a run with retained: 1000.
    spec.checkpoint.retained = 10_000;
    assert!(spec.validate().is_ok());

    let mut spec = valid();
    spec.state.cache_size = (1 << 40) + 1;
    assert_rejected(
        &spec,
        "state.cacheSize",
        "1099511627777 is more than the maximum of 1TiB",
        "cacheSize: 64MiB",
    );
    spec.state.cache_size = 1 << 40;
    assert!(spec.validate().is_ok());

    // With partitions out of range, parallelism is still bounded on its own.
    let mut spec = valid();
    generator(&mut spec).partitions = 0;
    spec.parallelism = u32::MAX;
    let errors = problems(&spec);
    assert_eq!(
        errors[1].to_string(),
        "parallelism: 4294967295 is more than the maximum of 4096; run at most one container \
         per input partition"
    );
}

/// Text durations are bounded when parsed; a spec built in code is bounded by validation.
#[test]
fn durations_set_in_code_are_at_most_a_year() {
    let year = Duration::from_secs(365 * 24 * 3600);
    let mut spec = valid();
    spec.checkpoint.interval = year;
    spec.checkpoint.timeout = year;
    assert!(spec.validate().is_ok());
    spec.checkpoint.interval = Duration::MAX;
    assert_rejected(
        &spec,
        "checkpoint.interval",
        "18446744073709551615999999999ns is longer than the maximum of 8760h (one year)",
        "write a shorter duration",
    );
    let mut spec = valid();
    spec.checkpoint.timeout = year + Duration::from_secs(1);
    assert_rejected(
        &spec,
        "checkpoint.timeout",
        "31536001s is longer than the maximum of 8760h (one year)",
        "write a shorter duration",
    );
    let mut kafka = cairn_contract::KafkaInput::new(4, "t", "b:1");
    kafka.partition_check_interval = year * 2;
    let mut spec = valid();
    spec.input = InputSpec::Kafka(kafka);
    assert_rejected(
        &spec,
        "input.partitionCheckInterval",
        "17520h is longer than the maximum of 8760h (one year)",
        "write a shorter duration",
    );
}

#[test]
fn all_problems_are_reported_together() {
    let yaml = r#"
name: Word_Count
input: {type: generator, partitions: 4, keys: 0}
task: {name: ""}
parallelism: 6
checkpoint: {interval: 1ms, store: ftp://x, retained: 0, timeout: 0}
state: {cacheSize: 1KiB}
"#;
    let err = JobSpec::from_yaml_str(yaml).unwrap_err();
    let SpecError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "input.keys",
            "task.name",
            "parallelism",
            "checkpoint.interval",
            "checkpoint.store",
            "checkpoint.retained",
            "checkpoint.timeout",
            "state.cacheSize",
        ]
    );
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 9, "{shown}");
    assert!(
        shown
            .lines()
            .all(|line| line.contains(": ") && line.contains("; ")),
        "{shown}"
    );
    assert!(
        shown.contains("\ncheckpoint.interval: 1ms is shorter than the 10ms minimum; "),
        "{shown}"
    );
}

#[test]
fn a_recovery_objective_and_its_bounds_are_checked() {
    let mut spec = valid();
    spec.checkpoint.min_interval = Some(Duration::from_secs(1));
    assert_rejected(
        &spec,
        "checkpoint.minInterval",
        "set without checkpoint.targetRecoveryTime, which it bounds",
        "targetRecoveryTime",
    );

    let mut spec = valid();
    spec.checkpoint.target_recovery_time = Some(Duration::from_millis(500));
    assert_rejected(
        &spec,
        "checkpoint.targetRecoveryTime",
        "500ms is shorter than the 1s minimum (a restart alone takes about that long)",
        "targetRecoveryTime: 30s",
    );

    let mut spec = valid();
    spec.checkpoint.target_recovery_time = Some(Duration::from_secs(30));
    assert!(spec.validate().is_ok(), "{:?}", problems(&spec));
    spec.checkpoint.min_interval = Some(Duration::from_secs(20));
    spec.checkpoint.max_interval = Some(Duration::from_secs(10));
    assert_rejected(
        &spec,
        "checkpoint.maxInterval",
        "10s is shorter than checkpoint.minInterval (20s)",
        "at least minInterval",
    );
    spec.checkpoint.min_interval = Some(Duration::from_millis(1));
    assert_rejected(
        &spec,
        "checkpoint.minInterval",
        "1ms is shorter than the 10ms minimum",
        "minInterval: 1s",
    );

    // The defaults fill in, and the first interval is `interval` moved into the bounds.
    let mut spec = valid();
    spec.checkpoint.target_recovery_time = Some(Duration::from_secs(30));
    spec.checkpoint.interval = Duration::from_secs(3600);
    let c = &spec.checkpoint;
    assert_eq!(
        c.interval_bounds(),
        (DEFAULT_MIN_INTERVAL, DEFAULT_MAX_INTERVAL)
    );
    assert_eq!(c.first_interval(), DEFAULT_MAX_INTERVAL);
    assert_eq!(c.health_interval(), DEFAULT_MAX_INTERVAL);
    spec.checkpoint.target_recovery_time = None;
    assert_eq!(spec.checkpoint.health_interval(), Duration::from_secs(3600));
}

#[test]
fn a_recovery_objective_reads_from_yaml() {
    let spec = JobSpec::from_yaml_str(
        "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: count}\n\
         checkpoint: {targetRecoveryTime: 30s, minInterval: 2s, maxInterval: 5m}\n",
    )
    .unwrap();
    assert_eq!(
        spec.checkpoint.target_recovery_time,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        spec.checkpoint.interval_bounds(),
        (Duration::from_secs(2), Duration::from_secs(300))
    );
    let err = JobSpec::from_yaml_str(
        "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: count}\n\
         checkpoint: {targetRecoveryTime: soon}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("checkpoint.targetRecoveryTime"), "{err}");
}

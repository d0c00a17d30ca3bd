//! The generated CRD's schema and CEL rules, evaluated by the API server's own validation code
//! (the Go helper in `tests/celcheck`, built from k8s.io/apiextensions-apiserver at the
//! pinned Kubernetes version): the CRD is accepted (rules compile, within the cost limits), the
//! audit's StreamJob is rejected naming its field, and the CEL duration bound agrees with the
//! contract crate's (`cairn_contract::parse_duration`) on a table of values. Needs `go` (the kind cluster's
//! Kubernetes and Helm are built with it too).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cairn_operator::crd::job_schema::{duration_bound_rule, DURATION_PATTERN};
use cairn_operator::crd::rules::definition_yaml;
use cairn_operator::validate::{MAX_FALLBACK_ATTEMPTS, MAX_RETAINED, MAX_SAVEPOINT_HISTORY};
use common::repo_file;
use serde_json::{json, Value};

/// What the API server's validation said: errors of the CRD, and of each object.
struct Verdicts {
    crd: Vec<String>,
    objects: Vec<Vec<String>>,
}

/// Builds the helper once per test binary (Go's build cache makes later builds instant).
fn celcheck() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("celcheck");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo_file("operator/tests/celcheck"))
            .env("GOWORK", "off")
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .status()
            .expect("`go` runs (install Go; the test bed needs it as well)");
        assert!(status.success(), "building operator/tests/celcheck failed");
        out
    })
}

/// Validates `objects` against the generated CRD.
fn validate(objects: &[Value]) -> Verdicts {
    let dir = tempfile::tempdir().unwrap();
    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, definition_yaml()).unwrap();
    let mut child = Command::new(celcheck())
        .arg(&crd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), objects).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "celcheck failed");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Verdicts {
        crd: strings(&answer["crd"]),
        objects: answer["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(strings)
            .collect(),
    }
}

/// The count example as a JSON object.
fn example() -> Value {
    let text = std::fs::read_to_string(repo_file("examples/k8s/count.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The example with `value` at the JSON pointer `path` (parents created as needed).
fn with(path: &str, value: Value) -> Value {
    let mut obj = example();
    let mut at = &mut obj;
    for key in path.trim_start_matches('/').split('/') {
        at = &mut at[key];
    }
    *at = value;
    obj
}

#[test]
fn the_api_server_accepts_the_crd_and_the_examples() {
    let examples: Vec<Value> = [
        "examples/k8s/count.yaml",
        "examples/k8s/file-sink.yaml",
        "examples/k8s/periodic-savepoints.yaml",
        "examples/k8s/kafka-s3.yaml",
        "examples/k8s/kafka-windows.yaml",
        "examples/k8s/standby.yaml",
        "examples/k8s/autoscaled.yaml",
        "examples/k8s/wasm-task.yaml",
        "examples/k8s/hdfs-store.yaml",
        "examples/k8s/azure-store.yaml",
    ]
    .iter()
    .map(|p| serde_yaml::from_str(&std::fs::read_to_string(repo_file(p)).unwrap()).unwrap())
    .collect();
    let verdicts = validate(&examples);
    assert_eq!(verdicts.crd, Vec::<String>::new(), "the CRD itself");
    for (i, errors) in verdicts.objects.iter().enumerate() {
        assert_eq!(errors, &Vec::<String>::new(), "example {i}");
    }
}

/// `standby: true` needs parallelism 2 or more (the contract crate's rule) and a name short
/// enough for the standbys' StatefulSet `<name>-standby` (the operator's); both refused by the
/// API server naming the field.
#[test]
fn standby_needs_two_containers_and_a_short_name() {
    let alone = with("/spec/job/standby", json!(true));
    let mut one = alone.clone();
    one["spec"]["job"]["parallelism"] = json!(1);
    let mut unset = alone.clone();
    unset["spec"]["job"]
        .as_object_mut()
        .unwrap()
        .remove("parallelism");
    let long_name = "n".repeat(45);
    let mut long = alone.clone();
    long["metadata"]["name"] = json!(long_name);
    let mut just_fits = alone.clone();
    just_fits["metadata"]["name"] = json!("n".repeat(44));
    let mut off_long = with("/spec/job/standby", json!(false));
    off_long["metadata"]["name"] = json!(long_name);
    let verdicts = validate(&[alone, one, unset, long, just_fits, off_long]);
    let parallelism = "spec.job.standby: Invalid value: \"object\": spec.job.standby needs spec.job.parallelism >= 2: standbys cover containers 1..P-1 (container 0 runs in the coordinator's process, which has none); raise parallelism or remove standby";
    assert_eq!(verdicts.objects[0], Vec::<String>::new(), "P 2: valid");
    assert_eq!(verdicts.objects[1], [parallelism]);
    assert_eq!(verdicts.objects[2], [parallelism], "P defaults to 1");
    assert_eq!(verdicts.objects[3].len(), 1, "{:?}", verdicts.objects[3]);
    assert!(
        verdicts.objects[3][0].contains(
            "metadata.name of a StreamJob with spec.job.standby may have at most 44 characters"
        ),
        "{:?}",
        verdicts.objects[3]
    );
    assert_eq!(
        verdicts.objects[4],
        Vec::<String>::new(),
        "44 characters fit"
    );
    assert_eq!(
        verdicts.objects[5],
        Vec::<String>::new(),
        "no standby, no limit"
    );
}

/// The autoscaler's bounds in the wrong order are refused naming both fields; either alone is
/// fine.
#[test]
fn autoscaler_min_above_max_is_rejected() {
    let inverted = with(
        "/spec/autoscaler",
        json!({"minParallelism": 3, "maxParallelism": 2}),
    );
    let only_min = with("/spec/autoscaler", json!({"minParallelism": 3}));
    let verdicts = validate(&[inverted, only_min]);
    assert_eq!(
        verdicts.objects[0],
        ["spec.autoscaler: Invalid value: \"object\": spec.autoscaler.minParallelism must be <= spec.autoscaler.maxParallelism"]
    );
    assert_eq!(verdicts.objects[1], Vec::<String>::new());
}

/// A task needs a name or a WebAssembly component; a component's call time is a bounded
/// duration like every other.
#[test]
fn a_task_without_name_or_wasm_is_rejected() {
    let neither = with("/spec/job/task", json!({"config": {"field": "word"}}));
    let wasm_only = with(
        "/spec/job/task",
        json!({"wasm": {"module": "/t/count.wasm"}}),
    );
    let bad_time = with(
        "/spec/job/task",
        json!({"wasm": {"module": "/t/count.wasm", "maxCallTime": "soon"}}),
    );
    let verdicts = validate(&[neither, wasm_only, bad_time]);
    assert_eq!(
        verdicts.objects[0],
        ["spec.job.task: Invalid value: \"object\": spec.job.task needs a name (a built-in or custom task) or wasm (a WebAssembly component)"]
    );
    assert_eq!(verdicts.objects[1], Vec::<String>::new());
    assert_eq!(verdicts.objects[2].len(), 1, "{:?}", verdicts.objects[2]);
    assert!(
        verdicts.objects[2][0].contains("spec.job.task.wasm.maxCallTime must be a duration"),
        "{:?}",
        verdicts.objects[2]
    );
}

#[test]
fn the_audit_interval_is_rejected_naming_the_field() {
    let audit = with("/spec/job/checkpoint/interval", json!("1800000000000000h"));
    let verdicts = validate(&[audit]);
    assert_eq!(
        verdicts.objects[0],
        [
            "spec.job.checkpoint.interval: Invalid value: \"string\": spec.job.checkpoint.interval must be at most 8760h (one year)"
        ]
    );
}

#[test]
fn every_duration_field_is_bounded_and_counts_have_maximums() {
    let fields = [
        ("/spec/upgradeTimeout", "spec.upgradeTimeout"),
        ("/spec/savepoints/interval", "spec.savepoints.interval"),
        ("/spec/savepoints/maxAge", "spec.savepoints.maxAge"),
        (
            "/spec/job/checkpoint/interval",
            "spec.job.checkpoint.interval",
        ),
        (
            "/spec/job/checkpoint/timeout",
            "spec.job.checkpoint.timeout",
        ),
        (
            "/spec/job/checkpoint/targetRecoveryTime",
            "spec.job.checkpoint.targetRecoveryTime",
        ),
        (
            "/spec/job/checkpoint/minInterval",
            "spec.job.checkpoint.minInterval",
        ),
        (
            "/spec/job/checkpoint/maxInterval",
            "spec.job.checkpoint.maxInterval",
        ),
        (
            "/spec/autoscaler/catchUpTime",
            "spec.autoscaler.catchUpTime",
        ),
        (
            "/spec/autoscaler/stabilizationWindow",
            "spec.autoscaler.stabilizationWindow",
        ),
        ("/spec/autoscaler/cooldown", "spec.autoscaler.cooldown"),
    ];
    let mut objects: Vec<Value> = fields
        .iter()
        .map(|(path, _)| with(path, json!("8761h")))
        .collect();
    let mut kafka: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_file("examples/k8s/kafka-s3.yaml")).unwrap(),
    )
    .unwrap();
    kafka["spec"]["job"]["input"]["partitionCheckInterval"] = json!("8761h");
    objects.push(kafka);
    let counts = [
        (
            "/spec/savepoints/maxCount",
            MAX_SAVEPOINT_HISTORY,
            "spec.savepoints.maxCount",
        ),
        (
            "/spec/savepoints/fallbackToLastStateAfter",
            MAX_FALLBACK_ATTEMPTS,
            "spec.savepoints.fallbackToLastStateAfter",
        ),
        (
            "/spec/job/checkpoint/retained",
            MAX_RETAINED,
            "spec.job.checkpoint.retained",
        ),
        ("/spec/job/parallelism", 4096, "spec.job.parallelism"),
        (
            "/spec/job/input/partitions",
            4096,
            "spec.job.input.partitions",
        ),
    ];
    for (path, max, _) in counts {
        objects.push(with(path, json!(max + 1)));
    }
    let verdicts = validate(&objects);
    for (i, (_, field)) in fields.iter().enumerate() {
        assert_eq!(
            verdicts.objects[i],
            [format!(
                "{field}: Invalid value: \"string\": {field} must be at most 8760h (one year)"
            )],
        );
    }
    assert_eq!(
        verdicts.objects[fields.len()],
        ["spec.job.input.partitionCheckInterval: Invalid value: \"string\": spec.job.input.partitionCheckInterval must be at most 8760h (one year)"]
    );
    for (i, (_, max, field)) in counts.iter().enumerate() {
        let errors = &verdicts.objects[fields.len() + 1 + i];
        let expected = format!(
            "{field}: Invalid value: {}: {field} in body should be less than or equal to {max}",
            max + 1
        );
        assert!(
            errors.iter().any(|e| e == &expected),
            "{field}: expected {expected:?} among {errors:?}"
        );
    }
}

/// Durations on both sides of the one-year bound, in every unit and form the CRD accepts.
const TABLE: &[&str] = &[
    "0",
    "1s",
    "250ms",
    "1m30s",
    "1h 30m",
    " 10s ",
    "10 s",
    "8760h",
    "8761h",
    "8760h1ns",
    "8759h59m59s999ms999us1000ns",
    "5000h 3760h",
    "5000h 3761h",
    "9999h9999h",
    "525600m",
    "525601m",
    "31536000s",
    "31536001s",
    "31536000000ms",
    "31536000001ms",
    "31536000000000us",
    "31536000000001us",
    "31536000000000000ns",
    "31536000000000001ns",
    "31536000000",
    "31536000001",
    "00000000000000000000031536000000",
    "99999999999999999999",
    "0000000000000000000001h",
    "1800000000000000h",
    "99999999999999999999999h",
    "1000000m30s",
    "99999999ms99999999ms99999999ms99999999ms",
];

#[test]
fn the_cel_bound_agrees_with_the_spec_crate() {
    let syntax = regex_lite(DURATION_PATTERN);
    let objects: Vec<Value> = TABLE
        .iter()
        .map(|d| with("/spec/upgradeTimeout", json!(d)))
        .collect();
    let verdicts = validate(&objects);
    let mut disagreements = Vec::new();
    for (text, errors) in TABLE.iter().zip(&verdicts.objects) {
        assert!(
            syntax(text),
            "{text:?} is not in the CRD's syntax: a bad table entry"
        );
        let cel_accepts = errors.is_empty();
        let rust_accepts = cairn_contract::parse_duration(text).is_ok();
        if cel_accepts != rust_accepts {
            disagreements.push(format!(
                "{text:?}: CEL {cel_accepts} ({errors:?}), contract crate {rust_accepts}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // The table has both sides of the bound.
    let accepted = verdicts.objects.iter().filter(|e| e.is_empty()).count();
    assert_eq!(accepted, 19, "{:?}", verdicts.objects);
}

#[test]
fn the_duration_rules_are_in_the_generated_schema() {
    // Without Go: the rule text of every duration field, as generated.
    let crd: Value = serde_yaml::from_str(&definition_yaml()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    let job = &spec["job"]["properties"];
    for field in [
        &spec["upgradeTimeout"],
        &spec["savepoints"]["properties"]["interval"],
        &spec["savepoints"]["properties"]["maxAge"],
        &job["checkpoint"]["properties"]["interval"],
        &job["checkpoint"]["properties"]["timeout"],
        &job["checkpoint"]["properties"]["targetRecoveryTime"],
        &job["checkpoint"]["properties"]["minInterval"],
        &job["checkpoint"]["properties"]["maxInterval"],
        &job["input"]["properties"]["partitionCheckInterval"],
    ] {
        let rules: Vec<&str> = field["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                format!("self.matches('{DURATION_PATTERN}')"),
                duration_bound_rule()
            ],
            "{field}"
        );
        assert_eq!(field["maxLength"], 64);
    }
    assert!(duration_bound_rule().contains("duration('8760h')"));
    assert!(duration_bound_rule().contains("<= 31536000000"));
    // serde_yaml reads the integers of the generated YAML as floats: compare as numbers.
    assert_eq!(
        spec["savepoints"]["properties"]["maxCount"]["maximum"].as_f64(),
        Some(f64::from(MAX_SAVEPOINT_HISTORY))
    );
    assert_eq!(
        job["checkpoint"]["properties"]["retained"]["maximum"].as_f64(),
        Some(f64::from(MAX_RETAINED))
    );
}

/// The CRD syntax pattern, checked here without a regex engine: it is simple enough to match by
/// hand (spaces, then digits-and-unit components or one bare number).
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    assert_eq!(
        pattern, r"^ *([0-9]+ *(h|m|s|ms|us|ns) *)+$|^ *[0-9]+ *$",
        "update the hand matcher with the pattern"
    );
    |text: &str| {
        let t = text.trim_matches(' ');
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        let mut rest = t;
        let mut components = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return false;
            }
            rest = rest[digits..].trim_start_matches(' ');
            let unit = ["ms", "us", "ns", "h", "m", "s"]
                .into_iter()
                .find(|u| rest.starts_with(u));
            let Some(unit) = unit else { return false };
            rest = rest[unit.len()..].trim_start_matches(' ');
            components += 1;
        }
        components > 0
    }
}

/// The store rule, compiled and run by the API server's CEL, accepts exactly the URLs the
/// contract's grammar reads as usable on a cluster, for every scheme.
#[test]
fn the_store_rule_agrees_with_the_grammar_on_every_scheme() {
    let urls = [
        "s3://bucket/jobs/wc",
        "gs://bucket/jobs/wc",
        "gs://Bucket/p",
        "az://container/jobs",
        "az://c/p",
        "abfss://ckpt@acct.dfs.core.windows.net/jobs",
        "abfs://ckpt@acct.dfs.core.windows.net",
        "abfss://ckpt@acctxdfs.core.windows.net/jobs",
        "abfss://ckpt@acct.blob.core.windows.net/jobs",
        "hdfs://namenode:8020/cairn/wc",
        "hdfs://nameservice1/cairn",
        "hdfs:///cairn/wc",
        "hdfs://namenode:8020/",
        "file:///var/lib/cairn",
        "file://./rel",
        "memory://t",
    ];
    let objects: Vec<Value> = urls
        .iter()
        .map(|url| with("/spec/job/checkpoint/store", json!(url)))
        .collect();
    let verdicts = validate(&objects);
    for (url, errors) in urls.iter().zip(&verdicts.objects) {
        let usable = cairn_contract::StoreUrl::parse(url).is_ok_and(|s| s.is_cluster_usable());
        assert_eq!(errors.is_empty(), usable, "{url}: {errors:?}");
    }
}

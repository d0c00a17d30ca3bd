//! Tasks written in other languages, compiled to WebAssembly components (docs/wasm-tasks.md),
//! keep every guarantee of a built-in task: a Python component survives repeated SIGKILLs with
//! exactly the state and output of an uninterrupted run; a JavaScript component's savepoints
//! restore on another partition count and parallelism, and into another module (C, Python) of
//! the same state version, with the exact counts; another state version is refused. A
//! component that traps, loops or grows past its memory stops with an error naming the module
//! and function, and a restart resumes exactly from the last committed checkpoint.
//!
//! The components are built from the sources in examples/wasm by examples/wasm/build.sh, with
//! tools it installs from the language registries (componentize-py, componentize-js, clang).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cairn_contract::JobSpec;
use common::*;

const STORE: &str = "file://./.cairn/checkpoints";

/// The example components, built once per test process.
fn components() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/build.sh");
        let out = Command::new(&script)
            .output()
            .expect("run examples/wasm/build.sh");
        assert!(
            out.status.success(),
            "examples/wasm/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("the output directory").trim())
    })
}

/// The path of an example component, e.g. `count-python.wasm`.
fn component(name: &str) -> String {
    let path = components().join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path.display().to_string()
}

/// A generator job counting with the component `module` (its `config` as YAML flow text).
fn generator_job(
    partitions: u32,
    parallelism: u32,
    records: u64,
    rate: Option<u64>,
    module: &str,
    config: &str,
) -> String {
    let rate = rate
        .map(|r| format!("  ratePerSecond: {r}\n"))
        .unwrap_or_default();
    format!(
        "name: polyglot\ninput:\n  type: generator\n  partitions: {partitions}\n  keys: 300\n  \
         seed: 21\n  recordsPerPartition: {records}\n{rate}task:\n  wasm:\n    module: \"{module}\"\n    \
         config: {config}\noutput:\n  type: file\n  path: ./out\nparallelism: {parallelism}\n\
         checkpoint:\n  interval: 100ms\n  retained: 2\n  timeout: 30s\n"
    )
}

/// Runs a command that must fail; returns its log.
fn run_failing(dir: &Path, args: &[&str]) -> String {
    let out = worker(dir).args(args).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {log}");
    log
}

/// `state dump` of the latest checkpoint as key -> counter. A component's values are shown as
/// bytes (the worker does not know their meaning): UTF-8 text when they are valid UTF-8, else
/// `0x` + hex. A counter is 8 bytes little-endian.
fn counters(dir: &Path) -> BTreeMap<String, i64> {
    let out = run_cmd(dir, &["state", "dump", "--store", STORE]);
    assert!(
        out.status.success(),
        "state dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for line in std::str::from_utf8(&out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        let shown = v["value"].as_str().expect("a value shown as a string");
        let bytes: Vec<u8> = match shown.strip_prefix("0x") {
            Some(hex) if hex.len() == 16 => (0..16)
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
            _ => shown.as_bytes().to_vec(),
        };
        let bytes: [u8; 8] = bytes
            .try_into()
            .unwrap_or_else(|_| panic!("not a counter: {line}"));
        assert!(
            counts.insert(key, i64::from_le_bytes(bytes)).is_none(),
            "key dumped twice: {line}"
        );
    }
    counts
}

#[test]
fn a_python_component_survives_sigkills_with_exact_state_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = generator_job(
        4,
        2,
        12_000,
        Some(3_000),
        &component("count-python.wasm"),
        "{}",
    );
    std::fs::write(dir.join("job.yaml"), &job).unwrap();
    let spec = JobSpec::from_yaml_str(&job).unwrap();

    let mut rng = kill_schedule(0x9A5);
    // Four Python instances take a few hundred milliseconds to start: the kills come later than
    // the built-in tasks' test's, so that runs get to commit between them.
    let kills = kill_repeatedly_after(dir, &mut rng, 8, 300..2500, |_| &[]);
    assert!(kills >= 6, "the job finished after {kills} kills");
    // The killed runs got somewhere: the final run restores a checkpoint they committed.
    assert!(
        !committed_ids(dir, STORE).is_empty(),
        "no checkpoint was committed in {kills} killed runs"
    );
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected = expected_counts(&spec);
    assert_eq!(expected.values().sum::<i64>(), 48_000);
    assert_eq!(counters(dir), expected, "state after {kills} kills");
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected),
        "output after {kills} kills: each count published exactly once"
    );
    assert_store_consistent(&dir.join(".cairn/checkpoints"), 2);
}

#[test]
fn savepoints_of_a_component_repartition_and_upgrade_to_another_language() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let js = component("count-js.wasm");

    // A: JavaScript, N=4, P=1.
    let a = generator_job(4, 1, 5_000, None, &js, "{}");
    std::fs::write(dir.join("job.yaml"), &a).unwrap();
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let mut expected = BTreeMap::new();
    add_generator_records(
        &mut expected,
        &JobSpec::from_yaml_str(&a).unwrap(),
        &BTreeMap::new(),
    );
    assert_eq!(counters(dir), expected, "A");
    let sp1 = savepoint_of_latest(dir, STORE);

    // B: the same component, N=6 (not a multiple of 4), P=3, from the savepoint.
    let b = generator_job(6, 3, 9_000, None, &js, "{}");
    std::fs::write(dir.join("job.yaml"), &b).unwrap();
    let log = run_logged_ok(dir, &["run", "job.yaml", "--from-savepoint", &sp1]);
    assert!(log.contains("state re-split"), "{log}");
    let from: BTreeMap<u32, u64> = (0..4).map(|p| (p, 5_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&b).unwrap(), &from);
    assert_eq!(counters(dir), expected, "after 4 -> 6");
    let sp2 = savepoint_of_latest(dir, STORE);

    // C: a new module of the same state version (C, a compiled language), N=3, P=2: the
    // state is the language's no more than the counter encoding's.
    let c = generator_job(3, 2, 14_000, None, &component("count-c.wasm"), "{}");
    std::fs::write(dir.join("job.yaml"), &c).unwrap();
    run_logged_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp2],
    );
    let from: BTreeMap<u32, u64> = (0..3).map(|p| (p, 9_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&c).unwrap(), &from);
    assert_eq!(counters(dir), expected, "after 6 -> 3 into C");
    let sp3 = savepoint_of_latest(dir, STORE);

    // D: a module that says its state has another layout (state-version 2) is refused...
    let d = generator_job(3, 1, 16_000, None, &js, "{stateVersion: 2}");
    std::fs::write(dir.join("job.yaml"), &d).unwrap();
    let log = run_failing(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp3],
    );
    assert!(
        log.contains("state version") && log.contains("allowStateDrop"),
        "the refusal names the versions and the way out: {log}"
    );
    assert_eq!(counters(dir), expected, "a refused restore changes nothing");

    // ...and Python, of the same version as the savepoint, takes it and goes on.
    let e = generator_job(3, 1, 16_000, None, &component("count-python.wasm"), "{}");
    std::fs::write(dir.join("job.yaml"), &e).unwrap();
    run_logged_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp3],
    );
    let from: BTreeMap<u32, u64> = (0..3).map(|p| (p, 14_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&e).unwrap(), &from);
    assert_eq!(counters(dir), expected, "into Python");
}

/// A file job whose only partition holds `lines` (`key\tvalue`), counted by the C component
/// with `config` and `limits` (YAML lines under `wasm:`).
fn file_job(dir: &Path, lines: &[String], config: &str, limits: &str) -> JobSpec {
    file_job_of(dir, "count-c.wasm", lines, config, limits)
}

/// [`file_job`] with the component `file`.
fn file_job_of(dir: &Path, file: &str, lines: &[String], config: &str, limits: &str) -> JobSpec {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/partition-0"), lines.concat()).unwrap();
    let job = format!(
        "name: faulty\ninput: {{type: file, partitions: 1, path: ./in, follow: false}}\n\
         task:\n  wasm:\n    module: \"{}\"\n    config: {config}\n{limits}\
         output: {{type: file, path: ./out}}\ncheckpoint: {{interval: 20ms}}\n",
        component(file)
    );
    std::fs::write(dir.join("job.yaml"), &job).unwrap();
    JobSpec::from_yaml_str(&job).unwrap()
}

/// `n` lines over keys a..e, then `last` as the value of a line of key `z`, then `n` more.
fn lines_around(n: usize, last: &str) -> Vec<String> {
    let keys = ["a", "b", "c", "d", "e"];
    let mut lines: Vec<String> = (0..n).map(|i| format!("{}\t{i}\n", keys[i % 5])).collect();
    lines.push(format!("z\t{last}\n"));
    lines.extend((n..2 * n).map(|i| format!("{}\t{i}\n", keys[i % 5])));
    lines
}

fn counts_of_lines(lines: &[String], skip_value: Option<&str>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let (key, value) = line.trim_end().split_once('\t').unwrap();
        if Some(value) != skip_value {
            *counts.entry(key.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn a_component_exporting_only_process_runs_with_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lines = lines_around(500, "x");
    file_job_of(dir, "count-c-processor.wasm", &lines, "{}", "");
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let expected = counts_of_lines(&lines, None);
    assert_eq!(counters(dir), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    // Its savepoints record the default state version, 1: the full C task (version 1) takes
    // them.
    let sp = savepoint_of_latest(dir, STORE);
    let manifest = std::fs::read_to_string(
        Path::new(sp.strip_prefix("file://").unwrap()).join("_SAVEPOINT.json"),
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["stateVersion"], 1, "{manifest}");
}

#[test]
fn a_bad_record_of_a_component_is_skipped_and_the_others_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lines = lines_around(50, "bad");
    file_job(dir, &lines, "{failOnValue: bad}", "");
    let log = run_logged_ok(dir, &["run", "job.yaml"]);
    assert!(log.contains("skipping bad record"), "{log}");
    assert_eq!(counters(dir), counts_of_lines(&lines, Some("bad")));
}

/// A component fault stops the job with an error naming the module and the function; with the
/// fault's switch removed, the job resumes from its last committed checkpoint and ends with the
/// exact counts of every line: nothing lost, nothing counted twice.
fn fault_then_resume(config: &str, limits: &str, expected_error: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lines = lines_around(20_000, "boom");
    file_job(dir, &lines, config, limits);
    let log = run_failing(dir, &["run", "job.yaml", "--quiet"]);
    let module = component("count-c.wasm");
    assert!(log.contains(&module), "the error names the module: {log}");
    // The C component takes whole batches (world batch-task): the function is process-batch.
    assert!(
        log.contains("`process-batch`"),
        "the error names the function: {log}"
    );
    for text in expected_error {
        assert!(log.contains(text), "the error says {text:?}: {log}");
    }
    file_job(dir, &lines, "{}", limits);
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let expected = counts_of_lines(&lines, None);
    assert_eq!(counters(dir), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
}

#[test]
fn a_trap_stops_the_task_and_a_restart_loses_nothing() {
    fault_then_resume("{trapOnValue: boom}", "", &["trapped"]);
}

#[test]
fn a_call_running_past_max_call_time_is_stopped() {
    fault_then_resume(
        "{spinOnValue: boom}",
        "    maxCallTime: 300ms\n",
        &["ran longer than task.wasm.maxCallTime (300ms)"],
    );
}

#[test]
fn a_component_growing_past_max_memory_is_stopped() {
    fault_then_resume(
        "{growOnValue: boom}",
        "    maxMemory: 8MiB\n",
        &["needed more memory than task.wasm.maxMemory (8MiB)"],
    );
}

#[test]
fn a_module_that_is_not_a_task_component_is_refused_before_any_state_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("not.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let job = "name: wrong\ninput: {type: file, partitions: 1, path: ./in}\n\
               task: {wasm: {module: not.wasm}}\n";
    std::fs::write(dir.join("job.yaml"), job).unwrap();
    let log = run_failing(dir, &["run", "job.yaml"]);
    assert!(
        log.contains("not.wasm is not a component this worker can run"),
        "{log}"
    );
    assert!(!dir.join(".cairn").exists(), "nothing was created");

    std::fs::write(
        dir.join("job.yaml"),
        job.replace("not.wasm", "missing.wasm"),
    )
    .unwrap();
    let log = run_failing(dir, &["run", "job.yaml"]);
    assert!(
        log.contains("cannot read the component missing.wasm"),
        "{log}"
    );
}

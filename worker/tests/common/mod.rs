//! Helpers shared by the worker's integration tests: run the real `cairn-worker` binary,
//! compute exact expected results of generator jobs, read dumps and file-sink output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use cairn_spec::JobSpec;
use cairn_worker::source::generator::{KeyTable, RecordRule};

/// Path of the worker binary built by cargo for this test run.
pub fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-worker"))
}

/// A `cairn-worker` command running in `dir`, logs kept quiet.
pub fn worker(dir: &Path) -> Command {
    let mut cmd = Command::new(worker_bin());
    cmd.current_dir(dir).env("RUST_LOG", "warn");
    cmd
}

/// Starts `cairn-worker run job.yaml` in `dir` in the background.
pub fn spawn_run(dir: &Path, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = worker(dir);
    cmd.args(["run", "job.yaml", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start cairn-worker")
}

/// Runs a `cairn-worker` subcommand to completion.
pub fn run_cmd(dir: &Path, args: &[&str]) -> Output {
    worker(dir).args(args).output().expect("run cairn-worker")
}

/// Exact final count per key of a finite generator job: replays the generator's definition.
pub fn expected_counts(spec: &JobSpec) -> BTreeMap<String, i64> {
    let cairn_spec::InputSpec::Generator(g) = &spec.input else {
        panic!("generator input expected")
    };
    let table = KeyTable::build(g);
    let mut counts = BTreeMap::new();
    for p in 0..g.partitions {
        let rule = RecordRule::new(g, &table, p);
        if !rule.has_keys() {
            continue;
        }
        for j in 0..g.records_per_partition.expect("finite job") {
            *counts.entry(format!("k{}", rule.record(j).0)).or_insert(0) += 1;
        }
    }
    counts
}

/// `state dump` of the latest checkpoint as key -> integer value.
pub fn dumped_counts(dir: &Path, store: &str) -> BTreeMap<String, i64> {
    let out = run_cmd(dir, &["state", "dump", "--store", store]);
    assert!(
        out.status.success(),
        "state dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        assert!(
            counts.insert(key, v["value"].as_i64().unwrap()).is_none(),
            "key dumped twice: {line}"
        );
    }
    counts
}

/// Every published line of a file sink, as (key, value) -> occurrences.
pub fn published_lines(out_dir: &Path) -> BTreeMap<(String, String), u32> {
    let mut lines = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(out_dir) else {
        return lines;
    };
    for task in tasks {
        let task = task.unwrap().path();
        for f in std::fs::read_dir(&task).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "out") {
                for line in std::fs::read_to_string(&f).unwrap().lines() {
                    let (k, v) = line.split_once('\t').expect("key<TAB>value");
                    *lines.entry((k.to_owned(), v.to_owned())).or_insert(0) += 1;
                }
            }
        }
    }
    lines
}

/// What the `count` task must have published, exactly once each: `(key, 1..=count)`.
pub fn expected_count_output(counts: &BTreeMap<String, i64>) -> BTreeMap<(String, String), u32> {
    counts
        .iter()
        .flat_map(|(k, c)| (1..=*c).map(move |i| ((k.clone(), i.to_string()), 1)))
        .collect()
}

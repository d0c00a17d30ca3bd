//! Numbers a job reads from its store, and durations at the spec's limit, never panic or wrap
//! around. A generation claim, a committed checkpoint or a savepoint's source checkpoint at
//! `u64::MAX` (anyone who can write to the store can put one there) stops `cairn-worker run`
//! with an error naming the key and the way out; a job whose checkpoint interval and timeout
//! and whose `--stop-timeout` are the longest the spec accepts (8760h) runs and stops cleanly
//! on SIGTERM with a final checkpoint holding exactly the state of the records it read.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use common::launcher::wait_until;
use common::*;

const STORE: &str = "file://./ckpt";
const MAX: u64 = u64::MAX;

const FINITE_JOB: &str = "\
name: ids
input:
  type: generator
  partitions: 2
  keys: 50
  seed: 3
  recordsPerPartition: 2000
task:
  name: count
checkpoint:
  interval: 100ms
  store: file://./ckpt
";

/// A directory with `job.yaml`.
fn job_dir(job: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("job.yaml"), job).unwrap();
    // The token a job's processes share (`--coordinator-token-file`).
    std::fs::write(tmp.path().join("token"), "id-limits-token-0123456789abcdef").unwrap();
    tmp
}

/// Runs the finite job to its end.
fn run_to_end(dir: &Path) {
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks that a run failed with exit status 1 (an error, not a panic's 101) and an error
/// that contains every one of `expected`; returns stderr.
fn assert_refused(out: &Output, expected: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for e in expected {
        assert!(err.contains(e), "the error must contain {e:?}: {err}");
    }
    err
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Sets a field of a JSON file.
fn set_json_field(path: &Path, field: &str, value: serde_json::Value) {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc[field] = value;
    std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[test]
fn a_generation_at_the_maximum_is_refused_naming_its_claim() {
    let tmp = job_dir(FINITE_JOB);
    let dir = tmp.path();
    let generations = dir.join("ckpt/generations");
    std::fs::create_dir_all(&generations).unwrap();
    std::fs::write(
        generations.join(MAX.to_string()),
        format!(r#"{{"generation":{MAX},"claimedBy":"someone else"}}"#),
    )
    .unwrap();

    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert_refused(
        &out,
        &[
            "generations/18446744073709551615 holds generation 18446744073709551615, the largest id there is",
            "new, empty checkpoint store",
            "--from-savepoint",
        ],
    );
    // Nothing was claimed or committed.
    let claims: Vec<_> = std::fs::read_dir(&generations)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(claims, [MAX.to_string()]);
    assert!(!dir.join("ckpt/checkpoints").exists());
}

#[test]
fn a_committed_checkpoint_at_the_maximum_id_is_refused_naming_it() {
    let tmp = job_dir(FINITE_JOB);
    let dir = tmp.path();
    run_to_end(dir);
    // A genuine commit record, copied to id u64::MAX.
    let last = *committed_ids(dir, STORE).last().expect("a commit");
    let checkpoints = dir.join("ckpt/checkpoints");
    let planted = checkpoints.join(MAX.to_string());
    copy_dir(&checkpoints.join(format!("{last:012}")), &planted);
    set_json_field(
        &planted.join("_COMMIT.json"),
        "checkpoint",
        serde_json::json!(MAX),
    );
    assert_eq!(
        committed_ids(dir, STORE).last(),
        Some(&MAX),
        "the store must list it as committed"
    );

    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert_refused(
        &out,
        &[
            "checkpoints/18446744073709551615/ holds checkpoint 18446744073709551615, the largest id there is",
            "savepoint of an earlier checkpoint",
        ],
    );
    assert_eq!(committed_ids(dir, STORE).last(), Some(&MAX));
}

#[test]
fn a_savepoint_of_checkpoint_u64_max_is_refused_naming_its_manifest() {
    let tmp = job_dir(FINITE_JOB);
    let dir = tmp.path();
    run_to_end(dir);
    let out = run_cmd(dir, &["savepoint", STORE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let manifest = PathBuf::from(url.strip_prefix("file://").unwrap()).join("_SAVEPOINT.json");
    set_json_field(&manifest, "sourceCheckpoint", serde_json::json!(MAX));

    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("job.yaml"), FINITE_JOB).unwrap();
    let out = run_cmd(
        &other,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &url],
    );
    assert_refused(
        &out,
        &[
            &format!("{url}/_SAVEPOINT.json holds source checkpoint 18446744073709551615"),
            "restore a savepoint of an earlier checkpoint",
        ],
    );
    assert!(committed_ids(&other, STORE).is_empty());
}

/// A job that never ends by itself and never checkpoints on its own within a test: the
/// longest interval and timeout there are.
const LONGEST: &str = "\
name: longest
input:
  type: generator
  partitions: 4
  keys: 200
  seed: 8
  ratePerSecond: 2000
task:
  name: count
parallelism: 2
checkpoint:
  interval: 8760h
  timeout: 8760h
  store: file://./ckpt
";

/// Sum of `cairn_records_in_total` served at `addr`, 0 if it cannot be read yet.
fn records_in(addr: &str) -> u64 {
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let mut body = String::new();
    let read = conn
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .and_then(|()| conn.read_to_string(&mut body));
    if read.is_err() {
        return 0;
    }
    body.lines()
        .filter(|l| l.starts_with("cairn_records_in_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Starts `cairn-worker run job.yaml <args>` logging (at info) to `dir/<log>`.
fn start(dir: &Path, args: &[&str], log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    worker(dir)
        .env("RUST_LOG", "info")
        .args(["run", "job.yaml", "--quiet"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn read_log(dir: &Path, log: &str) -> String {
    std::fs::read_to_string(dir.join(log)).unwrap_or_default()
}

/// Waits (bounded: a broken build must not hang the test) for `child` to exit, and checks it
/// exited 0.
fn wait_exit(child: &mut Child, what: &str, logs: impl Fn() -> String) {
    let mut status = None;
    wait_until(what, 60, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "{what}: {status}\n{}", logs());
}

/// Checks that the store holds one commit (the final checkpoint) with records read, and that
/// the state dumped from it is exactly the count of the records before its offsets.
fn assert_one_exact_final_checkpoint(dir: &Path, logs: &str) {
    let ids = committed_ids(dir, STORE);
    assert_eq!(ids.len(), 1, "only the final checkpoint: {ids:?}\n{logs}");
    let commit: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("ckpt/checkpoints/{:012}/_COMMIT.json", ids[0]))).unwrap(),
    )
    .unwrap();
    let offsets: BTreeMap<u32, u64> = commit["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["offsets"].as_object().unwrap().clone())
        .map(|(p, o)| (p.parse().unwrap(), o.as_u64().unwrap()))
        .collect();
    assert_eq!(offsets.len(), 4, "{commit}");
    assert!(
        offsets.values().sum::<u64>() > 0,
        "records were read: {commit}"
    );
    let spec = cairn_contract::JobSpec::from_yaml_str(LONGEST).unwrap();
    assert_eq!(
        dumped_counts(dir, STORE),
        expected_counts_up_to(&spec, &offsets)
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn the_longest_interval_and_timeout_stop_cleanly_with_a_final_checkpoint() {
    let tmp = job_dir(LONGEST);
    let dir = tmp.path();
    let metrics = free_local_addr();
    let mut child = start(dir, &["--metrics-addr", &metrics], "worker.log");
    wait_until("records to be read", 60, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            read_log(dir, "worker.log")
        );
        records_in(&metrics) > 0
    });
    sigterm(&child);
    wait_exit(&mut child, "the worker to stop after SIGTERM", || {
        read_log(dir, "worker.log")
    });
    assert_one_exact_final_checkpoint(dir, &read_log(dir, "worker.log"));
}

#[test]
fn the_longest_stop_timeout_stops_two_processes_cleanly_with_a_final_checkpoint() {
    let tmp = job_dir(LONGEST);
    let dir = tmp.path();
    let addr = free_local_addr();
    let metrics = free_local_addr();
    let mut c0 = start(
        dir,
        &[
            "--coordinator-token-file",
            "token",
            "--container",
            "0",
            "--coordinator-listen",
            &addr,
            "--stop-timeout",
            "8760h",
            "--metrics-addr",
            &metrics,
        ],
        "c0.log",
    );
    let mut c1 = start(
        dir,
        &[
            "--coordinator-token-file",
            "token",
            "--container",
            "1",
            "--coordinator",
            &addr,
            "--stop-timeout",
            "8760h",
        ],
        "c1.log",
    );
    let logs = || {
        format!(
            "--- c0:\n{}--- c1:\n{}",
            read_log(dir, "c0.log"),
            read_log(dir, "c1.log")
        )
    };
    wait_until("container 1 to join and records to be read", 60, || {
        assert!(
            c0.try_wait().unwrap().is_none() && c1.try_wait().unwrap().is_none(),
            "{}",
            logs()
        );
        read_log(dir, "c0.log").contains("container ready") && records_in(&metrics) > 0
    });
    sigterm(&c0);
    sigterm(&c1);
    wait_exit(&mut c0, "container 0 to stop after SIGTERM", logs);
    wait_exit(&mut c1, "container 1 to stop after SIGTERM", logs);
    assert_one_exact_final_checkpoint(dir, &logs());
    // The coordinator took the longest stop timeout as its deadline.
    assert!(
        read_log(dir, "c0.log").contains("giving up after 31536000s"),
        "{}",
        logs()
    );
}

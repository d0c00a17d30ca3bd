//! A task whose local state store breaks for good (its RocksDB directory removed under the
//! running process, as when the state volume goes away) does not leave a process that stays
//! up without ever committing again: after three failed checkpoints in a row the task fails,
//! the process exits non-zero naming the state store, and a restart resumes exactly from the
//! last committed checkpoint.
//!
//! Timeouts below only bound how long a broken build may hang the test; nothing measures speed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;

use common::launcher::wait_until;
use common::*;

/// A finite input far longer than the test runs, read slowly.
const RECORDS_PER_PARTITION: u64 = 10_000_000;

const JOB: &str = "\
name: fragile
input:
  type: generator
  partitions: 2
  keys: 300
  seed: 3
  recordsPerPartition: 10000000
  ratePerSecond: 2000
task:
  name: count
output:
  type: file
  path: ./out
parallelism: 1
checkpoint:
  interval: 300ms
  timeout: 5s
  store: file://./ckpt
  retained: 3
";

fn start(dir: &Path, log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    worker(dir)
        .env("RUST_LOG", "info")
        .args(["run", "job.yaml", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start cairn-worker")
}

fn latest_commit(dir: &Path) -> Option<u64> {
    committed_ids(dir, "file://./ckpt").last().copied()
}

/// Waits for a commit newer than `after` while `child` runs.
fn await_commit_after(dir: &Path, child: &mut Child, after: Option<u64>) -> u64 {
    let mut latest = None;
    wait_until("a new committed checkpoint", 90, || {
        assert!(child.try_wait().unwrap().is_none(), "the worker exited");
        latest = latest_commit(dir);
        latest > after
    });
    latest.unwrap()
}

/// Offsets recorded by the newest commit, per partition.
fn committed_offsets(dir: &Path, checkpoint: u64) -> BTreeMap<u32, u64> {
    let commit: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("ckpt/checkpoints/{checkpoint:012}/_COMMIT.json")))
            .unwrap(),
    )
    .unwrap();
    commit["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let task = t["task"].as_u64().unwrap() as u32;
            (task, t["offsets"][task.to_string()].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn a_broken_state_store_fails_the_process_and_a_restart_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();

    let mut child = start(dir, "first.log");
    let first = await_commit_after(dir, &mut child, None);
    // The state volume goes away under the running process: task 0's RocksDB directory (and
    // the checkpoint directories next to it) disappear. Flushes and snapshots now fail.
    let task_dir = dir.join(".cairn/state/fragile/task-0000");
    assert!(task_dir.is_dir(), "{} is not there", task_dir.display());
    std::fs::remove_dir_all(&task_dir).unwrap();

    let mut status = None;
    wait_until("the worker to exit after its state store broke", 60, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let log = std::fs::read_to_string(dir.join("first.log")).unwrap();
    assert_eq!(status.unwrap().code(), Some(1), "{log}");
    // At least 3 (STATE_FAILURES_TOLERATED): asynchronous phases that fail while the task
    // thread has not yet looked may add one or two more.
    let failures: u32 = log
        .split("the state store of task 0 failed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no state-store failure in the log: {log}"));
    assert!(
        failures >= 3
            && log.contains("checkpoints in a row")
            && log.contains("the job restarts from the last committed checkpoint"),
        "{log}"
    );
    let last_before = latest_commit(dir).expect("commits");
    assert!(last_before >= first);

    // Restarted, it restores the last commit and goes on.
    let mut child = start(dir, "second.log");
    let resumed = await_commit_after(dir, &mut child, Some(last_before));
    sigterm(&child);
    let mut status = None;
    wait_until("the worker to stop", 60, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let log = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("Checkpoint({last_before})")),
        "the restart did not restore checkpoint {last_before}: {log}"
    );

    let last = latest_commit(dir).unwrap();
    assert!(last >= resumed);
    let offsets = committed_offsets(dir, last);
    assert_eq!(offsets.len(), 2);
    assert!(offsets
        .values()
        .all(|o| *o > 0 && *o < RECORDS_PER_PARTITION));
    let spec = cairn_contract::JobSpec::from_yaml_str(JOB).unwrap();
    assert_counts_exact(dir, "file://./ckpt", &spec, &offsets);
}

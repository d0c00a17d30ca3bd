//! Running `cairn-worker run` in the background with its log in a file (servers and long jobs
//! log more than a pipe holds), and waiting for a job of an endless input to catch up.

use std::path::Path;
use std::process::{Child, Stdio};

use super::launcher::wait_until;

/// Starts `cairn-worker run job.yaml --quiet <args>` in `dir` with `env`, appending its log
/// (`RUST_LOG=warn`) to `dir/worker.log`.
pub fn start_logged(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("worker.log"))
        .unwrap();
    let mut cmd = super::worker(dir);
    cmd.args(["run", "job.yaml", "--quiet"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start cairn-worker")
}

/// Everything the workers started by [`start_logged`] in `dir` logged.
pub fn worker_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
}

/// Input offsets of the latest committed checkpoint of the `file://./ckpt` store in `dir`,
/// summed over partitions (0 before the first commit).
pub fn committed_offsets(dir: &Path) -> u64 {
    let Some(id) = super::committed_ids(dir, "file://./ckpt").last().copied() else {
        return 0;
    };
    std::fs::read(dir.join(format!("ckpt/checkpoints/{id:012}/_COMMIT.json")))
        .map(|bytes| super::total_offsets(&serde_json::from_slice(&bytes).unwrap()))
        .unwrap_or(0)
}

/// Waits until the running job (just started) has committed a checkpoint of its own holding the
/// offsets of all `records` (an endless input that has been read to its end), then stops it
/// gracefully and checks it exited cleanly. "Of its own": a restarted job may find a checkpoint
/// that already holds every offset, and a SIGTERM before it has even restored would prove
/// nothing (and kill it before its signal handling is set up).
pub fn stop_when_checkpointed(dir: &Path, mut child: Child, records: u64) {
    let before = super::committed_ids(dir, "file://./ckpt").last().copied();
    wait_until("the job to checkpoint every record", 120, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker exited: {}",
            worker_log(dir)
        );
        committed_offsets(dir) == records
            && super::committed_ids(dir, "file://./ckpt").last().copied() > before
    });
    super::sigterm(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "worker stopped by SIGTERM exited with {status}; its log:\n{}",
        worker_log(dir)
    );
}

/// A `count` job over 4 generator partitions of `records` each (300 keys, seed 21) at `rate`
/// records per second per partition, written exactly once to `./out`, checkpointed every
/// 200 ms into `store`: the job of the store tests (s3_checkpoints.rs, remote_stores.rs,
/// hdfs_store.rs).
pub fn store_job(
    store: &str,
    partitions: u32,
    parallelism: u32,
    records: u64,
    rate: u64,
) -> String {
    format!(
        "name: wc
input:
  type: generator
  partitions: {partitions}
  keys: 300
  seed: 21
  recordsPerPartition: {records}
  ratePerSecond: {rate}
task:
  name: count
output:
  type: file
  path: ./out
parallelism: {parallelism}
checkpoint:
  interval: 200ms
  retained: 3
  timeout: 60s
  store: {store}
"
    )
}

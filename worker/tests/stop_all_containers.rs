//! A job run as P `cairn-worker` processes (one per container, as P worker pods with the
//! operator's `--hold-after-stop`) stops cleanly when its processes get SIGTERM — all at once
//! (the operator deleting the pods), the coordinator alone, or the other containers first:
//! every process exits 0 on its own, a final checkpoint newer than every earlier one is
//! committed, and its state and published output are exactly those of the records its offsets
//! say were read. A container whose coordinator does not stop the job gives up after its stop
//! timeout with a clear error, and the job then resumes exactly from its last commit.
//!
//! Timeouts below only bound how long a broken build may hang the test; nothing measures speed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::launcher::wait_until;
use common::*;

/// A finite input far longer than the test runs (so every stop lands midway), read slowly.
const RECORDS_PER_PARTITION: u64 = 10_000_000;

// `retained: 1000` keeps every checkpoint a test takes, so that the final one can be compared
// with the one seen before the signal.

fn job(parallelism: u32) -> String {
    format!(
        "\
name: stop-all
input:
  type: generator
  partitions: 6
  keys: 300
  seed: 5
  recordsPerPartition: {RECORDS_PER_PARTITION}
  ratePerSecond: 3000
task:
  name: count
output:
  type: file
  path: ./out
parallelism: {parallelism}
checkpoint:
  interval: 200ms
  store: file://./ckpt
  retained: 1000
"
    )
}

/// Generous bound on how long processes may take to exit after their signal; a stop that
/// works takes well under a second, one that hangs would run into the pods' 60 s grace.
const EXIT_BOUND: Duration = Duration::from_secs(30);

/// The P processes of one job in `dir`, each logging (at info) to `c<K>.log`.
struct Job {
    dir: PathBuf,
    addr: String,
    procs: Vec<Option<Child>>,
}

impl Job {
    fn new(dir: &Path, parallelism: u32) -> Job {
        std::fs::write(dir.join("job.yaml"), job(parallelism)).unwrap();
        std::fs::write(dir.join("token"), "stop-all-token-0123456789abcdef").unwrap();
        Job {
            dir: dir.to_owned(),
            addr: free_local_addr(),
            procs: (0..parallelism).map(|_| None).collect(),
        }
    }

    /// Starts every container, as the operator does (`--hold-after-stop`).
    fn start_all(&mut self, extra: &[&str]) {
        for k in 0..self.procs.len() as u32 {
            self.start(k, extra);
        }
    }

    fn start(&mut self, k: u32, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("c{k}.log")))
            .unwrap();
        let mut cmd = container_command(&self.dir, k, &self.addr);
        cmd.env("RUST_LOG", "info")
            .arg("--hold-after-stop")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.procs[k as usize] = Some(cmd.spawn().expect("start cairn-worker"));
    }

    fn log(&self, k: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("c{k}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..self.procs.len() as u32)
            .map(|k| format!("--- container {k}:\n{}", self.log(k)))
            .collect()
    }

    /// Sends SIGTERM to the given containers, one right after the other.
    fn sigterm(&self, containers: &[u32]) {
        for &k in containers {
            sigterm(self.procs[k as usize].as_ref().expect("running"));
        }
    }

    /// Panics (with every log) if a container exited.
    fn assert_running(&mut self) {
        for (k, p) in self.procs.iter_mut().enumerate() {
            if let Some(status) = p.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("container {k} exited ({status}):\n{}", self.logs());
            }
        }
    }

    /// Waits until checkpoint `after` + 1 or later is committed, while every process runs.
    fn await_commit_after(&mut self, after: Option<u64>) -> u64 {
        let mut latest = None;
        wait_until("a new committed checkpoint", 90, || {
            self.assert_running();
            latest = committed_ids(&self.dir, "file://./ckpt").last().copied();
            latest > after
        });
        latest.unwrap()
    }

    /// Waits (at most [`EXIT_BOUND`]) for the given containers to exit; on a hang, SIGKILLs
    /// every process and fails with the logs.
    fn await_exit(&mut self, containers: &[u32]) -> BTreeMap<u32, ExitStatus> {
        let deadline = Instant::now() + EXIT_BOUND;
        let mut exited = BTreeMap::new();
        while exited.len() < containers.len() {
            for &k in containers {
                if exited.contains_key(&k) {
                    continue;
                }
                let child = self.procs[k as usize].as_mut().expect("started");
                if let Some(status) = child.try_wait().unwrap() {
                    exited.insert(k, status);
                    self.procs[k as usize] = None;
                }
            }
            if Instant::now() > deadline {
                self.kill_all();
                panic!(
                    "containers {:?} still running {EXIT_BOUND:?} after SIGTERM:\n{}",
                    containers
                        .iter()
                        .filter(|k| !exited.contains_key(k))
                        .collect::<Vec<_>>(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        exited
    }

    fn assert_all_exit_0(&mut self, containers: &[u32]) {
        let statuses = self.await_exit(containers);
        for (k, status) in statuses {
            assert_eq!(
                status.code(),
                Some(0),
                "container {k} exited {status}:\n{}",
                self.logs()
            );
        }
    }

    fn kill_all(&mut self) {
        for child in self.procs.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Per partition, the input offset recorded by the commit record of `checkpoint`, checked
/// against the task manifests it names: one task per partition, in its container, each
/// manifest of this checkpoint recording the same offset.
fn committed_offsets(dir: &Path, checkpoint: u64, parallelism: u32) -> BTreeMap<u32, u64> {
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("ckpt").join(rel)).unwrap()).unwrap()
    };
    let commit = read(&format!("checkpoints/{checkpoint:012}/_COMMIT.json"));
    assert_eq!(commit["checkpoint"], checkpoint);
    let tasks = commit["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6, "{commit}");
    let mut offsets = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        let task = t["task"].as_u64().unwrap() as u32;
        assert_eq!(task, i as u32);
        assert_eq!(t["container"].as_u64().unwrap() as u32, task % parallelism);
        let recorded = t["offsets"].as_object().unwrap();
        assert_eq!(recorded.len(), 1, "{t}");
        let offset = recorded[&task.to_string()].as_u64().unwrap();
        let manifest = read(t["manifest"].as_str().unwrap());
        assert_eq!(manifest["checkpoint"], checkpoint);
        assert_eq!(manifest["task"], task);
        assert_eq!(manifest["offsets"], t["offsets"]);
        offsets.insert(task, offset);
    }
    offsets
}

/// The newest committed checkpoint is newer than `before`; its offsets are inside the input
/// (the stop landed midway) and past `before`'s; its state and the published output are exactly
/// those of the records it read. Returns its id.
fn assert_final_checkpoint(job: &Job, before: u64, parallelism: u32) -> u64 {
    let dir = &job.dir;
    let last = *committed_ids(dir, "file://./ckpt").last().unwrap();
    assert!(
        last > before,
        "no checkpoint after {before}:\n{}",
        job.logs()
    );
    let offsets = committed_offsets(dir, last, parallelism);
    let earlier = committed_offsets(dir, before, parallelism);
    for (p, offset) in &offsets {
        assert!(
            *offset >= earlier[p] && *offset < RECORDS_PER_PARTITION,
            "partition {p}: offset {offset} (checkpoint {before} had {})",
            earlier[p]
        );
    }
    let spec = cairn_contract::JobSpec::from_yaml_str(&self::job(parallelism)).unwrap();
    let expected = expected_counts_up_to(&spec, &offsets);
    assert_eq!(
        expected.values().sum::<i64>() as u64,
        offsets.values().sum::<u64>()
    );
    let dump = run_cmd(
        dir,
        &[
            "state",
            "dump",
            "--store",
            "file://./ckpt",
            "--checkpoint",
            &last.to_string(),
        ],
    );
    assert!(dump.status.success(), "{dump:?}");
    assert_eq!(counts_from_dump(&dump.stdout), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    last
}

/// The pods of a job deleted at once: every process gets SIGTERM at the same moment.
fn stop_all_at_once(parallelism: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut job = Job::new(tmp.path(), parallelism);
    job.start_all(&[]);
    let before = job.await_commit_after(None);
    let all: Vec<u32> = (0..parallelism).collect();
    job.sigterm(&all);
    job.assert_all_exit_0(&all);
    assert_final_checkpoint(&job, before, parallelism);

    // Each process says what it does in its role. (Whether a container logs its own signal
    // before the coordinator's `Shutdown` reaches it is up to the scheduler; what it says when
    // it does is checked in the other-containers-first test.)
    let coordinator = job.log(0);
    assert!(
        coordinator.contains("stop requested: taking a final checkpoint with every container")
            && coordinator.contains("not holding"),
        "{coordinator}"
    );
    for k in 1..parallelism {
        let log = job.log(k);
        assert!(
            log.contains("the coordinator took its final checkpoint and is shutting down")
                && !log.contains("taking a final checkpoint"),
            "{log}"
        );
    }
}

#[test]
fn sigterm_to_all_two_containers_commits_a_final_checkpoint_and_all_exit() {
    stop_all_at_once(2);
}

#[test]
fn sigterm_to_all_three_containers_commits_a_final_checkpoint_and_all_exit() {
    stop_all_at_once(3);
}

/// The coordinator's pod alone is deleted: it takes the final checkpoint and the others exit
/// rather than hold (restarted, they would rejoin its successor).
#[test]
fn sigterm_to_the_coordinator_alone_stops_every_container() {
    let tmp = tempfile::tempdir().unwrap();
    let mut job = Job::new(tmp.path(), 3);
    job.start_all(&[]);
    let before = job.await_commit_after(None);
    job.sigterm(&[0]);
    job.assert_all_exit_0(&[0, 1, 2]);
    assert_final_checkpoint(&job, before, 3);
    for k in [1, 2] {
        assert!(
            job.log(k).contains("is shutting down; exiting"),
            "{}",
            job.log(k)
        );
    }
}

/// The kubelet signals the other containers first: they keep serving the coordinator, which
/// still takes the final checkpoint with them when its own signal comes.
#[test]
fn sigterm_to_the_other_containers_first_still_commits_a_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut job = Job::new(tmp.path(), 3);
    job.start_all(&[]);
    let before = job.await_commit_after(None);
    job.sigterm(&[1, 2]);
    wait_until("containers 1 and 2 to take the signal", 30, || {
        job.assert_running();
        [1, 2].iter().all(|k| {
            job.log(*k).contains(&format!(
                "stop requested: container {k} keeps running its tasks until the coordinator"
            ))
        })
    });
    // They keep running their tasks: the coordinator's next checkpoint still commits.
    let during = job.await_commit_after(Some(before));
    job.sigterm(&[0]);
    job.assert_all_exit_0(&[0, 1, 2]);
    assert_final_checkpoint(&job, during, 3);
}

/// The coordinator is not stopped: the signalled containers keep serving it until their stop
/// timeout, then exit 1 saying why; the coordinator, signalled after they are gone, cannot take
/// a final checkpoint and gives up at its own stop timeout, exiting 1 saying why. Started
/// again, the job resumes exactly from its last commit.
#[test]
fn containers_whose_coordinator_does_not_stop_give_up_and_the_job_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut job = Job::new(tmp.path(), 3);
    job.start_all(&["--stop-timeout", "1s"]);
    let before = job.await_commit_after(None);
    job.sigterm(&[1, 2]);
    let statuses = job.await_exit(&[1, 2]);
    for (k, status) in statuses {
        let log = job.log(k);
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(
            log.contains("did not stop the job within 6s: exiting without a final checkpoint"),
            "{log}"
        );
    }
    job.sigterm(&[0]);
    let status = job.await_exit(&[0])[&0];
    let log = job.log(0);
    assert_eq!(status.code(), Some(1), "{log}");
    let last_commit = *committed_ids(&job.dir, "file://./ckpt").last().unwrap();
    assert!(last_commit > before, "no commit while they kept serving");
    assert!(
        log.contains("the final checkpoint was not committed within the stop timeout (containers [1, 2] not connected)")
            && log.contains(&format!("will resume from checkpoint {last_commit}")),
        "{log}"
    );

    // The restore path: everything restarts from `last_commit` and stops cleanly again.
    job.start_all(&[]);
    job.await_commit_after(Some(last_commit));
    job.sigterm(&[0, 1, 2]);
    job.assert_all_exit_0(&[0, 1, 2]);
    assert_final_checkpoint(&job, last_commit, 3);
}

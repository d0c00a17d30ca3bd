//! One job as three `cairn-worker` processes (containers 0..2 of P = 3, as in three pods):
//! container 2 is SIGKILLed repeatedly while checkpoints run and restarted each time (the test
//! plays Kubernetes' part); containers 0 and 1 keep running untouched, and the job ends with
//! exact totals and every output record published exactly once. And a job as two processes
//! reports every task's records, lag and busy time in its status, those of the other process
//! included, while each process's metrics keep only its own tasks.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const JOB: &str = "\
name: three
input:
  type: generator
  partitions: 6
  keys: 400
  seed: 21
  recordsPerPartition: 30000
  ratePerSecond: 6000
task:
  name: count
output:
  type: file
  path: ./out
parallelism: 3
checkpoint:
  interval: 150ms
  retained: 2
";

/// The token the job's processes share (`--coordinator-token-file`).
const TOKEN: &str = "multi-container-token-0123456789";

/// Writes `job` and the shared token into `dir`.
fn setup(dir: &std::path::Path, job: &str) {
    std::fs::write(dir.join("job.yaml"), job).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
}

fn container(dir: &std::path::Path, index: u32, addr: &str) -> Child {
    container_command(dir, index, addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn killing_one_container_restarts_only_its_tasks_and_totals_stay_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, JOB);
    let addr = free_local_addr();

    let mut c0 = container(dir, 0, &addr);
    let mut c1 = container(dir, 1, &addr);
    let mut c2 = container(dir, 2, &addr);

    let mut kills = 0;
    let started = Instant::now();
    while kills < 5 && started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(350 + 90 * kills));
        if c2.try_wait().unwrap().is_some() {
            break; // finished already
        }
        c2.kill().unwrap(); // SIGKILL
        c2.wait().unwrap();
        kills += 1;
        // Containers 0 and 1 are still the same, running processes.
        assert!(
            c0.try_wait().unwrap().is_none() && c1.try_wait().unwrap().is_none(),
            "only container 2 may stop"
        );
        c2 = container(dir, 2, &addr);
    }
    assert!(kills >= 3, "container 2 was killed only {kills} times");

    for (name, child) in [
        ("container 0", c0),
        ("container 1", c1),
        ("container 2", c2),
    ] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let spec = cairn_contract::JobSpec::from_yaml_str(JOB).unwrap();
    let expected = expected_counts(&spec);
    assert_eq!(expected.values().sum::<i64>(), 180_000);
    assert_eq!(dumped_counts(dir, "file://./.cairn/checkpoints"), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_store_consistent(&dir.join(".cairn/checkpoints"), 2);
}

#[test]
fn a_container_with_another_spec_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, JOB);
    let addr = free_local_addr();
    let mut c0 = container(dir, 0, &addr);
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    setup(&other, &JOB.replace("seed: 21", "seed: 22"));
    let out = run_cmd(
        &other,
        &[
            "run",
            "job.yaml",
            "--quiet",
            "--coordinator-token-file",
            "token",
            "--container",
            "1",
            "--coordinator",
            &addr,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused container 1") && err.contains("spec"),
        "{err}"
    );
    let bad = run_cmd(
        dir,
        &[
            "run",
            "job.yaml",
            "--container",
            "3",
            "--coordinator",
            &addr,
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("containers 0..2"));
    c0.kill().unwrap();
    c0.wait().unwrap();
}

/// Records per partition of [`LOADED`], and the delay each costs.
const LOADED_RECORDS: u64 = 200;
const DELAY_MS: u64 = 2;

/// Four tasks in two processes (tasks 0 and 2 in container 0, 1 and 3 in container 1), each
/// record made to take 2 ms.
const LOADED: &str = "\
name: loaded
input:
  type: generator
  partitions: 4
  keys: 50
  seed: 3
  recordsPerPartition: 200
task:
  name: count
  config:
    delayPerRecord: 2ms
parallelism: 2
checkpoint:
  interval: 1h
";

/// Processes killed when the test ends, passed or failed (they hold after the job).
struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// `GET path` on the control API at `addr` with the job's token; the body as JSON.
fn control_get(addr: &str, path: &str) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The status the operator's autoscaler reads: once the finite job has finished (both
/// processes holding), every task, those of the other process included, reports exactly the
/// records it read, no lag, and at least the busy time its records' delay cost. The numbers of
/// the other process arrive in its container's reports, so its last report must reach the
/// coordinator before the run ends. The coordinator's metrics have no series for those tasks.
#[test]
fn the_status_reports_the_load_of_every_task_including_those_of_other_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, LOADED);
    let (addr, control, metrics) = (free_local_addr(), free_local_addr(), free_local_addr());
    let spawn = |mut cmd: std::process::Command| {
        cmd.arg("--hold-after-stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut c0 = container_command(dir, 0, &addr);
    c0.args(["--control-addr", &control, "--control-token-file", "token"])
        .args(["--metrics-addr", &metrics]);
    let _processes = Killed(vec![spawn(c0), spawn(container_command(dir, 1, &addr))]);

    common::launcher::wait_until("the job to finish", 120, || {
        std::net::TcpStream::connect(&control).is_ok()
            && control_get(&control, "/v1/status")["state"] == "finished"
    });
    let status = control_get(&control, "/v1/status");
    let scraped = http_get(&metrics, "/metrics").unwrap();

    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{status}");
    for task in tasks {
        let id = task["task"].as_u64().unwrap();
        assert_eq!(task["container"].as_u64(), Some(id % 2), "{task}");
        assert_eq!(task["recordsIn"].as_u64(), Some(LOADED_RECORDS), "{task}");
        assert_eq!(task["lag"].as_i64(), Some(0), "{task}");
        let busy = task["busyMs"].as_u64().unwrap();
        assert!(busy >= LOADED_RECORDS * DELAY_MS, "{task}");
    }
    // Container 0's own tasks are in its metrics, container 1's are not (its pod has them).
    assert!(
        scraped.contains("cairn_records_in_total{task=\"0\"} 200"),
        "{scraped}"
    );
    assert!(!scraped.contains("task=\"1\""), "{scraped}");
}

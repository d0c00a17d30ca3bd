//! One job as three `cairn-worker` processes (containers 0..2 of P = 3, as in three pods):
//! container 2 is SIGKILLed repeatedly while checkpoints run and restarted each time (the test
//! plays Kubernetes' part); containers 0 and 1 keep running untouched, and the job ends with
//! exact totals and every output record published exactly once.

mod common;

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

//! A checkpoint that does not complete within `checkpoint.timeout` is aborted and never used:
//! with uploads slowed far past the timeout nothing is ever committed, the job refuses to
//! pretend it stopped cleanly, and the next run starts from the beginning and is exact.

mod common;

use common::*;

const JOB: &str = "\
name: slow
input:
  type: generator
  partitions: 2
  keys: 50
  recordsPerPartition: 2000
task:
  name: count
output:
  type: file
  path: ./out
checkpoint:
  interval: 100ms
  timeout: 300ms
";

#[test]
fn timed_out_checkpoints_are_aborted_and_never_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();

    let slow = worker(dir)
        .args(["run", "job.yaml", "--quiet"])
        .env("CAIRN_FAULT_UPLOAD_DELAY_MS", "2000")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&slow.stderr);
    assert!(
        !slow.status.success(),
        "a job whose final checkpoint never commits must fail: {log}"
    );
    assert!(
        log.contains("checkpoint aborted") && log.contains("timed out"),
        "{log}"
    );
    assert!(
        log.contains("final checkpoint before stopping could not be committed"),
        "{log}"
    );
    assert!(committed_ids(dir, "file://./.cairn/checkpoints").is_empty());
    assert!(
        published_lines(&dir.join("out")).is_empty(),
        "nothing may be published without a commit"
    );

    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = cairn_contract::JobSpec::from_yaml_str(JOB).unwrap();
    let expected = expected_counts(&spec);
    assert_eq!(dumped_counts(dir, "file://./.cairn/checkpoints"), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
}

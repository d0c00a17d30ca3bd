//! The worker survives being killed at any moment: a finite `count` job is SIGKILLed at random
//! times (some of them during checkpoint uploads, slowed down by the fault-injection knob),
//! restarted each time, and must end with exactly the state and the output of a run that was
//! never interrupted.

mod common;

use common::*;

const JOB: &str = "\
name: crashy
input:
  type: generator
  partitions: 4
  keys: 500
  seed: 11
  recordsPerPartition: 50000
  ratePerSecond: 4000
task:
  name: count
output:
  type: file
  path: ./out
parallelism: 2
checkpoint:
  interval: 150ms
  retained: 2
  timeout: 20s
";

#[test]
fn random_sigkills_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    let spec = cairn_contract::JobSpec::from_yaml_str(JOB).unwrap();

    let mut rng = kill_schedule(0xCA1E);
    // Every third run uploads slowly, so that the kill lands inside an upload.
    let kills = kill_repeatedly(dir, &mut rng, 24, |k| {
        if k % 3 == 2 {
            &[("CAIRN_FAULT_UPLOAD_DELAY_MS", "15")]
        } else {
            &[]
        }
    });
    let slow_upload_kills = (0..kills).filter(|k| k % 3 == 2).count();
    assert!(
        kills >= 20,
        "the job finished after {kills} kills; slow it down so the test kills it 20 times"
    );
    assert!(slow_upload_kills >= 7);

    // Run to completion.
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected = expected_counts(&spec);
    assert_eq!(expected.values().sum::<i64>(), 200_000);
    let dumped = dumped_counts(dir, "file://./.cairn/checkpoints");
    assert_eq!(
        dumped, expected,
        "final state differs from the exact expected counts"
    );

    let published = published_lines(&dir.join("out"));
    let expected_out = expected_count_output(&expected);
    let duplicated: Vec<_> = published.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "output published more than once: {duplicated:?}"
    );
    let missing: Vec<_> = expected_out
        .keys()
        .filter(|k| !published.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "output missing: {missing:?}");
    assert_eq!(published, expected_out);

    // Retention (retained: 2) left exactly what the retained checkpoints reference.
    assert_store_consistent(&dir.join(".cairn/checkpoints"), 2);
}

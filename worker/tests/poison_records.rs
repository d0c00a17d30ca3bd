//! Poison input does not stop a job. Through the real worker, a `sum` job over a file input
//! meets keys of 70,000 bytes (Kafka allows such keys; a state key holds at most 65,535), a
//! sum that would overflow 64 bits, a value that is not a number and a line of more than
//! 16 MiB. Each is skipped and counted in `cairn_bad_records_total` of its task, exactly; the
//! other keys' state is exact, and the checkpointed offsets are past every byte of the input.

mod common;

use std::collections::BTreeMap;

use common::jobs::{committed_offsets, start_logged, worker_log};
use common::launcher::wait_until;
use common::*;

const JOB: &str = "\
name: poison
input:
  type: file
  partitions: 2
  path: ./in
task:
  name: sum
output:
  type: file
  path: ./out
checkpoint:
  interval: 100ms
  store: file://./ckpt
";

/// The value of `name{task="<task>"}` in a Prometheus text exposition.
fn metric(body: &str, name: &str, task: u32) -> Option<u64> {
    let prefix = format!("{name}{{task=\"{task}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn poison_records_are_skipped_and_counted_and_the_rest_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    std::fs::create_dir(dir.join("in")).unwrap();

    let long_key = "K".repeat(70_000);
    let max = i64::MAX;
    let partition_0 = format!(
        "a\t1\n{long_key}\t5\na\t2\nb\t{max}\nb\t1\nb\t-7\nc\tnot-a-number\nc\t3\n{long_key}\t1\n"
    );
    let mut partition_1 = b"d\t4\n".to_vec();
    partition_1.extend(std::iter::repeat_n(b'x', (16 << 20) + 1));
    partition_1.extend_from_slice(b"\td\nd\t5\n");
    std::fs::write(dir.join("in/partition-0"), &partition_0).unwrap();
    std::fs::write(dir.join("in/partition-1"), &partition_1).unwrap();

    let addr = free_local_addr();
    let mut child = start_logged(dir, &["--metrics-addr", &addr], &[]);
    // Task 0 reads 9 records: 2 with the long key, the overflowing `b 1` and `c not-a-number`
    // are bad. Task 1 reads 2 records; the long line is bad without becoming a record.
    let want = [(0, 9, 4), (1, 2, 1)];
    let mut body = String::new();
    wait_until("every record to be read and counted", 60, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker exited: {}",
            worker_log(dir)
        );
        body = http_get(&addr, "/metrics").unwrap_or_default();
        want.iter().all(|&(task, records, _)| {
            metric(&body, "cairn_records_in_total", task) == Some(records)
        }) && committed_offsets(dir) == (partition_0.len() + partition_1.len()) as u64
    });
    for (task, _, bad) in want {
        assert_eq!(
            metric(&body, "cairn_bad_records_total", task),
            Some(bad),
            "task {task}: {body}"
        );
    }
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", worker_log(dir));

    let expected: BTreeMap<String, i64> = [
        ("a".into(), 3),
        ("b".into(), max - 7),
        ("c".into(), 3),
        ("d".into(), 9),
    ]
    .into();
    assert_eq!(dumped_counts(dir, "file://./ckpt"), expected);
    let log = worker_log(dir);
    assert!(
        log.contains("skipping bad record"),
        "bad records are logged: {log}"
    );
    assert!(
        !log.contains(&long_key),
        "a long key is not written to the log"
    );
}

//! A Kafka topic that grows from 4 to 6 partitions while a keyed `count` job reads it: the
//! running job notices and says what to do, and a repartition from a savepoint (N 4 -> 6, state
//! re-split by Kafka's partitioner hash) ends with exactly the counts of every record, each
//! key's state in the task of the partition Kafka routes it to.

mod common;

use std::path::Path;
use std::process::Child;

use common::jobs::{committed_offsets, start_logged, stop_when_checkpointed, worker_log as log};
use common::kafka::{broker, counts_of, keyed_records};
use common::launcher::wait_until;
use common::*;

fn job(partitions: u32) -> String {
    format!(
        "name: grow
input:
  type: kafka
  topic: grow-in
  partitions: {partitions}
  brokers: {bootstrap}
  partitionCheckInterval: 1s
task:
  name: count
parallelism: 2
checkpoint:
  interval: 300ms
  store: file://./ckpt
",
        bootstrap = broker().bootstrap
    )
}

fn start(dir: &Path, args: &[&str]) -> Child {
    start_logged(dir, args, &[])
}

#[test]
fn a_topic_that_grows_is_reported_and_a_repartition_keeps_every_count() {
    let kafka = broker();
    kafka.create_topic("grow-in", 4);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), job(4)).unwrap();

    let before = keyed_records(7, 12_000, 400);
    kafka.produce("grow-in", &before);
    let child = start(dir, &[]);
    wait_until("the first records to be checkpointed", 60, || {
        committed_offsets(dir) == 12_000
    });

    // The topic grows while the job runs: it keeps running and says what to do.
    kafka.add_partitions("grow-in", 6);
    wait_until("the job to report the new partition count", 30, || {
        log(dir).contains("the topic now has 6 partitions but the job reads 4")
    });
    assert!(
        log(dir).contains("with input.partitions: 6"),
        "{}",
        log(dir)
    );
    stop_when_checkpointed(dir, child, 12_000);

    // Producers now spread keys over 6 partitions; the job is repartitioned from a savepoint.
    let after = keyed_records(8, 12_000, 400);
    kafka.produce("grow-in", &after);
    let out = run_cmd(dir, &["savepoint", "file://./ckpt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let savepoint = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(savepoint.contains("savepoints/sp-"), "{savepoint}");

    std::fs::write(dir.join("job.yaml"), job(6)).unwrap();
    let child = start(dir, &["--from-savepoint", &savepoint]);
    stop_when_checkpointed(dir, child, 24_000);

    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    assert_eq!(dumped_counts(dir, "file://./ckpt"), counts_of(&all));
    let dump = run_cmd(dir, &["state", "dump", "--store", "file://./ckpt"]);
    for line in String::from_utf8(dump.stdout).unwrap().lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = entry["key"].as_str().unwrap();
        assert_eq!(
            entry["task"].as_u64().unwrap() as u32,
            cairn_worker::partition::partition_of(key.as_bytes(), 6),
            "{line}"
        );
    }
}

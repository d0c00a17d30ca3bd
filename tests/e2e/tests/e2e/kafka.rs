//! The Kafka + S3 example on a real broker and a real S3 server: records produced in two
//! batches around a killed worker; the state in S3 holds exactly the count of every key, and the
//! exactly-once output topic holds every `(key, n)` for n = 1..=count exactly once.
//!
//! Kafka and MinIO run as pods of the cluster (`services.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_e2e::services::{S3_ACCESS_KEY, S3_SECRET_KEY};
use serde_json::{json, Value};

use crate::jobs::idle_running;
use crate::services::{Kafka, Minio};
use crate::target::{Suite, NS};
use crate::{poll, repo};

/// `n` keyed click lines `key<TAB>1` for Kafka's console producer, keys drawn deterministically
/// from `keys` ids starting at record `from`.
fn clicks(from: u64, n: u64, keys: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            format!("u{}", x % keys)
        })
        .collect()
}

pub fn kafka_s3_flow(suite: &Suite) {
    let minio = Minio::start(suite);
    minio.create_bucket("cairn");
    let kafka = Kafka::start(suite);
    kafka.create_topic("clicks", 4);
    kafka.create_topic("click-counts", 2);
    eprintln!(
        "e2e: kafka-count: MinIO at {}, Kafka at {} (pods of the cluster)",
        minio.endpoint, kafka.bootstrap
    );
    suite.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s3-credentials",
        "-n",
        NS,
        &format!("--from-literal=AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}"),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}"),
    ]);
    // The operator's default policy lets StreamJobs use only Secrets labelled for it
    // (docs/helm.md): the step a user takes, taken here.
    suite.kubectl_ok(&[
        "label",
        "secret",
        "s3-credentials",
        "-n",
        NS,
        "cairn.dev/streamjob-access=allowed",
    ]);

    let text = std::fs::read_to_string(repo("examples/k8s/kafka-s3.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["output"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    // kind.sh's cluster has no volume provisioner.
    job["spec"]["stateVolume"] = json!({"emptyDir": {}});
    job["spec"]["podTemplate"]["env"] =
        json!([{"name": "CAIRN_S3_ENDPOINT", "value": minio.endpoint}]);

    let first = clicks(0, 3000, 60);
    kafka.produce("clicks", &first);
    suite.apply_ok(&job);
    suite.wait("kafka-count", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    let killed = suite.kill(NS, "kafka-count-0");
    let second = clicks(3000, 3000, 60);
    kafka.produce("clicks", &second);
    suite.assert_recovered(killed);

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for key in first.iter().chain(&second) {
        *counts.entry(key.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, String> = counts
        .iter()
        .map(|(k, n)| (k.clone(), n.to_string()))
        .collect();
    suite.wait_for_state(
        "kafka-count: state in S3 equals the counts",
        "s3://cairn/kafka-count",
        &minio.env(),
        &expected,
        Duration::from_secs(180),
    );

    // Every (key, n) exactly once in the committed output (a transaction per checkpoint: the
    // last one may still be open right after the state matched, so poll).
    let want: BTreeMap<String, Vec<u64>> = counts
        .iter()
        .map(|(k, n)| (k.clone(), (1..=*n).collect()))
        .collect();
    poll(Duration::from_secs(60), Duration::from_secs(2), || {
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (key, value) in kafka.read_committed("click-counts") {
            seen.entry(key).or_default().push(value.parse().unwrap());
        }
        for values in seen.values_mut() {
            values.sort_unstable();
        }
        if seen == want {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .unwrap_or_else(|seen| {
        panic!(
            "kafka-count: output differs from exactly-once: {} keys seen, {} records",
            seen.len(),
            seen.values().map(Vec::len).sum::<usize>()
        )
    });
    eprintln!("e2e: kafka-count: output holds every (key, n) exactly once");
    suite.kubectl_ok(&[
        "delete",
        "sj",
        "kafka-count",
        "-n",
        NS,
        "--wait=true",
        "--timeout=120s",
    ]);
}

//! The windowed example (`examples/k8s/kafka-windows.yaml`) on the cluster's Kafka: page views
//! with event times in their JSON values, counted in 5 s tumbling windows per user, produced in
//! three batches: one before a worker is killed, one before a rescale (P 2 -> 3, through a
//! savepoint, while windows are open), and one after it. The exactly-once output topic holds
//! every window of every user exactly once, with the count computed here from the records.
//!
//! No record is late: event times rise with the production order, so within each partition
//! they never fall (the oracle would otherwise need each partition's arrival order). Lateness
//! itself is checked in-process (`worker/tests/windows.rs`). Windows close as the watermark
//! passes them; at the end, one record far ahead in event time per partition closes the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::jobs::{condition, idle_running, last_savepoint_reason};
use crate::services::Kafka;
use crate::target::{Suite, NS};
use crate::{poll, repo};

const USERS: u64 = 30;
/// Event time of view `i`: 10 ms apart, from 1 s.
const STEP_MS: u64 = 10;
const WINDOW_MS: u64 = 5_000;
/// Event time of the closing records: every window of the views ends long before.
const CLOSE_MS: u64 = 10_000_000;
/// Keys of the closing records. The console producer places keys by murmur2, and these eight
/// land on all four partitions (partitions 2, 1, 0, 2, 1, 3, 2, 3); one missing would leave
/// its partition's last windows open, and the wait for the output would say so.
const CLOSING_KEYS: u64 = 8;

/// Views `from..to` as (user, `{"ts":…}`), users drawn deterministically.
fn views(from: u64, to: u64) -> Vec<(String, String)> {
    (from..to)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            let ts = 1_000 + i * STEP_MS;
            (format!("user{}", x % USERS), format!("{{\"ts\":{ts}}}"))
        })
        .collect()
}

/// The oracle: for each user, window start -> the number of views in that window.
fn expected_windows(views: &[(String, String)]) -> BTreeMap<(String, u64), u64> {
    let mut windows = BTreeMap::new();
    for (user, value) in views {
        let v: Value = serde_json::from_str(value).unwrap();
        let ts = v["ts"].as_u64().unwrap();
        *windows
            .entry((user.clone(), ts - ts % WINDOW_MS))
            .or_default() += 1;
    }
    windows
}

pub fn windows_flow(suite: &Suite) {
    let kafka = Kafka::start(suite);
    kafka.create_topic("page-views", 4);
    kafka.create_topic("page-view-counts", 2);

    let text = std::fs::read_to_string(repo("examples/k8s/kafka-windows.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["output"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    // The example's recovery-time objective, with the interval kept short for the suite.
    job["spec"]["job"]["checkpoint"]["maxInterval"] = json!("4s");
    assert_eq!(
        job["spec"]["job"]["checkpoint"]["targetRecoveryTime"],
        "30s"
    );
    job["spec"]["upgradeTimeout"] = json!("60s");
    // kind.sh's cluster has no volume provisioner: the suite's store volume, state in emptyDir.
    job["spec"]["stateVolume"] = json!({"emptyDir": {}});
    job["spec"]["podTemplate"]["volumes"] = json!([suite.store_volume("store")]);

    let mut produced = views(0, 1500);
    kafka.produce_records("page-views", &produced);
    suite.apply_ok(&job);
    suite.wait("page-views", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });

    // The coordinator predicts its recovery and the operator reports it.
    let j = suite.wait(
        "page-views",
        "RecoveryObjectiveMet",
        Duration::from_secs(60),
        |j| condition(j, "RecoveryObjectiveMet") == Some("True"),
    );
    let objective = &j["status"]["recoveryObjective"];
    assert_eq!(objective["targetMs"], 30_000, "{objective}");
    let predicted = objective["predictedMs"].as_u64().unwrap_or(u64::MAX);
    assert!(predicted <= 30_000, "{objective}");
    let interval = objective["intervalMs"].as_u64().unwrap_or(0);
    assert!((1_000..=4_000).contains(&interval), "{objective}");

    // A worker killed with windows open and some fired.
    let killed = suite.kill(NS, "page-views-0");
    let second = views(1500, 3000);
    kafka.produce_records("page-views", &second);
    produced.extend(second);
    suite.assert_recovered(killed);

    // Rescale through a savepoint: the last windows of the second batch are open.
    suite.kubectl_ok(&["scale", "sj", "page-views", "-n", NS, "--replicas", "3"]);
    let j = suite.wait("page-views", "rescaled", Duration::from_secs(180), |j| {
        idle_running(j) && j["status"]["parallelism"] == 3
    });
    assert_eq!(last_savepoint_reason(&j), "rescale");

    let third = views(3000, 4500);
    kafka.produce_records("page-views", &third);
    produced.extend(third);
    let closing: Vec<(String, String)> = (0..CLOSING_KEYS)
        .map(|i| (format!("end-{i}"), format!("{{\"ts\":{CLOSE_MS}}}")))
        .collect();
    kafka.produce_records("page-views", &closing);

    let want = expected_windows(&produced);
    poll(Duration::from_secs(120), Duration::from_secs(3), || {
        let mut seen: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
        for (user, value) in kafka.read_committed("page-view-counts") {
            let v: Value = serde_json::from_str(&value)
                .unwrap_or_else(|e| panic!("output {value:?} of {user} is not JSON: {e}"));
            let (start, end) = (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap());
            assert_eq!(end - start, WINDOW_MS, "{user}: {value}");
            let count = v["count"].as_u64().unwrap();
            seen.entry((user, start)).or_default().push(count);
        }
        let exact = seen.len() == want.len()
            && want
                .iter()
                .all(|(window, n)| seen.get(window).is_some_and(|c| c == &[*n]));
        if exact {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .unwrap_or_else(|seen| {
        let wrong: Vec<_> = want
            .iter()
            .filter(|(w, n)| seen.get(*w).is_none_or(|c| c != &[**n]))
            .take(5)
            .collect();
        panic!(
            "windows: output differs from each window exactly once: {} windows expected, {} seen; \
             first differences (window, expected count): {wrong:?}",
            want.len(),
            seen.len()
        )
    });
    eprintln!(
        "e2e: windows: every window of every user exactly once ({} windows)",
        want.len()
    );
    suite.kubectl_ok(&[
        "delete",
        "sj",
        "page-views",
        "-n",
        NS,
        "--wait=true",
        "--timeout=120s",
    ]);
}

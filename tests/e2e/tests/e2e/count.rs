//! The count example through a worker kill, upgrade, rescale, an upgrade refused by the
//! restorability check, suspend and resume, to an exact result; then Finished, resumed with new
//! input to a new exact result, its pruned savepoints disposed of in the store, and deleted with
//! a final savepoint and `checkpointData: delete`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::inspect::{reference_state, STORE_MOUNT};
use crate::jobs::{condition, idle_running, last_savepoint_reason, phase, savepoints};
use crate::target::{Suite, NS};
use crate::{poll, repo};

/// 200 s of input at RATE: the operations before the suspension take about 130 s of running
/// time on 2 cores, so every one of them happens while records flow, with some to spare.
const RECORDS_PER_PARTITION: u64 = 3000;
const RATE: u64 = 15;
/// The new end of the input once the finished job resumes: 20 s more at RATE.
const MORE_RECORDS_PER_PARTITION: u64 = 3300;

/// `file://` URL of a job's store directory, as pods mounting the store volume see it.
pub fn store_url(name: &str) -> String {
    format!("file://{STORE_MOUNT}/{name}")
}

/// The count example, adjusted for the suite: a finite generator, short intervals and the
/// suite's store volume.
pub fn count_job(suite: &Suite) -> Value {
    let text = std::fs::read_to_string(repo("examples/k8s/count.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["recordsPerPartition"] = json!(RECORDS_PER_PARTITION);
    job["spec"]["job"]["input"]["ratePerSecond"] = json!(RATE);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    job["spec"]["upgradeTimeout"] = json!("40s");
    job["spec"]["deletion"] = json!({"finalSavepoint": true});
    // Few enough that the flow's savepoints get pruned, and their files disposed of.
    job["spec"]["savepoints"] = json!({"maxCount": 2});
    job["spec"]["podTemplate"]["volumes"] = json!([suite.store_volume("store")]);
    job
}

pub fn count_flow(suite: &Suite) {
    // Deploy; Running once checkpoints commit.
    let job = count_job(suite);
    suite.apply_ok(&job);
    suite.wait("count", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    let url = store_url("count");
    let before = suite.checkpoints(&url).last().copied();
    let before = before.expect("a committed checkpoint in the store");

    // Kill a worker: it comes back, checkpoints go on.
    let killed = suite.kill(NS, "count-1");
    suite.assert_recovered(killed);
    poll(Duration::from_secs(90), Duration::from_secs(1), || {
        let last = suite.checkpoints(&url).last().copied().unwrap_or(0);
        if last > before + 2 {
            Ok(())
        } else {
            Err(last)
        }
    })
    .unwrap_or_else(|last| {
        panic!(
            "no checkpoint after killing a worker: the latest is {last}, {before} before the kill"
        )
    });

    // Upgrade via savepoint (another checkpoint interval).
    suite.patch(
        "count",
        json!({"spec": {"job": {"checkpoint": {"interval": "3s"}}}}),
    );
    let j = suite.wait("count", "upgrade done", Duration::from_secs(120), |j| {
        idle_running(j) && savepoints(j) >= 1
    });
    assert_eq!(j["status"]["savepoints"][0]["reason"], "upgrade");

    // Rescale P 2 -> 3 through the scale subresource.
    suite.kubectl_ok(&["scale", "sj", "count", "-n", NS, "--replicas", "3"]);
    let j = suite.wait("count", "rescaled", Duration::from_secs(120), |j| {
        idle_running(j) && j["status"]["parallelism"] == 3
    });
    assert_eq!(last_savepoint_reason(&j), "rescale");
    assert_eq!(suite.worker_pods("count").len(), 3);

    // A broken upgrade (an image nobody has) is refused before the running job is touched:
    // the restorability check runs a pod of the new spec's image, which cannot start.
    let pods_before = suite.worker_pod_uids("count");
    suite.patch(
        "count",
        json!({"spec": {"image": "cairn/does-not-exist:1"}}),
    );
    let j = suite.wait("count", "upgrade refused", Duration::from_secs(180), |j| {
        idle_running(j) && j["status"]["failedHash"].is_string()
    });
    let degraded = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("NotRestorable")),
        "{degraded}"
    );
    assert_eq!(
        suite.worker_pod_uids("count"),
        pods_before,
        "no worker pod was touched"
    );
    assert!(suite.events().contains("UpgradeRefused"));
    suite.kubectl_ok(&[
        "patch",
        "sj",
        "count",
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/image"}]"#,
    ]);
    suite.wait(
        "count",
        "back on the good spec",
        Duration::from_secs(60),
        idle_running,
    );

    // Suspend and resume.
    suite.patch("count", json!({"spec": {"state": "suspended"}}));
    suite.wait("count", "suspended", Duration::from_secs(120), |j| {
        phase(j) == "Suspended"
    });
    assert_eq!(suite.worker_pods("count").len(), 0);
    suite.patch("count", json!({"spec": {"state": "running"}}));
    suite.wait("count", "resumed", Duration::from_secs(120), idle_running);

    // Let the input run out, then compare with a local run of the same job.
    let reference = reference_state(&suite.worker, &job, &suite.work_dir.join("reference"));
    // The input lasts RECORDS_PER_PARTITION / RATE seconds of running time, plus the time the
    // operations above kept it stopped.
    let input_time = Duration::from_secs(RECORDS_PER_PARTITION / RATE);
    suite.wait_for_state(
        "count: state equals the reference",
        &url,
        &[],
        &reference,
        input_time + Duration::from_secs(180),
    );

    // The input has ended: Finished, Ready, not late.
    let j = suite.wait("count", "finished", Duration::from_secs(60), |j| {
        phase(j) == "Finished" && j["status"]["operation"].is_null()
    });
    assert_eq!(condition(&j, "Ready"), Some("True"));
    assert_eq!(condition(&j, "CheckpointsHealthy"), Some("True"));

    // A finished job resumes with new input: more records a partition is an upgrade from a
    // savepoint of its final checkpoint, and the job runs on to the new end, exactly.
    suite.patch(
        "count",
        json!({"spec": {"job": {"input": {"recordsPerPartition": MORE_RECORDS_PER_PARTITION}}}}),
    );
    let mut more = job.clone();
    more["spec"]["job"]["input"]["recordsPerPartition"] = json!(MORE_RECORDS_PER_PARTITION);
    let reference = reference_state(&suite.worker, &more, &suite.work_dir.join("reference-more"));
    suite.wait_for_state(
        "count: resumed with new input, state equals the reference",
        &url,
        &[],
        &reference,
        Duration::from_secs(240),
    );
    let j = suite.wait("count", "finished again", Duration::from_secs(60), |j| {
        phase(j) == "Finished" && j["status"]["operation"].is_null()
    });
    assert_eq!(last_savepoint_reason(&j), "upgrade");

    // Savepoints pruned from the history (maxCount 2) leave status only once their files are
    // gone: the store then holds exactly the savepoints the status lists.
    let listed = poll(Duration::from_secs(120), Duration::from_secs(2), || {
        let j = suite.job("count");
        let in_status = savepoint_urls(&j);
        let in_store = suite.savepoints_in_store(&url);
        if in_status.len() == 2 && in_status == in_store {
            Ok(in_store)
        } else {
            Err(format!("status {in_status:?}, store {in_store:?}"))
        }
    })
    .unwrap_or_else(|seen| panic!("pruned savepoints not disposed of: {seen}"));
    assert!(
        suite.events().contains("SavepointsDisposed"),
        "{}",
        suite.events()
    );

    // Delete with `checkpointData: delete`: a final savepoint of the finished job (event), then
    // the store's checkpoints and every other savepoint are deleted; the final one stays.
    suite.patch(
        "count",
        json!({"spec": {"deletion": {"finalSavepoint": true, "checkpointData": "delete"}}}),
    );
    suite.delete_job("count");
    let events = suite.events();
    assert!(
        events.contains(&format!("delete savepoint {url}/savepoints/")),
        "no final savepoint event: {events}"
    );
    assert!(events.contains("StoreDataDeleted"), "{events}");
    assert_eq!(suite.checkpoints(&url), Vec::<u64>::new());
    let left = suite.savepoints_in_store(&url);
    assert_eq!(left.len(), 1, "only the final savepoint stays: {left:?}");
    assert!(
        !listed.contains(&left[0]),
        "{left:?} was in the history {listed:?}"
    );
}

/// The savepoint URLs a StreamJob's status lists, sorted.
fn savepoint_urls(j: &Value) -> Vec<String> {
    let mut urls: Vec<String> = j["status"]["savepoints"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["url"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    urls.sort();
    urls
}

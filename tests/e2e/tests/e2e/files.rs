//! A file-input job: repartitioned 4 -> 6 with the operator killed mid-operation, then a manual
//! savepoint, a restart, and last-state and stateless upgrades, each ending on the exact state
//! of a local run over the same files.
//!
//! The input files are a ConfigMap mounted into the worker pods (any cluster can do that; the
//! suite need not reach a node's disk). Pods started after the ConfigMap grows see the new files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::count::{count_job, store_url};
use crate::inspect::reference_state;
use crate::jobs::{idle_running, last_savepoint_reason, savepoints};
use crate::target::{Suite, NS};

const INPUT_MOUNT: &str = "/var/lib/cairn-input";
const INPUT_CONFIG_MAP: &str = "files-input";

/// Lines of `partition-<p>`: keys are unique to their partition (`p<p>-k<i>`), as with a keyed
/// producer, so each key's state lives in one task before and after a repartition.
fn partition_file(p: u32) -> String {
    (0..600)
        .map(|j| format!("p{p}-k{}\n", (j * 7 + p * 3) % 40))
        .collect()
}

/// Writes partitions `0..n` to the input ConfigMap and to `local` (for the reference run).
fn write_input(suite: &Suite, local: &Path, n: u32) {
    std::fs::create_dir_all(local).unwrap();
    let mut data = serde_json::Map::new();
    for p in 0..n {
        let name = format!("partition-{p}");
        std::fs::write(local.join(&name), partition_file(p)).unwrap();
        data.insert(name, json!(partition_file(p)));
    }
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": INPUT_CONFIG_MAP, "namespace": NS},
        "data": data,
    }));
}

/// A file-input job (follow: the files may grow) reading the input ConfigMap.
fn file_job(suite: &Suite) -> Value {
    let mut job = count_job(suite);
    job["metadata"]["name"] = json!("files");
    job["spec"]["job"]["input"] =
        json!({"type": "file", "partitions": 4, "path": INPUT_MOUNT, "follow": true});
    job["spec"]["job"]["checkpoint"]["store"] = json!(store_url("files"));
    let template = &mut job["spec"]["podTemplate"];
    template["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "input", "configMap": {"name": INPUT_CONFIG_MAP}}));
    template["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "input", "mountPath": INPUT_MOUNT, "readOnly": true}));
    job
}

pub fn repartition_flow(suite: &Suite) {
    let input = suite.work_dir.join("input");
    write_input(suite, &input, 4);
    let job = file_job(suite);
    suite.apply_ok(&job);
    suite.wait("files", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    // The same job over the local copy of the files, to its end.
    let mut finite = job.clone();
    finite["spec"]["job"]["input"]["follow"] = json!(false);
    finite["spec"]["job"]["input"]["path"] = json!(input.to_str().unwrap());
    let reference_dir = suite.work_dir.join("reference-files");
    let expected = reference_state(&suite.worker, &finite, &reference_dir.join("n4"));
    assert_eq!(expected.len(), 4 * 40, "reference run of the 4 files");
    let url = store_url("files");
    suite.wait_for_state(
        "files: state equals the reference",
        &url,
        &[],
        &expected,
        Duration::from_secs(120),
    );

    // The input grows two partitions; repartition to 6 and kill the operator mid-operation.
    write_input(suite, &input, 6);
    suite.patch(
        "files",
        json!({"spec": {"job": {"input": {"partitions": 6}, "parallelism": 3}}}),
    );
    let j = suite.wait(
        "files",
        "repartition started",
        Duration::from_secs(60),
        |j| j["status"]["operation"]["kind"] == "Repartition",
    );
    let operator_pod = suite.operator_pod().expect("operator pod");
    eprintln!(
        "e2e: files: kill the operator during step {}",
        j["status"]["operation"]["step"]
    );
    let killed = suite.kill(crate::target::OPERATOR_NS, &operator_pod);
    suite.assert_recovered(killed);
    let j = suite.wait("files", "repartitioned", Duration::from_secs(180), |j| {
        idle_running(j) && j["status"]["partitions"] == 6
    });
    assert_eq!(last_savepoint_reason(&j), "repartition");
    assert_eq!(suite.worker_pods("files").len(), 3);

    finite["spec"]["job"]["input"]["partitions"] = json!(6);
    let expected = reference_state(&suite.worker, &finite, &reference_dir.join("n6"));
    assert_eq!(expected.len(), 6 * 40, "reference run of the 6 files");
    suite.wait_for_state(
        "files: state equals the reference",
        &url,
        &[],
        &expected,
        Duration::from_secs(120),
    );

    other_operations(suite, &expected);

    // Delete the running job with a final savepoint: reported in an event, then the object goes.
    suite.delete_job("files");
    let events = suite.events();
    assert!(
        events.contains(&format!("delete savepoint {url}/epoch-1/savepoints/")),
        "no final savepoint event: {events}"
    );
}

/// The remaining operations on the running file job, each ending on the exact state: a manual
/// savepoint (`triggerNonce`), a restart (`restartNonce`), an upgrade in `last-state` mode (no
/// savepoint: the latest checkpoint), and one in `stateless` mode (a fresh store path: the
/// files are read again from the start, to the same state).
fn other_operations(suite: &Suite, expected: &BTreeMap<String, String>) {
    let before = savepoints(&suite.job("files"));
    suite.patch(
        "files",
        json!({"spec": {"savepoints": {"triggerNonce": 1}}}),
    );
    let j = suite.wait("files", "manual savepoint", Duration::from_secs(60), |j| {
        idle_running(j) && savepoints(j) == before + 1
    });
    assert_eq!(j["status"]["savepoints"][before]["reason"], "manual");

    let old_pods = suite.worker_pod_uids("files");
    suite.patch("files", json!({"spec": {"restartNonce": 1}}));
    // observedGeneration is written with the operation's start: equal and idle means done.
    suite.wait("files", "restarted", Duration::from_secs(240), |j| {
        idle_running(j) && j["status"]["observedGeneration"] == j["metadata"]["generation"]
    });
    let new_pods = suite.worker_pod_uids("files");
    assert!(
        old_pods.split(' ').all(|uid| !new_pods.contains(uid)),
        "restartNonce replaces every worker pod: {old_pods} / {new_pods}"
    );
    let url = store_url("files");
    assert_eq!(suite.state(&url, &[]).as_ref(), Ok(expected));

    let before = savepoints(&suite.job("files"));
    let j = upgrade_interval(suite, "last-state", "3s");
    assert_eq!(savepoints(&j), before, "last-state takes no savepoint");
    suite.wait_for_state(
        "files: state equals the reference after the last-state upgrade",
        &url,
        &[],
        expected,
        Duration::from_secs(60),
    );

    let j = upgrade_interval(suite, "stateless", "2s");
    let epoch = j["status"]["deployed"]["stateEpoch"].as_u64().unwrap();
    assert_eq!(epoch, 1, "stateless moves the job to a fresh store path");
    suite.wait_for_state(
        "files: the stateless restart re-read the files to the same state",
        &format!("{url}/epoch-{epoch}"),
        &[],
        expected,
        Duration::from_secs(90),
    );
    eprintln!("e2e: files: manual savepoint, restart, last-state and stateless upgrades exact");
}

/// Upgrades the file job in `mode` to another checkpoint `interval` and waits until that spec
/// is deployed and the job idle again; returns the job.
fn upgrade_interval(suite: &Suite, mode: &str, interval: &str) -> Value {
    suite.patch(
        "files",
        json!({"spec": {"upgradeMode": mode, "job": {"checkpoint": {"interval": interval}}}}),
    );
    suite.wait(
        "files",
        &format!("{mode} upgrade"),
        Duration::from_secs(240),
        |j| {
            idle_running(j)
                && j["status"]["deployed"]["pods"]["job"]["checkpoint"]["interval"] == interval
        },
    )
}

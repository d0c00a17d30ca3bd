//! Warm standbys (`examples/k8s/standby.yaml`, docs/operator.md#warm-standbys): a count job with
//! `standby: true` gets a standbys' StatefulSet; once `StandbyReady` is True, the *active* pod of
//! container 1 (the one `status.standbys` does not name) is SIGKILLed, its standby logs that it
//! takes container 1 over, the killed pod comes back as the new standby and `StandbyReady` is
//! True again; twice, the second time killing the pod that took over the first time. The input
//! then runs out and the state in the store equals, key for key, a local reference run.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::count::store_url;
use crate::inspect::reference_state;
use crate::jobs::{condition, idle_running};
use crate::target::{Suite, NS};
use crate::{poll, repo};

/// The example's name (its standbys' StatefulSet is `warm-count-standby`).
const NAME: &str = "warm-count";
/// 300 s of input at RATE: the two takeovers (each waiting for the standby to be back) take
/// about 150 s of running time on 2 cores, so both happen while records flow.
const RECORDS_PER_PARTITION: u64 = 4500;
const RATE: u64 = 15;
/// Rounds of "kill the active pod of container 1".
const ROUNDS: usize = 2;
/// What a standby logs when it is promoted (worker/src/runtime/standby.rs).
const TAKEOVER: &str = "taking over container 1";
/// What a process logs when it finds its container taken and stands by.
const STANDING_BY: &str = "standing by for container 1";

/// The standby example, adjusted for the suite: P 2 on 4 partitions (one standby, of container
/// 1), a finite generator, checkpoints every 2 s and the suite's store volume.
fn standby_job(suite: &Suite) -> Value {
    let text = std::fs::read_to_string(repo("examples/k8s/standby.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(job["metadata"]["name"], NAME);
    assert_eq!(job["spec"]["job"]["standby"], true);
    job["metadata"]["namespace"] = json!(NS);
    let spec = &mut job["spec"]["job"];
    spec["parallelism"] = json!(2);
    spec["input"]["partitions"] = json!(4);
    spec["input"]["recordsPerPartition"] = json!(RECORDS_PER_PARTITION);
    spec["input"]["ratePerSecond"] = json!(RATE);
    spec["checkpoint"]["interval"] = json!("2s");
    spec["checkpoint"]["store"] = json!(store_url(NAME));
    job["spec"]["podTemplate"]["volumes"] = json!([suite.store_volume("store")]);
    job
}

/// The pod standing by for container 1 while `StandbyReady` is True, if it is.
fn ready_standby(j: &Value) -> Option<String> {
    if condition(j, "StandbyReady") != Some("True") {
        return None;
    }
    j["status"]["standbys"]
        .as_array()?
        .iter()
        .find(|s| s["container"] == 1 && s["checkpoint"].is_u64())?["pod"]
        .as_str()
        .map(str::to_owned)
}

/// The id of the job's last committed checkpoint in its status.
fn last_checkpoint(j: &Value) -> u64 {
    j["status"]["lastCheckpoint"]["id"].as_u64().unwrap_or(0)
}

pub fn standby_flow(suite: &Suite) {
    let job = standby_job(suite);
    suite.apply_ok(&job);
    suite.wait(NAME, "Running", Duration::from_secs(180), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    // Both sets, disjoint: the standbys' one has P-1 pods numbered from 1.
    let set: Value = serde_json::from_str(&suite.kubectl_ok(&[
        "get",
        "statefulset",
        &format!("{NAME}-standby"),
        "-n",
        NS,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        (&set["spec"]["replicas"], &set["spec"]["ordinals"]["start"]),
        (&json!(1), &json!(1)),
        "{}",
        set["spec"]
    );
    let mut j = suite.wait(NAME, "StandbyReady", Duration::from_secs(180), |j| {
        ready_standby(j).is_some()
    });

    let pods = [format!("{NAME}-1"), format!("{NAME}-standby-1")];
    for round in 1..=ROUNDS {
        let standby = ready_standby(&j).unwrap();
        assert!(pods.contains(&standby), "standby {standby} of {pods:?}");
        let active = pods.iter().find(|p| **p != standby).unwrap().clone();
        let before = last_checkpoint(&j);
        eprintln!("e2e: {NAME}: round {round}: killing {active}, the active pod of container 1; {standby} stands by");

        // SIGKILL of the active process: its standby takes container 1 over.
        let killed_at = Instant::now();
        let killed = suite.kill(NS, &active);
        poll(Duration::from_secs(90), Duration::from_millis(500), || {
            let log = suite.pod_log(NS, &standby, "worker");
            if log.contains(TAKEOVER) {
                Ok(())
            } else {
                Err(log)
            }
        })
        .unwrap_or_else(|log| {
            panic!(
                "{standby} did not log {TAKEOVER:?} within 90 s of the kill of {active}; its log:\n{log}\n{}",
                suite.diagnostics()
            )
        });
        eprintln!(
            "e2e: {NAME}: {standby} took container 1 over within {:.1}s of the kill",
            killed_at.elapsed().as_secs_f64()
        );

        // The killed pod comes back (the kubelet restarts it), finds container 1 taken and
        // stands by; the job committed checkpoints meanwhile.
        suite.assert_recovered(killed);
        j = suite.wait(
            NAME,
            &format!("{active} standing by (round {round})"),
            Duration::from_secs(180),
            |j| {
                ready_standby(j).as_deref() == Some(active.as_str())
                    && idle_running(j)
                    && last_checkpoint(j) > before
            },
        );
        let log = suite.pod_log(NS, &active, "worker");
        assert!(
            log.contains(STANDING_BY),
            "{active} is named as the standby but did not log {STANDING_BY:?}:\n{log}"
        );
    }

    // The input runs out; the state equals a local run of the same job (one process, no
    // standby: standbys change where tasks run, never what they compute).
    let mut local = job.clone();
    local["spec"]["job"]
        .as_object_mut()
        .unwrap()
        .remove("standby");
    let reference = reference_state(&suite.worker, &local, &suite.work_dir.join("standby"));
    let input_time = Duration::from_secs(RECORDS_PER_PARTITION / RATE);
    suite.wait_for_state(
        "warm-count: state equals the reference after two takeovers",
        &store_url(NAME),
        &[],
        &reference,
        input_time + Duration::from_secs(240),
    );
    suite.delete_job(NAME);
}

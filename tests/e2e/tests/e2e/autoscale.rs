//! The autoscaling example: a rate-limited generator whose rate is raised and lowered, with
//! the operator choosing P from the load the workers measure (docs/autoscaling.md). Each
//! record costs 2 ms (`delayPerRecord`), so a container handles about 500 records/s: at 120
//! records/s the job stays at P 1, at 480 it scales to P 2 (three tasks of 80 records/s a
//! container, about 50% busy; P 1 would be about 100%) and verifies that P 2 keeps up, and back
//! at 120 it scales down to P 1. Then, without autoscaler and rate limit, the input runs out and
//! the state equals, key for key, a local run of the same job: the autoscaled rescales lost
//! nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::count::store_url;
use crate::inspect::reference_state;
use crate::jobs::{idle_running, phase};
use crate::repo;
use crate::target::{Suite, NS};

const NAME: &str = "autoscaled";
/// Enough that the input lasts through every phase at the limited rates (about 20 000 records
/// a partition are read before the rate limit is lifted).
const RECORDS_PER_PARTITION: u64 = 40_000;

/// The example, adjusted for the suite: a finite generator, the suite's store volume, and a
/// target of 80% (P 2 at 480 records/s is 48% at exactly 2 ms a record; the margin is for the
/// cost of a record beyond its delay on a busy 2-core machine, measured at 2.3 ms on kind, and
/// for the backlog P 1 left).
fn autoscaled_job(suite: &Suite) -> Value {
    let text = std::fs::read_to_string(repo("examples/k8s/autoscaled.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["recordsPerPartition"] = json!(RECORDS_PER_PARTITION);
    job["spec"]["job"]["checkpoint"]["store"] = json!(store_url(NAME));
    job["spec"]["autoscaler"]["targetUtilization"] = json!(0.8);
    job["spec"]["upgradeTimeout"] = json!("60s");
    job["spec"]["podTemplate"]["volumes"] = json!([suite.store_volume("store")]);
    job
}

fn autoscaler(j: &Value) -> &Value {
    &j["status"]["autoscaler"]
}

/// The scaling decisions in status.
fn history(j: &Value) -> Vec<Value> {
    autoscaler(j)["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn rate(suite: &Suite, per_partition: u64) {
    suite.patch(
        NAME,
        json!({"spec": {"job": {"input": {"ratePerSecond": per_partition}}}}),
    );
}

pub fn autoscale_flow(suite: &Suite) {
    let job = autoscaled_job(suite);
    suite.apply_ok(&job);

    // 120 records/s: the autoscaler evaluates the load and holds P 1.
    let j = suite.wait(NAME, "evaluated at P 1", Duration::from_secs(180), |j| {
        idle_running(j) && autoscaler(j)["lastEvaluation"]["recommended"] == 1
    });
    let load = &autoscaler(&j)["lastEvaluation"]["load"];
    let input = load["inputRate"].as_f64().unwrap();
    assert!(
        (60.0..=180.0).contains(&input),
        "input rate {input}: {load}"
    );
    assert!(history(&j).is_empty(), "{}", autoscaler(&j));

    // 480 records/s: P 1 falls behind; the autoscaler scales to P 2 and P 2 keeps up.
    rate(suite, 80);
    let j = suite.wait(NAME, "scaled up", Duration::from_secs(300), |j| {
        idle_running(j) && j["status"]["parallelism"] == 2
    });
    let up = &history(&j)[0];
    assert_eq!(
        (&up["from"], &up["to"], &up["reason"]),
        (&json!(1), &json!(2), &json!("ScaleUp")),
        "{up}"
    );
    let input = up["load"]["inputRate"].as_f64().unwrap();
    assert!(input > 400.0, "the scale-up saw {input} records/s: {up}");
    assert_eq!(suite.worker_pods(NAME).len(), 2);
    let j = suite.wait(
        NAME,
        "the scale-up verified",
        Duration::from_secs(180),
        |j| history(j)[0]["outcome"] == "KeptUp",
    );
    assert_eq!(history(&j).len(), 1, "{}", autoscaler(&j));
    let scaled = suite.event_messages("Autoscaled");
    assert!(
        scaled.iter().any(|m| m.starts_with("P 1 -> 2: ")),
        "{scaled:?}"
    );
    assert!(!suite.event_messages("AutoscaleVerified").is_empty());

    // 120 records/s again: back to P 1, since the backlog does not grow.
    rate(suite, 20);
    let j = suite.wait(NAME, "scaled down", Duration::from_secs(300), |j| {
        idle_running(j) && j["status"]["parallelism"] == 1
    });
    let down = history(&j).last().cloned().unwrap();
    assert_eq!(
        (&down["from"], &down["to"], &down["reason"]),
        (&json!(2), &json!(1), &json!("ScaleDown")),
        "{down}"
    );
    assert_eq!(suite.worker_pods(NAME).len(), 1);

    // Without the autoscaler, the rate limit and the delay, the input runs out: the state equals
    // a local run of the same records.
    suite.patch(
        NAME,
        json!({"spec": {
            "autoscaler": null,
            "job": {"input": {"ratePerSecond": null}, "task": {"config": null}},
        }}),
    );
    let mut plain = job.clone();
    plain["spec"]["job"]["task"]
        .as_object_mut()
        .unwrap()
        .remove("config");
    let reference = reference_state(&suite.worker, &plain, &suite.work_dir.join("autoscaled"));
    let url = store_url(NAME);
    suite.wait_for_state(
        "autoscaled: state equals the reference",
        &url,
        &[],
        &reference,
        Duration::from_secs(300),
    );
    let j = suite.wait(NAME, "finished", Duration::from_secs(120), |j| {
        phase(j) == "Finished" && j["status"]["operation"].is_null()
    });
    assert!(autoscaler(&j).is_null(), "{}", autoscaler(&j));
    suite.delete_job(NAME);
}

//! End-to-end: the chart, the operator (as a pod) and real jobs on a real cluster, with exact
//! results. One cluster for the whole run (a job moves through every operation in turn): the
//! one `KUBECONFIG` names, normally the kind cluster `tests/e2e/kind.sh` builds (`make test`
//! runs it; see `target.rs` for what another cluster needs).
//!
//! Flow: install the chart (`helm install`, as the README tells users) -> operator pod Ready ->
//! an invalid StreamJob is rejected by the API server with the CEL message -> the count example
//! (a finite generator) reaches Running and commits checkpoints -> a worker is SIGKILLed and the
//! job recovers -> upgrade via savepoint -> rescale P 2 -> 3 -> a broken upgrade rolls back by
//! itself -> suspend and resume -> the input runs out and the state in the store equals, key for
//! key, a local reference run of the same job -> deletion with a final savepoint -> a file-input
//! job repartitioned 4 -> 6 while the operator is killed mid-operation, again to exactly the
//! state of a local run, then a manual savepoint, a restart and last-state and stateless
//! upgrades, each to the exact state -> the Kafka + S3 example, with Kafka and MinIO as pods of
//! the cluster, to exactly-once output.
//!
//! The suite never touches a store directly: pods of the worker image read it (`inspect.rs`).
//! `CAIRN_E2E_FLOWS=files,kafka` runs only those flows (to debug one without the others).

mod count;
mod files;
mod inspect;
mod jobs;
mod kafka;
mod services;
mod target;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use target::{Suite, NS, OPERATOR_NS, RELEASE};

/// Calls `check` every `every` until it returns `Ok`, and returns that; once `timeout` has
/// passed, returns the last `Err` instead (what was seen), for the caller's panic message.
pub fn poll<T, E>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if start.elapsed() > timeout => return Err(seen),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// A path in the repository.
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// One flow of the suite: a job through its operations, on the suite's cluster.
type Flow = fn(&Suite);

#[test]
fn operator_flows_on_a_real_cluster() {
    let suite = Suite::start();
    suite.create_namespaces();
    install_chart(&suite);

    // An invalid StreamJob: rejected by the API server, with the CEL message.
    let mut bad = count::count_job(&suite);
    bad["metadata"]["name"] = json!("too-wide");
    bad["spec"]["job"]["parallelism"] = json!(5);
    let rejected = suite.apply(&bad);
    assert!(
        !rejected.ok,
        "parallelism 5 > 4 partitions must be rejected"
    );
    assert!(
        rejected
            .text()
            .contains("spec.job.parallelism must be <= spec.job.input.partitions"),
        "{}",
        rejected.text()
    );

    let only = std::env::var("CAIRN_E2E_FLOWS").unwrap_or_default();
    let flows: [(&str, Flow); 3] = [
        ("count", count::count_flow),
        ("files", files::repartition_flow),
        ("kafka", kafka::kafka_s3_flow),
    ];
    for (name, flow) in flows {
        if only.is_empty() || only.split(',').any(|f| f.trim() == name) {
            let started = Instant::now();
            flow(&suite);
            eprintln!("e2e: flow {name} passed in {:.0?}", started.elapsed());
        }
    }
}

/// Installs the chart with `helm install`, as the README tells users, and waits until the
/// operator is Available.
fn install_chart(suite: &Suite) {
    let started = Instant::now();
    let installed = suite
        .helm()
        .args([
            "install",
            RELEASE,
            repo("charts/cairn").to_str().unwrap(),
            "--namespace",
            OPERATOR_NS,
            "--set",
            &format!("watchNamespaces={{{NS}}}"),
            // The suite's job store is a hostPath directory on kind (target.rs); the policy
            // refuses hostPath volumes unless the administrator allows them, as done here.
            "--set",
            "policy.allowedVolumeTypes={configMap,downwardAPI,emptyDir,persistentVolumeClaim,secret,hostPath}",
            // The rollback flow deploys an image that does not exist (cairn/does-not-exist).
            "--set",
            "policy.allowedImages={cairn/*}",
            "--wait",
            "--timeout",
            "180s",
        ])
        .output()
        .expect("helm runs");
    assert!(
        installed.status.success(),
        "helm install: {}{}\n{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr),
        suite.diagnostics()
    );
    let available = suite.kubectl(&[
        "wait",
        "-n",
        OPERATOR_NS,
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=120s",
    ]);
    assert!(
        available.ok,
        "operator not available: {}\n{}",
        available.text(),
        suite.diagnostics()
    );
    eprintln!(
        "e2e: chart installed (helm install {RELEASE}), operator Available in {:.0?}",
        started.elapsed()
    );
}

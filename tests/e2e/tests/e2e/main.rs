//! End-to-end: the chart, the operator (as a pod) and real jobs on a real cluster, with exact
//! results. One cluster for the whole run (a job moves through every operation in turn): the
//! one `KUBECONFIG` names, normally the kind cluster `tests/e2e/kind.sh` builds (`make test`
//! runs it; see `target.rs` for what another cluster needs).
//!
//! Flow: install the chart (`helm install`, as the README tells users) -> operator pod Ready ->
//! an invalid StreamJob is rejected by the API server with the CEL message -> the count example
//! (a finite generator) reaches Running and commits checkpoints -> a worker is SIGKILLed and the
//! job recovers -> upgrade via savepoint (after a restorability check) -> rescale P 2 -> 3 -> a
//! broken upgrade is refused by the restorability check before the job is touched -> suspend and
//! resume -> the input runs out and the state in the store equals, key for key, a local reference
//! run of the same job -> the job is Finished -> deletion with a final savepoint of the finished
//! job -> a file-input
//! job repartitioned 4 -> 6 while the operator is killed mid-operation, again to exactly the
//! state of a local run, then a manual savepoint, a restart and last-state and stateless
//! upgrades, each to the exact state -> the Kafka + S3 example, with Kafka and MinIO as pods of
//! the cluster, to exactly-once output -> the windowed example on the same Kafka: event-time
//! windows across a killed worker and a rescale with windows open, each window exactly once ->
//! the warm-standby example: the active pod of container 1 SIGKILLed twice, each time taken over
//! by its standby and back as the new standby, to exactly the state of a local run -> the
//! autoscaling example, its generator's rate raised and lowered: P 1 -> 2 -> 1 chosen by the
//! operator, then to exactly the state of a local run.
//!
//! The suite never touches a store directly: pods of the worker image read it (`inspect.rs`).
//!
//! -> component tasks (`wasm`): the C count from a ConfigMap, upgraded through savepoints to
//! the Python and the JavaScript count read from S3, each to exactly the state of a local run.
//!
//! Each flow is a test of its own, named `count`, `autoscale`, `files`, `kafka`, `windows`,
//! `standby` and `wasm`, after the cluster-wide
//! checks (`chart`). The harness is this file's `main` (`harness = false`), because the flows
//! share one cluster, one chart install and one cleanup, which libtest cannot express: a flow
//! that fails is reported by name and the next one still runs; the run fails if any did.
//! Arguments select flows by name, as libtest filters do (`tests/e2e/kind.sh files kafka`);
//! `--list` lists them.

mod autoscale;
mod count;
mod files;
mod inspect;
mod jobs;
mod kafka;
mod pauses;
mod services;
mod standby;
mod target;
mod wasm;
mod windows;

use std::path::PathBuf;
use std::process::ExitCode;
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

/// Flows run only when an argument names them: measurements that take minutes and assert
/// nothing about behaviour the other flows do not (`tests/e2e/kind.sh pauses`).
const OPT_IN: [(&str, Flow); 1] = [("pauses", pauses::pauses_flow)];

/// The flows, in the order they run.
const FLOWS: [(&str, Flow); 7] = [
    ("count", count::count_flow),
    ("autoscale", autoscale::autoscale_flow),
    ("files", files::repartition_flow),
    ("kafka", kafka::kafka_s3_flow),
    ("windows", windows::windows_flow),
    ("standby", standby::standby_flow),
    ("wasm", wasm::wasm_flow),
];

fn main() -> ExitCode {
    // Flags (`--nocapture`, which kind.sh passes for libtest's sake) are ignored; every other
    // argument is a filter, matched like libtest's (a substring of the flow's name).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in FLOWS.into_iter().chain(OPT_IN) {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<(&str, Flow)> = FLOWS
        .into_iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .chain(
            OPT_IN
                .into_iter()
                .filter(|(name, _)| filters.iter().any(|f| name.contains(f))),
        )
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = FLOWS.iter().chain(&OPT_IN).map(|(name, _)| *name).collect();
        eprintln!("e2e: no flow matches {filters:?}; the flows are {names:?}");
        return ExitCode::FAILURE;
    }

    let suite = Suite::start();
    let mut results = vec![run_one("chart", || cluster_checks(&suite))];
    // A failed chart install leaves nothing for the flows to run on.
    if results[0].1 {
        for (name, flow) in selected {
            results.push(run_one(name, || flow(&suite)));
        }
    }
    drop(suite); // deletes what the suite created, also after a failure
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| *name)
        .collect();
    let summary: Vec<String> = results
        .iter()
        .map(|(name, passed)| format!("{name} {}", if *passed { "ok" } else { "FAILED" }))
        .collect();
    eprintln!("e2e: {}", summary.join(", "));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("e2e: failed: {}", failed.join(" "));
        ExitCode::FAILURE
    }
}

/// Runs one test of the suite, catching its panic (whose message the panic hook has printed);
/// returns its name and whether it passed.
fn run_one(name: &str, test: impl FnOnce()) -> (&str, bool) {
    let started = Instant::now();
    let passed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)).is_ok();
    let verdict = if passed { "passed" } else { "FAILED" };
    eprintln!("e2e: flow {name} {verdict} in {:.0?}", started.elapsed());
    (name, passed)
}

/// What every flow relies on: the namespaces, the chart installed with the operator Available,
/// and the API server refusing an invalid StreamJob with the CRD's CEL message.
fn cluster_checks(suite: &Suite) {
    suite.create_namespaces();
    install_chart(suite);
    let mut bad = count::count_job(suite);
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

//! End-to-end: the chart, the operator (as a pod) and a real job on the test bed's cluster, with
//! exact results. One cluster for the whole flow (a job moves through every operation in turn).
//!
//! Flow: install the chart (`helm template | kubectl apply`) -> operator pod Ready -> an invalid
//! StreamJob is rejected by the API server with the CEL message -> the count example (a finite
//! generator) reaches Running and commits checkpoints -> a worker pod's process is SIGKILLed and
//! the job recovers -> upgrade via savepoint -> rescale P 2 -> 3 -> a broken upgrade rolls back
//! by itself -> suspend and resume -> the input runs out and the state in the store equals, key
//! for key, a local reference run of the same job -> deletion with a final savepoint.
//!
//! The store is a hostPath directory of this test (the examples use a PVC; the test bed has no
//! volume provisioner), so the test reads checkpoints and savepoints with `cairn-worker`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
use cairn_testbed::{Cluster, ClusterOptions};
use serde_json::{json, Value};

const NS: &str = "jobs";
const RECORDS_PER_PARTITION: u64 = 4000;
const RATE: u64 = 15;

struct Bed {
    cluster: Cluster,
    agent: NodeAgent,
    worker: PathBuf,
    store: PathBuf,
}

impl Bed {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self
            .cluster
            .kubectl()
            .args(args)
            .output()
            .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {text}");
        text
    }

    fn apply(&self, manifest: &Value) -> (bool, String) {
        let file = self.cluster.work_dir().join("apply.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            file.to_str().unwrap(),
        ])
    }

    fn job(&self) -> Value {
        let text = self.kubectl_ok(&["get", "sj", "count", "-n", NS, "-o", "json"]);
        serde_json::from_str(&text).expect("StreamJob JSON")
    }

    fn patch(&self, patch: Value) {
        self.kubectl_ok(&[
            "patch",
            "sj",
            "count",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Waits until `check` holds on the StreamJob, printing its status on timeout.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job();
            if check(&job) {
                eprintln!("e2e: {what} after {:.0}s", start.elapsed().as_secs_f64());
                return job;
            }
            if start.elapsed() > timeout {
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]).1;
                let operator = self.operator_log();
                panic!(
                    "timed out waiting for {what}; status: {}\npods:\n{pods}\noperator log tail:\n{operator}\nagent log tail:\n{}",
                    serde_json::to_string_pretty(&job["status"]).unwrap(),
                    self.agent.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Names of the count job's worker pods (stdout only: with no pod, kubectl says so on
    /// stderr).
    fn worker_pods(&self) -> Vec<String> {
        let out = self
            .cluster
            .kubectl()
            .args([
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "cairn.dev/job=count",
                "-o",
                "name",
            ])
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn operator_log(&self) -> String {
        let pods = self
            .kubectl(&["get", "pods", "-n", "cairn-system", "-o", "name"])
            .1;
        let pod = pods
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("pod/")
            .to_string();
        let log = self.agent.pod_log("cairn-system", &pod, "operator");
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Committed checkpoints in the job's store.
    fn checkpoints(&self) -> Vec<u64> {
        let out = Command::new(&self.worker)
            .args([
                "checkpoints",
                &format!("file://{}", self.store.join("count").display()),
                "--json",
            ])
            .output()
            .expect("cairn-worker runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["id"].as_u64())
            .collect()
    }
}

fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("")
}

fn idle_running(job: &Value) -> bool {
    phase(job) == "Running" && job["status"]["operation"].is_null()
}

/// The count example, adjusted for the test bed: a finite generator and a hostPath store.
fn count_job(store: &Path) -> Value {
    let text = std::fs::read_to_string(repo("examples/k8s/count.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["recordsPerPartition"] = json!(RECORDS_PER_PARTITION);
    job["spec"]["job"]["input"]["ratePerSecond"] = json!(RATE);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    job["spec"]["upgradeTimeout"] = json!("40s");
    job["spec"]["deletion"] = json!({"finalSavepoint": true});
    job["spec"]["podTemplate"]["volumes"] = json!([{"name": "store", "hostPath": {"path": store.to_str().unwrap(), "type": "DirectoryOrCreate"}}]);
    job
}

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// key -> value over every task of the latest checkpoint (or savepoint-free store).
fn state(worker: &Path, store_url: &str) -> BTreeMap<String, String> {
    let out = Command::new(worker)
        .args(["state", "dump", "--store", store_url])
        .output()
        .expect("cairn-worker runs");
    assert!(
        out.status.success(),
        "state dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            (v["key"].to_string(), v["value"].to_string())
        })
        .collect()
}

/// Runs the same job locally (one process, no cluster) to the end: the expected state.
fn reference_state(worker: &Path, job: &Value, dir: &Path) -> BTreeMap<String, String> {
    let mut spec = job["spec"]["job"].clone();
    spec["name"] = json!("count");
    spec["input"]["ratePerSecond"] = json!(0);
    spec["checkpoint"]["store"] = json!(format!("file://{}", dir.join("store").display()));
    spec["state"] = json!({"dir": dir.join("state").to_str().unwrap()});
    let file = dir.join("reference.yaml");
    std::fs::write(&file, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let status = Command::new(worker)
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .status()
        .expect("reference run");
    assert!(status.success(), "reference run failed");
    state(worker, &format!("file://{}", dir.join("store").display()))
}

#[test]
fn operator_flows_on_a_real_cluster() {
    let worker = workspace_binary("cairn-worker").expect("cairn-worker built");
    let operator = workspace_binary("cairn-operator").expect("cairn-operator built");
    let cluster = Cluster::start(ClusterOptions::new("e2e")).expect("cluster starts");
    let agent = NodeAgent::start(
        &cluster,
        &[
            ("cairn/worker".into(), worker.clone()),
            ("cairn/operator".into(), operator),
        ],
    )
    .expect("node agent starts");
    let store = cluster.work_dir().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let bed = Bed {
        cluster,
        agent,
        worker,
        store,
    };

    // Install the chart as users do without Helm's release machinery.
    bed.kubectl_ok(&["create", "namespace", "cairn-system"]);
    bed.kubectl_ok(&["create", "namespace", NS]);
    let helm = bed.cluster.binaries().helm.clone();
    let rendered = Command::new(&helm)
        .args([
            "template",
            "cairn",
            repo("charts/cairn").to_str().unwrap(),
            "--namespace",
            "cairn-system",
            "--include-crds",
            "--set",
            "watchNamespaces={jobs}",
        ])
        .output()
        .expect("helm runs");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = bed.cluster.work_dir().join("chart.yaml");
    std::fs::write(&manifests, &rendered.stdout).unwrap();
    bed.kubectl_ok(&["apply", "--server-side", "-f", manifests.to_str().unwrap()]);
    let (ok, text) = bed.kubectl(&[
        "wait",
        "-n",
        "cairn-system",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=120s",
    ]);
    assert!(
        ok,
        "operator not available: {text}\npods: {}\noperator log:\n{}\nagent log:\n{}",
        bed.kubectl(&["get", "pods", "-A", "-o", "yaml"])
            .1
            .lines()
            .filter(|l| l.contains("message")
                || l.contains("reason")
                || l.contains("phase")
                || l.contains("name: cairn"))
            .collect::<Vec<_>>()
            .join("\n"),
        bed.operator_log(),
        bed.agent.log_tail(30)
    );

    // An invalid StreamJob: rejected by the API server, with the CEL message.
    let mut bad = count_job(&bed.store);
    bad["metadata"]["name"] = json!("too-wide");
    bad["spec"]["job"]["parallelism"] = json!(5);
    let (ok, text) = bed.apply(&bad);
    assert!(!ok, "parallelism 5 > 4 partitions must be rejected");
    assert!(
        text.contains("spec.job.parallelism must be <= spec.job.input.partitions"),
        "{text}"
    );

    // Deploy; Running once checkpoints commit.
    let job = count_job(&bed.store);
    let (ok, text) = bed.apply(&job);
    assert!(ok, "{text}");
    bed.wait("Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    assert!(!bed.checkpoints().is_empty());

    // SIGKILL a worker: the pod restarts, checkpoints go on.
    let before = bed.checkpoints().last().copied().unwrap();
    bed.kubectl_ok(&[
        "annotate",
        "pod",
        "count-1",
        "-n",
        NS,
        "--overwrite",
        "testbed.cairn.dev/kill=1",
    ]);
    let start = Instant::now();
    while bed.checkpoints().last().copied().unwrap_or(0) <= before + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no checkpoint after killing a worker"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Upgrade via savepoint (another checkpoint interval).
    let savepoints = |j: &Value| j["status"]["savepoints"].as_array().map_or(0, Vec::len);
    bed.patch(json!({"spec": {"job": {"checkpoint": {"interval": "3s"}}}}));
    let j = bed.wait("upgrade done", Duration::from_secs(120), |j| {
        idle_running(j) && savepoints(j) >= 1
    });
    assert_eq!(j["status"]["savepoints"][0]["reason"], "upgrade");

    // Rescale P 2 -> 3 through the scale subresource.
    bed.kubectl_ok(&["scale", "sj", "count", "-n", NS, "--replicas", "3"]);
    let j = bed.wait("rescaled", Duration::from_secs(120), |j| {
        idle_running(j) && j["status"]["parallelism"] == 3
    });
    assert_eq!(
        j["status"]["savepoints"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["reason"],
        "rescale"
    );
    assert_eq!(bed.worker_pods().len(), 3);

    // A broken upgrade (an image nobody has) rolls back by itself.
    bed.patch(json!({"spec": {"image": "cairn/does-not-exist:1"}}));
    let j = bed.wait("rolled back", Duration::from_secs(180), |j| {
        idle_running(j) && j["status"]["failedSpecHash"].is_string()
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
        (Some("True"), Some("RolledBack"))
    );
    bed.kubectl_ok(&[
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
    bed.wait(
        "back on the good spec",
        Duration::from_secs(60),
        idle_running,
    );

    // Suspend and resume.
    bed.patch(json!({"spec": {"state": "suspended"}}));
    bed.wait("suspended", Duration::from_secs(120), |j| {
        phase(j) == "Suspended"
    });
    assert_eq!(bed.worker_pods().len(), 0);
    bed.patch(json!({"spec": {"state": "running"}}));
    bed.wait("resumed", Duration::from_secs(120), idle_running);

    // Let the input run out, then compare with a local run of the same job.
    let reference = reference_state(&bed.worker, &job, &bed.cluster.work_dir().join("reference"));
    let url = format!("file://{}", bed.store.join("count").display());
    let start = Instant::now();
    loop {
        let got = state(&bed.worker, &url);
        if got == reference {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "state never matched the reference: {} keys vs {}",
            got.len(),
            reference.len()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("e2e: state equals the reference ({} keys)", reference.len());

    // Delete with a final savepoint: reported in an event, then the object goes.
    bed.kubectl_ok(&["delete", "sj", "count", "-n", NS, "--wait=false"]);
    let start = Instant::now();
    while bed.kubectl(&["get", "sj", "count", "-n", NS]).0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "StreamJob not deleted"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let events = bed.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"]);
    assert!(
        events.contains("delete savepoint file://"),
        "no final savepoint event: {events}"
    );
}

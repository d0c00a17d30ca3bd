//! End-to-end: the chart, the operator (as a pod) and a real job on the test bed's cluster, with
//! exact results. One cluster for the whole flow (a job moves through every operation in turn).
//!
//! Flow: install the chart (`helm template | kubectl apply`) -> operator pod Ready -> an invalid
//! StreamJob is rejected by the API server with the CEL message -> the count example (a finite
//! generator) reaches Running and commits checkpoints -> a worker pod's process is SIGKILLed, its
//! container restarts once and the job recovers -> upgrade via savepoint -> rescale P 2 -> 3 ->
//! a broken upgrade rolls back by itself -> suspend and resume -> the input runs out and the
//! state in the store equals, key for key, a local reference run of the same job -> deletion
//! with a final savepoint -> a file-input job repartitioned 4 -> 6 while the operator is
//! SIGKILLed mid-operation, again to exactly the state of a local run.
//!
//! The store is a hostPath directory of this test (the examples use a PVC; the test bed has no
//! volume provisioner), so the test reads checkpoints and savepoints with `cairn-worker`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
use cairn_testbed::process::log_tail;
use cairn_testbed::services::{Kafka, Minio, S3_ACCESS_KEY, S3_SECRET_KEY};
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

/// What one kubectl run printed, stdout and stderr apart: stdout is the data (JSON, names),
/// stderr the errors and warnings.
struct KubectlOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl KubectlOutput {
    /// Both streams, for messages.
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Bed {
    fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        let out = self
            .cluster
            .kubectl()
            .args(args)
            .output()
            .expect("kubectl runs");
        KubectlOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl, asserts it succeeded and returns its stdout.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.text());
        out.stdout
    }

    fn apply(&self, manifest: &Value) -> KubectlOutput {
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

    fn apply_ok(&self, manifest: &Value) {
        let out = self.apply(manifest);
        assert!(out.ok, "{}", out.text());
    }

    fn job(&self, name: &str) -> Value {
        let text = self.kubectl_ok(&["get", "sj", name, "-n", NS, "-o", "json"]);
        serde_json::from_str(&text).expect("StreamJob JSON")
    }

    fn patch(&self, name: &str, patch: Value) {
        self.kubectl_ok(&[
            "patch",
            "sj",
            name,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Waits until `check` holds on the StreamJob, printing its status on timeout.
    fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let polled = poll(timeout, Duration::from_secs(1), || {
            let job = self.job(name);
            if check(&job) {
                Ok(job)
            } else {
                Err(job)
            }
        });
        match polled {
            Ok(job) => {
                eprintln!(
                    "e2e: {name}: {what} after {:.0}s",
                    start.elapsed().as_secs_f64()
                );
                job
            }
            Err(job) => panic!(
                "timed out waiting for {what}; status: {}\npods:\n{}\noperator log tail:\n{}\nagent log tail:\n{}",
                serde_json::to_string_pretty(&job["status"]).unwrap(),
                self.kubectl(&["get", "pods", "-A", "-o", "wide"]).text(),
                self.operator_log(),
                self.agent.log_tail(40)
            ),
        }
    }

    /// Names of a job's worker pods.
    fn worker_pods(&self, name: &str) -> Vec<String> {
        self.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            &format!("cairn.dev/job={name}"),
            "-o",
            "name",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The operator's pod, if there is one. No assertion: failure messages call it too.
    fn operator_pod(&self) -> Option<String> {
        let out = self.kubectl(&["get", "pods", "-n", "cairn-system", "-o", "name"]);
        out.stdout
            .lines()
            .next()
            .map(|line| line.trim_start_matches("pod/").to_owned())
    }

    fn operator_log(&self) -> String {
        match self.operator_pod() {
            Some(pod) => log_tail(
                &self.agent.pod_log_path("cairn-system", &pod, "operator"),
                40,
            ),
            None => "(no operator pod)".to_owned(),
        }
    }

    /// `(uid, restartCount of its first container)` of a pod.
    fn restarts(&self, namespace: &str, pod: &str) -> (String, u64) {
        let text = self.kubectl_ok(&["get", "pod", pod, "-n", namespace, "-o", "json"]);
        let pod: Value = serde_json::from_str(&text).expect("Pod JSON");
        (
            pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            pod["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0),
        )
    }

    /// SIGKILLs the container processes of `pod` with the node agent's fault-injection
    /// annotation (only a new value SIGKILLs, so each kill of the run writes its own; the
    /// restart policy then applies). Returns the pod's `(uid, restartCount)` from before the
    /// kill, for [`Bed::assert_restarted`].
    fn kill(&self, namespace: &str, pod: &str) -> (String, u64) {
        static KILLS: AtomicU32 = AtomicU32::new(0);
        let before = self.restarts(namespace, pod);
        let value = KILLS.fetch_add(1, Ordering::Relaxed) + 1;
        self.kubectl_ok(&[
            "annotate",
            "pod",
            pod,
            "-n",
            namespace,
            "--overwrite",
            &format!("testbed.cairn.dev/kill={value}"),
        ]);
        before
    }

    /// Waits until the container of `pod` killed by [`Bed::kill`] was restarted in place: the
    /// same pod, its restartCount one more than `before`.
    fn assert_restarted(&self, namespace: &str, pod: &str, before: (String, u64)) {
        let (uid, count) = before;
        let now = poll(Duration::from_secs(60), Duration::from_secs(1), || {
            let now = self.restarts(namespace, pod);
            if now.0 != uid || now.1 != count {
                Ok(now)
            } else {
                Err(now)
            }
        })
        .unwrap_or_else(|now| {
            panic!(
                "{namespace}/{pod} was not restarted after its kill: restartCount still {}",
                now.1
            )
        });
        assert_eq!(
            now,
            (uid, count + 1),
            "{namespace}/{pod}: the same pod, restarted once"
        );
        eprintln!(
            "e2e: {pod}: restarted after its kill (restartCount {})",
            now.1
        );
    }

    /// `file://` URL of a job's store directory.
    fn store_url(&self, name: &str) -> String {
        format!("file://{}", self.store.join(name).display())
    }

    /// Committed checkpoints in a job's store.
    fn checkpoints(&self, name: &str) -> Vec<u64> {
        let out = Command::new(&self.worker)
            .args(["checkpoints", &self.store_url(name), "--json"])
            .output()
            .expect("cairn-worker runs");
        assert!(
            out.status.success(),
            "cairn-worker checkpoints {}: {}",
            self.store_url(name),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["id"].as_u64())
            .collect()
    }
}

/// Calls `check` every `every` until it returns `Ok`, and returns that; once `timeout` has
/// passed, returns the last `Err` instead (what was seen), for the caller's panic message.
fn poll<T, E>(
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

/// key -> value over every task of the latest checkpoint of `store_url` (`env`: how to reach an
/// S3 store).
fn state_from(worker: &Path, store_url: &str, env: &[(&str, String)]) -> BTreeMap<String, String> {
    let out = Command::new(worker)
        .args(["state", "dump", "--store", store_url])
        .envs(env.iter().map(|(k, v)| (k, v)))
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
            let key = v["key"]
                .as_str()
                .map_or_else(|| v["key"].to_string(), str::to_owned);
            (key, v["value"].to_string())
        })
        .collect()
}

fn state(worker: &Path, store_url: &str) -> BTreeMap<String, String> {
    state_from(worker, store_url, &[])
}

/// Runs the same job locally (one process, no cluster) to the end: the expected state.
fn reference_state(worker: &Path, job: &Value, dir: &Path) -> BTreeMap<String, String> {
    let mut spec = job["spec"]["job"].clone();
    spec["name"] = json!("count");
    if spec["input"]["type"] == "generator" {
        spec["input"]["ratePerSecond"] = json!(0);
    }
    spec["checkpoint"]["store"] = json!(format!("file://{}", dir.join("store").display()));
    spec["state"] = json!({"dir": dir.join("state").to_str().unwrap()});
    std::fs::create_dir_all(dir).unwrap();
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
    let available = bed.kubectl(&[
        "wait",
        "-n",
        "cairn-system",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=120s",
    ]);
    assert!(
        available.ok,
        "operator not available: {}\npods: {}\noperator log:\n{}\nagent log:\n{}",
        available.text(),
        bed.kubectl(&["get", "pods", "-A", "-o", "yaml"])
            .stdout
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
    let rejected = bed.apply(&bad);
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

    // CAIRN_E2E_FLOWS=files,kafka runs only those flows (to debug one without the others).
    let only = std::env::var("CAIRN_E2E_FLOWS").unwrap_or_default();
    let run = |flow: &str| only.is_empty() || only.split(',').any(|f| f.trim() == flow);
    if run("count") {
        count_flow(&bed);
    }
    if run("files") {
        repartition_flow(&bed);
    }
    if run("kafka") {
        kafka_s3_flow(&bed);
    }
}

/// The count example through kill, upgrade, rescale, a rolled-back upgrade, suspend and resume,
/// to an exact result, then deletion with a final savepoint.
fn count_flow(bed: &Bed) {
    // Deploy; Running once checkpoints commit.
    let job = count_job(&bed.store);
    bed.apply_ok(&job);
    bed.wait("count", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    assert!(!bed.checkpoints("count").is_empty());

    // SIGKILL a worker: the pod restarts, checkpoints go on.
    let before = bed.checkpoints("count").last().copied().unwrap();
    let killed = bed.kill(NS, "count-1");
    bed.assert_restarted(NS, "count-1", killed);
    poll(Duration::from_secs(90), Duration::from_secs(1), || {
        let last = bed.checkpoints("count").last().copied().unwrap_or(0);
        if last > before + 2 {
            Ok(())
        } else {
            Err(last)
        }
    })
    .unwrap_or_else(|last| {
        panic!(
            "no checkpoint after killing a worker: the latest is {last}, {} before the kill",
            before
        )
    });

    // Upgrade via savepoint (another checkpoint interval).
    let savepoints = |j: &Value| j["status"]["savepoints"].as_array().map_or(0, Vec::len);
    bed.patch(
        "count",
        json!({"spec": {"job": {"checkpoint": {"interval": "3s"}}}}),
    );
    let j = bed.wait("count", "upgrade done", Duration::from_secs(120), |j| {
        idle_running(j) && savepoints(j) >= 1
    });
    assert_eq!(j["status"]["savepoints"][0]["reason"], "upgrade");

    // Rescale P 2 -> 3 through the scale subresource.
    bed.kubectl_ok(&["scale", "sj", "count", "-n", NS, "--replicas", "3"]);
    let j = bed.wait("count", "rescaled", Duration::from_secs(120), |j| {
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
    assert_eq!(bed.worker_pods("count").len(), 3);

    // A broken upgrade (an image nobody has) rolls back by itself.
    bed.patch(
        "count",
        json!({"spec": {"image": "cairn/does-not-exist:1"}}),
    );
    let j = bed.wait("count", "rolled back", Duration::from_secs(180), |j| {
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
        "count",
        "back on the good spec",
        Duration::from_secs(60),
        idle_running,
    );

    // Suspend and resume.
    bed.patch("count", json!({"spec": {"state": "suspended"}}));
    bed.wait("count", "suspended", Duration::from_secs(120), |j| {
        phase(j) == "Suspended"
    });
    assert_eq!(bed.worker_pods("count").len(), 0);
    bed.patch("count", json!({"spec": {"state": "running"}}));
    bed.wait("count", "resumed", Duration::from_secs(120), idle_running);

    // Let the input run out, then compare with a local run of the same job.
    let reference = reference_state(&bed.worker, &job, &bed.cluster.work_dir().join("reference"));
    // The input lasts RECORDS_PER_PARTITION / RATE seconds of running time, plus the time the
    // operations above kept it stopped.
    let input_time = Duration::from_secs(RECORDS_PER_PARTITION / RATE);
    wait_for_state(
        bed,
        "count: state equals the reference",
        &bed.store_url("count"),
        &[],
        &reference,
        input_time + Duration::from_secs(180),
    );

    // Delete. The input has ended, and a finished job takes no more savepoints (a known gap):
    // the operator says so in a Warning event and deletes anyway, and the checkpoint data stays
    // (deletion.checkpointData: retain), still holding the exact state.
    delete_job(bed, "count");
    let events = bed.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"]);
    assert!(
        events.contains("FinalSavepointFailed")
            && events.contains("the latest committed checkpoint stays in the store"),
        "no event about the final savepoint: {events}"
    );
    assert_eq!(state(&bed.worker, &bed.store_url("count")), reference);
}

/// Deletes a StreamJob and waits until it is gone (its finalizer released).
fn delete_job(bed: &Bed, name: &str) {
    bed.kubectl_ok(&["delete", "sj", name, "-n", NS, "--wait=false"]);
    poll(Duration::from_secs(120), Duration::from_secs(1), || {
        let get = bed.kubectl(&["get", "sj", name, "-n", NS]);
        if get.ok {
            Err(get.stdout)
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|seen| panic!("StreamJob {name} not deleted:\n{seen}"));
}

/// Lines of `partition-<p>` of the file job: keys are unique to their partition (`p<p>-k<i>`), as
/// with a keyed producer, so each key's state lives in one task before and after a repartition.
fn partition_file(p: u32) -> String {
    (0..600)
        .map(|j| format!("p{p}-k{}\n", (j * 7 + p * 3) % 40))
        .collect()
}

/// A file-input job (follow: the files may grow) reading `input` mounted at /var/lib/cairn-input.
fn file_job(store: &Path, input: &Path) -> Value {
    let mut job = count_job(store);
    job["metadata"]["name"] = json!("files");
    job["spec"]["job"]["input"] =
        json!({"type": "file", "partitions": 4, "path": "/var/lib/cairn-input", "follow": true});
    job["spec"]["job"]["checkpoint"]["store"] = json!("file:///var/lib/cairn-store/files");
    job["spec"]["podTemplate"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "input", "hostPath": {"path": input.to_str().unwrap(), "type": "Directory"}}));
    job["spec"]["podTemplate"]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "input", "mountPath": "/var/lib/cairn-input", "readOnly": true}));
    job
}

/// Waits until the latest checkpoint of the store at `store_url` (`env`: how to reach an S3
/// store) holds exactly `expected`; `what` says what that means, for the log and the panic.
fn wait_for_state(
    bed: &Bed,
    what: &str,
    store_url: &str,
    env: &[(&str, String)],
    expected: &BTreeMap<String, String>,
    timeout: Duration,
) {
    poll(timeout, Duration::from_secs(2), || {
        let got = state_from(&bed.worker, store_url, env);
        if &got == expected {
            Ok(())
        } else {
            Err(got)
        }
    })
    .unwrap_or_else(|got| {
        let differing = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .count();
        panic!(
            "timed out waiting until {what} ({store_url}): {} keys vs {} expected, {differing} expected keys missing or different",
            got.len(),
            expected.len()
        )
    });
    eprintln!("e2e: {what} ({} keys)", expected.len());
}

/// A file-input job repartitioned 4 -> 6 when its input grows two partitions, with the operator
/// SIGKILLed in the middle of the operation: the restarted operator finishes it from the status
/// it wrote, and the state equals a local run over all six files.
fn repartition_flow(bed: &Bed) {
    let input = bed.cluster.work_dir().join("input");
    std::fs::create_dir_all(&input).unwrap();
    for p in 0..4 {
        std::fs::write(input.join(format!("partition-{p}")), partition_file(p)).unwrap();
    }
    let job = file_job(&bed.store, &input);
    bed.apply_ok(&job);
    bed.wait("files", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    let mut finite = job.clone();
    finite["spec"]["job"]["input"]["follow"] = json!(false);
    finite["spec"]["job"]["input"]["path"] = json!(input.to_str().unwrap());
    let reference_dir = bed.cluster.work_dir().join("reference-files");
    let expected = reference_state(&bed.worker, &finite, &reference_dir.join("n4"));
    assert_eq!(expected.len(), 4 * 40, "reference run of the 4 files");
    wait_for_state(
        bed,
        "files: state equals the reference",
        &bed.store_url("files"),
        &[],
        &expected,
        Duration::from_secs(120),
    );

    // The input grows two partitions; repartition to 6 and kill the operator mid-operation.
    for p in 4..6 {
        std::fs::write(input.join(format!("partition-{p}")), partition_file(p)).unwrap();
    }
    bed.patch(
        "files",
        json!({"spec": {"job": {"input": {"partitions": 6}, "parallelism": 3}}}),
    );
    let j = bed.wait(
        "files",
        "repartition started",
        Duration::from_secs(60),
        |j| j["status"]["operation"]["kind"] == "Repartition",
    );
    let operator_pod = bed.operator_pod().expect("operator pod");
    eprintln!(
        "e2e: files: SIGKILL the operator during step {}",
        j["status"]["operation"]["step"]
    );
    bed.kill("cairn-system", &operator_pod);
    let j = bed.wait("files", "repartitioned", Duration::from_secs(180), |j| {
        idle_running(j) && j["status"]["partitions"] == 6
    });
    let last = j["status"]["savepoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last["reason"], "repartition");
    assert_eq!(bed.worker_pods("files").len(), 3);
    let restarts = bed.kubectl_ok(&[
        "get",
        "pod",
        &operator_pod,
        "-n",
        "cairn-system",
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(restarts.trim(), "1", "the operator was killed once");

    finite["spec"]["job"]["input"]["partitions"] = json!(6);
    let expected = reference_state(&bed.worker, &finite, &reference_dir.join("n6"));
    assert_eq!(expected.len(), 6 * 40, "reference run of the 6 files");
    wait_for_state(
        bed,
        "files: state equals the reference",
        &bed.store_url("files"),
        &[],
        &expected,
        Duration::from_secs(120),
    );

    other_operations(bed, &expected);

    // Delete the running job with a final savepoint: reported in an event, then the object goes.
    delete_job(bed, "files");
    let events = bed.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"]);
    assert!(
        events.contains("delete savepoint file:///var/lib/cairn-store/files/epoch-1/savepoints/"),
        "no final savepoint event: {events}"
    );
}

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

/// The Kafka + S3 example on a real broker and a real S3 server: records produced in two
/// batches around a SIGKILLed worker; the state in S3 holds exactly the count of every key, and
/// the exactly-once output topic holds every `(key, n)` for n = 1..=count exactly once.
fn kafka_s3_flow(bed: &Bed) {
    let dir = bed.cluster.work_dir().join("services");
    std::fs::create_dir_all(&dir).unwrap();
    let ip = bed.cluster.api_ip();
    let minio = Minio::start(&dir, ip).expect("MinIO starts");
    minio.create_bucket("cairn").unwrap();
    let kafka = Kafka::start(&dir, ip).expect("Kafka starts");
    kafka.create_topic("clicks", 4).unwrap();
    kafka.create_topic("click-counts", 2).unwrap();
    eprintln!(
        "e2e: kafka-count: MinIO on {}, Kafka on {}",
        minio.endpoint, kafka.bootstrap
    );
    bed.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s3-credentials",
        "-n",
        NS,
        &format!("--from-literal=AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}"),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}"),
    ]);

    let text = std::fs::read_to_string(repo("examples/k8s/kafka-s3.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["output"]["brokers"] = json!(kafka.bootstrap);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    // No volume provisioner on the test bed.
    job["spec"]["stateVolume"] = json!({"emptyDir": {}});
    job["spec"]["podTemplate"]["env"] =
        json!([{"name": "CAIRN_S3_ENDPOINT", "value": minio.endpoint}]);

    let first = clicks(0, 3000, 60);
    kafka.produce("clicks", &first).unwrap();
    bed.apply_ok(&job);
    bed.wait("kafka-count", "Running", Duration::from_secs(120), |j| {
        idle_running(j) && !j["status"]["lastCheckpoint"].is_null()
    });
    let killed = bed.kill(NS, "kafka-count-0");
    let second = clicks(3000, 3000, 60);
    kafka.produce("clicks", &second).unwrap();
    bed.assert_restarted(NS, "kafka-count-0", killed);

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for key in first.iter().chain(&second) {
        *counts.entry(key.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, String> = counts
        .iter()
        .map(|(k, n)| (k.clone(), n.to_string()))
        .collect();
    wait_for_state(
        bed,
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
        for (key, value) in kafka.read_committed("click-counts").unwrap() {
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
    bed.kubectl_ok(&[
        "delete",
        "sj",
        "kafka-count",
        "-n",
        NS,
        "--wait=true",
        "--timeout=120s",
    ]);
}

/// The remaining operations on the running file job, each ending on the exact state: a manual
/// savepoint (`triggerNonce`), a restart (`restartNonce`), an upgrade in `last-state` mode (no
/// savepoint: the latest checkpoint), and one in `stateless` mode (a fresh store path: the
/// files are read again from the start, to the same state).
fn other_operations(bed: &Bed, expected: &BTreeMap<String, String>) {
    let savepoints = |j: &Value| j["status"]["savepoints"].as_array().map_or(0, Vec::len);
    let before = savepoints(&bed.job("files"));
    bed.patch(
        "files",
        json!({"spec": {"savepoints": {"triggerNonce": 1}}}),
    );
    let j = bed.wait("files", "manual savepoint", Duration::from_secs(60), |j| {
        idle_running(j) && savepoints(j) == before + 1
    });
    assert_eq!(j["status"]["savepoints"][before]["reason"], "manual");

    let pods = |bed: &Bed| {
        bed.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "cairn.dev/job=files",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
    };
    let old_pods = pods(bed);
    bed.patch("files", json!({"spec": {"restartNonce": 1}}));
    // observedGeneration is written with the operation's start: equal and idle means done.
    bed.wait("files", "restarted", Duration::from_secs(240), |j| {
        idle_running(j) && j["status"]["observedGeneration"] == j["metadata"]["generation"]
    });
    let new_pods = pods(bed);
    assert!(
        old_pods.split(' ').all(|uid| !new_pods.contains(uid)),
        "restartNonce replaces every worker pod: {old_pods} / {new_pods}"
    );
    let url = bed.store_url("files");
    assert_eq!(&state(&bed.worker, &url), expected);

    let before = savepoints(&bed.job("files"));
    bed.patch(
        "files",
        json!({"spec": {"upgradeMode": "last-state", "job": {"checkpoint": {"interval": "3s"}}}}),
    );
    let j = bed.wait(
        "files",
        "last-state upgrade",
        Duration::from_secs(240),
        |j| {
            idle_running(j)
                && j["status"]["deployed"]["spec"]["job"]["checkpoint"]["interval"] == "3s"
        },
    );
    assert_eq!(savepoints(&j), before, "last-state takes no savepoint");
    wait_for_state(
        bed,
        "files: state equals the reference after the last-state upgrade",
        &url,
        &[],
        expected,
        Duration::from_secs(60),
    );

    bed.patch(
        "files",
        json!({"spec": {"upgradeMode": "stateless", "job": {"checkpoint": {"interval": "2s"}}}}),
    );
    let j = bed.wait(
        "files",
        "stateless upgrade",
        Duration::from_secs(240),
        |j| {
            idle_running(j)
                && j["status"]["deployed"]["spec"]["job"]["checkpoint"]["interval"] == "2s"
        },
    );
    let epoch = j["status"]["deployed"]["stateEpoch"].as_u64().unwrap();
    assert_eq!(epoch, 1, "stateless moves the job to a fresh store path");
    wait_for_state(
        bed,
        "files: the stateless restart re-read the files to the same state",
        &format!("{url}/epoch-{epoch}"),
        &[],
        expected,
        Duration::from_secs(90),
    );
    eprintln!("e2e: files: manual savepoint, restart, last-state and stateless upgrades exact");
}

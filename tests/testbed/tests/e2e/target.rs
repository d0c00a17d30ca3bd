//! Where the suite runs, and the few things that differ between places.
//!
//! By default on the test bed: a control plane and a node agent this test starts, torn down at
//! the end. With `USE_EXISTING_CLUSTER=true` (envtest's convention) on the cluster that
//! `KUBECONFIG` names, for example a kind cluster made by `tests/e2e/kind.sh`. The flows are the
//! same code on both; only these differ:
//!
//! | | test bed | existing cluster |
//! |---|---|---|
//! | kubectl, helm | built by `tests/controlplane/build.sh` | from `PATH` (`KUBECTL`, `HELM` override) |
//! | images | mapped by the node agent to workspace binaries | `cairn/operator`, `cairn/worker` at the chart's appVersion, already loaded |
//! | job store volume | a hostPath directory of this test | a PVC on the default StorageClass (`CAIRN_E2E_STORE_VOLUME` overrides) |
//! | killing a pod | SIGKILL of its process (node agent annotation): the same pod restarts | the pod is force-deleted: its controller replaces it |
//! | Kafka + S3 flow | Kafka and MinIO on the bed's pod network | Kafka and MinIO on the host at `CAIRN_E2E_SERVICES_IP` (pods must reach it; kind: `tests/kind/cluster.sh services-ip`), else skipped |
//!
//! On an existing cluster the suite works in its own namespaces ([`NS`], [`OPERATOR_NS`]) and
//! deletes them at the end; the CRD stays. Use a dedicated cluster: the suite installs the
//! chart, so a Cairn already installed there would conflict.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
use cairn_testbed::process::log_tail;
use cairn_testbed::{Cluster, ClusterOptions};
use serde_json::{json, Value};

use crate::poll;

/// Namespace of the jobs.
pub const NS: &str = "cairn-e2e";
/// Namespace the chart is installed into.
pub const OPERATOR_NS: &str = "cairn-e2e-system";
/// The claim an existing cluster's job store lives on (created by the suite).
const STORE_CLAIM: &str = "cairn-e2e-store";

/// The cluster the suite talks to.
pub enum Target {
    /// The test bed's own control plane and node agent (dropped in this order: the agent stops
    /// its pods while the API server still runs).
    Bed {
        agent: NodeAgent,
        cluster: Box<Cluster>,
    },
    /// The cluster named by `KUBECONFIG`, and the kubectl and helm to reach it with.
    Existing { kubectl: PathBuf, helm: PathBuf },
}

/// What one kubectl run printed, stdout and stderr apart: stdout is the data (JSON, names),
/// stderr the errors and warnings.
pub struct KubectlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    /// Both streams, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A pod killed by [`Suite::kill`], with what is needed to tell that it recovered.
pub struct Killed {
    namespace: String,
    pod: String,
    uid: String,
    restarts: u64,
    /// Every label of the pod: its replacement (same StatefulSet ordinal or ReplicaSet) has them.
    selector: String,
}

/// The suite's view of its cluster: how to run kubectl and helm, where local scratch files go,
/// and the target-specific parts listed in the module documentation.
pub struct Suite {
    pub target: Target,
    /// Local scratch: rendered manifests, reference runs.
    pub work_dir: PathBuf,
    /// The local `cairn-worker`, for reference runs of a job.
    pub worker: PathBuf,
    /// The image of worker pods and of the suite's inspection pods.
    pub worker_image: String,
    /// The volume source of every job's checkpoint store (mounted at /var/lib/cairn-store).
    store_source: Value,
    inspections: AtomicU32,
}

fn existing_cluster_requested() -> bool {
    std::env::var("USE_EXISTING_CLUSTER").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The chart's `appVersion`: the tag of the images an existing cluster runs.
fn chart_app_version() -> String {
    let chart = std::fs::read_to_string(crate::repo("charts/cairn/Chart.yaml")).unwrap();
    let chart: Value = serde_yaml::from_str(&chart).unwrap();
    chart["appVersion"]
        .as_str()
        .expect("Chart.yaml has appVersion")
        .to_owned()
}

impl Suite {
    /// Starts the test bed, or connects to the cluster `KUBECONFIG` names when
    /// `USE_EXISTING_CLUSTER=true`.
    pub fn start() -> Suite {
        let worker = workspace_binary("cairn-worker").expect("cairn-worker built");
        if existing_cluster_requested() {
            return Suite::existing(worker);
        }
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
        let work_dir = cluster.work_dir().to_path_buf();
        let store = work_dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        Suite {
            work_dir,
            worker,
            worker_image: "cairn/worker".to_owned(),
            store_source: json!({"hostPath": {"path": store, "type": "DirectoryOrCreate"}}),
            target: Target::Bed {
                agent,
                cluster: Box::new(cluster),
            },
            inspections: AtomicU32::new(0),
        }
    }

    fn existing(worker: PathBuf) -> Suite {
        let tool = |var: &str, default: &str| {
            PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        let store_source = match std::env::var("CAIRN_E2E_STORE_VOLUME") {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("CAIRN_E2E_STORE_VOLUME must be a JSON volume source such as {{\"hostPath\": {{\"path\": \"/tmp/store\"}}}}: {e}")
            }),
            Err(_) => json!({"persistentVolumeClaim": {"claimName": STORE_CLAIM}}),
        };
        let work_dir = std::env::temp_dir().join(format!("cairn-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir).unwrap();
        eprintln!(
            "e2e: on the existing cluster of KUBECONFIG={} (scratch {})",
            std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into()),
            work_dir.display()
        );
        Suite {
            work_dir,
            worker,
            worker_image: format!("cairn/worker:{}", chart_app_version()),
            store_source,
            target: Target::Existing {
                kubectl: tool("KUBECTL", "kubectl"),
                helm: tool("HELM", "helm"),
            },
            inspections: AtomicU32::new(0),
        }
    }

    /// The store volume, called `name`.
    pub fn store_volume(&self, name: &str) -> Value {
        let mut volume = self.store_source.clone();
        volume["name"] = json!(name);
        volume
    }

    pub fn on_bed(&self) -> bool {
        matches!(self.target, Target::Bed { .. })
    }

    pub fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        let mut cmd = match &self.target {
            Target::Bed { cluster, .. } => cluster.kubectl(),
            Target::Existing { kubectl, .. } => Command::new(kubectl),
        };
        let out = cmd.args(args).output().expect("kubectl runs");
        KubectlOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl, asserts it succeeded and returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.text());
        out.stdout
    }

    pub fn helm(&self) -> Command {
        match &self.target {
            Target::Bed { cluster, .. } => cluster.helm(),
            Target::Existing { helm, .. } => Command::new(helm),
        }
    }

    /// The suite's namespaces, and on an existing cluster the store's claim.
    pub fn create_namespaces(&self) {
        for ns in [OPERATOR_NS, NS] {
            self.apply_ok(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        if self.store_source["persistentVolumeClaim"]["claimName"] == STORE_CLAIM {
            self.apply_ok(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": STORE_CLAIM, "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }));
        }
    }

    pub fn apply(&self, manifest: &Value) -> KubectlOutput {
        let file = self.work_dir.join("apply.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            file.to_str().unwrap(),
        ])
    }

    pub fn apply_ok(&self, manifest: &Value) {
        let out = self.apply(manifest);
        assert!(out.ok, "{}", out.text());
    }

    /// What the current run of container `container` of a pod printed (stdout and stderr):
    /// `kubectl logs`, on the test bed too (its node agent serves the kubelet's log endpoint).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.kubectl(&["logs", pod, "-n", namespace, "-c", container])
            .text()
    }

    /// The end of the operator's log and, on the bed, of the node agent's: for failure messages.
    pub fn diagnostics(&self) -> String {
        let operator = match self.operator_pod() {
            Some(pod) => self
                .kubectl(&[
                    "logs",
                    &pod,
                    "-n",
                    OPERATOR_NS,
                    "-c",
                    "operator",
                    "--tail=40",
                ])
                .text(),
            None => "(no operator pod)".to_owned(),
        };
        let agent = match &self.target {
            Target::Bed { agent, .. } => log_tail(agent.log_path(), 30),
            Target::Existing { .. } => "(not on the test bed)".to_owned(),
        };
        format!(
            "pods:\n{}\noperator log tail:\n{operator}\nagent log tail:\n{agent}",
            self.kubectl(&["get", "pods", "-A", "-o", "wide"]).text()
        )
    }

    /// The operator's pod, if there is one. No assertion: failure messages call it too.
    pub fn operator_pod(&self) -> Option<String> {
        let out = self.kubectl(&["get", "pods", "-n", OPERATOR_NS, "-o", "name"]);
        out.stdout
            .lines()
            .next()
            .map(|line| line.trim_start_matches("pod/").to_owned())
    }

    fn pod_json(&self, namespace: &str, pod: &str) -> Value {
        let text = self.kubectl_ok(&["get", "pod", pod, "-n", namespace, "-o", "json"]);
        serde_json::from_str(&text).expect("Pod JSON")
    }

    /// Kills `pod`: on the bed its container processes are SIGKILLed through the node agent's
    /// fault-injection annotation (only a new value kills, so each kill writes its own) and the
    /// restart policy applies; elsewhere it is force-deleted and its controller replaces it.
    pub fn kill(&self, namespace: &str, pod: &str) -> Killed {
        static KILLS: AtomicU32 = AtomicU32::new(0);
        let before = self.pod_json(namespace, pod);
        let labels = before["metadata"]["labels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let killed = Killed {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: before["metadata"]["uid"].as_str().unwrap().to_owned(),
            restarts: restart_count(&before),
            selector: labels,
        };
        if self.on_bed() {
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
        } else {
            self.kubectl_ok(&[
                "delete",
                "pod",
                pod,
                "-n",
                namespace,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
        }
        killed
    }

    /// Waits until a pod killed by [`Suite::kill`] is back: on the bed the same pod with its
    /// restartCount one more; elsewhere a Ready replacement (a new uid, the same labels).
    pub fn assert_recovered(&self, killed: Killed) {
        let Killed {
            namespace,
            pod,
            uid,
            restarts,
            selector,
        } = killed;
        let on_bed = self.on_bed();
        let back = poll(Duration::from_secs(120), Duration::from_secs(1), || {
            if on_bed {
                let now = self.pod_json(&namespace, &pod);
                let now = (
                    now["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    restart_count(&now),
                );
                return if now.0 != uid || now.1 != restarts {
                    Ok(now)
                } else {
                    Err(format!("restartCount still {restarts}"))
                };
            }
            let text = self.kubectl_ok(&[
                "get", "pods", "-n", &namespace, "-l", &selector, "-o", "json",
            ]);
            let pods: Value = serde_json::from_str(&text).expect("PodList JSON");
            let replacement = pods["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["metadata"]["uid"] != uid.as_str() && is_ready(p));
            match replacement {
                Some(p) => Ok((p["metadata"]["uid"].as_str().unwrap().to_owned(), 0)),
                None => Err(format!(
                    "no Ready pod with labels {selector} but the killed one"
                )),
            }
        })
        .unwrap_or_else(|seen| {
            panic!("{namespace}/{pod} did not come back after its kill: {seen}")
        });
        if on_bed {
            assert_eq!(
                back,
                (uid, restarts + 1),
                "{namespace}/{pod}: the same pod, restarted once"
            );
            eprintln!(
                "e2e: {pod}: restarted after its kill (restartCount {})",
                back.1
            );
        } else {
            eprintln!("e2e: {pod}: replaced after its deletion (uid {})", back.0);
        }
    }

    /// A fresh name for an inspection pod.
    pub fn next_inspection(&self) -> u32 {
        self.inspections.fetch_add(1, Ordering::Relaxed)
    }

    /// On an existing cluster: deletes the suite's namespaces (the jobs first, while the
    /// operator can still release their finalizers). The bed is torn down as a whole.
    fn clean_up_existing(&self) {
        if self.on_bed() || std::env::var("CAIRN_TESTBED_KEEP").is_ok_and(|v| v == "1") {
            return;
        }
        self.kubectl(&["delete", "sj", "--all", "-n", NS, "--timeout=120s"]);
        for ns in [NS, OPERATOR_NS] {
            self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.clean_up_existing();
    }
}

fn restart_count(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

//! The cluster the suite runs on: the one `KUBECONFIG` names. `tests/e2e/kind.sh` makes a kind
//! cluster, loads the images and runs the suite on it (`make test` does exactly that); any other
//! dedicated cluster works too, given:
//!
//! | | |
//! |---|---|
//! | kubectl, helm | `KUBECTL`, `HELM`, else from `PATH` |
//! | images | `cairn/operator`, `cairn/worker` at the chart's appVersion, and the services image `CAIRN_E2E_SERVICES_IMAGE` (Kafka and MinIO), already on the nodes |
//! | job store volume | a PVC on the default StorageClass; `CAIRN_E2E_STORE_VOLUME` overrides (kind.sh: a hostPath on the node) |
//! | local `cairn-worker` | `$CARGO_TARGET_DIR/debug/cairn-worker`, for reference runs of each job |
//!
//! A pod is killed by force-deleting it (no grace period): its controller replaces it.
//!
//! The suite works in its own namespaces ([`NS`], [`OPERATOR_NS`], the services' namespace) and
//! deletes them at the end (`CAIRN_E2E_KEEP=1` keeps them for a look); the CRD stays. Use a
//! dedicated cluster: the suite installs the chart as Helm release [`RELEASE`], so a Cairn
//! already installed there would conflict.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::poll;
use crate::services::SERVICES_NS;

/// Namespace of the jobs.
pub const NS: &str = "cairn-e2e";
/// Namespace the chart is installed into.
pub const OPERATOR_NS: &str = "cairn-e2e-system";
/// The claim an existing cluster's job store lives on (created by the suite).
const STORE_CLAIM: &str = "cairn-e2e-store";

/// The Helm release the suite installs the chart as.
pub const RELEASE: &str = "cairn";

/// What one kubectl run printed, stdout and stderr apart: stdout is the data (JSON, names),
/// stderr the errors and warnings.
pub struct KubectlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for KubectlOutput {
    fn from(out: std::process::Output) -> Self {
        KubectlOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
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
    kubectl: PathBuf,
    helm: PathBuf,
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
    /// Connects to the cluster `KUBECONFIG` names.
    pub fn start() -> Suite {
        let worker = local_worker();
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
            "e2e: on the cluster of KUBECONFIG={} (scratch {})",
            std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into()),
            work_dir.display()
        );
        Suite {
            work_dir,
            worker,
            worker_image: format!("cairn/worker:{}", chart_app_version()),
            store_source,
            kubectl: tool("KUBECTL", "kubectl"),
            helm: tool("HELM", "helm"),
            inspections: AtomicU32::new(0),
        }
    }

    /// The store volume, called `name`.
    pub fn store_volume(&self, name: &str) -> Value {
        let mut volume = self.store_source.clone();
        volume["name"] = json!(name);
        volume
    }

    /// A kubectl command for the suite's cluster, to run in the background (watches).
    pub fn kubectl_command(&self) -> Command {
        Command::new(&self.kubectl)
    }

    pub fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        let out = Command::new(&self.kubectl)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.kubectl.display()));
        KubectlOutput::from(out)
    }

    /// Runs kubectl with `input` on its stdin (`kubectl exec -i`).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> KubectlOutput {
        self.kubectl_with_bytes(args, input.as_bytes())
    }

    /// Runs kubectl with the bytes `input` on its stdin (a file into a pod).
    pub fn kubectl_with_bytes(&self, args: &[&str], input: &[u8]) -> KubectlOutput {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.kubectl.display()));
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A tool that fails early closes its stdin: its output says why, not this write.
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output().expect("kubectl ends");
        KubectlOutput::from(out)
    }

    /// Runs kubectl, asserts it succeeded and returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.text());
        out.stdout
    }

    pub fn helm(&self) -> Command {
        Command::new(&self.helm)
    }

    /// The suite's namespaces, and the store's claim unless `CAIRN_E2E_STORE_VOLUME` names
    /// another volume.
    pub fn create_namespaces(&self) {
        for ns in [OPERATOR_NS, NS, SERVICES_NS] {
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
    /// `kubectl logs`.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.kubectl(&["logs", pod, "-n", namespace, "-c", container])
            .text()
    }

    /// The pods and the end of the operator's log: for failure messages.
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
        format!(
            "pods:\n{}\noperator log tail:\n{operator}",
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

    /// Kills `pod`. On kind (`CAIRN_E2E_KIND=1`, set by kind.sh: the nodes are containers of the
    /// Docker that `DOCKER_HOST` names) its container's process gets SIGKILL from containerd on
    /// its node, and the kubelet restarts it in the same pod, as after a crash. Elsewhere the pod
    /// is force-deleted and its controller replaces it.
    pub fn kill(&self, namespace: &str, pod: &str) -> Killed {
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
        if on_kind() {
            let node = before["spec"]["nodeName"]
                .as_str()
                .expect("a running pod has a node");
            let container = before["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .and_then(|id| id.strip_prefix("containerd://"))
                .unwrap_or_else(|| {
                    panic!(
                        "{namespace}/{pod}: no containerd container id in {}",
                        before["status"]
                    )
                });
            let out = Command::new("docker")
                .args([
                    "exec", node, "ctr", "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", container,
                ])
                .output()
                .expect("docker runs");
            assert!(
                out.status.success(),
                "SIGKILL of {namespace}/{pod} on node {node}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
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

    /// Waits until a pod killed by [`Suite::kill`] is back: on kind the same pod, Ready, with
    /// its restartCount one more; elsewhere a Ready replacement (a new uid, the same labels).
    pub fn assert_recovered(&self, killed: Killed) {
        let Killed {
            namespace,
            pod,
            uid,
            restarts,
            selector,
        } = killed;
        let same_pod = on_kind();
        let back = poll(Duration::from_secs(120), Duration::from_secs(1), || {
            if same_pod {
                let now = self.pod_json(&namespace, &pod);
                let seen = (
                    now["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    restart_count(&now),
                );
                return if seen.1 != restarts && is_ready(&now) {
                    Ok(seen)
                } else {
                    Err(format!(
                        "restartCount {} (was {restarts}), ready {}",
                        seen.1,
                        is_ready(&now)
                    ))
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
            panic!(
                "{namespace}/{pod} did not come back after its kill: {seen}\n{}",
                self.diagnostics()
            )
        });
        if same_pod {
            assert_eq!(
                back,
                (uid, restarts + 1),
                "{namespace}/{pod}: the same pod, restarted once"
            );
            eprintln!(
                "e2e: {pod}: restarted after SIGKILL (restartCount {})",
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

    /// Deletes the suite's namespaces (the jobs first, while the operator can still release
    /// their finalizers) and the Helm release, unless `CAIRN_E2E_KEEP=1`.
    fn clean_up(&self) {
        if std::env::var("CAIRN_E2E_KEEP").is_ok_and(|v| v == "1") {
            eprintln!(
                "e2e: CAIRN_E2E_KEEP=1: namespaces and scratch {} kept",
                self.work_dir.display()
            );
            return;
        }
        self.kubectl(&["delete", "sj", "--all", "-n", NS, "--timeout=120s"]);
        let _ = self
            .helm()
            .args([
                "uninstall",
                RELEASE,
                "--namespace",
                OPERATOR_NS,
                "--wait",
                "--timeout",
                "120s",
            ])
            .output();
        for ns in [NS, OPERATOR_NS, SERVICES_NS] {
            self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// True when kind.sh says the nodes are kind containers this process can `docker exec` into.
fn on_kind() -> bool {
    std::env::var("CAIRN_E2E_KIND").is_ok_and(|v| v == "1")
}

/// The local `cairn-worker` (built by kind.sh before the suite), for reference runs.
fn local_worker() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo("target"));
    let worker = target.join("debug/cairn-worker");
    assert!(
        worker.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (tests/e2e/kind.sh does)",
        worker.display()
    );
    worker
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

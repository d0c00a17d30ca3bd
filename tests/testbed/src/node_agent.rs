//! The harness side of the node agent (`cairn-node-agent`, a test-only kubelet): start it for a
//! [`Cluster`] with a pod network, wait until its Node is Ready and schedulable, read the logs
//! of the containers it runs, and stop it on drop (SIGTERM: it stops every pod process and
//! removes every network namespace it made; SIGKILL after 20 s).
//!
//! ```no_run
//! use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
//! use cairn_testbed::{Cluster, ClusterOptions};
//! let cluster = Cluster::start(ClusterOptions::new("agent-doc"))?;
//! let worker = workspace_binary("cairn-worker")?;
//! let agent = NodeAgent::start(&cluster, &[("cairn/worker".to_string(), worker)])?;
//! println!("pods run on node {}", agent.node_name());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::{log_tail, ManagedProcess, ProcessError};
use crate::Cluster;

/// Name of the Node the agent registers (one agent per cluster).
pub const NODE_NAME: &str = "testbed-node-0";
/// How long [`NodeAgent::start`] waits for the Node to become Ready and untainted.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent gets to stop its pods before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Errors of building, starting and waiting for the node agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeAgentError {
    /// The cluster was started without a pod network.
    #[error("the cluster has no pod network, which the node agent needs; start it with ClusterOptions::with_pod_network = true (as root, with iproute2)")]
    NoPodNetwork,
    /// `cargo build --bin` failed or could not run.
    #[error("building {name} with `cargo build --bin {name}` failed: {reason}")]
    Build {
        /// The binary.
        name: String,
        /// Cargo's error output, or why it could not run.
        reason: String,
    },
    /// Starting or stopping the process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The agent exited during start.
    #[error("the node agent exited during start ({status}); the end of its log {}:\n{tail}", log.display())]
    Exited {
        /// Its exit status.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The Node did not become Ready in time.
    #[error("node {node} was not Ready and untainted after {}s (last seen: {last}); the end of the agent log {}:\n{tail}", READY_TIMEOUT.as_secs(), log.display())]
    NotReady {
        /// Node name.
        node: String,
        /// The last observed Ready status and taints.
        last: String,
        /// The agent log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
}

/// The target directory the workspace builds into: `$CARGO_TARGET_DIR`, else the repository's
/// shared `~/.cache/cairn/target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/cairn/target")
}

/// The debug build of workspace binary `name` (`<target>/debug/<name>`). When it is missing, the
/// first call runs `cargo build --bin <name>` in the workspace. An existing binary is used as it
/// is: `cargo test` rebuilds the binaries of the package under test (so `cairn-node-agent` is
/// always fresh for this crate's tests), and `cargo build --workspace --bins` before the tests
/// refreshes the others.
pub fn workspace_binary(name: &str) -> Result<PathBuf, NodeAgentError> {
    static BUILD: Mutex<()> = Mutex::new(());
    let path = target_dir().join("debug").join(name);
    // One build at a time: tests of one binary asking for the same binary build it once.
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return Ok(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--bin", name])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .map_err(|e| NodeAgentError::Build {
            name: name.to_string(),
            reason: format!("cannot run cargo: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        return Err(NodeAgentError::Build {
            name: name.to_string(),
            reason: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    if !path.is_file() {
        return Err(NodeAgentError::Build {
            name: name.to_string(),
            reason: format!("cargo succeeded but {} does not exist", path.display()),
        });
    }
    Ok(path)
}

/// A running node agent. Dropping it stops the agent and so every pod process it runs.
#[derive(Debug)]
pub struct NodeAgent {
    process: ManagedProcess,
    node_name: String,
    root_dir: PathBuf,
}

impl NodeAgent {
    /// Starts the agent for `cluster` with `images` (image repository -> binary, e.g.
    /// `("cairn/worker", workspace_binary("cairn-worker")?)`) and waits until its Node is Ready
    /// and has no taints, so pods schedule at once. Blocking; callable from async tests.
    pub fn start(
        cluster: &Cluster,
        images: &[(String, PathBuf)],
    ) -> Result<NodeAgent, NodeAgentError> {
        let network = cluster.pod_network().ok_or(NodeAgentError::NoPodNetwork)?;
        let binary = workspace_binary("cairn-node-agent")?;
        let root_dir = cluster.work_dir().join("node-agent");
        let log = cluster.work_dir().join("node-agent.log");
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            cluster.kubeconfig_path().display().to_string(),
            "--node-name".into(),
            NODE_NAME.into(),
            "--bridge".into(),
            network.bridge.clone(),
            "--gateway".into(),
            network.gateway.to_string(),
            "--cidr".into(),
            network.cidr.clone(),
            "--netns-prefix".into(),
            network.netns_prefix.clone(),
            "--root-dir".into(),
            root_dir.display().to_string(),
            "--api-host".into(),
            network.gateway.to_string(),
        ];
        for (repository, path) in images {
            args.push("--image".into());
            args.push(format!("{repository}={}", path.display()));
        }
        let process = ManagedProcess::spawn("cairn-node-agent", &binary, &args, &log)?;
        let mut agent = NodeAgent {
            process,
            node_name: NODE_NAME.to_string(),
            root_dir,
        };
        agent.wait_ready(cluster)?;
        Ok(agent)
    }

    fn wait_ready(&mut self, cluster: &Cluster) -> Result<(), NodeAgentError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no node yet");
        loop {
            if let Some(status) = self.process.exit_status()? {
                return Err(NodeAgentError::Exited {
                    status: status.to_string(),
                    log: self.log_path().to_path_buf(),
                    tail: self.process.log_tail(30),
                });
            }
            let out = cluster
                .kubectl()
                .args([
                    "get",
                    "node",
                    &self.node_name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} taints={.spec.taints}",
                ])
                .output();
            if let Ok(out) = out {
                if out.status.success() {
                    last = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    // The node lifecycle controller removes the not-ready taint once it sees
                    // Ready; before that the scheduler would not place pods here.
                    if last == "True taints=" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeAgentError::NotReady {
                    node: self.node_name.clone(),
                    last,
                    log: self.log_path().to_path_buf(),
                    tail: self.process.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The agent's own log.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The directory holding one `<namespace>_<pod>/` directory per pod (volumes, logs).
    pub fn root_dir(&self) -> &Path {
        &self.root_dir
    }

    /// The directory of one pod.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.root_dir.join(format!("{namespace}_{pod}"))
    }

    /// The file holding a container's stdout and stderr (every run of it); see
    /// [`NodeAgent::pod_log`]. For the end of it, [`log_tail`] of this path.
    pub fn pod_log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(namespace, pod)
            .join(format!("{container}.log"))
    }

    /// Everything a container wrote to stdout and stderr, every run of it, each run after an
    /// agent banner line; empty when it never ran.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.pod_log_path(namespace, pod, container)).unwrap_or_default()
    }

    /// The last `lines` lines of the agent's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.log_path(), lines)
    }

    /// Stops the agent: SIGTERM (it stops every pod process and removes its network
    /// namespaces), SIGKILL after 20 s. Idempotent; also done on drop.
    pub fn stop(&mut self) -> Result<(), NodeAgentError> {
        self.process.terminate(STOP_GRACE)?;
        Ok(())
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("cairn-testbed: stopping the node agent: {e}");
        }
    }
}

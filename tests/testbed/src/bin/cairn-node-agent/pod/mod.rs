//! One pod's life on this node, as a task fed with messages: set up (IP, network namespace,
//! volumes, hosts file), run the init containers in order and then the containers, restart
//! them by the restart policy with a short backoff, act on probe results and on the
//! `testbed.cairn.dev/kill` fault-injection annotation, write the status after every change,
//! and on deletion stop the processes within the grace period, remove the network namespace and
//! delete the pod object.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::config::Config;
use crate::hosts::PodIndex;
use crate::network::{Ipam, PodNet};
use crate::probes::ProbeEvent;
use crate::runtime::{self, Exit, Spawner};
use crate::slot::{Slot, SlotId};
use crate::status::{self, Conditions, ContainerRecord, Phase, PodRecord, State};
use crate::volumes::PodVolumes;

mod containers;
mod setup;
mod stop;

/// Annotation whose every new value SIGKILLs the pod's container processes (fault injection).
pub const KILL_ANNOTATION: &str = "testbed.cairn.dev/kill";
/// How often ConfigMap, Secret, token and downward API volumes are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(5);
/// Grace period when the agent itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// State shared by every pod worker.
pub struct Shared {
    /// API client.
    pub client: Client,
    /// Agent configuration.
    pub config: Arc<Config>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub api_port: u16,
    /// Forks container processes.
    pub spawner: Spawner,
    /// Pod IPs.
    pub ipam: Arc<Mutex<Ipam>>,
    /// Pods of this node, for hosts files.
    pub index: PodIndex,
    /// Services of the cluster, for hosts files.
    pub services: Store<Service>,
}

/// A message to a pod worker.
#[derive(Debug)]
pub enum Msg {
    /// A new version of the pod object.
    Update(Box<Pod>),
    /// The pod object is gone from the API.
    Gone,
    /// The agent is stopping.
    Shutdown,
    /// A container process ended.
    Exited {
        /// Which container.
        slot: SlotId,
        /// Which run of it.
        run: u64,
        /// How.
        exit: Exit,
    },
    /// A probe result changed.
    Probe {
        /// Which container.
        slot: SlotId,
        /// Which run of it.
        run: u64,
        /// What changed.
        event: ProbeEvent,
    },
}

/// How the pod's life on this node ends.
enum End {
    /// `deletionTimestamp` set: stop within the grace period, then delete the object.
    Deleted,
    /// Object gone: stop quickly.
    Gone,
    /// The agent stops: stop quickly, leave the object.
    Shutdown,
}

/// One pod's state on this node, owned by its worker task.
struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    namespace: String,
    name: String,
    hostname: String,
    pod_dir: PathBuf,
    hosts_file: PathBuf,
    net: Option<PodNet>,
    pod_ip: Option<std::net::Ipv4Addr>,
    volumes: PodVolumes,
    init: Vec<Slot>,
    main: Vec<Slot>,
    init_failed: bool,
    conditions: Conditions,
    start_time: Timestamp,
    kill_annotation: Option<String>,
    last_written: Option<serde_json::Value>,
    tx: UnboundedSender<Msg>,
    set_up: bool,
    setup_retry: Instant,
    next_volume_sync: Instant,
    stopping: bool,
    terminal: bool,
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// Runs the pod until it is deleted or the agent stops.
pub async fn run(
    shared: Arc<Shared>,
    pod: Pod,
    tx: UnboundedSender<Msg>,
    mut rx: UnboundedReceiver<Msg>,
) {
    let mut worker = Worker::new(shared, pod, tx);
    let end = worker.live(&mut rx).await;
    worker.finish(end, &mut rx).await;
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Pod, tx: UnboundedSender<Msg>) -> Worker {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| name.chars().take(63).collect());
        let pod_dir = shared.config.root_dir.join(format!("{namespace}_{name}"));
        let status = pod.status.clone().unwrap_or_default();
        let previous = |statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                        n: &str| {
            statuses
                .as_ref()
                .and_then(|s| s.iter().find(|c| c.name == n).cloned())
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                Slot::new(
                    c,
                    previous(&status.init_container_statuses, &c.name).as_ref(),
                )
            })
            .collect();
        let main = spec
            .containers
            .iter()
            .map(|c| Slot::new(c, previous(&status.container_statuses, &c.name).as_ref()))
            .collect();
        let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        Worker {
            kill_annotation: annotation(&pod, KILL_ANNOTATION),
            hosts_file: pod_dir.join("hosts"),
            shared,
            uid,
            namespace,
            name,
            hostname,
            pod_dir,
            net: None,
            pod_ip: None,
            volumes: PodVolumes::default(),
            init,
            main,
            init_failed: false,
            conditions: Conditions::default(),
            start_time: status
                .start_time
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now),
            last_written: None,
            tx,
            set_up: false,
            setup_retry: Instant::now(),
            next_volume_sync: Instant::now() + VOLUME_REFRESH,
            stopping: false,
            terminal,
            pod,
        }
    }

    fn slot_mut(&mut self, id: SlotId) -> Option<&mut Slot> {
        if id.init {
            self.init.get_mut(id.index)
        } else {
            self.main.get_mut(id.index)
        }
    }

    fn initialized(&self) -> bool {
        self.init
            .iter()
            .all(|s| s.done && matches!(s.record.state, State::Terminated { exit_code: 0, .. }))
    }

    fn phase(&self) -> Phase {
        let init: Vec<ContainerRecord> = self.init.iter().map(|s| s.record.clone()).collect();
        let main: Vec<ContainerRecord> = self.main.iter().map(|s| s.record.clone()).collect();
        status::phase(&init, &main, self.init_failed)
    }

    async fn live(&mut self, rx: &mut UnboundedReceiver<Msg>) -> End {
        if self.pod.metadata.deletion_timestamp.is_some() {
            return End::Deleted;
        }
        loop {
            if !self.terminal {
                if !self.set_up && Instant::now() >= self.setup_retry {
                    self.setup().await;
                }
                if self.set_up {
                    self.start_due().await;
                    if Instant::now() >= self.next_volume_sync {
                        self.refresh_volumes().await;
                    }
                }
            }
            self.publish().await;
            if !self.terminal && self.set_up && self.phase().is_terminal() {
                // Like kubelet, a finished pod keeps its object (and its IP in the status)
                // but not its network.
                self.terminal = true;
                self.teardown_network().await;
            }
            let wake = self.next_wakeup();
            tokio::select! {
                msg = rx.recv() => match msg {
                    None | Some(Msg::Shutdown) => return End::Shutdown,
                    Some(Msg::Gone) => return End::Gone,
                    Some(Msg::Update(pod)) => {
                        if self.on_update(*pod) {
                            return End::Deleted;
                        }
                    }
                    Some(Msg::Exited { slot, run, exit }) => self.on_exit(slot, run, exit),
                    Some(Msg::Probe { slot, run, event }) => self.on_probe(slot, run, event),
                },
                _ = tokio::time::sleep_until(wake.into()) => self.on_timer(),
            }
        }
    }

    /// When the loop must wake without a message: a setup retry, a volume refresh, a backoff
    /// ending for a container that may start now, or a SIGKILL deadline.
    fn next_wakeup(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(60);
        if !self.terminal {
            if !self.set_up {
                wake = wake.min(self.setup_retry);
            } else {
                wake = wake.min(self.next_volume_sync);
                // Only what start_due would start: the current init container, or the
                // containers once initialized (else a waiting container would spin the loop).
                let startable: Vec<&Slot> = if self.initialized() {
                    self.main.iter().collect()
                } else if self.init_failed {
                    Vec::new()
                } else {
                    self.init.iter().filter(|s| !s.done).take(1).collect()
                };
                for slot in startable {
                    if slot.pid.is_none() && !slot.done {
                        wake = wake.min(slot.next_start);
                    }
                }
            }
        }
        for slot in self.init.iter().chain(&self.main) {
            if let Some(at) = slot.kill_at {
                wake = wake.min(at);
            }
        }
        wake
    }

    /// Applies a new version of the pod; true when it is being deleted.
    fn on_update(&mut self, pod: Pod) -> bool {
        let kill = annotation(&pod, KILL_ANNOTATION);
        if kill != self.kill_annotation {
            self.kill_annotation = kill.clone();
            if kill.is_some() {
                for slot in &self.main {
                    if let Some(pid) = slot.pid {
                        tracing::info!(pod = %self.name, container = %slot.spec.name, pid, "fault injection: SIGKILL");
                        runtime::signal_group(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        self.pod = pod;
        deleting
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        for slot in self.init.iter_mut().chain(self.main.iter_mut()) {
            if let (Some(at), Some(pid)) = (slot.kill_at, slot.pid) {
                if now >= at {
                    tracing::info!(container = %slot.spec.name, pid, "grace period over: SIGKILL");
                    runtime::signal_group(pid, libc::SIGKILL);
                    slot.kill_at = None;
                }
            }
        }
    }

    fn update_conditions(&mut self) {
        let now = Timestamp::now();
        let initialized = self.initialized();
        let not_ready: Vec<&str> = self
            .main
            .iter()
            .filter(|s| !s.record.ready)
            .map(|s| s.spec.name.as_str())
            .collect();
        let ready = initialized && not_ready.is_empty() && !self.main.is_empty();
        let why = (!ready).then(|| "ContainersNotReady".to_string());
        self.conditions.set(
            "PodReadyToStartContainers",
            self.set_up && !self.terminal,
            None,
            now,
        );
        self.conditions.set(
            "Initialized",
            initialized,
            (!initialized).then(|| "ContainersNotInitialized".to_string()),
            now,
        );
        self.conditions
            .set("ContainersReady", ready, why.clone(), now);
        self.conditions.set("Ready", ready, why, now);
    }

    /// Writes the status if it changed, and the hosts index entry.
    async fn publish(&mut self) {
        if self.terminal && !self.set_up {
            // Finished before this agent started: its status is final, and ours would only
            // say "ContainerCreating".
            return;
        }
        self.update_conditions();
        let init: Vec<ContainerRecord> = self.init.iter().map(|s| s.record.clone()).collect();
        let main: Vec<ContainerRecord> = self.main.iter().map(|s| s.record.clone()).collect();
        let scheduled = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned());
        let status = status::pod_status(&PodRecord {
            phase: status::phase(&init, &main, self.init_failed),
            conditions: &self.conditions,
            scheduled,
            pod_ip: self.pod_ip,
            host_ip: self.shared.config.gateway,
            start_time: self.start_time,
            init: &init,
            containers: &main,
        });
        let value = serde_json::to_value(&status).unwrap_or_default();
        if self.last_written.as_ref() != Some(&value) {
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
            let patch = serde_json::json!({ "status": value });
            match api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.last_written = Some(value),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = %self.name, error = %e, "writing pod status failed; will retry")
                }
            }
        }
        if self.set_up && !self.terminal {
            self.shared.index.upsert(&self.uid, self.entry());
        }
    }
}

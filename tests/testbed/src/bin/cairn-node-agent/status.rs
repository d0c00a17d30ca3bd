//! Pod status as kubelet reports it: the phase, the conditions (with transition times that move
//! only when a condition's status changes), addresses, start time and one status per
//! container. Pure functions from the pod worker's records, so they are tested without a
//! cluster.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A container's current state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running: being created, backing off, or unable to start.
    Waiting {
        /// Kubelet reason (`ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, ...).
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Its process runs.
    Running {
        /// Since when.
        started_at: Timestamp,
    },
    /// Its process ended.
    Terminated {
        /// Exit code (128 + signal when killed).
        exit_code: i32,
        /// The signal, when killed by one.
        signal: Option<i32>,
        /// `Completed` or `Error`.
        reason: String,
        /// When it started.
        started_at: Timestamp,
        /// When it ended.
        finished_at: Timestamp,
        /// Its container ID.
        container_id: Option<String>,
    },
}

impl State {
    fn to_api(&self) -> ContainerState {
        match self {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            State::Terminated {
                exit_code,
                signal,
                reason,
                started_at,
                finished_at,
                container_id,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    started_at: Some(Time(*started_at)),
                    finished_at: Some(Time(*finished_at)),
                    container_id: container_id.clone(),
                    message: None,
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// What the agent knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    /// Name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// The binary it maps to (`file://<path>`), once known.
    pub image_id: String,
    /// Current state.
    pub state: State,
    /// The previous run's end, after a restart.
    pub last_state: Option<State>,
    /// Passed its readiness probe (or has none and runs).
    pub ready: bool,
    /// Passed its startup probe (or has none and runs).
    pub started: bool,
    /// Restarts so far.
    pub restart_count: i32,
    /// `cairn://<pid>` of the current or last process.
    pub container_id: Option<String>,
}

impl ContainerRecord {
    /// A container not started yet.
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_state: None,
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
        }
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            state: Some(self.state.to_api()),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(State::to_api)
                    .unwrap_or_default(),
            ),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            container_id: self.container_id.clone(),
            ..ContainerStatus::default()
        }
    }

    fn terminated(&self) -> Option<i32> {
        match self.state {
            State::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }

    fn has_run(&self) -> bool {
        matches!(self.state, State::Running { .. }) || self.last_state.is_some()
    }
}

/// Pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not all containers started yet.
    Pending,
    /// Containers run (or restart).
    Running,
    /// Every container ended with 0 and will not restart.
    Succeeded,
    /// Every container ended, one of them with non-zero, and will not restart.
    Failed,
}

impl Phase {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed: nothing runs any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The phase from the containers (kubelet's `getPhase`, without the unknown state). `init_failed`
/// is true when an init container failed and the pod's restart policy is Never.
pub fn phase(init: &[ContainerRecord], containers: &[ContainerRecord], init_failed: bool) -> Phase {
    if init_failed {
        return Phase::Failed;
    }
    let initialized = init.iter().all(|c| c.terminated() == Some(0));
    if !initialized {
        return Phase::Pending;
    }
    if !containers.is_empty() && containers.iter().all(|c| c.terminated().is_some()) {
        return if containers.iter().all(|c| c.terminated() == Some(0)) {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
    }
    if containers.iter().any(ContainerRecord::has_run) {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// Condition statuses with the time each last changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    entries: BTreeMap<&'static str, (bool, Timestamp, Option<String>)>,
}

impl Conditions {
    /// Sets `kind`; its transition time moves only when `status` changes.
    pub fn set(
        &mut self,
        kind: &'static str,
        status: bool,
        reason: Option<String>,
        now: Timestamp,
    ) {
        match self.entries.get_mut(kind) {
            Some(entry) if entry.0 == status => entry.2 = reason,
            _ => {
                self.entries.insert(kind, (status, now, reason));
            }
        }
    }

    /// Current status of `kind` (false when never set).
    pub fn get(&self, kind: &str) -> bool {
        self.entries.get(kind).map(|e| e.0).unwrap_or(false)
    }
}

/// Everything the pod's status is made of.
#[derive(Debug, Clone)]
pub struct PodRecord<'a> {
    /// Phase.
    pub phase: Phase,
    /// Our conditions (Initialized, ContainersReady, Ready).
    pub conditions: &'a Conditions,
    /// The scheduler's PodScheduled condition, copied through.
    pub scheduled: Option<PodCondition>,
    /// Pod IP.
    pub pod_ip: Option<Ipv4Addr>,
    /// Node IP.
    pub host_ip: Ipv4Addr,
    /// When the agent accepted the pod.
    pub start_time: Timestamp,
    /// Init containers.
    pub init: &'a [ContainerRecord],
    /// Containers.
    pub containers: &'a [ContainerRecord],
}

/// The status to write to `pods/status`.
pub fn pod_status(rec: &PodRecord<'_>) -> PodStatus {
    let mut conditions: Vec<PodCondition> = rec.scheduled.iter().cloned().collect();
    for (kind, (status, at, reason)) in &rec.conditions.entries {
        conditions.push(PodCondition {
            type_: kind.to_string(),
            status: if *status { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(*at)),
            reason: reason.clone(),
            ..PodCondition::default()
        });
    }
    let ip = rec.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(rec.phase.as_str().into()),
        conditions: Some(conditions),
        host_ip: Some(rec.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: rec.host_ip.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(rec.start_time)),
        init_container_statuses: if rec.init.is_empty() {
            None
        } else {
            Some(rec.init.iter().map(ContainerRecord::to_api).collect())
        },
        container_statuses: Some(rec.containers.iter().map(ContainerRecord::to_api).collect()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> ContainerRecord {
        let mut c = ContainerRecord::new("c", "cairn/worker");
        let t = Timestamp::UNIX_EPOCH;
        c.state = State::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: t,
            finished_at: t,
            container_id: None,
        };
        c
    }

    fn running() -> ContainerRecord {
        let mut c = ContainerRecord::new("c", "cairn/worker");
        c.state = State::Running {
            started_at: Timestamp::UNIX_EPOCH,
        };
        c
    }

    #[test]
    fn phases() {
        let waiting = ContainerRecord::new("c", "x");
        let one_waiting = std::slice::from_ref(&waiting);
        assert_eq!(phase(&[], one_waiting, false), Phase::Pending);
        assert_eq!(
            phase(&[], &[running(), waiting.clone()], false),
            Phase::Running
        );
        assert_eq!(phase(&[], &[ended(0), ended(0)], false), Phase::Succeeded);
        assert_eq!(phase(&[], &[ended(0), ended(1)], false), Phase::Failed);
        assert_eq!(phase(&[], &[ended(0), running()], false), Phase::Running);
        assert_eq!(phase(one_waiting, one_waiting, false), Phase::Pending);
        assert_eq!(phase(&[ended(0)], one_waiting, false), Phase::Pending);
        assert_eq!(phase(&[ended(1)], one_waiting, true), Phase::Failed);
        let mut backing_off = waiting;
        backing_off.last_state = Some(ended(1).state);
        assert_eq!(phase(&[], &[backing_off], false), Phase::Running);
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        let mut c = Conditions::default();
        c.set("Ready", false, Some("ContainersNotReady".into()), t0);
        c.set("Ready", false, Some("ContainersNotReady".into()), t1);
        assert_eq!(c.entries["Ready"].1, t0);
        c.set("Ready", true, None, t1);
        assert_eq!(c.entries["Ready"], (true, t1, None));
        assert!(c.get("Ready"));
        assert!(!c.get("Initialized"));
    }

    #[test]
    fn status_document() {
        let mut conditions = Conditions::default();
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        conditions.set("Ready", true, None, t);
        let containers = [running()];
        let status = pod_status(&PodRecord {
            phase: Phase::Running,
            conditions: &conditions,
            scheduled: None,
            pod_ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            host_ip: Ipv4Addr::new(10, 244, 1, 1),
            start_time: t,
            init: &[],
            containers: &containers,
        });
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Running");
        assert_eq!(json["podIP"], "10.244.1.2");
        assert_eq!(json["podIPs"][0]["ip"], "10.244.1.2");
        assert_eq!(json["hostIP"], "10.244.1.1");
        assert_eq!(json["conditions"][0]["type"], "Ready");
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            json["containerStatuses"][0]["state"]["running"]["startedAt"],
            "1970-01-01T00:00:00Z"
        );
        assert!(json.get("initContainerStatuses").is_none());
    }
}

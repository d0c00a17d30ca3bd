//! One container of a pod over its runs: the record its status is made of, its process, its
//! restart backoff and the restart-policy decisions. Pure state transitions (no processes, no
//! API), so the rules are unit-tested; the pod worker does the side effects.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;

use crate::container::StartFailure;
use crate::probes::ProbeEvent;
use crate::runtime::Exit;
use crate::status::{ContainerRecord, State};

/// First restart delay; doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Restart delay cap (kubelet's is 5 minutes; tests need fast restarts).
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A container that ran this long before exiting restarts with the initial delay again.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Retry delay of a container that cannot be created (unknown image, missing ConfigMap, ...).
pub const CONFIG_RETRY: Duration = Duration::from_secs(3);

/// A container of the pod: init container or container, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    /// An init container.
    pub init: bool,
    /// Its index in the spec's list.
    pub index: usize,
}

/// Whether a container that exited with `code` runs again, by the pod's restart policy. Init
/// containers are not restarted after success, whatever the policy.
pub fn should_restart(policy: &str, init: bool, code: i32) -> bool {
    if init {
        code != 0 && policy != "Never"
    } else {
        policy == "Always" || (policy == "OnFailure" && code != 0)
    }
}

/// One container and what the agent knows of it.
pub struct Slot {
    /// Its spec.
    pub spec: Container,
    /// What its status says.
    pub record: ContainerRecord,
    /// Its process while it runs.
    pub pid: Option<u32>,
    /// Number of the current (or last) run; stale exit and probe messages carry older ones.
    pub run: u64,
    /// Its probes while it runs.
    pub probes: Option<JoinHandle<()>>,
    /// When a SIGTERMed process gets SIGKILL.
    pub kill_at: Option<Instant>,
    /// Not before this may it (re)start.
    pub next_start: Instant,
    /// Will not run again (init container succeeded, or ended and not restarted).
    pub done: bool,
    started_instant: Option<Instant>,
    backoff: Duration,
    has_run: bool,
}

impl Slot {
    /// A container not started yet by this agent; `previous` is its status in the API, so a
    /// restarted agent continues the restart count of the processes it lost.
    pub fn new(spec: &Container, previous: Option<&ContainerStatus>) -> Slot {
        let mut record =
            ContainerRecord::new(&spec.name, spec.image.as_deref().unwrap_or_default());
        let mut has_run = false;
        if let Some(prev) = previous {
            record.restart_count = prev.restart_count;
            has_run = prev
                .state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                || prev
                    .last_state
                    .as_ref()
                    .is_some_and(|s| s.terminated.is_some());
        }
        Slot {
            spec: spec.clone(),
            record,
            pid: None,
            run: 0,
            probes: None,
            kill_at: None,
            next_start: Instant::now(),
            done: false,
            started_instant: None,
            backoff: BACKOFF_START,
            has_run,
        }
    }

    /// The restart number the next start will have.
    pub fn next_restart_count(&self) -> i32 {
        self.record.restart_count + i32::from(self.has_run)
    }

    /// Stops its probes.
    pub fn stop_probes(&mut self) {
        if let Some(task) = self.probes.take() {
            task.abort();
        }
    }

    /// It cannot be created yet: wait with the failure's reason and retry later. Returns true
    /// when the message is new (worth logging).
    pub fn cannot_start(&mut self, failure: StartFailure, now: Instant) -> bool {
        let new = !matches!(&self.record.state,
            State::Waiting { message: Some(m), .. } if *m == failure.message);
        self.record.state = State::Waiting {
            reason: failure.reason.into(),
            message: Some(failure.message),
        };
        self.next_start = now + CONFIG_RETRY;
        new
    }

    /// Forking it failed: retry with backoff.
    pub fn start_failed(&mut self, run: u64, message: String, now: Instant) {
        self.run = run;
        self.record.state = State::Waiting {
            reason: "RunContainerError".into(),
            message: Some(message),
        };
        self.next_start = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Its process `pid` runs (run number `run`). Started and ready at once unless a startup or
    /// readiness probe has to say so first (init containers are never ready).
    pub fn started(&mut self, run: u64, pid: u32, image_id: String, init: bool, now: Instant) {
        if self.has_run {
            self.record.restart_count += 1;
        }
        self.has_run = true;
        self.run = run;
        self.pid = Some(pid);
        self.started_instant = Some(now);
        self.record.image_id = image_id;
        self.record.state = State::Running {
            started_at: Timestamp::now(),
        };
        self.record.container_id = Some(format!("cairn://{pid}"));
        self.record.started = self.spec.startup_probe.is_none();
        self.record.ready = !init && self.record.started && self.spec.readiness_probe.is_none();
    }

    /// Its process ended. With `restart` it waits out its backoff (`CrashLoopBackOff`, the end
    /// kept as `lastState`), else it is terminated for good.
    pub fn exited(&mut self, exit: Exit, restart: bool, pod: &str, now: Instant) {
        self.pid = None;
        self.kill_at = None;
        self.stop_probes();
        self.record.ready = false;
        self.record.started = false;
        let started_at = match self.record.state {
            State::Running { started_at } => started_at,
            _ => Timestamp::now(),
        };
        let terminated = State::Terminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: if exit.code == 0 { "Completed" } else { "Error" }.into(),
            started_at,
            finished_at: Timestamp::now(),
            container_id: self.record.container_id.clone(),
        };
        if !restart {
            self.record.state = terminated;
            self.done = true;
            return;
        }
        let ran = self
            .started_instant
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        if ran >= BACKOFF_RESET_AFTER {
            self.backoff = BACKOFF_START;
        }
        self.record.last_state = Some(terminated);
        self.record.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {}s restarting failed container={} pod={pod}",
                self.backoff.as_secs(),
                self.spec.name
            )),
        };
        self.next_start = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Applies a probe result. Returns the PID to SIGTERM when a startup or liveness probe
    /// failed (the SIGKILL deadline `grace` later is set here).
    pub fn probed(&mut self, event: ProbeEvent, grace: Duration, now: Instant) -> Option<u32> {
        match event {
            ProbeEvent::Started => {
                self.record.started = true;
                if self.spec.readiness_probe.is_none() {
                    self.record.ready = true;
                }
                None
            }
            ProbeEvent::Ready(ready) => {
                self.record.ready = ready && self.record.started;
                None
            }
            ProbeEvent::Failed { kind, message } => {
                tracing::warn!(container = %self.spec.name, kind, %message, "probe failed: restarting the container");
                self.record.ready = false;
                let pid = self.pid?;
                self.kill_at = Some(now + grace);
                Some(pid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(probes: serde_json::Value) -> Slot {
        let mut spec = serde_json::json!({"name": "worker", "image": "cairn/worker"});
        if let (Some(obj), Some(extra)) = (spec.as_object_mut(), probes.as_object()) {
            obj.extend(extra.clone());
        }
        Slot::new(&serde_json::from_value(spec).unwrap(), None)
    }

    #[test]
    fn restart_policy_table() {
        assert!(should_restart("Always", false, 0));
        assert!(should_restart("Always", false, 1));
        assert!(!should_restart("OnFailure", false, 0));
        assert!(should_restart("OnFailure", false, 137));
        assert!(!should_restart("Never", false, 1));
        assert!(!should_restart("Always", true, 0));
        assert!(should_restart("Always", true, 1));
        assert!(!should_restart("Never", true, 1));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut s = slot(serde_json::json!({}));
        let t0 = Instant::now();
        let crash = Exit {
            code: 1,
            signal: None,
        };
        let mut delays = Vec::new();
        let mut now = t0;
        for run in 1..=6 {
            s.started(run, 100, "file:///w".into(), false, now);
            s.exited(crash, true, "p", now);
            delays.push(s.next_start - now);
            now = s.next_start;
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(s.record.restart_count, 5);
        s.started(7, 100, "file:///w".into(), false, now);
        s.exited(crash, true, "p", now + BACKOFF_RESET_AFTER);
        assert_eq!(s.next_start - (now + BACKOFF_RESET_AFTER), BACKOFF_START);
        match &s.record.state {
            State::Waiting { reason, message } => {
                assert_eq!(reason, "CrashLoopBackOff");
                assert_eq!(
                    message.as_deref(),
                    Some("back-off 1s restarting failed container=worker pod=p")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.record.last_state,
            Some(State::Terminated { exit_code: 1, .. })
        ));
    }

    #[test]
    fn readiness_waits_for_probes() {
        let now = Instant::now();
        let mut plain = slot(serde_json::json!({}));
        plain.started(1, 10, String::new(), false, now);
        assert!(plain.record.started && plain.record.ready);

        let mut probed = slot(serde_json::json!({
            "startupProbe": {"tcpSocket": {"port": 1}},
            "readinessProbe": {"tcpSocket": {"port": 1}},
        }));
        probed.started(1, 10, String::new(), false, now);
        assert!(!probed.record.started && !probed.record.ready);
        assert_eq!(
            probed.probed(ProbeEvent::Ready(true), Duration::ZERO, now),
            None
        );
        assert!(!probed.record.ready, "not ready before started");
        probed.probed(ProbeEvent::Started, Duration::ZERO, now);
        probed.probed(ProbeEvent::Ready(true), Duration::ZERO, now);
        assert!(probed.record.started && probed.record.ready);
        let failed = ProbeEvent::Failed {
            kind: "Liveness",
            message: "x".into(),
        };
        let grace = Duration::from_secs(5);
        assert_eq!(probed.probed(failed, grace, now), Some(10));
        assert_eq!(probed.kill_at, Some(now + grace));
        assert!(!probed.record.ready);
    }

    #[test]
    fn a_restarted_agent_continues_the_count() {
        let spec: Container = serde_json::from_value(serde_json::json!({"name": "w"})).unwrap();
        let previous: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "w", "image": "", "imageID": "", "ready": true, "restartCount": 3,
            "state": {"running": {}},
        }))
        .unwrap();
        let mut s = Slot::new(&spec, Some(&previous));
        assert_eq!(s.next_restart_count(), 4);
        s.started(1, 10, String::new(), false, Instant::now());
        assert_eq!(s.record.restart_count, 4);
    }
}

//! Starting the pod's containers when due, and acting on their exits and probe results.

use std::time::Instant;

use super::{grace_period, restart_policy, Msg, Worker};
use crate::container::{self, PodContext};
use crate::network::PodNet;
use crate::probes::{self, ProbeEvent};
use crate::runtime::{self, Exit};
use crate::slot::{self, SlotId};

impl Worker {
    /// Starts what is due: the next init container, or (once initialized) every container
    /// that is not running and whose backoff is over.
    pub(super) async fn start_due(&mut self) {
        let now = Instant::now();
        if !self.initialized() {
            if self.init_failed {
                return;
            }
            if let Some(index) = self.init.iter().position(|s| !s.done) {
                let slot = &self.init[index];
                if slot.pid.is_none() && now >= slot.next_start {
                    self.launch(SlotId { init: true, index }).await;
                }
            }
            return;
        }
        for index in 0..self.main.len() {
            let slot = &self.main[index];
            if !slot.done && slot.pid.is_none() && now >= slot.next_start {
                self.launch(SlotId { init: false, index }).await;
            }
        }
    }

    pub(super) async fn launch(&mut self, id: SlotId) {
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        let (spec, restart) = (slot.spec.clone(), slot.next_restart_count());
        let launch = match probes::validate(&spec) {
            Err(message) => Err(container::StartFailure {
                reason: "CreateContainerConfigError",
                message,
            }),
            Ok(()) => {
                let netns_path = self
                    .net
                    .as_ref()
                    .map(PodNet::netns_path)
                    .unwrap_or_default();
                let ctx = PodContext {
                    client: &self.shared.client,
                    config: &self.shared.config,
                    pod: &self.pod,
                    addrs: self.addresses(),
                    volumes: &self.volumes,
                    pod_dir: &self.pod_dir,
                    hosts_file: &self.hosts_file,
                    netns_path: &netns_path,
                    hostname: &self.hostname,
                    api_port: self.shared.api_port,
                };
                container::launch_spec(&ctx, &spec, restart).await
            }
        };
        let launch = match launch {
            Ok(launch) => launch,
            Err(failure) => {
                let (reason, message) = (failure.reason, failure.message.clone());
                if let Some(slot) = self.slot_mut(id) {
                    if slot.cannot_start(failure, Instant::now()) {
                        tracing::warn!(container = %spec.name, reason, %message, "container cannot start");
                    }
                }
                return;
            }
        };
        let image_id = format!("file://{}", launch.program.display());
        let run = self.slot_mut(id).map(|s| s.run + 1).unwrap_or(1);
        let tx = self.tx.clone();
        let spawned = self
            .shared
            .spawner
            .spawn(launch, move |exit| {
                let _ = tx.send(Msg::Exited {
                    slot: id,
                    run,
                    exit,
                });
            })
            .await;
        let pod_ip = self.pod_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let tx = self.tx.clone();
        let pod_name = self.name.clone();
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                tracing::warn!(container = %spec.name, error = %e, "container start failed");
                slot.start_failed(run, e.to_string(), Instant::now());
                return;
            }
        };
        tracing::info!(pod = %pod_name, container = %spec.name, pid, restart, "container started");
        slot.started(run, pid, image_id, id.init, Instant::now());
        let has_probes = spec.startup_probe.is_some()
            || spec.readiness_probe.is_some()
            || spec.liveness_probe.is_some();
        if has_probes && !id.init {
            slot.probes = Some(tokio::spawn(probes::run(spec, pod_ip, move |event| {
                let _ = tx.send(Msg::Probe {
                    slot: id,
                    run,
                    event,
                });
            })));
        }
    }

    pub(super) fn on_exit(&mut self, id: SlotId, run: u64, exit: Exit) {
        let restart =
            !self.stopping && slot::should_restart(restart_policy(&self.pod), id.init, exit.code);
        let pod_name = self.name.clone();
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        if slot.run != run {
            return;
        }
        tracing::info!(pod = %pod_name, container = %slot.spec.name, code = exit.code, signal = ?exit.signal, restart, "container exited");
        slot.exited(exit, restart, &pod_name, Instant::now());
        if id.init && exit.code != 0 && !restart && !self.stopping {
            self.init_failed = true;
        }
    }

    pub(super) fn on_probe(&mut self, id: SlotId, run: u64, event: ProbeEvent) {
        let grace = grace_period(&self.pod);
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        if slot.run != run || slot.pid.is_none() {
            return;
        }
        if let Some(pid) = slot.probed(event, grace, Instant::now()) {
            runtime::signal_group(pid, libc::SIGTERM);
        }
    }
}

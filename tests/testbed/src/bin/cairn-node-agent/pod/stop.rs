//! Stopping a pod: its processes within the grace period, its network namespace, its volumes,
//! and (when it was deleted) its object.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{grace_period, End, Msg, Worker, SHUTDOWN_GRACE};
use crate::network;
use crate::runtime;

impl Worker {
    /// Removes the pod's network namespace and veth pair, frees its IP and drops it from the
    /// hosts files.
    pub(super) async fn teardown_network(&mut self) {
        if let Some(net) = self.net.take() {
            let root = self.shared.config.root_dir.clone();
            let (netns, veth) = (net.netns.clone(), net.host_veth.clone());
            let _ =
                tokio::task::spawn_blocking(move || network::delete(&root, &netns, &veth)).await;
            self.shared
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(net.ip);
        }
        self.shared.index.remove(&self.uid);
    }

    /// SIGTERM every process, SIGKILL what is left after `grace`, and wait until all exited.
    pub(super) async fn stop_all(&mut self, grace: Duration, rx: &mut UnboundedReceiver<Msg>) {
        self.stopping = true;
        for slot in self.init.iter_mut().chain(self.main.iter_mut()) {
            slot.stop_probes();
            if let Some(pid) = slot.pid {
                runtime::signal_group(pid, libc::SIGTERM);
            }
        }
        let running = |w: &Worker| w.init.iter().chain(&w.main).any(|s| s.pid.is_some());
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while running(self) {
            let wait_until = if killed {
                deadline + Duration::from_secs(10)
            } else {
                deadline
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Exited { slot, run, exit }) => self.on_exit(slot, run, exit),
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(wait_until.into()) => {
                    if killed {
                        tracing::error!(pod = %self.name, "processes did not exit after SIGKILL");
                        break;
                    }
                    for slot in self.init.iter().chain(&self.main) {
                        if let Some(pid) = slot.pid {
                            tracing::info!(pod = %self.name, container = %slot.spec.name, pid, "grace period over: SIGKILL");
                            runtime::signal_group(pid, libc::SIGKILL);
                        }
                    }
                    killed = true;
                }
            }
        }
    }

    pub(super) async fn finish(&mut self, end: End, rx: &mut UnboundedReceiver<Msg>) {
        let grace = match end {
            End::Deleted => grace_period(&self.pod),
            End::Gone | End::Shutdown => SHUTDOWN_GRACE.min(grace_period(&self.pod)),
        };
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), grace_s = grace.as_secs(), "stopping pod");
        self.stop_all(grace, rx).await;
        self.teardown_network().await;
        if matches!(end, End::Shutdown) {
            return;
        }
        for sub in ["volumes", "cwd"] {
            let _ = std::fs::remove_dir_all(self.pod_dir.join(sub));
        }
        if matches!(end, End::Deleted) {
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&self.name, &params).await {
                Ok(_) => tracing::info!(pod = %self.name, "pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.name, error = %e, "final pod delete failed"),
            }
        }
    }
}

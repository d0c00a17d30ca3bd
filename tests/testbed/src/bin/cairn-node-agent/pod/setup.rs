//! Setting a pod up on this node: its directory, IP and network namespace, volumes and hosts
//! file; and keeping its volumes and hosts-file entry current.

use std::time::{Duration, Instant};

use super::{Worker, VOLUME_REFRESH};
use crate::downward::Addresses;
use crate::hosts::{self, PodEntry, ServiceView};
use crate::network::{self, PodNet};
use crate::status::State;
use crate::volumes::VolumeContext;

impl Worker {
    /// Gives the pod an IP, its network namespace, its directory, volumes and hosts file.
    /// On failure the containers wait with `ContainerCreating` and the message, and setup is
    /// retried.
    pub(super) async fn setup(&mut self) {
        match self.try_setup().await {
            Ok(()) => {
                self.set_up = true;
                tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), ip = ?self.pod_ip, "pod set up");
            }
            Err(message) => {
                tracing::warn!(pod = %self.name, %message, "pod setup failed; retrying");
                for slot in self.init.iter_mut().chain(self.main.iter_mut()) {
                    slot.record.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: Some(message.clone()),
                    };
                }
                self.setup_retry = Instant::now() + Duration::from_secs(2);
            }
        }
    }

    pub(super) async fn try_setup(&mut self) -> Result<(), String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        if spec.host_network == Some(true) {
            return Err("hostNetwork pods are not supported by the test bed's node agent; every pod gets its own network namespace".into());
        }
        self.prepare_dir()
            .map_err(|e| format!("pod directory {}: {e}", self.pod_dir.display()))?;
        if self.net.is_none() {
            let previous_ip = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            let ip = self
                .shared
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allocate_preferred(previous_ip)
                .map_err(|e| e.to_string())?;
            let net = PodNet::names(
                &self.shared.config.netns_prefix,
                &self.namespace,
                &self.name,
                &self.uid,
                ip,
            );
            let config = self.shared.config.clone();
            let made = net.clone();
            let result = tokio::task::spawn_blocking(move || network::create(&config, &made))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = result {
                self.shared
                    .ipam
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(ip);
                return Err(format!("pod network: {e}"));
            }
            self.pod_ip = Some(ip);
            self.net = Some(net);
        }
        self.refresh_volumes_strict().await?;
        let entry = self.entry();
        let content = self.render_hosts(&entry);
        hosts::write_in_place(&self.hosts_file, &content)
            .map_err(|e| format!("hosts file {}: {e}", self.hosts_file.display()))?;
        self.shared.index.upsert(&self.uid, entry);
        Ok(())
    }

    /// `<root>/<ns>_<pod>`, emptied of a previous pod of the same name (logs are kept and
    /// appended to, so a test can still read them).
    pub(super) fn prepare_dir(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.pod_dir)?;
        let uid_file = self.pod_dir.join("uid");
        let previous = std::fs::read_to_string(&uid_file).unwrap_or_default();
        if previous != self.uid {
            for sub in ["volumes", "cwd"] {
                let _ = std::fs::remove_dir_all(self.pod_dir.join(sub));
            }
            std::fs::write(&uid_file, &self.uid)?;
        }
        std::fs::create_dir_all(self.pod_dir.join("volumes"))
    }

    pub(super) fn addresses(&self) -> Addresses {
        Addresses {
            pod_ip: self.pod_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            host_ip: self.shared.config.gateway,
        }
    }

    pub(super) async fn refresh_volumes_strict(&mut self) -> Result<(), String> {
        let volumes_dir = self.pod_dir.join("volumes");
        let ctx = VolumeContext {
            client: &self.shared.client,
            pod: &self.pod,
            addrs: self.addresses(),
            volumes_dir: &volumes_dir,
        };
        self.volumes.sync(&ctx).await.map_err(|e| e.to_string())
    }

    pub(super) async fn refresh_volumes(&mut self) {
        self.next_volume_sync = Instant::now() + VOLUME_REFRESH;
        if let Err(e) = self.refresh_volumes_strict().await {
            tracing::warn!(pod = %self.name, error = %e, "volume refresh failed; keeping the previous contents");
        }
    }

    pub(super) fn entry(&self) -> PodEntry {
        let spec = self.pod.spec.as_ref();
        PodEntry {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            subdomain: spec
                .and_then(|s| s.subdomain.clone())
                .filter(|s| !s.is_empty()),
            labels: self.pod.metadata.labels.clone().unwrap_or_default(),
            ip: if self.terminal { None } else { self.pod_ip },
            ready: self.conditions.get("Ready"),
            // Written directly during setup; the hosts task keeps it up to date afterwards.
            hosts_file: self.net.is_some().then(|| self.hosts_file.clone()),
        }
    }

    pub(super) fn render_hosts(&self, me: &PodEntry) -> String {
        let mut pods = self.shared.index.snapshot();
        pods.retain(|p| !(p.namespace == me.namespace && p.name == me.name));
        pods.push(me.clone());
        let services: Vec<ServiceView> = self
            .shared
            .services
            .state()
            .iter()
            .map(|s| ServiceView::from_service(s))
            .collect();
        hosts::render(me, &pods, &services, &self.shared.config.api_host)
    }
}

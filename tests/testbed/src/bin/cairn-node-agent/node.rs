//! The Node object: registered with a Ready condition, fixed capacity (cpu 16, memory 64Gi,
//! pods 110; the scheduler needs room, the processes are not limited) and the gateway as
//! InternalIP; then kept alive like kubelet does, by renewing its Lease in `kube-node-lease`
//! and refreshing the condition heartbeats every 10 seconds, so the node lifecycle controller
//! never marks it unreachable and evicts its pods.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::config::Config;

/// How often the Lease and heartbeats are renewed (kubelet's default).
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Field manager of the agent's server-side applies.
const MANAGER: &str = "cairn-node-agent";

/// A failure to register the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// The request.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The node's status document; `since` is when Ready became true.
fn status(config: &Config, since: Timestamp) -> serde_json::Value {
    let now = Time(Timestamp::now());
    let since = Time(since);
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "the node agent does not limit memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "the node agent does not limit disk"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "the node agent does not limit PIDs"),
            condition("Ready", "True", "KubeletReady", "cairn node agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.gateway.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "cairn test bed node agent",
            "containerRuntimeVersion": "cairn://0.1.0",
            "kubeletVersion": "v1.34.0", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

/// Creates (or takes over) the Node and marks it Ready.
pub async fn register(client: &Client, config: &Config) -> Result<Timestamp, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let name = &config.node_name;
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(),
            },
        },
        "spec": {"podCIDR": config.cidr.to_string(), "podCIDRs": [config.cidr.to_string()]},
    }))
    .unwrap_or_default();
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %name, "node exists; taking it over")
        }
        Err(source) => {
            return Err(NodeError::Api {
                what: format!("creating node {name}"),
                source,
            })
        }
    }
    let since = Timestamp::now();
    heartbeat(client, config, since).await?;
    Ok(since)
}

/// Renews the Lease and the Node's condition heartbeats once.
async fn heartbeat(client: &Client, config: &Config, since: Timestamp) -> Result<(), NodeError> {
    let name = &config.node_name;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status(config, since) })),
        )
        .await
        .map_err(|source| NodeError::Api {
            what: format!("writing the status of node {name}"),
            source,
        })?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                 "uid": node.metadata.uid.unwrap_or_default()}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())},
    });
    leases
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(|source| NodeError::Api {
            what: format!("renewing lease kube-node-lease/{name}"),
            source,
        })?;
    Ok(())
}

/// Renews the Lease and heartbeats every 10 seconds, forever; failures are logged and retried.
pub async fn keep_alive(client: Client, config: std::sync::Arc<Config>, since: Timestamp) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&client, &config, since).await {
            tracing::warn!(error = %e, "node heartbeat failed; retrying in 10s");
        }
    }
}

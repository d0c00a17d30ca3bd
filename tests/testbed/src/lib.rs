//! Cairn test bed: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, built from source by `tests/controlplane/build.sh`)
//! started per test binary, with real certificates and RBAC, and an optional pod network for
//! the node agent that runs pods as local processes in network namespaces.
//!
//! ```no_run
//! use cairn_testbed::{Cluster, ClusterOptions};
//! let cluster = Cluster::start(ClusterOptions::new("smoke"))?;
//! let out = cluster.kubectl().args(["get", "namespaces"]).output()?;
//! assert!(out.status.success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/testbed.md` for versions, caches and debugging.

pub mod binaries;
pub mod certs;
pub mod cluster;
pub mod kubeconfig;
pub mod network;
pub mod node_agent;
pub mod probe;
pub mod process;
pub mod services;
pub mod workdir;

pub use binaries::{control_plane_binaries, ControlPlaneBinaries};
pub use cluster::{Cluster, ClusterOptions, ClusterPorts};
pub use network::PodNetwork;

/// Every error of the test bed, one variant per module.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Locating or building the binaries.
    #[error(transparent)]
    Binaries(#[from] binaries::BinariesError),
    /// Generating or writing certificates.
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    /// Starting or talking to the cluster.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// Creating or removing the pod network.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// Running the probes.
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    /// Starting or stopping a process.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// Creating or removing the work directory.
    #[error(transparent)]
    WorkDir(#[from] workdir::WorkDirError),
}

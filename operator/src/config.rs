//! Operator settings, read once at start from flags and environment (never in the middle of a
//! reconcile).

use std::net::SocketAddr;

/// What the operator was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Image for jobs that do not name one.
    pub worker_image: String,
    /// Service account for worker pods that do not name one.
    pub worker_service_account: String,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// Take a Lease before reconciling.
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    pub identity: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            worker_image: format!("cairn/worker:{}", env!("CARGO_PKG_VERSION")),
            worker_service_account: "cairn-worker".into(),
            namespaces: Vec::new(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            leader_election: true,
            lease_name: "cairn-operator".into(),
            lease_namespace: "default".into(),
            identity: "cairn-operator".into(),
        }
    }
}

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
    /// What a StreamJob may put in its worker pods ([`crate::policy`]).
    pub policy: WorkloadPolicy,
    /// Reconciles run at the same time, per watched scope (all namespaces, or each namespace
    /// of `namespaces`); 0: unbounded.
    pub max_concurrent_reconciles: u16,
}

/// Default of [`OperatorConfig::max_concurrent_reconciles`]. Unbounded, a burst (500 StreamJobs
/// created or changed at once) puts every reconcile in flight together, each with its requests
/// and answers in memory, and they queue at the API server anyway (the fleet benchmark,
/// docs/benchmarks.md#operator-with-500-streamjobs). Generous, because a reconcile of a job
/// whose pod does not answer waits for the control API's timeout (5 s per call) in its slot.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 32;

impl Default for OperatorConfig {
    fn default() -> Self {
        let worker_image = format!("cairn/worker:{}", env!("CARGO_PKG_VERSION"));
        let worker_service_account = "cairn-worker".to_owned();
        OperatorConfig {
            policy: WorkloadPolicy::defaults_for(&worker_image, &worker_service_account),
            worker_image,
            worker_service_account,
            namespaces: Vec::new(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            leader_election: true,
            lease_name: "cairn-operator".into(),
            lease_namespace: "default".into(),
            identity: "cairn-operator".into(),
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
        }
    }
}

/// Volume types a StreamJob may add to its worker pods unless configured otherwise: data and
/// configuration, nothing that reaches the node (`hostPath`) or mints credentials (`projected`
/// service-account tokens, `csi` drivers).
pub const DEFAULT_VOLUME_TYPES: [&str; 5] = [
    "configMap",
    "downwardAPI",
    "emptyDir",
    "persistentVolumeClaim",
    "secret",
];

/// Every volume type of Kubernetes 1.34's `Volume` (the keys of its sources), so that a
/// misspelt `--allowed-volume-types` entry is an error at start instead of a silent no-op.
pub const KNOWN_VOLUME_TYPES: [&str; 30] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

/// The label a Secret needs before StreamJobs may use it under [`SecretAccess::Labelled`].
pub const SECRET_ACCESS_LABEL: &str = "cairn.dev/streamjob-access";
/// Its value.
pub const SECRET_ACCESS_VALUE: &str = "allowed";

/// Which Secrets of its namespace a StreamJob may expose to its worker pods (as environment
/// variables through `credentialsSecret` or `env[].valueFrom.secretKeyRef`, or as `secret` and
/// `projected` volumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretAccess {
    /// Only Secrets labelled `cairn.dev/streamjob-access: allowed`: whoever can label a Secret
    /// (who can already edit it) decides that StreamJobs may read it.
    #[default]
    Labelled,
    /// Any Secret of the namespace: writing StreamJobs then equals reading its Secrets.
    Any,
    /// None at all.
    None,
}

impl SecretAccess {
    /// The spelling of flags and chart values.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretAccess::Labelled => "labelled",
            SecretAccess::Any => "any",
            SecretAccess::None => "none",
        }
    }
}

impl std::str::FromStr for SecretAccess {
    type Err = PolicyConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "labelled" => Ok(SecretAccess::Labelled),
            "any" => Ok(SecretAccess::Any),
            "none" => Ok(SecretAccess::None),
            other => Err(PolicyConfigError::SecretAccess(other.to_owned())),
        }
    }
}

/// A policy setting the operator cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyConfigError {
    /// Not one of labelled, any, none.
    #[error("--secret-access (CAIRN_SECRET_ACCESS): {0:?} is not one of labelled, any, none")]
    SecretAccess(String),
    /// Not a Kubernetes volume type.
    #[error("--allowed-volume-types (CAIRN_ALLOWED_VOLUME_TYPES): {0:?} is not a volume type; use the field names of a pod volume (configMap, emptyDir, persistentVolumeClaim, hostPath, ...), serviceAccountToken, or *")]
    VolumeType(String),
}

/// What a StreamJob may put into its worker pods. Anyone who can write a StreamJob chooses the
/// pods' image, service account, volumes and environment; without limits, that equals creating
/// arbitrary pods and reading every Secret of the namespace. The operator refuses a StreamJob
/// outside these limits before it creates any child object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPolicy {
    /// Image patterns: `*` (any), `prefix*` (any image starting so), or a repository (that
    /// repository with any tag or digest).
    pub allowed_images: Vec<String>,
    /// Service account names, or `*` for any.
    pub allowed_service_accounts: Vec<String>,
    /// Volume types (`configMap`, `hostPath`, ...), or `*` for any.
    pub allowed_volume_types: Vec<String>,
    /// Which Secrets may be used.
    pub secret_access: SecretAccess,
}

impl WorkloadPolicy {
    /// The safe defaults: the default worker image's repository, the default worker service
    /// account, [`DEFAULT_VOLUME_TYPES`], labelled Secrets only.
    pub fn defaults_for(worker_image: &str, worker_service_account: &str) -> Self {
        WorkloadPolicy {
            allowed_images: vec![image_repository(worker_image).to_owned()],
            allowed_service_accounts: vec![worker_service_account.to_owned()],
            allowed_volume_types: DEFAULT_VOLUME_TYPES.map(str::to_owned).to_vec(),
            secret_access: SecretAccess::Labelled,
        }
    }

    /// Checks the settings themselves (a misspelt volume type would silently allow nothing).
    pub fn check(&self) -> Result<(), PolicyConfigError> {
        match self.allowed_volume_types.iter().find(|t| {
            !matches!(t.as_str(), "*" | "serviceAccountToken")
                && !KNOWN_VOLUME_TYPES.contains(&t.as_str())
        }) {
            Some(unknown) => Err(PolicyConfigError::VolumeType(unknown.clone())),
            None => Ok(()),
        }
    }
}

/// The repository of an image reference: without its digest (`@sha256:...`) and tag (`:1.2`,
/// after the last `/`, so a registry port stays).
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let name_start = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[name_start..].find(':') {
        Some(colon) => &without_digest[..name_start + colon],
        None => without_digest,
    }
}

//! The `StreamJob` custom resource (`cairn.dev/v1alpha1`, short name `sj`): what a user applies,
//! and the status the operator writes back.
//!
//! The `job` section is the worker's job spec (the same YAML `cairn-worker run` reads), kept as
//! JSON here and parsed by the contract crate during validation; its OpenAPI schema is written
//! out in [`job_schema`] so the API server checks it. Cross-field rules (CEL) are added to the
//! generated definition in [`rules`].

// Each `printcolumn(...)` of the derive repeats `type_ = ...`; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod job_schema;
pub mod rules;
mod status;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use status::*;

/// Desired state of a streaming job.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    namespaced,
    shortname = "sj",
    category = "cairn",
    status = "StreamJobStatus",
    doc = "A checkpointed, stateful streaming job run by the Cairn operator.",
    scale(
        spec_replicas_path = ".spec.job.parallelism",
        status_replicas_path = ".status.parallelism",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Parallelism",
        type_ = "integer",
        json_path = ".status.parallelism"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions"
    ),
    printcolumn(
        name = "Checkpoint",
        type_ = "date",
        description = "Time since the last committed checkpoint",
        json_path = ".status.lastCheckpoint.time"
    ),
    printcolumn(
        name = "Last Savepoint",
        type_ = "string",
        json_path = ".status.lastSavepoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobSpec {
    /// The job: the same document `cairn-worker run job.yaml` runs locally (input, task, output,
    /// parallelism, checkpoint, state). `name` defaults to the StreamJob's name; `state.dir` and
    /// `restore` are set by the operator.
    #[schemars(schema_with = "job_schema::schema")]
    pub job: serde_json::Value,
    /// Worker image; default: the operator's `--worker-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// CPU and memory of each worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides merged into every worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// Where each worker keeps its local RocksDB state (default: an emptyDir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_volume: Option<StateVolume>,
    /// How state moves across an upgrade, rescale or repartition.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    /// Manual and periodic savepoints, and their history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointSettings>,
    /// Start the job (its first deployment only) from this savepoint, and how to restore savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
    /// `running` (default) or `suspended` (savepoint, then no pods).
    #[serde(default)]
    pub state: DesiredState,
    /// Change to restart every worker pod (they restore the latest committed checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    /// How long a new deployment may take to commit its first checkpoint before the operator
    /// rolls back to the last good spec (duration, default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_timeout: Option<String>,
    /// What happens when the StreamJob is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionPolicy>,
    /// Choose P from the job's measured load (docs/autoscaling.md). Absent (the default): P is
    /// `job.parallelism`. Present: `job.parallelism` is the starting P and the autoscaler's
    /// choice (`status.autoscaler.parallelism`) replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerSettings>,
    /// Secret whose keys become environment variables of the workers (e.g. `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` for an `s3://` store, Kafka credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Settings merged into every worker pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Service account of the worker pods (default: the operator's `--worker-service-account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Priority class of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra volumes, e.g. a ReadWriteMany claim holding a `file:///` checkpoint store or the
    /// input files of a `file` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Where the extra volumes are mounted in the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// Local state volume of each worker pod: exactly one of `emptyDir` or `persistentVolumeClaim`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateVolume {
    /// A node-local scratch volume (lost with the pod; state is restored from checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,
    /// A PersistentVolumeClaim per pod (kept across pod restarts, so restores reuse local SSTs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimVolume>,
}

/// emptyDir settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolume {
    /// Size limit, e.g. `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
    /// `Memory` for tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
}

/// PVC settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimVolume {
    /// Requested size, e.g. `20Gi`.
    pub size: String,
    /// Storage class (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// How state moves across a change that needs new worker pods.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop with a savepoint, restore the new pods from it (default; the only mode that can
    /// repartition).
    #[default]
    Savepoint,
    /// Stop the pods (SIGTERM: a final checkpoint if they are healthy) and restore the latest
    /// committed checkpoint; works when the job is too unhealthy to take a savepoint.
    LastState,
    /// Start the new pods with empty state and offsets at the beginning.
    Stateless,
}

impl UpgradeMode {
    /// The name users write (`savepoint`, `last-state`, `stateless`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeMode::Savepoint => "savepoint",
            UpgradeMode::LastState => "last-state",
            UpgradeMode::Stateless => "stateless",
        }
    }
}

/// Savepoints besides those of upgrades.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointSettings {
    /// Change it to take a savepoint now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_nonce: Option<i64>,
    /// Take a savepoint this often (duration, e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Keep at most this many savepoints in the history (default 10; older ones are deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// Delete savepoints older than this (duration, e.g. `7d` is not valid: use `168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// After this many failed attempts at an upgrade savepoint, upgrade from the latest
    /// committed checkpoint instead (as `last-state`), and say so in status and events.
    /// Unset: keep retrying, the running job untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_to_last_state_after: Option<u32>,
}

/// The autoscaler's settings (docs/autoscaling.md); every field has a default.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSettings {
    /// Fewest containers (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_parallelism: Option<u32>,
    /// Most containers (default N, the partitions: a task is never split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallelism: Option<u32>,
    /// The busy fraction the busiest container should stay under, 0.1 to 1 (default 0.7): the
    /// headroom left for bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub target_utilization: Option<f64>,
    /// The time in which a backlog should be worked off on top of the input (duration, default
    /// `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_time: Option<String>,
    /// How long every recommendation must agree before P changes (duration, default `3m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window: Option<String>,
    /// After a change of P, no other change for this long; at its end the change is verified
    /// and rolled back if the job does not keep up (duration, default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}

/// Where a new job starts, and how savepoints are restored.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// URL of a savepoint directory for the first deployment of this StreamJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// Allow starting with empty state when a savepoint does not fit the (changed) task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_state_drop: bool,
    /// Start every input partition at offset 0 when restoring `savepoint`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_offsets: bool,
}

impl RestoreFrom {
    /// Nothing set (left out of a recorded deployment).
    pub fn is_unset(&self) -> bool {
        *self == RestoreFrom::default()
    }
}

/// `running` or `suspended`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Pods run.
    #[default]
    Running,
    /// State saved (per the upgrade mode), no pods.
    Suspended,
}

/// What deleting the StreamJob does beyond removing its pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionPolicy {
    /// Take a savepoint before the pods go (its URL is reported in an event). Adds a finalizer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_savepoint: bool,
    /// The job's data in its checkpoint store: `retain` (default) keeps checkpoints and
    /// savepoints; `delete` removes them once the workers are gone (a finalizer holds the
    /// StreamJob until then), except the final savepoint, `restoreFrom.savepoint` and
    /// `retainSavepoints`.
    #[serde(default)]
    pub checkpoint_data: DataRetention,
    /// Savepoints `checkpointData: delete` keeps (URLs as in `status.savepoints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub retain_savepoints: Vec<String>,
}

/// What happens to stored checkpoints when a StreamJob is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataRetention {
    /// Keep them (restore a new job from them with `restoreFrom` or `cairn-worker savepoint`).
    #[default]
    Retain,
    /// Delete them (checkpoints, SST files, stateless epochs, savepoints) with a one-off pod
    /// running `cairn-worker store purge` with the job's own image, credentials and volumes.
    Delete,
}

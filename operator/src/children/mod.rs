//! Step 3 of the reconcile pipeline: pure functions from a recorded [`Deployment`] (and its
//! [`PodDocument`]) to each child object. No client, no clock, no randomness: the same input gives the same objects, which the
//! unit tests compare field by field.
//!
//! Children: a Secret with the control-API token, a ConfigMap with the job spec the workers run,
//! a headless Service (stable DNS names: containers find the coordinator at `<job>-0.<job>`),
//! the worker StatefulSet, with `standby: true` the standbys' StatefulSet, and a
//! PodDisruptionBudget over both.
//!
//! Why a StatefulSet and not bare pods: container K of the job must be the same K after a pod is
//! recreated (its pod index becomes `--container K`, and pod 0 is the coordinator whose DNS name
//! the others dial); a StatefulSet gives stable names and indexes, restarts lost pods without
//! the operator (checkpointing and recovery keep working while the operator is down), and
//! per-pod claims for `persistentVolumeClaim` state. Its own rolling update is not used
//! (`OnDelete`): a job must never run two specs at once, so the operator replaces the whole set
//! after a savepoint.

mod affinity;
mod config_map;
pub mod housekeeping;
mod labels;
mod pdb;
mod secret;
mod service;
mod standby;
mod stateful_set;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub use affinity::{affinity, HOSTNAME_TOPOLOGY};
pub use cairn_contract::pod::{CONTROL_PORT, COORDINATOR_PORT, JOB_FILE, JOB_KEY, METRICS_PORT};
pub use config_map::config_map;
pub use housekeeping::{housekeeping_job, Housekeeping};
pub use labels::{
    child_labels, job_pods, job_pods_string, selector, selector_string, standby_labels,
    standby_selector, APP_LABEL, JOB_LABEL, MANAGED_BY, POD_INDEX_LABEL, STANDBY_APP, WORKER_APP,
};
pub use pdb::pod_disruption_budget;
pub use secret::{secret, TOKEN_KEY};
pub use service::service;
pub use standby::{standby_stateful_set, FIRST_STANDBY};
pub use stateful_set::stateful_set;

use crate::crd::{Deployment, StreamJob};
use crate::pods::PodDocument;
use kube::Resource;

/// The StreamJob that owns the children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Name (also the name of the Service and StatefulSet).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID, for owner references.
    pub uid: String,
}

impl Owner {
    /// Metadata of a child called `name`: namespace, labels, and a controller owner reference
    /// so the garbage collector removes it with the StreamJob.
    pub fn child_meta(&self, name: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(child_labels(&self.name)),
            owner_references: Some(vec![OwnerReference {
                api_version: StreamJob::api_version(&()).into(),
                kind: StreamJob::kind(&()).into(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        }
    }

    /// Name of the ConfigMap holding the job spec.
    pub fn config_map_name(&self) -> String {
        format!("{}-job", self.name)
    }

    /// Name of the Secret holding the control-API token.
    pub fn secret_name(&self) -> String {
        format!("{}-control", self.name)
    }

    /// Name of the standbys' StatefulSet (`standby: true`).
    pub fn standby_set_name(&self) -> String {
        standby_set_name(&self.name)
    }
}

/// Name of the standbys' StatefulSet of job `name`. A StreamJob called `<name>-standby` would
/// want the same name for its workers; the API server refuses whichever set comes second (a
/// StatefulSet's selector cannot change), and the reconcile error says so.
pub fn standby_set_name(name: &str) -> String {
    format!("{name}-standby")
}

/// Every child of a running job. `apply` destructures it without `..`, so a child added here
/// and forgotten there is a compile error.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// Control-API token (created once, never overwritten).
    pub secret: Secret,
    /// Job spec.
    pub config_map: ConfigMap,
    /// Headless Service.
    pub service: Service,
    /// Worker pods; `None` when the job is suspended or being replaced.
    pub stateful_set: Option<StatefulSet>,
    /// Standby pods; present with the workers when the job has `standby: true`.
    pub standby_set: Option<StatefulSet>,
    /// Disruption budget; present with the StatefulSet.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Builds every child of `deployment`, whose recorded pod document is `job`; `with_workers`
/// false leaves out the StatefulSets and PDB (suspended, or between the old and the new pods of
/// an upgrade).
pub fn render(
    job: &PodDocument,
    deployment: &Deployment,
    owner: &Owner,
    token: &str,
    with_workers: bool,
) -> Children {
    Children {
        secret: secret(owner, token),
        config_map: config_map(job, deployment, owner),
        service: service(owner),
        stateful_set: with_workers.then(|| stateful_set(job, deployment, owner)),
        standby_set: with_workers
            .then(|| standby_stateful_set(job, deployment, owner))
            .flatten(),
        pdb: with_workers.then(|| pod_disruption_budget(owner)),
    }
}

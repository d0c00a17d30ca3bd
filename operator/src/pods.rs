//! What the worker pods of a deployment run, as one document: the validated job with every
//! default applied and the pod settings with the operator's defaults written in.
//!
//! It is built once, by validation, from the desired spec; recorded in status
//! (`status.deployed.pods`, `lastGood`, an operation's `target`) when a deployment is made; and
//! read back from there as it was written. A recorded document is never validated again, so an
//! operator with other defaults or other rules rebuilds exactly the pods it recorded. Its
//! fingerprint is the deployment's one hash: equal hashes need no new pods, the pods carry it
//! (annotation and `--deployment`), and the job reports it back in `/v1/status`.

use cairn_contract::JobSpec;
use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crd::{PodOverrides, PullPolicy, StateVolume};

/// Everything the worker pods run. Savepoint settings, the upgrade mode, nonces and the desired
/// state are not part of it: changing them needs no new pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDocument {
    /// The job as the worker reads it (name set, `state.dir` on the state volume), without its
    /// `restore` section: how a deployment starts is recorded next to the document.
    pub job: JobSpec,
    /// Worker image.
    pub image: String,
    /// Pull policy, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Pod resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod overrides (the service account is resolved into `service_account`).
    #[serde(default)]
    pub pod: PodOverrides,
    /// State volume.
    #[serde(default)]
    pub state_volume: StateVolume,
    /// Service account of the worker pods.
    pub service_account: String,
    /// Secret exposed as environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

impl PodDocument {
    /// The document as recorded in status.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a pod document serialises")
    }

    /// The deployment hash: 16 hex digits of the contract's fingerprint of the document.
    pub fn hash(&self) -> String {
        cairn_contract::fingerprint(&self.to_value())
    }

    /// The document with the job's P and N blanked out: equal for two documents that differ
    /// only in scale (a rescale or a repartition, not an upgrade).
    pub fn without_scale(&self) -> Value {
        let mut doc = self.to_value();
        doc["job"]["parallelism"] = 0.into();
        doc["job"]["input"]["partitions"] = 0.into();
        doc
    }

    /// Reads a document recorded in status at `field`.
    pub fn read(field: &'static str, recorded: &Value) -> Result<PodDocument, RecordedError> {
        serde_json::from_value(recorded.clone()).map_err(|source| RecordedError { field, source })
    }
}

/// A recorded pod document this operator cannot read: written by another operator version, or
/// edited by hand.
#[derive(Debug, thiserror::Error)]
#[error("{field} is not a pod document this operator version reads ({source}); run the operator version that wrote it, or clear status.deployed, status.lastGood and status.operation (kubectl edit sj <name> --subresource=status) to deploy the current spec")]
pub struct RecordedError {
    /// Where it is, e.g. `status.deployed.pods`.
    pub field: &'static str,
    /// Why it does not read.
    #[source]
    pub source: serde_json::Error,
}

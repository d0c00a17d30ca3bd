//! The ConfigMap with the job document the workers run: the recorded job plus how its
//! deployment starts (`restore`, the store's epoch), as the YAML document `cairn-worker run`
//! reads.

use std::collections::BTreeMap;

use cairn_contract::pod::JOB_KEY;
use k8s_openapi::api::core::v1::ConfigMap;

use super::Owner;
use crate::crd::Deployment;
use crate::pods::PodDocument;

/// The job ConfigMap of `deployment`, whose recorded pod document is `job`.
pub fn config_map(job: &PodDocument, deployment: &Deployment, owner: &Owner) -> ConfigMap {
    ConfigMap {
        metadata: owner.child_meta(owner.config_map_name()),
        data: Some(BTreeMap::from([(
            JOB_KEY.into(),
            deployment.worker_document(job).to_yaml(),
        )])),
        ..Default::default()
    }
}

//! The ConfigMap with the job spec the workers run: the validated job plus how it starts
//! (`restore`), as the YAML document `cairn-worker run` reads.

use std::collections::BTreeMap;

use cairn_contract::deploy::{worker_document, Start};
use cairn_contract::pod::JOB_KEY;
use k8s_openapi::api::core::v1::ConfigMap;

use super::Owner;
use crate::validate::ValidatedJob;

/// The job ConfigMap.
pub fn config_map(job: &ValidatedJob, owner: &Owner, start: &Start) -> ConfigMap {
    ConfigMap {
        metadata: owner.child_meta(owner.config_map_name()),
        data: Some(BTreeMap::from([(
            JOB_KEY.into(),
            worker_document(&job.job, &job.first_restore(), start).to_yaml(),
        )])),
        ..Default::default()
    }
}

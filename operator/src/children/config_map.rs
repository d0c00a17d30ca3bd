//! The ConfigMap with the job spec the workers run: the validated job plus how it starts
//! (`restore`), as the YAML document `cairn-worker run` reads.

use std::collections::BTreeMap;

use cairn_contract::pod::JOB_KEY;
use cairn_contract::{JobSpec, RestoreSpec};
use k8s_openapi::api::core::v1::ConfigMap;

use super::{Owner, Start};
use crate::validate::ValidatedJob;

/// The job document of a deployment: `restore.savepoint` names the savepoint to start from
/// (the worker uses it until the job commits a checkpoint of its own), and a stateless restart
/// moves the store to a fresh `epoch-<n>` sub-path.
pub fn job_document(job: &ValidatedJob, start: &Start) -> JobSpec {
    let mut spec = job.job.clone();
    if start.state_epoch > 0 {
        let store = spec.checkpoint.store.trim_end_matches('/');
        spec.checkpoint.store = format!("{store}/epoch-{}", start.state_epoch);
    }
    let initial = start.savepoint.is_some() && start.savepoint == job.restore_from.savepoint;
    spec.restore = RestoreSpec {
        savepoint: start.savepoint.clone(),
        reset_offsets: initial && job.restore_from.reset_offsets,
        allow_state_drop: start.savepoint.is_some() && job.restore_from.allow_state_drop,
    };
    spec
}

/// The job ConfigMap.
pub fn config_map(job: &ValidatedJob, owner: &Owner, start: &Start) -> ConfigMap {
    ConfigMap {
        metadata: owner.child_meta(owner.config_map_name()),
        data: Some(BTreeMap::from([(
            JOB_KEY.into(),
            job_document(job, start).to_yaml(),
        )])),
        ..Default::default()
    }
}

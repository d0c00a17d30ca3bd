//! What kind of change a new spec is, relative to the deployed one. Pure; unit-tested from YAML
//! fixtures.

use crate::crd::OperationKind;
use crate::validate::ValidatedJob;

/// A spec change, as the lifecycle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The pods run exactly what they would run after the change (e.g. only savepoint settings,
    /// the upgrade mode or the timeout changed).
    None,
    /// Only P changed: whole tasks move between pods.
    Rescale,
    /// N changed (P may have changed too): state is re-split by `hash % N'`.
    Repartition,
    /// Anything else the pods run: image, task, config, resources, pod settings...
    Upgrade,
}

impl Change {
    /// The operation that carries the change out.
    pub fn operation(self) -> Option<OperationKind> {
        match self {
            Change::None => None,
            Change::Rescale => Some(OperationKind::Rescale),
            Change::Repartition => Some(OperationKind::Repartition),
            Change::Upgrade => Some(OperationKind::Upgrade),
        }
    }
}

/// Classifies moving from `deployed` to `desired`.
pub fn classify(deployed: &ValidatedJob, desired: &ValidatedJob) -> Change {
    if deployed.deploy_hash == desired.deploy_hash {
        return Change::None;
    }
    let (old, new) = (&deployed.job, &desired.job);
    let partitions_changed = old.input.partitions() != new.input.partitions();
    // Compare everything but N and P: if that is equal, only N and/or P moved.
    let mut old_rest = deployed.clone();
    let mut new_rest = desired.clone();
    old_rest.job.parallelism = 0;
    new_rest.job.parallelism = 0;
    set_partitions(&mut old_rest, 0);
    set_partitions(&mut new_rest, 0);
    old_rest.deploy_hash.clear();
    new_rest.deploy_hash.clear();
    let same_otherwise = old_rest.job == new_rest.job
        && old_rest.image == new_rest.image
        && old_rest.pull_policy == new_rest.pull_policy
        && old_rest.resources == new_rest.resources
        && old_rest.pod == new_rest.pod
        && old_rest.state_volume == new_rest.state_volume
        && old_rest.service_account == new_rest.service_account
        && old_rest.credentials_secret == new_rest.credentials_secret;
    match (same_otherwise, partitions_changed) {
        (true, true) => Change::Repartition,
        (true, false) => Change::Rescale,
        (false, _) => Change::Upgrade,
    }
}

fn set_partitions(job: &mut ValidatedJob, n: u32) {
    // Serialise, set `input.partitions`, parse back: the input types live in the spec crate and
    // may grow variants; this stays correct for all of them.
    let mut value = serde_json::to_value(&job.job.input).expect("input serialises");
    value["partitions"] = serde_json::json!(n);
    if let Ok(input) = serde_json::from_value(value) {
        job.job.input = input;
    }
}

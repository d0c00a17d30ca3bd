//! What kind of change a new spec is, relative to the deployed one. Pure; unit-tested from YAML
//! fixtures.

use crate::crd::OperationKind;
use crate::validate::{pod_document, ValidatedJob};

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
    let partitions_changed = deployed.job.input.partitions() != desired.job.input.partitions();
    // Compare everything the pods run but N and P: if that is equal, only N and/or P moved.
    let without_scale = |v: &ValidatedJob| {
        let mut doc = pod_document(v);
        doc["job"]["parallelism"] = 0.into();
        doc["job"]["input"]["partitions"] = 0.into();
        doc
    };
    match (
        without_scale(deployed) == without_scale(desired),
        partitions_changed,
    ) {
        (true, true) => Change::Repartition,
        (true, false) => Change::Rescale,
        (false, _) => Change::Upgrade,
    }
}

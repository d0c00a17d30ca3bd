//! What kind of change a new spec is, relative to the deployed one. Pure; unit-tested from YAML
//! fixtures.

use crate::crd::OperationKind;
use crate::pods::PodDocument;

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

/// Classifies moving from the deployed pod document to the desired one.
pub fn classify(deployed: &PodDocument, desired: &PodDocument) -> Change {
    if deployed.hash() == desired.hash() {
        return Change::None;
    }
    let partitions_changed = deployed.job.input.partitions() != desired.job.input.partitions();
    // Compare everything the pods run but N and P: if that is equal, only N and/or P moved.
    match (
        deployed.without_scale() == desired.without_scale(),
        partitions_changed,
    ) {
        (true, true) => Change::Repartition,
        (true, false) => Change::Rescale,
        (false, _) => Change::Upgrade,
    }
}

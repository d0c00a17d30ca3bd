//! The PodDisruptionBudget: voluntary disruptions (node drains) take one pod of the job at a time.
//! Losing a pod restarts only its tasks from the last checkpoint; blocking drains entirely
//! (`maxUnavailable: 0`) would leave nodes undrainable, which operators of clusters hate more.
//!
//! It covers the standbys' pods too: active and standby roles swap between the two
//! StatefulSets after every takeover, so "the workers' set" is not "the active pods", and a drain
//! that took an active pod while its standby was away would lose the warm takeover. (A standby
//! pod that cannot be scheduled counts as unavailable and holds evictions back until it runs.)

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{job_pods, Owner};

/// The job's disruption budget.
pub fn pod_disruption_budget(owner: &Owner) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.child_meta(owner.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(job_pods(&owner.name)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

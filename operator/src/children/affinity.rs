//! Where the pods of a job with warm standbys go: a standby on the node of its active pod would
//! die with it, so pods of the same container (the same `apps.kubernetes.io/pod-index`, active
//! or standby) prefer different nodes.
//!
//! *Preferred*, not required: a one-node cluster (kind, a laptop), or nodes full for a while,
//! must still run the job; a standby next to its active pod still covers a crash of the process
//! or the container, only not the node's. A user who wants node failures covered or nothing adds
//! the same term as *required* in `spec.podTemplate.affinity` (docs/operator.md#warm-standbys);
//! that term is kept, and this one is added next to it.
//!
//! `matchLabelKeys` (GA in Kubernetes 1.33) takes the pod index from the pod being scheduled, so
//! one term in the shared pod template means "the pods of my own container".

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
};

use super::{job_pods, Owner, POD_INDEX_LABEL};
use crate::pods::PodDocument;

/// Node label whose values are the nodes.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
/// Weight of the preferred term: the most a preference weighs.
pub const WEIGHT: i32 = 100;

/// The pods' affinity: the user's (`spec.podTemplate.affinity`), plus, with standbys, the
/// preferred anti-affinity between the pods of one container.
pub fn affinity(job: &PodDocument, owner: &Owner) -> Option<Affinity> {
    let mut affinity = job.pod.affinity.clone();
    if job.job.standby {
        affinity
            .get_or_insert_with(Default::default)
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(apart_from_my_container(owner));
    }
    affinity
}

/// Prefer a node without another pod of this job's container (same pod index).
fn apart_from_my_container(owner: &Owner) -> WeightedPodAffinityTerm {
    WeightedPodAffinityTerm {
        weight: WEIGHT,
        pod_affinity_term: PodAffinityTerm {
            topology_key: HOSTNAME_TOPOLOGY.into(),
            label_selector: Some(job_pods(&owner.name)),
            match_label_keys: Some(vec![POD_INDEX_LABEL.into()]),
            ..Default::default()
        },
    }
}

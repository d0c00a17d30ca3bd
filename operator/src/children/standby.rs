//! The warm standbys' StatefulSet (`standby: true`, docs/operator.md#warm-standbys):
//! `<job>-standby`, P-1 pods numbered 1..P-1 (`ordinals.start: 1`), so the pod index, and with it
//! `CAIRN_CONTAINER`, is the container each one stands by for. Container 0 runs in the
//! coordinator's process, which has no standby.
//!
//! Its pods are the workers' pods exactly (image, args, environment, job ConfigMap, token,
//! volumes, probes, the deployment hash): a process started like container K's becomes its
//! standby when K is already connected at the coordinator, and takes K over when the active one
//! dies; the dead one, restarted, finds K taken and stands by in its turn. So roles swap between
//! the two sets' pods, and neither set is "the active one". Only the labels differ (see
//! [`super::labels`]): the sets never select each other's pods, and the headless Service, whose
//! DNS names pod 0 is reached by, selects the workers alone. No `serviceName`: nothing dials a
//! standby by name (the coordinator learns a standby's host name from its own hello).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetOrdinals};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{standby_labels, standby_selector, stateful_set, Owner};
use crate::crd::Deployment;
use crate::pods::PodDocument;

/// The first container with a standby.
pub const FIRST_STANDBY: u32 = 1;

/// The standby StatefulSet of `deployment`, or `None` when its job has no standbys.
pub fn standby_stateful_set(
    job: &PodDocument,
    deployment: &Deployment,
    owner: &Owner,
) -> Option<StatefulSet> {
    if !job.job.standby {
        return None;
    }
    let mut set = stateful_set(job, deployment, owner);
    set.metadata.name = Some(owner.standby_set_name());
    let spec = set.spec.as_mut().expect("the builder sets a spec");
    spec.replicas = Some(job.job.parallelism.saturating_sub(FIRST_STANDBY) as i32);
    spec.ordinals = Some(StatefulSetOrdinals {
        start: Some(FIRST_STANDBY as i32),
    });
    spec.service_name = None;
    spec.selector = LabelSelector {
        match_labels: Some(standby_selector(&owner.name)),
        ..Default::default()
    };
    let template = spec.template.metadata.get_or_insert_with(Default::default);
    template
        .labels
        .get_or_insert_with(Default::default)
        .extend(standby_labels(&owner.name));
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        claim.metadata.labels = Some(standby_labels(&owner.name));
    }
    Some(set)
}

//! Labels of every child: how the operator finds its children (leftover cleanup, pod status) and
//! how each StatefulSet selects its pods.
//!
//! A job has up to two StatefulSets: the workers (`<job>`, pods 0..P-1) and, with
//! `standby: true`, the warm standbys (`<job>-standby`, pods 1..P-1). Their pods differ in
//! `app.kubernetes.io/name` (`cairn-worker` / `cairn-worker-standby`), so neither set's selector
//! ever matches the other's pods, and the headless Service (which selects the workers only)
//! gives DNS names to the workers alone. Selectors are immutable in a StatefulSet: the workers'
//! one stays what it always was.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Label carrying the owning StreamJob's name.
pub const JOB_LABEL: &str = "cairn.dev/job";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "cairn-operator";
/// The label that tells the workers' pods from the standbys' pods.
pub const APP_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/name` of the workers' pods.
pub const WORKER_APP: &str = "cairn-worker";
/// `app.kubernetes.io/name` of the standbys' pods.
pub const STANDBY_APP: &str = "cairn-worker-standby";
/// The pod index label the StatefulSet controller puts on every pod (`CAIRN_CONTAINER`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Labels of every child of job `name`.
pub fn child_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_LABEL.into(), WORKER_APP.into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (JOB_LABEL.into(), name.into()),
    ])
}

/// Labels of the standby pods of job `name`: the children's, with the standbys' app name.
pub fn standby_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = child_labels(name);
    labels.insert(APP_LABEL.into(), STANDBY_APP.into());
    labels
}

/// The worker pods' selector (immutable in a StatefulSet: keep it minimal).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_LABEL.into(), WORKER_APP.into()),
        (JOB_LABEL.into(), name.into()),
    ])
}

/// The standby pods' selector: disjoint from [`selector`] by the app name.
pub fn standby_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_LABEL.into(), STANDBY_APP.into()),
        (JOB_LABEL.into(), name.into()),
    ])
}

/// The worker selector as a label-selector string (`status.selector`, the scale subresource:
/// P pods).
pub fn selector_string(name: &str) -> String {
    selector(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every pod of job `name`, workers and standbys: the disruption budget and the standbys'
/// anti-affinity.
pub fn job_pods(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(JOB_LABEL.into(), name.into())])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: APP_LABEL.into(),
            operator: "In".into(),
            values: Some(vec![WORKER_APP.into(), STANDBY_APP.into()]),
        }]),
    }
}

/// [`job_pods`] as a label-selector string (pod listings).
pub fn job_pods_string(name: &str) -> String {
    format!("{APP_LABEL} in ({WORKER_APP},{STANDBY_APP}),{JOB_LABEL}={name}")
}

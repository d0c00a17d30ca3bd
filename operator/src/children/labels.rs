//! Labels of every child: how the operator finds its children (leftover cleanup, pod status) and
//! how the StatefulSet selects its pods.

use std::collections::BTreeMap;

/// Label carrying the owning StreamJob's name.
pub const JOB_LABEL: &str = "cairn.dev/job";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "cairn-operator";

/// Labels of every child of job `name`.
pub fn child_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "cairn-worker".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (JOB_LABEL.into(), name.into()),
    ])
}

/// The worker pods' selector (immutable in a StatefulSet: keep it minimal).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "cairn-worker".into()),
        (JOB_LABEL.into(), name.into()),
    ])
}

/// The selector as a label-selector string (`status.selector`, pod listings).
pub fn selector_string(name: &str) -> String {
    selector(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

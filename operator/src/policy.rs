//! Step 2b of the reconcile pipeline: what the cluster's operator settings allow a StreamJob to
//! put into its worker pods ([`WorkloadPolicy`]). Pure: the only outside fact, which referenced
//! Secrets carry the access label, is read by `reconcile` and passed in.
//!
//! Whoever can write a StreamJob chooses the worker pods' image, service account, volumes and
//! environment. Unchecked, that is the power to create any pod in the namespace (a `hostPath`
//! volume reaches the node, another service account carries other API rights) and to read any
//! of its Secrets. The checks here bound it; a violation stops the reconcile before any child
//! object is created.

use std::collections::BTreeSet;

use crate::config::{SecretAccess, WorkloadPolicy, SECRET_ACCESS_LABEL, SECRET_ACCESS_VALUE};
use crate::pods::PodDocument;

/// Every way a StreamJob breaks the policy, one line each: the field, its value, and the
/// operator setting (flag and chart value) that would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the operator's policy: {}", .problems.join("; "))]
pub struct PolicyViolation {
    /// One line per problem, each starting with the field path (`spec.image: ...`).
    pub problems: Vec<String>,
}

/// A Secret a StreamJob refers to, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Field path, e.g. `spec.podTemplate.env[0].valueFrom.secretKeyRef`.
    pub field: String,
    /// The Secret's name.
    pub name: String,
}

/// Every Secret the worker pods of `job` would read: `credentialsSecret` (all keys as
/// environment variables), `env[].valueFrom.secretKeyRef`, and `secret` and `projected` volumes.
pub fn secret_refs(job: &PodDocument) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    if let Some(name) = &job.credentials_secret {
        refs.push(SecretRef {
            field: "spec.credentialsSecret".into(),
            name: name.clone(),
        });
    }
    for (i, env) in job.pod.env.iter().enumerate() {
        if let Some(key) = env
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            refs.push(SecretRef {
                field: format!("spec.podTemplate.env[{i}].valueFrom.secretKeyRef"),
                name: key.name.clone(),
            });
        }
    }
    for (i, volume) in job.pod.volumes.iter().enumerate() {
        if let Some(secret) = &volume.secret {
            refs.push(SecretRef {
                field: format!("spec.podTemplate.volumes[{i}].secret.secretName"),
                name: secret.secret_name.clone().unwrap_or_default(),
            });
        }
        let sources = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for (j, source) in sources.enumerate() {
            if let Some(secret) = &source.secret {
                refs.push(SecretRef {
                    field: format!("spec.podTemplate.volumes[{i}].projected.sources[{j}].secret"),
                    name: secret.name.clone(),
                });
            }
        }
    }
    refs
}

/// Checks `job` against `policy`. `labelled` holds the referenced Secrets that exist and carry
/// the access label (only consulted under [`SecretAccess::Labelled`]).
pub fn check(
    job: &PodDocument,
    policy: &WorkloadPolicy,
    labelled: &BTreeSet<String>,
) -> Result<(), PolicyViolation> {
    let mut problems = Vec::new();
    if !policy
        .allowed_images
        .iter()
        .any(|p| image_matches(&job.image, p))
    {
        problems.push(format!(
            "spec.image: {:?} is not an allowed worker image (allowed: {}); use one of those, or have the operator's administrator add it to --allowed-images (chart value policy.allowedImages)",
            job.image,
            list(&policy.allowed_images)
        ));
    }
    if !allowed(&policy.allowed_service_accounts, &job.service_account) {
        problems.push(format!(
            "spec.podTemplate.serviceAccountName: {:?} is not an allowed service account (allowed: {}); leave it out to use the default, or have the operator's administrator add it to --allowed-service-accounts (chart value policy.allowedServiceAccounts)",
            job.service_account,
            list(&policy.allowed_service_accounts)
        ));
    }
    for (i, volume) in job.pod.volumes.iter().enumerate() {
        for kind in volume_types(volume) {
            if !allowed(&policy.allowed_volume_types, &kind) {
                problems.push(format!(
                    "spec.podTemplate.volumes[{i}] ({:?}): volume type {kind} is not allowed (allowed: {}); use another volume type, or have the operator's administrator add it to --allowed-volume-types (chart value policy.allowedVolumeTypes)",
                    volume.name,
                    list(&policy.allowed_volume_types)
                ));
            }
            if kind == "projected" {
                service_account_tokens(i, volume, policy, &mut problems);
            }
        }
    }
    for secret in secret_refs(job) {
        match policy.secret_access {
            SecretAccess::Any => {}
            SecretAccess::None => problems.push(format!(
                "{}: Secret {:?}: StreamJobs may not use Secrets here (--secret-access none, chart value policy.secretAccess); have the operator's administrator set it to labelled",
                secret.field, secret.name
            )),
            SecretAccess::Labelled if labelled.contains(&secret.name) => {}
            SecretAccess::Labelled => problems.push(format!(
                "{}: Secret {:?} does not exist or is not labelled for StreamJobs; whoever manages it can allow it with `kubectl label secret {} {SECRET_ACCESS_LABEL}={SECRET_ACCESS_VALUE}` (or the operator's administrator can set --secret-access any, chart value policy.secretAccess)",
                secret.field, secret.name, secret.name
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyViolation { problems })
    }
}

/// Whether `image` matches `pattern`: `*` matches anything, `prefix*` images starting with
/// `prefix`, and a bare repository exactly that repository with an optional tag or digest (so
/// `cairn/worker` does not admit `cairn/worker-other`).
pub fn image_matches(image: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return image.starts_with(prefix);
    }
    match image.strip_prefix(pattern) {
        Some(rest) => rest.is_empty() || rest.starts_with(':') || rest.starts_with('@'),
        None => false,
    }
}

/// The type of each source set in a volume (normally one): the keys of its JSON form besides
/// `name`, as Kubernetes spells them. Read from the serialised form so a volume type added in a
/// later Kubernetes version is still seen (and refused unless allowed).
pub fn volume_types(volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    match serde_json::to_value(volume) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "name")
            .collect(),
        // A Volume always serialises to an object; refuse rather than wave through.
        _ => vec!["unknown".into()],
    }
}

/// A projected volume may carry a service-account token for any audience: refused unless
/// `serviceAccountToken` itself is an allowed type (an explicit opt-in beyond `projected`).
fn service_account_tokens(
    i: usize,
    volume: &k8s_openapi::api::core::v1::Volume,
    policy: &WorkloadPolicy,
    problems: &mut Vec<String>,
) {
    let sources = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten());
    for (j, source) in sources.enumerate() {
        if source.service_account_token.is_some()
            && !allowed(&policy.allowed_volume_types, "serviceAccountToken")
        {
            problems.push(format!(
                "spec.podTemplate.volumes[{i}].projected.sources[{j}].serviceAccountToken: service-account tokens are not allowed in worker pods (workers never call the Kubernetes API); remove it, or have the operator's administrator add serviceAccountToken to --allowed-volume-types (chart value policy.allowedVolumeTypes)"
            ));
        }
    }
}

fn allowed(list: &[String], value: &str) -> bool {
    list.iter().any(|a| a == "*" || a == value)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

//! Step 1: read what exists — the token Secret, the StatefulSets (workers, standbys), their
//! pods — and ask the job (through its control API) how it is doing and how a pending savepoint
//! went.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use rand::Rng;

use super::{Context, Error};
use crate::children::housekeeping::job_pods_selector;
use crate::children::{job_pods_string, Owner, CONTROL_PORT, JOB_LABEL, TOKEN_KEY};
use crate::config::{SecretAccess, SECRET_ACCESS_LABEL, SECRET_ACCESS_VALUE};
use crate::control::Endpoint;
use crate::crd::{StreamJob, StreamJobStatus};
use crate::lifecycle::{Observed, Outcome, Workers};
use crate::pods::PodDocument;
use crate::policy;

/// What fetch found.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The job's control-API token (read from its Secret, or freshly generated).
    pub token: String,
    /// The Secret exists already.
    pub token_exists: bool,
    /// Pod 0's control API, when pod 0 runs.
    pub endpoint: Option<Endpoint>,
    /// Pods and job answers.
    pub observed: Observed,
}

/// The Secrets referenced by `job` that exist and carry the access label
/// ([`crate::config::SECRET_ACCESS_LABEL`]); read (metadata only) only when the policy is
/// `labelled` and the job references any.
pub async fn labelled_secrets(
    namespace: &str,
    job: &PodDocument,
    ctx: &Context,
) -> Result<BTreeSet<String>, Error> {
    let mut labelled = BTreeSet::new();
    if ctx.config.policy.secret_access != SecretAccess::Labelled {
        return Ok(labelled);
    }
    let names: BTreeSet<String> = policy::secret_refs(job)
        .into_iter()
        .map(|r| r.name)
        .collect();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in names {
        let meta = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(Error::kube(format!("reading the labels of Secret {name}")))?;
        let allowed = meta.is_some_and(|m| {
            m.labels().get(SECRET_ACCESS_LABEL).map(String::as_str) == Some(SECRET_ACCESS_VALUE)
        });
        if allowed {
            labelled.insert(name);
        }
    }
    Ok(labelled)
}

/// The owner of the children.
pub fn owner(sj: &StreamJob, namespace: &str) -> Owner {
    Owner {
        name: sj.name_any(),
        namespace: namespace.into(),
        uid: sj.uid().unwrap_or_default(),
    }
}

/// Reads the children and the job.
pub async fn fetch(
    sj: &StreamJob,
    namespace: &str,
    status: &StreamJobStatus,
    ctx: &Context,
) -> Result<Fetched, Error> {
    let owner = owner(sj, namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_opt(&owner.secret_name())
        .await
        .map_err(Error::kube("reading the token Secret"))?;
    let stored = existing.as_ref().and_then(|s| {
        s.data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
    });
    let token_exists = stored.is_some();
    let token = stored.unwrap_or_else(new_token);

    // One listing finds both sets (workers, standbys): no extra call for the standbys.
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let sets: Vec<String> = sets
        .list_metadata(&ListParams::default().labels(&format!("{JOB_LABEL}={}", owner.name)))
        .await
        .map_err(Error::kube("listing the StatefulSets"))?
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&job_pods_string(&owner.name)))
        .await
        .map_err(Error::kube("listing worker pods"))?
        .items;
    let mut workers = workers(sets.contains(&owner.name), &pods);
    workers.standby_set = sets.contains(&owner.standby_set_name());
    let endpoint = pods
        .iter()
        .find(|p| p.name_any() == format!("{}-0", owner.name))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse::<IpAddr>().ok())
        .map(|ip| Endpoint {
            addr: SocketAddr::new(ip, CONTROL_PORT),
            token: token.clone(),
        });

    let mut observed = Observed {
        workers,
        ..Default::default()
    };
    if let Some(at) = &endpoint {
        match ctx.control.status(at).await {
            Ok(report) => observed.report = Some(report),
            Err(e) => tracing::debug!(job = %owner.name, error = %e, "job status unavailable"),
        }
        if let Some(id) = status
            .operation
            .as_ref()
            .and_then(|o| o.control_operation.as_deref())
        {
            observed.operation = Some(ctx.control.operation(at, id).await);
        }
    }
    // No pod 0 while a savepoint is pending: `observed.operation` stays empty, which the
    // lifecycle counts as a failed attempt ("no answer from the job").
    observed.housekeeping = housekeeping(namespace, status, ctx).await?;
    Ok(Fetched {
        token,
        token_exists,
        endpoint,
        observed,
    })
}

/// The housekeeping Jobs named in status and how they are doing: read only while one is
/// named, so a job without store work costs no call.
async fn housekeeping(
    namespace: &str,
    status: &StreamJobStatus,
    ctx: &Context,
) -> Result<BTreeMap<String, Outcome>, Error> {
    let names = status
        .disposal
        .as_ref()
        .and_then(|d| d.job.clone())
        .into_iter()
        .chain(
            status
                .operation
                .as_ref()
                .and_then(|o| o.housekeeping.clone()),
        );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut seen = BTreeMap::new();
    for name in names {
        let Some(job) = jobs
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("reading Job {name}")))?
        else {
            continue;
        };
        let its_pods = pods
            .list(&ListParams::default().labels(&job_pods_selector(&name)))
            .await
            .map_err(Error::kube(format!("listing the pods of Job {name}")))?
            .items;
        seen.insert(name, outcome(&job, &its_pods));
    }
    Ok(seen)
}

/// A housekeeping Job's outcome from its status and its pod: the pod's termination message is
/// the command's one-line reason ([`cairn_contract::housekeeping::TERMINATION_LOG`]).
pub fn outcome(job: &Job, pods: &[Pod]) -> Outcome {
    let status = job.status.clone().unwrap_or_default();
    let containers: Vec<_> = pods
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten())
        .collect();
    if status.succeeded.unwrap_or(0) > 0 {
        return Outcome::Succeeded;
    }
    let terminated = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .find(|t| t.exit_code != 0);
    let job_failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if status.failed.unwrap_or(0) > 0 || job_failed.is_some() || terminated.is_some() {
        let message = terminated
            .and_then(|t| {
                t.message
                    .as_deref()
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(|m| format!("{} (exit code {})", bounded(m), t.exit_code))
                    .or_else(|| Some(format!("exit code {}", t.exit_code)))
            })
            .or_else(|| {
                job_failed.map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.clone().unwrap_or_default(),
                        bounded(c.message.as_deref().unwrap_or_default())
                    )
                })
            })
            .unwrap_or_else(|| "the pod failed".into());
        return Outcome::Failed { message };
    }
    let stuck = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| STUCK.contains(&w.reason.as_deref().unwrap_or_default()))
        .map(|w| {
            format!(
                "its pod cannot start: {}: {}",
                w.reason.clone().unwrap_or_default(),
                bounded(w.message.as_deref().unwrap_or_default())
            )
        });
    Outcome::Running { stuck }
}

/// Waiting reasons of a container that will not start by itself.
const STUCK: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "InvalidImageName",
    "CreateContainerError",
];

/// A message from a pod, cut to what fits in a condition (the termination message is already
/// at most 4 KiB; a Job condition's is the API server's).
fn bounded(message: &str) -> String {
    const MAX: usize = 1024;
    match message.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// Summarises the pods of both sets (workers and standbys): counts, restarts, and why they fail
/// if they do.
pub fn workers(stateful_set: bool, pods: &[Pod]) -> Workers {
    let mut w = Workers {
        stateful_set,
        pods: pods.len() as u32,
        ..Default::default()
    };
    let mut failing = Vec::new();
    for pod in pods {
        let Some(status) = &pod.status else { continue };
        for cs in status.container_statuses.iter().flatten() {
            // Saturating: restart counts come from pod status, which is not ours.
            w.restarts = w.restarts.saturating_add(cs.restart_count);
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(waiting) = waiting.filter(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some(
                        "CrashLoopBackOff"
                            | "ErrImagePull"
                            | "ImagePullBackOff"
                            | "CreateContainerConfigError"
                            | "InvalidImageName"
                    )
                )
            }) {
                failing.push(format!(
                    "{}: {}: {}",
                    pod.name_any(),
                    waiting.reason.clone().unwrap_or_default(),
                    waiting.message.clone().unwrap_or_default()
                ));
            } else if cs.restart_count >= 3 {
                let last = cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| format!("exit code {}", t.exit_code))
                    .unwrap_or_else(|| "restarting".into());
                failing.push(format!(
                    "{}: restarted {} times ({last})",
                    pod.name_any(),
                    cs.restart_count
                ));
            }
        }
    }
    if !failing.is_empty() {
        w.failing = Some(failing.join("; "));
    }
    w
}

/// 32 random bytes as hex: the control-API token of a new job.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

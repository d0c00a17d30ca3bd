//! One-off pods that work on a job's checkpoint store (`cairn-worker store …`, see
//! [`cairn_contract::housekeeping`]): disposing of pruned savepoints, purging a deleted job's
//! data, checking before an upgrade that the new spec can restore the current state.
//!
//! Each is a Kubernetes Job of one pod that runs once (`backoffLimit: 0`: the operator counts
//! attempts and backs off itself, so a failure is seen at once with its message). The pod reaches
//! the store exactly as the job's workers do: the same image, credentials Secret, extra volumes and
//! environment, service account and placement, which is the point — a disposal or a check works
//! wherever the workers' own access works, for `file://` stores on a shared volume as for S3, and
//! whether or not the job's pods run (suspended, finished, being deleted). The operator itself
//! never holds store credentials.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::stateful_set::{container_security, credentials_env, literal_env, pod_security};
use super::{child_labels, Owner, APP_LABEL};
use crate::pods::PodDocument;

/// `app.kubernetes.io/name` of housekeeping pods: not a worker (`cairn-worker`), so no listing
/// or selector of worker pods ever sees them.
pub const HOUSEKEEPING_APP: &str = "cairn-housekeeping";
/// Label naming what a housekeeping pod does (`dispose`, `purge`, `check-restore`).
pub const HOUSEKEEPING_LABEL: &str = "cairn.dev/housekeeping";
/// Longest a housekeeping pod may run; the operator gives up on it (a failed attempt) then.
pub const DEADLINE_SECONDS: i64 = 600;
/// A finished Job is removed by the operator; this is the backstop if it is not.
const TTL_AFTER_FINISHED_SECONDS: i32 = 3600;

/// What a housekeeping pod does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Housekeeping {
    /// `cairn-worker store dispose`.
    Dispose,
    /// `cairn-worker store purge`.
    Purge,
    /// `cairn-worker store check-restore`.
    CheckRestore,
}

impl Housekeeping {
    /// The label value and name part.
    pub fn as_str(self) -> &'static str {
        match self {
            Housekeeping::Dispose => "dispose",
            Housekeeping::Purge => "purge",
            Housekeeping::CheckRestore => "check-restore",
        }
    }
}

/// The name of a housekeeping Job of `job`: `<job>-<kind>-<tag>`, where `tag` tells attempts
/// apart (a Job being deleted must not be mistaken for the next attempt). Shortened to fit the
/// 63 characters of the `job-name` label its pod carries.
pub fn job_name(job: &str, kind: Housekeeping, tag: &str) -> String {
    let suffix = format!("-{}-{tag}", kind.as_str());
    let room = 63usize.saturating_sub(suffix.len());
    let base: String = job.chars().take(room).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// One housekeeping pod to run.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The Job's name ([`job_name`]).
    pub name: &'a str,
    /// What it does.
    pub kind: Housekeeping,
    /// Whose settings it runs with: a recorded or the desired pod document.
    pub pods: &'a PodDocument,
    /// The `cairn-worker` arguments.
    pub args: &'a [String],
    /// Extra environment.
    pub env: &'a [(&'static str, String)],
}

/// The Job of `run`.
pub fn housekeeping_job(owner: &Owner, run: Run) -> Job {
    let Run {
        name,
        kind,
        pods,
        args,
        env,
    } = run;
    let mut labels = child_labels(&owner.name);
    labels.insert(APP_LABEL.into(), HOUSEKEEPING_APP.into());
    labels.insert(HOUSEKEEPING_LABEL.into(), kind.as_str().into());
    let mut pod_labels = pods.pod.labels.clone();
    pod_labels.extend(labels.clone());
    let mut meta = owner.child_meta(name);
    meta.labels = Some(labels);
    let mut container_env: Vec<_> = pods.pod.env.clone();
    container_env.extend(env.iter().map(|(k, v)| literal_env(k, v)));
    // The root filesystem is read-only; a scratch directory for whatever a client library
    // wants to write.
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(pods.pod.volumes.iter().cloned());
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    mounts.extend(pods.pod.volume_mounts.iter().cloned());
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pods.pod.annotations.is_empty())
                        .then(|| pods.pod.annotations.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "store".into(),
                        image: Some(pods.image.clone()),
                        image_pull_policy: pods.pull_policy.map(|p| p.as_str().into()),
                        args: Some(args.to_vec()),
                        env: (!container_env.is_empty()).then_some(container_env),
                        env_from: credentials_env(pods),
                        volume_mounts: Some(mounts),
                        // A panic or a crash before the command wrote its line: the log's tail
                        // is the message instead.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        security_context: Some(container_security()),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    service_account_name: Some(pods.service_account.clone()),
                    automount_service_account_token: Some(false),
                    node_selector: (!pods.pod.node_selector.is_empty())
                        .then(|| pods.pod.node_selector.clone()),
                    tolerations: (!pods.pod.tolerations.is_empty())
                        .then(|| pods.pod.tolerations.clone()),
                    priority_class_name: pods.pod.priority_class_name.clone(),
                    security_context: Some(pod_security()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The label selector of the pods of housekeeping Job `name` (set by the Job controller).
pub fn job_pods_selector(name: &str) -> String {
    format!("batch.kubernetes.io/job-name={name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_job_name_label() {
        let long = "a".repeat(63);
        let name = job_name(&long, Housekeeping::CheckRestore, "0123abcd");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-check-restore-0123abcd"));
        assert_eq!(
            job_name("count", Housekeeping::Dispose, "1"),
            "count-dispose-1"
        );
        // A cut that would end in a dash does not leave two in a row.
        let dashed = format!("{}-b", "a".repeat(40));
        let name = job_name(&dashed, Housekeeping::CheckRestore, "0123abcd");
        assert!(!name.contains("--"), "{name}");
    }
}

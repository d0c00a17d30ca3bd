//! The worker StatefulSet: P pods, pod K runs container K of the job (pod 0 also runs the
//! coordinator and the control API). Hardened like the operator itself: non-root, read-only root
//! filesystem, no capabilities, RuntimeDefault seccomp, no service-account token (workers never
//! call the Kubernetes API). The standby set ([`super::standby`]) is built from it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretEnvSource, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use cairn_contract::pod::{
    self, env, CONTROL_PORT, COORDINATOR_PORT, HEALTHZ_PATH, JOB_DIR, METRICS_PORT, TOKEN_DIR,
    TOKEN_FILE, WORKER_UID,
};

use super::{affinity, child_labels, selector, Owner};
use crate::crd::Deployment;
use crate::pods::PodDocument;
use crate::validate::STATE_MOUNT;

/// Annotation with the deployment hash: the pods of two different specs never look alike.
pub const DEPLOY_HASH_ANNOTATION: &str = "cairn.dev/deploy-hash";

/// The worker StatefulSet of `deployment`, whose recorded pod document is `job`.
pub fn stateful_set(job: &PodDocument, deployment: &Deployment, owner: &Owner) -> StatefulSet {
    let mut pod_labels = job.pod.labels.clone();
    pod_labels.extend(child_labels(&owner.name));
    let mut annotations = job.pod.annotations.clone();
    annotations.insert(DEPLOY_HASH_ANNOTATION.into(), deployment.hash.clone());
    if let Some(sp) = &deployment.savepoint {
        annotations.insert("cairn.dev/restore-savepoint".into(), sp.clone());
    }
    let claim = job.state_volume.persistent_volume_claim.as_ref();
    StatefulSet {
        metadata: owner.child_meta(owner.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(job.job.parallelism as i32),
            service_name: Some(owner.name.clone()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector(&owner.name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec(job, &deployment.hash, owner)),
            },
            volume_claim_templates: claim.map(|c| {
                vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("state".into()),
                        labels: Some(child_labels(&owner.name)),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: c.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".into(),
                                Quantity(c.size.clone()),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(job: &PodDocument, hash: &str, owner: &Owner) -> PodSpec {
    let mut volumes = vec![
        Volume {
            name: "job".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: owner.config_map_name(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "control-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(owner.secret_name()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if job.state_volume.persistent_volume_claim.is_none() {
        let empty = job.state_volume.empty_dir.clone().unwrap_or_default();
        volumes.push(Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: empty.medium,
                size_limit: empty.size_limit.map(Quantity),
            }),
            ..Default::default()
        });
    }
    volumes.extend(job.pod.volumes.iter().cloned());
    PodSpec {
        containers: vec![worker_container(job, hash, owner)],
        volumes: Some(volumes),
        service_account_name: Some(job.service_account.clone()),
        automount_service_account_token: Some(false),
        // Time for the final checkpoint a worker takes on SIGTERM (the worker's stop timeouts
        // fit in it: cairn_contract::pod).
        termination_grace_period_seconds: Some(pod::TERMINATION_GRACE.as_secs() as i64),
        node_selector: (!job.pod.node_selector.is_empty()).then(|| job.pod.node_selector.clone()),
        tolerations: (!job.pod.tolerations.is_empty()).then(|| job.pod.tolerations.clone()),
        affinity: affinity::affinity(job, owner),
        priority_class_name: job.pod.priority_class_name.clone(),
        security_context: Some(pod_security()),
        ..Default::default()
    }
}

/// The pod security of every pod the operator runs for a job: the worker image's unprivileged
/// user, RuntimeDefault seccomp.
pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKER_UID),
        run_as_group: Some(WORKER_UID),
        fs_group: Some(WORKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container security of every container the operator runs for a job: no privilege
/// escalation, read-only root filesystem, no capabilities.
pub(super) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's `envFrom` of the job's credentials Secret, if it names one.
pub(super) fn credentials_env(job: &PodDocument) -> Option<Vec<EnvFromSource>> {
    job.credentials_secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    })
}

fn worker_container(job: &PodDocument, hash: &str, owner: &Owner) -> Container {
    let coordinator = format!(
        "{name}-0.{name}.{ns}.svc:{COORDINATOR_PORT}",
        name = owner.name,
        ns = owner.namespace
    );
    let mut env = vec![
        field_env(
            env::CONTAINER,
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ),
        literal_env(
            env::COORDINATOR_LISTEN,
            &format!("0.0.0.0:{COORDINATOR_PORT}"),
        ),
        literal_env(env::COORDINATOR, &coordinator),
        literal_env(env::CONTROL_ADDR, &format!("0.0.0.0:{CONTROL_PORT}")),
        literal_env(env::CONTROL_TOKEN_FILE, TOKEN_FILE),
        // Reported back by the job: how the operator knows these pods are this deployment's.
        literal_env(env::DEPLOYMENT, hash),
        literal_env(env::WASM_CACHE, cairn_contract::pod::WASM_CACHE_DIR),
    ];
    env.extend(job.pod.env.iter().cloned());
    let mut mounts = vec![
        VolumeMount {
            name: "job".into(),
            mount_path: JOB_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "control-token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "state".into(),
            mount_path: STATE_MOUNT.into(),
            ..Default::default()
        },
    ];
    mounts.extend(job.pod.volume_mounts.iter().cloned());
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Container {
        name: "worker".into(),
        image: Some(job.image.clone()),
        image_pull_policy: job.pull_policy.map(|p| p.as_str().into()),
        args: Some(pod::worker_args()),
        env: Some(env),
        env_from: credentials_env(job),
        ports: Some(vec![
            port("coordinator", COORDINATOR_PORT),
            port("control", CONTROL_PORT),
            port("metrics", METRICS_PORT),
        ]),
        volume_mounts: Some(mounts),
        resources: job.resources.clone(),
        readiness_probe: Some(http_probe(HEALTHZ_PATH, 5, 3)),
        liveness_probe: Some(http_probe(HEALTHZ_PATH, 10, 6)),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

pub(super) fn literal_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

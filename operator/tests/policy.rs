//! The operator's workload policy (`policy::check`), pure, from YAML fixtures: which images,
//! service accounts, volume types and Secrets a StreamJob may give its worker pods, and the
//! messages that name the field, the value and the setting to change.

mod common;

use std::collections::BTreeSet;

use cairn_operator::config::{image_repository, PolicyConfigError, SecretAccess, WorkloadPolicy};
use cairn_operator::policy::{check, image_matches, secret_refs};
use common::{config, manifest, validated};

fn defaults() -> WorkloadPolicy {
    config().policy
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn the_defaults_allow_the_chart_worker_image_and_service_account_only() {
    let policy = defaults();
    assert_eq!(policy.allowed_images, ["cairn/worker"]);
    assert_eq!(policy.allowed_service_accounts, ["cairn-worker"]);
    assert_eq!(
        policy.allowed_volume_types,
        [
            "configMap",
            "downwardAPI",
            "emptyDir",
            "persistentVolumeClaim",
            "secret"
        ]
    );
    assert_eq!(policy.secret_access, SecretAccess::Labelled);
    // Every example passes, once the Secret it names is labelled.
    for example in [
        "examples/k8s/count.yaml",
        "examples/k8s/file-sink.yaml",
        "examples/k8s/periodic-savepoints.yaml",
        "examples/k8s/kafka-s3.yaml",
    ] {
        let job = validated(&manifest(example)).pods;
        let labelled = BTreeSet::from(["s3-credentials".to_string()]);
        check(&job, &policy, &labelled).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
}

#[test]
fn images_and_service_accounts_outside_the_lists_are_refused() {
    let job = validated(&manifest("operator/tests/fixtures/policy/images.yaml")).pods;
    let err = check(&job, &defaults(), &none()).unwrap_err();
    assert_eq!(
        err.problems,
        [
            "spec.image: \"registry.example.com/miner:1\" is not an allowed worker image (allowed: cairn/worker); use one of those, or have the operator's administrator add it to --allowed-images (chart value policy.allowedImages)",
            "spec.podTemplate.serviceAccountName: \"cluster-admin-sa\" is not an allowed service account (allowed: cairn-worker); leave it out to use the default, or have the operator's administrator add it to --allowed-service-accounts (chart value policy.allowedServiceAccounts)",
        ]
    );
    let allowing = WorkloadPolicy {
        allowed_images: vec!["registry.example.com/*".into()],
        allowed_service_accounts: vec!["cluster-admin-sa".into()],
        ..defaults()
    };
    check(&job, &allowing, &none()).unwrap();
    let any = WorkloadPolicy {
        allowed_images: vec!["*".into()],
        allowed_service_accounts: vec!["*".into()],
        ..defaults()
    };
    check(&job, &any, &none()).unwrap();
}

#[test]
fn image_patterns_match_a_repository_or_a_prefix() {
    for (image, pattern, expected) in [
        ("cairn/worker", "cairn/worker", true),
        ("cairn/worker:0.1.0", "cairn/worker", true),
        ("cairn/worker@sha256:0123", "cairn/worker", true),
        ("cairn/worker:1@sha256:0123", "cairn/worker", true),
        ("cairn/worker-evil:1", "cairn/worker", false),
        ("cairn/workers/evil:1", "cairn/worker", false),
        ("evil/cairn/worker:1", "cairn/worker", false),
        (
            "registry.example.com/team/job:3",
            "registry.example.com/team/*",
            true,
        ),
        (
            "registry.example.com/teamb/job:3",
            "registry.example.com/team/*",
            false,
        ),
        ("anything:1", "*", true),
    ] {
        assert_eq!(
            image_matches(image, pattern),
            expected,
            "{image} vs {pattern}"
        );
    }
    for (image, repository) in [
        ("cairn/worker:0.1.0", "cairn/worker"),
        ("cairn/worker", "cairn/worker"),
        ("localhost:5000/cairn/worker", "localhost:5000/cairn/worker"),
        (
            "localhost:5000/cairn/worker:1@sha256:ab",
            "localhost:5000/cairn/worker",
        ),
    ] {
        assert_eq!(image_repository(image), repository, "{image}");
    }
}

#[test]
fn each_volume_type_is_checked_against_the_list() {
    let job = validated(&manifest("operator/tests/fixtures/policy/volumes.yaml")).pods;
    let labelled = BTreeSet::from(["kafka-tls".to_string()]);
    let err = check(&job, &defaults(), &labelled).unwrap_err();
    let allowed = "configMap, downwardAPI, emptyDir, persistentVolumeClaim, secret";
    let refused = |i: usize, name: &str, kind: &str| {
        format!("spec.podTemplate.volumes[{i}] ({name:?}): volume type {kind} is not allowed (allowed: {allowed}); use another volume type, or have the operator's administrator add it to --allowed-volume-types (chart value policy.allowedVolumeTypes)")
    };
    let token = "spec.podTemplate.volumes[6].projected.sources[0].serviceAccountToken: service-account tokens are not allowed in worker pods (workers never call the Kubernetes API); remove it, or have the operator's administrator add serviceAccountToken to --allowed-volume-types (chart value policy.allowedVolumeTypes)";
    assert_eq!(
        err.problems,
        [
            refused(5, "node", "hostPath"),
            refused(6, "token", "projected"),
            token.to_string(),
            refused(7, "shared", "nfs"),
        ]
    );
    // Allowing `projected` is not enough for a service-account token...
    let mut wider = defaults();
    wider
        .allowed_volume_types
        .extend(["hostPath", "projected", "nfs"].map(String::from));
    let err = check(&job, &wider, &labelled).unwrap_err();
    assert_eq!(err.problems, [token]);
    // ... that needs `serviceAccountToken` too.
    wider
        .allowed_volume_types
        .push("serviceAccountToken".into());
    check(&job, &wider, &labelled).unwrap();
    let any = WorkloadPolicy {
        allowed_volume_types: vec!["*".into()],
        ..defaults()
    };
    check(&job, &any, &labelled).unwrap();
}

#[test]
fn secrets_need_the_label_unless_the_policy_says_otherwise() {
    let job = validated(&manifest("operator/tests/fixtures/policy/secrets.yaml")).pods;
    let refs: Vec<(String, String)> = secret_refs(&job)
        .into_iter()
        .map(|r| (r.field, r.name))
        .collect();
    let expected_refs = [
        ("spec.credentialsSecret", "s3-credentials"),
        (
            "spec.podTemplate.env[1].valueFrom.secretKeyRef",
            "kafka-user",
        ),
        ("spec.podTemplate.volumes[0].secret.secretName", "kafka-tls"),
        (
            "spec.podTemplate.volumes[1].projected.sources[0].secret",
            "other-job-control",
        ),
    ];
    assert_eq!(
        refs,
        expected_refs.map(|(f, n)| (f.to_string(), n.to_string()))
    );
    // The projected volume itself needs allowing; the Secrets in it are checked like any other.
    let policy = WorkloadPolicy {
        allowed_volume_types: vec!["*".into()],
        ..defaults()
    };
    let err = check(&job, &policy, &BTreeSet::from(["kafka-tls".to_string()])).unwrap_err();
    let unlabelled = |field: &str, name: &str| {
        format!("{field}: Secret {name:?} does not exist or is not labelled for StreamJobs; whoever manages it can allow it with `kubectl label secret {name} cairn.dev/streamjob-access=allowed` (or the operator's administrator can set --secret-access any, chart value policy.secretAccess)")
    };
    assert_eq!(
        err.problems,
        [
            unlabelled("spec.credentialsSecret", "s3-credentials"),
            unlabelled(
                "spec.podTemplate.env[1].valueFrom.secretKeyRef",
                "kafka-user"
            ),
            unlabelled(
                "spec.podTemplate.volumes[1].projected.sources[0].secret",
                "other-job-control"
            ),
        ]
    );
    let all: BTreeSet<String> = expected_refs.iter().map(|(_, n)| n.to_string()).collect();
    check(&job, &policy, &all).unwrap();

    let any = WorkloadPolicy {
        secret_access: SecretAccess::Any,
        ..policy.clone()
    };
    check(&job, &any, &none()).unwrap();

    let forbidden = WorkloadPolicy {
        secret_access: SecretAccess::None,
        ..policy
    };
    let err = check(&job, &forbidden, &all).unwrap_err();
    assert_eq!(err.problems.len(), 4, "{err}");
    assert_eq!(
        err.problems[1],
        "spec.podTemplate.env[1].valueFrom.secretKeyRef: Secret \"kafka-user\": StreamJobs may not use Secrets here (--secret-access none, chart value policy.secretAccess); have the operator's administrator set it to labelled"
    );
}

#[test]
fn policy_settings_are_checked_at_start() {
    let mut policy = defaults();
    policy.allowed_volume_types.push("hostpath".into());
    assert_eq!(
        policy.check(),
        Err(PolicyConfigError::VolumeType("hostpath".into()))
    );
    policy.allowed_volume_types = vec!["hostPath".into(), "serviceAccountToken".into(), "*".into()];
    assert_eq!(policy.check(), Ok(()));
    assert_eq!("labelled".parse(), Ok(SecretAccess::Labelled));
    assert_eq!("any".parse(), Ok(SecretAccess::Any));
    assert_eq!("none".parse(), Ok(SecretAccess::None));
    assert_eq!(
        "all".parse::<SecretAccess>().unwrap_err().to_string(),
        "--secret-access (CAIRN_SECRET_ACCESS): \"all\" is not one of labelled, any, none"
    );
}

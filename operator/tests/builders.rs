//! The pure builders and validation, from the example manifests: what each child contains.

mod common;

use std::time::Duration;

use cairn_contract::deploy::Start;
use cairn_contract::JobSpec;
use cairn_operator::children::{self, Owner};
use cairn_operator::crd::{Deployment, UpgradeMode};
use cairn_operator::lifecycle::{classify, Change};
use cairn_operator::validate::{validate, ValidatedJob, STATE_DIR};
use common::{config, manifest, validated};

fn owner() -> Owner {
    Owner {
        name: "count".into(),
        namespace: "jobs".into(),
        uid: "uid-1".into(),
    }
}

/// A deployment of `job` as the lifecycle records it, started as `start`.
fn deployment(job: &ValidatedJob, start: Start) -> Deployment {
    let at = "2026-12-04T10:00:00Z".to_owned();
    Deployment::new(&job.pods, job.restore_from.clone(), start, at)
}

#[test]
fn count_example_builds_every_child_with_owner_and_labels() {
    let sj = manifest("examples/k8s/count.yaml");
    let job = validated(&sj);
    let start = Start {
        savepoint: Some("file:///var/lib/cairn-store/count/savepoints/sp-1".into()),
        state_epoch: 0,
    };
    let deployed = deployment(&job, start.clone());
    let c = children::render(
        &job.pods,
        &deployed,
        &owner(),
        "t0ken-t0ken-t0ken-t0ken",
        true,
    );
    let sts = c.stateful_set.expect("workers");
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.service_name.as_deref(), Some("count"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.service_account_name.as_deref(), Some("cairn-worker"));
    let sc = pod.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let worker = &pod.containers[0];
    assert_eq!(worker.image.as_deref(), Some("cairn/worker:test"));
    let csc = worker.security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(
        csc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let args = worker.args.as_ref().unwrap();
    assert_eq!(
        args[..2],
        ["run".to_string(), "/etc/cairn/job.yaml".to_string()]
    );
    assert!(args.contains(&"--hold-after-stop".to_string()));
    let env = worker.env.as_ref().unwrap();
    let var = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("env {n}"))
    };
    assert_eq!(
        var("CAIRN_CONTAINER")
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    assert_eq!(
        var("CAIRN_COORDINATOR").value.as_deref(),
        Some("count-0.count.jobs.svc:7000")
    );
    // The deployment's one hash: on the pods, and given to the job, which reports it back.
    assert_eq!(deployed.hash, job.hash);
    assert_eq!(
        var("CAIRN_DEPLOYMENT").value.as_deref(),
        Some(deployed.hash.as_str())
    );
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref();
    assert_eq!(
        annotations.unwrap()["cairn.dev/deploy-hash"],
        deployed.hash.as_str()
    );
    // the user's store volume is mounted next to the operator's own
    let mounts: Vec<_> = worker
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/cairn",
            "/var/run/secrets/cairn/control",
            "/var/lib/cairn",
            "/var/lib/cairn-store"
        ]
    );
    // owner reference on every child
    for meta in [
        &c.secret.metadata,
        &c.config_map.metadata,
        &c.service.metadata,
        &sts.metadata,
        &c.pdb.as_ref().unwrap().metadata,
    ] {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("StreamJob", "uid-1", Some(true))
        );
        assert_eq!(meta.labels.as_ref().unwrap()["cairn.dev/job"], "count");
    }
    // headless, publishing not-ready pods (containers dial the coordinator before readiness)
    let svc = c.service.spec.unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc.publish_not_ready_addresses, Some(true));
    // the job document the workers read
    let doc = &c.config_map.data.unwrap()["job.yaml"];
    let spec = JobSpec::from_yaml_str(doc).expect("the ConfigMap holds a valid job");
    assert_eq!(spec.name, "count");
    assert_eq!(spec.state.dir.to_str(), Some(STATE_DIR));
    assert_eq!(spec.restore.savepoint, start.savepoint);
    assert!(!spec.restore.reset_offsets);
    assert_eq!(spec.checkpoint.store, "file:///var/lib/cairn-store/count");
}

#[test]
fn suspended_children_have_no_workers_and_stateless_restarts_move_the_store() {
    let job = validated(&manifest("examples/k8s/count.yaml"));
    let start = Start {
        savepoint: None,
        state_epoch: 2,
    };
    let deployed = deployment(&job, start);
    let c = children::render(
        &job.pods,
        &deployed,
        &owner(),
        "t0ken-t0ken-t0ken-t0ken",
        false,
    );
    assert!(c.stateful_set.is_none() && c.pdb.is_none());
    let spec = JobSpec::from_yaml_str(&c.config_map.data.unwrap()["job.yaml"]).unwrap();
    assert_eq!(
        spec.checkpoint.store,
        "file:///var/lib/cairn-store/count/epoch-2"
    );
    assert_eq!(spec.restore.savepoint, None);
}

/// Every StreamJob manifest under examples/k8s (store-pvc.yaml is a plain PVC).
const EXAMPLES: [&str; 9] = [
    "examples/k8s/autoscaled.yaml",
    "examples/k8s/count.yaml",
    "examples/k8s/file-sink.yaml",
    "examples/k8s/periodic-savepoints.yaml",
    "examples/k8s/kafka-s3.yaml",
    "examples/k8s/standby.yaml",
    "examples/k8s/wasm-task.yaml",
    "examples/k8s/hdfs-store.yaml",
    "examples/k8s/azure-store.yaml",
];

#[test]
fn every_example_validates() {
    for example in EXAMPLES {
        let sj = manifest(example);
        let name = sj.metadata.name.clone().unwrap();
        validate(&name, &sj.spec, &config()).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
}

/// A deployment recorded in status, stored by the API server as JSON and read back, must be the
/// same deployment; otherwise every reconcile sees a spec change and upgrades again, forever
/// (found on the test bed when the recorded spec was re-validated: the recorded service account
/// changed the pod fingerprint).
#[test]
fn a_recorded_deployment_reads_back_as_the_same_pods() {
    for example in EXAMPLES {
        let desired = validated(&manifest(example));
        let recorded = deployment(&desired, Start::default());
        let stored = serde_json::to_string(&recorded).unwrap();
        let read: Deployment = serde_json::from_str(&stored).unwrap();
        let pods = read.pods("status.deployed.pods").unwrap();
        assert_eq!(pods, desired.pods, "{example}");
        assert_eq!(pods.hash(), read.hash, "{example}");
        assert_eq!(classify(&pods, &desired.pods), Change::None, "{example}");
    }
}

/// A recorded document this operator cannot read (another version's, or edited by hand) fails
/// that StreamJob's reconcile with an error that names the field and the way out; it is never
/// validated against today's rules or defaults.
#[test]
fn a_recorded_document_that_does_not_read_names_the_field_and_the_fix() {
    let mut recorded = deployment(
        &validated(&manifest("examples/k8s/count.yaml")),
        Start::default(),
    );
    recorded.pods["job"]["parallelizm"] = 3.into();
    let err = recorded
        .pods("status.lastGood.pods")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("status.lastGood.pods is not a pod document this operator version reads"),
        "{err}"
    );
    assert!(err.contains("parallelizm"), "{err}");
    assert!(err.contains("clear status.deployed"), "{err}");
}

#[test]
fn invalid_specs_name_every_bad_field() {
    let sj = manifest("operator/tests/fixtures/invalid-parallelism.yaml");
    let err = validate("too-wide", &sj.spec, &config()).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.problems[0].starts_with("spec.job.parallelism: "),
        "{err}"
    );

    let sj = manifest("operator/tests/fixtures/invalid-typo.yaml");
    let err = validate("typo", &sj.spec, &config()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spec.job.checkpoint.interval: \"10x\" is not a duration"),
        "{text}"
    );
    assert!(
        !text.contains("at line"),
        "line numbers of a re-serialised document mislead: {text}"
    );
    assert!(
        text.contains("spec.upgradeTimeout: \"soon\" is not a duration"),
        "{text}"
    );

    let mut fixed = sj.clone();
    fixed.spec.job["checkpoint"]["interval"] = "10s".into();
    let text = validate("typo", &fixed.spec, &config())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("spec.job.input.partitons: unknown field `partitons`"),
        "{text}"
    );
}

/// `spec.autoscaler` gets its defaults, and every setting it cannot honour is named.
#[test]
fn autoscaler_settings_are_checked() {
    let sj = manifest("examples/k8s/autoscaled.yaml");
    let policy = validated(&sj).autoscaler.expect("a policy");
    assert_eq!((policy.min, policy.max), (1, 6));
    assert_eq!(policy.window, Duration::from_secs(20));

    let mut defaults = manifest("examples/k8s/count.yaml");
    defaults.spec.autoscaler = Some(Default::default());
    let policy = validated(&defaults).autoscaler.unwrap();
    assert_eq!(
        (policy.min, policy.max, policy.target_utilization),
        (1, 4, 0.7)
    );
    assert_eq!(
        (policy.catch_up, policy.window, policy.cooldown),
        (
            Duration::from_secs(300),
            Duration::from_secs(180),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        validated(&manifest("examples/k8s/count.yaml")).autoscaler,
        None
    );

    let mut bad = sj.clone();
    let settings = bad.spec.autoscaler.as_mut().unwrap();
    settings.max_parallelism = Some(7);
    settings.min_parallelism = Some(8);
    settings.target_utilization = Some(1.5);
    settings.cooldown = Some("1s".into());
    settings.catch_up_time = Some("soon".into());
    bad.spec.upgrade_mode = UpgradeMode::Stateless;
    let err = validate("autoscaled", &bad.spec, &config()).unwrap_err();
    let text = err.to_string();
    for expected in [
        "spec.autoscaler: upgradeMode stateless starts every new deployment with empty state",
        "spec.autoscaler.maxParallelism: 7 is more than the job's 6 partitions",
        "spec.autoscaler.minParallelism: 8 is more than maxParallelism 7",
        "spec.autoscaler.targetUtilization: 1.5 is not between 0.1 and 1",
        "spec.autoscaler.cooldown: 1s is not between 10s and 1h",
        "spec.autoscaler.catchUpTime: \"soon\" is not a duration",
    ] {
        assert!(text.contains(expected), "{expected}\n in {text}");
    }

    let mut file = manifest("examples/k8s/count.yaml");
    file.spec.job["input"] =
        serde_json::json!({"type": "file", "partitions": 4, "path": "/var/lib/cairn-store/in"});
    assert!(validate("count", &file.spec, &config()).is_ok());
    file.spec.autoscaler = Some(Default::default());
    let text = validate("count", &file.spec, &config())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("spec.autoscaler: a file input reports its lag in bytes"),
        "{text}"
    );
}

#[test]
fn the_deployment_hash_ignores_settings_the_pods_do_not_run() {
    let sj = manifest("examples/k8s/count.yaml");
    let base = validated(&sj);
    let mut other = sj.clone();
    other.spec.upgrade_timeout = Some("10m".into());
    other.spec.savepoints = Some(Default::default());
    other.spec.restart_nonce = Some(7);
    assert_eq!(validated(&other).hash, base.hash);
    other.spec.image = Some("cairn/worker:2".into());
    assert_ne!(validated(&other).hash, base.hash);
}

#[test]
fn durations_and_counts_past_their_bounds_are_refused_naming_the_field() {
    let sj = manifest("operator/tests/fixtures/invalid-bounds.yaml");
    let err = validate("bounds", &sj.spec, &config()).unwrap_err();
    let long = |field: &str, text: &str| {
        format!("{field}: {text:?} is longer than the maximum of 8760h (one year); write a shorter duration")
    };
    assert_eq!(err.problems.len(), 6, "{err}");
    assert!(
        err.problems[0].starts_with(&long("spec.job.checkpoint.interval", "1800000000000000h")),
        "{err}"
    );
    assert_eq!(
        err.problems[1..],
        [
            long("spec.upgradeTimeout", "8761h"),
            "spec.savepoints.maxCount: 101 is more than 100; the history is kept in the StreamJob's status, keep at most 100".into(),
            "spec.savepoints.fallbackToLastStateAfter: 101 is more than 100; write at most 100 (or leave it out to never fall back)".into(),
            long("spec.savepoints.interval", "8760h1ns"),
            long("spec.savepoints.maxAge", "87600h"),
        ]
    );

    // At the bounds: valid.
    let mut ok = sj.clone();
    ok.spec.job["checkpoint"]["interval"] = "8760h".into();
    ok.spec.upgrade_timeout = Some("8760h".into());
    let sp = ok.spec.savepoints.as_mut().unwrap();
    sp.interval = Some("8760h".into());
    sp.max_age = Some("525600m".into());
    sp.max_count = Some(100);
    sp.fallback_to_last_state_after = Some(100);
    ok.spec.job["checkpoint"]["retained"] = 1000.into();
    validate("bounds", &ok.spec, &config()).unwrap();

    ok.spec.job["checkpoint"]["retained"] = 1001.into();
    let err = validate("bounds", &ok.spec, &config()).unwrap_err();
    assert_eq!(
        err.problems,
        ["spec.job.checkpoint.retained: 1001 is more than 1000; keep at most 1000 checkpoints (default 3)"]
    );
}

/// Does `selector` (matchLabels only, as the StatefulSets use) select pods labelled `labels`?
fn selects(
    selector: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod labels and the selector of a StatefulSet.
fn labels_and_selector(
    set: &k8s_openapi::api::apps::v1::StatefulSet,
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
) {
    let spec = set.spec.as_ref().unwrap();
    (
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap(),
        spec.selector.match_labels.clone().unwrap(),
    )
}

/// `standby: true`: a second StatefulSet `<job>-standby` of P-1 pods numbered 1..P-1, whose pods
/// are the workers' pods but for their labels, which neither set's selector (nor the Service's)
/// shares; both sets' pods prefer another node than the other pod of their container.
#[test]
fn standby_set_mirrors_the_workers_with_disjoint_labels_and_anti_affinity() {
    let sj = manifest("examples/k8s/standby.yaml");
    let job = validated(&sj);
    assert!(job.pods.job.standby);
    let owner = Owner {
        name: "warm-count".into(),
        ..owner()
    };
    let deployed = deployment(&job, Start::default());
    let c = children::render(&job.pods, &deployed, &owner, "t0ken", true);
    let workers = c.stateful_set.expect("workers");
    let standbys = c.standby_set.expect("standbys");

    assert_eq!(
        standbys.metadata.name.as_deref(),
        Some("warm-count-standby")
    );
    let (spec, main) = (
        standbys.spec.as_ref().unwrap(),
        workers.spec.as_ref().unwrap(),
    );
    assert_eq!((main.replicas, spec.replicas), (Some(3), Some(2)));
    assert_eq!(spec.ordinals.as_ref().unwrap().start, Some(1));
    assert_eq!(main.ordinals, None);
    assert_eq!(spec.service_name, None, "nothing dials a standby by name");
    assert_eq!(main.service_name.as_deref(), Some("warm-count"));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    // Owned by the StreamJob, like every child.
    let reference = &standbys.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (reference.uid.as_str(), reference.controller),
        ("uid-1", Some(true))
    );

    // The same pods: container, environment (CAIRN_CONTAINER from the pod index, the
    // coordinator at pod 0 of the workers, the deployment hash), volumes, token, ConfigMap.
    assert_eq!(spec.template.spec, main.template.spec);
    assert_eq!(
        spec.template.metadata.as_ref().unwrap().annotations,
        main.template.metadata.as_ref().unwrap().annotations
    );

    // Disjoint: neither selector selects the other set's pods; the Service selects workers only.
    let (worker_labels, worker_selector) = labels_and_selector(&workers);
    let (standby_labels, standby_selector) = labels_and_selector(&standbys);
    assert!(selects(&worker_selector, &worker_labels));
    assert!(selects(&standby_selector, &standby_labels));
    assert!(!selects(&worker_selector, &standby_labels));
    assert!(!selects(&standby_selector, &worker_labels));
    let service = c.service.spec.unwrap().selector.unwrap();
    assert!(selects(&service, &worker_labels) && !selects(&service, &standby_labels));
    assert_eq!(standby_labels["cairn.dev/job"], "warm-count");
    assert_eq!(
        standby_labels["app.kubernetes.io/name"],
        "cairn-worker-standby"
    );

    // The PDB covers both (roles swap between the sets).
    let pdb = c.pdb.unwrap().spec.unwrap().selector.unwrap();
    for labels in [&worker_labels, &standby_labels] {
        assert!(matches_selector(&pdb, labels), "{labels:?}");
    }

    // Preferred (never required) anti-affinity per container, on both sets' pods.
    let anti = main
        .template
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    assert_eq!(
        anti.required_during_scheduling_ignored_during_execution,
        None
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(preferred.len(), 1);
    let term = &preferred[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        term.match_label_keys.as_deref(),
        Some(&["apps.kubernetes.io/pod-index".to_string()][..])
    );
    let selector = term.label_selector.as_ref().unwrap();
    for labels in [&worker_labels, &standby_labels] {
        assert!(matches_selector(selector, labels), "{labels:?}");
    }
    let mut other_job = worker_labels.clone();
    other_job.insert("cairn.dev/job".into(), "count".into());
    assert!(!matches_selector(selector, &other_job));
}

/// A `LabelSelector` (matchLabels and `In` expressions) applied to `labels`.
fn matches_selector(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let by_labels = selects(
        selector
            .match_labels
            .as_ref()
            .unwrap_or(&Default::default()),
        labels,
    );
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        assert_eq!(e.operator, "In");
        labels
            .get(&e.key)
            .is_some_and(|v| e.values.iter().flatten().any(|x| x == v))
    });
    by_labels && by_expressions
}

/// No standby set without `standby`, nor without workers (suspended, between specs); no
/// anti-affinity without standbys; a user's affinity is kept and the preferred term added.
#[test]
fn standby_set_only_with_standby_and_workers_and_user_affinity_is_kept() {
    let count = validated(&manifest("examples/k8s/count.yaml"));
    let deployed = deployment(&count, Start::default());
    let c = children::render(&count.pods, &deployed, &owner(), "t0ken", true);
    assert!(c.standby_set.is_none());
    let pod = c.stateful_set.unwrap().spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.affinity, None);

    let mut sj = manifest("examples/k8s/standby.yaml");
    let job = validated(&sj);
    let deployed = deployment(&job, Start::default());
    let c = children::render(&job.pods, &deployed, &owner(), "t0ken", false);
    assert!(c.stateful_set.is_none() && c.standby_set.is_none() && c.pdb.is_none());

    // A user's required anti-affinity and node affinity stay; the operator's term is added.
    sj.spec.pod_template.as_mut().unwrap().affinity = Some(
        serde_json::from_value(serde_json::json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["stream"]}]}
            ]}},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"cairn.dev/job": "warm-count"}},
                "matchLabelKeys": ["apps.kubernetes.io/pod-index"]
            }]}
        }))
        .unwrap(),
    );
    let job = validated(&sj);
    let deployed = deployment(&job, Start::default());
    let c = children::render(&job.pods, &deployed, &owner(), "t0ken", true);
    for set in [c.stateful_set.unwrap(), c.standby_set.unwrap()] {
        let affinity = set.spec.unwrap().template.spec.unwrap().affinity.unwrap();
        assert!(affinity.node_affinity.is_some());
        let anti = affinity.pod_anti_affinity.unwrap();
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
    }
}

/// The standbys' StatefulSet name must fit the pods' labels: a long job name with standbys is
/// refused naming the field (the CRD refuses it too).
#[test]
fn a_job_with_standbys_and_a_long_name_is_refused() {
    let mut sj = manifest("examples/k8s/standby.yaml");
    let name = "n".repeat(45);
    sj.metadata.name = Some(name.clone());
    let err = validate(&name, &sj.spec, &config()).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.problems[0].starts_with("spec.job.standby: the StreamJob's name"),
        "{err}"
    );
    let fits = "n".repeat(44);
    validate(&fits, &sj.spec, &config()).unwrap();
    sj.spec.job["standby"] = false.into();
    validate(&name, &sj.spec, &config()).unwrap();
}

/// A housekeeping pod reaches the store exactly as the workers do (image, credentials Secret,
/// the user's volumes, service account), runs once, is hardened like them, and is not a worker
/// (no worker listing or selector sees it).
#[test]
fn a_housekeeping_job_runs_once_with_the_workers_store_access() {
    let mut sj = manifest("examples/k8s/count.yaml");
    sj.spec.credentials_secret = Some("store-credentials".into());
    let job = validated(&sj);
    let args = cairn_contract::housekeeping::dispose_args(&["s3://b/p/savepoints/sp-1".into()]);
    let env = [("EXTRA", "1".to_owned())];
    let built = children::housekeeping_job(
        &owner(),
        children::housekeeping::Run {
            name: "count-dispose-0123abcd",
            kind: children::Housekeeping::Dispose,
            pods: &job.pods,
            args: &args,
            env: &env,
        },
    );
    let meta = &built.metadata;
    assert_eq!(meta.name.as_deref(), Some("count-dispose-0123abcd"));
    assert_eq!(meta.owner_references.as_ref().unwrap()[0].name, "count");
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels[children::APP_LABEL], "cairn-housekeeping");
    assert_eq!(labels[children::JOB_LABEL], "count");
    let spec = built.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0), "the operator counts attempts");
    assert!(spec.active_deadline_seconds.is_some());
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_ne!(
        template_labels[children::APP_LABEL],
        children::WORKER_APP,
        "not a worker pod"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("cairn-worker"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("cairn/worker:test"));
    assert_eq!(c.args.as_deref(), Some(&args[..]));
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "store-credentials"
    );
    assert!(c.env.as_ref().unwrap().iter().any(|e| e.name == "EXTRA"));
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    // The user's store volume (a shared claim for file://) is mounted as in the workers.
    let volumes: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(volumes.contains(&"store"), "{volumes:?}");
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert!(
        mounts.contains(&("store", "/var/lib/cairn-store")),
        "{mounts:?}"
    );
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
}

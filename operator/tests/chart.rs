//! Tests of the Helm chart `charts/cairn`: `helm lint --strict`, the values schema, and checks
//! of the manifests `helm template` renders (security contexts, RBAC, ServiceAccounts,
//! NetworkPolicies, the operator's settings).
//!
//! `helm` is `$HELM` (the binary, or the directory holding it). `make unit` builds it first
//! (`tests/controlplane/build.sh helm`, a version-keyed cache) and sets it: these tests build
//! nothing themselves. Without it they fail and say how to get one.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::repo_file;
use serde::Deserialize;
use serde_yaml::Value;

/// Kubernetes version the manifests are rendered for. Passed explicitly because a `helm` built
/// from source without its release link flags reports 1.20, below the chart's kubeVersion
/// floor; 1.34 is the API version the operator is compiled against (k8s-openapi `v1_34`).
const KUBE_VERSION: &str = "1.34.0";
const RELEASE: &str = "cairn";
const RELEASE_NAMESPACE: &str = "cairn-system";
/// Default resource name prefix for the release name "cairn".
const OPERATOR_SA: &str = "cairn-operator";
const WORKER_SA: &str = "cairn-worker";

fn chart_dir() -> PathBuf {
    repo_file("charts/cairn")
}

/// Values file with every optional part of the chart switched on.
fn all_options() -> Vec<String> {
    vec![
        "-f".to_string(),
        chart_dir()
            .join("ci/all-options-values.yaml")
            .display()
            .to_string(),
    ]
}

/// The `helm` binary, located once per test process.
fn helm() -> &'static Path {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match HELM.get_or_init(locate_helm) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn locate_helm() -> Result<PathBuf, String> {
    if let Some(value) = std::env::var_os("HELM") {
        let path = PathBuf::from(value);
        let binary = if path.is_dir() {
            path.join("helm")
        } else {
            path
        };
        return if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!(
                "HELM={} is neither the helm binary nor a directory holding it",
                binary.display()
            ))
        };
    }
    Err(
        "HELM is not set: run the chart tests through `make unit` (it builds helm), or set HELM \
         to a helm binary or its directory (e.g. HELM=$(tests/controlplane/build.sh helm))"
            .into(),
    )
}

/// Exit status and output of one helm command.
struct HelmRun {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run_helm(args: &[String]) -> HelmRun {
    let output = Command::new(helm())
        .args(args)
        // No kubeconfig or repository state of the machine leaks into the tests.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("cairn-chart-test-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("cairn-chart-test-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("cairn-chart-test-helm-data"),
        )
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", helm().display()));
    HelmRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `helm template` of the chart with `extra` arguments; the run, successful or not.
fn template_run(extra: &[String]) -> HelmRun {
    let mut args: Vec<String> = vec![
        "template".into(),
        RELEASE.into(),
        chart_dir().display().to_string(),
        "--namespace".into(),
        RELEASE_NAMESPACE.into(),
        "--kube-version".into(),
        KUBE_VERSION.into(),
    ];
    args.extend_from_slice(extra);
    run_helm(&args)
}

/// The rendered manifests as text; panics with helm's message when rendering fails.
fn template_text(extra: &[String]) -> String {
    let run = template_run(extra);
    assert!(
        run.success,
        "helm template {extra:?} failed:\n{}",
        run.stderr
    );
    run.stdout
}

/// The rendered manifests, parsed (empty documents dropped). Rendered once per set of values
/// and shared by the tests (helm is a process start each time).
fn render(extra: &[String]) -> Vec<Value> {
    static RENDERED: OnceLock<Mutex<HashMap<Vec<String>, Vec<Value>>>> = OnceLock::new();
    let cache = RENDERED.get_or_init(Default::default);
    if let Some(objects) = cache.lock().unwrap().get(extra) {
        return objects.clone();
    }
    let objects = render_uncached(extra);
    cache
        .lock()
        .unwrap()
        .insert(extra.to_vec(), objects.clone());
    objects
}

fn render_uncached(extra: &[String]) -> Vec<Value> {
    let text = template_text(extra);
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)
            .unwrap_or_else(|error| panic!("rendered YAML does not parse: {error}\n{text}"));
        if !value.is_null() {
            objects.push(value);
        }
    }
    objects
}

fn set(pairs: &[&str]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|pair| ["--set".to_string(), pair.to_string()])
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

fn kind(object: &Value) -> &str {
    str_at(object, &["kind"]).expect("every manifest has a kind")
}

fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).expect("every manifest has a name")
}

/// `(kind, namespace, name)` of every object; cluster-scoped objects have namespace "".
fn inventory(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    objects
        .iter()
        .map(|object| {
            (
                kind(object).to_string(),
                str_at(object, &["metadata", "namespace"])
                    .unwrap_or("")
                    .to_string(),
                name(object).to_string(),
            )
        })
        .collect()
}

fn expect_inventory(entries: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    entries
        .iter()
        .map(|(k, ns, n)| (k.to_string(), ns.to_string(), n.to_string()))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind_name: &str, namespace: &str, object: &str) -> &'a Value {
    objects
        .iter()
        .find(|candidate| {
            kind(candidate) == kind_name
                && str_at(candidate, &["metadata", "namespace"]).unwrap_or("") == namespace
                && name(candidate) == object
        })
        .unwrap_or_else(|| panic!("no {kind_name} {namespace}/{object} was rendered"))
}

fn operator_deployment(objects: &[Value]) -> &Value {
    find(objects, "Deployment", RELEASE_NAMESPACE, "cairn-operator")
}

/// The operator container's environment as name -> literal value or `fieldRef:<path>`.
fn operator_env(objects: &[Value]) -> BTreeMap<String, String> {
    let container = &at(
        operator_deployment(objects),
        &["spec", "template", "spec", "containers"],
    )
    .and_then(Value::as_sequence)
    .expect("the Deployment has containers")[0];
    at(container, &["env"])
        .and_then(Value::as_sequence)
        .expect("the operator container has env")
        .iter()
        .map(|variable| {
            let name = str_at(variable, &["name"]).expect("env name").to_string();
            let value = match str_at(variable, &["value"]) {
                Some(value) => value.to_string(),
                None => format!(
                    "fieldRef:{}",
                    str_at(variable, &["valueFrom", "fieldRef", "fieldPath"])
                        .expect("env without a value comes from the downward API")
                ),
            };
            (name, value)
        })
        .collect()
}

/// Rules of a Role or ClusterRole as `(apiGroups, resources, resourceNames, verbs)`, joined.
fn rules(object: &Value) -> Vec<(String, String, String, String)> {
    let join = |rule: &Value, key: &str| {
        at(rule, &[key])
            .and_then(Value::as_sequence)
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().expect("RBAC lists hold strings"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    at(object, &["rules"])
        .and_then(Value::as_sequence)
        .expect("a Role has rules")
        .iter()
        .map(|rule| {
            (
                join(rule, "apiGroups"),
                join(rule, "resources"),
                join(rule, "resourceNames"),
                join(rule, "verbs"),
            )
        })
        .collect()
}

/// The rules every managed namespace gets, whether through the ClusterRole or a Role.
fn expected_job_rules() -> Vec<(String, String, String, String)> {
    [
        ("cairn.dev", "streamjobs", "list,watch,patch"),
        ("cairn.dev", "streamjobs/status", "patch"),
        ("cairn.dev", "streamjobs/finalizers", "update"),
        ("", "secrets", "get,create"),
        ("", "configmaps,services", "create,patch"),
        ("apps", "statefulsets", "list,watch,create,patch,delete"),
        ("policy", "poddisruptionbudgets", "create,patch,delete"),
        ("", "pods", "list,watch,delete"),
        ("batch", "jobs", "get,create,delete"),
        ("events.k8s.io", "events", "create"),
    ]
    .iter()
    .map(|(group, resource, verbs)| {
        (
            group.to_string(),
            resource.to_string(),
            String::new(),
            verbs.to_string(),
        )
    })
    .collect()
}

fn expected_lease_rules() -> Vec<(String, String, String, String)> {
    vec![
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            String::new(),
            "create".into(),
        ),
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            "cairn-operator".into(),
            "get,update,patch".into(),
        ),
    ]
}

#[test]
fn lint_strict_passes_with_default_values() {
    let run = run_helm(&[
        "lint".into(),
        "--strict".into(),
        "--kube-version".into(),
        KUBE_VERSION.into(),
        chart_dir().display().to_string(),
    ]);
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{}",
        run.stdout
    );
}

#[test]
fn lint_strict_passes_with_every_option_enabled() {
    let mut args: Vec<String> = vec![
        "lint".into(),
        "--strict".into(),
        "--kube-version".into(),
        KUBE_VERSION.into(),
        "--namespace".into(),
        RELEASE_NAMESPACE.into(),
        chart_dir().display().to_string(),
    ];
    args.extend(all_options());
    let run = run_helm(&args);
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{}",
        run.stdout
    );
}

#[test]
fn default_values_render_exactly_the_expected_objects() {
    let objects = render(&[]);
    let ns = RELEASE_NAMESPACE;
    assert_eq!(
        inventory(&objects),
        expect_inventory(&[
            ("ServiceAccount", ns, OPERATOR_SA),
            ("ServiceAccount", ns, WORKER_SA),
            ("ClusterRole", "", "cairn-operator"),
            ("ClusterRoleBinding", "", "cairn-operator"),
            ("Role", ns, "cairn-operator-leader-election"),
            ("RoleBinding", ns, "cairn-operator-leader-election"),
            ("Service", ns, "cairn-metrics"),
            ("Deployment", ns, "cairn-operator"),
            // On by default (docs/helm.md, Security).
            ("NetworkPolicy", ns, "cairn-operator"),
            ("NetworkPolicy", ns, "cairn-workers"),
        ])
    );
}

#[test]
fn every_option_renders_exactly_the_expected_objects() {
    let objects = render(&all_options());
    let ns = RELEASE_NAMESPACE;
    assert_eq!(
        inventory(&objects),
        expect_inventory(&[
            ("ServiceAccount", ns, OPERATOR_SA),
            ("ServiceAccount", ns, WORKER_SA),
            ("ServiceAccount", "a", WORKER_SA),
            ("ServiceAccount", "b", WORKER_SA),
            ("Role", "a", "cairn-operator"),
            ("RoleBinding", "a", "cairn-operator"),
            ("Role", "b", "cairn-operator"),
            ("RoleBinding", "b", "cairn-operator"),
            ("Role", ns, "cairn-operator-leader-election"),
            ("RoleBinding", ns, "cairn-operator-leader-election"),
            ("Service", ns, "cairn-metrics"),
            ("ServiceMonitor", ns, "cairn-operator"),
            ("Deployment", ns, "cairn-operator"),
            ("PodDisruptionBudget", ns, "cairn-operator"),
            ("NetworkPolicy", ns, "cairn-operator"),
            ("NetworkPolicy", ns, "cairn-workers"),
            ("NetworkPolicy", "a", "cairn-workers"),
            ("NetworkPolicy", "b", "cairn-workers"),
        ])
    );
}

#[test]
fn every_container_runs_with_the_hardened_security_context() {
    for extra in [vec![], all_options()] {
        let objects = render(&extra);
        let mut containers = 0;
        for object in &objects {
            let Some(pod) = at(object, &["spec", "template", "spec"]) else {
                continue;
            };
            let what = format!("{} {}", kind(object), name(object));
            let pod_context = at(pod, &["securityContext"])
                .unwrap_or_else(|| panic!("{what}: no pod securityContext"));
            assert_eq!(pod_context["runAsNonRoot"], Value::Bool(true), "{what}");
            assert_eq!(pod_context["runAsUser"], Value::from(65532), "{what}");
            assert_eq!(
                str_at(pod_context, &["seccompProfile", "type"]),
                Some("RuntimeDefault"),
                "{what}"
            );
            for list in ["initContainers", "containers"] {
                for container in at(pod, &[list])
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    containers += 1;
                    let what = format!("{what} container {:?}", str_at(container, &["name"]));
                    let context = at(container, &["securityContext"])
                        .unwrap_or_else(|| panic!("{what}: no securityContext"));
                    assert_eq!(context["runAsNonRoot"], Value::Bool(true), "{what}");
                    assert_eq!(context["runAsUser"], Value::from(65532), "{what}");
                    assert_eq!(
                        context["readOnlyRootFilesystem"],
                        Value::Bool(true),
                        "{what}"
                    );
                    assert_eq!(
                        context["allowPrivilegeEscalation"],
                        Value::Bool(false),
                        "{what}"
                    );
                    assert_eq!(
                        at(context, &["capabilities", "drop"]),
                        Some(&Value::Sequence(vec![Value::from("ALL")])),
                        "{what}"
                    );
                    assert_eq!(
                        at(context, &["capabilities", "add"]),
                        None,
                        "{what} adds capabilities"
                    );
                    assert_eq!(
                        str_at(context, &["seccompProfile", "type"]),
                        Some("RuntimeDefault"),
                        "{what}"
                    );
                    assert!(
                        at(container, &["resources", "requests"]).is_some()
                            && at(container, &["resources", "limits", "memory"]).is_some(),
                        "{what}: requests and a memory limit are set by default"
                    );
                }
            }
        }
        assert_eq!(containers, 1, "one container (the operator) is rendered");
    }
}

#[test]
fn unknown_value_keys_are_rejected_naming_the_key() {
    for (assignment, key, location) in [
        ("replicas=2", "replicas", "at ''"),
        ("image.tga=v1", "tga", "at '/image'"),
        ("networkPolicy.enable=true", "enable", "at '/networkPolicy'"),
        (
            "worker.serviceAccount.automount=true",
            "automount",
            "at '/worker/serviceAccount'",
        ),
    ] {
        let run = template_run(&set(&[assignment]));
        assert!(!run.success, "--set {assignment} was accepted");
        assert!(
            run.stderr
                .contains(&format!("additional properties '{key}' not allowed")),
            "--set {assignment}: the error does not name {key}:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(location),
            "--set {assignment}: the error does not say where ({location}):\n{}",
            run.stderr
        );
    }
}

#[test]
fn invalid_values_fail_with_a_message_naming_the_value_and_the_fix() {
    for (assignments, expected) in [
        (
            vec!["replicaCount=2", "leaderElection.enabled=false"],
            "replicaCount is 2 but leaderElection.enabled is false",
        ),
        (
            vec!["replicaCount=2", "podDisruptionBudget.minAvailable=2"],
            "podDisruptionBudget.minAvailable (2) must be less than replicaCount (2)",
        ),
        (
            vec!["podLabels.app\\.kubernetes\\.io/component=x"],
            "podLabels.app.kubernetes.io/component: the chart sets this label itself",
        ),
        (
            vec!["serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
        (
            vec!["watchNamespaces={Jobs}"],
            "at '/watchNamespaces/0': 'Jobs' does not match pattern",
        ),
        (
            vec!["logFormat=yaml"],
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        (vec!["httpPort=80"], "at '/httpPort': minimum: got 80"),
        // A tag that YAML or --set reads as a number is refused rather than mangled (in a
        // values file 1.10 would become 1.1): it must be quoted, or passed with --set-string.
        (
            vec!["worker.image.tag=7"],
            "at '/worker/image/tag': got number, want string",
        ),
        (
            vec!["policy.secretAccess=all"],
            "at '/policy/secretAccess': value must be one of 'labelled', 'any', 'none'",
        ),
        (
            vec!["policy.allowedVolumeTypes={hostpath}"],
            "at '/policy/allowedVolumeTypes/0': value must be one of",
        ),
        (
            vec!["policy.allowedVolumeTypes=null"],
            "at '/policy': missing property 'allowedVolumeTypes'",
        ),
    ] {
        let run = template_run(&set(&assignments));
        assert!(!run.success, "{assignments:?} was accepted");
        assert!(
            run.stderr.contains(expected),
            "{assignments:?}: expected {expected:?} in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn every_rbac_rule_is_preceded_by_a_comment() {
    // Rules are written in flow style, one `- apiGroups:` line each; the line above must be
    // the end of a comment saying why the rule is needed.
    fn uncommented_rules(text: &str) -> (usize, Vec<String>) {
        let lines: Vec<&str> = text.lines().collect();
        let mut count = 0;
        let mut missing = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") {
                count += 1;
                let previous = lines[..index]
                    .iter()
                    .rev()
                    .map(|line| line.trim())
                    .find(|line| !line.is_empty());
                if !previous.is_some_and(|line| line.starts_with('#')) {
                    missing.push(format!("line {}: {line}", index + 1));
                }
            }
        }
        (count, missing)
    }

    let templates = chart_dir().join("templates");
    let mut rules_in_templates = 0;
    for entry in std::fs::read_dir(&templates).expect("templates/ is readable") {
        let path = entry.expect("a templates/ entry").path();
        let text = std::fs::read_to_string(&path).expect("a template is text");
        let (count, missing) = uncommented_rules(&text);
        assert!(
            missing.is_empty(),
            "{}: rules without a comment: {missing:?}",
            path.display()
        );
        // Rules must be written as `- apiGroups:` first so that this check sees them.
        assert_eq!(
            count,
            text.matches("verbs:").count(),
            "{}: a rule does not start with `- apiGroups:`",
            path.display()
        );
        rules_in_templates += count;
    }
    let rules = expected_job_rules().len() + expected_lease_rules().len();
    assert_eq!(
        rules_in_templates, rules,
        "every job rule and Lease rule, once"
    );

    // The comments survive rendering, so they are in front of whoever reads the manifests.
    for extra in [vec![], all_options()] {
        let (count, missing) = uncommented_rules(&template_text(&extra));
        assert!(
            missing.is_empty(),
            "rendered rules without a comment: {missing:?}"
        );
        assert!(count >= rules, "only {count} rules rendered");
    }
}

#[test]
fn worker_service_account_has_no_token_and_no_binding() {
    for (extra, namespaces) in [
        (vec![], vec![RELEASE_NAMESPACE]),
        (all_options(), vec![RELEASE_NAMESPACE, "a", "b"]),
    ] {
        let objects = render(&extra);
        for namespace in &namespaces {
            let account = find(&objects, "ServiceAccount", namespace, WORKER_SA);
            assert_eq!(
                account["automountServiceAccountToken"],
                Value::Bool(false),
                "{namespace}/{WORKER_SA}"
            );
        }
        let worker_accounts = objects
            .iter()
            .filter(|object| kind(object) == "ServiceAccount" && name(object) == WORKER_SA)
            .count();
        assert_eq!(worker_accounts, namespaces.len());
        for binding in objects
            .iter()
            .filter(|object| matches!(kind(object), "RoleBinding" | "ClusterRoleBinding"))
        {
            let subjects = at(binding, &["subjects"])
                .and_then(Value::as_sequence)
                .expect("a binding has subjects");
            for subject in subjects {
                assert_eq!(
                    str_at(subject, &["name"]),
                    Some(OPERATOR_SA),
                    "{} {} binds {subject:?}",
                    kind(binding),
                    name(binding)
                );
                assert_eq!(str_at(subject, &["namespace"]), Some(RELEASE_NAMESPACE));
            }
        }
    }
}

#[test]
fn all_namespaces_are_managed_through_one_cluster_role() {
    let objects = render(&[]);
    let cluster_role = find(&objects, "ClusterRole", "", "cairn-operator");
    assert_eq!(rules(cluster_role), expected_job_rules());
    let binding = find(&objects, "ClusterRoleBinding", "", "cairn-operator");
    assert_eq!(str_at(binding, &["roleRef", "kind"]), Some("ClusterRole"));
    assert_eq!(
        str_at(binding, &["roleRef", "name"]),
        Some("cairn-operator")
    );
    let lease_role = find(
        &objects,
        "Role",
        RELEASE_NAMESPACE,
        "cairn-operator-leader-election",
    );
    assert_eq!(rules(lease_role), expected_lease_rules());
}

#[test]
fn watch_namespaces_get_a_role_each_and_no_cluster_role() {
    let objects = render(&set(&["watchNamespaces={a,b}"]));
    assert!(
        !objects
            .iter()
            .any(|object| matches!(kind(object), "ClusterRole" | "ClusterRoleBinding")),
        "no cluster-wide RBAC when watchNamespaces is set"
    );
    for namespace in ["a", "b"] {
        let role = find(&objects, "Role", namespace, "cairn-operator");
        assert_eq!(rules(role), expected_job_rules(), "Role in {namespace}");
        let binding = find(&objects, "RoleBinding", namespace, "cairn-operator");
        assert_eq!(str_at(binding, &["roleRef", "kind"]), Some("Role"));
        assert_eq!(
            str_at(binding, &["roleRef", "name"]),
            Some("cairn-operator")
        );
    }
    // The release namespace only gets the Lease, not access to StreamJobs or Secrets.
    let roles_in_release_namespace: Vec<&str> = objects
        .iter()
        .filter(|object| {
            kind(object) == "Role"
                && str_at(object, &["metadata", "namespace"]) == Some(RELEASE_NAMESPACE)
        })
        .map(name)
        .collect();
    assert_eq!(
        roles_in_release_namespace,
        vec!["cairn-operator-leader-election"]
    );
    assert_eq!(
        operator_env(&objects)["CAIRN_WATCH_NAMESPACES"],
        "a,b".to_string()
    );
}

#[test]
fn without_leader_election_no_lease_and_updates_recreate() {
    let objects = render(&set(&["leaderElection.enabled=false"]));
    assert!(!inventory(&objects)
        .iter()
        .any(|(_, _, object)| object == "cairn-operator-leader-election"));
    assert_eq!(operator_env(&objects)["CAIRN_LEADER_ELECTION"], "false");
    // Nothing else keeps two operators apart during an update.
    assert_eq!(
        str_at(operator_deployment(&objects), &["spec", "strategy", "type"]),
        Some("Recreate")
    );
    // With leader election the default rolling update is kept: the new pod waits on the Lease.
    assert_eq!(
        at(operator_deployment(&render(&[])), &["spec", "strategy"]),
        None
    );
}

#[test]
fn operator_deployment_gets_its_settings_from_values() {
    let objects = render(&[]);
    let expected: BTreeMap<String, String> = [
        ("CAIRN_WATCH_NAMESPACES", ""),
        ("CAIRN_HTTP_ADDR", "0.0.0.0:8080"),
        ("CAIRN_LEADER_ELECTION", "true"),
        ("CAIRN_WORKER_IMAGE", "cairn/worker:0.1.0"),
        ("CAIRN_WORKER_SERVICE_ACCOUNT", WORKER_SA),
        ("CAIRN_ALLOWED_IMAGES", "cairn/worker"),
        ("CAIRN_ALLOWED_SERVICE_ACCOUNTS", WORKER_SA),
        (
            "CAIRN_ALLOWED_VOLUME_TYPES",
            "configMap,downwardAPI,emptyDir,persistentVolumeClaim,secret",
        ),
        ("CAIRN_SECRET_ACCESS", "labelled"),
        ("RUST_LOG", "info"),
        ("POD_NAME", "fieldRef:metadata.name"),
        ("POD_NAMESPACE", "fieldRef:metadata.namespace"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(operator_env(&objects), expected);

    let deployment = operator_deployment(&objects);
    assert_eq!(at(deployment, &["spec", "replicas"]), Some(&Value::from(1)));
    let pod = at(deployment, &["spec", "template", "spec"]).expect("pod spec");
    assert_eq!(str_at(pod, &["serviceAccountName"]), Some(OPERATOR_SA));
    let container = &pod["containers"][0];
    assert_eq!(str_at(container, &["image"]), Some("cairn/operator:0.1.0"));
    assert_eq!(
        at(container, &["args"]),
        Some(&serde_yaml::from_str::<Value>("[run, --log-format, json]").expect("YAML"))
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        Some("/healthz")
    );
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        Some("/readyz")
    );
    assert_eq!(
        at(container, &["ports"]),
        Some(
            &serde_yaml::from_str::<Value>("[{name: http, containerPort: 8080, protocol: TCP}]")
                .expect("YAML")
        )
    );

    let mut extra = set(&[
        "image.tag=v2",
        "worker.image.repository=example.com/me/my-worker",
        "worker.serviceAccount.name=jobs",
        "httpPort=9000",
        "logLevel=debug",
        "logFormat=text",
    ]);
    extra.extend(["--set-string".to_string(), "worker.image.tag=7".to_string()]);
    let objects = render(&extra);
    let env = operator_env(&objects);
    assert_eq!(env["CAIRN_WORKER_IMAGE"], "example.com/me/my-worker:7");
    assert_eq!(env["CAIRN_WORKER_SERVICE_ACCOUNT"], "jobs");
    // The policy's defaults follow the worker image and ServiceAccount.
    assert_eq!(env["CAIRN_ALLOWED_IMAGES"], "example.com/me/my-worker");
    assert_eq!(env["CAIRN_ALLOWED_SERVICE_ACCOUNTS"], "jobs");
    assert_eq!(env["CAIRN_HTTP_ADDR"], "0.0.0.0:9000");
    assert_eq!(env["RUST_LOG"], "debug");
    let container = &at(operator_deployment(&objects), &["spec", "template", "spec"])
        .expect("pod spec")["containers"][0];
    assert_eq!(str_at(container, &["image"]), Some("cairn/operator:v2"));
    assert_eq!(container["args"][2], Value::from("text"));
    assert_eq!(container["ports"][0]["containerPort"], Value::from(9000));
    find(&objects, "ServiceAccount", RELEASE_NAMESPACE, "jobs");
}

#[test]
fn policy_values_reach_the_operator() {
    let objects = render(&set(&[
        "policy.allowedImages={registry.example.com/team/*,cairn/worker}",
        "policy.allowedServiceAccounts={cairn-worker,reader}",
        "policy.allowedVolumeTypes={configMap,hostPath,projected,serviceAccountToken}",
        "policy.secretAccess=any",
    ]));
    let env = operator_env(&objects);
    assert_eq!(
        env["CAIRN_ALLOWED_IMAGES"],
        "registry.example.com/team/*,cairn/worker"
    );
    assert_eq!(env["CAIRN_ALLOWED_SERVICE_ACCOUNTS"], "cairn-worker,reader");
    assert_eq!(
        env["CAIRN_ALLOWED_VOLUME_TYPES"],
        "configMap,hostPath,projected,serviceAccountToken"
    );
    assert_eq!(env["CAIRN_SECRET_ACCESS"], "any");
}

#[test]
fn pod_disruption_budget_only_with_several_replicas() {
    let kinds = |extra: &[String]| -> Vec<String> {
        render(extra)
            .iter()
            .map(|object| kind(object).to_string())
            .collect()
    };
    assert!(!kinds(&[]).contains(&"PodDisruptionBudget".to_string()));
    let objects = render(&set(&["replicaCount=2"]));
    let budget = find(
        &objects,
        "PodDisruptionBudget",
        RELEASE_NAMESPACE,
        "cairn-operator",
    );
    assert_eq!(at(budget, &["spec", "minAvailable"]), Some(&Value::from(1)));
    let deployment = operator_deployment(&objects);
    assert_eq!(
        at(budget, &["spec", "selector", "matchLabels"]),
        at(deployment, &["spec", "selector", "matchLabels"])
    );
    assert_eq!(at(deployment, &["spec", "replicas"]), Some(&Value::from(2)));
}

#[test]
fn metrics_service_and_service_monitor_select_the_operator() {
    let objects = render(&all_options());
    let deployment = operator_deployment(&objects);
    let pod_labels = at(deployment, &["spec", "template", "metadata", "labels"])
        .and_then(Value::as_mapping)
        .expect("pod labels");
    let service = find(&objects, "Service", RELEASE_NAMESPACE, "cairn-metrics");
    let selector = at(service, &["spec", "selector"])
        .and_then(Value::as_mapping)
        .expect("Service selector");
    for (key, value) in selector {
        assert_eq!(pod_labels.get(key), Some(value), "Service selects {key:?}");
    }
    assert_eq!(
        service["spec"]["ports"][0]["name"],
        Value::from("http-metrics")
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        Value::from("http")
    );

    let monitor = find(
        &objects,
        "ServiceMonitor",
        RELEASE_NAMESPACE,
        "cairn-operator",
    );
    let service_labels = at(service, &["metadata", "labels"])
        .and_then(Value::as_mapping)
        .expect("Service labels");
    for (key, value) in at(monitor, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_mapping)
        .expect("ServiceMonitor selector")
    {
        assert_eq!(
            service_labels.get(key),
            Some(value),
            "ServiceMonitor selects {key:?}"
        );
    }
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        Value::from("prometheus")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0],
        serde_yaml::from_str::<Value>(
            "{port: http-metrics, path: /metrics, interval: 30s, scrapeTimeout: 10s}"
        )
        .expect("YAML")
    );
}

#[test]
fn network_policies_allow_exactly_the_documented_ingress() {
    let objects = render(&all_options());
    let operator_policy = find(
        &objects,
        "NetworkPolicy",
        RELEASE_NAMESPACE,
        "cairn-operator",
    );
    assert_eq!(
        operator_policy["spec"],
        serde_yaml::from_str::<Value>(
            r#"
            podSelector:
              matchLabels:
                app.kubernetes.io/name: cairn
                app.kubernetes.io/instance: cairn
                app.kubernetes.io/component: operator
            policyTypes: [Ingress]
            ingress:
              - from:
                  - namespaceSelector:
                      matchLabels:
                        kubernetes.io/metadata.name: monitoring
                ports:
                  - {port: 8080, protocol: TCP}
            "#
        )
        .expect("YAML")
    );
    let worker_policy_spec = serde_yaml::from_str::<Value>(
        r#"
        podSelector:
          matchLabels:
            app.kubernetes.io/name: cairn-worker
        policyTypes: [Ingress]
        ingress:
          - from:
              - namespaceSelector:
                  matchLabels:
                    kubernetes.io/metadata.name: cairn-system
                podSelector:
                  matchLabels:
                    app.kubernetes.io/name: cairn
                    app.kubernetes.io/instance: cairn
                    app.kubernetes.io/component: operator
            ports:
              - {port: 9250, protocol: TCP}
          - from:
              - podSelector:
                  matchLabels:
                    app.kubernetes.io/name: cairn-worker
            ports:
              - {port: 7000, protocol: TCP}
          - from:
              - namespaceSelector:
                  matchLabels:
                    kubernetes.io/metadata.name: monitoring
            ports:
              - {port: 9249, protocol: TCP}
        "#,
    )
    .expect("YAML");
    for namespace in [RELEASE_NAMESPACE, "a", "b"] {
        let policy = find(&objects, "NetworkPolicy", namespace, "cairn-workers");
        assert_eq!(
            policy["spec"], worker_policy_spec,
            "worker policy in {namespace}"
        );
    }
    // On by default (docs/helm.md#networkpolicy), and off when asked.
    let count = |objects: &[Value]| {
        objects
            .iter()
            .filter(|object| kind(object) == "NetworkPolicy")
            .count()
    };
    assert_eq!(
        count(&render(&[])),
        2,
        "operator and worker policies by default"
    );
    assert_eq!(count(&render(&set(&["networkPolicy.enabled=false"]))), 0);
}

/// A value path (`image.tag`) and whether the schema describes it with inline properties
/// (a group of values) rather than as one value.
fn schema_paths(schema: &serde_json::Value) -> BTreeMap<String, bool> {
    fn walk(node: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, bool>) {
        let Some(properties) = node.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        assert_eq!(
            node.get("additionalProperties"),
            Some(&serde_json::Value::Bool(false)),
            "schema object {prefix:?} must reject unknown keys"
        );
        for (key, child) in properties {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let group = child.get("properties").is_some();
            out.insert(path.clone(), group);
            walk(child, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(schema, "", &mut out);
    out
}

#[test]
fn schema_rejects_unknown_keys_everywhere() {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json"))
        .expect("values.schema.json is readable");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    assert_eq!(
        schema["$schema"],
        serde_json::Value::from("http://json-schema.org/draft-07/schema#")
    );
    // Walking checks every object with properties, inline or under definitions.
    schema_paths(&schema);
    for (name, definition) in schema["definitions"]
        .as_object()
        .expect("schema definitions")
    {
        let mut nested = BTreeMap::new();
        nested.insert(name.clone(), definition.clone());
        schema_paths(&serde_json::json!({"properties": nested, "additionalProperties": false}));
    }
}

#[test]
fn every_value_is_commented_in_values_yaml_and_documented_in_docs() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    let paths = schema_paths(&schema);
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let lines: Vec<&str> = values.lines().collect();

    // Walk the key lines of values.yaml, tracking the path by indentation. A value is a path
    // the schema does not describe as a group; lines below a value are its content.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut found = BTreeSet::new();
    let mut uncommented = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            panic!("values.yaml line {}: not a key: {line}", index + 1);
        };
        while stack.last().is_some_and(|(level, _)| *level >= indent) {
            stack.pop();
        }
        let parent = stack.last().map(|(_, path)| path.clone());
        if let Some(parent) = &parent {
            if !paths.get(parent).copied().unwrap_or(false) {
                continue; // content of a value (a selector, a map), not a value itself
            }
        }
        let path = match parent {
            Some(parent) => format!("{parent}.{key}"),
            None => key.to_string(),
        };
        let group = *paths.get(&path).unwrap_or_else(|| {
            panic!(
                "values.yaml line {}: {path} is not in the schema",
                index + 1
            )
        });
        if !group {
            found.insert(path.clone());
            if index == 0 || !lines[index - 1].trim_start().starts_with('#') {
                uncommented.push(path.clone());
            }
        }
        stack.push((indent, path));
    }
    assert!(
        uncommented.is_empty(),
        "values without a comment right above them: {uncommented:?}"
    );
    let expected: BTreeSet<String> = paths
        .iter()
        .filter(|(path, group)| !**group && path.as_str() != "global")
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(
        found, expected,
        "values.yaml and the schema list the same values"
    );

    let docs = std::fs::read_to_string(repo_file("docs/helm.md")).expect("docs/helm.md");
    let undocumented: Vec<&String> = expected
        .iter()
        .filter(|path| !docs.contains(&format!("| `{path}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "values missing from the table of docs/helm.md: {undocumented:?}"
    );
}

#[test]
fn chart_matches_what_the_operator_code_uses() {
    // Ports and labels of worker pods come from the operator's builders, the Lease name and the
    // worker ServiceAccount default from its config: the chart must not drift from them.
    use cairn_operator::children::{child_labels, CONTROL_PORT, COORDINATOR_PORT, METRICS_PORT};
    use cairn_operator::config::OperatorConfig;

    let objects = render(&set(&["networkPolicy.enabled=true"]));
    let policy = find(
        &objects,
        "NetworkPolicy",
        RELEASE_NAMESPACE,
        "cairn-workers",
    );
    let ports: Vec<i64> = at(policy, &["spec", "ingress"])
        .and_then(Value::as_sequence)
        .expect("ingress rules")
        .iter()
        .map(|rule| rule["ports"][0]["port"].as_i64().expect("a numeric port"))
        .collect();
    assert_eq!(
        ports,
        vec![
            i64::from(CONTROL_PORT),
            i64::from(COORDINATOR_PORT),
            i64::from(METRICS_PORT)
        ]
    );
    let worker_labels = child_labels("any-job");
    for (key, value) in at(policy, &["spec", "podSelector", "matchLabels"])
        .and_then(Value::as_mapping)
        .expect("worker pod selector")
    {
        let key = key.as_str().expect("a label key");
        assert_eq!(
            worker_labels.get(key).map(String::as_str),
            value.as_str(),
            "worker pods carry {key}"
        );
    }

    let defaults = OperatorConfig::default();
    assert_eq!(defaults.worker_service_account, WORKER_SA);
    // The chart's policy defaults are the operator's, and its schema knows every volume type
    // the operator accepts.
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let volume_types: Vec<&str> = values["policy"]["allowedVolumeTypes"]
        .as_sequence()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert_eq!(volume_types, defaults.policy.allowed_volume_types);
    assert_eq!(
        values["policy"]["secretAccess"].as_str(),
        Some(defaults.policy.secret_access.as_str())
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    let mut known: Vec<&str> = cairn_operator::config::KNOWN_VOLUME_TYPES.to_vec();
    known.extend(["serviceAccountToken", "*"]);
    let enumerated: Vec<&str> = schema["properties"]["policy"]["properties"]["allowedVolumeTypes"]
        ["items"]["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert_eq!(enumerated, known);
    let lease_role = find(
        &objects,
        "Role",
        RELEASE_NAMESPACE,
        "cairn-operator-leader-election",
    );
    assert_eq!(rules(lease_role)[1].2, defaults.lease_name);
    assert_eq!(
        operator_env(&objects)["CAIRN_HTTP_ADDR"],
        defaults.http_addr.to_string()
    );
}

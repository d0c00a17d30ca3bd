//! The exact sequence of API calls of a reconcile, against a scripted API server (tower-test)
//! and a scripted job control API: the first deployment, and the upgrade steps around the
//! savepoint, where order matters most (status before deletion), the rollback of an upgrade
//! that never became healthy, a job the operator's policy refuses (no child is created), and a
//! panicking reconcile (caught; other jobs keep being reconciled).

mod common;

use std::sync::{Arc, Mutex};

use cairn_contract::control::{
    self as wire, JobStatus, OperationKind as WireKind, OperationState, SavepointInfo,
};
use cairn_operator::control::{BoxFuture, ControlApi, ControlError, Endpoint};
use cairn_operator::crd::{Operation, OperationKind, Phase, Step, StreamJob};
use cairn_operator::metrics::Metrics;
use cairn_operator::reconcile::{reconcile, Context};
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::Client;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Operation `savepoint-1` as the job's control API answers it.
fn savepoint_operation(
    state: OperationState,
    stop: bool,
    savepoint: Option<SavepointInfo>,
) -> wire::Operation {
    wire::Operation {
        id: "savepoint-1".into(),
        kind: WireKind::Savepoint,
        stop,
        state,
        checkpoint: savepoint.as_ref().map(|s| s.checkpoint),
        savepoint,
        error: None,
        started_at_ms: 1_790_000_000_000,
    }
}

/// A job whose control API answers from a script.
#[derive(Default)]
struct ScriptedJob {
    calls: Mutex<Vec<String>>,
    operation: Mutex<Option<wire::Operation>>,
}

impl ControlApi for ScriptedJob {
    fn status<'a>(&'a self, _: &'a Endpoint) -> BoxFuture<'a, Result<JobStatus, ControlError>> {
        self.calls.lock().unwrap().push("GET /v1/status".into());
        Box::pin(async {
            Err(ControlError::Unreachable {
                addr: "10.1.0.5:9250".parse().unwrap(),
                reason: "scripted".into(),
            })
        })
    }
    fn savepoint<'a>(
        &'a self,
        _: &'a Endpoint,
        stop: bool,
    ) -> BoxFuture<'a, Result<wire::Operation, ControlError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("POST /v1/savepoints stop={stop}"));
        Box::pin(async move { Ok(savepoint_operation(OperationState::Pending, stop, None)) })
    }
    fn operation<'a>(
        &'a self,
        _: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<wire::Operation, ControlError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("GET /v1/operations/{id}"));
        let answer = self.operation.lock().unwrap().clone();
        Box::pin(async move {
            answer.ok_or(ControlError::Status {
                addr: "10.1.0.5:9250".parse().unwrap(),
                status: 404,
                body: "none".into(),
            })
        })
    }
}

fn context(client: Client, job: Arc<ScriptedJob>) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        control: job,
        config: common::config(),
        metrics: Arc::new(Metrics::default()),
        reporter: Reporter {
            controller: "cairn-operator".into(),
            instance: None,
        },
        panics: Default::default(),
        loads: Default::default(),
    })
}

fn job() -> StreamJob {
    let mut sj = common::manifest("examples/k8s/count.yaml");
    sj.metadata.namespace = Some("jobs".into());
    sj.metadata.uid = Some("uid-1".into());
    sj.metadata.generation = Some(1);
    sj
}

fn not_found() -> Response<Body> {
    let body = serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"});
    Response::builder()
        .status(404)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// Answers requests until the reconcile finishes, recording "METHOD path" of each (events
/// are recorded as "event <reason>") and its body, in the same order.
async fn serve_with_bodies(
    handle: Handle,
    sj: StreamJob,
    pods: serde_json::Value,
) -> (Vec<String>, Vec<serde_json::Value>) {
    serve_with_sets(handle, sj, pods, set_list(&[])).await
}

/// [`serve_with_bodies`], listing `sets` as the job's StatefulSets.
async fn serve_with_sets(
    mut handle: Handle,
    sj: StreamJob,
    pods: serde_json::Value,
    sets: serde_json::Value,
) -> (Vec<String>, Vec<serde_json::Value>) {
    let mut seen = Vec::new();
    let mut bodies = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bodies.push(json.clone());
        let response = if path.contains("/events") {
            seen.push(format!("event {}", json["reason"].as_str().unwrap_or("?")));
            ok(json)
        } else {
            seen.push(format!(
                "{method} {path}{}",
                if query.contains("propagationPolicy=Foreground")
                    || json["propagationPolicy"] == "Foreground"
                {
                    " (foreground)"
                } else {
                    ""
                }
            ));
            match (method.as_str(), path.as_str()) {
                ("GET", p) if p.ends_with("/pods") => ok(pods.clone()),
                ("GET", p) if p.ends_with("/statefulsets") => ok(sets.clone()),
                ("GET", _) => not_found(),
                ("PATCH", p) if p.ends_with("/status") => {
                    let mut obj = serde_json::to_value(&sj).unwrap();
                    obj["status"] = json["status"].clone();
                    ok(obj)
                }
                ("DELETE", _) => {
                    ok(serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Success"}))
                }
                _ => ok(json),
            }
        };
        send.send_response(response);
    }
    (seen, bodies)
}

/// Reconciles `sj` once against a scripted API server that lists `pods`, with `job` as the
/// job's control API; returns the API calls and their bodies.
async fn reconcile_against(
    sj: &StreamJob,
    pods: serde_json::Value,
    job: &Arc<ScriptedJob>,
) -> (Vec<String>, Vec<serde_json::Value>) {
    reconcile_with_sets(sj, pods, &[], job).await
}

/// [`reconcile_against`] with the StatefulSets called `sets` in the cluster.
async fn reconcile_with_sets(
    sj: &StreamJob,
    pods: serde_json::Value,
    sets: &[&str],
    job: &Arc<ScriptedJob>,
) -> (Vec<String>, Vec<serde_json::Value>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve_with_sets(handle, sj.clone(), pods, set_list(sets)));
    let ctx = context(Client::new(service, "default"), job.clone());
    reconcile(Arc::new(sj.clone()), ctx.clone())
        .await
        .expect("reconcile");
    // The server ends when the last client (in the context) is gone.
    drop(ctx);
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the reconcile's requests end")
        .unwrap()
}

/// A (metadata-only) list of the StatefulSets called `names` in `jobs`.
fn set_list(names: &[&str]) -> serde_json::Value {
    let items: Vec<_> = names
        .iter()
        .map(|name| serde_json::json!({"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":{"name":name,"namespace":"jobs"}}))
        .collect();
    serde_json::json!({"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{},"items":items})
}

/// A PodList of `(name, ip)` running pods in `jobs`.
fn pod_list(pods: &[(&str, &str)]) -> serde_json::Value {
    let items: Vec<_> = pods
        .iter()
        .map(|(name, ip)| serde_json::json!({"metadata":{"name":name,"namespace":"jobs"},"status":{"podIP":ip,"phase":"Running"}}))
        .collect();
    serde_json::json!({"kind":"PodList","apiVersion":"v1","metadata":{},"items":items})
}

#[tokio::test]
async fn first_deployment_writes_status_then_creates_every_child() {
    let scripted = Arc::new(ScriptedJob::default());
    let (seen, _) = reconcile_against(&job(), pod_list(&[]), &scripted).await;
    assert_eq!(
        seen,
        [
            "GET /api/v1/namespaces/jobs/secrets/count-control",
            "GET /apis/apps/v1/namespaces/jobs/statefulsets",
            "GET /api/v1/namespaces/jobs/pods",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "event Deploying",
            "POST /api/v1/namespaces/jobs/secrets",
            "PATCH /api/v1/namespaces/jobs/configmaps/count-job",
            "PATCH /api/v1/namespaces/jobs/services/count",
            "PATCH /apis/policy/v1/namespaces/jobs/poddisruptionbudgets/count",
            "PATCH /apis/apps/v1/namespaces/jobs/statefulsets/count",
        ]
    );
    assert!(
        scripted.calls.lock().unwrap().is_empty(),
        "no pod 0 yet: the job is not called"
    );
}

#[tokio::test]
async fn upgrade_records_the_savepoint_in_status_before_deleting_the_workers() {
    let pods = pod_list(&[("count-0", "10.1.0.5"), ("count-1", "10.1.0.6")]);
    // Running job, upgrade in flight: the savepoint was requested and has now succeeded.
    let mut sj = job();
    let mut status = cairn_operator::crd::StreamJobStatus {
        phase: Some(Phase::Upgrading),
        ..Default::default()
    };
    let deployed = recorded(&sj, "old");
    status.deployed = Some(deployed.clone());
    status.last_good = Some(deployed);
    status.operation = Some(Operation {
        control_operation: Some("savepoint-1".into()),
        ..upgrade_operation(Step::TakingSavepoint, None)
    });
    sj.spec.image = Some("cairn/worker:2".into());
    sj.status = Some(status);
    let scripted = Arc::new(ScriptedJob::default());
    *scripted.operation.lock().unwrap() = Some(savepoint_operation(
        OperationState::Succeeded,
        true,
        Some(SavepointInfo {
            url: "file:///var/lib/cairn-store/count/savepoints/sp-9".into(),
            id: "sp-9".into(),
            checkpoint: 9,
        }),
    ));

    // Reconcile 1: the savepoint goes into status; nothing is deleted yet.
    let (seen, _) = reconcile_against(&sj, pods.clone(), &scripted).await;
    assert_eq!(
        seen,
        [
            "GET /api/v1/namespaces/jobs/secrets/count-control",
            "GET /apis/apps/v1/namespaces/jobs/statefulsets",
            "GET /api/v1/namespaces/jobs/pods",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "event SavepointTaken",
        ]
    );
    assert_eq!(
        *scripted.calls.lock().unwrap(),
        ["GET /v1/status", "GET /v1/operations/savepoint-1"]
    );

    // Reconcile 2 (status now says StoppingWorkers with the savepoint): delete the workers.
    let mut next = sj.clone();
    let mut st = next.status.clone().unwrap();
    let op = st.operation.as_mut().unwrap();
    op.step = Step::StoppingWorkers;
    op.savepoint = Some("file:///var/lib/cairn-store/count/savepoints/sp-9".into());
    op.control_operation = None;
    next.status = Some(st);
    let (seen, _) = reconcile_against(&next, pods.clone(), &scripted).await;
    let tail: Vec<_> = seen.iter().skip(3).map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count (foreground)",
            "GET /api/v1/namespaces/jobs/pods",
            "DELETE /api/v1/namespaces/jobs/pods/count-0",
            "DELETE /api/v1/namespaces/jobs/pods/count-1",
        ],
        "{seen:?}"
    );
}

/// A deployment of `sj`'s spec as status records it, with a made-up `hash` the test can follow.
fn recorded(sj: &StreamJob, hash: &str) -> cairn_operator::crd::Deployment {
    let desired = cairn_operator::validate::validate("count", &sj.spec, &common::config()).unwrap();
    cairn_operator::crd::Deployment {
        pods: desired.pods.to_value(),
        hash: hash.into(),
        ..Default::default()
    }
}

/// The status is written once per reconcile. A savepoint the plan asks for is requested first,
/// so the one write records the job's operation id with the operation; nothing is deleted.
#[tokio::test]
async fn a_savepoint_request_is_recorded_in_the_one_status_write() {
    let pods = pod_list(&[("count-0", "10.1.0.5"), ("count-1", "10.1.0.6")]);
    let mut sj = job();
    let running = recorded(&sj, "old");
    // An upgrade just started: its savepoint is to be asked for.
    sj.status = Some(cairn_operator::crd::StreamJobStatus {
        phase: Some(Phase::Upgrading),
        deployed: Some(running.clone()),
        last_good: Some(running),
        operation: Some(upgrade_operation(Step::TakingSavepoint, None)),
        ..Default::default()
    });
    sj.spec.image = Some("cairn/worker:2".into());
    let scripted = Arc::new(ScriptedJob::default());

    let (seen, bodies) = reconcile_against(&sj, pods, &scripted).await;
    assert_eq!(
        seen,
        [
            "GET /api/v1/namespaces/jobs/secrets/count-control",
            "GET /apis/apps/v1/namespaces/jobs/statefulsets",
            "GET /api/v1/namespaces/jobs/pods",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
        ]
    );
    assert_eq!(
        *scripted.calls.lock().unwrap(),
        ["GET /v1/status", "POST /v1/savepoints stop=true"]
    );
    let op = &bodies[3]["status"]["operation"];
    assert_eq!(
        (
            op["kind"].as_str(),
            op["step"].as_str(),
            op["controlOperation"].as_str()
        ),
        (
            Some("Upgrade"),
            Some("TakingSavepoint"),
            Some("savepoint-1")
        )
    );
    // The conditions were computed with that status: an upgrade is in progress.
    let progressing = bodies[3]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["status"], "True", "{progressing}");
}

fn upgrade_operation(step: Step, savepoint: Option<&str>) -> Operation {
    Operation {
        kind: OperationKind::Upgrade,
        step,
        target: None,
        control_operation: None,
        savepoint: savepoint.map(str::to_owned),
        attempts: 0,
        retry_after: None,
        started_at: "2026-01-01T00:00:00Z".into(),
        step_started_at: "2026-01-01T00:00:00Z".into(),
        message: None,
        housekeeping: None,
        trigger: None,
    }
}

#[tokio::test]
async fn failed_upgrade_rolls_back_from_the_same_savepoint() {
    const SAVEPOINT: &str = "file:///var/lib/cairn-store/count/savepoints/sp-9";
    let pods = pod_list(&[("count-0", "10.1.0.5"), ("count-1", "10.1.0.6")]);
    // The new workers started from the savepoint long ago (upgradeTimeout is 3m) and have not
    // committed a checkpoint (their control API does not answer).
    let mut sj = job();
    let good = recorded(&sj, "good");
    sj.spec.image = Some("cairn/worker:broken".into());
    let new = cairn_operator::crd::Deployment {
        savepoint: Some(SAVEPOINT.into()),
        ..recorded(&sj, "broken")
    };
    sj.status = Some(cairn_operator::crd::StreamJobStatus {
        phase: Some(Phase::Upgrading),
        deployed: Some(new),
        last_good: Some(good),
        operation: Some(upgrade_operation(Step::AwaitingCheckpoint, Some(SAVEPOINT))),
        ..Default::default()
    });
    let scripted = Arc::new(ScriptedJob::default());

    // Reconcile 1: status says RollingBack (with the failed spec's hash) before the broken
    // workers are deleted; a Warning event names the savepoint.
    let (seen, bodies) = reconcile_against(&sj, pods.clone(), &scripted).await;
    assert_eq!(
        seen,
        [
            "GET /api/v1/namespaces/jobs/secrets/count-control",
            "GET /apis/apps/v1/namespaces/jobs/statefulsets",
            "GET /api/v1/namespaces/jobs/pods",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "event UpgradeFailed",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count (foreground)",
            "GET /api/v1/namespaces/jobs/pods",
            "DELETE /api/v1/namespaces/jobs/pods/count-0",
            "DELETE /api/v1/namespaces/jobs/pods/count-1",
        ]
    );
    let status = &bodies[3]["status"];
    assert_eq!(
        (
            status["phase"].as_str(),
            status["failedHash"].as_str(),
            status["operation"]["kind"].as_str(),
            status["operation"]["step"].as_str(),
            status["operation"]["target"]["hash"].as_str(),
            status["operation"]["target"]["savepoint"].as_str(),
        ),
        (
            Some("RollingBack"),
            Some("broken"),
            Some("Rollback"),
            Some("StoppingWorkers"),
            Some("good"),
            Some(SAVEPOINT)
        )
    );
    assert_eq!(bodies[4]["type"], "Warning");
    assert!(
        bodies[4]["note"].as_str().unwrap().contains(SAVEPOINT),
        "{}",
        bodies[4]
    );

    // Reconcile 2 (the workers are gone): status first, then the good spec's children, whose
    // job document restores from the same savepoint.
    let mut next = sj.clone();
    next.status = Some(serde_json::from_value(status.clone()).unwrap());
    let (seen, bodies) = reconcile_against(&next, pod_list(&[]), &scripted).await;
    assert_eq!(
        seen[3..],
        [
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "POST /api/v1/namespaces/jobs/secrets",
            "PATCH /api/v1/namespaces/jobs/configmaps/count-job",
            "PATCH /api/v1/namespaces/jobs/services/count",
            "PATCH /apis/policy/v1/namespaces/jobs/poddisruptionbudgets/count",
            "PATCH /apis/apps/v1/namespaces/jobs/statefulsets/count",
        ]
    );
    assert_eq!(
        bodies[3]["status"]["operation"]["step"],
        "AwaitingCheckpoint"
    );
    let job_yaml = bodies[5]["data"]["job.yaml"].as_str().unwrap();
    assert!(
        job_yaml.contains(&format!("savepoint: {SAVEPOINT}")),
        "{job_yaml}"
    );
    let image = &bodies[8]["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(
        image, "cairn/worker:test",
        "the good spec's image (the default)"
    );
}

/// A StreamJob against the operator's policy (a hostPath volume, an unlabelled Secret): its
/// status and a Warning event say why, and no child object is created.
#[tokio::test]
async fn a_job_against_the_policy_gets_no_child_objects() {
    let mut sj = job();
    sj.spec.credentials_secret = Some("s3-credentials".into());
    let pod = sj.spec.pod_template.as_mut().unwrap();
    pod.volumes.push(
        serde_json::from_value(serde_json::json!({"name": "node", "hostPath": {"path": "/"}}))
            .unwrap(),
    );
    let scripted = Arc::new(ScriptedJob::default());
    let (seen, bodies) = reconcile_against(&sj, pod_list(&[]), &scripted).await;
    assert_eq!(
        seen,
        [
            // The Secret's labels (metadata only): it does not exist here.
            "GET /api/v1/namespaces/jobs/secrets/s3-credentials",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "event PolicyViolation",
        ]
    );
    let status = &bodies[1]["status"];
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
            .clone()
    };
    let volume = "spec.podTemplate.volumes[1] (\"node\"): volume type hostPath is not allowed (allowed: configMap, downwardAPI, emptyDir, persistentVolumeClaim, secret); use another volume type, or have the operator's administrator add it to --allowed-volume-types (chart value policy.allowedVolumeTypes)";
    let secret = "spec.credentialsSecret: Secret \"s3-credentials\" does not exist or is not labelled for StreamJobs; whoever manages it can allow it with `kubectl label secret s3-credentials cairn.dev/streamjob-access=allowed` (or the operator's administrator can set --secret-access any, chart value policy.secretAccess)";
    let message = format!("{volume}; {secret}");
    for type_ in ["Ready", "Degraded"] {
        let c = condition(type_);
        assert_eq!(
            (
                c["status"].as_str(),
                c["reason"].as_str(),
                c["message"].as_str()
            ),
            (
                Some(if type_ == "Ready" { "False" } else { "True" }),
                Some("PolicyViolation"),
                Some(message.as_str())
            ),
            "{type_}"
        );
    }
    assert_eq!(bodies[2]["type"], "Warning");
    assert_eq!(
        bodies[2]["note"],
        format!("{message}; the running job (if any) is left as it is")
    );
}

/// A job whose control API makes the operator panic (a stand-in for any bug on the reconcile
/// path): the panic is caught, counted, reported on that job, and another job reconciled at
/// the same time by the same operator is deployed as usual.
#[tokio::test]
async fn a_panicking_reconcile_is_caught_and_other_jobs_are_still_reconciled() {
    struct PanickingJob;
    impl ControlApi for PanickingJob {
        fn status<'a>(&'a self, _: &'a Endpoint) -> BoxFuture<'a, Result<JobStatus, ControlError>> {
            panic!("scripted panic in the control API")
        }
        fn savepoint<'a>(
            &'a self,
            _: &'a Endpoint,
            _: bool,
        ) -> BoxFuture<'a, Result<wire::Operation, ControlError>> {
            unreachable!()
        }
        fn operation<'a>(
            &'a self,
            _: &'a Endpoint,
            _: &'a str,
        ) -> BoxFuture<'a, Result<wire::Operation, ControlError>> {
            unreachable!()
        }
    }
    // `count` has a pod 0, so its reconcile calls the (panicking) control API; `other` has
    // none yet: its first deployment never calls it.
    let broken = job();
    let mut other = job();
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("uid-2".into());
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve_with_bodies(
        handle,
        broken.clone(),
        pod_list(&[("count-0", "10.1.0.5")]),
    ));
    let ctx = Arc::new(Context {
        control: Arc::new(PanickingJob),
        ..Arc::into_inner(context(Client::new(service, "default"), Arc::default())).unwrap()
    });
    let (broken_result, other_result) = tokio::join!(
        reconcile(Arc::new(broken.clone()), ctx.clone()),
        reconcile(Arc::new(other.clone()), ctx.clone()),
    );
    match broken_result {
        Err(cairn_operator::reconcile::Error::Panicked { panic }) => {
            assert_eq!(panic, "scripted panic in the control API")
        }
        other => panic!("expected a caught panic, got {other:?}"),
    }
    other_result.expect("the other job reconciles");
    let metrics = ctx.metrics.render();
    assert!(
        metrics
            .contains("cairn_operator_reconcile_panics_total{job=\"count\",namespace=\"jobs\"} 1"),
        "{metrics}"
    );
    // Retry delays of consecutive panics (error_policy records them): 10 s doubling to
    // 10 minutes; a reconcile that finishes clears them.
    let secs: Vec<u64> = (0..8)
        .map(|_| ctx.panics.record("jobs/count").as_secs())
        .collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 320, 600, 600]);
    ctx.panics.clear("jobs/count");
    assert_eq!(ctx.panics.record("jobs/count").as_secs(), 10);
    drop(ctx);
    let (seen, bodies) = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the reconciles' requests end")
        .unwrap();
    let events: Vec<&serde_json::Value> =
        bodies.iter().filter(|b| b["reason"].is_string()).collect();
    let panicked = events
        .iter()
        .find(|e| e["reason"] == "ReconcilePanicked")
        .expect("a ReconcilePanicked event");
    assert_eq!(panicked["type"], "Warning");
    assert_eq!(panicked["regarding"]["name"], "count");
    assert!(
        panicked["note"]
            .as_str()
            .unwrap()
            .contains("(scripted panic in the control API)"),
        "{panicked}"
    );
    assert!(
        seen.contains(&"PATCH /apis/apps/v1/namespaces/jobs/statefulsets/other".to_string()),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.contains("statefulsets/count") && s.starts_with("PATCH")),
        "{seen:?}"
    );
}

/// The standby example's first deployment applies both StatefulSets, the standbys' last.
#[tokio::test]
async fn a_job_with_standbys_gets_the_standby_set_too() {
    let mut sj = common::manifest("examples/k8s/standby.yaml");
    sj.metadata.namespace = Some("jobs".into());
    sj.metadata.uid = Some("uid-1".into());
    sj.metadata.generation = Some(1);
    let scripted = Arc::new(ScriptedJob::default());
    let (seen, bodies) = reconcile_against(&sj, pod_list(&[]), &scripted).await;
    assert_eq!(
        seen,
        [
            "GET /api/v1/namespaces/jobs/secrets/warm-count-control",
            "GET /apis/apps/v1/namespaces/jobs/statefulsets",
            "GET /api/v1/namespaces/jobs/pods",
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/warm-count/status",
            "event Deploying",
            "POST /api/v1/namespaces/jobs/secrets",
            "PATCH /api/v1/namespaces/jobs/configmaps/warm-count-job",
            "PATCH /api/v1/namespaces/jobs/services/warm-count",
            "PATCH /apis/policy/v1/namespaces/jobs/poddisruptionbudgets/warm-count",
            "PATCH /apis/apps/v1/namespaces/jobs/statefulsets/warm-count",
            "PATCH /apis/apps/v1/namespaces/jobs/statefulsets/warm-count-standby",
        ]
    );
    let standbys = &bodies[10];
    assert_eq!(
        (
            standbys["kind"].as_str(),
            standbys["spec"]["replicas"].as_i64(),
            standbys["spec"]["ordinals"]["start"].as_i64(),
            standbys["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        ),
        (
            Some("StatefulSet"),
            Some(2),
            Some(1),
            Some("cairn-worker-standby")
        )
    );
}

/// Stopping the workers of a job whose standbys' set exists deletes both sets and the pods of
/// both; a job without standbys whose standbys' set is left (standby turned off, here while
/// suspended) has it deleted; a job without one makes no call for it.
#[tokio::test]
async fn stopping_workers_deletes_the_standby_set_and_its_pods() {
    let pods = pod_list(&[
        ("count-0", "10.1.0.5"),
        ("count-1", "10.1.0.6"),
        ("count-standby-1", "10.1.0.7"),
    ]);
    let mut sj = job();
    let deployed = recorded(&sj, "old");
    sj.spec.image = Some("cairn/worker:2".into());
    sj.status = Some(cairn_operator::crd::StreamJobStatus {
        phase: Some(Phase::Upgrading),
        deployed: Some(deployed.clone()),
        last_good: Some(deployed.clone()),
        operation: Some(upgrade_operation(
            Step::StoppingWorkers,
            Some("file:///var/lib/cairn-store/count/savepoints/sp-9"),
        )),
        ..Default::default()
    });
    let scripted = Arc::new(ScriptedJob::default());
    let sets = ["count", "count-standby"];
    let (seen, _) = reconcile_with_sets(&sj, pods.clone(), &sets, &scripted).await;
    assert_eq!(
        seen[3..],
        [
            "PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count/status",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count (foreground)",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count-standby (foreground)",
            "GET /api/v1/namespaces/jobs/pods",
            "DELETE /api/v1/namespaces/jobs/pods/count-0",
            "DELETE /api/v1/namespaces/jobs/pods/count-1",
            "DELETE /api/v1/namespaces/jobs/pods/count-standby-1",
        ],
        "{seen:?}"
    );

    // Suspended, with a standbys' set left over: it goes with the workers' leftovers.
    let mut suspended = job();
    suspended.spec.state = cairn_operator::crd::DesiredState::Suspended;
    suspended.status = Some(cairn_operator::crd::StreamJobStatus {
        phase: Some(Phase::Suspended),
        deployed: Some(deployed.clone()),
        ..Default::default()
    });
    let (seen, _) =
        reconcile_with_sets(&suspended, pod_list(&[]), &["count-standby"], &scripted).await;
    assert_eq!(
        seen[seen.len() - 3..],
        [
            "DELETE /apis/policy/v1/namespaces/jobs/poddisruptionbudgets/count",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count (foreground)",
            "DELETE /apis/apps/v1/namespaces/jobs/statefulsets/count-standby (foreground)",
        ],
        "{seen:?}"
    );
    let (seen, _) = reconcile_with_sets(&suspended, pod_list(&[]), &[], &scripted).await;
    assert!(
        !seen.iter().any(|s| s.contains("count-standby")),
        "{seen:?}"
    );
}

/// A deleting job's reconcile that runs on a stale copy (the finalizer still on it) after an
/// earlier reconcile released the finalizer and the API server deleted the object: the finalizer
/// patch answers 404, and that is the job gone, not a failed reconcile (the fleet benchmark saw
/// one such error per deleted job with a finalizer).
#[tokio::test]
async fn releasing_the_finalizer_of_a_job_already_gone_is_not_an_error() {
    let mut sj = job();
    sj.metadata.finalizers = Some(vec![cairn_operator::reconcile::FINALIZER.into()]);
    sj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let response = match (method.as_str(), path.as_str()) {
                ("GET", p) if p.ends_with("/pods") => ok(pod_list(&[])),
                ("GET", p) if p.ends_with("/statefulsets") => ok(set_list(&[])),
                ("POST", p) if p.contains("/events") => ok(serde_json::json!({})),
                ("PATCH", p) if p.ends_with("/status") => ok(serde_json::to_value(job()).unwrap()),
                // The object is gone: the finalizer patch (and anything else) finds nothing.
                _ => not_found(),
            };
            seen.push(format!("{method} {path}"));
            send.send_response(response);
        }
        seen
    });
    let ctx = context(
        Client::new(service, "default"),
        Arc::new(ScriptedJob::default()),
    );
    let result = reconcile(Arc::new(sj), ctx.clone()).await;
    drop(ctx);
    let seen = server.await.unwrap();
    assert!(result.is_ok(), "{result:?}; calls {seen:?}");
    assert!(
        seen.contains(&"PATCH /apis/cairn.dev/v1alpha1/namespaces/jobs/streamjobs/count".into()),
        "the finalizer patch was tried: {seen:?}"
    );
}

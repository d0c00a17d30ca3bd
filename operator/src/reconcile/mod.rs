//! The reconcile pipeline: fetch -> validate -> plan -> status -> apply. Only `fetch`, `apply` and
//! `status` touch the API server or the job; validation, building and planning are pure.

mod apply;
mod fetch;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use rand::Rng;

use crate::conditions;
use crate::config::OperatorConfig;
use crate::control::ControlApi;
use crate::crd::{Phase, StreamJob, StreamJobStatus};
use crate::lifecycle::{self, Effect, Input};
use crate::metrics::Metrics;
use crate::validate::{pinned_spec, validate, validate_recorded, InvalidSpec, ValidatedJob};

pub use fetch::Fetched;

/// Finalizer present only while a final savepoint is wanted (state outside Kubernetes).
pub const FINALIZER: &str = "cairn.dev/final-savepoint";
/// Field manager of everything the operator applies.
pub const MANAGER: &str = "cairn-operator";

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// The jobs' control APIs.
    pub control: Arc<dyn ControlApi>,
    /// Settings.
    pub config: OperatorConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Who reports the events (a recorder is made per event: see `status::publish`).
    pub reporter: Reporter,
}

/// Why a reconcile failed (transient: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("Kubernetes API {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace (StreamJobs are namespaced; this cannot happen with a real API
    /// server).
    #[error("StreamJob {0} has no namespace")]
    NoNamespace(String),
    /// A deployment recorded in status no longer validates (the operator was downgraded?).
    #[error("the {which} spec recorded in status is no longer valid: {source}; run an operator version that accepts it, or clear status.deployed (kubectl edit sj <name> --subresource=status) to deploy the current spec")]
    RecordedSpec {
        /// `deployed` or `last good`.
        which: &'static str,
        /// Why.
        #[source]
        source: InvalidSpec,
    },
}

impl Error {
    /// Label of the error in `cairn_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::NoNamespace(_) => "no_namespace",
            Error::RecordedSpec { .. } => "recorded_spec",
        }
    }

    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// Reconciles one StreamJob.
pub async fn reconcile(sj: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&sj, &ctx).await;
    ctx.metrics
        .reconcile_seconds
        .with_label_values(&[] as &[&str])
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
        .inc();
    result
}

/// Retries a failed reconcile with exponential-ish backoff and jitter.
pub fn error_policy(sj: Arc<StreamJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    tracing::warn!(job = %sj.name_any(), namespace = ?sj.namespace(), %error, "reconcile failed; retrying");
    let jitter = rand::rng().random_range(0..2000);
    Action::requeue(Duration::from_millis(3000 + jitter))
}

async fn reconcile_inner(sj: &StreamJob, ctx: &Context) -> Result<Action, Error> {
    let name = sj.name_any();
    let namespace = sj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let status = sj.status.clone().unwrap_or_default();
    let deleting = sj.metadata.deletion_timestamp.is_some();
    if deleting && !fetch::has_finalizer(sj) {
        return Ok(Action::await_change());
    }

    // validate
    let desired = match validate(&name, &sj.spec, &ctx.config) {
        Ok(v) => v,
        Err(invalid) if !deleting => {
            return invalid_spec(sj, &namespace, status, invalid, ctx).await
        }
        Err(_) => {
            // A StreamJob whose spec became invalid can still be deleted.
            fetch::release_finalizer(sj, &namespace, ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let desired_spec = pinned_spec(&sj.spec, &desired);
    let deployed = recorded(
        status.deployed.as_ref().map(|d| &d.spec),
        ctx,
        &name,
        "deployed",
    )?;

    // fetch
    let fetched = fetch::fetch(sj, &namespace, &status, ctx).await?;
    if !deleting {
        fetch::sync_finalizer(sj, &namespace, desired.final_savepoint, ctx).await?;
    }

    // plan
    let now = Timestamp::now();
    let input = Input {
        generation: sj.metadata.generation,
        desired: &desired,
        desired_spec: &desired_spec,
        deployed: deployed.as_ref(),
        status: &status,
        observed: &fetched.observed,
        deleting,
        now,
    };
    let mut plan = lifecycle::plan(&input);
    plan.status.selector = Some(crate::build::selector_string(&name));

    // status first (the write-ahead log), then the effects
    let interval = deployed
        .as_ref()
        .unwrap_or(&desired)
        .job
        .checkpoint
        .interval;
    let facts = conditions::Facts {
        observed: &fetched.observed,
        checkpoint_interval: interval,
        desired_failed_before: plan.status.failed_spec_hash.as_deref()
            == Some(&desired.deploy_hash),
        invalid: None,
        now,
    };
    conditions::update(&mut plan.status, &facts);
    status::write(sj, &namespace, &status, &plan.status, ctx).await?;
    for note in &plan.notes {
        status::publish(sj, note, ctx).await;
    }
    if let Some((kind, seconds)) = plan.finished {
        ctx.metrics
            .operation_seconds
            .with_label_values(&[kind.as_str()])
            .observe(seconds);
    }
    record_checkpoint_age(&plan.status, &namespace, &name, now, ctx);

    let owner = fetch::owner(sj, &namespace);
    for effect in plan.effects.clone() {
        match effect {
            Effect::Apply {
                deployment,
                with_workers,
            } => {
                // Mostly the deployed or the desired spec, both validated above already.
                let job = match &deployed {
                    Some(d)
                        if status.deployed.as_ref().map(|x| &x.spec) == Some(&deployment.spec) =>
                    {
                        d.clone()
                    }
                    _ if deployment.spec == desired_spec => desired.clone(),
                    _ => recorded(Some(&deployment.spec), ctx, &name, "target")?
                        .expect("a recorded spec is present"),
                };
                apply::children(&job, &owner, &deployment, &fetched, with_workers, ctx).await?;
            }
            Effect::DeleteWorkers => apply::delete_workers(&owner, ctx).await?,
            Effect::RequestSavepoint { stop } => {
                let next =
                    request_savepoint(sj, &namespace, &input, &plan, &facts, &fetched, stop, ctx)
                        .await?;
                plan.requeue = next.requeue;
                plan.release_finalizer |= next.release_finalizer;
            }
        }
    }
    if plan.release_finalizer {
        fetch::release_finalizer(sj, &namespace, ctx).await?;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(
        plan.requeue.max(Duration::from_millis(200)),
    ))
}

/// Asks the job for a savepoint (the operation is already in the written status) and records
/// the control API's operation id, or counts a failed attempt. Returns the plan after it.
#[allow(clippy::too_many_arguments)]
async fn request_savepoint(
    sj: &StreamJob,
    namespace: &str,
    input: &Input<'_>,
    plan: &lifecycle::Plan,
    facts: &conditions::Facts<'_>,
    fetched: &Fetched,
    stop: bool,
    ctx: &Context,
) -> Result<lifecycle::Plan, Error> {
    let written = &plan.status;
    let outcome = match &fetched.endpoint {
        Some(at) => ctx
            .control
            .savepoint(at, stop)
            .await
            .map_err(|e| e.to_string()),
        None => Err("worker pod 0 has no address yet (not running)".into()),
    };
    let mut next = match outcome {
        Ok(op) => {
            let mut next = plan.clone();
            if let Some(o) = &mut next.status.operation {
                o.control_operation = Some(op.id);
                o.message = Some(format!("savepoint requested (stop: {stop})"));
            }
            next
        }
        Err(reason) => lifecycle::savepoint_request_failed(input, written.clone(), reason),
    };
    conditions::update(&mut next.status, facts);
    status::write(sj, namespace, written, &next.status, ctx).await?;
    for note in next.notes.iter().filter(|n| !plan.notes.contains(n)) {
        status::publish(sj, note, ctx).await;
    }
    Ok(next)
}

/// The spec as recorded in a deployment: defaults that come from the operator's flags (image,
/// service account) are written in, so a later operator with other defaults rebuilds the same
/// pods.
fn recorded(
    spec: Option<&serde_json::Value>,
    ctx: &Context,
    name: &str,
    which: &'static str,
) -> Result<Option<ValidatedJob>, Error> {
    spec.map(|spec| validate_recorded(name, spec, &ctx.config))
        .transpose()
        .map_err(|source| Error::RecordedSpec { which, source })
}

/// An invalid spec: say why in status and an event, change nothing else, wait for an edit.
async fn invalid_spec(
    sj: &StreamJob,
    namespace: &str,
    status: StreamJobStatus,
    invalid: InvalidSpec,
    ctx: &Context,
) -> Result<Action, Error> {
    let message = invalid.problems.join("; ");
    let mut next = status.clone();
    next.observed_generation = sj.metadata.generation;
    next.last_error = Some(message.clone());
    if next.deployed.is_none() {
        next.phase = Some(Phase::Failed);
    }
    let facts = conditions::Facts {
        observed: &Default::default(),
        checkpoint_interval: cairn_spec::DEFAULT_CHECKPOINT_INTERVAL,
        desired_failed_before: false,
        invalid: Some(&message),
        now: Timestamp::now(),
    };
    conditions::update(&mut next, &facts);
    if next != status {
        status::write(sj, namespace, &status, &next, ctx).await?;
        status::publish(
            sj,
            &lifecycle::Note {
                warning: true,
                reason: "InvalidSpec",
                message: format!("{message}; the running job (if any) is left as it is"),
            },
            ctx,
        )
        .await;
    }
    Ok(Action::await_change())
}

fn record_checkpoint_age(
    status: &StreamJobStatus,
    namespace: &str,
    name: &str,
    now: Timestamp,
    ctx: &Context,
) {
    if let Some(t) = status
        .last_checkpoint
        .as_ref()
        .and_then(|c| c.time.parse::<Timestamp>().ok())
    {
        let age = now.duration_since(t).as_secs_f64().max(0.0);
        ctx.metrics
            .checkpoint_age
            .with_label_values(&[namespace, name])
            .set(age);
    }
}

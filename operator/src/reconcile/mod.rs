//! The reconcile pipeline: validate -> fetch -> plan -> status -> apply. Only `fetch`, `apply`
//! and `status` touch the API server or the job; validation, planning and building are pure.
//!
//! The status is written once per reconcile, before any child changes: it is the write-ahead log
//! (a savepoint is recorded before any pod is deleted, a deployment before its pods are
//! created). The one call made before it is a savepoint request the plan asked for, because its
//! answer belongs in that status (see [`lifecycle::savepoint_answered`]).

mod apply;
mod fetch;
mod finalizer;
mod status;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use rand::Rng;

use crate::config::OperatorConfig;
use crate::control::ControlApi;
use crate::crd::{Deployment, StreamJob, StreamJobStatus};
use crate::lifecycle::{self, conditions, Effect, Input, LoadMemory};
use crate::metrics::Metrics;
use crate::pods::RecordedError;
use crate::policy;
use crate::validate::validate;

pub use fetch::Fetched;

/// Finalizer present only while deletion has work outside Kubernetes: a final savepoint, or
/// deleting the store's data (`checkpointData: delete`). Its name predates the second use.
pub const FINALIZER: &str = "cairn.dev/final-savepoint";
/// Field manager of everything the operator applies.
pub const MANAGER: &str = "cairn-operator";
/// How often a StreamJob refused by the policy is checked again (a Secret may have been
/// labelled meanwhile); a spec change is seen at once.
pub const POLICY_RECHECK: Duration = Duration::from_secs(60);

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
    /// Consecutive panicked reconciles per StreamJob, for their retry backoff.
    pub panics: PanicCounts,
    /// What the autoscaler remembers of each autoscaled job between reconciles.
    pub loads: LoadMemories,
}

/// First retry delay after a panicked reconcile; doubles per consecutive panic up to
/// [`lifecycle::MAX_REQUEUE`]. A panic is a bug that usually repeats: retrying it every few
/// seconds would only fill the log and the job's events.
pub const FIRST_PANIC_BACKOFF: Duration = Duration::from_secs(10);

/// Consecutive panicked reconciles of each StreamJob (`namespace/name`); cleared by a reconcile
/// that finishes.
#[derive(Debug, Default)]
pub struct PanicCounts(Mutex<HashMap<String, u32>>);

impl PanicCounts {
    /// Counts a panic of `key`; returns the delay before its retry.
    pub fn record(&self, key: &str) -> Duration {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        FIRST_PANIC_BACKOFF
            .saturating_mul(1 << n.saturating_sub(1).min(10))
            .min(lifecycle::MAX_REQUEUE)
    }

    /// Forgets `key`'s panics (its reconcile finished).
    pub fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The autoscaler's memory of each autoscaled StreamJob (by uid): only jobs with
/// `spec.autoscaler` have an entry; it goes when the job loses its autoscaler, and when it has
/// not been touched for [`FORGET_LOAD_AFTER`] (a deleted job is not reconciled again).
#[derive(Debug, Default)]
pub struct LoadMemories(Mutex<HashMap<String, (Instant, LoadMemory)>>);

/// A job's load memory untouched this long is dropped: a running autoscaled job is looked at
/// every 10 s, so only a deleted job's (or a long-suspended one's, which starts a new run
/// anyway) goes.
pub const FORGET_LOAD_AFTER: Duration = Duration::from_secs(3600);

impl LoadMemories {
    /// What is remembered of `uid`.
    pub fn get(&self, uid: &str) -> Option<LoadMemory> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uid).map(|(_, m)| m.clone())
    }

    /// Remembers `memory` for `uid`, or forgets it; forgets every entry untouched for
    /// [`FORGET_LOAD_AFTER`].
    pub fn put(&self, uid: &str, memory: Option<LoadMemory>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (touched, _)| touched.elapsed() < FORGET_LOAD_AFTER);
        match memory {
            Some(m) => {
                map.insert(uid.to_owned(), (Instant::now(), m));
            }
            None => {
                map.remove(uid);
            }
        }
    }
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
    /// The reconcile panicked (a bug): caught, so that one StreamJob cannot stop the operator
    /// from reconciling the others; reported on the object and retried with backoff.
    #[error("the reconcile panicked (a bug in the operator; please report it with the operator's log): {panic}")]
    Panicked {
        /// The panic message.
        panic: String,
    },
    /// A deployment recorded in status does not read (written by another operator version, or
    /// edited by hand).
    #[error(transparent)]
    Recorded(#[from] RecordedError),
}

impl Error {
    /// Label of the error in `cairn_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::NoNamespace(_) => "no_namespace",
            Error::Recorded(_) => "recorded_status",
            Error::Panicked { .. } => "panic",
        }
    }

    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A failed apply of the standbys' StatefulSet `name`: when the set was not this job's
    /// already and the API server refused it as invalid (a StatefulSet's selector cannot change),
    /// the name is taken, most likely by the workers of a StreamJob called `name`.
    fn naming_the_standby_set(self, name: &str, ours: bool) -> Error {
        match self {
            Error::Kube {
                source: kube::Error::Api(e),
                ..
            } if !ours && e.code == 422 => Error::Kube {
                action: format!("applying StatefulSet {name}, the standbys of this job (a StatefulSet of that name exists and is not this job's standby set: a StreamJob called {name}? Rename one of the two jobs, or turn standby off)"),
                source: kube::Error::Api(e),
            },
            other => other,
        }
    }
}

/// Reconciles one StreamJob. A panic anywhere in it is caught here and becomes
/// [`Error::Panicked`]: kube-runtime would re-raise it and stop the whole operator, for every
/// namespace, without naming the job.
pub async fn reconcile(sj: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // Unwind safety: a panic abandons this reconcile's own values; what it shares (the
    // metrics, the panic counts) is only ever updated by whole operations, and the next
    // reconcile starts again from the object and its status.
    let result = match AssertUnwindSafe(reconcile_inner(&sj, &ctx))
        .catch_unwind()
        .await
    {
        Ok(result) => {
            ctx.panics.clear(&object_key(&sj));
            result
        }
        Err(payload) => Err(panicked(&sj, panic_message(payload.as_ref()), &ctx).await),
    };
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

/// Retries a failed reconcile after 3-5 s (jitter), or, after a panic, with a backoff that
/// doubles per consecutive panic of the same StreamJob.
pub fn error_policy(sj: Arc<StreamJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    tracing::warn!(job = %sj.name_any(), namespace = ?sj.namespace(), %error, "reconcile failed; retrying");
    let jitter = Duration::from_millis(rand::rng().random_range(0..2000));
    match error {
        Error::Panicked { .. } => Action::requeue(ctx.panics.record(&object_key(&sj)) + jitter),
        _ => Action::requeue(Duration::from_secs(3) + jitter),
    }
}

/// The message of a panic (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// `namespace/name` of a StreamJob (keys of [`PanicCounts`], labels of logs).
fn object_key(sj: &StreamJob) -> String {
    format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any())
}

/// A caught panic: logged with the job's name, counted, reported on the object as a Warning
/// event. The status is not written: what panicked may be the status computation itself, and a
/// partial status written with server-side apply would drop the write-ahead log.
async fn panicked(sj: &StreamJob, panic: String, ctx: &Context) -> Error {
    let namespace = sj.namespace().unwrap_or_default();
    let name = sj.name_any();
    tracing::error!(%namespace, job = %name, %panic, "reconcile panicked; the other StreamJobs are still reconciled, this one is retried with backoff");
    ctx.metrics
        .reconcile_panics
        .with_label_values(&[namespace.as_str(), name.as_str()])
        .inc();
    status::publish(
        sj,
        &lifecycle::Note {
            warning: true,
            reason: "ReconcilePanicked",
            message: format!("the operator hit a bug while reconciling this StreamJob and stopped this attempt ({panic}); nothing after that point was changed, other StreamJobs are not affected, and it is retried with a growing delay (10s doubling to 10m). Please report it with the operator's log"),
        },
        ctx,
    )
    .await;
    Error::Panicked { panic }
}

async fn reconcile_inner(sj: &StreamJob, ctx: &Context) -> Result<Action, Error> {
    let name = sj.name_any();
    let namespace = sj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let status = sj.status.clone().unwrap_or_default();
    let deleting = sj.metadata.deletion_timestamp.is_some();
    if deleting && !finalizer::has_finalizer(sj) {
        return Ok(Action::await_change());
    }

    // validate (with the autoscaler's P, when it chose one)
    let desired = match validate(&name, &sj.spec, &ctx.config) {
        Ok(v) => lifecycle::with_autoscaled_parallelism(v, &status),
        Err(invalid) if !deleting => {
            let message = invalid.problems.join("; ");
            refuse(
                sj,
                &namespace,
                &status,
                conditions::INVALID_SPEC,
                &message,
                ctx,
            )
            .await?;
            return Ok(Action::await_change());
        }
        Err(_) => {
            // A StreamJob whose spec became invalid can still be deleted.
            finalizer::release_finalizer(sj, &namespace, ctx).await?;
            return Ok(Action::await_change());
        }
    };
    // policy: before anything is created (deletion creates nothing, so it is never refused)
    if !deleting {
        let labelled = fetch::labelled_secrets(&namespace, &desired.pods, ctx).await?;
        if let Err(violation) = policy::check(&desired.pods, &ctx.config.policy, &labelled) {
            let message = violation.problems.join("; ");
            let reason = conditions::POLICY_VIOLATION;
            refuse(sj, &namespace, &status, reason, &message, ctx).await?;
            // Labelling a Secret does not touch the StreamJob: look again now and then.
            return Ok(Action::requeue(POLICY_RECHECK));
        }
    }
    // What the deployed pods run, read back as it was recorded (never validated again).
    let deployed = status
        .deployed
        .as_ref()
        .map(|d| d.pods("status.deployed.pods"))
        .transpose()?;

    // fetch
    let mut fetched = fetch::fetch(sj, &namespace, &status, ctx).await?;
    let uid = sj.uid().unwrap_or_default();
    fetched.observed.load = ctx.loads.get(&uid);
    if !deleting {
        finalizer::sync_finalizer(sj, &namespace, desired.needs_finalizer(), ctx).await?;
    }

    // plan
    let now = Timestamp::now();
    let input = Input {
        generation: sj.metadata.generation,
        desired: &desired,
        deployed: deployed.as_ref(),
        status: &status,
        observed: &fetched.observed,
        deleting,
        now,
    };
    let mut plan = lifecycle::plan(&input);
    plan.status.selector = Some(crate::children::selector_string(&name));
    let savepoint_request = plan.effects.iter().find_map(|e| match e {
        Effect::RequestSavepoint { stop } => Some(*stop),
        _ => None,
    });
    if let Some(stop) = savepoint_request {
        let answer = request_savepoint(&fetched, stop, ctx).await;
        plan = lifecycle::savepoint_answered(&input, plan, answer);
    }

    // status, once, then the effects
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
    for effect in &plan.effects {
        match effect {
            Effect::Apply {
                deployment,
                with_workers,
            } => {
                let pods = recorded_pods(deployment, &plan.status)?;
                apply::children(&pods, deployment, &owner, &fetched, *with_workers, ctx).await?;
            }
            Effect::DeleteWorkers => apply::delete_workers(&owner, &fetched, ctx).await?,
            Effect::RunHousekeeping {
                name,
                kind,
                pods,
                args,
                env,
            } => {
                let run = crate::children::housekeeping::Run {
                    name,
                    kind: *kind,
                    pods,
                    args,
                    env,
                };
                apply::run_housekeeping(&owner, run, ctx).await?
            }
            Effect::DeleteHousekeeping { name } => {
                apply::delete_housekeeping(&owner, name, ctx).await?
            }
            Effect::RequestSavepoint { .. } => {} // asked above, before the status was written
        }
    }
    ctx.loads
        .put(&uid, plan.load.take().filter(|_| !plan.release_finalizer));
    if plan.release_finalizer {
        finalizer::release_finalizer(sj, &namespace, ctx).await?;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(spread(
        plan.requeue.max(Duration::from_millis(200)),
    )))
}

/// A long requeue (a suspended job's 5 minutes) plus up to a tenth more, at random: jobs created
/// or changed together would otherwise come back together at every period, a burst of
/// reconciles that made the fleet benchmark's steady-state p99 (docs/benchmarks.md). Short
/// requeues (polling a running job, waiting on an operation) keep their exact period.
fn spread(requeue: Duration) -> Duration {
    if requeue < Duration::from_secs(60) {
        return requeue;
    }
    let tenth = u64::try_from(requeue.as_millis() / 10).unwrap_or(u64::MAX);
    requeue + Duration::from_millis(rand::rng().random_range(0..=tenth))
}

/// The pod document of a deployment to apply, which the plan took from the desired spec or from
/// status (deployed, last good, an operation's target); named by where it is in `status`.
fn recorded_pods(
    deployment: &Deployment,
    status: &StreamJobStatus,
) -> Result<crate::pods::PodDocument, RecordedError> {
    let field = if status.deployed.as_ref() == Some(deployment) {
        "status.deployed.pods"
    } else if status.last_good.as_ref() == Some(deployment) {
        "status.lastGood.pods"
    } else {
        "status.operation.target.pods"
    };
    deployment.pods(field)
}

/// Asks the job for a savepoint: the control API's operation id, or why there is none.
async fn request_savepoint(fetched: &Fetched, stop: bool, ctx: &Context) -> Result<String, String> {
    match &fetched.endpoint {
        Some(at) => ctx
            .control
            .savepoint(at, stop)
            .await
            .map(|op| op.id)
            .map_err(|e| e.to_string()),
        None => Err("worker pod 0 has no address yet (not running)".into()),
    }
}

/// A refused spec (invalid, or against the operator's policy): say why in status and a
/// Warning event (once, when the status changes), change nothing else. A running job keeps
/// running its deployed spec.
async fn refuse(
    sj: &StreamJob,
    namespace: &str,
    status: &StreamJobStatus,
    reason: &'static str,
    message: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let refusal = conditions::Refusal { reason, message };
    let next = lifecycle::refused(status, sj.metadata.generation, refusal, Timestamp::now());
    if next != *status {
        status::write(sj, namespace, status, &next, ctx).await?;
        status::publish(
            sj,
            &lifecycle::Note {
                warning: true,
                reason,
                message: format!("{message}; the running job (if any) is left as it is"),
            },
            ctx,
        )
        .await;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_requeues_are_spread_and_short_ones_kept() {
        let poll = Duration::from_secs(10);
        assert_eq!(spread(poll), poll);
        let period = Duration::from_secs(300);
        let seen: std::collections::HashSet<Duration> = (0..50).map(|_| spread(period)).collect();
        for d in &seen {
            assert!(*d >= period && *d <= Duration::from_secs(330), "{d:?}");
        }
        assert!(
            seen.len() > 1,
            "50 requeues of 5 minutes all equal: {seen:?}"
        );
    }
}

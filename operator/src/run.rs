//! `cairn-operator run`: serve health and metrics, win the Lease, watch StreamJobs (and the
//! StatefulSets and pods they own) in every watched namespace, reconcile, and shut down
//! gracefully on SIGTERM.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{self as kube_controller, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::children::{JOB_LABEL, MANAGED_BY};
use crate::config::OperatorConfig;
use crate::control::HttpControl;
use crate::crd::{Phase, StreamJob};
use crate::http::{self, Health};
use crate::leader::{Attempt, Elector, LEASE_DURATION, RENEW};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};

/// How long reconciles in flight may finish after SIGTERM (well inside the chart's 30 s
/// termination grace period).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable Kubernetes configuration (in-cluster or kubeconfig).
    #[error("cannot build a Kubernetes client: {0}; run in a pod with a service account, or set KUBECONFIG")]
    Client(#[source] kube::Error),
    /// The HTTP address cannot be bound.
    #[error("cannot serve on {addr}: {source}")]
    Http {
        /// Address.
        addr: std::net::SocketAddr,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// Leadership was lost: another replica may act now, so this one stops.
    #[error("lost the leader Lease (not renewed within {0:?}); exiting so a standby takes over")]
    LostLease(Duration),
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let bound = http::serve(config.http_addr, metrics.clone(), health.clone())
        .await
        .map_err(|source| RunError::Http {
            addr: config.http_addr,
            source,
        })?;
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let elector = config.leader_election.then(|| {
        Elector::new(
            client.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &config.identity,
        )
    });
    let (lost_tx, mut lost_rx) = watch::channel(false);
    if let Some(elector) = &elector {
        health.ready.store(true, Ordering::Relaxed);
        if !acquire(elector, stop_rx.clone()).await {
            return Ok(());
        }
        health.ready.store(false, Ordering::Relaxed);
        tracing::info!(identity = %config.identity, lease = %config.lease_name, "became leader");
        tokio::spawn(keep_lease(elector.clone(), lost_tx));
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        control: Arc::new(HttpControl::default()),
        config: config.clone(),
        metrics: metrics.clone(),
        reporter: Reporter {
            controller: "cairn-operator".into(),
            instance: Some(config.identity.clone()),
        },
        panics: Default::default(),
        loads: Default::default(),
    });
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let (store, run) = controller(&client, scope, ctx.clone(), stop_rx.clone());
        stores.push(store);
        controllers.push(run);
    }
    tokio::spawn(ready_when_synced(stores.clone(), health.clone()));
    tokio::spawn(count_jobs_by_phase(stores, metrics.clone()));
    let mut stopped = stop_rx.clone();
    let all = futures::future::join_all(controllers);
    tokio::pin!(all);
    let outcome = tokio::select! {
        _ = &mut all => Ok(()),
        _ = lost_rx.wait_for(|lost| *lost) => Err(RunError::LostLease(LEASE_DURATION)),
        _ = stopped.wait_for(|s| *s) => {
            // The controllers stop taking work (graceful_shutdown_on); let the reconciles in
            // flight finish, within the pod's termination grace period.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut all).await.is_err() {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running at shutdown; stopping them");
            }
            Ok(())
        }
    };
    if let Some(elector) = &elector {
        elector.release().await;
    }
    outcome
}

/// Store of one controller's StreamJobs.
type JobStore = Store<DeserializeGuard<StreamJob>>;

/// One controller for all namespaces (`None`) or one namespace: its StreamJob store, and the
/// future that runs it until shutdown.
fn controller(
    client: &Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) -> (JobStore, impl std::future::Future<Output = ()>) {
    let (jobs, sets, pods) = match &namespace {
        Some(ns) => (
            Api::<DeserializeGuard<StreamJob>>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let limits =
        kube_controller::Config::default().concurrency(ctx.config.max_concurrent_reconciles);
    let controller = Controller::new(jobs, watcher::Config::default())
        .with_config(limits)
        .owns(sets, managed.clone())
        .watches(pods, managed, |pod| {
            let job = pod.labels().get(JOB_LABEL)?.clone();
            Some(ObjectRef::<DeserializeGuard<StreamJob>>::new(&job).within(&pod.namespace()?))
        });
    let store = controller.store();
    let run = controller
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile_guarded, error_policy_guarded, ctx)
        .for_each(|result| async move {
            match result {
                // Already counted and logged by the error policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller: watch or queue error (retried)"),
                Ok(_) => {}
            }
        });
    (store, run)
}

/// Marks the operator ready once every watched namespace's StreamJobs are listed.
async fn ready_when_synced(stores: Vec<JobStore>, health: Arc<Health>) {
    for store in stores {
        // `Store::wait_until_ready` keeps a single waker, and the controller waits on the same
        // store: a second waiter is never woken. Poll it again instead (a ready store answers at
        // once).
        loop {
            match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    }
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("StreamJob watch synced; ready");
}

/// Keeps `cairn_operator_jobs{phase}` current, over every watched namespace.
async fn count_jobs_by_phase(stores: Vec<JobStore>, metrics: Arc<Metrics>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let phases: Vec<Option<Phase>> = stores
            .iter()
            .flat_map(|store| store.state())
            .map(|g| g.0.as_ref().ok().and_then(|sj| sj.status.as_ref()?.phase))
            .collect();
        for phase in Phase::ALL {
            let n = phases.iter().filter(|p| **p == Some(phase)).count();
            metrics
                .jobs
                .with_label_values(&[phase.as_str()])
                .set(n as i64);
        }
    }
}

/// A StreamJob the operator cannot even read (it passed the API server's schema but not the
/// operator's types, e.g. written by a newer CRD) is reported and skipped; the watch goes on.
async fn reconcile_guarded(
    obj: Arc<DeserializeGuard<StreamJob>>,
    ctx: Arc<Context>,
) -> Result<Action, reconcile::Error> {
    match &obj.0 {
        Ok(sj) => reconcile::reconcile(Arc::new(sj.clone()), ctx).await,
        Err(invalid) => {
            ctx.metrics
                .errors
                .with_label_values(&["malformed_object"])
                .inc();
            tracing::warn!(
                name = ?invalid.metadata.name,
                namespace = ?invalid.metadata.namespace,
                error = %invalid.error,
                "cannot read this StreamJob; fix it (kubectl edit) and it will be reconciled"
            );
            Ok(Action::await_change())
        }
    }
}

fn error_policy_guarded(
    obj: Arc<DeserializeGuard<StreamJob>>,
    error: &reconcile::Error,
    ctx: Arc<Context>,
) -> Action {
    match &obj.0 {
        Ok(sj) => reconcile::error_policy(Arc::new(sj.clone()), error, ctx),
        Err(_) => Action::await_change(),
    }
}

/// Waits for the Lease; false when asked to stop first.
async fn acquire(elector: &Elector, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        match elector.try_acquire().await {
            Ok(Attempt::Leading) => return true,
            Ok(Attempt::Standby) => tracing::debug!("standing by: another replica leads"),
            Err(e) => tracing::warn!(error = %e, "cannot read the leader Lease; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews the Lease; signals `lost` when it could not be renewed within its duration.
async fn keep_lease(elector: Elector, lost: watch::Sender<bool>) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW).await;
        match elector.try_acquire().await {
            Ok(Attempt::Leading) => last_renewed = tokio::time::Instant::now(),
            Ok(Attempt::Standby) => {
                tracing::error!("another replica holds the Lease now");
                let _ = lost.send(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "Lease renewal failed"),
        }
        // Stop a little before others may take over.
        if last_renewed.elapsed() > LEASE_DURATION - RENEW {
            let _ = lost.send(true);
            return;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

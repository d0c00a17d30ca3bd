//! The worker's HTTP endpoint: `/metrics` (Prometheus text) and `/healthz`; and the bounded
//! HTTP/1 server it shares with the control API.
//!
//! Both servers face whatever can reach the pod, so each bounds what a client can hold: the
//! request head must arrive within [`HttpLimits::header_read_timeout`] (which also closes idle
//! keep-alive connections), a request must be answered within
//! [`HttpLimits::request_timeout`] (a body that trickles in counts), and at most
//! [`HttpLimits::max_connections`] connections are open at a time. At the limit a new
//! connection pushes out the oldest one that has no request in progress (a half-sent request
//! or an idle keep-alive connection), so a flood of idle connections can neither exhaust the
//! process's file descriptors (which checkpoints need) nor lock out the kubelet's probe.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::metrics::{Health, HealthRule, Metrics};
use crate::runtime::job_progress::JobProgress;

/// Default of `--http-max-connections`: open connections per server (control API, metrics).
pub const DEFAULT_MAX_CONNECTIONS: u16 = 32;

/// What one HTTP server lets a client hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The request head (line and headers) must arrive within this; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// A request (its body included) must be answered within this, or gets `408`.
    pub request_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: usize::from(DEFAULT_MAX_CONNECTIONS),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
    rule: HealthRule,
}

/// The metrics address cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("metrics address {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` and serves in the background. Binding errors are returned (a port in use must
/// fail the start, not be discovered later). `/healthz` fails once nothing has committed for
/// [`HealthRule::dead_after`]; the clock starts now, as the tasks start running.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
    rule: HealthRule,
    limits: HttpLimits,
) -> Result<(), BindError> {
    metrics.liveness.started();
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health))
        .with_state(AppState {
            metrics,
            progress,
            rule,
        });
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    spawn_server("metrics", listener, app, limits);
    Ok(())
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// `200 {"status": "ok"}` while checkpoints commit (or the job has stopped), `503 {"status":
/// "stale"}` once none has committed for [`HealthRule::dead_after`]: the liveness probe then
/// restarts the process, which resumes from the last committed checkpoint.
async fn health(State(s): State<AppState>) -> Response {
    let last = s
        .progress
        .last_committed
        .lock()
        .expect("progress lock")
        .clone();
    match s.metrics.liveness.check(&s.rule) {
        Health::Committing(_) | Health::Stopped => {
            Json(serde_json::json!({ "status": "ok", "lastCommitted": last })).into_response()
        }
        Health::Stale(since) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "stale",
                "lastCommitted": last,
                "error": format!(
                    "no checkpoint committed for {}s, more than the {}s allowed \
                     (max(3 x checkpoint.interval, 30s) + checkpoint.timeout); see the worker \
                     log for why checkpoints abort",
                    since.as_secs(),
                    s.rule.dead_after().as_secs()
                ),
            })),
        )
            .into_response(),
    }
}

/// Serves `router` on `listener` in the background under `limits`; `name` names the server in
/// logs.
pub(crate) fn spawn_server(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
) {
    let timeout = limits.request_timeout;
    let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
        answer_within(timeout, req, next)
    }));
    let table = Arc::new(Connections::new(limits.max_connections));
    // Sockets held open, evicted ones included: an evicted connection closes in its own task,
    // which may run only later, and under a flood the loop would otherwise accept faster than
    // they close and run the process out of descriptors (seen on a loaded 2-core machine).
    // Waiting for a permit after each eviction keeps the open sockets at the limit plus one.
    let sockets = Arc::new(tokio::sync::Semaphore::new(table.max));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(server = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = table.admit() else {
                tracing::warn!(
                    server = name,
                    %peer,
                    limit = limits.max_connections,
                    "refusing a connection: every open connection has a request in progress"
                );
                continue;
            };
            let Ok(socket) = sockets.clone().acquire_owned().await else {
                return; // never closed
            };
            let serve = serve_connection(stream, router.clone(), limits, slot);
            tokio::spawn(async move {
                serve.await;
                drop(socket);
            });
        }
    });
}

/// Answers `408` to a request not answered within `timeout` (a client trickling its body in).
async fn answer_within(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(serde_json::json!({
                "error": format!("the request was not complete within {timeout:?}")
            })),
        )
            .into_response(),
    }
}

/// Serves one connection until it ends, times out, or is pushed out by a newer one.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: HttpLimits,
    slot: Slot,
) {
    let busy = slot.busy.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let guard = BusyGuard::new(busy.clone());
        async move {
            let response = tower_oneshot(router, req.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        () = slot.evict.notified() => {
            tracing::debug!("HTTP connection closed to make room for a newer one");
        }
    }
}

/// Calls the router once (it is always ready).
async fn tower_oneshot(
    router: Router,
    req: axum::http::Request<Body>,
) -> Result<Response, std::convert::Infallible> {
    use tower_service::Service;
    let mut router = router;
    router.call(req).await
}

/// Counts a request in progress on its connection for as long as it lives.
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(busy: Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one server, oldest first.
struct Connections {
    max: usize,
    open: Mutex<ConnTable>,
}

#[derive(Default)]
struct ConnTable {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

struct Entry {
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// A connection's place in [`Connections`]; dropping it frees the place.
struct Slot {
    id: u64,
    table: Arc<Connections>,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table
            .open
            .lock()
            .expect("connections lock")
            .entries
            .remove(&self.id);
    }
}

impl Connections {
    fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
            open: Mutex::default(),
        }
    }

    /// A place for a new connection: free, or taken from the oldest connection without a
    /// request in progress (told to close). `None` if every connection is busy.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.open.lock().expect("connections lock");
        if table.entries.len() >= self.max {
            let idle = table
                .entries
                .iter()
                .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            let entry = table.entries.remove(&idle).expect("found above");
            // `notify_one` keeps the wake-up if the connection is not waiting yet.
            entry.evict.notify_one();
        }
        let id = table.next;
        table.next = table.next.saturating_add(1);
        let (busy, evict) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        table.entries.insert(
            id,
            Entry {
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        Some(Slot {
            id,
            table: self.clone(),
            busy,
            evict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let table = Arc::new(Connections::new(3));
        let a = table.admit().unwrap();
        let b = table.admit().unwrap();
        let c = table.admit().unwrap();
        let _busy_a = BusyGuard::new(a.busy.clone());
        // a is busy, b is the oldest idle one: it is told to close and loses its place.
        let d = table.admit().unwrap();
        assert_eq!(
            table
                .open
                .lock()
                .unwrap()
                .entries
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![a.id, c.id, d.id]
        );
        // The notification is kept until b's connection waits for it.
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let mut notified = std::pin::pin!(b.evict.notified());
            assert!(std::future::Future::poll(notified.as_mut(), &mut cx).is_ready());
        }
        // Dropping an evicted slot does not free anyone else's place.
        drop(b);
        assert_eq!(table.open.lock().unwrap().entries.len(), 3);
        // Every connection busy: a new one is refused.
        let _busy_c = BusyGuard::new(c.busy.clone());
        let _busy_d = BusyGuard::new(d.busy.clone());
        assert!(table.admit().is_none());
        // A connection that ends frees its place.
        drop(c);
        assert!(table.admit().is_some());
    }
}

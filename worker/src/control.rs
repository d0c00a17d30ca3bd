//! The job's control API: what the operator (or a person with the token) may ask of a running
//! job. Served by the process that runs the coordinator, so its address is stable for the job.
//!
//! ```text
//! GET  /v1/status                     job status: tasks, lag, last checkpoint, health
//! POST /v1/checkpoints                take a checkpoint now            -> 202 operation
//! POST /v1/savepoints {"stop": bool}  take a savepoint (and stop)      -> 202 operation
//! GET  /v1/operations/{id}            poll an operation's result
//! POST /v1/stop                       stop with a final checkpoint     -> 202
//! ```
//! Every request needs `Authorization: Bearer <token>`, the token being read from a file at
//! start (a mounted Secret on Kubernetes). Without it: 401 and nothing happens. A malformed
//! request: 400 with the reason. One savepoint runs at a time: asking again while one is
//! pending returns that same operation (same `stop`) or 409 naming it (different `stop`).
//! Once the run has ended (finished or stopped, the process holding) the status says so,
//! savepoints copy the final checkpoint ([`crate::runtime::held`]) and checkpoints get 409.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_contract::control::{
    self as wire, ErrorBody, Health, JobStatus, Operation, OperationKind, OperationState, RunState,
    SavepointRequest, StopAccepted, TaskStatus, MAX_TOKEN_LEN, MIN_TOKEN_LEN,
};
use cairn_contract::health::HealthRule;
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::now_ms;
use crate::http::{spawn_server, HttpLimits};
use crate::metrics::Metrics;
use crate::runtime::failure::RequestError;
use crate::runtime::job_progress::{Ended, JobProgress, TaskTotals};
use crate::runtime::messages::Request;

/// Where and how to serve the control API.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// File holding the bearer token.
    pub token_file: PathBuf,
    /// Timeouts and the connection limit.
    pub limits: HttpLimits,
    /// Reported as `deployment` in `/v1/status` (`--deployment`).
    pub deployment: Option<String>,
}

/// Why the control API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The token file cannot be read or is empty.
    #[error("control API token file {path}: {problem}; write a random token of at least 16 characters to it (on Kubernetes, mount the job's token Secret there)")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The address cannot be bound.
    #[error("control API address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Reads and checks the token (trailing newline ignored). The token itself is never logged.
pub fn read_token(path: &Path) -> Result<String, ControlError> {
    let text = std::fs::read_to_string(path).map_err(|e| ControlError::Token {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let token = text.trim().to_owned();
    if token.len() > MAX_TOKEN_LEN {
        return Err(ControlError::Token {
            path: path.to_path_buf(),
            problem: format!(
                "the token has {} characters, at most {MAX_TOKEN_LEN} are allowed",
                token.len()
            ),
        });
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(ControlError::Token {
            path: path.to_path_buf(),
            problem: format!(
                "the token has {} characters, at least {MIN_TOKEN_LEN} are needed",
                token.len()
            ),
        });
    }
    Ok(token)
}

/// How many finished operations stay readable; older ones are forgotten (a caller polls its
/// operation within seconds, and a job asked for a checkpoint every few seconds for weeks must
/// not keep them all).
const FINISHED_KEPT: usize = 64;

#[derive(Default)]
struct Operations {
    next: u64,
    all: BTreeMap<String, Operation>,
    /// Ids of finished operations, oldest first: the ones [`FINISHED_KEPT`] lets go.
    finished: VecDeque<String>,
    pending_savepoint: Option<String>,
    /// A finished stop-with-savepoint whose result someone has read.
    stop_result_read: bool,
    /// The stop-with-savepoint that stopped the job. Asking for a stop-with-savepoint again
    /// returns it: a caller that lost the first answer (an operator restarted mid-upgrade)
    /// still learns where the savepoint is.
    stopped_with: Option<String>,
}

/// The running control API.
pub struct ControlServer {
    /// The bound address.
    pub addr: SocketAddr,
    ops: Arc<Mutex<Operations>>,
}

impl ControlServer {
    /// After a stop-with-savepoint the process would exit before the caller could read the
    /// result; this keeps the API up until a finished stop-with-savepoint operation has been
    /// read, or `linger` has passed.
    pub async fn wait_for_stop_result(&self, linger: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + linger;
        while tokio::time::Instant::now() < deadline {
            if self.ops.lock().expect("operations lock").stop_result_read {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[derive(Clone)]
struct Api {
    token: Arc<str>,
    requests: mpsc::Sender<Request>,
    shutdown: Arc<watch::Sender<bool>>,
    ops: Arc<Mutex<Operations>>,
    facts: Arc<JobStatus>,
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
}

/// Everything the API needs from the running job.
pub struct ControlHandles {
    /// Requests to the coordinator.
    pub requests: mpsc::Sender<Request>,
    /// Set to stop the job.
    pub shutdown: Arc<watch::Sender<bool>>,
    /// The status's static part (job, generation, N, P, spec hash, assignment, interval, start);
    /// the live fields are filled in on each `GET /v1/status`.
    pub facts: JobStatus,
    /// Metrics (records, lag).
    pub metrics: Arc<Metrics>,
    /// Checkpoint progress.
    pub progress: Arc<JobProgress>,
}

/// Binds and serves the control API in the background.
pub async fn serve(
    cfg: &ControlConfig,
    token: String,
    handles: ControlHandles,
) -> Result<ControlServer, ControlError> {
    let api = Api {
        token: token.into(),
        requests: handles.requests,
        shutdown: handles.shutdown,
        ops: Default::default(),
        facts: Arc::new(handles.facts),
        metrics: handles.metrics,
        progress: handles.progress,
    };
    let router = Router::new()
        .route(wire::STATUS_PATH, get(status))
        .route(wire::CHECKPOINTS_PATH, post(checkpoint))
        .route(wire::SAVEPOINTS_PATH, post(savepoint))
        .route(&wire::operation_path("{id}"), get(operation))
        .route(wire::STOP_PATH, post(stop))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/control-api.md",
            )
        })
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| ControlError::Bind {
            addr: cfg.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ControlError::Bind {
        addr: cfg.addr,
        source,
    })?;
    tracing::info!(%addr, "serving the control API");
    let server = ControlServer {
        addr,
        ops: api.ops.clone(),
    };
    spawn_server("control API", listener, router, cfg.limits);
    Ok(server)
}

fn error(code: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        error: message.to_owned(),
    };
    (code, Json(body)).into_response()
}

/// Compares without an early exit, so response time does not reveal how much matched.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(api): State<Api>, req: HttpRequest, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.trim().as_bytes(), api.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

async fn status(State(api): State<Api>) -> Json<JobStatus> {
    let last = api
        .progress
        .last_committed
        .lock()
        .expect("progress lock")
        .clone();
    let interval = api.facts.checkpoint_interval_ms;
    let since = last
        .as_ref()
        .map_or(api.facts.started_at_ms, |c| c.committed_at_ms);
    let late = HealthRule {
        interval: std::time::Duration::from_millis(interval),
        timeout: std::time::Duration::ZERO,
    }
    .is_late(std::time::Duration::from_millis(
        now_ms().saturating_sub(since),
    ));
    let totals = api.progress.task_totals();
    let tasks = api
        .facts
        .assignment
        .iter()
        .map(|(task, container)| {
            let reported = totals.get(task).copied().unwrap_or_default();
            let status = if reported.remote {
                remote_task_status(*task, &reported)
            } else {
                local_task_status(&api.metrics, *task)
            };
            TaskStatus {
                container: *container,
                busy_ms: reported.busy_us / 1000,
                ..status
            }
        })
        .collect();
    let ended = api.progress.ended.get().copied();
    Json(JobStatus {
        state: run_state(ended, *api.shutdown.borrow()),
        // An ended job commits nothing and is not expected to (the liveness rule's `Stopped`).
        health: if late && ended.is_none() {
            Health::Degraded
        } else {
            Health::Healthy
        },
        tasks,
        last_checkpoint: last,
        aborted_checkpoints: api
            .progress
            .aborted
            .load(std::sync::atomic::Ordering::Relaxed),
        observed_partitions: u32::try_from(api.metrics.input_partitions_observed.get())
            .ok()
            .filter(|n| *n > 0),
        recovery_objective: api
            .progress
            .objective
            .lock()
            .expect("progress lock")
            .clone(),
        standbys: api.progress.standbys.lock().expect("progress lock").clone(),
        ..(*api.facts).clone()
    })
}

/// A task of this process, from its metrics.
fn local_task_status(metrics: &Metrics, task: u32) -> TaskStatus {
    let label = task.to_string();
    // -1 in a gauge: no value (see TaskInstance::open).
    let known = |gauge: &prometheus::IntGauge| u64::try_from(gauge.get()).ok();
    TaskStatus {
        task,
        records_in: metrics.records_in.with_label_values(&[&label]).get(),
        records_out: metrics.records_out.with_label_values(&[&label]).get(),
        lag: metrics.lag.with_label_values(&[&label]).get(),
        // No watermark: no event time, or none yet.
        watermark_ms: known(&metrics.watermark.with_label_values(&[&label])),
        event_time_lag_ms: known(&metrics.event_time_lag.with_label_values(&[&label])),
        // Not resumed yet.
        resumed_ms: known(&metrics.task_resumed_ms.with_label_values(&[&label])),
        // Not caught up yet, or nothing to catch up to.
        caught_up_ms: known(&metrics.task_caught_up_ms.with_label_values(&[&label])),
        ..TaskStatus::default()
    }
}

/// A task of another process: not in this process's metrics (each pod's `/metrics` has its own
/// tasks only, so that a sum over pods counts each once), but in what its container reported,
/// about a second old: records read and lag. What it does not report stays 0 or absent, and
/// this process's metrics get no series for it.
fn remote_task_status(task: u32, reported: &TaskTotals) -> TaskStatus {
    TaskStatus {
        task,
        records_in: reported.records,
        lag: reported.lag,
        ..TaskStatus::default()
    }
}

/// The state the status reports: how the run ended once it has (the final checkpoint
/// committed), else stopping once a stop was asked for, else running.
fn run_state(ended: Option<Ended>, stop_requested: bool) -> RunState {
    match ended {
        Some(Ended::Finished { .. }) => RunState::Finished,
        Some(Ended::Stopped { .. }) => RunState::Stopped,
        None if stop_requested => RunState::Stopping,
        None => RunState::Running,
    }
}

fn new_operation(ops: &mut Operations, kind: OperationKind, stop: bool) -> Operation {
    ops.next += 1;
    let op = Operation {
        id: format!("{}-{}", kind.as_str(), ops.next),
        kind,
        stop,
        state: OperationState::Pending,
        checkpoint: None,
        savepoint: None,
        error: None,
        started_at_ms: now_ms(),
    };
    ops.all.insert(op.id.clone(), op.clone());
    op
}

/// Records an operation's result; `stopped_the_job` marks the stop-with-savepoint that ended
/// the job (under the same lock, so no request slips in between).
fn finish(
    ops: &Mutex<Operations>,
    id: &str,
    stopped_the_job: bool,
    update: impl FnOnce(&mut Operation),
) {
    let mut ops = ops.lock().expect("operations lock");
    if ops.pending_savepoint.as_deref() == Some(id) {
        ops.pending_savepoint = None;
    }
    if stopped_the_job {
        ops.stopped_with = Some(id.to_owned());
    }
    if let Some(op) = ops.all.get_mut(id) {
        update(op);
        ops.finished.push_back(id.to_owned());
    }
    ops.forget_old();
}

impl Operations {
    /// Drops the oldest finished operations beyond [`FINISHED_KEPT`]; pending ones are not in
    /// `finished`, and the stop-with-savepoint that stopped the job is kept for good.
    fn forget_old(&mut self) {
        while self.finished.len() > FINISHED_KEPT {
            let Some(id) = self.finished.pop_front() else {
                return;
            };
            if self.stopped_with.as_deref() != Some(id.as_str()) {
                self.all.remove(&id);
            }
        }
    }
}

async fn checkpoint(State(api): State<Api>) -> Response {
    // Refused at once rather than as a failed operation: nothing could ever take it.
    if let Some(ended) = api.progress.ended.get() {
        return error(
            StatusCode::CONFLICT,
            &RequestError::Ended(*ended).to_string(),
        );
    }
    let (reply, answer) = oneshot::channel();
    if api.requests.try_send(Request::Checkpoint(reply)).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator is busy or stopping; retry later",
        );
    }
    let op = new_operation(
        &mut api.ops.lock().expect("operations lock"),
        OperationKind::Checkpoint,
        false,
    );
    let (ops, id) = (api.ops.clone(), op.id.clone());
    tokio::spawn(async move {
        let result = answer.await.unwrap_or(Err(RequestError::Stopped));
        finish(&ops, &id, false, |op| match result {
            Ok(checkpoint) => {
                (op.state, op.checkpoint) = (OperationState::Succeeded, Some(checkpoint))
            }
            Err(e) => (op.state, op.error) = (OperationState::Failed, Some(e.to_string())),
        });
    });
    (StatusCode::ACCEPTED, Json(op)).into_response()
}

async fn savepoint(State(api): State<Api>, body: Bytes) -> Response {
    let body: SavepointRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SavepointRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("body must be JSON like {{\"stop\": true}}: {e}"),
                )
            }
        }
    };
    let mut ops = api.ops.lock().expect("operations lock");
    if let Some(done) = ops
        .stopped_with
        .clone()
        .and_then(|id| ops.all.get(&id).cloned())
    {
        if body.stop {
            return (StatusCode::OK, Json(done)).into_response();
        }
        return error(
            StatusCode::CONFLICT,
            &format!(
                "the job stopped with savepoint operation {}; it takes no more savepoints",
                done.id
            ),
        );
    }
    if let Some(pending) = ops
        .pending_savepoint
        .clone()
        .and_then(|id| ops.all.get(&id).cloned())
    {
        if pending.stop == body.stop {
            return (StatusCode::ACCEPTED, Json(pending)).into_response();
        }
        return error(
            StatusCode::CONFLICT,
            &format!(
                "savepoint operation {} (stop: {}) is already running; poll it, then ask again",
                pending.id, pending.stop
            ),
        );
    }
    let (reply, answer) = oneshot::channel();
    if api
        .requests
        .try_send(Request::Savepoint {
            stop: body.stop,
            reply,
        })
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator is busy or stopping; retry later",
        );
    }
    let op = new_operation(&mut ops, OperationKind::Savepoint, body.stop);
    ops.pending_savepoint = Some(op.id.clone());
    drop(ops);
    let (ops, id) = (api.ops.clone(), op.id.clone());
    tokio::spawn(async move {
        let result = answer.await.unwrap_or(Err(RequestError::Stopped));
        let stopped = body.stop && result.is_ok();
        finish(&ops, &id, stopped, |op| match result {
            Ok(info) => {
                op.state = OperationState::Succeeded;
                op.checkpoint = Some(info.checkpoint);
                op.savepoint = Some(info);
            }
            Err(e) => (op.state, op.error) = (OperationState::Failed, Some(e.to_string())),
        });
    });
    (StatusCode::ACCEPTED, Json(op)).into_response()
}

async fn operation(
    State(api): State<Api>,
    id: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    // An id that is not UTF-8 after percent-decoding is no id we gave out; answered as JSON
    // like every other error, not with the extractor's plain-text rejection.
    let Ok(UrlPath(id)) = id else {
        return error(
            StatusCode::NOT_FOUND,
            "no such operation: the id is not valid UTF-8; use the id a POST returned",
        );
    };
    let mut ops = api.ops.lock().expect("operations lock");
    match ops.all.get(&id).cloned() {
        Some(op) => {
            if op.stop && op.state != OperationState::Pending {
                ops.stop_result_read = true;
            }
            Json(op).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no operation {id:?}; a finished operation is kept until {FINISHED_KEPT} newer \
                 ones have finished"
            ),
        ),
    }
}

async fn stop(State(api): State<Api>) -> Response {
    let _ = api.shutdown.send(true);
    let accepted = StopAccepted {
        state: RunState::Stopping,
    };
    (StatusCode::ACCEPTED, Json(accepted)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_state_is_how_the_run_ended_once_it_has() {
        let finished = Some(Ended::Finished { checkpoint: 3 });
        let stopped = Some(Ended::Stopped { checkpoint: 3 });
        assert_eq!(run_state(None, false), RunState::Running);
        assert_eq!(run_state(None, true), RunState::Stopping);
        assert_eq!(run_state(finished, false), RunState::Finished);
        // A stop asked of a finished job (`/v1/stop`, a signal) does not make it stopping.
        assert_eq!(run_state(finished, true), RunState::Finished);
        assert_eq!(run_state(stopped, true), RunState::Stopped);
        assert_eq!(run_state(stopped, false), RunState::Stopped);
    }

    /// A task of another process is reported from its container's totals (the metrics of
    /// this process do not have it); a local one keeps its metrics' values.
    #[test]
    fn remote_tasks_come_from_their_reports_and_local_ones_from_the_metrics() {
        let metrics = Metrics::new();
        let reported = TaskTotals {
            busy_us: 5_000,
            records: 200,
            lag: 4,
            remote: true,
        };
        let remote = remote_task_status(7, &reported);
        assert_eq!(
            (remote.task, remote.records_in, remote.lag),
            (7, 200, 4),
            "{remote:?}"
        );
        assert_eq!(remote.watermark_ms, None);

        metrics.records_in.with_label_values(&["3"]).inc_by(11);
        metrics.lag.with_label_values(&["3"]).set(2);
        metrics.watermark.with_label_values(&["3"]).set(-1);
        let local = local_task_status(&metrics, 3);
        assert_eq!((local.records_in, local.lag), (11, 2), "{local:?}");
        assert_eq!(local.watermark_ms, None, "-1 is no watermark");
    }

    #[test]
    fn only_the_latest_finished_operations_are_kept() {
        let ops = Mutex::new(Operations::default());
        let new = |kind, stop| new_operation(&mut ops.lock().unwrap(), kind, stop).id;
        let pending = new(OperationKind::Checkpoint, false);
        let stopped = new(OperationKind::Savepoint, true);
        finish(&ops, &stopped, true, |op| {
            op.state = OperationState::Succeeded
        });
        let done: Vec<String> = (0..100)
            .map(|_| {
                let id = new(OperationKind::Checkpoint, false);
                finish(&ops, &id, false, |op| op.state = OperationState::Succeeded);
                id
            })
            .collect();
        let ops = ops.lock().unwrap();
        // The pending one and the stop-with-savepoint stay whatever their age.
        assert_eq!(ops.all[&pending].state, OperationState::Pending);
        assert_eq!(ops.all[&stopped].state, OperationState::Succeeded);
        assert_eq!(ops.stopped_with.as_deref(), Some(stopped.as_str()));
        let forgotten = done.len() - FINISHED_KEPT;
        assert!(done[..forgotten].iter().all(|id| !ops.all.contains_key(id)));
        assert!(done[forgotten..].iter().all(|id| ops.all.contains_key(id)));
        assert_eq!(ops.all.len(), 2 + FINISHED_KEPT);
    }
}

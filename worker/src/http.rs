//! The worker's HTTP endpoint: `/metrics` (Prometheus text) and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::checkpoint::coordinator::JobProgress;
use crate::metrics::Metrics;
use crate::runtime::RunError;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
}

/// Binds `addr` and serves in the background. Binding errors are returned (a port in use must
/// fail the start, not be discovered later).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    progress: Arc<JobProgress>,
) -> Result<(), RunError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health))
        .with_state(AppState { metrics, progress });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Io {
            path: format!("metrics address {addr}").into(),
            source,
        })?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn health(State(s): State<AppState>) -> impl IntoResponse {
    let last = s
        .progress
        .last_committed
        .lock()
        .expect("progress lock")
        .clone();
    Json(serde_json::json!({ "status": "ok", "lastCommitted": last }))
}

//! The operator's side of a job's control API (docs/control-api.md): the only way it talks to a
//! running job. Behind a trait so the reconcile tests can script a job's answers; the real
//! client speaks HTTP/1.1 with the job's bearer token to pod 0.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Largest answer the operator reads from a job. Real answers are a few KiB; a job runs the
/// user's image, and an unbounded answer would be read into the memory of the one operator that
/// serves every namespace.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A boxed future (the trait is used as `dyn ControlApi`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a job's control API is, and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod 0's address and the control port.
    pub addr: SocketAddr,
    /// Bearer token (never logged).
    pub token: String,
}

/// What `GET /v1/status` says (the fields the operator uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    /// The job's spec hash.
    pub spec_hash: String,
    /// Process generation.
    pub generation: u64,
    /// N.
    pub partitions: u32,
    /// P.
    pub parallelism: u32,
    /// `running` or `stopping`.
    pub state: String,
    /// `healthy` or `degraded`.
    pub health: String,
    /// The last checkpoint this run committed.
    pub last_checkpoint: Option<CommittedCheckpoint>,
    /// Partitions of the input as last observed (Kafka topics can grow).
    #[serde(default)]
    pub observed_input_partitions: Option<u32>,
}

/// A committed checkpoint as the job reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommittedCheckpoint {
    /// Id.
    pub id: u64,
    /// Commit time, ms since the epoch.
    pub committed_at_ms: u64,
    /// Referenced bytes.
    pub total_bytes: u64,
    /// Uploaded bytes.
    pub uploaded_bytes: u64,
    /// Trigger-to-commit duration.
    pub duration_ms: u64,
}

/// An operation (`POST /v1/savepoints`, `GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationReport {
    /// Id to poll.
    pub id: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    /// The savepoint, once succeeded.
    #[serde(default)]
    pub savepoint: Option<SavepointReport>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A savepoint the job took.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointReport {
    /// Its URL.
    pub url: String,
    /// The checkpoint it copies.
    pub checkpoint: u64,
}

/// Why a control-API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No connection or no answer in time.
    #[error("control API at {addr} unreachable: {reason}")]
    Unreachable {
        /// Address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The job answered with an error status.
    #[error("control API at {addr} answered {status}: {body}")]
    Status {
        /// Address.
        addr: SocketAddr,
        /// HTTP status.
        status: u16,
        /// Its message.
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("control API at {addr}: unexpected answer: {reason}")]
    Malformed {
        /// Address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl ControlError {
    /// True when the job said the thing asked for does not exist (e.g. an operation id of a
    /// process that has since restarted).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ControlError::Status { status: 404, .. })
    }
}

/// The calls the operator makes.
pub trait ControlApi: Send + Sync {
    /// `GET /v1/status`.
    fn status<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, Result<JobReport, ControlError>>;
    /// `POST /v1/savepoints {"stop": stop}`.
    fn savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        stop: bool,
    ) -> BoxFuture<'a, Result<OperationReport, ControlError>>;
    /// `GET /v1/operations/{id}`.
    fn operation<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<OperationReport, ControlError>>;
}

/// The HTTP client.
pub struct HttpControl {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpControl {
    fn default() -> Self {
        HttpControl {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl HttpControl {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        at: &Endpoint,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ControlError> {
        let addr = at.addr;
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", at.token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ControlError::Malformed {
                addr,
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| ControlError::Unreachable { addr, reason };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let bytes = tokio::time::timeout(self.timeout, limited.collect())
            .await
            .map_err(|_| unreachable("body not received in time".into()))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ControlError::Malformed {
                        addr,
                        reason: format!("answer longer than {MAX_ANSWER_BYTES} bytes"),
                    }
                } else {
                    unreachable(e.to_string())
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(ControlError::Status {
                addr,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ControlError::Malformed {
            addr,
            reason: e.to_string(),
        })
    }
}

impl ControlApi for HttpControl {
    fn status<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, Result<JobReport, ControlError>> {
        Box::pin(self.call(at, http::Method::GET, "/v1/status", None))
    }

    fn savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        stop: bool,
    ) -> BoxFuture<'a, Result<OperationReport, ControlError>> {
        Box::pin(self.call(
            at,
            http::Method::POST,
            "/v1/savepoints",
            Some(format!("{{\"stop\": {stop}}}")),
        ))
    }

    fn operation<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<OperationReport, ControlError>> {
        Box::pin(async move {
            let path = format!("/v1/operations/{id}");
            self.call(at, http::Method::GET, &path, None).await
        })
    }
}

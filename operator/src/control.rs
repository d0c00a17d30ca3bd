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

// The wire types are the contract crate's: the worker serves exactly these.
use cairn_contract::control::{self as wire, JobStatus, Operation, SavepointRequest};

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
    fn status<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, Result<JobStatus, ControlError>>;
    /// `POST /v1/savepoints {"stop": stop}`.
    fn savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        stop: bool,
    ) -> BoxFuture<'a, Result<Operation, ControlError>>;
    /// `GET /v1/operations/{id}`.
    fn operation<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Operation, ControlError>>;
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
    fn status<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, Result<JobStatus, ControlError>> {
        Box::pin(self.call(at, http::Method::GET, wire::STATUS_PATH, None))
    }

    fn savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        stop: bool,
    ) -> BoxFuture<'a, Result<Operation, ControlError>> {
        let body = serde_json::to_string(&SavepointRequest { stop });
        Box::pin(async move {
            let body = body.map_err(|e| ControlError::Malformed {
                addr: at.addr,
                reason: e.to_string(),
            })?;
            self.call(at, http::Method::POST, wire::SAVEPOINTS_PATH, Some(body))
                .await
        })
    }

    fn operation<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Operation, ControlError>> {
        Box::pin(async move {
            let path = wire::operation_path(id);
            self.call(at, http::Method::GET, &path, None).await
        })
    }
}

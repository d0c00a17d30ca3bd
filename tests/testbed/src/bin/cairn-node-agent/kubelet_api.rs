//! The one kubelet API endpoint the agent serves: `GET /containerLogs/<ns>/<pod>/<container>`,
//! which the API server proxies `kubectl logs` (the `pods/log` subresource) to. So
//! `kubectl logs` works on the test bed as on any cluster, and the end-to-end suite reads
//! container output the same way everywhere.
//!
//! Like a kubelet without `--tls-cert-file`, the agent serves HTTPS with a self-signed
//! certificate made at start (the API server does not verify kubelet certificates unless told
//! to). Unlike a default kubelet it accepts only clients with a certificate signed by the
//! cluster CA — the API server's kubelet-client certificate — so no other local process reads
//! pod logs through it.
//!
//! Query parameters: `previous` (the run before the current one), `tailLines`, `limitBytes`.
//! `follow` returns what is there and ends (no streaming); `timestamps` and `sinceSeconds`/
//! `sinceTime` are ignored (the agent does not record when a line was written).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::runtime::BANNER_PREFIX;

/// A failure to start the server.
#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error("binding the kubelet API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubeconfig has no certificate-authority-data: the kubelet API accepts only clients signed by the cluster CA")]
    NoClusterCa,
    #[error("setting up TLS for the kubelet API: {0}")]
    Tls(String),
}

/// A bound, not yet serving, kubelet API.
pub struct KubeletApi {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    root_dir: Arc<PathBuf>,
}

impl KubeletApi {
    /// Binds a free port on `ip` with a fresh self-signed certificate for it; clients must
    /// present a certificate signed by one of `cluster_ca` (DER).
    pub async fn bind(
        ip: Ipv4Addr,
        cluster_ca: &[Vec<u8>],
        root_dir: PathBuf,
    ) -> Result<KubeletApi, KubeletApiError> {
        let mut roots = RootCertStore::empty();
        for der in cluster_ca {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| KubeletApiError::Tls(format!("cluster CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(KubeletApiError::NoClusterCa);
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| KubeletApiError::Tls(format!("client verifier: {e}")))?;
        let serving = rcgen::generate_simple_self_signed(vec![ip.to_string()])
            .map_err(|e| KubeletApiError::Tls(format!("serving certificate: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            serving.signing_key.serialize_der(),
        ));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| KubeletApiError::Tls(e.to_string()))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![serving.cert.der().clone()], key)
                .map_err(|e| KubeletApiError::Tls(e.to_string()))?;
        let addr = SocketAddr::new(IpAddr::V4(ip), 0);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| KubeletApiError::Bind { addr, source })?;
        Ok(KubeletApi {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            root_dir: Arc::new(root_dir),
        })
    }

    /// The port to publish as the Node's `daemonEndpoints.kubeletEndpoint.Port`.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until the task is dropped; a failed connection is logged and forgotten.
    pub async fn serve(self) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API accept failed");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let root_dir = self.root_dir.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "kubelet API TLS handshake refused");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let root_dir = root_dir.clone();
                    async move { Ok::<_, Infallible>(respond(&root_dir, &req)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
                }
            });
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn respond<B>(root_dir: &Path, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET /containerLogs/<namespace>/<pod>/<container> is served\n",
        );
    }
    let path = req.uri().path();
    let Some(parts) = path.strip_prefix("/containerLogs/") else {
        return reply(
            StatusCode::NOT_FOUND,
            format!("{path}: the node agent serves only /containerLogs/<namespace>/<pod>/<container> (kubectl logs)\n"),
        );
    };
    let parts: Vec<&str> = parts.split('/').collect();
    let [namespace, pod, container] = parts[..] else {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("{path}: expected /containerLogs/<namespace>/<pod>/<container>\n"),
        );
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
    {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("{path}: namespace, pod and container must be plain names\n"),
        );
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let options = match LogOptions::from_query(&query) {
        Ok(options) => options,
        Err(message) => return reply(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let file = root_dir
        .join(format!("{namespace}_{pod}"))
        .join(format!("{container}.log"));
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return reply(
                StatusCode::NOT_FOUND,
                format!(
                    "container {container:?} of pod {namespace}/{pod} has not run on this node\n"
                ),
            )
        }
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}\n", file.display()),
            )
        }
    };
    match select(&text, &options) {
        Some(body) => reply(StatusCode::OK, body),
        None => reply(
            StatusCode::BAD_REQUEST,
            format!("previous terminated container {container:?} in pod {pod:?} not found\n"),
        ),
    }
}

fn parse_query(query: &str) -> HashMap<&str, &str> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// The parts of a `pods/log` request the agent honours.
#[derive(Debug, Default, PartialEq)]
struct LogOptions {
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

impl LogOptions {
    fn from_query(query: &HashMap<&str, &str>) -> Result<LogOptions, String> {
        let number = |name: &str| -> Result<Option<usize>, String> {
            query
                .get(name)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{name}={v:?}: expected a non-negative integer"))
                })
                .transpose()
        };
        Ok(LogOptions {
            previous: query
                .get("previous")
                .is_some_and(|v| *v == "true" || v.is_empty()),
            tail_lines: number("tailLines")?,
            limit_bytes: number("limitBytes")?,
        })
    }
}

/// The requested run of a log that holds every run, each after a banner line (the banner is not
/// part of the container's output); `None` when `previous` is asked and there is none.
fn select(text: &str, options: &LogOptions) -> Option<String> {
    let mut runs: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(BANNER_PREFIX) {
            runs.push(Vec::new());
        } else if let Some(run) = runs.last_mut() {
            run.push(line);
        } else {
            runs.push(vec![line]);
        }
    }
    let none = Vec::new();
    let run = if options.previous {
        runs.get(runs.len().checked_sub(2)?)?
    } else {
        runs.last().unwrap_or(&none)
    };
    let from = options
        .tail_lines
        .map_or(0, |n| run.len().saturating_sub(n));
    let mut body: String = run[from..].iter().map(|l| format!("{l}\n")).collect();
    if let Some(limit) = options.limit_bytes {
        let mut cut = limit.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "=== cairn-node-agent x: restart 0 ===\na\nb\n=== cairn-node-agent x: restart 1 ===\nc\nd\ne\n";

    fn options(
        previous: bool,
        tail_lines: Option<usize>,
        limit_bytes: Option<usize>,
    ) -> LogOptions {
        LogOptions {
            previous,
            tail_lines,
            limit_bytes,
        }
    }

    #[test]
    fn the_current_run_without_banners() {
        assert_eq!(
            select(LOG, &options(false, None, None)).unwrap(),
            "c\nd\ne\n"
        );
    }

    #[test]
    fn the_previous_run_or_none() {
        assert_eq!(select(LOG, &options(true, None, None)).unwrap(), "a\nb\n");
        let one_run = "=== cairn-node-agent x ===\na\n";
        assert_eq!(select(one_run, &options(true, None, None)), None);
    }

    #[test]
    fn tail_lines_and_limit_bytes() {
        assert_eq!(
            select(LOG, &options(false, Some(2), None)).unwrap(),
            "d\ne\n"
        );
        assert_eq!(select(LOG, &options(false, None, Some(3))).unwrap(), "c\nd");
        assert_eq!(select(LOG, &options(false, Some(0), None)).unwrap(), "");
    }

    #[test]
    fn bad_numbers_are_named() {
        let query = parse_query("tailLines=ten");
        assert_eq!(
            LogOptions::from_query(&query).unwrap_err(),
            "tailLines=\"ten\": expected a non-negative integer"
        );
        let query = parse_query("previous=true&limitBytes=5");
        assert_eq!(
            LogOptions::from_query(&query).unwrap(),
            options(true, None, Some(5))
        );
    }
}

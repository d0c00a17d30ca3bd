//! Health probes of the control plane: etcd's `/health` over plain HTTP on loopback, the API
//! server's `/readyz` and objects through a kube client, and a way to run those async probes
//! from blocking code whether or not the caller is inside a tokio runtime.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::Client;

/// Errors of the probe machinery itself (not "not ready yet", which is a normal answer).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The helper thread or its tokio runtime could not be created.
    #[error("cannot start a tokio runtime for the readiness probes: {0}")]
    Runtime(#[source] io::Error),
    /// The helper thread panicked.
    #[error("the readiness probe thread panicked")]
    Panicked,
}

/// Runs `fut` to completion on a fresh thread with its own current-thread runtime. Blocking
/// callers may be inside a tokio runtime (a `#[tokio::test]` calling `Cluster::start`), where
/// `block_on` on the calling thread would panic.
pub fn run_async<F>(fut: F) -> Result<F::Output, ProbeError>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ProbeError::Runtime)?;
            Ok(rt.block_on(fut))
        })
        .join()
        .map_err(|_| ProbeError::Panicked)?
    })
}

/// `Ok` when etcd at `addr` answers `GET /health` with `"health":"true"`; otherwise what it said.
pub fn etcd_health(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status_ok = response.starts_with("HTTP/1.1 200");
    if status_ok && response.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(response.lines().last().unwrap_or_default().to_string())
    }
}

/// `Ok` when the API server answers `GET /readyz` with 200; otherwise the reason.
pub async fn api_server_ready(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(e) => Err(e.to_string()),
    }
}

/// `Ok` when the `default` ServiceAccount exists in `namespace` (the serviceaccount controller
/// of kube-controller-manager creates it: its presence proves the controllers are running).
pub async fn default_service_account(client: &Client, namespace: &str) -> Result<(), String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    match api.get_opt("default").await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("no ServiceAccount {namespace}/default yet")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_async_works_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v = rt.block_on(async { run_async(async { 41 + 1 }).unwrap() });
        assert_eq!(v, 42);
    }

    /// A loopback port bound by a socket that does not listen: connections to it are refused,
    /// and while the socket (the returned fd) stays open nothing else on the machine can take
    /// the port, as it could between dropping a listener and connecting.
    fn bound_not_listening() -> (std::os::fd::OwnedFd, SocketAddr) {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a sockaddr_in we own; the fd is owned (closed on drop)
        // from the moment it exists.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let sa = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(
                libc::bind(raw, sa, len),
                0,
                "bind: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::getsockname(raw, sa, &mut len), 0);
            let port = u16::from_be(addr.sin_port);
            (fd, SocketAddr::from(([127, 0, 0, 1], port)))
        }
    }

    #[test]
    fn etcd_health_reports_a_refused_connection() {
        let (_socket, addr) = bound_not_listening();
        let err = etcd_health(addr).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}

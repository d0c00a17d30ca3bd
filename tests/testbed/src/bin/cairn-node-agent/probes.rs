//! Startup, readiness and liveness probes, run from the agent against the pod's IP like
//! kubelet does: `httpGet` (HTTP only; status 200-399 passes) and `tcpSocket`, with
//! `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds` and the success/failure thresholds.
//! Readiness and liveness start once the startup probe (if any) has passed. Results reach the
//! pod worker as [`ProbeEvent`]s, only on changes.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

/// A change reported by a container's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// The startup or liveness probe failed `failureThreshold` times: restart the container.
    Failed {
        /// "Startup" or "Liveness".
        kind: &'static str,
        /// The last failure.
        message: String,
    },
}

/// Refuses probe types the agent cannot run, so the pod shows why instead of never becoming
/// ready.
pub fn validate(container: &Container) -> Result<(), String> {
    for (kind, probe) in [
        ("startupProbe", &container.startup_probe),
        ("readinessProbe", &container.readiness_probe),
        ("livenessProbe", &container.liveness_probe),
    ] {
        let Some(probe) = probe else { continue };
        if probe.exec.is_some() || probe.grpc.is_some() {
            return Err(format!(
                "container {:?}: {kind} uses exec or grpc, which the test bed's node agent does not run; use httpGet or tcpSocket",
                container.name
            ));
        }
        if let Some(http) = &probe.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
            {
                return Err(format!(
                    "container {:?}: {kind} uses scheme {:?}; the node agent probes only HTTP",
                    container.name,
                    http.scheme.as_deref().unwrap_or_default()
                ));
            }
        }
        if probe.http_get.is_none() && probe.tcp_socket.is_none() {
            return Err(format!(
                "container {:?}: {kind} has no handler; set httpGet or tcpSocket",
                container.name
            ));
        }
        resolve_port(container, probe)?;
    }
    Ok(())
}

fn resolve_port(container: &Container, probe: &Probe) -> Result<u16, String> {
    let port = match (&probe.http_get, &probe.tcp_socket) {
        (Some(h), _) => &h.port,
        (None, Some(t)) => &t.port,
        (None, None) => return Err("no probe handler".into()),
    };
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p > 0).ok_or_else(|| {
            format!(
                "container {:?}: probe port {n} is not a port number",
                container.name
            )
        }),
        IntOrString::String(name) => container
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| {
                format!(
                    "container {:?}: probe port {name:?} names no containerPort of the container",
                    container.name
                )
            }),
    }
}

// Readiness-based I/O: the workspace's tokio has no `io-util` feature.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs one probe once.
async fn run_once(container: &Container, probe: &Probe, pod_ip: Ipv4Addr) -> Result<(), String> {
    let port = resolve_port(container, probe)?;
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(http) = &probe.http_get {
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let path = http
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let url = format!("http://{host}:{port}{path}");
        let headers: String = http
            .http_headers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
        );
        let exchange = async {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            write_all(&stream, request.as_bytes()).await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(2).any(|w| w == b"\r\n") {
                let n = read_some(&stream, &mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(head)
        };
        let head = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(format!(
                    "Get {url:?}: timed out after {}s",
                    timeout.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("Get {url:?}: {e}")),
            Ok(Ok(head)) => head,
        };
        let line = String::from_utf8_lossy(&head);
        let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        return match status {
            Some(code) if (200..400).contains(&code) => Ok(()),
            Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
            None => Err(format!("Get {url:?}: malformed HTTP response")),
        };
    }
    let tcp = probe.tcp_socket.as_ref().ok_or("no probe handler")?;
    let host = tcp
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

fn period(probe: &Probe) -> Duration {
    Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64)
}

fn initial_delay(probe: &Probe) -> Duration {
    Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// Runs `probe` every period (after its initial delay) until `failure_threshold` failures in
/// a row, and returns the last failure's message; with `stop_on_success`, returns `None` at the
/// first success instead. The startup probe stops at its first success; the liveness probe
/// never does (a success only resets the count).
async fn until_failed(
    container: &Container,
    probe: &Probe,
    pod_ip: Ipv4Addr,
    stop_on_success: bool,
) -> Option<String> {
    tokio::time::sleep(initial_delay(probe)).await;
    let threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let mut failures = 0;
    loop {
        match run_once(container, probe, pod_ip).await {
            Ok(()) if stop_on_success => return None,
            Ok(()) => failures = 0,
            Err(message) => {
                failures += 1;
                if failures >= threshold {
                    return Some(message);
                }
            }
        }
        tokio::time::sleep(period(probe)).await;
    }
}

/// Probes one running container until its task is aborted, calling `report` on each change.
pub async fn run(
    container: Container,
    pod_ip: Ipv4Addr,
    report: impl Fn(ProbeEvent) + Send + Sync,
) {
    if let Some(probe) = &container.startup_probe {
        match until_failed(&container, probe, pod_ip, true).await {
            None => report(ProbeEvent::Started),
            Some(message) => {
                report(ProbeEvent::Failed {
                    kind: "Startup",
                    message,
                });
                return;
            }
        }
    }
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            return;
        };
        tokio::time::sleep(initial_delay(probe)).await;
        let successes_needed = probe.success_threshold.unwrap_or(1).max(1);
        let failures_needed = probe.failure_threshold.unwrap_or(3).max(1);
        let (mut successes, mut failures) = (0, 0);
        let mut ready: Option<bool> = None;
        loop {
            let ok = run_once(&container, probe, pod_ip).await;
            if let Err(message) = &ok {
                tracing::debug!(container = %container.name, %message, "readiness probe failed");
            }
            if ok.is_ok() {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            let next = if successes >= successes_needed {
                Some(true)
            } else if failures >= failures_needed || (ready.is_none() && failures > 0) {
                Some(false)
            } else {
                ready
            };
            if next != ready {
                if let Some(value) = next {
                    report(ProbeEvent::Ready(value));
                }
                ready = next;
            }
            tokio::time::sleep(period(probe)).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return;
        };
        if let Some(message) = until_failed(&container, probe, pod_ip, false).await {
            report(ProbeEvent::Failed {
                kind: "Liveness",
                message,
            });
        }
    };
    tokio::join!(readiness, liveness);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn container(probe: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "c",
            "ports": [{"name": "metrics", "containerPort": 0}],
            "readinessProbe": probe,
        }))
        .unwrap()
    }

    /// A real HTTP server on loopback answering `status` to every request.
    async fn server(status: u16) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = read_some(&s, &mut buf).await;
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = write_all(&s, reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probe_by_port_name_and_status() {
        let ok_port = server(200).await;
        let bad_port = server(503).await;
        let mut c =
            container(serde_json::json!({"httpGet": {"path": "/healthz", "port": "metrics"}}));
        c.ports.as_mut().unwrap()[0].container_port = i32::from(ok_port);
        let probe = c.readiness_probe.clone().unwrap();
        assert_eq!(run_once(&c, &probe, Ipv4Addr::LOCALHOST).await, Ok(()));
        c.ports.as_mut().unwrap()[0].container_port = i32::from(bad_port);
        assert_eq!(
            run_once(&c, &probe, Ipv4Addr::LOCALHOST).await,
            Err("HTTP probe failed with statuscode: 503".to_string())
        );
    }

    #[tokio::test]
    async fn readiness_reports_changes_only() {
        let port = server(200).await;
        let c = container(serde_json::json!({"httpGet": {"port": port}, "periodSeconds": 1}));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(run(c, Ipv4Addr::LOCALHOST, move |e| {
            sink.lock().unwrap().push(e)
        }));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        task.abort();
        assert_eq!(*seen.lock().unwrap(), vec![ProbeEvent::Ready(true)]);
    }

    /// Runs [`run`] on `c` for `millis` and returns what it reported.
    async fn events(c: Container, millis: u64) -> Vec<ProbeEvent> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(run(c, Ipv4Addr::LOCALHOST, move |e| {
            sink.lock().unwrap().push(e)
        }));
        tokio::time::sleep(Duration::from_millis(millis)).await;
        task.abort();
        let events = seen.lock().unwrap().clone();
        events
    }

    #[tokio::test]
    async fn startup_then_liveness_fail_after_their_thresholds() {
        let ok = server(200).await;
        let bad = server(503).await;
        let failed = |kind| ProbeEvent::Failed {
            kind,
            message: "HTTP probe failed with statuscode: 503".into(),
        };
        // Startup passes at once; liveness fails twice, one period apart: one restart.
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "startupProbe": {"httpGet": {"port": ok}, "periodSeconds": 1},
            "livenessProbe": {"httpGet": {"port": bad}, "periodSeconds": 1, "failureThreshold": 2},
        }))
        .unwrap();
        assert_eq!(
            events(c, 2500).await,
            vec![ProbeEvent::Started, failed("Liveness")]
        );
        // A failing startup probe reports once and ends the probing: liveness never runs.
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "startupProbe": {"httpGet": {"port": bad}, "periodSeconds": 1, "failureThreshold": 2},
            "livenessProbe": {"httpGet": {"port": bad}, "periodSeconds": 1, "failureThreshold": 1},
        }))
        .unwrap();
        assert_eq!(events(c, 2500).await, vec![failed("Startup")]);
    }

    #[test]
    fn unsupported_probes_are_refused() {
        let c = container(serde_json::json!({"exec": {"command": ["true"]}}));
        assert!(validate(&c).unwrap_err().contains("exec or grpc"));
        let c = container(serde_json::json!({"httpGet": {"port": "nope"}}));
        assert_eq!(
            validate(&c).unwrap_err(),
            "container \"c\": probe port \"nope\" names no containerPort of the container"
        );
    }
}

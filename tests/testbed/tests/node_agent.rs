//! The node agent against a real cluster: a two-pod StatefulSet of real `cairn-worker`
//! processes (container 0 coordinates, container 1 joins it by its headless-Service name),
//! fault injection, an unknown image, init containers, Secrets, ConfigMap updates, the
//! projected service-account token, graceful deletion, an agent killed and restarted, and
//! nothing left behind afterwards.
//!
//! One test function: the steps share one cluster and one agent, and the last step checks the
//! teardown of both, which only the owner of the cluster can do.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
use cairn_testbed::process::is_running;
use cairn_testbed::{Cluster, ClusterOptions};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use kube::api::{DeleteParams, LogParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const NS: &str = "agent-test";

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout` with `what`
/// and the end of the agent's log.
async fn wait_for<T, F, Fut>(agent: &NodeAgent, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {}s waiting for {what}; agent log:\n{}",
                timeout.as_secs(),
                agent.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn create<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object is valid")
}

fn container_status(
    pod: &Pod,
    container: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
        .cloned()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// The PID of the container's process, from its `cairn://<pid>` container ID.
fn container_pid(pod: &Pod, container: &str) -> Option<u32> {
    container_status(pod, container)?
        .container_id?
        .strip_prefix("cairn://")?
        .parse()
        .ok()
}

/// A file as the container sees it: read from inside its mount namespace (`/proc/<pid>/root`
/// would resolve absolute symlinks such as `/var/run -> /run` in the caller's namespace).
fn read_in_container(pid: u32, path: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--", "cat", path])
        .output()
        .expect("nsenter runs");
    assert!(
        out.status.success(),
        "reading {path} in the mount namespace of {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment a process was started with.
fn environment(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Sum of a Prometheus counter over its labels, read over HTTP from the pod's IP.
fn scrape_counter(ip: Ipv4Addr, port: u16, metric: &str) -> Option<f64> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let mut total = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        total = Some(total.unwrap_or(0.0) + value);
    }
    total
}

/// The agent exited, every container process it ran is gone, and so are its network
/// namespaces and their markers.
fn assert_nothing_left(agent_pid: u32, pids: &[u32], netns_prefix: &str, root_dir: &Path) {
    assert!(!is_running(agent_pid), "the agent exited");
    for pid in pids {
        assert!(!is_running(*pid), "container process {pid} is gone");
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(netns_prefix))
        .map(str::to_string)
        .collect();
    assert!(
        left.is_empty(),
        "the agent removed its namespaces: {left:?}"
    );
    let markers = std::fs::read_dir(root_dir.join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(markers, 0, "no namespace markers left");
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("cidr");
    let net: Ipv4Addr = net.parse().expect("cidr address");
    let len: u32 = len.parse().expect("cidr length");
    let mask = u32::MAX << (32 - len);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn job_yaml(name: &str, partitions: u32, parallelism: u32, store: &str) -> String {
    format!(
        "name: {name}\n\
         input:\n  type: generator\n  partitions: {partitions}\n  keys: 1000\n  ratePerSecond: 200\n\
         task:\n  name: count\n\
         output:\n  type: \"null\"\n\
         parallelism: {parallelism}\n\
         checkpoint:\n  interval: 2s\n  store: {store}\n  retained: 3\n\
         state:\n  dir: /var/lib/cairn/state\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_runs_pods_as_processes() {
    let started = Instant::now();
    // A workspace-wide build enables two rustls providers; pick one for the test's client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start(ClusterOptions {
        name: "node-agent".into(),
        with_pod_network: true,
    })
    .expect("cluster starts");
    let network = cluster.pod_network().expect("pod network");
    let (bridge, netns_prefix, cidr) = (
        network.bridge.clone(),
        network.netns_prefix.clone(),
        network.cidr.clone(),
    );
    let worker = workspace_binary("cairn-worker").expect("cairn-worker builds");
    let images = [("cairn/worker".to_string(), worker)];
    let agent = NodeAgent::start(&cluster, &images).expect("node agent starts");
    let agent_pid = agent.pid();
    let client = cluster.client().await.expect("client");
    println!(
        "cluster and agent up after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &create(json!({"metadata": {"name": NS}})),
        )
        .await
        .expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    wait_for(
        &agent,
        "the default service account",
        Duration::from_secs(30),
        || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.ok().flatten() }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut pids = Vec::new();

    // 1. A real two-container job as a StatefulSet behind a headless Service.
    let store = cluster.work_dir().join("wc-store");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    configmaps
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": {"name": "wc-job"},
                // The token the two processes authenticate to each other with.
                "data": {"job.yaml": job_yaml("wc", 2, 2, "file:///var/lib/cairn/store"),
                         "token": "node-agent-coordinator-token-0123"},
            })),
        )
        .await
        .expect("job configmap");
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": {"name": "wc"},
                "spec": {"clusterIP": "None", "selector": {"app": "wc"},
                         "ports": [{"name": "coordinator", "port": 7000}]},
            })),
        )
        .await
        .expect("headless service");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    statefulsets
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": {"name": "wc"},
                "spec": {
                    "serviceName": "wc",
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "wc"}},
                    "template": {
                        "metadata": {"labels": {"app": "wc"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 5,
                            "containers": [{
                                "name": "worker",
                                "image": "cairn/worker:dev",
                                "command": ["/usr/local/bin/cairn-worker"],
                                "args": ["run", "/etc/cairn/job.yaml", "--quiet",
                                         "--coordinator-listen", "0.0.0.0:7000",
                                         "--coordinator", "$(COORDINATOR)",
                                         "--coordinator-token-file", "/etc/cairn/token",
                                         "--metrics-addr", "0.0.0.0:9249"],
                                "env": [
                                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                    {"name": "CAIRN_CONTAINER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
                                    {"name": "COORDINATOR", "value": "wc-0.wc.$(POD_NAMESPACE).svc.cluster.local:7000"},
                                ],
                                "ports": [{"name": "metrics", "containerPort": 9249}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                                   "periodSeconds": 1},
                                "volumeMounts": [
                                    {"name": "job", "mountPath": "/etc/cairn", "readOnly": true},
                                    {"name": "store", "mountPath": "/var/lib/cairn/store"},
                                    {"name": "state", "mountPath": "/var/lib/cairn/state"},
                                ],
                            }],
                            "volumes": [
                                {"name": "job", "configMap": {"name": "wc-job"}},
                                // Both containers must see one store: the coordinator commits
                                // what every container uploaded.
                                {"name": "store", "hostPath": {"path": store.display().to_string(), "type": "DirectoryOrCreate"}},
                                {"name": "state", "emptyDir": {}},
                            ],
                        },
                    },
                },
            })),
        )
        .await
        .expect("statefulset");
    let mut ips = BTreeMap::new();
    for name in ["wc-0", "wc-1"] {
        let pod = wait_for(
            &agent,
            &format!("{name} Ready"),
            Duration::from_secs(90),
            || {
                let pods = pods.clone();
                async move { pods.get_opt(name).await.ok().flatten().filter(is_ready) }
            },
        )
        .await;
        let ip = pod_ip(&pod).expect("ready pod has an IP");
        assert!(in_cidr(ip, &cidr), "{name} IP {ip} is not in {cidr}");
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(
            status.host_ip.as_deref(),
            Some(network.gateway.to_string().as_str())
        );
        let cs = container_status(&pod, "worker").expect("container status");
        assert!(
            cs.ready && cs.started == Some(true) && cs.restart_count == 0,
            "{cs:?}"
        );
        assert!(cs.image_id.ends_with("/cairn-worker"), "{}", cs.image_id);
        pids.push(container_pid(&pod, "worker").expect("pid"));
        ips.insert(name, ip);
    }
    assert_ne!(ips["wc-0"], ips["wc-1"]);
    println!(
        "StatefulSet Ready after {:.1}s: {ips:?}",
        started.elapsed().as_secs_f64()
    );
    let wc1 = pods.get("wc-1").await.expect("wc-1");
    let wc1_pid = container_pid(&wc1, "worker").expect("pid");
    let hosts = read_in_container(wc1_pid, "/etc/hosts");
    assert!(
        hosts.contains(&format!("{}\twc-0.wc.{NS}.svc.cluster.local", ips["wc-0"])),
        "wc-1's /etc/hosts names wc-0:\n{hosts}"
    );
    assert!(
        hosts.contains(&format!(
            "{}\twc-1.wc.{NS}.svc.cluster.local\twc-1",
            ips["wc-1"]
        )),
        "{hosts}"
    );
    let env = environment(wc1_pid);
    let api_port = cluster
        .server_url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    assert_eq!(env.get("CAIRN_CONTAINER").map(String::as_str), Some("1"));
    assert_eq!(
        env.get("COORDINATOR").map(String::as_str),
        Some("wc-0.wc.agent-test.svc.cluster.local:7000")
    );
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST"),
        Some(&network.gateway.to_string())
    );
    assert_eq!(env.get("KUBERNETES_SERVICE_PORT"), Some(&api_port));
    let job = read_in_container(wc1_pid, "/etc/cairn/job.yaml");
    assert_eq!(job, job_yaml("wc", 2, 2, "file:///var/lib/cairn/store"));
    // Task t runs in container t % 2: records counted in wc-1 prove it joined the coordinator
    // by its DNS name and restored from it.
    for (name, ip) in &ips {
        wait_for(
            &agent,
            &format!("records processed in {name}"),
            Duration::from_secs(60),
            || async { scrape_counter(*ip, 9249, "cairn_records_in_total").filter(|n| *n > 0.0) },
        )
        .await;
    }
    let checkpoints = wait_for(
        &agent,
        "a committed checkpoint in the shared store",
        Duration::from_secs(60),
        || {
            let store = store.clone();
            async move {
                let out = std::process::Command::new(workspace_binary("cairn-worker").ok()?)
                    .args(["checkpoints", &format!("file://{}", store.display())])
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (out.status.success() && !text.trim().is_empty()).then_some(text)
            }
        },
    )
    .await;
    println!("checkpoints of the StatefulSet job:\n{checkpoints}");

    // 2. Fault injection: SIGKILL wc-1's process; it restarts (restartCount 1) and is Ready.
    pods.patch(
        "wc-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"testbed.cairn.dev/kill": "1"}}})),
    )
    .await
    .expect("annotate");
    let restarted = wait_for(
        &agent,
        "wc-1 restarted and Ready",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt("wc-1").await.ok().flatten()?;
                let cs = container_status(&pod, "worker")?;
                (cs.restart_count == 1 && is_ready(&pod)).then_some(pod)
            }
        },
    )
    .await;
    let cs = container_status(&restarted, "worker").expect("status");
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .expect("last state terminated");
    assert_eq!(
        (last.exit_code, last.signal, last.reason.as_deref()),
        (137, Some(9), Some("Error"))
    );
    assert!(!is_running(wc1_pid), "the killed process {wc1_pid} is gone");
    let new_pid = container_pid(&restarted, "worker").expect("pid");
    assert_ne!(new_pid, wc1_pid);
    pids.push(new_pid);
    wait_for(
        &agent,
        "records processed in wc-1 after its restart",
        Duration::from_secs(60),
        || async {
            scrape_counter(ips["wc-1"], 9249, "cairn_records_in_total").filter(|n| *n > 0.0)
        },
    )
    .await;
    println!(
        "wc-1 restarted after the kill at {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // `kubectl logs` through the API server (pods/log -> the agent's kubelet API): the runs are
    // the agent's log file cut at its banners, the banners themselves left out.
    let file = agent.pod_log(NS, "wc-1", "worker");
    let runs: Vec<&str> = file.split("=== cairn-node-agent ").skip(1).collect();
    assert_eq!(runs.len(), 2, "two runs of wc-1 in {file}");
    let output = |run: &str| {
        run.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_owned())
    };
    let logs = |previous: bool, tail_lines: Option<i64>| {
        let pods = pods.clone();
        async move {
            let params = LogParams {
                container: Some("worker".into()),
                previous,
                tail_lines,
                ..LogParams::default()
            };
            pods.logs("wc-1", &params).await
        }
    };
    let previous = logs(true, None).await.expect("logs --previous");
    assert_eq!(previous, output(runs[0]), "the killed run's output");
    assert!(!previous.is_empty() && !previous.contains("=== cairn-node-agent"));
    let last_line = format!("{}\n", previous.lines().last().unwrap());
    assert_eq!(
        logs(true, Some(1)).await.expect("logs --previous --tail 1"),
        last_line
    );
    let current = logs(false, None).await.expect("logs");
    let now = output(
        agent
            .pod_log(NS, "wc-1", "worker")
            .split("=== cairn-node-agent ")
            .nth(2)
            .unwrap(),
    );
    assert!(
        now.starts_with(&current) && !current.is_empty(),
        "the current run's output so far: {current:?} vs the file's {now:?}"
    );
    let missing = pods
        .logs(
            "wc-1",
            &LogParams {
                container: Some("nope".into()),
                ..LogParams::default()
            },
        )
        .await
        .expect_err("no such container");
    assert!(missing.to_string().contains("nope"), "{missing}");

    // The kubelet endpoint itself takes only clients the cluster CA signed: curl with the API
    // server's kubelet-client certificate reads the log, curl without a certificate is refused.
    let node: k8s_openapi::api::core::v1::Node = Api::all(client.clone())
        .get(agent.node_name())
        .await
        .expect("node");
    let port = node
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    let gateway = cluster.pod_network().unwrap().gateway;
    let url = format!("https://{gateway}:{port}/containerLogs/{NS}/wc-1/worker?previous=true");
    let pki = cluster.work_dir().join("pki");
    let curl = |extra: &[String]| {
        std::process::Command::new("curl")
            .args(["-sS", "--insecure", "--noproxy", "*", "--max-time", "10"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl runs")
    };
    let with_cert = curl(&[
        "--cert".into(),
        pki.join("apiserver-kubelet-client.crt")
            .display()
            .to_string(),
        "--key".into(),
        pki.join("apiserver-kubelet-client.key")
            .display()
            .to_string(),
    ]);
    assert_eq!(String::from_utf8_lossy(&with_cert.stdout), previous);
    let without = curl(&[]);
    assert!(
        !without.status.success() && without.stdout.is_empty(),
        "no client certificate, no logs: {:?}",
        String::from_utf8_lossy(&without.stdout)
    );

    // 3. An image that maps to no binary waits with ErrImagePull, naming it and the known ones.
    pods.create(
        &PostParams::default(),
        &create(json!({
            "metadata": {"name": "bad-image"},
            "spec": {"containers": [{"name": "main", "image": "example/unknown:1.0"}]},
        })),
    )
    .await
    .expect("bad-image pod");
    let waiting = wait_for(&agent, "bad-image waiting", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt("bad-image").await.ok().flatten()?;
            container_status(&pod, "main")?
                .state?
                .waiting
                .filter(|w| w.reason.as_deref() == Some("ErrImagePull"))
        }
    })
    .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("image \"example/unknown:1.0\" (repository \"example/unknown\") is not mapped to a binary; the node agent knows cairn/worker. Start it with --image example/unknown=/path/to/binary or use one of those images")
    );
    let bad = pods.get("bad-image").await.expect("bad-image");
    assert_eq!(bad.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    // 4. The projected service-account volume: a real bound token, the CA and the namespace.
    configmaps
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": {"name": "solo-job"},
                "data": {"job.yaml": job_yaml("solo", 1, 1, "file:///var/lib/cairn/state/store")},
            })),
        )
        .await
        .expect("solo configmap");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": {"name": "solo-secret"},
                "stringData": {"password": "s3cret", "user": "cairn"},
            })),
        )
        .await
        .expect("secret");
    pods.create(
        &PostParams::default(),
        &create(json!({
            "metadata": {"name": "solo"},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "initContainers": [{
                    "name": "validate",
                    "image": "cairn/worker",
                    "args": ["validate", "/etc/cairn/job.yaml"],
                    "volumeMounts": [{"name": "job", "mountPath": "/etc/cairn"}],
                }],
                "containers": [{
                    "name": "worker",
                    "image": "cairn/worker",
                    "args": ["run", "/etc/cairn/job.yaml", "--quiet", "--metrics-addr", "0.0.0.0:9249"],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 9249}, "periodSeconds": 1},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 9249}, "periodSeconds": 1},
                    "env": [{"name": "DB_PASSWORD",
                             "valueFrom": {"secretKeyRef": {"name": "solo-secret", "key": "password"}}}],
                    "envFrom": [{"prefix": "DB_", "secretRef": {"name": "solo-secret"}}],
                    "volumeMounts": [
                        {"name": "job", "mountPath": "/etc/cairn"},
                        {"name": "state", "mountPath": "/var/lib/cairn/state"},
                        {"name": "secret", "mountPath": "/etc/solo-secret", "readOnly": true},
                    ],
                }],
                "volumes": [
                    {"name": "job", "configMap": {"name": "solo-job"}},
                    {"name": "secret", "secret": {"secretName": "solo-secret", "defaultMode": 0o440,
                      "items": [{"key": "password", "path": "db/password", "mode": 0o400}]}},
                    {"name": "state", "emptyDir": {}},
                ],
            },
        })),
    )
    .await
    .expect("solo pod");
    let solo = wait_for(&agent, "solo Ready", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { pods.get_opt("solo").await.ok().flatten().filter(is_ready) }
    })
    .await;
    let solo_pid = container_pid(&solo, "worker").expect("pid");
    pids.push(solo_pid);
    // The init container ran first, to completion.
    let init = solo
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.first())
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("init container terminated");
    assert_eq!(
        (init.exit_code, init.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(
        agent.pod_log(NS, "solo", "validate").contains("name: solo"),
        "validate printed the spec"
    );
    // Secret keys as env vars and as files with their modes.
    let env = environment(solo_pid);
    assert_eq!(env.get("DB_PASSWORD").map(String::as_str), Some("s3cret"));
    assert_eq!(env.get("DB_user").map(String::as_str), Some("cairn"));
    assert_eq!(
        read_in_container(solo_pid, "/etc/solo-secret/db/password"),
        "s3cret"
    );
    let mode = std::process::Command::new("nsenter")
        .args(["--target", &solo_pid.to_string(), "--mount", "--"])
        .args(["stat", "-L", "-c", "%a", "/etc/solo-secret/db/password"])
        .output()
        .expect("stat");
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "400");
    // A ConfigMap update reaches the running container's volume.
    configmaps
        .patch(
            "solo-job",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"note": "v2"}})),
        )
        .await
        .expect("update configmap");
    wait_for(
        &agent,
        "the updated ConfigMap in solo's volume",
        Duration::from_secs(30),
        || async {
            let out = std::process::Command::new("nsenter")
                .args([
                    "--target",
                    &solo_pid.to_string(),
                    "--mount",
                    "--",
                    "cat",
                    "/etc/cairn/note",
                ])
                .output()
                .ok()?;
            (out.stdout == b"v2").then_some(())
        },
    )
    .await;
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = read_in_container(solo_pid, &format!("{sa_dir}/token"));
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT has three parts: {token:?}"
    );
    assert_eq!(
        read_in_container(solo_pid, &format!("{sa_dir}/namespace")),
        NS
    );
    assert_eq!(
        read_in_container(solo_pid, &format!("{sa_dir}/ca.crt")),
        cluster.ca_cert_pem()
    );
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = reviews
        .create(
            &PostParams::default(),
            &create(json!({"spec": {"token": token}})),
        )
        .await
        .expect("token review");
    let status = review.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some("system:serviceaccount:agent-test:default")
    );

    // 5. Graceful deletion: SIGTERM (the worker starts its final checkpoint), the process and
    // its network namespace go, then the agent deletes the pod object.
    let netns_before: Vec<String> = cluster
        .pod_network()
        .expect("network")
        .namespaces()
        .expect("netns list");
    assert_eq!(
        netns_before.len(),
        4,
        "one namespace per pod with a network (wc-0, wc-1, bad-image, solo): {netns_before:?}"
    );
    let deleted_at = Instant::now();
    pods.delete(
        "solo",
        &DeleteParams {
            grace_period_seconds: Some(2),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete solo");
    wait_for(
        &agent,
        "solo gone from the API",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt("solo").await, Ok(None)).then_some(()) }
        },
    )
    .await;
    let gone_after = deleted_at.elapsed();
    assert!(
        gone_after < Duration::from_secs(15),
        "deleted after {gone_after:?}"
    );
    assert!(!is_running(solo_pid), "solo's process is gone");
    let log = agent.pod_log(NS, "solo", "worker");
    let stop = log
        .find("stop requested: taking a final checkpoint")
        .unwrap_or_else(|| panic!("SIGTERM reached the worker:\n{log}"));
    assert!(
        log[stop..].contains("checkpoint committed"),
        "the final checkpoint was committed within the grace period:\n{log}"
    );
    let netns_after = cluster
        .pod_network()
        .expect("network")
        .namespaces()
        .expect("netns list");
    assert_eq!(
        netns_after.len(),
        3,
        "solo's namespace is removed: {netns_after:?}"
    );
    println!("solo deleted in {:.1}s", gone_after.as_secs_f64());

    // 6. The agent dies (SIGKILL): its container processes die with it (PR_SET_PDEATHSIG), its
    // namespaces stay until the next agent starts. A pod deleted while no agent runs is deleted
    // by the next one; the others run again, with their IPs and one more restart each.
    let root_dir: PathBuf = agent.root_dir().to_path_buf();
    let mut agent = agent;
    // SAFETY: plain kill(2) of the agent process this test started.
    unsafe {
        libc::kill(agent_pid as libc::pid_t, libc::SIGKILL);
    }
    agent.stop().expect("the killed agent is reaped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| is_running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        assert!(
            !is_running(*pid),
            "container process {pid} died with the agent"
        );
    }
    let orphaned = cluster
        .pod_network()
        .expect("network")
        .namespaces()
        .expect("netns list");
    assert_eq!(
        orphaned.len(),
        3,
        "wc-0, wc-1 and bad-image keep their namespaces: {orphaned:?}"
    );
    pods.delete("bad-image", &DeleteParams::default())
        .await
        .expect("delete bad-image");
    let marked = pods
        .get("bad-image")
        .await
        .expect("bad-image stays while no agent runs");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let agent = NodeAgent::start(&cluster, &images).expect("node agent restarts");
    let agent_pid = agent.pid();
    wait_for(
        &agent,
        "bad-image deleted by the restarted agent",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt("bad-image").await, Ok(None)).then_some(()) }
        },
    )
    .await;
    for (name, restarts) in [("wc-0", 1), ("wc-1", 2)] {
        let pod = wait_for(
            &agent,
            &format!("{name} running again"),
            Duration::from_secs(60),
            || {
                let pods = pods.clone();
                async move {
                    let pod = pods.get_opt(name).await.ok().flatten()?;
                    let cs = container_status(&pod, "worker")?;
                    (is_ready(&pod) && cs.restart_count == restarts).then_some(pod)
                }
            },
        )
        .await;
        assert_eq!(pod_ip(&pod), Some(ips[name]), "{name} keeps its IP");
        pids.push(container_pid(&pod, "worker").expect("pid"));
    }
    wait_for(
        &agent,
        "records processed in wc-1 after the agent restart",
        Duration::from_secs(60),
        || async {
            scrape_counter(ips["wc-1"], 9249, "cairn_records_in_total").filter(|n| *n > 0.0)
        },
    )
    .await;
    let netns = cluster
        .pod_network()
        .expect("network")
        .namespaces()
        .expect("netns list");
    assert_eq!(netns.len(), 2, "wc-0 and wc-1 only: {netns:?}");
    println!(
        "agent restarted, pods back at {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Nothing is left after the agent and the cluster are dropped.
    drop(agent);
    assert_nothing_left(agent_pid, &pids, &netns_prefix, &root_dir);
    drop(cluster);
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} removed"
    );
    println!(
        "node agent test took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

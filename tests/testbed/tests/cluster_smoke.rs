//! The test bed's control plane end to end: a real API server with RBAC, CEL validation,
//! server-side apply, the garbage collector, the deployment and replicaset controllers and the
//! scheduler; kubectl and helm against it; and nothing left behind afterwards — neither after a
//! normal drop nor after the test binary is SIGKILLed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testbed::process::is_running;
use cairn_testbed::{Cluster, ClusterOptions};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::json;

const NS: &str = "smoke";
const CHILD_ENV: &str = "CAIRN_TESTBED_SMOKE_CHILD";
const SHARED_CHILD_ENV: &str = "CAIRN_TESTBED_SHARED_CHILD";
const FAILURE_CHILD_ENV: &str = "CAIRN_TESTBED_FAILURE_CHILD";

/// What a cluster owned on the machine, to check it is all gone.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Footprint {
    pids: Vec<u32>,
    ports: Vec<(IpAddr, u16)>,
    work_dir: PathBuf,
    bridge: Option<String>,
    /// The kernel's index of the bridge: a later cluster may get the same subnet and name.
    bridge_ifindex: Option<String>,
    /// The pod network namespaces that existed.
    netns: Vec<String>,
}

fn ifindex(link: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{link}/ifindex")).ok()
}

fn footprint(c: &Cluster) -> Footprint {
    let p = c.ports();
    let lo = IpAddr::from([127, 0, 0, 1]);
    Footprint {
        pids: c.process_ids().into_iter().map(|(_, pid)| pid).collect(),
        ports: vec![
            (lo, p.etcd_client),
            (lo, p.etcd_peer),
            (c.api_ip(), p.apiserver),
        ],
        work_dir: c.work_dir().to_path_buf(),
        bridge: c.pod_network().map(|n| n.bridge.clone()),
        bridge_ifindex: c.pod_network().and_then(|n| ifindex(&n.bridge)),
        netns: c
            .pod_network()
            .map(|n| namespaces_with_prefix(&n.netns_prefix))
            .unwrap_or_default(),
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Asserts that nothing of `f` is left: processes, listening ports, bridge, namespaces, files.
fn assert_nothing_left(f: &Footprint, within: Duration) {
    let deadline = Instant::now() + within;
    while f.pids.iter().any(|&p| is_running(p)) {
        assert!(Instant::now() < deadline, "processes still running: {f:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for &(ip, port) in &f.ports {
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(_) => {}
            // The API server's address was the bridge's: with the bridge gone it is not even a
            // local address any more, so nothing can listen on it.
            Err(e) if f.bridge.is_some() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Err(e) => panic!("port {ip}:{port} is still taken: {e}"),
        }
    }
    if let Some(bridge) = &f.bridge {
        // Absent, or a new bridge of a later cluster that got the same subnet.
        assert!(
            !link_exists(bridge) || ifindex(bridge) != f.bridge_ifindex,
            "bridge {bridge} is still there"
        );
    }
    let all = namespaces_with_prefix("");
    let left: Vec<&String> = f.netns.iter().filter(|ns| all.contains(ns)).collect();
    assert!(left.is_empty(), "namespaces {left:?} are still there");
    assert!(
        !f.work_dir.exists(),
        "{} is still there",
        f.work_dir.display()
    );
}

/// Puts a network namespace named like the node agent's on the pod network, with a veth pair
/// and the address `.2`, and returns its name.
fn plug_namespace(c: &Cluster, suffix: &str) -> Option<String> {
    let net = c.pod_network()?;
    let ns = format!("{}{suffix}", net.netns_prefix);
    let host_if = format!("cairnv{}{suffix}", net.index());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pod_addr = format!("10.244.{}.2/{}", net.index(), net.prefix_len);
    ip(&["netns", "add", &ns]);
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    ip(&["link", "set", &host_if, "master", &net.bridge, "up"]);
    ip(&["-n", &ns, "addr", "add", &pod_addr, "dev", "eth0"]);
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    Some(ns)
}

/// Fails a helper run by hand (`--ignored`): only its parent test sets `env` and checks what the
/// helper prints.
fn assert_run_by_parent(env: &str) {
    assert!(
        std::env::var_os(env).is_some(),
        "{env} is unset: this helper is a child process of control_plane_works_and_leaves_nothing_behind; run that test instead"
    );
}

/// Runs this test binary again with only the ignored helper test `helper`, `env` set to 1.
fn helper_command(helper: &str, env: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        helper,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(env, "1");
    cmd
}

/// Not a test on its own: [`control_plane_works_and_leaves_nothing_behind`] runs this binary
/// again with only this function (and `CAIRN_TESTBED_SMOKE_CHILD` set), which starts a cluster,
/// plugs a namespace into its pod network, prints its footprint and waits to be SIGKILLed.
#[test]
#[ignore = "child process of control_plane_works_and_leaves_nothing_behind; run by it with --ignored"]
fn sigkill_helper() {
    assert_run_by_parent(CHILD_ENV);
    let cluster = Cluster::start(ClusterOptions::new("smoke-killed")).unwrap();
    plug_namespace(&cluster, "killed");
    println!(
        "FOOTPRINT {}",
        serde_json::to_string(&footprint(&cluster)).unwrap()
    );
    std::thread::sleep(Duration::from_secs(3600));
}

/// Not a test on its own: [`control_plane_works_and_leaves_nothing_behind`] runs this binary
/// again with only this function (and `CAIRN_TESTBED_SHARED_CHILD` set), which uses a shared
/// cluster without a pod network from two threads, prints its footprint and returns, leaving the
/// teardown to the exit hook.
#[test]
#[ignore = "child process of control_plane_works_and_leaves_nothing_behind; run by it with --ignored"]
fn shared_helper() {
    assert_run_by_parent(SHARED_CHILD_ENV);
    let opts = ClusterOptions {
        name: "smoke-shared".to_string(),
        with_pod_network: false,
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::shared(opts.clone()).unwrap());
        let b = s.spawn(|| Cluster::shared(opts.clone()).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(std::ptr::eq(a, b), "two clusters were started");
    assert!(a.pod_network().is_none());
    assert!(
        a.server_url().starts_with("https://127.0.0.1:"),
        "{}",
        a.server_url()
    );
    assert_eq!(run(a.kubectl().args(["get", "--raw", "/readyz"])), "ok");
    println!(
        "FOOTPRINT {}",
        serde_json::to_string(&footprint(a)).unwrap()
    );
}

/// Not a test on its own: run by [`control_plane_works_and_leaves_nothing_behind`] (and
/// `CAIRN_TESTBED_FAILURE_CHILD` set) with `KUBEBUILDER_ASSETS` pointing at an etcd that fails,
/// it prints the error of `Cluster::start`.
#[test]
#[ignore = "child process of control_plane_works_and_leaves_nothing_behind; run by it with --ignored"]
fn start_failure_helper() {
    assert_run_by_parent(FAILURE_CHILD_ENV);
    let err = Cluster::start(ClusterOptions::new("smoke-failing")).unwrap_err();
    println!("ERROR-BEGIN\n{err}\nERROR-END");
}

/// A component that fails to start is named, with its log path and the end of its log, and
/// nothing keeps running.
fn a_failed_start_names_the_component_and_quotes_its_log() -> PathBuf {
    let assets = std::env::temp_dir().join(format!("cairn-smoke-assets-{}", std::process::id()));
    std::fs::create_dir_all(&assets).unwrap();
    let script = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = assets.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "etcd",
        "echo 'etcdmain: simulated failure to start' >&2; exit 3",
    );
    script("kube-apiserver", "exit 1");
    let out = helper_command("start_failure_helper", FAILURE_CHILD_ENV)
        .env("KUBEBUILDER_ASSETS", &assets)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&assets).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let err = stdout
        .split("ERROR-BEGIN\n")
        .nth(1)
        .and_then(|rest| rest.split("\nERROR-END").next())
        .unwrap_or_else(|| panic!("no error printed: {stdout}"));
    let mut lines = err.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("etcd exited during start (exit status: 3); work dir "),
        "{err}"
    );
    let work_dir = PathBuf::from(
        first
            .split("work dir ")
            .nth(1)
            .and_then(|r| r.strip_suffix(" is kept for debugging."))
            .unwrap(),
    );
    let log = work_dir.join("etcd.log");
    assert_eq!(lines.next(), Some("logs:"));
    assert_eq!(
        lines.next(),
        Some(format!("  etcd: {}", log.display()).as_str())
    );
    assert_eq!(lines.next(), Some(""));
    assert_eq!(
        lines.next(),
        Some(format!("last lines of {}:", log.display()).as_str())
    );
    assert_eq!(lines.next(), Some("etcdmain: simulated failure to start"));
    assert_eq!(lines.next(), None);
    assert!(log.exists());
    work_dir
}

/// Runs [`shared_helper`] in a child test binary and checks its exit hook left nothing.
fn a_shared_cluster_is_torn_down_when_the_test_binary_exits() {
    let out = helper_command("shared_helper", SHARED_CHILD_ENV)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the helper failed: {stdout}");
    let shared: Footprint = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l.split("FOOTPRINT ").nth(1)?).ok())
        .unwrap_or_else(|| panic!("no footprint in {stdout}"));
    assert_eq!(shared.pids.len(), 4, "{shared:?}");
    assert_eq!(shared.bridge, None);
    // The exit hook ran before the helper exited: nothing is left, right away.
    assert_nothing_left(&shared, Duration::ZERO);
}

/// Kills the helper if this test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not after {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[test]
fn control_plane_works_and_leaves_nothing_behind() {
    // 0. A cluster shared by the tests of a binary goes away when the binary exits. (A step, not
    //    a test of its own: tests run in parallel, and two clusters starting at once on two
    //    cores only slow each other down.)
    a_shared_cluster_is_torn_down_when_the_test_binary_exits();
    let failed_work_dir = a_failed_start_names_the_component_and_quotes_its_log();

    // 1. A test binary that is SIGKILLed with a running cluster leaves no process behind, and
    //    the next start removes what it left on disk and in the network.
    let mut child = KillOnDrop(
        helper_command("sigkill_helper", CHILD_ENV)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let killed: Footprint = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            // libtest prints the test name on the same line first.
            let json = l.split("FOOTPRINT ").nth(1)?;
            Some(serde_json::from_str(json).unwrap())
        })
        .expect("the helper never started its cluster; see its output above");
    assert_eq!(killed.pids.len(), 4, "{killed:?}");
    assert_eq!(
        killed.netns.len(),
        usize::from(killed.bridge.is_some()),
        "{killed:?}"
    );
    assert!(killed.pids.iter().all(|&p| is_running(p)));
    child.0.kill().unwrap(); // SIGKILL: no destructor, no atexit hook runs in the child
    child.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while killed.pids.iter().any(|&p| is_running(p)) {
        assert!(
            Instant::now() < deadline,
            "PDEATHSIG did not stop {killed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its work dir, bridge and namespace stay until the next start on the machine (ours below,
    // or any other test run's) sees their free locks and removes them.

    // 2. A fresh cluster; starting it cleans up after the killed one.
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions::new("smoke")).unwrap();
    eprintln!("cluster started in {:?}", started.elapsed());
    assert_nothing_left(&killed, Duration::from_secs(1));
    assert!(!failed_work_dir.exists(), "{}", failed_work_dir.display());

    // 3. The cluster works.
    let url = cluster.server_url().to_string();
    match cluster.pod_network() {
        Some(net) => {
            assert!(
                url.starts_with(&format!("https://{}:", net.gateway)),
                "{url}"
            );
            // A pod's namespace on the bridge reaches the API server at the gateway.
            let ns = plug_namespace(&cluster, "smoke").unwrap();
            let readyz = run(Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&cluster.binaries().kubectl)
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig_path())
                .args(["get", "--raw", "/readyz"]));
            assert_eq!(readyz, "ok");
        }
        None => assert!(url.starts_with("https://127.0.0.1:"), "{url}"),
    }
    assert!(cluster
        .ca_cert_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let version = run(cluster.kubectl().args(["version"]));
    assert!(version.contains("Client Version: v1.34."), "{version}");
    assert!(version.contains("Server Version: v1.34."), "{version}");
    let helm = run(cluster.helm().args(["version", "--short"]));
    assert!(helm.starts_with("v3."), "{helm}");
    let helm_list = run(cluster.helm().args(["list", "--all-namespaces", "-q"]));
    assert_eq!(helm_list, "");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = cluster.client().await.unwrap();
        namespace_and_config_map(&client).await;
        cel_validation(&client).await;
        server_side_apply(&client).await;
        garbage_collection(&client).await;
        deployment_is_scheduled_nowhere(&client).await;
    });
    rbac_is_enforced_for_service_accounts(&cluster);

    // 4. Drop: nothing is left.
    let left = footprint(&cluster);
    assert_eq!(left.pids.len(), 4);
    assert_eq!(
        left.netns.len(),
        usize::from(left.bridge.is_some()),
        "{left:?}"
    );
    let stopping = Instant::now();
    drop(cluster);
    eprintln!("cluster torn down in {:?}", stopping.elapsed());
    assert_nothing_left(&left, Duration::from_secs(1));
}

async fn namespace_and_config_map(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "data": {"greeting": "hello"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let read = cms.get("plain").await.unwrap();
    assert_eq!(
        read.data,
        Some(BTreeMap::from([(
            "greeting".to_string(),
            "hello".to_string()
        )]))
    );
}

async fn cel_validation(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.testbed.cairn.dev"},
        "spec": {
            "group": "testbed.cairn.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "min": {"type": "integer"},
                            "max": {"type": "integer"},
                        },
                        "x-kubernetes-validations": [{
                            "rule": "self.min <= self.max",
                            "message": "min must not exceed max",
                        }],
                    }},
                }},
            }],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    eventually("CRD established", Duration::from_secs(60), || async {
        let crd = crds
            .get("widgets.testbed.cairn.dev")
            .await
            .map_err(|e| e.to_string())?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established
            .then_some(())
            .ok_or_else(|| "not established".to_string())
    })
    .await;

    let gvk = GroupVersionKind::gvk("testbed.cairn.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    let widget = |name: &str, min: i64, max: i64| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "testbed.cairn.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"min": min, "max": max},
        }))
        .unwrap()
    };
    // The discovery of a new CRD can lag its Established condition for a moment.
    eventually(
        "a valid Widget is accepted",
        Duration::from_secs(30),
        || async {
            widgets
                .create(&PostParams::default(), &widget("good", 1, 2))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let err = widgets
        .create(&PostParams::default(), &widget("bad", 3, 2))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert_eq!(status.reason, "Invalid", "{status:?}");
            assert!(
                status
                    .message
                    .contains("spec: Invalid value: \"object\": min must not exceed max"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a validation error, got {other}"),
    }
}

async fn server_side_apply(client: &Client) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let doc = |value: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "applied"},
            "data": {"owner-key": value},
        })
    };
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("cairn-smoke"),
            &Patch::Apply(doc("one")),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["owner-key"], "one");
    let managers: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        vec![("cairn-smoke".to_string(), "Apply".to_string())]
    );
    // Another manager setting the same field conflicts unless it forces.
    let err = cms
        .patch(
            "applied",
            &PatchParams::apply("intruder"),
            &Patch::Apply(doc("two")),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                status.message.contains("conflict with \"cairn-smoke\""),
                "{}",
                status.message
            );
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(doc("two")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner-key"], "two");
}

async fn garbage_collection(client: &Client) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let owned: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "owned",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": owner.metadata.uid.unwrap(),
            }],
        },
    }))
    .unwrap();
    cms.create(&PostParams::default(), &owned).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually(
        "the owned ConfigMap is collected",
        Duration::from_secs(90),
        || async {
            match cms.get_opt("owned").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
}

async fn deployment_is_scheduled_nowhere(client: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                // Never pulled: the cluster has no node.
                "spec": {"containers": [{"name": "web", "image": "cairn-testbed/none:never"}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let rs = eventually(
        "the Deployment's ReplicaSet",
        Duration::from_secs(90),
        || async {
            let list = replicasets
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "Deployment" && o.name == "web")
                })
                .ok_or_else(|| "no ReplicaSet yet".to_string())
        },
    )
    .await;
    let rs_name = rs.metadata.name.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (phase, reason, message) = eventually(
        "the Pod is reported unschedulable",
        Duration::from_secs(90),
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let pod = list
                .items
                .into_iter()
                .find(|p| {
                    p.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "ReplicaSet" && o.name == rs_name)
                })
                .ok_or_else(|| "no Pod yet".to_string())?;
            let status = pod.status.unwrap_or_default();
            let cond = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")
                .ok_or_else(|| "no PodScheduled condition yet".to_string())?;
            Ok((
                status.phase.unwrap_or_default(),
                (cond.status, cond.reason.unwrap_or_default()),
                cond.message.unwrap_or_default(),
            ))
        },
    )
    .await;
    assert_eq!(phase, "Pending");
    assert_eq!(reason, ("False".to_string(), "Unschedulable".to_string()));
    assert_eq!(message, "no nodes available to schedule pods");
}

/// A service account's token is accepted (the signing key pair and issuer are wired) and RBAC
/// denies it what no role grants.
fn rbac_is_enforced_for_service_accounts(cluster: &Cluster) {
    run(cluster
        .kubectl()
        .args(["-n", NS, "create", "serviceaccount", "nobody"]));
    let token = run(cluster
        .kubectl()
        .args(["-n", NS, "create", "token", "nobody"]));
    // Only the token: with the admin kubeconfig the client certificate would authenticate first.
    let ca = cluster.work_dir().join("smoke-ca.crt");
    std::fs::write(&ca, cluster.ca_cert_pem()).unwrap();
    let out = Command::new(&cluster.binaries().kubectl)
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            cluster.server_url(),
        ])
        .arg("--certificate-authority")
        .arg(&ca)
        .args(["--token", token.trim(), "-n", NS, "get", "pods"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "User \"system:serviceaccount:smoke:nobody\" cannot list resource \"pods\" in API group \"\" in the namespace \"smoke\""
        ),
        "{stderr}"
    );
    let can = cluster
        .kubectl()
        .args([
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            NS,
            "--as",
            "system:serviceaccount:smoke:nobody",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");
}

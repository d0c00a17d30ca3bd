//! A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler built from source (see `tests/controlplane/build.sh`), with fresh certificates,
//! real RBAC, and optionally a pod network (a bridge) the node agent plugs pods into.
//!
//! [`Cluster::start`] blocks until `/readyz` is ok and the `default` ServiceAccount exists;
//! dropping the [`Cluster`] (also when a test panics) stops every process and removes the pod
//! network and the work directory. Children die with the test binary even when it is SIGKILLed
//! (`PR_SET_PDEATHSIG`), and what a killed run leaves on disk or in the network is removed by
//! the next start.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Config;

use crate::binaries::{control_plane_binaries, ControlPlaneBinaries};
use crate::certs::{CertFiles, ClusterCerts};
use crate::network::PodNetwork;
use crate::process::{terminate_all, without_proxy, ManagedProcess, ProcessError};
use crate::workdir::WorkDir;
use crate::{kubeconfig, probe, TestbedError};

/// `--service-cluster-ip-range` of the API server; its first address is in the serving cert.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
/// `--service-account-issuer`, the `iss` of every service-account token.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long etcd and the API server may take to become ready. Generous: the machine is shared
/// and an API server on two busy cores can take a minute to install its bootstrap RBAC.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// SIGTERM -> SIGKILL grace at teardown.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts at a start whose freshly picked port was taken by someone else in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// Lines of a failed component's log quoted in the error.
const TAIL_LINES: usize = 40;

/// Errors of starting a cluster or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster name is used in paths and log lines, so it is restricted.
    #[error("invalid cluster name {name:?}: use 1 to 40 characters of a-z, 0-9 and '-'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No free port could be found on an address.
    #[error("cannot find a free port on {ip} for {component}: {source}")]
    NoFreePort {
        /// The component.
        component: &'static str,
        /// The address.
        ip: IpAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A component exited during start.
    #[error("{0}")]
    Exited(Box<StartFailure>),
    /// A component did not become ready in time.
    #[error("{0}")]
    NotReady(Box<StartFailure>),
    /// A kubeconfig could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The admin kubeconfig could not be turned into a client.
    #[error("cannot build a client from {path}: {reason}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The shared cluster of this test binary failed to start earlier.
    #[error("the shared test cluster failed to start: {0}")]
    SharedStartFailed(String),
}

/// Why a component failed to start, with what it takes to debug it (boxed in [`ClusterError`]
/// to keep the error small).
#[derive(Debug)]
pub struct StartFailure {
    /// What went wrong, e.g. `etcd exited during start (exit status: 1)`.
    pub problem: String,
    /// The log of the component concerned.
    pub log: PathBuf,
    /// Its last lines.
    pub tail: String,
    /// Every log of the cluster, one `  component: path` per line.
    pub logs: String,
    /// The work directory, kept until the next start so the logs can be read.
    pub work_dir: PathBuf,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; work dir {} is kept for debugging.\nlogs:\n{}\nlast lines of {}:\n{}",
            self.problem,
            self.work_dir.display(),
            self.logs,
            self.log.display(),
            self.tail
        )
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Names the work directory (`<name>-<pid>-<n>`) and log lines: a-z, 0-9, '-'.
    pub name: String,
    /// Create a bridge the node agent plugs pods into, and serve the API on its gateway
    /// address. Defaults to true when running as root with `ip` (see
    /// [`PodNetwork::available`]); requesting it otherwise is an error naming the fix.
    pub with_pod_network: bool,
}

impl ClusterOptions {
    /// Options for a cluster called `name`, with a pod network when the machine allows one.
    pub fn new(name: &str) -> ClusterOptions {
        ClusterOptions {
            name: name.to_string(),
            with_pod_network: PodNetwork::available(),
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions::new("cluster")
    }
}

/// The ports a cluster listens on, for tests that check they are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterPorts {
    /// etcd client URL port (127.0.0.1).
    pub etcd_client: u16,
    /// etcd peer URL port (127.0.0.1).
    pub etcd_peer: u16,
    /// The API server's secure port (on [`Cluster::api_ip`]).
    pub apiserver: u16,
}

/// A running control plane. Dropping it tears everything down.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    server_url: String,
    api_ip: IpAddr,
    ports: ClusterPorts,
    ca_cert_pem: String,
    kubeconfig: PathBuf,
    binaries: ControlPlaneBinaries,
    pod_network: Option<PodNetwork>,
    work: WorkDir,
    processes: Mutex<Vec<ManagedProcess>>,
    torn_down: Mutex<bool>,
}

impl Cluster {
    /// Starts a cluster and waits until it is usable: `/readyz` ok and the `default`
    /// ServiceAccount created (so the controllers run). Builds the binaries first when they are
    /// missing (see [`control_plane_binaries`]). Blocking; callable from async tests too.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, TestbedError> {
        validate_name(&opts.name)?;
        let binaries = control_plane_binaries()?;
        let work = WorkDir::create(&opts.name)?;
        let pod_network = if opts.with_pod_network {
            Some(PodNetwork::create()?)
        } else {
            None
        };
        let api_ip = pod_network
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |n| IpAddr::V4(n.gateway));
        let pki = work.path().join("pki");
        std::fs::create_dir(&pki).map_err(|source| ClusterError::Write {
            path: pki.clone(),
            source,
        })?;
        let certs = ClusterCerts::generate(&[IpAddr::V4(Ipv4Addr::LOCALHOST), api_ip])?;
        let files = certs.write_to(&pki)?;

        let mut starter = Starter {
            work: work.path().to_path_buf(),
            binaries: &binaries,
            files: &files,
            processes: Vec::new(),
        };
        // On any error below, dropping `starter` (its processes), `pod_network` and `work`'s lock
        // stops everything; the work directory stays for its logs until the next start.
        let (etcd_client, etcd_peer) = starter.start_etcd()?;
        let (apiserver, server_url) = starter.start_apiserver(api_ip, etcd_client)?;
        let admin_kubeconfig = work.path().join("admin.kubeconfig");
        write_file(
            &admin_kubeconfig,
            &kubeconfig::render(
                "cairn-testbed-admin",
                &server_url,
                &certs.ca.cert_pem,
                &certs.admin.cert_pem,
                &certs.admin.key_pem,
            ),
        )?;
        starter.wait_api_ready(&admin_kubeconfig)?;
        // The controllers use the admin identity: --use-service-account-credentials=false means
        // one identity for every controller, and only system:masters has all they need.
        let mut controller_kubeconfigs = Vec::new();
        for component in ["kube-controller-manager", "kube-scheduler"] {
            let path = work.path().join(format!("{component}.kubeconfig"));
            write_file(
                &path,
                &kubeconfig::render(
                    component,
                    &server_url,
                    &certs.ca.cert_pem,
                    &certs.admin.cert_pem,
                    &certs.admin.key_pem,
                ),
            )?;
            controller_kubeconfigs.push(path);
        }
        starter.start_controller_manager(&controller_kubeconfigs[0])?;
        starter.start_scheduler(&controller_kubeconfigs[1])?;
        starter.wait_default_service_account(&admin_kubeconfig)?;
        // The cluster owns the processes from here on; the starter (and its borrow of the
        // binaries) ends.
        let processes = Mutex::new(std::mem::take(&mut starter.processes));
        drop(starter);

        Ok(Cluster {
            name: opts.name,
            server_url,
            api_ip,
            ports: ClusterPorts {
                etcd_client,
                etcd_peer,
                apiserver,
            },
            ca_cert_pem: certs.ca.cert_pem,
            kubeconfig: admin_kubeconfig,
            binaries,
            pod_network,
            processes,
            work,
            torn_down: Mutex::new(false),
        })
    }

    /// One cluster per test binary: the first call starts it (with `opts`; later calls ignore
    /// theirs), every call returns the same cluster. It is torn down when the test binary exits
    /// (an `atexit` hook: statics are never dropped), and its children die with the binary
    /// anyway. A failed start is reported to every caller.
    pub fn shared(opts: ClusterOptions) -> Result<&'static Cluster, TestbedError> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        extern "C" fn teardown_shared() {
            // Unwinding out of an extern "C" function aborts: contain any panic.
            let _ = std::panic::catch_unwind(|| {
                if let Some(Ok(cluster)) = SHARED.get() {
                    if let Err(e) = cluster.teardown() {
                        eprintln!("cairn-testbed: tearing down the shared cluster: {e}");
                    }
                }
            });
        }
        let result = SHARED.get_or_init(|| {
            let started = Cluster::start(opts).map_err(|e| e.to_string());
            if started.is_ok() {
                // SAFETY: registers a plain function without captured state.
                unsafe {
                    libc::atexit(teardown_shared);
                }
            }
            started
        });
        match result {
            Ok(cluster) => Ok(cluster),
            Err(message) => Err(ClusterError::SharedStartFailed(message.clone()).into()),
        }
    }

    /// The name given in [`ClusterOptions`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin kubeconfig (client certificate with O=system:masters), self-contained.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://IP:PORT` of the API server.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The address the API server listens on: the pod-network gateway, or 127.0.0.1.
    pub fn api_ip(&self) -> IpAddr {
        self.api_ip
    }

    /// The ports the control plane listens on.
    pub fn ports(&self) -> ClusterPorts {
        self.ports
    }

    /// The cluster CA certificate, PEM (what the API server's certificate chains to).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The temporary directory holding certificates (`pki/`), kubeconfigs, logs (`*.log`) and
    /// the etcd data.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Paths of the binaries this cluster runs, and kubectl and helm.
    pub fn binaries(&self) -> &ControlPlaneBinaries {
        &self.binaries
    }

    /// The pod network, `None` when the cluster runs without one (not root, or no `ip`).
    pub fn pod_network(&self) -> Option<&PodNetwork> {
        self.pod_network.as_ref()
    }

    /// `(component, pid)` of every process of the control plane.
    pub fn process_ids(&self) -> Vec<(String, u32)> {
        lock(&self.processes)
            .iter()
            .map(|p| (p.name().to_string(), p.pid()))
            .collect()
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        component_log(self.work.path(), component)
    }

    /// A kube client with the admin identity.
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        client_from(&self.kubeconfig).await.map_err(Into::into)
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        without_proxy(&mut cmd)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        cmd
    }

    /// `helm --kubeconfig <admin kubeconfig>`, with Helm's cache, config and data directories
    /// inside the work directory so tests never touch the user's Helm setup.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.helm);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        let helm_home = self.work.path().join("helm");
        without_proxy(&mut cmd)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"));
        cmd
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period), deletes the pod
    /// network (bridge and namespaces) and the work directory — kept instead when
    /// `CAIRN_TESTBED_KEEP=1`. Idempotent; [`Drop`] calls it. With `CAIRN_TESTBED_HOLD=<secs>`
    /// it first waits that long, printing the kubeconfig path, so a person can look around.
    pub fn teardown(&self) -> Result<(), TestbedError> {
        let mut torn_down = lock(&self.torn_down);
        if *torn_down {
            return Ok(());
        }
        *torn_down = true;
        if let Some(secs) = env_u64("CAIRN_TESTBED_HOLD") {
            eprintln!(
                "cairn-testbed: holding cluster {} for {secs}s: kubectl --kubeconfig {}",
                self.name,
                self.kubeconfig.display()
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
        let stopped = stop_in_order(&mut lock(&self.processes));
        let network = self
            .pod_network
            .as_ref()
            .map_or(Ok(()), PodNetwork::teardown);
        let work = if keep_requested() {
            eprintln!(
                "cairn-testbed: CAIRN_TESTBED_KEEP=1: keeping {}",
                self.work.path().display()
            );
            self.work.keep()
        } else {
            self.work.remove()
        };
        stopped?;
        network?;
        work?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("cairn-testbed: tearing down cluster {}: {e}", self.name);
        }
    }
}

/// Stops the control plane, etcd last: the API server's graceful shutdown still writes to
/// etcd (it removes its own endpoint lease), and waits out its timeouts when etcd is gone first.
fn stop_in_order(processes: &mut [ManagedProcess]) -> Result<(), ProcessError> {
    // A stable sort on "is etcd" keeps the order of the rest and moves etcd to the end.
    processes.sort_by_key(|p| p.name() == "etcd");
    let split = processes
        .iter()
        .position(|p| p.name() == "etcd")
        .unwrap_or(processes.len());
    let (first, last) = processes.split_at_mut(split);
    let stopped = terminate_all(first, STOP_GRACE);
    terminate_all(last, STOP_GRACE).and(stopped)
}

/// Builds an admin client from a kubeconfig file.
async fn client_from(path: &Path) -> Result<kube::Client, ClusterError> {
    let fail = |reason: String| ClusterError::Client {
        path: path.to_path_buf(),
        reason,
    };
    // rustls cannot pick a crypto provider when a workspace build enables two (ring through
    // kube, aws-lc-rs through the S3 client); every client of the harness goes through here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // A local API server accepts at once or not at all: fail fast instead of kube's 30 s. The
    // read timeout stays kube's default, which long-polling watches rely on.
    config.connect_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// The log file of a control-plane component in the work directory `work`: where
/// [`Starter`] sends its output and what [`Cluster::log_path`] reports.
fn component_log(work: &Path, component: &str) -> PathBuf {
    work.join(format!("{component}.log"))
}

/// Starts the components one by one, owning the processes until the cluster is complete.
struct Starter<'a> {
    work: PathBuf,
    binaries: &'a ControlPlaneBinaries,
    files: &'a CertFiles,
    processes: Vec<ManagedProcess>,
}

impl Starter<'_> {
    fn log(&self, component: &str) -> PathBuf {
        component_log(&self.work, component)
    }

    fn spawn(
        &mut self,
        component: &str,
        program: &Path,
        args: Vec<String>,
    ) -> Result<(), ProcessError> {
        let p = ManagedProcess::spawn(component, program, &args, &self.log(component))?;
        self.processes.push(p);
        Ok(())
    }

    /// Starts etcd on two fresh loopback ports (etcd cannot bind port 0 and report it), and
    /// retries with other ports when one was taken in the meantime.
    fn start_etcd(&mut self) -> Result<(u16, u16), TestbedError> {
        // A copy of the shared reference, so the paths stay borrowable while `self` spawns.
        let binaries = self.binaries;
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for attempt in 1..=PORT_ATTEMPTS {
            let client = free_port("etcd", lo)?;
            let peer = free_port("etcd", lo)?;
            if client == peer {
                continue;
            }
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args = vec![
                "--name=testbed".to_string(),
                format!("--data-dir={}", self.work.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testbed={peer_url}"),
                // A test cluster's data dies with it: fsync only slows every write down.
                "--unsafe-no-fsync=true".to_string(),
                "--log-level=warn".to_string(),
            ];
            self.spawn("etcd", &binaries.etcd, args)?;
            let addr = SocketAddr::new(lo, client);
            match self.wait_sync("etcd", || probe::etcd_health(addr)) {
                Ok(()) => return Ok((client, peer)),
                Err(e) if attempt < PORT_ATTEMPTS && self.lost_port_race("etcd") => {
                    eprintln!("cairn-testbed: etcd lost a port race, retrying: {e}");
                    self.drop_last();
                }
                Err(e) => return Err(e),
            }
        }
        unreachable_ports("etcd")
    }

    /// Starts the API server on a fresh port of `ip`; returns its port and URL.
    fn start_apiserver(
        &mut self,
        ip: IpAddr,
        etcd_client: u16,
    ) -> Result<(u16, String), TestbedError> {
        let (f, binaries) = (self.files, self.binaries);
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port("kube-apiserver", ip)?;
            let args = vec![
                format!("--advertise-address={ip}"),
                format!("--bind-address={ip}"),
                format!("--secure-port={port}"),
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                "--authorization-mode=Node,RBAC".to_string(),
                format!("--client-ca-file={}", f.ca_cert.display()),
                format!("--tls-cert-file={}", f.apiserver_cert.display()),
                format!("--tls-private-key-file={}", f.apiserver_key.display()),
                format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                format!(
                    "--service-account-key-file={}",
                    f.service_account_pub.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    f.service_account_key.display()
                ),
                format!(
                    "--kubelet-client-certificate={}",
                    f.kubelet_client_cert.display()
                ),
                format!("--kubelet-client-key={}", f.kubelet_client_key.display()),
                // The node agent's Hostname address does not resolve: reach it (kubectl logs)
                // at its InternalIP, the gateway.
                "--kubelet-preferred-address-types=InternalIP".to_string(),
                "--allow-privileged=true".to_string(),
                // Never write under the default /var/run/kubernetes.
                format!("--cert-dir={}", self.work.join("apiserver-certs").display()),
                "--profiling=false".to_string(),
            ];
            self.spawn("kube-apiserver", &binaries.kube_apiserver, args)?;
            // Only "is the port bound and the process alive" here; readiness needs a kubeconfig.
            let addr = SocketAddr::new(ip, port);
            let listening = self.wait_sync("kube-apiserver", || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
            match listening {
                Ok(()) => {
                    let host = match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    return Ok((port, format!("https://{host}:{port}")));
                }
                Err(e) if attempt < PORT_ATTEMPTS && self.lost_port_race("kube-apiserver") => {
                    eprintln!("cairn-testbed: kube-apiserver lost a port race, retrying: {e}");
                    self.drop_last();
                }
                Err(e) => return Err(e),
            }
        }
        unreachable_ports("kube-apiserver")
    }

    fn start_controller_manager(&mut self, kubeconfig: &Path) -> Result<(), TestbedError> {
        let f = self.files;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=*".to_string(),
            "--leader-elect=false".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--root-ca-file={}", f.ca_cert.display()),
            format!(
                "--service-account-private-key-file={}",
                f.service_account_key.display()
            ),
            // The CSR signer, for node agents that request kubelet certificates.
            format!("--cluster-signing-cert-file={}", f.ca_cert.display()),
            format!("--cluster-signing-key-file={}", f.ca_key.display()),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            // No HTTPS endpoint: it would need a fixed or free port per cluster and nothing
            // scrapes it; the default ServiceAccount proves the controllers run.
            "--secure-port=0".to_string(),
            format!("--cert-dir={}", self.work.join("kcm-certs").display()),
            "--profiling=false".to_string(),
        ];
        let binaries = self.binaries;
        self.spawn(
            "kube-controller-manager",
            &binaries.kube_controller_manager,
            args,
        )?;
        Ok(())
    }

    fn start_scheduler(&mut self, kubeconfig: &Path) -> Result<(), TestbedError> {
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            "--profiling=false".to_string(),
        ];
        let binaries = self.binaries;
        self.spawn("kube-scheduler", &binaries.kube_scheduler, args)?;
        Ok(())
    }

    fn wait_api_ready(&mut self, kubeconfig: &Path) -> Result<(), TestbedError> {
        self.wait_async(
            "kube-apiserver",
            "kube-apiserver /readyz",
            kubeconfig,
            |client| Box::pin(async move { probe::api_server_ready(&client).await }),
        )
    }

    fn wait_default_service_account(&mut self, kubeconfig: &Path) -> Result<(), TestbedError> {
        self.wait_async(
            "kube-controller-manager",
            "ServiceAccount default/default (created by kube-controller-manager)",
            kubeconfig,
            |client| {
                Box::pin(async move { probe::default_service_account(&client, "default").await })
            },
        )
    }

    /// Polls `check` until it is `Ok`, failing when any process exits or after the timeout.
    fn wait_sync(
        &mut self,
        component: &str,
        mut check: impl FnMut() -> Result<(), String>,
    ) -> Result<(), TestbedError> {
        let started = Instant::now();
        loop {
            self.all_alive()?;
            let Err(last) = check() else {
                return Ok(());
            };
            if started.elapsed() > START_TIMEOUT {
                return Err(self.not_ready(component, component, started.elapsed(), last));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`Self::wait_sync`] for a probe that needs a kube client.
    fn wait_async(
        &mut self,
        component: &str,
        what: &str,
        kubeconfig: &Path,
        check: impl Fn(
                kube::Client,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
            + Send
            + Sync,
    ) -> Result<(), TestbedError> {
        enum Failed {
            Fatal(TestbedError),
            Timeout(String),
        }
        let started = Instant::now();
        let outcome = probe::run_async(async {
            let client = client_from(kubeconfig)
                .await
                .map_err(|e| Failed::Fatal(e.into()))?;
            loop {
                self.all_alive().map_err(Failed::Fatal)?;
                let Err(last) = check(client.clone()).await else {
                    return Ok(());
                };
                if started.elapsed() > START_TIMEOUT {
                    return Err(Failed::Timeout(last));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })?;
        match outcome {
            Ok(()) => Ok(()),
            Err(Failed::Fatal(e)) => Err(e),
            Err(Failed::Timeout(last)) => {
                Err(self.not_ready(component, what, started.elapsed(), last))
            }
        }
    }

    /// `Err` naming the first process that has exited.
    fn all_alive(&mut self) -> Result<(), TestbedError> {
        let mut exited = None;
        for p in &mut self.processes {
            if let Some(status) = p.exit_status()? {
                exited = Some((
                    p.name().to_string(),
                    status.to_string(),
                    p.log_path().to_path_buf(),
                    p.log_tail(TAIL_LINES),
                ));
                break;
            }
        }
        match exited {
            None => Ok(()),
            Some((component, status, log, tail)) => {
                Err(ClusterError::Exited(Box::new(StartFailure {
                    problem: format!("{component} exited during start ({status})"),
                    log,
                    tail,
                    logs: self.all_logs(),
                    work_dir: self.work.to_path_buf(),
                }))
                .into())
            }
        }
    }

    fn not_ready(
        &self,
        component: &str,
        what: &str,
        waited: Duration,
        last: String,
    ) -> TestbedError {
        let log = self.log(component);
        ClusterError::NotReady(Box::new(StartFailure {
            problem: format!("{what} not ready after {waited:?} (last answer: {last})"),
            tail: crate::process::log_tail(&log, TAIL_LINES),
            log,
            logs: self.all_logs(),
            work_dir: self.work.to_path_buf(),
        }))
        .into()
    }

    fn all_logs(&self) -> String {
        let mut s = String::new();
        for p in &self.processes {
            let _ = writeln!(s, "  {}: {}", p.name(), p.log_path().display());
        }
        s
    }

    /// True when the last process exited because its port was taken between our probe for a
    /// free port and its bind.
    fn lost_port_race(&mut self, component: &str) -> bool {
        let Some(p) = self.processes.last_mut() else {
            return false;
        };
        p.name() == component
            && matches!(p.exit_status(), Ok(Some(_)))
            && p.log_tail(TAIL_LINES).contains("address already in use")
    }

    fn drop_last(&mut self) {
        if let Some(mut p) = self.processes.pop() {
            let _ = p.terminate(STOP_GRACE);
        }
    }
}

impl Drop for Starter<'_> {
    fn drop(&mut self) {
        // Only non-empty when start failed: the cluster took the processes otherwise.
        let _ = terminate_all(&mut self.processes, STOP_GRACE);
    }
}

fn unreachable_ports<T>(component: &'static str) -> Result<T, TestbedError> {
    Err(ClusterError::NoFreePort {
        component,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        source: io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("lost the race for a free port {PORT_ATTEMPTS} times"),
        ),
    }
    .into())
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
fn free_port(component: &'static str, ip: IpAddr) -> Result<u16, ClusterError> {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ClusterError::NoFreePort {
            component,
            ip,
            source,
        })
}

fn validate_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    // Kubeconfigs embed a private key.
    crate::certs::write_private(path, text).map_err(|e| match e {
        crate::certs::CertsError::Write { path, source } => ClusterError::Write { path, source },
        other => ClusterError::Write {
            path: path.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    })
}

fn keep_requested() -> bool {
    std::env::var("CAIRN_TESTBED_KEEP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (a list of processes, a
    // flag): keep tearing down.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_to_path_safe_characters() {
        assert!(validate_name("smoke-1").is_ok());
        for bad in ["", "Smoke", "a/b", "a b", &"x".repeat(41)] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.to_string().contains("use 1 to 40 characters"), "{err}");
        }
    }
}

//! `cairn-operator`: `run` the operator, or print the CRD (`crdgen`).

use clap::{Parser, Subcommand};

use cairn_operator::config::{OperatorConfig, PolicyConfigError, WorkloadPolicy};

#[derive(Parser)]
#[command(
    name = "cairn-operator",
    version,
    about = "The Cairn Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of `Run` (all its flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Reconcile StreamJobs until SIGTERM.
    Run {
        /// Namespaces to watch, comma-separated; empty: all.
        #[arg(
            long,
            env = "CAIRN_WATCH_NAMESPACES",
            value_delimiter = ',',
            default_value = ""
        )]
        namespaces: Vec<String>,
        /// Serve /metrics, /healthz and /readyz here.
        #[arg(long, env = "CAIRN_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        http_addr: std::net::SocketAddr,
        /// Take the leader Lease before reconciling (keep it on with more than one replica).
        #[arg(long, env = "CAIRN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// Namespace of the Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Worker image of jobs that name none.
        #[arg(long, env = "CAIRN_WORKER_IMAGE")]
        worker_image: Option<String>,
        /// Service account of worker pods that name none.
        #[arg(
            long,
            env = "CAIRN_WORKER_SERVICE_ACCOUNT",
            default_value = "cairn-worker"
        )]
        worker_service_account: String,
        /// Worker images StreamJobs may run, comma-separated: `*`, `prefix*`, or a repository
        /// (any tag or digest of it). Empty: the repository of the default worker image.
        #[arg(
            long,
            env = "CAIRN_ALLOWED_IMAGES",
            value_delimiter = ',',
            default_value = ""
        )]
        allowed_images: Vec<String>,
        /// Service accounts worker pods may run as, comma-separated, or `*`. Empty: the
        /// default worker service account only.
        #[arg(
            long,
            env = "CAIRN_ALLOWED_SERVICE_ACCOUNTS",
            value_delimiter = ',',
            default_value = ""
        )]
        allowed_service_accounts: Vec<String>,
        /// Volume types StreamJobs may add to worker pods, comma-separated (`hostPath`,
        /// `projected`, `serviceAccountToken` in projected volumes, ...), or `*`.
        #[arg(
            long,
            env = "CAIRN_ALLOWED_VOLUME_TYPES",
            value_delimiter = ',',
            default_value = "configMap,downwardAPI,emptyDir,persistentVolumeClaim,secret"
        )]
        allowed_volume_types: Vec<String>,
        /// Which Secrets StreamJobs may use: `labelled` (only those labelled
        /// cairn.dev/streamjob-access=allowed), `any`, or `none`.
        #[arg(long, env = "CAIRN_SECRET_ACCESS", default_value = "labelled")]
        secret_access: String,
        /// Reconciles run at the same time (per watched namespace when --namespaces is set);
        /// 0: unbounded.
        #[arg(long, env = "CAIRN_MAX_CONCURRENT_RECONCILES", default_value_t = cairn_operator::config::DEFAULT_MAX_CONCURRENT_RECONCILES)]
        max_concurrent_reconciles: u16,
        /// Log format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Print the StreamJob CustomResourceDefinition (YAML).
    Crdgen,
}

fn main() -> std::process::ExitCode {
    // A workspace build can enable both of rustls' crypto providers (object_store's S3 client
    // brings aws-lc-rs); rustls then refuses to choose, so choose here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen => {
            print!("{}", cairn_operator::crd::rules::definition_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run {
            namespaces,
            http_addr,
            leader_election,
            lease_namespace,
            identity,
            worker_image,
            worker_service_account,
            allowed_images,
            allowed_service_accounts,
            allowed_volume_types,
            secret_access,
            max_concurrent_reconciles,
            log_format,
        } => {
            init_logging(&log_format);
            let defaults = OperatorConfig::default();
            let worker_image = worker_image.unwrap_or(defaults.worker_image);
            let policy = match workload_policy(
                &worker_image,
                &worker_service_account,
                allowed_images,
                allowed_service_accounts,
                allowed_volume_types,
                &secret_access,
            ) {
                Ok(policy) => policy,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            tracing::info!(?policy, "StreamJob policy");
            let config = OperatorConfig {
                worker_image,
                worker_service_account,
                policy,
                namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
                http_addr,
                leader_election,
                lease_name: defaults.lease_name,
                lease_namespace,
                identity: identity.unwrap_or_else(hostname),
                max_concurrent_reconciles,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cairn_operator::run::run(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// The policy from the flags; empty lists fall back to the defaults of
/// [`WorkloadPolicy::defaults_for`].
fn workload_policy(
    worker_image: &str,
    worker_service_account: &str,
    images: Vec<String>,
    service_accounts: Vec<String>,
    volume_types: Vec<String>,
    secret_access: &str,
) -> Result<WorkloadPolicy, PolicyConfigError> {
    let cleaned = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let defaults = WorkloadPolicy::defaults_for(worker_image, worker_service_account);
    let images = cleaned(images);
    let service_accounts = cleaned(service_accounts);
    let policy = WorkloadPolicy {
        allowed_images: if images.is_empty() {
            defaults.allowed_images
        } else {
            images
        },
        allowed_service_accounts: if service_accounts.is_empty() {
            defaults.allowed_service_accounts
        } else {
            service_accounts
        },
        allowed_volume_types: cleaned(volume_types),
        secret_access: secret_access.parse()?,
    };
    policy.check()?;
    Ok(policy)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "cairn-operator".into())
}

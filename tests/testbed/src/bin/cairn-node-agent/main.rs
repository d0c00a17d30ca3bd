//! `cairn-node-agent`: a test-only kubelet. It registers a Node and runs the pods the real
//! scheduler binds to it as local processes — one network namespace per pod on the test bed's
//! bridge, one mount namespace per container with its volumes — so the operator, its chart
//! and real worker pods are tested against a real API server on a machine without Docker.
//! What it does and does not implement is in `docs/testbed.md` ("Node agent").

mod atomic;
mod config;
mod container;
mod downward;
mod expand;
mod hosts;
mod kubelet_api;
mod network;
mod node;
mod objects;
mod pod;
mod pods;
mod probes;
mod runtime;
mod slot;
mod status;
mod volumes;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::config::{Args, Config};
use crate::hosts::PodIndex;
use crate::network::Ipam;
use crate::pod::Shared;
use crate::runtime::Spawner;

/// A failure that stops the agent at start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error("--api-port not given and the kubeconfig's server URL has no port")]
    ApiPort,
    #[error("root dir {path}: {source}")]
    RootDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("the bridge {0:?} does not exist; start the cluster with a pod network first")]
    Bridge(String),
    #[error(transparent)]
    KubeletApi(#[from] kubelet_api::KubeletApiError),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // The log goes to a file: no colour codes.
        .with_ansi(false)
        .init();
    let args = Args::parse();
    // Explicit, because a workspace-wide build enables both of rustls' providers, and then
    // rustls refuses to pick one (the client panics).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-node-agent: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-node-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The API client, the API server's port and the cluster CA certificates (DER) of the kubeconfig.
async fn client(config: &Config) -> Result<(Client, Option<u16>, Vec<Vec<u8>>), StartError> {
    let path = config.kubeconfig.display().to_string();
    let kubeconfig =
        Kubeconfig::read_from(&config.kubeconfig).map_err(|source| StartError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    let kube_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|source| StartError::Kubeconfig { path, source })?;
    let port = kube_config.cluster_url.port_u16();
    let ca = kube_config.root_cert.clone().unwrap_or_default();
    let client = Client::try_from(kube_config).map_err(StartError::Client)?;
    Ok((client, port, ca))
}

async fn run(args: Args) -> Result<(), StartError> {
    let stop = stop_signal();
    let mut config = Config::from_args(args)?;
    if !std::path::Path::new("/sys/class/net")
        .join(&config.bridge)
        .exists()
    {
        return Err(StartError::Bridge(config.bridge.clone()));
    }
    std::fs::create_dir_all(&config.root_dir).map_err(|source| StartError::RootDir {
        path: config.root_dir.display().to_string(),
        source,
    })?;
    let (client, server_port, cluster_ca) = client(&config).await?;
    let kubelet_api =
        kubelet_api::KubeletApi::bind(config.gateway, &cluster_ca, config.root_dir.clone()).await?;
    config.kubelet_port = kubelet_api.port();
    tokio::spawn(kubelet_api.serve());
    let api_port = config.api_port.or(server_port).ok_or(StartError::ApiPort)?;
    let removed = network::remove_leftovers(&config.root_dir);
    if removed > 0 {
        tracing::info!(removed, "removed network namespaces of a previous agent");
    }
    // Before anything can fork: the spawner thread must be the parent of every container.
    let spawner = Spawner::start();
    let since = node::register(&client, &config).await?;
    let config = Arc::new(config);
    tokio::spawn(node::keep_alive(client.clone(), config.clone(), since));

    let index = PodIndex::default();
    let (services, writer) = reflector::store::<Service>();
    let service_events = reflector(
        writer,
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let touch = index.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(service_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => touch.touch(),
                Err(e) => tracing::warn!(error = %e, "service watch failed; retrying"),
            }
        }
    });
    tokio::spawn(hosts::keep_updated(
        index.clone(),
        services.clone(),
        config.api_host.clone(),
    ));

    let shared = Arc::new(Shared {
        client,
        config: config.clone(),
        api_port,
        spawner,
        ipam: Arc::new(Mutex::new(Ipam::new(config.cidr, config.gateway))),
        index,
        services,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pods = tokio::spawn(pods::run(shared, stop_rx));
    tracing::info!(node = %config.node_name, "node agent running");
    stop.await;
    tracing::info!("stop signal: stopping every pod and removing their network namespaces");
    let _ = stop_tx.send(true);
    let _ = pods.await;
    tracing::info!("node agent stopped");
    Ok(())
}

/// Registers SIGTERM and SIGINT handlers now (so a stop during start-up is not lost to the
/// default action, which would leave namespaces behind) and returns a future that completes on
/// the first of them.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

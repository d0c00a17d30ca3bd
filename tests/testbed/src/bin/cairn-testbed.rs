//! `cairn-testbed up`: the test bed as a standing cluster for people and for tools that take a
//! `KUBECONFIG` — a control plane, a pod network and a node agent that runs the images
//! `cairn/worker`, `cairn/operator` and `cairn/example-worker` as this workspace's binaries. It
//! prints the kubeconfig path and runs until Ctrl-C or SIGTERM, then tears everything down.
//!
//! ```sh
//! cargo build --workspace --bins
//! sudo $CARGO_TARGET_DIR/debug/cairn-testbed up     # as root: the pod network needs it
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_testbed::node_agent::{workspace_binary, NodeAgent};
use cairn_testbed::{Cluster, ClusterOptions};

const USAGE: &str = "usage: cairn-testbed up [--name NAME]\n\
    Starts a test-bed cluster with a node agent, prints its kubeconfig, and runs until Ctrl-C.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["up"] => "testbed".to_owned(),
        ["up", "--name", name] => name.to_owned(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match up(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut images: Vec<(String, PathBuf)> = vec![
        ("cairn/worker".into(), workspace_binary("cairn-worker")?),
        ("cairn/operator".into(), workspace_binary("cairn-operator")?),
    ];
    if let Ok(example) = workspace_binary("cairn-example-worker") {
        images.push(("cairn/example-worker".into(), example));
    }
    let cluster = Cluster::start(ClusterOptions::new(name))?;
    let agent = NodeAgent::start(&cluster, &images)?;
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!(
        "cairn-testbed: cluster {name} is up (node {}, work dir {}); Ctrl-C tears it down",
        agent.node_name(),
        cluster.work_dir().display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
    eprintln!("cairn-testbed: tearing down");
    // The agent first: it stops its pods while the API server still runs.
    drop(agent);
    drop(cluster);
    Ok(())
}

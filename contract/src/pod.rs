//! The worker pod: how the operator starts a worker, and what the worker reads. The operator
//! builds the pod from these names and values; the worker's command line reads the same ones
//! (and its tests parse [`worker_args`] with the real command line).

use std::time::Duration;

/// Containers 1..P dial the coordinator (pod 0) on this port.
pub const COORDINATOR_PORT: u16 = 7000;
/// The control API of pod 0: the operator's only way to talk to a job.
pub const CONTROL_PORT: u16 = 9250;
/// `/metrics` and `/healthz` of every pod.
pub const METRICS_PORT: u16 = 9249;
/// Prometheus metrics, on [`METRICS_PORT`].
pub const METRICS_PATH: &str = "/metrics";
/// The liveness and readiness probes' path, on [`METRICS_PORT`].
pub const HEALTHZ_PATH: &str = "/healthz";

/// Where the job's ConfigMap is mounted.
pub const JOB_DIR: &str = "/etc/cairn";
/// The ConfigMap key holding the job document.
pub const JOB_KEY: &str = "job.yaml";
/// The job document the worker runs: [`JOB_KEY`] in [`JOB_DIR`].
pub const JOB_FILE: &str = "/etc/cairn/job.yaml";
/// Where the control token Secret is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/cairn/control";
/// The Secret key holding the control token.
pub const TOKEN_KEY: &str = "token";
/// The control token file: [`TOKEN_KEY`] in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "/var/run/secrets/cairn/control/token";
/// The unprivileged user (and group) of the worker image.
pub const WORKER_UID: i64 = 65532;

/// The environment variables the worker reads its place in the job from (each is also a flag of
/// `cairn-worker run`).
pub mod env {
    /// `--container`: this pod's container index K (the StatefulSet's pod index).
    pub const CONTAINER: &str = "CAIRN_CONTAINER";
    /// `--coordinator-listen`: container 0 listens here for the others.
    pub const COORDINATOR_LISTEN: &str = "CAIRN_COORDINATOR_LISTEN";
    /// `--coordinator`: containers 1..P dial the coordinator here.
    pub const COORDINATOR: &str = "CAIRN_COORDINATOR";
    /// `--control-addr`: where container 0 serves the control API.
    pub const CONTROL_ADDR: &str = "CAIRN_CONTROL_ADDR";
    /// `--control-token-file`: the control API's bearer token.
    pub const CONTROL_TOKEN_FILE: &str = "CAIRN_CONTROL_TOKEN_FILE";
    /// `--coordinator-token-file`: the token the job's processes authenticate to each other with
    /// (default: the control token file).
    pub const COORDINATOR_TOKEN_FILE: &str = "CAIRN_COORDINATOR_TOKEN_FILE";
    /// `--stop-timeout`: how long container 0 tries its final checkpoint after SIGTERM.
    pub const STOP_TIMEOUT: &str = "CAIRN_STOP_TIMEOUT";
    /// `--http-max-connections`: open connections at most, per HTTP server.
    pub const HTTP_MAX_CONNECTIONS: &str = "CAIRN_HTTP_MAX_CONNECTIONS";
    /// `--hold-after-stop`: stay alive after a stop until SIGTERM.
    pub const HOLD_AFTER_STOP: &str = "CAIRN_HOLD_AFTER_STOP";
    /// `--deployment`: the operator's hash of what the pod runs, echoed in `/v1/status` as
    /// `deployment` so the operator can tell its deployments apart (two deployments of one job
    /// may run the same job document, e.g. with another image).
    pub const DEPLOYMENT: &str = "CAIRN_DEPLOYMENT";
    /// Where the worker keeps compiled WebAssembly components (a Python component takes tens of
    /// seconds to compile): on the pod's state volume, so a restarted container finds them.
    pub const WASM_CACHE: &str = "CAIRN_WASM_CACHE";
}

/// The compile cache of WebAssembly components in a worker pod ([`env::WASM_CACHE`]), under the
/// state volume.
pub const WASM_CACHE_DIR: &str = "/var/lib/cairn/wasm-cache";

/// The worker container's arguments (the image's entrypoint is `cairn-worker`): run the mounted
/// job, serve metrics and `/healthz` on every interface, hold after a stop so the kubelet cannot
/// resume a stopped job, and no live progress on the terminal.
pub fn worker_args() -> Vec<String> {
    vec![
        "run".into(),
        JOB_FILE.into(),
        "--metrics-addr".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
        "--hold-after-stop".into(),
        "--quiet".into(),
    ]
}

/// The pod's `terminationGracePeriodSeconds`: SIGTERM to SIGKILL.
pub const TERMINATION_GRACE: Duration = Duration::from_secs(60);
/// Default `--stop-timeout`: after SIGTERM, how long the coordinator's process tries to take the
/// final checkpoint. Below [`TERMINATION_GRACE`], so that a stop that cannot complete ends with a
/// message rather than the kubelet's SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// How much longer than the coordinator the other containers wait after SIGTERM: when the
/// coordinator gives up on its final checkpoint it still tells them to stop, and that word must
/// arrive before they give up on their own.
pub const CONTAINER_STOP_MARGIN: Duration = Duration::from_secs(5);

// The relation the three values exist for: every process of the job has given up (and said
// why) before the kubelet's SIGKILL. Checked when the crate compiles, so no test is needed.
const _: () = assert!(
    DEFAULT_STOP_TIMEOUT.as_secs() + CONTAINER_STOP_MARGIN.as_secs() < TERMINATION_GRACE.as_secs()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_their_directory_and_key() {
        assert_eq!(JOB_FILE, format!("{JOB_DIR}/{JOB_KEY}"));
        assert_eq!(TOKEN_FILE, format!("{TOKEN_DIR}/{TOKEN_KEY}"));
        assert_eq!(worker_args()[1], JOB_FILE);
    }
}

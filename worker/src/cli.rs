//! The command line of `cairn-worker` (and of any user worker binary built on this crate).

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_contract::pod::env;
use clap::{Parser, Subcommand};

use crate::control::ControlConfig;
use crate::inspect;
use crate::runtime::job::DEFAULT_STOP_TIMEOUT;
use crate::runtime::{run_job, Role, RunOptions};
use crate::storage::CheckpointStore;
use crate::task::TaskRegistry;

/// Environment variable of the upload fault-injection knob (tests only): milliseconds to pause
/// before each file uploaded by a checkpoint, so that a kill can land mid-upload. Exists only
/// in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub const UPLOAD_DELAY_ENV: &str = "CAIRN_FAULT_UPLOAD_DELAY_MS";

/// The [`UPLOAD_DELAY_ENV`] test hook, read like any duration (a bare number is milliseconds),
/// so it is bounded like one.
#[cfg(feature = "test-hooks")]
fn upload_delay_hook() -> Result<Option<Duration>, String> {
    match std::env::var(UPLOAD_DELAY_ENV) {
        Ok(v) => cairn_contract::parse_duration(&v)
            .map(Some)
            .map_err(|e| format!("{UPLOAD_DELAY_ENV}: {e}")),
        Err(_) => Ok(None),
    }
}

/// Without the `test-hooks` feature the upload delay hook does not exist: release builds do
/// not read its variable at all.
#[cfg(not(feature = "test-hooks"))]
fn upload_delay_hook() -> Result<Option<Duration>, String> {
    Ok(None)
}

#[derive(Parser)]
#[command(
    name = "cairn-worker",
    version,
    about = "Cairn worker: stateful streaming tasks with checkpointed RocksDB state"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// `Run` carries every flag of a job start; the command is parsed once per process, so its size
// does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a job (YAML, or a .properties file with Samza's names) in this process.
    Run {
        /// The job spec.
        job: PathBuf,
        /// Restore this committed checkpoint instead of the latest.
        #[arg(long, conflicts_with = "from_savepoint")]
        from_checkpoint: Option<u64>,
        /// Start from this savepoint (URL of its directory) — also with another parallelism,
        /// partition count or task config than the job that took it.
        #[arg(long)]
        from_savepoint: Option<String>,
        /// Run only container K of the job's P (one worker pod); container 0 also runs the
        /// coordinator. Without it, all containers run here as threads.
        #[arg(long, env = env::CONTAINER)]
        container: Option<u32>,
        /// Container 0: where the other containers connect, e.g. 0.0.0.0:7000.
        #[arg(long, env = env::COORDINATOR_LISTEN)]
        coordinator_listen: Option<SocketAddr>,
        /// Containers 1..P: the coordinator's address, e.g. job-0.job:7000.
        #[arg(long, env = env::COORDINATOR)]
        coordinator: Option<String>,
        /// With --container: after SIGTERM, how long the coordinator (container 0) tries to
        /// take the final checkpoint before it stops the containers without one and exits with
        /// an error; containers 1..P keep serving it and give up 5s later. Keep it below the
        /// pod's termination grace period. Default 45s.
        #[arg(long, env = env::STOP_TIMEOUT, value_parser = parse_stop_timeout)]
        stop_timeout: Option<Duration>,
        /// Serve the control API (status, checkpoints, savepoints, stop) on this address.
        #[arg(long, env = env::CONTROL_ADDR, requires = "control_token_file")]
        control_addr: Option<SocketAddr>,
        /// File holding the control API's bearer token.
        #[arg(long, env = env::CONTROL_TOKEN_FILE)]
        control_token_file: Option<PathBuf>,
        /// With --container: file holding the token the job's processes authenticate to each
        /// other with (the same file for every process; at least 16 characters). Default: the
        /// --control-token-file, which the operator mounts in every worker pod.
        #[arg(long, env = env::COORDINATOR_TOKEN_FILE)]
        coordinator_token_file: Option<PathBuf>,
        /// Open connections at most, per HTTP server (the control API, /metrics and /healthz);
        /// at the limit a new connection closes the oldest idle one.
        #[arg(long, env = env::HTTP_MAX_CONNECTIONS, default_value_t = crate::http::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u16).range(1..))]
        http_max_connections: u16,
        /// Serve /metrics and /healthz on this address, e.g. 127.0.0.1:9249 (the pod's
        /// arguments, `cairn_contract::pod::worker_args`, serve them on 0.0.0.0:9249).
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// Do not show live progress.
        #[arg(long)]
        quiet: bool,
        /// After a stop (stop-with-savepoint, `/v1/stop`) or the end of a finite input, stay
        /// alive until SIGTERM instead of exiting, so a supervisor that restarts exited processes (the kubelet) cannot resume
        /// a stopped job. The operator sets it on every worker pod.
        #[arg(long, env = env::HOLD_AFTER_STOP)]
        hold_after_stop: bool,
        /// A label reported back as `deployment` in the control API's `/v1/status` (ignored
        /// without --control-addr); the operator sets it on every pod to the hash of the
        /// deployment the pod belongs to.
        #[arg(long, env = env::DEPLOYMENT)]
        deployment: Option<String>,
    },
    /// Check a job spec and print it with every default filled in.
    Validate {
        /// The job spec.
        job: PathBuf,
    },
    /// List the committed checkpoints of a store (e.g. file://./.cairn/checkpoints).
    Checkpoints {
        /// Store URL.
        store: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a savepoint of a committed checkpoint of a store (default: the latest). A running
    /// job takes one on SIGUSR2.
    Savepoint {
        /// Store URL.
        store: String,
        /// Checkpoint id (default: the latest committed).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// List the savepoints kept in a store.
    Savepoints {
        /// Store URL.
        store: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect keyed state.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Store housekeeping (the operator runs it in one-off pods): dispose of savepoints, purge
    /// a deleted job's data, check that an upgrade can restore the current state.
    Store {
        #[command(subcommand)]
        command: crate::housekeeping::StoreCommand,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print a checkpoint's keyed state as JSON lines {"task":..,"key":..,"value":..}.
    Dump {
        /// Store URL.
        #[arg(long)]
        store: String,
        /// Checkpoint id (default: the latest committed).
        #[arg(long)]
        checkpoint: Option<u64>,
        /// Only this task.
        #[arg(long)]
        task: Option<u32>,
    },
}

/// Entry point shared by `cairn-worker` and user worker binaries: parses the command line,
/// runs it with the tasks of `registry`, and turns errors into a message and exit code 1.
pub fn main_with(registry: TaskRegistry) -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match execute(cli, registry) {
        Ok(()) => ExitCode::SUCCESS,
        // `cairn-worker state dump | head` closes the pipe early: not an error.
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rocksdb=warn"));
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn current_dir() -> Result<PathBuf, Box<dyn Error>> {
    Ok(std::env::current_dir()?)
}

fn execute(cli: Cli, registry: TaskRegistry) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Run {
            job,
            from_checkpoint,
            from_savepoint,
            container,
            coordinator_listen,
            coordinator,
            stop_timeout,
            control_addr,
            control_token_file,
            coordinator_token_file,
            http_max_connections,
            metrics_addr,
            quiet,
            hold_after_stop,
            deployment,
        } => {
            let spec = cairn_contract::JobSpec::from_path(&job)?;
            // Fail before touching any state if the task is unknown or its config is bad.
            registry.build_task(&spec.task)?;
            let role = role(
                Placement {
                    container,
                    listen: coordinator_listen,
                    coordinator,
                    stop_timeout,
                    token_file: coordinator_token_file.or_else(|| control_token_file.clone()),
                },
                spec.parallelism,
            )?;
            let http_limits = crate::http::HttpLimits {
                max_connections: usize::from(http_max_connections),
                ..Default::default()
            };
            let upload_delay = upload_delay_hook()?;
            let outcome = run_job(RunOptions {
                spec,
                registry,
                from_checkpoint,
                from_savepoint,
                role,
                control: control_addr
                    .zip(control_token_file)
                    .map(|(addr, token_file)| ControlConfig {
                        addr,
                        token_file,
                        limits: http_limits,
                        deployment,
                    }),
                metrics_addr,
                http_limits,
                show_progress: !quiet,
                metrics: Default::default(),
                progress: Default::default(),
                base_dir: current_dir()?,
                upload_delay,
                hold_after_stop,
            })?;
            tracing::info!(?outcome, "job ended");
            Ok(())
        }
        Command::Validate { job } => {
            let spec = cairn_contract::JobSpec::from_path(&job)?;
            registry.build_task(&spec.task)?;
            print!("{}", spec.to_yaml());
            Ok(())
        }
        Command::Checkpoints { store, json } => {
            let store = CheckpointStore::open_existing(&store, &current_dir()?)?;
            let list = block_on(inspect::list_checkpoints(&store))??;
            if json {
                for c in &list {
                    println!("{}", serde_json::to_string(c)?);
                }
            } else {
                println!(
                    "{:>8}  {:<24}  {:>12}  {:>12}  {:>5}  {:>4}",
                    "ID", "COMMITTED (UTC)", "SIZE", "UPLOADED", "TASKS", "GEN"
                );
                for c in &list {
                    println!(
                        "{:>8}  {:<24}  {:>12}  {:>12}  {:>5}  {:>4}",
                        c.id,
                        format_time(c.committed_at_ms),
                        crate::runtime::progress::human_bytes(c.total_bytes),
                        crate::runtime::progress::human_bytes(c.uploaded_bytes),
                        c.tasks,
                        c.generation
                    );
                }
                if list.is_empty() {
                    println!("(no committed checkpoint)");
                }
            }
            Ok(())
        }
        Command::Savepoint { store, checkpoint } => {
            let store = CheckpointStore::open_existing(&store, &current_dir()?)?;
            let url = block_on(async {
                let id = match checkpoint {
                    Some(id) => id,
                    None => *crate::checkpoint::catalog::committed_ids(&store)
                        .await?
                        .last()
                        .ok_or_else(|| {
                            format!("the store {} has no committed checkpoint", store.url())
                        })?,
                };
                // Offline, the task's state version is the one its commit record holds, or 1
                // for records written before it was recorded (see docs/savepoints.md).
                let state_version = crate::checkpoint::catalog::load_commit(&store, id)
                    .await?
                    .state_version
                    .unwrap_or(1);
                let (location, _) =
                    crate::checkpoint::savepoint::create(&store, id, state_version).await?;
                Ok::<_, Box<dyn Error>>(location.url())
            })??;
            println!("{url}");
            Ok(())
        }
        Command::Savepoints { store, json } => {
            let store = CheckpointStore::open_existing(&store, &current_dir()?)?;
            let list = block_on(crate::checkpoint::savepoint::list(&store))??;
            for (location, m) in &list {
                if json {
                    let line = serde_json::json!({
                        "url": location.url(), "id": m.id, "checkpoint": m.source_checkpoint,
                        "createdAtMs": m.created_at_ms, "partitions": m.partitions,
                        "parallelism": m.parallelism, "task": m.task_name,
                        "specHash": m.spec_hash, "totalBytes": m.total_bytes,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}  {}  N={} P={} task={} {}",
                        format_time(m.created_at_ms),
                        location.url(),
                        m.partitions,
                        m.parallelism,
                        m.task_name,
                        crate::runtime::progress::human_bytes(m.total_bytes)
                    );
                }
            }
            if list.is_empty() && !json {
                println!("(no savepoint)");
            }
            Ok(())
        }
        Command::State {
            command:
                StateCommand::Dump {
                    store,
                    checkpoint,
                    task,
                },
        } => {
            let store = CheckpointStore::open_existing(&store, &current_dir()?)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            block_on(inspect::dump_state(
                &store, checkpoint, task, &registry, &mut out,
            ))??;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        Command::Store { command } => {
            crate::housekeeping::run(command, &registry, &current_dir()?)?;
            Ok(())
        }
    }
}

/// `--stop-timeout`: a duration with a unit (a bare number would be milliseconds, which nobody
/// means here), more than zero.
fn parse_stop_timeout(text: &str) -> Result<Duration, String> {
    if text.trim().bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit; write e.g. \"45s\" or \"1m\""
        ));
    }
    match cairn_contract::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            Err("0 leaves no time for the final checkpoint; write e.g. \"45s\"".into())
        }
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The command line's say on which containers this process runs.
#[derive(Debug, Default)]
struct Placement {
    /// `--container`.
    container: Option<u32>,
    /// `--coordinator-listen`.
    listen: Option<SocketAddr>,
    /// `--coordinator`.
    coordinator: Option<String>,
    /// `--stop-timeout`.
    stop_timeout: Option<Duration>,
    /// `--coordinator-token-file`, else `--control-token-file`.
    token_file: Option<PathBuf>,
}

/// Which containers this process runs, from the command line.
fn role(placement: Placement, parallelism: u32) -> Result<Role, String> {
    let Placement {
        container,
        listen,
        coordinator,
        stop_timeout,
        token_file,
    } = placement;
    if container.is_none() && stop_timeout.is_some() {
        return Err("--stop-timeout goes with --container (local mode stops without a deadline: press Ctrl-C twice to exit at once)".into());
    }
    let stop_timeout = stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
    // The coordinator's port is open to whatever reaches it: every process of a job that runs
    // as several proves itself with a shared token.
    let token_file = |k: u32| {
        token_file.clone().ok_or_else(|| {
            format!(
                "--container {k}: the job's processes authenticate to each other with a shared \
                 token; give every process --coordinator-token-file FILE (or \
                 --control-token-file FILE) naming a file with one random token of at least 16 \
                 characters, e.g. `head -c 32 /dev/urandom | base64 > token`"
            )
        })
    };
    match (container, listen, coordinator) {
        (None, None, None) => Ok(Role::AllContainers),
        (None, _, _) => Err("--coordinator-listen and --coordinator go with --container".into()),
        (Some(k), _, _) if k >= parallelism => Err(format!(
            "--container {k}: the job has containers 0..{} (parallelism {parallelism})",
            parallelism - 1
        )),
        // One pod template serves every container of a job on Kubernetes, so both addresses
        // may be given: container 0 listens, the others connect.
        (Some(0), Some(listen), _) => Ok(Role::Coordinator {
            listen,
            token_file: token_file(0)?,
            stop_timeout,
        }),
        (Some(0), None, _) => {
            Err("container 0 runs the coordinator: give --coordinator-listen ADDR:PORT".into())
        }
        (Some(index), _, Some(coordinator)) => Ok(Role::Container {
            index,
            coordinator,
            token_file: token_file(index)?,
            stop_timeout,
        }),
        (Some(index), _, None) => Err(format!("container {index} needs --coordinator HOST:PORT")),
    }
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, std::io::Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// `2026-11-23 10:15:00.123` from ms since the epoch (UTC), without a date crate.
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::path::PathBuf;

    use super::{
        parse_stop_timeout, role, upload_delay_hook, Placement, Role, DEFAULT_STOP_TIMEOUT,
    };

    /// Release builds (no `test-hooks` feature) must not read the hook's variable.
    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn the_upload_delay_hook_is_compiled_out_without_the_feature() {
        std::env::set_var("CAIRN_FAULT_UPLOAD_DELAY_MS", "40");
        assert_eq!(upload_delay_hook(), Ok(None));
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn the_upload_delay_hook_reads_a_bounded_duration() {
        std::env::set_var("CAIRN_FAULT_UPLOAD_DELAY_MS", "40");
        assert_eq!(upload_delay_hook(), Ok(Some(Duration::from_millis(40))));
        std::env::set_var("CAIRN_FAULT_UPLOAD_DELAY_MS", "99999999999999");
        let err = upload_delay_hook().unwrap_err();
        assert!(err.contains("longer than the maximum"), "{err}");
        std::env::remove_var("CAIRN_FAULT_UPLOAD_DELAY_MS");
    }

    /// The arguments the operator gives every worker pod are a valid `cairn-worker` command line
    /// that runs the mounted job with metrics on the contract's port, holding after a stop.
    #[test]
    fn the_pod_arguments_of_the_contract_parse() {
        use clap::Parser;
        let args =
            std::iter::once("cairn-worker".to_owned()).chain(cairn_contract::pod::worker_args());
        let cli = super::Cli::try_parse_from(args).expect("the pod's arguments parse");
        let super::Command::Run {
            job,
            metrics_addr,
            hold_after_stop,
            quiet,
            ..
        } = cli.command
        else {
            panic!("the pod's arguments are not `run`");
        };
        assert_eq!(job, PathBuf::from(cairn_contract::pod::JOB_FILE));
        let metrics = metrics_addr.expect("--metrics-addr");
        assert_eq!(metrics.port(), cairn_contract::pod::METRICS_PORT);
        assert!(metrics.ip().is_unspecified());
        assert!(hold_after_stop && quiet);
    }

    /// The arguments the operator gives a housekeeping pod (built by the contract) are a
    /// valid `cairn-worker store` command line meaning what the contract says.
    #[test]
    fn the_housekeeping_arguments_of_the_contract_parse() {
        use cairn_contract::housekeeping::{
            check_restore_args, dispose_args, purge_args, RestoreMode, TARGET_JOB_ENV,
            TERMINATION_LOG,
        };
        use clap::Parser;

        use crate::housekeeping::StoreCommand;

        let parse = |args: Vec<String>| {
            let cli =
                super::Cli::try_parse_from(std::iter::once("cairn-worker".to_owned()).chain(args))
                    .unwrap_or_else(|e| panic!("the contract's arguments parse: {e}"));
            match cli.command {
                super::Command::Store { command } => command,
                _ => panic!("not `store`"),
            }
        };
        let log = Some(PathBuf::from(TERMINATION_LOG));

        let urls = vec![
            "s3://b/job/savepoints/sp-000000000001".to_owned(),
            "file:///data/job/epoch-1/savepoints/sp-000000000002".to_owned(),
        ];
        let StoreCommand::Dispose { common, savepoints } = parse(dispose_args(&urls)) else {
            panic!("not dispose");
        };
        assert_eq!(
            (common.termination_log, savepoints),
            (log.clone(), urls.clone())
        );

        let StoreCommand::Purge {
            common,
            store,
            keep,
        } = parse(purge_args("s3://b/job", &urls))
        else {
            panic!("not purge");
        };
        assert_eq!(
            (common.termination_log, store.as_str(), keep),
            (log.clone(), "s3://b/job", urls.clone())
        );
        let StoreCommand::Purge { keep, .. } = parse(purge_args("file:///data/job", &[])) else {
            panic!("not purge");
        };
        assert!(keep.is_empty());

        for mode in [RestoreMode::Savepoint, RestoreMode::LastState] {
            let StoreCommand::CheckRestore {
                common,
                job_env,
                current_store,
                mode: parsed,
            } = parse(check_restore_args("s3://b/job/epoch-2", mode))
            else {
                panic!("not check-restore");
            };
            assert_eq!(
                (
                    common.termination_log,
                    job_env.as_str(),
                    current_store.as_str(),
                    parsed
                ),
                (log.clone(), TARGET_JOB_ENV, "s3://b/job/epoch-2", mode)
            );
        }
    }

    #[test]
    fn stop_timeout_is_a_duration_with_a_unit() {
        assert_eq!(parse_stop_timeout("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_stop_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_stop_timeout("45"),
            Err(r#""45" has no unit; write e.g. "45s" or "1m""#.to_owned())
        );
        assert_eq!(
            parse_stop_timeout("0s"),
            Err(r#"0 leaves no time for the final checkpoint; write e.g. "45s""#.to_owned())
        );
        assert!(parse_stop_timeout("soon")
            .unwrap_err()
            .contains("is not a duration"));
    }

    #[test]
    fn stop_timeout_goes_with_a_container_and_defaults() {
        let token = || Some(PathBuf::from("token"));
        let err = role(
            Placement {
                stop_timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
            2,
        )
        .unwrap_err();
        assert!(
            err.starts_with("--stop-timeout goes with --container"),
            "{err}"
        );
        assert_eq!(
            role(
                Placement {
                    container: Some(1),
                    coordinator: Some("job-0.job:7000".into()),
                    token_file: token(),
                    ..Default::default()
                },
                2
            ),
            Ok(Role::Container {
                index: 1,
                coordinator: "job-0.job:7000".into(),
                token_file: "token".into(),
                stop_timeout: DEFAULT_STOP_TIMEOUT,
            })
        );
        let listen = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            role(
                Placement {
                    container: Some(0),
                    listen: Some(listen),
                    stop_timeout: Some(Duration::from_secs(9)),
                    token_file: token(),
                    ..Default::default()
                },
                2
            ),
            Ok(Role::Coordinator {
                listen,
                token_file: "token".into(),
                stop_timeout: Duration::from_secs(9),
            })
        );
    }

    #[test]
    fn every_process_of_a_multi_process_job_needs_a_token_and_local_mode_none() {
        assert_eq!(role(Placement::default(), 2), Ok(Role::AllContainers));
        let listen = "127.0.0.1:7000".parse().unwrap();
        for placement in [
            Placement {
                container: Some(0),
                listen: Some(listen),
                ..Default::default()
            },
            Placement {
                container: Some(1),
                coordinator: Some("job-0.job:7000".into()),
                ..Default::default()
            },
        ] {
            let k = placement.container.unwrap();
            let err = role(placement, 2).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "--container {k}: the job's processes authenticate"
                )) && err.contains("--coordinator-token-file FILE"),
                "{err}"
            );
        }
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            super::format_time(1_795_000_000_123),
            "2026-11-18 11:06:40.123"
        );
    }
}

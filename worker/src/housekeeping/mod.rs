//! `cairn-worker store …`: the store housekeeping the operator runs in one-off pods with a
//! job's own image, credentials and volumes (`cairn_contract::housekeeping` builds their
//! arguments; docs/savepoints.md describes them).
//!
//! * [`dispose_cmd`]: dispose of savepoints, each crash-safely ([`dispose`]);
//! * [`purge`]: delete a deleted job's data, keeping chosen savepoints and foreign keys;
//! * [`check_restore`]: check before an upgrade that the new job can restore the current state.
//!
//! [`layout`] says which keys and URLs are Cairn's; [`report`] turns a failure into the one
//! line the operator shows. Every command opens stores without creating anything, exits 0 when
//! it did its work or found nothing left to do, and otherwise fails with that line.

pub mod check_restore;
pub mod dispose;
pub mod dispose_cmd;
pub mod layout;
pub mod purge;
pub mod report;

use std::path::{Path, PathBuf};

use cairn_contract::housekeeping::RestoreMode;

use crate::task::TaskRegistry;
pub use report::Failure;

/// Arguments every housekeeping command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Where to write the one-line reason of a failure (Kubernetes reads it back as the
    /// container's termination message); it goes to stderr as well.
    #[arg(long, value_name = "PATH")]
    pub termination_log: Option<PathBuf>,
}

/// `cairn-worker store <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Dispose of savepoints: delete every file of each savepoint directory
    /// (<store>/savepoints/sp-<id>), crash-safely. URLs that are not savepoint directories are
    /// refused; the others are still disposed of.
    Dispose {
        #[command(flatten)]
        common: Common,
        /// Savepoint directory URLs.
        #[arg(required = true, value_name = "SAVEPOINT_URL")]
        savepoints: Vec<String>,
    },
    /// Delete a deleted job's data from its store: checkpoints, SST files, generation claims,
    /// savepoints and stateless epochs (epoch-<n>/). Keys outside Cairn's layout are left.
    Purge {
        #[command(flatten)]
        common: Common,
        /// The job's store URL.
        store: String,
        /// A savepoint (its URL) to keep; may be repeated.
        #[arg(long, value_name = "SAVEPOINT_URL")]
        keep: Vec<String>,
    },
    /// Check that a job document (in an environment variable) can restore the current state
    /// of a store the way an upgrade would. Reads only.
    CheckRestore {
        #[command(flatten)]
        common: Common,
        /// The environment variable holding the target job document (YAML or JSON).
        #[arg(long, value_name = "VAR")]
        job_env: String,
        /// The store holding the current state.
        #[arg(long, value_name = "URL")]
        current_store: String,
        /// How the upgrade restores it: `savepoint` (N may change) or `last-state`.
        #[arg(long, value_parser = parse_mode)]
        mode: RestoreMode,
    },
}

impl StoreCommand {
    fn common(&self) -> &Common {
        match self {
            StoreCommand::Dispose { common, .. }
            | StoreCommand::Purge { common, .. }
            | StoreCommand::CheckRestore { common, .. } => common,
        }
    }
}

/// The contract's spellings of the restore modes.
fn parse_mode(text: &str) -> Result<RestoreMode, String> {
    [RestoreMode::Savepoint, RestoreMode::LastState]
        .into_iter()
        .find(|m| m.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not `savepoint` or `last-state`"))
}

/// Runs a housekeeping command, printing what it does to stdout. On failure the line is
/// written to the termination log before it is returned (the caller prints it to stderr).
pub fn run(command: StoreCommand, registry: &TaskRegistry, base_dir: &Path) -> Result<(), Failure> {
    let termination_log = command.common().termination_log.clone();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the I/O runtime: {e}")))
        .and_then(|runtime| runtime.block_on(execute(command, registry, base_dir)));
    if let Err(failure) = &result {
        report::write_termination_log(termination_log.as_deref(), failure);
    }
    result
}

async fn execute(
    command: StoreCommand,
    registry: &TaskRegistry,
    base_dir: &Path,
) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        StoreCommand::Dispose { savepoints, .. } => {
            dispose_cmd::run(&savepoints, base_dir, &mut out).await
        }
        StoreCommand::Purge { store, keep, .. } => {
            purge::run(&store, &keep, base_dir, &mut out).await
        }
        StoreCommand::CheckRestore {
            job_env,
            current_store,
            mode,
            ..
        } => {
            let req = check_restore::Request {
                job_env: &job_env,
                current_store: &current_store,
                mode,
                registry,
                base_dir,
            };
            check_restore::run(&req, &mut out).await
        }
    }
}

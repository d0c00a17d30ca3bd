//! Store housekeeping: the one-off pods the operator runs with a job's own pod settings (image,
//! credentials, volumes) to work on its checkpoint store when no worker could: disposing of
//! savepoints, purging a deleted job's data, and checking before an upgrade that the new spec
//! can restore the current state. The operator builds the container's arguments with these
//! functions; `cairn-worker store` parses them (its tests parse what these build).
//!
//! Every command exits 0 when it did its work (or found nothing left to do: each is
//! idempotent, so a retried pod is harmless) and non-zero otherwise, after writing one line
//! saying what is wrong and how to fix it to [`TERMINATION_LOG`]. The operator shows that line
//! (the pod's termination message) in the StreamJob's status and events.

/// Where a housekeeping command writes its one-line failure reason: Kubernetes' default
/// `terminationMessagePath`, read back as the container's termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The environment variable holding the job document (YAML or JSON) `check-restore` checks: the
/// deployment an upgrade would start, which has no ConfigMap yet.
pub const TARGET_JOB_ENV: &str = "CAIRN_TARGET_JOB";

/// At most this many savepoint URLs per `dispose` pod (a pod's arguments stay small; more are
/// disposed by the next pod).
pub const MAX_DISPOSE_PER_POD: usize = 20;

/// Dispose of savepoints: delete every file of each savepoint directory (`…/savepoints/sp-…`).
/// A URL that is not a Cairn savepoint directory is refused without deleting anything; one
/// already gone counts as disposed.
pub fn dispose_args(savepoints: &[String]) -> Vec<String> {
    let mut args = vec![
        "store".to_owned(),
        "dispose".to_owned(),
        "--termination-log".to_owned(),
        TERMINATION_LOG.to_owned(),
    ];
    args.extend(savepoints.iter().cloned());
    args
}

/// Purge a deleted job's data in `store`: its checkpoints, SST files, generation claims, stateless
/// epochs (`epoch-<n>/`, each the same layout) and savepoints, except the savepoints in `keep`.
/// Keys outside Cairn's layout are left alone.
pub fn purge_args(store: &str, keep: &[String]) -> Vec<String> {
    let mut args = vec![
        "store".to_owned(),
        "purge".to_owned(),
        "--termination-log".to_owned(),
        TERMINATION_LOG.to_owned(),
        store.to_owned(),
    ];
    for url in keep {
        args.push("--keep".to_owned());
        args.push(url.clone());
    }
    args
}

/// How the new deployment would restore the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// From a savepoint of the current state (taken from its latest checkpoint): N may change.
    Savepoint,
    /// From the latest committed checkpoint in the current store: N must stay.
    LastState,
}

impl RestoreMode {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreMode::Savepoint => "savepoint",
            RestoreMode::LastState => "last-state",
        }
    }
}

/// Check that the job document in [`TARGET_JOB_ENV`] can restore the state whose latest
/// committed checkpoint is in `current_store`, the way `mode` would restore it: the store is
/// reachable with this pod's settings, the checkpoint is readable, its task name and state
/// version match the target's task as this image builds it (unless the target allows a state
/// drop), and N may change only in savepoint mode. Also that the target's own store is reachable.
pub fn check_restore_args(current_store: &str, mode: RestoreMode) -> Vec<String> {
    vec![
        "store".to_owned(),
        "check-restore".to_owned(),
        "--termination-log".to_owned(),
        TERMINATION_LOG.to_owned(),
        "--job-env".to_owned(),
        TARGET_JOB_ENV.to_owned(),
        "--current-store".to_owned(),
        current_store.to_owned(),
        "--mode".to_owned(),
        mode.as_str().to_owned(),
    ]
}

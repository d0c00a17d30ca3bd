//! `cairn-worker store check-restore --job-env VAR --current-store URL --mode MODE`: before an
//! upgrade, check that the job document of the new deployment (in the environment variable)
//! can restore the current state the way the upgrade would, with this image's tasks and this
//! pod's settings. Reads only; nothing is created or written anywhere.
//!
//! Messages name the StreamJob's fields (`spec.job.…`, `spec.restoreFrom.…`), since the
//! operator shows them in its status.

use std::io::Write;
use std::path::Path;

use cairn_contract::housekeeping::RestoreMode;
use cairn_contract::{JobSpec, StoreUrl, MAX_SPEC_LEN};

use super::report::Failure;
use crate::checkpoint::catalog;
use crate::checkpoint::manifest::CommitRecord;
use crate::storage::{CheckpointStore, StorageError};
use crate::task::TaskRegistry;

/// What to check.
pub struct Request<'a> {
    /// The environment variable holding the target job document.
    pub job_env: &'a str,
    /// URL of the store holding the current state.
    pub current_store: &'a str,
    /// How the upgrade would restore it.
    pub mode: RestoreMode,
    /// This image's tasks.
    pub registry: &'a TaskRegistry,
    /// What relative `file://` URLs are relative to.
    pub base_dir: &'a Path,
}

/// The target job as this image would run it.
struct Target {
    spec: JobSpec,
    state_version: u32,
}

/// Runs the check, printing what it found to `out`.
pub async fn run(req: &Request<'_>, out: &mut dyn Write) -> Result<(), Failure> {
    let target = target_job(req)?;
    match latest_commit(req).await? {
        None => {
            let _ = writeln!(
                out,
                "nothing to restore yet: {} has no committed checkpoint",
                req.current_store
            );
        }
        Some(commit) => {
            let _ = writeln!(
                out,
                "checkpoint {} in {}: task `{}` ({}), {} partitions",
                commit.checkpoint,
                req.current_store,
                commit.spec.task.name,
                version_text(commit.state_version),
                commit.partitions
            );
            for line in compatibility(&target, &commit, req.mode)? {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    let _ = writeln!(out, "{}", target_store_reachable(&target.spec, req).await?);
    Ok(())
}

/// Reads, bounds and validates the job document like `cairn-worker validate`.
fn target_job(req: &Request<'_>) -> Result<Target, Failure> {
    let var = req.job_env;
    let text = match std::env::var(var) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            return Err(Failure::new(format!(
                "the environment variable {var} holds no job document: set it to the job of \
                 the new deployment (YAML or JSON)"
            )))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failure::new(format!(
                "the environment variable {var} is not UTF-8 text: set it to the job of the \
                 new deployment (YAML or JSON)"
            )))
        }
    };
    if text.len() > MAX_SPEC_LEN {
        return Err(Failure::new(format!(
            "the job document in {var} has {} bytes, more than the {MAX_SPEC_LEN} a job may \
             have: check what the variable is set to",
            text.len()
        )));
    }
    // JSON is YAML: one parser reads both.
    let spec = JobSpec::from_yaml_str(&text).map_err(|e| {
        Failure::new(format!(
            "the target job (spec.job, in {var}) is not valid: {e}"
        ))
    })?;
    let task = req
        .registry
        .build_task(&spec.task)
        .map_err(|e| Failure::new(format!("spec.job.task of the target job: {e}")))?;
    Ok(Target {
        state_version: task.state_version(),
        spec,
    })
}

/// The commit record of the newest committed checkpoint of the current store, if any.
async fn latest_commit(req: &Request<'_>) -> Result<Option<CommitRecord>, Failure> {
    let url = req.current_store;
    let unreadable = |e: &dyn std::fmt::Display| {
        Failure::new(format!(
            "cannot read the current state in {url}: {e}; check that this pod reaches the \
             store with the job's settings (volumes, S3 endpoint and credentials, docs/s3.md)"
        ))
    };
    let store = match CheckpointStore::open_existing(url, req.base_dir) {
        Ok(store) => store,
        // A job that never wrote a checkpoint has no store directory yet.
        Err(StorageError::NoSuchStore { .. }) => return Ok(None),
        Err(e) => return Err(unreadable(&e)),
    };
    let ids = catalog::committed_ids(&store)
        .await
        .map_err(|e| unreadable(&e))?;
    let Some(&latest) = ids.last() else {
        return Ok(None);
    };
    catalog::load_commit(&store, latest)
        .await
        .map(Some)
        .map_err(|e| {
            Failure::new(format!(
                "cannot read the commit record of checkpoint {latest} in {url}: {e}"
            ))
        })
}

fn version_text(version: Option<u32>) -> String {
    match version {
        Some(v) => format!("state version {v}"),
        None => "state version not recorded".to_owned(),
    }
}

/// Checks (a) the task and its state version and (b) the partition count; the lines to print.
fn compatibility(
    target: &Target,
    commit: &CommitRecord,
    mode: RestoreMode,
) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    let (saved, now) = (&commit.spec.task.name, &target.spec.task.name);
    let problem = if saved != now {
        Some(format!(
            "the current state is task `{saved}` ({}) but spec.job.task.name is `{now}`",
            version_text(commit.state_version)
        ))
    } else {
        match commit.state_version {
            Some(v) if v != target.state_version => Some(format!(
                "the current state is task `{saved}` at state version {v} but this image's \
                 `{now}` has state version {}",
                target.state_version
            )),
            Some(_) => None,
            None => {
                lines.push(format!(
                    "task `{now}`: the state version could not be checked (checkpoint {} was \
                     committed by a Cairn that did not record it); this image's is {}",
                    commit.checkpoint, target.state_version
                ));
                None
            }
        }
    };
    if let Some(problem) = problem {
        match mode {
            RestoreMode::LastState => {
                return Err(Failure::new(format!(
                    "{problem}: a last-state upgrade restores the checkpoint as it is and \
                     cannot drop state; use upgradeMode savepoint with \
                     restoreFrom.allowStateDrop to start empty, or keep the task"
                )))
            }
            RestoreMode::Savepoint if target.spec.restore.allow_state_drop => lines.push(format!(
                "{problem}: restore.allowStateDrop is set, so the job starts with empty state \
                 and the savepoint's offsets"
            )),
            RestoreMode::Savepoint => {
                return Err(Failure::new(format!(
                    "{problem}: set restoreFrom.allowStateDrop to start empty, or keep the task"
                )))
            }
        }
    } else {
        lines.push(format!(
            "task `{now}` ({}): compatible",
            version_text(Some(target.state_version))
        ));
    }
    let (from, to) = (commit.partitions, target.spec.input.partitions());
    match mode {
        _ if from == to => lines.push(format!("{to} partitions: unchanged")),
        RestoreMode::Savepoint => lines.push(format!(
            "partitions {from} -> {to}: the savepoint's state is repartitioned"
        )),
        RestoreMode::LastState => {
            return Err(Failure::new(format!(
                "the current state has {from} partitions (checkpoint {}) but \
                 spec.job.input.partitions is {to}: a last-state upgrade cannot change the \
                 partition count; use upgradeMode savepoint, which repartitions, or keep {from} \
                 partitions",
                commit.checkpoint
            )))
        }
    }
    Ok(lines)
}

/// (c): the target's own store is reachable with this pod's settings, without writing.
async fn target_store_reachable(spec: &JobSpec, req: &Request<'_>) -> Result<String, Failure> {
    let url = &spec.checkpoint.store;
    let location = spec
        .checkpoint
        .store_location()
        .map_err(|e| Failure::new(format!("spec.job.checkpoint.store of the target job: {e}")))?;
    match location {
        StoreUrl::File(path) => {
            let dir = req.base_dir.join(path);
            match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    Ok(format!("target store {url}: the directory exists"))
                }
                Ok(_) => Err(Failure::new(format!(
                    "spec.job.checkpoint.store {url}: {} is not a directory; point the store \
                     at a directory",
                    dir.display()
                ))),
                Err(_) => match dir.parent() {
                    Some(parent) if parent.is_dir() => Ok(format!(
                        "target store {url}: its parent directory {} exists",
                        parent.display()
                    )),
                    _ => Err(Failure::new(format!(
                        "spec.job.checkpoint.store {url}: neither {} nor its parent directory \
                         exists in this pod; mount the volume that holds it, or fix the path",
                        dir.display()
                    ))),
                },
            }
        }
        StoreUrl::Memory(_) => Ok(format!(
            "target store {url}: in-process (memory://), nothing to reach"
        )),
        StoreUrl::Object { .. } => {
            let unreachable = |e: &dyn std::fmt::Display| {
                Failure::new(format!(
                    "spec.job.checkpoint.store {url} is not reachable with this pod's \
                     settings: {e}; check the bucket name, the endpoint and the credentials \
                     (docs/stores.md)"
                ))
            };
            let store =
                CheckpointStore::open_existing(url, req.base_dir).map_err(|e| unreachable(&e))?;
            // Listing a small prefix proves the bucket exists and the credentials may read it.
            store
                .list(crate::checkpoint::paths::GENERATIONS)
                .await
                .map_err(|e| unreachable(&e))?;
            Ok(format!("target store {url}: reachable"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(task: &str, partitions: u32, allow_drop: bool) -> JobSpec {
        let mut spec = JobSpec::from_yaml_str(&format!(
            "name: j\ninput: {{type: generator, partitions: {partitions}}}\n\
             task: {{name: {task}}}\n"
        ))
        .unwrap();
        spec.restore.allow_state_drop = allow_drop;
        spec
    }

    fn commit(task: &str, partitions: u32, version: Option<u32>) -> CommitRecord {
        let spec = spec(task, partitions, false);
        CommitRecord {
            format: 1,
            checkpoint: 12,
            generation: 1,
            triggered_at_ms: 0,
            committed_at_ms: 0,
            spec_hash: spec.spec_hash(),
            spec,
            partitions,
            parallelism: 1,
            tasks: vec![],
            total_bytes: 0,
            uploaded_bytes: 0,
            new_sst_bytes: 0,
            origin: None,
            state_version: version,
        }
    }

    fn target(task: &str, partitions: u32, version: u32, allow_drop: bool) -> Target {
        Target {
            spec: spec(task, partitions, allow_drop),
            state_version: version,
        }
    }

    use RestoreMode::{LastState, Savepoint};

    #[test]
    fn the_same_task_and_n_restore_in_both_modes() {
        for mode in [Savepoint, LastState] {
            let lines = compatibility(
                &target("count", 4, 1, false),
                &commit("count", 4, Some(1)),
                mode,
            )
            .unwrap();
            assert_eq!(
                lines,
                [
                    "task `count` (state version 1): compatible",
                    "4 partitions: unchanged"
                ]
            );
        }
    }

    #[test]
    fn another_task_needs_a_state_drop_which_only_a_savepoint_can_do() {
        let err = compatibility(
            &target("sum", 4, 1, false),
            &commit("count", 4, Some(1)),
            Savepoint,
        )
        .unwrap_err();
        assert_eq!(
            err.line(),
            "the current state is task `count` (state version 1) but spec.job.task.name is \
             `sum`: set restoreFrom.allowStateDrop to start empty, or keep the task"
        );
        let lines = compatibility(
            &target("sum", 4, 1, true),
            &commit("count", 4, Some(1)),
            Savepoint,
        )
        .unwrap();
        assert!(
            lines[0].contains("restore.allowStateDrop is set"),
            "{lines:?}"
        );
        let err = compatibility(
            &target("sum", 4, 1, true),
            &commit("count", 4, Some(1)),
            LastState,
        )
        .unwrap_err();
        assert!(
            err.line()
                .contains("a last-state upgrade restores the checkpoint as it is"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_state_version_is_incompatible_and_an_unrecorded_one_is_said() {
        let err = compatibility(
            &target("count", 4, 2, false),
            &commit("count", 4, Some(1)),
            Savepoint,
        )
        .unwrap_err();
        assert!(
            err.line().starts_with(
                "the current state is task `count` at state version 1 but this image's `count` \
                 has state version 2"
            ),
            "{err}"
        );
        let lines = compatibility(
            &target("count", 4, 2, false),
            &commit("count", 4, None),
            LastState,
        )
        .unwrap();
        assert!(lines[0].contains("could not be checked"), "{lines:?}");
    }

    #[test]
    fn n_may_change_only_through_a_savepoint() {
        let lines = compatibility(
            &target("count", 6, 1, false),
            &commit("count", 4, Some(1)),
            Savepoint,
        )
        .unwrap();
        assert_eq!(
            lines[1],
            "partitions 4 -> 6: the savepoint's state is repartitioned"
        );
        let err = compatibility(
            &target("count", 6, 1, false),
            &commit("count", 4, Some(1)),
            LastState,
        )
        .unwrap_err();
        assert!(
            err.line().starts_with(
                "the current state has 4 partitions (checkpoint 12) but \
                 spec.job.input.partitions is 6"
            ),
            "{err}"
        );
    }
}

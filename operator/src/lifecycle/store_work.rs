//! The lifecycle's work on a job's checkpoint store, carried out by one-off housekeeping pods
//! ([`crate::children::housekeeping`]): disposing of pruned savepoints (in the background, in
//! any phase), purging a deleted job's data (`deletion.checkpointData: delete`), and checking
//! before an upgrade or repartition touches the running job that the new spec can restore its
//! state.
//!
//! Every one follows the same rule as the status: what is asked for is recorded first (the
//! Job's name in status), its outcome is read back on a later reconcile, and only then does
//! status move on. A savepoint leaves `status.savepoints` only after its files are gone.

use std::time::Duration;

use super::plan::{backoff, Effect, Outcome, Stepper};
use crate::children::housekeeping::job_name;
use crate::children::Housekeeping;
use crate::crd::{Disposal, Operation, OperationKind, Phase, UpgradeMode};
use cairn_contract::control::RunState;
use cairn_contract::housekeeping::{
    check_restore_args, dispose_args, purge_args, RestoreMode, MAX_DISPOSE_PER_POD, TARGET_JOB_ENV,
};

/// How often a running housekeeping pod is looked at.
const HOUSEKEEPING_POLL: Duration = Duration::from_secs(3);
/// Failed restorability checks before the upgrade is refused (the first failures may be a
/// store or registry hiccup; a spec that cannot restore fails every time).
const CHECK_ATTEMPTS: u32 = 3;
/// Failed purges before deletion goes on without it: a finalizer must not hold a StreamJob
/// forever because its store is unreachable.
const PURGE_ATTEMPTS: u32 = 5;

/// What became of the housekeeping Job named in status.
enum Seen {
    /// No Job is named: start one (when no retry time holds it back).
    NotStarted,
    /// Still running.
    Running,
    /// Done.
    Succeeded(String),
    /// Failed, or its pod cannot start: the Job's name and why.
    Failed(String, String),
    /// Named, but gone before its end was seen (deleted by someone): run it again.
    Vanished(String),
}

impl Stepper<'_> {
    fn seen(&self, job: Option<&String>) -> Seen {
        let Some(name) = job else {
            return Seen::NotStarted;
        };
        match self.input.observed.housekeeping.get(name) {
            None => Seen::Vanished(name.clone()),
            Some(Outcome::Running { stuck: None }) => Seen::Running,
            Some(Outcome::Running {
                stuck: Some(message),
            })
            | Some(Outcome::Failed { message }) => Seen::Failed(name.clone(), message.clone()),
            Some(Outcome::Succeeded) => Seen::Succeeded(name.clone()),
        }
    }

    /// A retry time in the future holds a new attempt back: requeue for it (without delaying
    /// whatever else this step asked to be looked at sooner).
    fn held_back(&mut self, retry_after: Option<&str>) -> bool {
        let Some(wait) = self.retry_wait(retry_after) else {
            return false;
        };
        self.requeue = self.requeue.min(wait);
        true
    }

    fn poll_housekeeping(&mut self) {
        self.requeue = self.requeue.min(HOUSEKEEPING_POLL);
    }

    fn delete_housekeeping(&mut self, name: String) {
        self.effects.push(Effect::DeleteHousekeeping { name });
    }

    /// Disposes of the savepoints pruned from the history (`disposing`), one pod at a time, and
    /// drops their entries once it succeeded. Runs after every step, in every phase but deletion
    /// (a deleted job's savepoints stay, or go with `checkpointData: delete`).
    pub(super) fn dispose_pruned(&mut self) {
        let Some(pods) = self.input.deployed else {
            return;
        };
        let mut disposal = self.status.disposal.take();
        if let Some(d) = &mut disposal {
            match self.seen(d.job.as_ref()) {
                Seen::Running => self.poll_housekeeping(),
                Seen::Succeeded(name) => {
                    let gone = std::mem::take(&mut d.savepoints);
                    self.status
                        .savepoints
                        .retain(|s| !(s.disposing && gone.contains(&s.url)));
                    self.note(
                        false,
                        "SavepointsDisposed",
                        format!("disposed of pruned savepoints {}", gone.join(", ")),
                    );
                    self.delete_housekeeping(name);
                    disposal = None;
                }
                Seen::Failed(name, why) => {
                    d.attempts = d.attempts.saturating_add(1);
                    let delay = backoff(d.attempts);
                    let message = format!(
                        "disposing of savepoints {} failed (attempt {}): {why}; they stay in status until disposed of; retrying in {}s",
                        d.savepoints.join(", "),
                        d.attempts,
                        delay.as_secs()
                    );
                    self.note(true, "SavepointDisposalFailed", message.clone());
                    d.message = Some(message);
                    d.retry_after = Some((self.input.now + delay).to_string());
                    d.job = None;
                    self.requeue = self.requeue.min(delay);
                    self.delete_housekeeping(name);
                }
                Seen::Vanished(name) => {
                    self.run_disposal(pods, name, d.savepoints.clone());
                }
                Seen::NotStarted => {
                    if !self.held_back(d.retry_after.as_deref()) {
                        d.retry_after = None;
                        let name = self.disposal_name(&d.savepoints, d.attempts);
                        d.job = Some(name.clone());
                        self.run_disposal(pods, name, d.savepoints.clone());
                    }
                }
            }
        }
        if disposal.is_none() {
            let pruned: Vec<String> = self
                .status
                .savepoints
                .iter()
                .filter(|s| s.disposing)
                .take(MAX_DISPOSE_PER_POD)
                .map(|s| s.url.clone())
                .collect();
            if !pruned.is_empty() {
                let name = self.disposal_name(&pruned, 0);
                self.run_disposal(pods, name.clone(), pruned.clone());
                disposal = Some(Disposal {
                    savepoints: pruned,
                    job: Some(name),
                    ..Default::default()
                });
            }
        }
        self.status.disposal = disposal;
    }

    fn disposal_name(&self, urls: &[String], attempt: u32) -> String {
        let tag = tag(&serde_json::json!([urls, attempt]));
        job_name(
            &self.input.desired.pods.job.name,
            Housekeeping::Dispose,
            &tag,
        )
    }

    fn run_disposal(&mut self, pods: &crate::pods::PodDocument, name: String, urls: Vec<String>) {
        self.effects.push(Effect::RunHousekeeping {
            name,
            kind: Housekeeping::Dispose,
            pods: Box::new(pods.clone()),
            args: dispose_args(&urls),
            env: Vec::new(),
        });
        self.poll_housekeeping();
    }

    /// Deletion with `checkpointData: delete`, once no worker pod is left: purge the job's store,
    /// keeping the final savepoint, `restoreFrom.savepoint` and `retainSavepoints`; then let the
    /// StreamJob go. A purge that keeps failing is given up after [`PURGE_ATTEMPTS`] (Warning
    /// naming the store) rather than holding the StreamJob forever.
    pub(super) fn purging_store(&mut self, mut op: Operation) {
        let Some(pods) = self.input.deployed else {
            self.release_finalizer = true;
            return self.finish();
        };
        let store = pods.job.checkpoint.store.clone();
        match self.seen(op.housekeeping.as_ref()) {
            Seen::Running => {
                self.poll_housekeeping();
                self.status.operation = Some(op);
            }
            Seen::Succeeded(name) => {
                self.note(
                    false,
                    "StoreDataDeleted",
                    format!("deleted the job's data in {store} (checkpointData: delete)"),
                );
                self.delete_housekeeping(name);
                self.release_finalizer = true;
                self.finish();
            }
            Seen::Failed(name, why) => {
                self.delete_housekeeping(name);
                op.attempts = op.attempts.saturating_add(1);
                op.housekeeping = None;
                if op.attempts >= PURGE_ATTEMPTS {
                    self.note(true, "StoreDataKept", format!("deleting the job's data in {store} failed {} times (last: {why}); the StreamJob is deleted without it: delete the data by hand", op.attempts));
                    self.release_finalizer = true;
                    return self.finish();
                }
                let delay = backoff(op.attempts);
                let message = format!(
                    "deleting the job's data in {store} failed (attempt {} of {PURGE_ATTEMPTS}): {why}; retrying in {}s",
                    op.attempts,
                    delay.as_secs()
                );
                self.note(true, "StorePurgeFailed", message.clone());
                op.message = Some(message);
                op.retry_after = Some((self.input.now + delay).to_string());
                self.requeue = delay;
                self.status.operation = Some(op);
            }
            Seen::Vanished(name) => {
                self.run_purge(pods, &store, name, &op);
                self.status.operation = Some(op);
            }
            Seen::NotStarted => {
                if !self.held_back(op.retry_after.as_deref()) {
                    op.retry_after = None;
                    let name = self.step_job_name(Housekeeping::Purge, &op);
                    op.housekeeping = Some(name.clone());
                    op.message = Some(format!("deleting the job's data in {store}"));
                    self.run_purge(pods, &store, name, &op);
                }
                self.status.operation = Some(op);
            }
        }
    }

    fn run_purge(
        &mut self,
        pods: &crate::pods::PodDocument,
        store: &str,
        name: String,
        op: &Operation,
    ) {
        let deployed = self.status.deployed.as_ref();
        let mut keep: Vec<String> = op
            .savepoint
            .iter()
            .chain(deployed.and_then(|d| d.restore_from.savepoint.as_ref()))
            .chain(&self.input.desired.retain_savepoints)
            .cloned()
            .collect();
        keep.sort();
        keep.dedup();
        self.effects.push(Effect::RunHousekeeping {
            name,
            kind: Housekeeping::Purge,
            pods: Box::new(pods.clone()),
            args: purge_args(store, &keep),
            env: Vec::new(),
        });
        self.poll_housekeeping();
    }

    /// Whether an operation of `kind` checks restorability before it touches the running job:
    /// an upgrade or repartition that restores state (not `stateless`) of a job whose pods run.
    /// A rescale changes only P, which any state restores into.
    pub(super) fn checks_restore(&self, kind: OperationKind) -> bool {
        matches!(kind, OperationKind::Upgrade | OperationKind::Repartition)
            && self.mode_for(kind) != UpgradeMode::Stateless
            && self.input.observed.workers.pods > 0
            && self.input.deployed.is_some()
    }

    /// Step `CheckingRestore`: a pod with the new spec's settings (image, credentials, volumes)
    /// checks that it can restore the current state. Passed: on to the first step of the stop.
    /// Failed [`CHECK_ATTEMPTS`] times: the operation is refused and the running job left alone.
    pub(super) fn checking_restore(&mut self, mut op: Operation) {
        match self.seen(op.housekeeping.as_ref()) {
            Seen::Running => {
                self.poll_housekeeping();
                self.status.operation = Some(op);
            }
            Seen::Succeeded(name) => {
                self.delete_housekeeping(name);
                self.note(
                    false,
                    "RestoreChecked",
                    format!(
                        "the new spec can restore the current state ({} mode); stopping the running job",
                        self.mode_for(op.kind).as_str()
                    ),
                );
                op.housekeeping = None;
                op.attempts = 0;
                let next = self.first_step_of_stop(op.kind);
                self.set_step(op, next);
            }
            Seen::Failed(name, why) => {
                self.delete_housekeeping(name);
                op.attempts = op.attempts.saturating_add(1);
                op.housekeeping = None;
                if op.attempts >= CHECK_ATTEMPTS {
                    return self.refuse_operation(op, &why);
                }
                let delay = backoff(op.attempts);
                op.message = Some(format!(
                    "restorability check failed (attempt {} of {CHECK_ATTEMPTS}): {why}; the running job is untouched; checking again in {}s",
                    op.attempts,
                    delay.as_secs()
                ));
                op.retry_after = Some((self.input.now + delay).to_string());
                self.requeue = delay;
                self.status.operation = Some(op);
            }
            Seen::Vanished(name) => {
                self.run_check(name, &op);
                self.status.operation = Some(op);
            }
            Seen::NotStarted => {
                if !self.held_back(op.retry_after.as_deref()) {
                    op.retry_after = None;
                    let name = self.step_job_name(Housekeeping::CheckRestore, &op);
                    op.housekeeping = Some(name.clone());
                    op.message =
                        Some("checking that the new spec can restore the current state".into());
                    self.run_check(name, &op);
                }
                self.status.operation = Some(op);
            }
        }
    }

    fn run_check(&mut self, name: String, op: &Operation) {
        let (Some(current), Some(deployed)) = (self.input.deployed, self.status.deployed.as_ref())
        else {
            return;
        };
        let desired = self.input.desired;
        let current_store = deployed.worker_document(current).checkpoint.store;
        let mode = match self.mode_for(op.kind) {
            UpgradeMode::LastState => RestoreMode::LastState,
            _ => RestoreMode::Savepoint,
        };
        // The document the new pods would run; its restore section only says whether state may
        // be dropped (the savepoint it would restore is not taken yet).
        let mut target = self
            .new_deployment(None, deployed.state_epoch)
            .worker_document(&desired.pods);
        target.restore.allow_state_drop = desired.restore_from.allow_state_drop;
        self.effects.push(Effect::RunHousekeeping {
            name,
            kind: Housekeeping::CheckRestore,
            pods: Box::new(desired.pods.clone()),
            args: check_restore_args(&current_store, mode),
            env: vec![(TARGET_JOB_ENV, target.to_yaml())],
        });
        self.poll_housekeeping();
    }

    /// The new spec cannot restore the current state: refuse it before anything is stopped,
    /// remember it (`failedHash`, not retried until the spec changes) and say why.
    fn refuse_operation(&mut self, op: Operation, why: &str) {
        let message = format!(
            "{} refused before touching the running job: the new spec cannot restore the current state: {why}. The job keeps running its deployed spec; fix the new spec (restoreFrom.allowStateDrop starts it with empty state)",
            op.kind.as_str()
        );
        self.note(true, "UpgradeRefused", message.clone());
        self.status.failed_hash = Some(self.input.desired.hash.clone());
        self.status.not_restorable = Some(message.clone());
        self.status.last_error = Some(message);
        self.status.phase = Some(self.settled_phase());
        self.finish();
    }

    /// The phase of a deployed job with no operation in flight whose pods committed: `Finished`
    /// once its input ended, else `Running`.
    pub(super) fn settled_phase(&self) -> Phase {
        let finished = self
            .input
            .observed
            .report
            .as_ref()
            .is_some_and(|r| r.state == RunState::Finished);
        if finished {
            Phase::Finished
        } else {
            Phase::Running
        }
    }

    /// The Job name of an operation step's pod: one per operation and attempt.
    fn step_job_name(&self, kind: Housekeeping, op: &Operation) -> String {
        let tag = tag(&serde_json::json!([op.started_at, op.attempts]));
        job_name(&self.input.desired.pods.job.name, kind, &tag)
    }
}

/// Eight hex digits of the contract's fingerprint: a short tag that tells Jobs apart.
fn tag(value: &serde_json::Value) -> String {
    cairn_contract::fingerprint(value)[..8].to_owned()
}

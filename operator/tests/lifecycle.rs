//! The lifecycle state machine, step by step, from the example manifest: savepoint upgrades,
//! rollback, savepoint failures, rescale/repartition classification, suspend/resume, restart
//! and deletion. Pure: no API server, a fixed clock.

mod common;

use std::time::Duration;

use cairn_contract::control::{
    self as wire, CommittedCheckpoint, JobStatus, OperationState, PredictedRecovery,
    RecoveryObjective, SavepointInfo, StandbyStatus, TaskStatus,
};
use cairn_operator::children::Housekeeping;
use cairn_operator::control::ControlError;
use cairn_operator::crd::{
    AutoscalerSettings, AutoscalerStatus, LoadMetrics, OperationKind, Phase, RecoveryObjectiveInfo,
    ScalingDecision, StandbyInfo, Step, StreamJob, StreamJobStatus,
};
use cairn_operator::lifecycle::{
    classify, conditions, plan, savepoint_answered, with_autoscaled_parallelism, Change, Effect,
    Input, LoadMemory, Observed, Outcome, Plan, Workers, AUTOSCALER_HISTORY, MAX_REQUEUE,
};
use cairn_operator::validate::ValidatedJob;
use common::{manifest, validated};
use jiff::Timestamp;
use OperationState::{Failed, Pending, Succeeded};

const SP: &str = "file:///var/lib/cairn-store/count/savepoints/sp-000000000007";

struct World {
    sj: StreamJob,
    status: StreamJobStatus,
    now: Timestamp,
    /// What the autoscaler remembers between reconciles (the operator keeps it in memory).
    load: Option<LoadMemory>,
}

impl World {
    fn new() -> Self {
        World {
            sj: manifest("examples/k8s/count.yaml"),
            status: StreamJobStatus::default(),
            now: "2026-11-24T10:00:00Z".parse().unwrap(),
            load: None,
        }
    }

    /// The spec as the operator runs it: validated, with the autoscaler's P if it chose one.
    fn desired(&self) -> ValidatedJob {
        with_autoscaled_parallelism(validated(&self.sj), &self.status)
    }

    /// One reconcile: plan against `observed`, keep the new status, advance the clock 1 s.
    fn step(&mut self, observed: Observed) -> Plan {
        self.step_deleting(observed, false)
    }

    fn step_deleting(&mut self, observed: Observed, deleting: bool) -> Plan {
        self.reconcile(observed, deleting, None)
    }

    /// One reconcile whose savepoint request, if the plan makes one, the job answers with
    /// `answer`: folded into the plan before its status is kept, as `reconcile` does.
    fn step_answering(&mut self, observed: Observed, answer: Result<&str, &str>) -> Plan {
        self.reconcile(observed, false, Some(answer))
    }

    fn reconcile(
        &mut self,
        mut observed: Observed,
        deleting: bool,
        answer: Option<Result<&str, &str>>,
    ) -> Plan {
        let desired = self.desired();
        // Read back as the operator does: as recorded, never validated again.
        let deployed = self
            .status
            .deployed
            .as_ref()
            .map(|d| d.pods("status.deployed.pods").unwrap());
        observed.load = self.load.take();
        let input = Input {
            generation: Some(1),
            desired: &desired,
            deployed: deployed.as_ref(),
            status: &self.status,
            observed: &observed,
            deleting,
            now: self.now,
        };
        let mut p = plan(&input);
        let asks = p
            .effects
            .iter()
            .any(|e| matches!(e, Effect::RequestSavepoint { .. }));
        if let (true, Some(answer)) = (asks, answer) {
            let answer = answer.map(str::to_owned).map_err(str::to_owned);
            p = savepoint_answered(&input, p, answer);
        }
        self.status = p.status.clone();
        self.load = p.load.clone();
        self.now += Duration::from_secs(1);
        p
    }

    fn op(&self) -> (OperationKind, Step) {
        let op = self.status.operation.as_ref().expect("an operation");
        (op.kind, op.step)
    }

    /// Deploys the example and sees it commit: Running.
    fn running() -> Self {
        World::new().deployed()
    }

    /// Deploys this world's StreamJob and sees it commit: Running.
    fn deployed(self) -> Self {
        let mut w = self;
        let p = w.step(Observed::default());
        assert!(matches!(
            &p.effects[..],
            [Effect::Apply {
                with_workers: true,
                ..
            }]
        ));
        assert_eq!(w.status.phase, Some(Phase::Deploying));
        let hash = running_hash(&w);
        let pods = w.desired().job().parallelism;
        w.step(observed(pods, Some(report(&hash, 1))));
        assert_eq!(w.status.phase, Some(Phase::Running));
        assert_eq!(w.status.last_good, w.status.deployed);
        w
    }
}

/// What the worker pods of the current deployment report as their `deployment`: the hash the
/// operator gave them (`--deployment`).
fn running_hash(w: &World) -> String {
    w.status
        .deployed
        .as_ref()
        .expect("a deployment")
        .hash
        .clone()
}

fn workers(pods: u32) -> Workers {
    Workers {
        stateful_set: pods > 0,
        pods,
        ..Default::default()
    }
}

fn observed(pods: u32, report: Option<JobStatus>) -> Observed {
    Observed {
        workers: workers(pods),
        report,
        ..Default::default()
    }
}

fn report(deployment: &str, checkpoint: u64) -> JobStatus {
    JobStatus {
        spec_hash: "the job's own hash, which the operator does not read".into(),
        deployment: Some(deployment.into()),
        generation: 1,
        partitions: 4,
        parallelism: 2,
        last_checkpoint: Some(CommittedCheckpoint {
            id: checkpoint,
            committed_at_ms: 1_790_000_000_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn answered(state: OperationState, error: Option<&str>) -> Observed {
    let savepoint = (state == Succeeded).then(|| SavepointInfo {
        url: SP.into(),
        id: "sp-7".into(),
        checkpoint: 7,
    });
    Observed {
        workers: workers(2),
        report: None,
        operation: Some(Ok(wire::Operation {
            id: "savepoint-1".into(),
            kind: wire::OperationKind::Savepoint,
            stop: true,
            state,
            checkpoint: savepoint.as_ref().map(|s| s.checkpoint),
            savepoint,
            error: error.map(Into::into),
            started_at_ms: 1_790_000_000_000,
        })),
        ..Default::default()
    }
}

/// The housekeeping Job the last plan asked for: (name, kind, args, env).
fn housekeeping_run(
    p: &Plan,
) -> (
    String,
    Housekeeping,
    Vec<String>,
    Vec<(&'static str, String)>,
) {
    p.effects
        .iter()
        .find_map(|e| match e {
            Effect::RunHousekeeping {
                name,
                kind,
                args,
                env,
                ..
            } => Some((name.clone(), *kind, args.clone(), env.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no housekeeping Job asked for: {:?}", p.effects))
}

/// `base` with housekeeping Job `name` in `outcome`.
fn with_housekeeping(mut base: Observed, name: &str, outcome: Outcome) -> Observed {
    base.housekeeping.insert(name.into(), outcome);
    base
}

/// An upgrade or repartition of a running job starts with its restorability check: the pod
/// runs with the new spec's settings, succeeds, and the operation goes on to its savepoint.
fn pass_restore_check(w: &mut World) {
    assert_eq!(w.op().1, Step::CheckingRestore);
    let p = w.step(observed(2, None));
    let (name, kind, args, env) = housekeeping_run(&p);
    assert_eq!(kind, Housekeeping::CheckRestore);
    assert_eq!(args[..2], ["store".to_owned(), "check-restore".to_owned()]);
    assert_eq!(env[0].0, cairn_contract::housekeeping::TARGET_JOB_ENV);
    assert_eq!(
        w.status.operation.as_ref().unwrap().housekeeping.as_deref(),
        Some(name.as_str())
    );
    let p = w.step(with_housekeeping(
        observed(2, None),
        &name,
        Outcome::Running { stuck: None },
    ));
    assert!(p.effects.is_empty(), "{:?}", p.effects);
    let p = w.step(with_housekeeping(
        observed(2, None),
        &name,
        Outcome::Succeeded,
    ));
    assert_eq!(p.effects, [Effect::DeleteHousekeeping { name }]);
    assert_eq!(w.op().1, Step::TakingSavepoint);
}

/// From Running to "savepoint taken, old workers being deleted" for the current spec change.
fn take_savepoint(w: &mut World) {
    let p = w.step(observed(2, None));
    if w.op().1 == Step::CheckingRestore {
        assert!(p.effects.is_empty(), "{:?}", p.effects);
        pass_restore_check(w);
    }
    assert_eq!(w.op().1, Step::TakingSavepoint);
    assert!(
        p.effects.is_empty(),
        "nothing happens before the operation is recorded: {:?}",
        p.effects
    );
    let p = w.step_answering(observed(2, None), Ok("savepoint-1"));
    assert!(
        p.effects.is_empty(),
        "asked before the status: {:?}",
        p.effects
    );
    let op = w.status.operation.as_ref().unwrap();
    assert_eq!(op.control_operation.as_deref(), Some("savepoint-1"));
    assert_eq!(
        op.message.as_deref(),
        Some("savepoint requested (stop: true)")
    );
    let p = w.step(answered(Pending, None));
    assert!(p.effects.is_empty());
    // The job stops at the savepoint's barrier: every moment until the operator sees the
    // savepoint taken is a moment it processes nothing, so it looks often.
    assert_eq!(p.requeue, Duration::from_millis(250));
    let p = w.step(answered(Succeeded, None));
    // The savepoint is in status before anything is deleted.
    assert!(p.effects.is_empty(), "{:?}", p.effects);
    assert_eq!(w.op().1, Step::StoppingWorkers);
    assert_eq!(
        w.status.operation.as_ref().unwrap().savepoint.as_deref(),
        Some(SP)
    );
    assert_eq!(w.status.last_savepoint.as_deref(), Some(SP));
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, [Effect::DeleteWorkers]);
}

#[test]
fn savepoint_upgrade_records_the_savepoint_before_deleting_and_restores_it() {
    let mut w = World::running();
    let old = w.status.deployed.clone().unwrap();
    w.sj.spec.image = Some("cairn/worker:2".into());
    take_savepoint(&mut w);
    assert_eq!(w.op().0, OperationKind::Upgrade);
    // Old pods gone: the new deployment restores the savepoint.
    let p = w.step(observed(0, None));
    let Effect::Apply {
        deployment,
        with_workers: true,
    } = &p.effects[0]
    else {
        panic!("{:?}", p.effects)
    };
    assert_eq!(deployment.savepoint.as_deref(), Some(SP));
    assert_ne!(deployment.hash, old.hash);
    assert_eq!(w.status.deployed.as_ref(), Some(deployment));
    assert_eq!(w.op().1, Step::AwaitingCheckpoint);
    // Waiting for the new workers' first checkpoint is polled often too.
    let p = w.step(observed(2, None));
    assert_eq!(p.requeue, Duration::from_millis(250));
    // A checkpoint of the new spec commits: Running, new last good.
    let hash = running_hash(&w);
    let p = w.step(observed(2, Some(report(&hash, 8))));
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert!(w.status.operation.is_none());
    assert_eq!(w.status.last_good.as_ref().unwrap().hash, deployment.hash);
    assert_eq!(p.finished.map(|f| f.0), Some(OperationKind::Upgrade));
}

#[test]
fn an_upgrade_that_never_commits_rolls_back_from_the_same_savepoint() {
    let mut w = World::running();
    let good = w.status.deployed.clone().unwrap();
    w.sj.spec.image = Some("cairn/worker:broken".into());
    take_savepoint(&mut w);
    w.step(observed(0, None));
    let failed_hash = w.status.deployed.as_ref().unwrap().hash.clone();
    // Pods crash-loop past the timeout (3m in the example).
    let mut crashing = observed(2, None);
    crashing.workers.failing = Some("count-0: CrashLoopBackOff: exit code 1".into());
    w.now += Duration::from_secs(181);
    let p = w.step(crashing);
    assert_eq!(w.op(), (OperationKind::Rollback, Step::StoppingWorkers));
    assert_eq!(p.effects, [Effect::DeleteWorkers]);
    assert_eq!(w.status.phase, Some(Phase::RollingBack));
    assert_eq!(w.status.failed_hash.as_deref(), Some(failed_hash.as_str()));
    assert!(p.notes.iter().any(|n| n.warning
        && n.reason == "UpgradeFailed"
        && n.message.contains("CrashLoopBackOff")));
    let p = w.step(observed(0, None));
    let Effect::Apply { deployment, .. } = &p.effects[0] else {
        panic!()
    };
    assert_eq!(deployment.hash, good.hash);
    assert_eq!(
        deployment.savepoint.as_deref(),
        Some(SP),
        "the rollback restores the upgrade's savepoint"
    );
    let p = w.step(observed(2, Some(report(&running_hash(&w), 9))));
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert!(p
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "RolledBack"));
    // The failed spec is still desired, but not retried.
    let p = w.step(observed(2, Some(report(&running_hash(&w), 10))));
    assert!(w.status.operation.is_none());
    assert!(
        matches!(&p.effects[..], [Effect::Apply { deployment, .. }] if deployment.hash == good.hash)
    );
}

#[test]
fn a_failed_savepoint_leaves_the_job_running_and_backs_off() {
    let mut w = World::running();
    w.sj.spec.job["parallelism"] = 3.into();
    w.step(observed(2, None));
    w.step(observed(2, None));
    w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
    let p = w.step(answered(Failed, Some("checkpoint 12 timed out")));
    assert!(
        p.effects.is_empty(),
        "nothing is torn down: {:?}",
        p.effects
    );
    let op = w.status.operation.clone().unwrap();
    assert_eq!((op.step, op.attempts), (Step::TakingSavepoint, 1));
    assert_eq!(p.requeue, Duration::from_secs(10));
    assert!(p
        .notes
        .iter()
        .any(|n| n.reason == "SavepointFailed" && n.message.contains("timed out")));
    // Before the retry time: wait.
    let p = w.step(observed(2, None));
    assert!(p.effects.is_empty());
    // After it: ask again.
    w.now += Duration::from_secs(10);
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, [Effect::RequestSavepoint { stop: true }]);
}

#[test]
fn fallback_to_last_state_is_explicit() {
    let mut w = World::running();
    w.sj.spec.savepoints = Some(cairn_operator::crd::SavepointSettings {
        fallback_to_last_state_after: Some(1),
        ..Default::default()
    });
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    pass_restore_check(&mut w);
    w.step(observed(2, None));
    w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
    let mut lost = answered(Pending, None);
    lost.operation = Some(Err(ControlError::Status {
        addr: "10.0.0.1:9250".parse().unwrap(),
        status: 404,
        body: "no operation".into(),
    }));
    let p = w.step(lost);
    assert_eq!(w.op().1, Step::StoppingWorkers);
    assert!(p
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "FallbackToLastState"));
    w.step(observed(2, None));
    let p = w.step(observed(0, None));
    let Effect::Apply { deployment, .. } = &p.effects[0] else {
        panic!()
    };
    assert_eq!(
        deployment.savepoint, None,
        "restores the latest committed checkpoint"
    );
}

#[test]
fn changes_are_classified() {
    let base = manifest("examples/k8s/count.yaml");
    let v = validated(&base);
    let with = |f: &dyn Fn(&mut StreamJob)| {
        let mut sj = base.clone();
        f(&mut sj);
        classify(&v.pods, &validated(&sj).pods)
    };
    assert_eq!(
        with(&|sj| sj.spec.upgrade_timeout = Some("9m".into())),
        Change::None
    );
    assert_eq!(
        with(&|sj| sj.spec.job["parallelism"] = 3.into()),
        Change::Rescale
    );
    assert_eq!(
        with(&|sj| sj.spec.job["input"]["partitions"] = 6.into()),
        Change::Repartition
    );
    assert_eq!(
        with(&|sj| {
            sj.spec.job["input"]["partitions"] = 6.into();
            sj.spec.job["parallelism"] = 3.into();
        }),
        Change::Repartition
    );
    assert_eq!(
        with(&|sj| sj.spec.job["task"]["name"] = "sum".into()),
        Change::Upgrade
    );
    assert_eq!(
        with(&|sj| sj.spec.image = Some("x:1".into())),
        Change::Upgrade
    );
}

#[test]
fn suspend_takes_a_savepoint_and_resume_restores_it() {
    let mut w = World::running();
    w.sj.spec.state = cairn_operator::crd::DesiredState::Suspended;
    take_savepoint(&mut w);
    assert_eq!(w.op().0, OperationKind::Suspend);
    let p = w.step(observed(0, None));
    assert_eq!(w.status.phase, Some(Phase::Suspended));
    assert!(matches!(
        &p.effects[..],
        [Effect::Apply {
            with_workers: false,
            ..
        }]
    ));
    assert_eq!(
        w.status.deployed.as_ref().unwrap().savepoint.as_deref(),
        Some(SP)
    );
    w.sj.spec.state = cairn_operator::crd::DesiredState::Running;
    w.step(observed(0, None));
    assert_eq!(w.op().0, OperationKind::Resume);
    let p = w.step(observed(0, None));
    let Effect::Apply {
        deployment,
        with_workers: true,
    } = &p.effects[0]
    else {
        panic!("{:?}", p.effects)
    };
    assert_eq!(deployment.savepoint.as_deref(), Some(SP));
}

#[test]
fn restart_nonce_recreates_the_pods_and_waits_for_a_commit() {
    let mut w = World::running();
    w.sj.spec.restart_nonce = Some(1);
    w.step(observed(2, None));
    assert_eq!(w.op(), (OperationKind::Restart, Step::StoppingWorkers));
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, [Effect::DeleteWorkers]);
    w.step(observed(0, None));
    assert_eq!(w.op().1, Step::AwaitingCheckpoint);
    let hash = running_hash(&w);
    w.step(observed(2, Some(report(&hash, 11))));
    assert!(w.status.operation.is_none());
    assert_eq!(w.status.handled_restart_nonce, Some(1));
}

#[test]
fn deletion_takes_a_final_savepoint_then_lets_go() {
    let mut w = World::running();
    w.step_deleting(observed(2, None), true);
    assert_eq!(w.op(), (OperationKind::Delete, Step::TakingSavepoint));
    let p = w.step_deleting(observed(2, None), true);
    assert_eq!(p.effects, [Effect::RequestSavepoint { stop: true }]);
    w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
    let p = w.step_deleting(answered(Succeeded, None), true);
    assert!(p.release_finalizer);
    assert!(p.notes.iter().any(|n| n.message.contains(SP)));
}

#[test]
fn manual_and_periodic_savepoints_keep_the_job_running_and_prune_history() {
    let mut w = World::running();
    w.sj.spec.savepoints = Some(cairn_operator::crd::SavepointSettings {
        trigger_nonce: Some(5),
        max_count: Some(1),
        ..Default::default()
    });
    let hash = running_hash(&w);
    w.step(observed(2, Some(report(&hash, 2))));
    assert_eq!(w.op(), (OperationKind::Savepoint, Step::TakingSavepoint));
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, [Effect::RequestSavepoint { stop: false }]);
    for n in 0..2 {
        w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
        let mut done = answered(Succeeded, None);
        if let Some(Ok(r)) = &mut done.operation {
            r.savepoint.as_mut().unwrap().url = format!("{SP}{n}");
        }
        let p = w.step(done);
        // Nothing touches the workers (the only effect may be disposing of a pruned savepoint).
        assert!(
            p.effects
                .iter()
                .all(|e| matches!(e, Effect::RunHousekeeping { .. })),
            "the job keeps running: {:?}",
            p.effects
        );
        assert_eq!(w.status.phase, Some(Phase::Running));
        if n == 0 {
            w.sj.spec.savepoints.as_mut().unwrap().trigger_nonce = Some(6);
            w.step(observed(2, Some(report(&hash, 3))));
        }
    }
    let kept: Vec<_> = w
        .status
        .savepoints
        .iter()
        .filter(|s| !s.disposing)
        .map(|s| s.url.as_str())
        .collect();
    assert_eq!(kept, [format!("{SP}1")], "maxCount 1 keeps the newest");
    // The pruned one stays in status, marked, while a pod disposes of its files.
    let pruned: Vec<_> = w
        .status
        .savepoints
        .iter()
        .filter(|s| s.disposing)
        .map(|s| s.url.as_str())
        .collect();
    assert_eq!(pruned, [format!("{SP}0")]);
}

#[test]
fn stateless_upgrade_moves_the_store_and_finishes_on_the_new_pods_commit() {
    let mut w = World::running();
    w.sj.spec.upgrade_mode = cairn_operator::crd::UpgradeMode::Stateless;
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::StoppingWorkers));
    w.step(observed(2, None));
    w.step(observed(0, None));
    assert_eq!(w.op().1, Step::AwaitingCheckpoint);
    assert_eq!(w.status.deployed.as_ref().unwrap().state_epoch, 1);
    // The pods run the store's epoch-1 path; their commit finishes the upgrade.
    let hash = running_hash(&w);
    let p = w.step(observed(2, Some(report(&hash, 1))));
    assert!(w.status.operation.is_none(), "{:?}", w.status.operation);
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert_eq!(p.finished.map(|f| f.0), Some(OperationKind::Upgrade));
}

/// A status whose Rollback lost its target (edited by hand, or written by something else):
/// the operator used to panic on it (`expect("a rollback has a target")`), taking every other
/// StreamJob down with it. Now the job fails with a message that says how to get out.
#[test]
fn a_rollback_without_a_target_fails_the_job_with_a_way_out() {
    let mut w = World::running();
    w.status.phase = Some(Phase::RollingBack);
    w.status.operation = Some(cairn_operator::crd::Operation {
        kind: OperationKind::Rollback,
        step: Step::StoppingWorkers,
        target: None,
        control_operation: None,
        savepoint: None,
        trigger: None,
        attempts: 0,
        retry_after: None,
        started_at: "2026-11-24T09:00:00Z".into(),
        step_started_at: "2026-11-24T09:00:00Z".into(),
        message: None,
        housekeeping: None,
    });
    let p = w.step(observed(0, None));
    assert_eq!(p.effects, []);
    assert_eq!(w.status.phase, Some(Phase::Failed));
    assert!(w.status.operation.is_none());
    let note = p
        .notes
        .iter()
        .find(|n| n.reason == "RollbackWithoutTarget")
        .expect("a Warning event");
    assert!(note.warning);
    assert_eq!(
        note.message,
        "status.operation is a Rollback without a target (status.operation.target was removed or never written), so there is no spec to roll back to; the worker pods are stopped. To deploy again, change the spec, or set spec.restartNonce to a new value to restart the deployed spec"
    );
    assert_eq!(w.status.last_error.as_deref(), Some(note.message.as_str()));
    // The condition users see says the same: the plan computed it with the status.
    let degraded = w
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (
            degraded.status.as_str(),
            degraded.reason.as_str(),
            degraded.message.as_str()
        ),
        ("True", "Failed", note.message.as_str())
    );
    // The way out works: a new restartNonce redeploys the deployed spec.
    w.sj.spec.restart_nonce = Some(1);
    w.step(observed(0, None));
    assert_eq!(w.op(), (OperationKind::Restart, Step::StoppingWorkers));
    let p = w.step(observed(0, None));
    assert!(matches!(
        &p.effects[..],
        [Effect::Apply {
            with_workers: true,
            ..
        }]
    ));
}

fn facts(observed: &Observed, interval: Duration, now: Timestamp) -> conditions::Facts<'_> {
    conditions::Facts {
        observed,
        checkpoint_interval: interval,
        recovery_objective: false,
        standby: None,
        desired_failed_before: false,
        refused: None,
        now,
    }
}

/// `interval * 3` overflowed (a panic) for an interval near `Duration::MAX`; conditions must be
/// computable from any interval.
#[test]
fn conditions_of_a_huge_checkpoint_interval_do_not_panic() {
    let w = World::running();
    let seen = observed(2, Some(report("h", 1)));
    let mut status = w.status.clone();
    status.last_checkpoint.as_mut().unwrap().time = "2026-11-24T09:00:00Z".into();
    conditions::update(&mut status, &facts(&seen, Duration::MAX, w.now));
    let healthy = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CheckpointsHealthy")
        .unwrap();
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_str()),
        ("True", "Committing")
    );
}

/// `(status, reason)` of the condition `type_`, when there is one.
fn condition<'a>(status: &'a StreamJobStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// A report of `deployment` whose last checkpoint committed `age` before `now`.
fn report_at(deployment: &str, now: Timestamp, age: Duration) -> JobStatus {
    let mut seen = report(deployment, 1);
    let at = now - jiff::SignedDuration::try_from(age).unwrap();
    seen.last_checkpoint.as_mut().unwrap().committed_at_ms =
        u64::try_from(at.as_millisecond()).unwrap();
    seen
}

/// With `checkpoint.targetRecoveryTime` the job's objective is copied into
/// `status.recoveryObjective` (and kept while the job does not answer), `RecoveryObjectiveMet`
/// follows it, and `CheckpointsHealthy` counts late commits from `maxInterval`, the longest
/// interval the coordinator may choose.
#[test]
fn a_recovery_objective_is_in_status_and_conditions() {
    let mut w = World::new();
    w.sj.spec.job["checkpoint"]["targetRecoveryTime"] = "30s".into();
    w.sj.spec.job["checkpoint"]["maxInterval"] = "2m".into();
    w.step(Observed::default());
    let hash = running_hash(&w);
    let mut seen = report_at(&hash, w.now, Duration::from_secs(100));
    seen.recovery_objective = Some(RecoveryObjective {
        target_ms: 30_000,
        interval_ms: 20_000,
        predicted: Some(PredictedRecovery {
            detect_ms: 2_000,
            restore_ms: 500,
            replay_ms: 4_000,
            total_ms: 6_500,
        }),
        problem: None,
    });
    w.step(observed(2, Some(seen)));
    assert_eq!(w.status.phase, Some(Phase::Running));
    let expected = RecoveryObjectiveInfo {
        target_ms: 30_000,
        interval_ms: 20_000,
        predicted_ms: Some(6_500),
        problem: None,
    };
    assert_eq!(w.status.recovery_objective.as_ref(), Some(&expected));
    assert_eq!(
        condition(&w.status, "RecoveryObjectiveMet"),
        Some(("True", "WithinTarget"))
    );
    // 100 s since the last commit: late for the 10 s `interval` (30 s), not for `maxInterval`.
    assert_eq!(
        condition(&w.status, "CheckpointsHealthy"),
        Some(("True", "Committing"))
    );
    // Unreachable: the last known objective stays, the condition is Unknown.
    w.step(observed(2, None));
    assert_eq!(w.status.recovery_objective.as_ref(), Some(&expected));
    assert_eq!(
        condition(&w.status, "RecoveryObjectiveMet"),
        Some(("Unknown", "JobUnreachable"))
    );
    // Serialized as the status field the docs name.
    let status = serde_json::to_value(&w.status).unwrap();
    assert_eq!(
        status["recoveryObjective"],
        serde_json::json!({"targetMs": 30_000, "intervalMs": 20_000, "predictedMs": 6_500})
    );
}

/// Without an objective: no `status.recoveryObjective` (a stale one is dropped), no
/// `RecoveryObjectiveMet`, and the health rule counts from `interval`.
#[test]
fn a_job_without_a_recovery_objective_has_none_in_status() {
    let mut w = World::running();
    w.status.recovery_objective = Some(RecoveryObjectiveInfo::default());
    let hash = running_hash(&w);
    let mut seen = report_at(&hash, w.now, Duration::from_secs(100));
    seen.recovery_objective = Some(RecoveryObjective::default());
    w.step(observed(2, Some(seen)));
    assert_eq!(w.status.recovery_objective, None);
    assert_eq!(condition(&w.status, "RecoveryObjectiveMet"), None);
    assert_eq!(
        condition(&w.status, "CheckpointsHealthy"),
        Some(("False", "CheckpointsLate"))
    );
    w.status.recovery_objective = Some(RecoveryObjectiveInfo::default());
    w.step(observed(2, None));
    assert_eq!(w.status.recovery_objective, None);
}

/// A retry time far in the future (not one this operator writes: its backoff is at most
/// 5 minutes) is not waited for, and no plan asks to be requeued later than `MAX_REQUEUE`
/// (kube-runtime's scheduler panics on delays of more than about two years).
#[test]
fn a_far_retry_time_in_status_is_not_waited_for() {
    let mut w = World::running();
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    pass_restore_check(&mut w);
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::TakingSavepoint));
    w.status.operation.as_mut().unwrap().retry_after = Some("9999-01-01T00:00:00Z".into());
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, [Effect::RequestSavepoint { stop: true }]);
    assert!(p.requeue <= MAX_REQUEUE, "{:?}", p.requeue);
    // Within the backoff: waited for, and the wait is what is left of it.
    w.status.operation.as_mut().unwrap().retry_after =
        Some((w.now + Duration::from_secs(40)).to_string());
    let p = w.step(observed(2, None));
    assert_eq!(p.effects, []);
    assert_eq!(p.requeue, Duration::from_secs(40));
}

/// Counters recorded in status saturate instead of overflowing (a panic in debug builds).
#[test]
fn counters_from_status_saturate() {
    let mut w = World::running();
    w.sj.spec.job["parallelism"] = 3.into();
    w.step(observed(2, None));
    w.step(observed(2, None));
    let op = w.status.operation.as_mut().unwrap();
    op.control_operation = Some("savepoint-1".into());
    op.attempts = u32::MAX;
    w.step(answered(Failed, Some("checkpoint 12 timed out")));
    assert_eq!(w.status.operation.as_ref().unwrap().attempts, u32::MAX);

    let mut w = World::running();
    for d in [&mut w.status.deployed, &mut w.status.last_good] {
        d.as_mut().unwrap().state_epoch = u32::MAX;
    }
    w.sj.spec.upgrade_mode = cairn_operator::crd::UpgradeMode::Stateless;
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    w.step(observed(2, None));
    let p = w.step(observed(0, None));
    let Effect::Apply { deployment, .. } = &p.effects[0] else {
        panic!("{:?}", p.effects)
    };
    assert_eq!(deployment.state_epoch, u32::MAX);
}

/// A job that refuses the savepoint request: the refusal is a failed attempt in the same status
/// (count, backoff, message, Warning event), the running job is untouched, and the operation waits
/// for its retry time.
#[test]
fn a_refused_savepoint_request_is_a_failed_attempt_in_the_same_status() {
    let mut w = World::running();
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    pass_restore_check(&mut w);
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::TakingSavepoint));
    let refusal = "savepoint operation savepoint-0 (stop: false) is already running";
    let p = w.step_answering(observed(2, None), Err(refusal));
    assert_eq!(p.effects, []);
    let op = w.status.operation.as_ref().unwrap();
    assert_eq!((op.attempts, op.control_operation.as_deref()), (1, None));
    assert!(op.retry_after.is_some());
    assert!(op.message.as_deref().unwrap().contains(refusal), "{op:?}");
    assert!(p
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "SavepointFailed"));
    assert_eq!(p.requeue, Duration::from_secs(10));
    // Until the retry time, nothing is asked again.
    let p = w.step_answering(observed(2, None), Ok("never-asked"));
    assert_eq!(p.effects, []);
    assert_eq!(w.status.operation.as_ref().unwrap().control_operation, None);
}

/// The standby example (P 3), deployed and Running, its pods observed.
fn running_with_standbys() -> World {
    let mut w = World::new();
    w.sj = manifest("examples/k8s/standby.yaml");
    w.step(Observed::default());
    let hash = running_hash(&w);
    w.step(observed(5, Some(report(&hash, 1))));
    assert_eq!(w.status.phase, Some(Phase::Running));
    w
}

/// A standby of `container` on `host` holding `checkpoint`.
fn standby(container: u32, host: &str, checkpoint: Option<u64>) -> StandbyStatus {
    StandbyStatus {
        container,
        host: host.into(),
        checkpoint,
    }
}

/// The message of the condition `type_`.
fn message<'a>(status: &'a StreamJobStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.as_str())
        .unwrap()
}

/// `status.standbys` mirrors the job's report (in container order, the host as the pod), and
/// `StandbyReady` says whether every container 1..P-1 has a standby holding a checkpoint, and
/// which have none when not.
#[test]
fn standbys_are_in_status_and_standby_ready_names_the_missing_containers() {
    let mut w = running_with_standbys();
    let hash = running_hash(&w);
    let with = |standbys: Vec<StandbyStatus>| {
        let mut r = report(&hash, 5);
        r.standbys = standbys;
        observed(5, Some(r))
    };

    // None connected yet: False, naming both containers.
    w.step(with(vec![]));
    assert_eq!(
        condition(&w.status, "StandbyReady"),
        Some(("False", "StandbyMissing"))
    );
    assert!(
        message(&w.status, "StandbyReady").contains("no standby connected for container 1, 2"),
        "{}",
        message(&w.status, "StandbyReady")
    );

    // Container 2's standby connected without a checkpoint, container 1's holds one.
    w.step(with(vec![
        standby(2, "warm-count-2", None),
        standby(1, "warm-count-standby-1", Some(4)),
    ]));
    assert_eq!(
        w.status.standbys,
        [
            StandbyInfo {
                container: 1,
                pod: "warm-count-standby-1".into(),
                checkpoint: Some(4)
            },
            StandbyInfo {
                container: 2,
                pod: "warm-count-2".into(),
                checkpoint: None
            },
        ]
    );
    assert_eq!(
        condition(&w.status, "StandbyReady"),
        Some(("False", "StandbyCatchingUp"))
    );
    assert!(message(&w.status, "StandbyReady").contains("container 2 (warm-count-2)"));

    // Both hold a checkpoint: True.
    w.step(with(vec![
        standby(1, "warm-count-standby-1", Some(5)),
        standby(2, "warm-count-2", Some(5)),
    ]));
    assert_eq!(
        condition(&w.status, "StandbyReady"),
        Some(("True", "StandingBy"))
    );
    assert_eq!(
        message(&w.status, "StandbyReady"),
        "every container from 1 to 2 has a standby holding a checkpoint (1: warm-count-standby-1 at checkpoint 5; 2: warm-count-2 at checkpoint 5)"
    );
    let json = serde_json::to_value(&w.status).unwrap();
    assert_eq!(
        json["standbys"][0],
        serde_json::json!({"container": 1, "pod": "warm-count-standby-1", "checkpoint": 5})
    );

    // The job does not answer: the last standbys stay, the condition is Unknown.
    let before = w.status.standbys.clone();
    w.step(observed(5, None));
    assert_eq!(w.status.standbys, before);
    assert_eq!(
        condition(&w.status, "StandbyReady"),
        Some(("Unknown", "JobUnreachable"))
    );
    // No pods: nothing stands by.
    w.step(observed(0, None));
    assert!(w.status.standbys.is_empty());
}

/// A job without `standby` has no `StandbyReady` and no `status.standbys`.
#[test]
fn a_job_without_standbys_has_no_standby_condition() {
    let mut w = World::running();
    w.status.standbys = vec![StandbyInfo::default()];
    let mut r = report(&running_hash(&w), 3);
    r.standbys = vec![standby(1, "count-1", Some(3))];
    w.step(observed(2, Some(r)));
    assert_eq!(condition(&w.status, "StandbyReady"), None);
    assert!(w.status.standbys.is_empty());
}

/// Turning `standby` off is an upgrade (the coordinator reads it): the workers are stopped,
/// standbys included (a standbys' set still there means not gone), and the new deployment's pods
/// have no standbys; its status loses them and the condition.
#[test]
fn turning_standby_off_upgrades_and_waits_for_the_standby_set_to_go() {
    let mut w = running_with_standbys();
    w.sj.spec.job["standby"] = false.into();
    take_savepoint(&mut w);
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::StoppingWorkers));
    // The workers' set and pods are gone, the standbys' set is not yet: delete again.
    let mut standbys_left = observed(0, None);
    standbys_left.workers.standby_set = true;
    let p = w.step(standbys_left);
    assert_eq!(p.effects, [Effect::DeleteWorkers]);
    let p = w.step(observed(0, None));
    let Effect::Apply {
        deployment,
        with_workers: true,
    } = &p.effects[0]
    else {
        panic!("{:?}", p.effects)
    };
    assert!(!deployment.pods("target").unwrap().job.standby);
    let mut r = report(&running_hash(&w), 9);
    r.standbys = vec![standby(1, "warm-count-standby-1", Some(9))];
    w.step(observed(3, Some(r)));
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert_eq!(condition(&w.status, "StandbyReady"), None);
    assert!(w.status.standbys.is_empty());
}

/// Suspending a job with standbys removes every pod (the children are applied without workers,
/// which deletes both StatefulSets); `StandbyReady` is Unknown while suspended.
#[test]
fn a_suspended_job_with_standbys_has_no_pods_and_no_standbys() {
    let mut w = running_with_standbys();
    w.sj.spec.state = cairn_operator::crd::DesiredState::Suspended;
    take_savepoint(&mut w);
    let p = w.step(observed(0, None));
    assert_eq!(w.status.phase, Some(Phase::Suspended));
    assert!(matches!(
        &p.effects[..],
        [Effect::Apply {
            with_workers: false,
            ..
        }]
    ));
    assert!(w.status.standbys.is_empty());
    assert_eq!(
        condition(&w.status, "StandbyReady"),
        Some(("Unknown", "Suspended"))
    );
}

fn finished_report(deployment: &str, checkpoint: u64) -> JobStatus {
    JobStatus {
        state: wire::RunState::Finished,
        ..report(deployment, checkpoint)
    }
}

/// A running job whose finite input ended: its pods report `finished`.
fn finished() -> World {
    let mut w = World::running();
    let hash = running_hash(&w);
    let p = w.step(observed(2, Some(finished_report(&hash, 9))));
    assert_eq!(w.status.phase, Some(Phase::Finished));
    assert!(p.notes.iter().any(|n| n.reason == "Finished"));
    w
}

/// A finished job is not a failing one: no "checkpoints late" however old its final checkpoint
/// (FLINK-39043's finished job loops), no periodic savepoints of a state that no longer
/// changes, and a slow poll.
#[test]
fn a_finished_job_is_ready_and_quiet() {
    let mut w = finished();
    w.sj.spec.savepoints = Some(cairn_operator::crd::SavepointSettings {
        interval: Some("1m".into()),
        ..Default::default()
    });
    let hash = running_hash(&w);
    // The final checkpoint's time is long past (the report's fixed commit time), and an hour
    // goes by.
    w.now += Duration::from_secs(3600);
    let p = w.step(observed(2, Some(finished_report(&hash, 9))));
    assert!(w.status.operation.is_none(), "{:?}", w.status.operation);
    assert_eq!(w.status.phase, Some(Phase::Finished));
    assert_eq!(p.requeue, Duration::from_secs(60));
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(
        condition(&w.status, conditions::READY),
        Some(("True", "Finished"))
    );
    assert_eq!(
        condition(&w.status, conditions::CHECKPOINTS_HEALTHY),
        Some(("True", "Finished"))
    );
    assert_eq!(
        condition(&w.status, conditions::DEGRADED),
        Some(("False", "Healthy"))
    );
    // Same observation, same status: the reconcile writes nothing (no loop of status writes).
    let before = w.status.clone();
    w.step(observed(2, Some(finished_report(&hash, 9))));
    assert_eq!(w.status, before);
}

#[test]
fn a_finished_job_takes_a_manual_savepoint_and_stays_finished() {
    let mut w = finished();
    w.sj.spec.savepoints = Some(cairn_operator::crd::SavepointSettings {
        trigger_nonce: Some(1),
        ..Default::default()
    });
    let hash = running_hash(&w);
    w.step(observed(2, Some(finished_report(&hash, 9))));
    assert_eq!(w.op(), (OperationKind::Savepoint, Step::TakingSavepoint));
    w.step_answering(
        observed(2, Some(finished_report(&hash, 9))),
        Ok("savepoint-1"),
    );
    let mut done = answered(Succeeded, None);
    done.report = Some(finished_report(&hash, 9));
    w.step(done);
    assert!(w.status.operation.is_none());
    assert_eq!(w.status.phase, Some(Phase::Finished));
    assert_eq!(w.status.last_savepoint.as_deref(), Some(SP));
}

/// New input for a finished job is a spec change like any other: checked, savepointed from
/// the final checkpoint, restored by the new pods, which then run.
#[test]
fn a_finished_job_resumes_with_new_input_through_an_upgrade() {
    let mut w = finished();
    w.sj.spec.job["input"]["recordsPerPartition"] = 5000.into();
    take_savepoint(&mut w);
    assert_eq!(w.op().0, OperationKind::Upgrade);
    let p = w.step(observed(0, None));
    let Effect::Apply { deployment, .. } = &p.effects[0] else {
        panic!("{:?}", p.effects)
    };
    assert_eq!(deployment.savepoint.as_deref(), Some(SP));
    let hash = running_hash(&w);
    w.step(observed(2, Some(report(&hash, 10))));
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert!(w.status.operation.is_none());
}

#[test]
fn a_finished_job_suspends_and_is_deleted_with_a_final_savepoint() {
    let mut w = finished();
    w.sj.spec.state = cairn_operator::crd::DesiredState::Suspended;
    take_savepoint(&mut w);
    assert_eq!(w.op().0, OperationKind::Suspend);
    w.step(observed(0, None));
    assert_eq!(w.status.phase, Some(Phase::Suspended));

    let mut w = finished();
    w.step_deleting(observed(2, None), true);
    assert_eq!(w.op(), (OperationKind::Delete, Step::TakingSavepoint));
    w.step_deleting(observed(2, None), true);
    w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
    let p = w.step_deleting(answered(Succeeded, None), true);
    assert!(p.release_finalizer, "no stuck finalizer");
}

/// A running job with a savepoint history where `maxCount: 1` just pruned `{SP}0`.
fn with_pruned_savepoint() -> World {
    let mut w = World::running();
    w.sj.spec.savepoints = Some(cairn_operator::crd::SavepointSettings {
        max_count: Some(1),
        ..Default::default()
    });
    for (n, disposing) in [(0, true), (1, false)] {
        w.status
            .savepoints
            .push(cairn_operator::crd::SavepointRecord {
                url: format!("{SP}{n}"),
                checkpoint: n,
                time: "2026-11-24T09:00:00Z".into(),
                reason: "manual".into(),
                disposing,
            });
    }
    w
}

#[test]
fn a_pruned_savepoint_leaves_status_only_after_its_files_are_disposed_of() {
    let mut w = with_pruned_savepoint();
    let hash = running_hash(&w);
    let running = || observed(2, Some(report(&hash, 3)));
    let p = w.step(running());
    let (first, kind, args, _) = housekeeping_run(&p);
    assert_eq!(kind, Housekeeping::Dispose);
    assert_eq!(
        args,
        cairn_contract::housekeeping::dispose_args(&[format!("{SP}0")])
    );
    assert_eq!(
        w.status.disposal.as_ref().unwrap().job.as_deref(),
        Some(first.as_str())
    );
    // It fails: the entry stays, Degraded says why, the Job is removed, a retry waits.
    let failed = Outcome::Failed {
        message: "s3://bucket: access denied (exit code 1)".into(),
    };
    let p = w.step(with_housekeeping(running(), &first, failed));
    assert!(p.effects.contains(&Effect::DeleteHousekeeping {
        name: first.clone()
    }));
    assert!(p
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "SavepointDisposalFailed"));
    assert_eq!(w.status.savepoints.len(), 2, "nothing leaves status unseen");
    let (status, reason) = condition(&w.status, conditions::DEGRADED).unwrap();
    assert_eq!((status, reason), ("True", "SavepointDisposalFailing"));
    assert!(message(&w.status, conditions::DEGRADED).contains("access denied"));
    let p = w.step(running());
    assert!(
        !p.effects
            .iter()
            .any(|e| matches!(e, Effect::RunHousekeeping { .. })),
        "waits for the retry time: {:?}",
        p.effects
    );
    w.now += Duration::from_secs(10);
    let p = w.step(running());
    let (second, ..) = housekeeping_run(&p);
    assert_ne!(second, first, "a new Job per attempt");
    let p = w.step(with_housekeeping(running(), &second, Outcome::Succeeded));
    assert!(p.effects.contains(&Effect::DeleteHousekeeping {
        name: second.clone()
    }));
    let urls: Vec<_> = w.status.savepoints.iter().map(|s| s.url.clone()).collect();
    assert_eq!(urls, [format!("{SP}1")]);
    assert!(w.status.disposal.is_none());
    assert_eq!(
        condition(&w.status, conditions::DEGRADED),
        Some(("False", "Healthy"))
    );
}

/// A disposal pod that vanished before its end was seen is run again, not waited for forever.
#[test]
fn a_vanished_disposal_pod_is_run_again() {
    let mut w = with_pruned_savepoint();
    let hash = running_hash(&w);
    let p = w.step(observed(2, Some(report(&hash, 3))));
    let (name, ..) = housekeeping_run(&p);
    let p = w.step(observed(2, Some(report(&hash, 3))));
    assert_eq!(housekeeping_run(&p).0, name);
}

fn deleting_data(final_savepoint: bool) -> World {
    let mut w = World::running();
    w.sj.spec.deletion = Some(cairn_operator::crd::DeletionPolicy {
        final_savepoint,
        checkpoint_data: cairn_operator::crd::DataRetention::Delete,
        retain_savepoints: vec!["s3://elsewhere/savepoints/sp-000000000001".into()],
    });
    w
}

/// Drives a deletion from "workers stopping" through the purge; returns the purge's plan.
fn purge(w: &mut World) -> (String, Vec<String>) {
    assert_eq!(w.op(), (OperationKind::Delete, Step::StoppingWorkers));
    let p = w.step_deleting(observed(2, None), true);
    assert_eq!(p.effects, [Effect::DeleteWorkers]);
    assert!(!p.release_finalizer, "the store is not purged yet");
    // The purge starts only once no pod is left that could still write to the store.
    w.step_deleting(observed(0, None), true);
    assert_eq!(w.op().1, Step::PurgingStore);
    let p = w.step_deleting(observed(0, None), true);
    let (name, kind, args, _) = housekeeping_run(&p);
    assert_eq!(kind, Housekeeping::Purge);
    assert!(!p.release_finalizer);
    (name, args)
}

#[test]
fn deletion_with_checkpoint_data_delete_purges_the_store_but_keeps_the_final_savepoint() {
    let mut w = deleting_data(true);
    w.step_deleting(observed(2, None), true);
    assert_eq!(w.op(), (OperationKind::Delete, Step::TakingSavepoint));
    w.step_deleting(observed(2, None), true);
    w.status.operation.as_mut().unwrap().control_operation = Some("savepoint-1".into());
    let p = w.step_deleting(answered(Succeeded, None), true);
    assert!(!p.release_finalizer, "the data is still to be deleted");
    let (name, args) = purge(&mut w);
    assert_eq!(
        args,
        cairn_contract::housekeeping::purge_args(
            "file:///var/lib/cairn-store/count",
            &[
                SP.to_owned(),
                "s3://elsewhere/savepoints/sp-000000000001".to_owned()
            ]
        ),
        "the final savepoint and retainSavepoints are kept"
    );
    let p = w.step_deleting(
        with_housekeeping(observed(0, None), &name, Outcome::Succeeded),
        true,
    );
    assert!(p.release_finalizer);
    assert!(p.notes.iter().any(|n| n.reason == "StoreDataDeleted"));
}

/// A store that cannot be purged never holds the StreamJob forever: after five failed attempts
/// it goes, with a Warning that names the store.
#[test]
fn a_purge_that_keeps_failing_lets_the_streamjob_go_and_says_what_is_left() {
    let mut w = deleting_data(false);
    w.step_deleting(observed(2, None), true);
    let (mut name, _) = purge(&mut w);
    for attempt in 1..=5 {
        let failed = Outcome::Failed {
            message: "bucket unreachable (exit code 1)".into(),
        };
        let p = w.step_deleting(with_housekeeping(observed(0, None), &name, failed), true);
        if attempt == 5 {
            assert!(p.release_finalizer);
            let kept = p
                .notes
                .iter()
                .find(|n| n.reason == "StoreDataKept")
                .unwrap();
            assert!(kept.warning && kept.message.contains("file:///var/lib/cairn-store/count"));
            return;
        }
        assert!(!p.release_finalizer);
        assert_eq!(
            condition(&w.status, conditions::DEGRADED).map(|c| c.1),
            Some("StorePurgeFailing")
        );
        w.now += Duration::from_secs(300);
        let p = w.step_deleting(observed(0, None), true);
        name = housekeeping_run(&p).0;
    }
}

/// The restorability check fails (here: its pod cannot pull the new image): the upgrade is
/// refused before anything is stopped, the job keeps running its deployed spec, and the spec
/// is not tried again until it changes.
#[test]
fn an_upgrade_that_cannot_restore_is_refused_before_the_job_is_touched() {
    let mut w = World::running();
    let deployed = w.status.deployed.clone();
    let hash = running_hash(&w);
    let running = || observed(2, Some(report(&hash, 3)));
    w.sj.spec.image = Some("cairn/worker:typo".into());
    w.step(running());
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::CheckingRestore));
    let mut all_effects = Vec::new();
    for attempt in 1..=3 {
        let p = w.step(running());
        let (name, _, args, _) = housekeeping_run(&p);
        assert!(args.contains(&"savepoint".to_owned()), "{args:?}");
        let stuck = Outcome::Running {
            stuck: Some("its pod cannot start: ImagePullBackOff: cairn/worker:typo".into()),
        };
        let p = w.step(with_housekeeping(running(), &name, stuck));
        all_effects.extend(p.effects.clone());
        if attempt < 3 {
            assert_eq!(w.op().1, Step::CheckingRestore);
            assert_eq!(
                condition(&w.status, conditions::DEGRADED).map(|c| c.1),
                Some("RestoreCheckFailing")
            );
            w.now += Duration::from_secs(60);
        }
    }
    assert!(
        !all_effects
            .iter()
            .any(|e| matches!(e, Effect::DeleteWorkers | Effect::RequestSavepoint { .. })),
        "the running job was never touched: {all_effects:?}"
    );
    assert!(w.status.operation.is_none());
    assert_eq!(w.status.phase, Some(Phase::Running));
    assert_eq!(w.status.deployed, deployed);
    assert_eq!(
        condition(&w.status, conditions::DEGRADED).map(|c| c.1),
        Some("NotRestorable")
    );
    assert!(message(&w.status, conditions::DEGRADED).contains("ImagePullBackOff"));
    // Not retried while the spec stays the same.
    w.step(running());
    assert!(w.status.operation.is_none());
    // A fixed spec is checked again.
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(running());
    assert_eq!(w.op(), (OperationKind::Upgrade, Step::CheckingRestore));
}

/// The check runs the new spec's document in the pod's environment, against the store the
/// current state is in, in the mode the upgrade would restore it.
#[test]
fn the_restore_check_is_given_the_new_document_and_the_current_store() {
    let mut w = World::running();
    w.sj.spec.upgrade_mode = cairn_operator::crd::UpgradeMode::LastState;
    w.sj.spec.job["task"]["name"] = "sum".into();
    w.step(observed(2, None));
    let p = w.step(observed(2, None));
    let (_, _, args, env) = housekeeping_run(&p);
    assert_eq!(
        args,
        cairn_contract::housekeeping::check_restore_args(
            "file:///var/lib/cairn-store/count",
            cairn_contract::housekeeping::RestoreMode::LastState
        )
    );
    let target = cairn_contract::JobSpec::from_yaml_str(&env[0].1).unwrap();
    assert_eq!(target.task.name, "sum");
    let Effect::RunHousekeeping { pods, .. } = &p.effects[0] else {
        panic!()
    };
    assert_eq!(
        pods.job.task.name, "sum",
        "run with the new spec's settings"
    );
}

/// A rescale (only P changes) and a stateless upgrade restore nothing that could not fit: no
/// check.
#[test]
fn rescales_and_stateless_upgrades_are_not_checked() {
    let mut w = World::running();
    w.sj.spec.job["parallelism"] = 3.into();
    w.step(observed(2, None));
    assert_eq!(w.op(), (OperationKind::Rescale, Step::TakingSavepoint));
    let mut w = World::running();
    w.sj.spec.upgrade_mode = cairn_operator::crd::UpgradeMode::Stateless;
    w.sj.spec.image = Some("cairn/worker:2".into());
    w.step(observed(2, None));
    assert_eq!(w.op().1, Step::StoppingWorkers);
}

// --- The autoscaler (docs/autoscaling.md) --------------------------------------------------

/// The example (4 partitions) with an autoscaler: 1 to 4 containers, target 70%, a 30 s
/// window, a 60 s cooldown, backlogs worked off in 100 s. Deployed at the autoscaler's P
/// `start` (the example's 2 if `None`) with `history` already in status.
fn autoscaled(start: Option<u32>, history: Vec<ScalingDecision>) -> World {
    let mut w = World::new();
    w.sj.spec.autoscaler = Some(AutoscalerSettings {
        min_parallelism: Some(1),
        max_parallelism: Some(4),
        target_utilization: Some(0.7),
        catch_up_time: Some("100s".into()),
        stabilization_window: Some("30s".into()),
        cooldown: Some("60s".into()),
    });
    w.status.autoscaler = Some(AutoscalerStatus {
        parallelism: start,
        history,
        ..Default::default()
    });
    w.deployed()
}

/// A decision `ago` before the world's clock.
fn decision(w: &World, ago: u64, from: u32, to: u32, processing_rate: f64) -> ScalingDecision {
    let time = w.now - Duration::from_secs(ago);
    ScalingDecision {
        time: time.to_string(),
        from,
        to,
        reason: if to > from { "ScaleUp" } else { "ScaleDown" }.into(),
        message: "an earlier decision".into(),
        load: LoadMetrics {
            processing_rate,
            ..Default::default()
        },
        outcome: None,
    }
}

/// The per-task counters the workers of a running job report, advanced look by look.
struct Load {
    tasks: Vec<TaskStatus>,
    checkpoint: u64,
    /// When the workers' process started: counters start at zero with each.
    started_at_ms: u64,
}

impl Load {
    /// Four tasks in `parallelism` containers, nothing read yet.
    fn new(parallelism: u32) -> Self {
        let tasks = (0..4)
            .map(|task| TaskStatus {
                task,
                container: task % parallelism,
                ..Default::default()
            })
            .collect();
        Load {
            tasks,
            checkpoint: 10,
            started_at_ms: 1_790_000_000_000,
        }
    }

    /// `seconds` pass in which each task reads `rate` records/s at `cost_ms` each while its
    /// backlog grows by `growth` records/s.
    fn pass(&mut self, seconds: u64, rate: u64, cost_ms: u64, growth: i64) {
        for t in &mut self.tasks {
            t.records_in += rate * seconds;
            t.records_out = t.records_in;
            t.busy_ms += rate * seconds * cost_ms;
            t.lag = (t.lag + growth * seconds as i64).max(0);
        }
        self.checkpoint += 1;
    }

    fn report(&self, deployment: &str) -> JobStatus {
        JobStatus {
            started_at_ms: self.started_at_ms,
            tasks: self.tasks.clone(),
            ..report(deployment, self.checkpoint)
        }
    }
}

/// One look 10 s after the last: the tasks read `rate` records/s each at `cost_ms` a record,
/// their backlogs growing by `growth`/s.
fn look(w: &mut World, load: &mut Load, rate: u64, cost_ms: u64, growth: i64) -> Plan {
    w.now += Duration::from_secs(9);
    load.pass(10, rate, cost_ms, growth);
    let hash = running_hash(w);
    let pods = w.status.deployed.as_ref().unwrap();
    let pods = pods.pods("status.deployed.pods").unwrap().job.parallelism;
    w.step(observed(pods, Some(load.report(&hash))))
}

fn autoscaler(w: &World) -> &AutoscalerStatus {
    w.status.autoscaler.as_ref().expect("status.autoscaler")
}

fn last_message(w: &World) -> &str {
    &autoscaler(w).last_evaluation.as_ref().unwrap().message
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.notes.iter().map(|n| n.reason).collect()
}

/// 4 tasks at 100 records/s and 4 ms a record need 0.4 of a container each: P 2 holds two per
/// container (80%, over the 70% target), and so does P 3 (tasks 0 and 3 share container 0);
/// only P 4 meets the target. The autoscaler waits for a full window of agreeing looks, then
/// picks 4, and the next reconcile rescales through the usual savepoint path.
#[test]
fn the_autoscaler_scales_up_to_the_smallest_p_whose_busiest_container_meets_the_target() {
    let mut w = autoscaled(None, vec![]);
    let mut load = Load::new(2);
    // The first look of a run only starts its counters.
    let p = look(&mut w, &mut load, 100, 4, 0);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert!(w
        .status
        .autoscaler
        .as_ref()
        .unwrap()
        .last_evaluation
        .is_none());
    for seen in [0, 10, 20] {
        let p = look(&mut w, &mut load, 100, 4, 0);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        assert_eq!(
            last_message(&w),
            format!("stabilizing: {seen}s of the 30s window seen in this run; recommends P 4")
        );
        let e = autoscaler(&w).last_evaluation.clone().unwrap();
        assert_eq!(
            (e.recommended, e.predicted_utilization),
            (Some(4), Some(0.4))
        );
        let l = e.load.unwrap();
        assert_eq!(
            (l.input_rate, l.processing_rate, l.backlog),
            (400.0, 400.0, 0)
        );
        assert_eq!(l.busiest_utilization, 0.8);
        assert_eq!(w.desired().job().parallelism, 2);
    }
    let p = look(&mut w, &mut load, 100, 4, 0);
    assert_eq!(reasons(&p), ["Autoscaled"]);
    assert!(
        p.notes[0]
            .message
            .starts_with("P 2 -> 4: for 30s every look called for at least P 4"),
        "{}",
        p.notes[0].message
    );
    assert_eq!(p.requeue, Duration::from_secs(1));
    let state = autoscaler(&w);
    assert_eq!(state.parallelism, Some(4));
    assert_eq!(state.history.len(), 1);
    let d = &state.history[0];
    assert_eq!(
        (d.from, d.to, d.reason.as_str(), d.outcome.as_deref()),
        (2, 4, "ScaleUp", None)
    );
    assert_eq!(d.load.input_rate, 400.0);
    // The chosen P is the desired spec's: an ordinary rescale follows.
    assert_eq!(w.desired().job().parallelism, 4);
    look(&mut w, &mut load, 100, 4, 0);
    assert_eq!(w.op().0, OperationKind::Rescale);
}

/// One look in the window that calls for the current P holds it: P changes only when every
/// recommendation of the window agrees.
#[test]
fn one_dissenting_look_in_the_window_holds_p() {
    let mut w = autoscaled(None, vec![]);
    let mut load = Load::new(2);
    look(&mut w, &mut load, 100, 4, 0);
    look(&mut w, &mut load, 100, 4, 0);
    look(&mut w, &mut load, 50, 4, 0); // 0.2 a task: P 2 meets the target.
    assert_eq!(
        autoscaler(&w).last_evaluation.as_ref().unwrap().recommended,
        Some(2)
    );
    look(&mut w, &mut load, 100, 4, 0);
    let p = look(&mut w, &mut load, 100, 4, 0);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(
        last_message(&w),
        "holding P 2: the window's recommendations range from 2 to 4"
    );
    look(&mut w, &mut load, 100, 4, 0);
    // The dissenting look is now more than a window old.
    let p = look(&mut w, &mut load, 100, 4, 0);
    assert_eq!(reasons(&p), ["Autoscaled"]);
    assert_eq!(autoscaler(&w).parallelism, Some(4));
}

/// A backlog is worked off within catchUpTime on top of the input: 4 tasks reading 50/s at
/// 4 ms (0.2 each) with 5000 records of backlog each need (50 + 5000/100) × 4 ms = 0.4 each.
#[test]
fn a_backlog_to_work_off_raises_the_recommendation() {
    let mut w = autoscaled(None, vec![]);
    let mut load = Load::new(2);
    for t in &mut load.tasks {
        t.lag = 5_000;
    }
    look(&mut w, &mut load, 50, 4, 0);
    look(&mut w, &mut load, 50, 4, 0);
    let e = autoscaler(&w).last_evaluation.clone().unwrap();
    assert_eq!(e.recommended, Some(4), "{e:?}");
    assert_eq!(e.load.unwrap().backlog, 20_000);
}

/// After a change, nothing changes for the cooldown; at its end the change is verified (the
/// job keeps up: `KeptUp`), and a window of low load then scales down, since the backlog
/// does not grow.
#[test]
fn a_change_is_verified_after_its_cooldown_and_a_safe_scale_down_follows() {
    let w = World::new();
    let history = vec![decision(&w, 10, 2, 4, 400.0)];
    let mut w = autoscaled(Some(4), history);
    assert_eq!(w.desired().job().parallelism, 4);
    let mut load = Load::new(4);
    // 10 records/s at 4 ms: 0.04 a task; P 1 holds all four at 16%.
    look(&mut w, &mut load, 10, 4, 0);
    for _ in 0..3 {
        let p = look(&mut w, &mut load, 10, 4, 0);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        assert!(
            last_message(&w).starts_with("cooling down: P changed "),
            "{}",
            last_message(&w)
        );
    }
    // 61 s after the change: verified, and the window (seen since the cooldown began) agrees.
    let p = look(&mut w, &mut load, 10, 4, 0);
    assert_eq!(
        reasons(&p),
        ["AutoscaleVerified", "Autoscaled"],
        "{:?}",
        p.notes
    );
    let state = autoscaler(&w);
    assert_eq!(state.history[0].outcome.as_deref(), Some("KeptUp"));
    let d = &state.history[1];
    assert_eq!((d.from, d.to, d.reason.as_str()), (4, 1, "ScaleDown"));
    assert_eq!(state.parallelism, Some(1));
    assert_eq!(w.desired().job().parallelism, 1);
}

/// A low load whose backlog grows is not a reason to remove containers: the bottleneck is
/// elsewhere, and fewer containers would only fall further behind.
#[test]
fn no_scale_down_while_the_backlog_grows() {
    let mut w = autoscaled(None, vec![]);
    let mut load = Load::new(2);
    for _ in 0..8 {
        let p = look(&mut w, &mut load, 10, 1, 2);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }
    assert_eq!(
        autoscaler(&w).last_evaluation.as_ref().unwrap().recommended,
        Some(1)
    );
    assert!(
        last_message(&w)
            .starts_with("recommends P 1, but the backlog grows (8.0 records/s): not scaling down"),
        "{}",
        last_message(&w)
    );
    assert_eq!(autoscaler(&w).parallelism, None);
    assert_eq!(w.desired().job().parallelism, 2);
}

/// A change from P `from` to `to` made 10 s before the world's clock (at 400 records/s), after
/// which the tasks read 100 records/s each at `cost_ms` while their backlogs grow by 20/s: quiet
/// through the cooldown, then rolled back on the first look after it.
fn rolled_back_after_cooldown(from: u32, to: u32, cost_ms: u64) -> (World, Plan) {
    let w = World::new();
    let history = vec![decision(&w, 10, from, to, 400.0)];
    let mut w = autoscaled(Some(to), history);
    let mut load = Load::new(to);
    for _ in 0..4 {
        let p = look(&mut w, &mut load, 100, cost_ms, 20);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }
    let p = look(&mut w, &mut load, 100, cost_ms, 20);
    assert_eq!(reasons(&p), ["AutoscaleRolledBack"], "{:?}", p.notes);
    (w, p)
}

/// A scale-down after which the backlog grows is rolled back at the end of its cooldown, and
/// scale-downs wait four cooldowns.
#[test]
fn a_scale_down_that_does_not_keep_up_is_rolled_back() {
    let (w, p) = rolled_back_after_cooldown(2, 1, 2);
    assert!(p.notes[0].warning);
    assert!(
        p.notes[0].message.contains(
            "the scale-down from P 2 to 1 does not keep up: the backlog grows by 80.0 records/s"
        ),
        "{}",
        p.notes[0].message
    );
    let state = autoscaler(&w);
    assert_eq!(state.parallelism, Some(2));
    assert_eq!(state.history[0].outcome.as_deref(), Some("RolledBack"));
    let back = &state.history[1];
    assert_eq!(
        (back.from, back.to, back.reason.as_str()),
        (1, 2, "RollBack")
    );
    let until: Timestamp = state
        .scale_down_blocked_until
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        until,
        w.now - Duration::from_secs(1) + Duration::from_secs(240)
    );
    assert_eq!(w.desired().job().parallelism, 2);
}

/// A scale-up that did not raise the processing rate, while the job still does not keep up,
/// is rolled back (the workers are not the bottleneck), and further scale-ups wait.
#[test]
fn an_ineffective_scale_up_is_rolled_back_and_scale_ups_wait() {
    let (w, p) = rolled_back_after_cooldown(2, 4, 4);
    assert!(
        p.notes[0]
            .message
            .contains("did not raise the processing rate (400 -> 400 records/s)"),
        "{}",
        p.notes[0].message
    );
    let state = autoscaler(&w);
    assert_eq!(state.parallelism, Some(2));
    assert!(state.scale_up_blocked_until.is_some());
    assert_eq!(w.desired().job().parallelism, 2);
}

/// While scale-ups are blocked, a window that calls for more containers says so and waits.
#[test]
fn a_blocked_direction_holds_p_and_says_until_when() {
    let mut w = autoscaled(None, vec![]);
    w.status.autoscaler.as_mut().unwrap().scale_up_blocked_until =
        Some((w.now + Duration::from_secs(3600)).to_string());
    let mut load = Load::new(2);
    for _ in 0..6 {
        let p = look(&mut w, &mut load, 100, 4, 0);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }
    assert!(
        last_message(&w).starts_with("recommends P 4, but scale-ups are blocked until "),
        "{}",
        last_message(&w)
    );
    assert_eq!(w.desired().job().parallelism, 2);
}

/// A rescale the operator rolled back (its pods never committed) is the autoscaler's failure:
/// P goes back to what runs, the decision is `Failed`, and that direction waits.
#[test]
fn a_rescale_that_failed_returns_p_to_what_runs() {
    let w = World::new();
    let history = vec![decision(&w, 100, 2, 4, 400.0)];
    let mut w = autoscaled(None, history);
    w.status.autoscaler.as_mut().unwrap().parallelism = Some(4);
    w.status.failed_hash = Some(w.desired().hash);
    let mut load = Load::new(2);
    let p = look(&mut w, &mut load, 100, 4, 0);
    assert_eq!(reasons(&p), ["AutoscaleFailed"], "{:?}", p.notes);
    let state = autoscaler(&w);
    assert_eq!(state.parallelism, Some(2));
    assert_eq!(state.history[0].outcome.as_deref(), Some("Failed"));
    assert!(state.scale_up_blocked_until.is_some());
    assert!(w.status.operation.is_none());
    assert_eq!(w.status.failed_hash, None, "P 4 may be tried again later");
    assert_eq!(w.desired().job().parallelism, 2);
}

/// Status keeps the last ten decisions.
#[test]
fn the_history_is_bounded() {
    let w = World::new();
    let mut history: Vec<_> = (0..AUTOSCALER_HISTORY as u64)
        .map(|i| decision(&w, 3600 - i, 2, 2, 0.0))
        .collect();
    for d in &mut history {
        d.outcome = Some("KeptUp".into());
    }
    let mut w = autoscaled(Some(2), history);
    let mut load = Load::new(2);
    for _ in 0..5 {
        look(&mut w, &mut load, 100, 4, 0);
    }
    let state = autoscaler(&w);
    assert_eq!(state.history.len(), AUTOSCALER_HISTORY);
    assert_eq!(state.history.last().unwrap().to, 4);
    assert_eq!(state.history[0].message, "an earlier decision");
}

/// Without `spec.autoscaler` the job runs `job.parallelism` again and status forgets the
/// autoscaler.
#[test]
fn removing_the_autoscaler_returns_to_job_parallelism() {
    let mut w = autoscaled(Some(4), vec![]);
    let mut load = Load::new(4);
    look(&mut w, &mut load, 100, 4, 0);
    assert!(w.load.is_some());
    w.sj.spec.autoscaler = None;
    look(&mut w, &mut load, 100, 4, 0);
    assert_eq!(w.status.autoscaler, None);
    assert_eq!(w.load, None);
    assert_eq!(w.desired().job().parallelism, 2);
    assert_eq!(w.op().0, OperationKind::Rescale);
}

/// Counters that start again (a new run of the workers) are not compared with the old ones:
/// that look only starts the new run's counters.
#[test]
fn a_new_run_starts_its_counters_again() {
    let mut w = autoscaled(None, vec![]);
    let mut load = Load::new(2);
    look(&mut w, &mut load, 100, 4, 0);
    look(&mut w, &mut load, 100, 4, 0);
    let before = autoscaler(&w).last_evaluation.clone();
    assert!(before.is_some());
    let mut restarted = Load::new(2);
    restarted.checkpoint = load.checkpoint;
    restarted.started_at_ms = load.started_at_ms + 40_000;
    look(&mut w, &mut restarted, 100, 4, 0);
    assert_eq!(
        autoscaler(&w).last_evaluation,
        before,
        "no evaluation across runs"
    );
    look(&mut w, &mut restarted, 100, 4, 0);
    assert!(
        last_message(&w).starts_with("stabilizing: 0s"),
        "{}",
        last_message(&w)
    );
}

/// Before its first decision the autoscaler starts from `job.parallelism`, within its bounds.
#[test]
fn the_starting_p_is_kept_within_the_bounds() {
    let mut w = World::new();
    assert_eq!(w.desired().job().parallelism, 2);
    w.sj.spec.autoscaler = Some(AutoscalerSettings {
        min_parallelism: Some(3),
        ..Default::default()
    });
    assert_eq!(w.desired().job().parallelism, 3);
}

//! The conditions, computed by the plan from its new status and the observation: `Ready`,
//! `Progressing`, `Degraded` and `CheckpointsHealthy` always, `RecoveryObjectiveMet` when the
//! deployed job has a recovery-time objective, and `StandbyReady` ([`super::standby`]) when it
//! has warm standbys.
//! Transition times are kept when a condition's status did not change, so `kubectl describe`
//! shows since when a job has been Ready, not since the last reconcile.

use std::time::Duration;

use cairn_contract::health::HealthRule;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{elapsed, standby, Observed};
use crate::crd::{Phase, Step, StreamJobStatus};

/// Conditions the operator maintains.
pub const READY: &str = "Ready";
/// An operation (or the first deployment) is under way.
pub const PROGRESSING: &str = "Progressing";
/// Something needs attention.
pub const DEGRADED: &str = "Degraded";
/// Checkpoints commit on time.
pub const CHECKPOINTS_HEALTHY: &str = "CheckpointsHealthy";
/// The job predicts a recovery within its recovery-time objective (`targetRecoveryTime`); only
/// for jobs with one.
pub const RECOVERY_OBJECTIVE_MET: &str = "RecoveryObjectiveMet";
/// Every container 1..P-1 has a warm standby holding a checkpoint; only for jobs with
/// `standby: true`.
pub const STANDBY_READY: &str = standby::STANDBY_READY;

/// Reason of the conditions of a spec with validation problems.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Reason of the conditions of a spec the operator's policy refuses.
pub const POLICY_VIOLATION: &str = "PolicyViolation";

/// Why the desired spec is not deployed: a `Degraded` reason, and `Ready`'s too while nothing
/// is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// [`INVALID_SPEC`] or [`POLICY_VIOLATION`].
    pub reason: &'static str,
    /// Every problem, each naming its field and the fix.
    pub message: &'a str,
}

/// Inputs beyond the status.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Observation.
    pub observed: &'a Observed,
    /// Checkpoint interval of the deployed job for the health rule
    /// ([`cairn_contract::CheckpointSpec::health_interval`]).
    pub checkpoint_interval: Duration,
    /// The deployed job has a recovery-time objective (`checkpoint.targetRecoveryTime`).
    pub recovery_objective: bool,
    /// The deployed job's parallelism when it has warm standbys (`standby: true`).
    pub standby: Option<u32>,
    /// The desired spec failed before and was rolled back.
    pub desired_failed_before: bool,
    /// The desired spec is refused (invalid, or against the operator's policy).
    pub refused: Option<Refusal<'a>>,
    /// Now.
    pub now: Timestamp,
}

/// Sets `status.conditions` from the rest of the status.
pub fn update(status: &mut StreamJobStatus, facts: &Facts) {
    let generation = status.observed_generation;
    let new = compute(status, facts);
    let old = std::mem::take(&mut status.conditions);
    status.conditions = new
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let state = match ok {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            };
            let since = old
                .iter()
                .find(|c| c.type_ == type_ && c.status == state)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(facts.now));
            Condition {
                type_: type_.into(),
                status: state.into(),
                reason: reason.into(),
                message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
}

/// One condition: type, status (`None`: Unknown), reason, message.
pub(super) type Row = (&'static str, Option<bool>, &'static str, String);

fn compute(status: &StreamJobStatus, facts: &Facts) -> Vec<Row> {
    let phase = status.phase;
    let checkpoint_age = status
        .last_checkpoint
        .as_ref()
        .and_then(|c| c.time.parse::<Timestamp>().ok())
        .map(|t| elapsed(t, facts.now));
    // The workers' rule (their `health: degraded`), so the condition and the job agree.
    let limit = HealthRule {
        interval: facts.checkpoint_interval,
        timeout: Duration::ZERO,
    }
    .late_after();
    let job_answers = facts.observed.report.is_some();
    let checkpoints: Row = match (phase, job_answers, checkpoint_age) {
        (Some(Phase::Suspended), _, _) => (CHECKPOINTS_HEALTHY, None, "Suspended", "no pods run".into()),
        (_, false, _) => (CHECKPOINTS_HEALTHY, None, "JobUnreachable", "the job's control API does not answer".into()),
        // Nothing is expected to commit after the final checkpoint.
        (Some(Phase::Finished), true, _) => (CHECKPOINTS_HEALTHY, Some(true), "Finished", "the input ended and the final checkpoint committed".into()),
        (_, true, Some(age)) if age <= limit => (
            CHECKPOINTS_HEALTHY,
            Some(true),
            "Committing",
            format!("last checkpoint {}s ago (interval {}s)", age.as_secs(), facts.checkpoint_interval.as_secs()),
        ),
        (_, true, age) => (
            CHECKPOINTS_HEALTHY,
            Some(false),
            "CheckpointsLate",
            match age {
                Some(age) => format!("no checkpoint committed for {}s (interval {}s); see the worker logs and status.lastError", age.as_secs(), facts.checkpoint_interval.as_secs()),
                None => "no checkpoint committed yet".into(),
            },
        ),
    };
    let healthy = checkpoints.1 == Some(true);
    let ready: Row = match (phase, facts.refused) {
        // Refused before anything was deployed: say why, not just "Failed".
        (_, Some(refusal)) if status.deployed.is_none() => {
            (READY, Some(false), refusal.reason, refusal.message.into())
        }
        (Some(Phase::Running), _) if healthy => (
            READY,
            Some(true),
            "Running",
            "the job runs and checkpoints commit".into(),
        ),
        (Some(Phase::Running), _) => (READY, Some(false), "CheckpointsLate", checkpoints.3.clone()),
        (Some(Phase::Finished), _) => (
            READY,
            Some(true),
            "Finished",
            "the input ended and the final checkpoint committed; the pods hold the state".into(),
        ),
        (Some(p), _) => (
            READY,
            Some(false),
            p.as_str(),
            format!("phase {}", p.as_str()),
        ),
        (None, _) => (READY, Some(false), "Pending", "not reconciled yet".into()),
    };
    let progressing: Row = match (&status.operation, phase) {
        (Some(op), _) => (
            PROGRESSING,
            Some(true),
            op.step.as_str(),
            format!(
                "{}: {}",
                op.kind.as_str(),
                op.message.clone().unwrap_or_default()
            ),
        ),
        (None, Some(Phase::Deploying)) => (
            PROGRESSING,
            Some(true),
            "Deploying",
            "waiting for the first committed checkpoint".into(),
        ),
        _ => (
            PROGRESSING,
            Some(false),
            "Idle",
            "no operation in flight".into(),
        ),
    };
    let degraded: Row = if let Some(refusal) = facts.refused {
        (DEGRADED, Some(true), refusal.reason, refusal.message.into())
    } else if phase == Some(Phase::Failed) {
        (
            DEGRADED,
            Some(true),
            "Failed",
            status.last_error.clone().unwrap_or_default(),
        )
    } else if let (true, Some(why)) = (facts.desired_failed_before, &status.not_restorable) {
        (DEGRADED, Some(true), "NotRestorable", why.clone())
    } else if facts.desired_failed_before {
        (DEGRADED, Some(true), "RolledBack", "the current spec failed to deploy and the job was rolled back to the last good spec; change the spec to try again".into())
    } else if let Some(op) = status.operation.as_ref().filter(|o| o.attempts > 0) {
        let reason = match op.step {
            Step::CheckingRestore => "RestoreCheckFailing",
            Step::PurgingStore => "StorePurgeFailing",
            _ => "SavepointFailing",
        };
        (
            DEGRADED,
            Some(true),
            reason,
            op.message.clone().unwrap_or_default(),
        )
    } else if let Some(failing) = &facts.observed.workers.failing {
        (DEGRADED, Some(true), "WorkersFailing", failing.clone())
    } else if let Some(d) = status.disposal.as_ref().filter(|d| d.attempts > 0) {
        (
            DEGRADED,
            Some(true),
            "SavepointDisposalFailing",
            d.message.clone().unwrap_or_default(),
        )
    } else {
        (
            DEGRADED,
            Some(false),
            "Healthy",
            "nothing needs attention".into(),
        )
    };
    let mut rows = vec![ready, progressing, degraded, checkpoints];
    rows.extend(recovery_objective(phase, facts));
    rows.extend(standby::standby_ready(phase, facts));
    rows
}

/// What a condition read from the job's own report rests on: the report, or the Unknown row
/// `condition` has without one (suspended: no pods; or the control API does not answer).
pub(super) fn job_report<'a>(
    condition: &'static str,
    phase: Option<Phase>,
    facts: &'a Facts,
) -> Result<&'a cairn_contract::control::JobStatus, Row> {
    if phase == Some(Phase::Suspended) {
        return Err((condition, None, "Suspended", "no pods run".into()));
    }
    facts.observed.report.as_ref().ok_or_else(|| {
        (
            condition,
            None,
            "JobUnreachable",
            "the job's control API does not answer".into(),
        )
    })
}

/// `RecoveryObjectiveMet`, for a job with an objective; none for one without, or while a job
/// that answers reports none (a worker that does not keep one).
fn recovery_objective(phase: Option<Phase>, facts: &Facts) -> Option<Row> {
    if !facts.recovery_objective {
        return None;
    }
    let row = |ok, reason, message| Some((RECOVERY_OBJECTIVE_MET, ok, reason, message));
    let report = match job_report(RECOVERY_OBJECTIVE_MET, phase, facts) {
        Ok(report) => report,
        Err(unknown) => return Some(unknown),
    };
    let objective = report.recovery_objective.as_ref()?;
    let Some(predicted) = &objective.predicted else {
        let why = objective
            .problem
            .clone()
            .unwrap_or_else(|| "no checkpoint committed yet".into());
        return row(None, "NotPredictedYet", why);
    };
    let prediction = format!(
        "predicted recovery {} (detect {} + restore {} + replay {})",
        tenths(predicted.total_ms),
        tenths(predicted.detect_ms),
        tenths(predicted.restore_ms),
        tenths(predicted.replay_ms),
    );
    let target = format!(
        "the {} target at a {} checkpoint interval",
        seconds(objective.target_ms),
        seconds(objective.interval_ms)
    );
    // `met()` is `Some` here: there is a prediction.
    if objective.met() == Some(true) {
        row(
            Some(true),
            "WithinTarget",
            format!("{prediction} within {target}"),
        )
    } else {
        row(
            Some(false),
            "OverTarget",
            match &objective.problem {
                Some(problem) => format!("{prediction} over {target}: {problem}"),
                None => format!("{prediction} over {target}"),
            },
        )
    }
}

/// Milliseconds as seconds rounded to one decimal: `9.5s`.
fn tenths(ms: u64) -> String {
    let tenths = ms.saturating_add(50) / 100;
    format!("{}.{}s", tenths / 10, tenths % 10)
}

/// Milliseconds as whole seconds when they are (`30s`), else with one decimal (`12.5s`).
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        tenths(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CheckpointInfo;
    use crate::lifecycle::Workers;
    use cairn_contract::control::{PredictedRecovery, RecoveryObjective};

    const NOW: &str = "2026-12-03T12:00:00Z";

    fn running_with_checkpoint_age(age_s: i64) -> StreamJobStatus {
        let now: Timestamp = NOW.parse().unwrap();
        let time = now - jiff::SignedDuration::from_secs(age_s);
        StreamJobStatus {
            phase: Some(Phase::Running),
            last_checkpoint: Some(CheckpointInfo {
                id: 7,
                time: time.to_string(),
                duration_ms: 10,
                bytes: 1,
                uploaded_bytes: 1,
            }),
            ..Default::default()
        }
    }

    fn answering() -> Observed {
        Observed {
            workers: Workers {
                stateful_set: true,
                pods: 2,
                ..Default::default()
            },
            report: Some(Default::default()),
            ..Default::default()
        }
    }

    fn facts<'a>(observed: &'a Observed, interval_s: u64, now: &str) -> Facts<'a> {
        Facts {
            observed,
            checkpoint_interval: Duration::from_secs(interval_s),
            recovery_objective: false,
            standby: None,
            desired_failed_before: false,
            refused: None,
            now: now.parse().unwrap(),
        }
    }

    fn condition<'a>(status: &'a StreamJobStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// The shared health rule decides: late after max(3 × interval, 30 s), the same as the
    /// worker's `degraded`.
    #[test]
    fn checkpoints_are_late_by_the_workers_rule() {
        for (interval, age, late) in [
            (10, 30, false),
            (10, 31, true),
            (1, 29, false),
            (60, 179, false),
            (60, 181, true),
        ] {
            let mut status = running_with_checkpoint_age(age);
            let observed = answering();
            update(&mut status, &facts(&observed, interval, NOW));
            let checkpoints = condition(&status, CHECKPOINTS_HEALTHY);
            let ready = condition(&status, READY);
            let expected = if late {
                "CheckpointsLate"
            } else {
                "Committing"
            };
            assert_eq!(
                checkpoints.reason, expected,
                "interval {interval}s, age {age}s"
            );
            assert_eq!(ready.status, if late { "False" } else { "True" });
        }
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut status = running_with_checkpoint_age(5);
        let observed = answering();
        update(&mut status, &facts(&observed, 10, NOW));
        let first = condition(&status, READY).last_transition_time.clone();
        update(&mut status, &facts(&observed, 10, "2026-12-03T12:00:20Z"));
        assert_eq!(condition(&status, READY).last_transition_time, first);
        // Late now: Ready turns False, with a new transition time.
        let later = "2026-12-03T12:05:00Z";
        update(&mut status, &facts(&observed, 10, later));
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.0),
            ("False", later.parse().unwrap())
        );
    }

    #[test]
    fn unreachable_suspended_and_refused_jobs_say_why() {
        let mut status = running_with_checkpoint_age(5);
        let nothing = Observed::default();
        update(&mut status, &facts(&nothing, 10, NOW));
        assert_eq!(
            condition(&status, CHECKPOINTS_HEALTHY).reason,
            "JobUnreachable"
        );
        assert_eq!(condition(&status, CHECKPOINTS_HEALTHY).status, "Unknown");

        status.phase = Some(Phase::Suspended);
        update(&mut status, &facts(&nothing, 10, NOW));
        assert_eq!(condition(&status, CHECKPOINTS_HEALTHY).reason, "Suspended");

        let mut fresh = StreamJobStatus::default();
        let refused = Facts {
            refused: Some(Refusal {
                reason: INVALID_SPEC,
                message: "spec.job.parallelism: must be at least 1",
            }),
            ..facts(&nothing, 10, NOW)
        };
        update(&mut fresh, &refused);
        let ready = condition(&fresh, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", INVALID_SPEC)
        );
        let degraded = condition(&fresh, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.message.as_str()),
            ("True", "spec.job.parallelism: must be at least 1")
        );
    }

    /// A job answering with `objective` in its report.
    fn reporting(objective: Option<RecoveryObjective>) -> Observed {
        let mut observed = answering();
        observed.report.as_mut().unwrap().recovery_objective = objective;
        observed
    }

    /// Target 30 s at a 12 s interval, with a prediction of `total_ms` when given.
    fn objective(total_ms: Option<u64>, problem: Option<&str>) -> RecoveryObjective {
        RecoveryObjective {
            target_ms: 30_000,
            interval_ms: 12_000,
            predicted: total_ms.map(|total_ms| PredictedRecovery {
                detect_ms: 2_000,
                restore_ms: 1_500,
                replay_ms: total_ms - 3_500,
                total_ms,
            }),
            problem: problem.map(Into::into),
        }
    }

    fn with_objective<'a>(observed: &'a Observed) -> Facts<'a> {
        Facts {
            recovery_objective: true,
            ..facts(observed, 600, NOW)
        }
    }

    /// (status, reason, message) of `RecoveryObjectiveMet`, when there is one.
    fn objective_condition(status: &StreamJobStatus) -> Option<(&str, &str, &str)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == RECOVERY_OBJECTIVE_MET)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    }

    #[test]
    fn a_job_without_an_objective_has_the_four_conditions_only() {
        let types = |status: &StreamJobStatus| -> Vec<String> {
            status.conditions.iter().map(|c| c.type_.clone()).collect()
        };
        let four = [READY, PROGRESSING, DEGRADED, CHECKPOINTS_HEALTHY];
        // No objective in the spec: none, whatever the job reports.
        let mut status = running_with_checkpoint_age(5);
        let observed = reporting(Some(objective(Some(9_500), None)));
        update(&mut status, &facts(&observed, 10, NOW));
        assert_eq!(types(&status), four);
        // An objective in the spec, but the job answers without one (a worker that keeps none).
        let observed = reporting(None);
        update(&mut status, &with_objective(&observed));
        assert_eq!(types(&status), four);
    }

    #[test]
    fn a_prediction_within_the_target_meets_the_objective() {
        let mut status = running_with_checkpoint_age(5);
        let observed = reporting(Some(objective(Some(9_500), None)));
        update(&mut status, &with_objective(&observed));
        assert_eq!(
            objective_condition(&status),
            Some((
                "True",
                "WithinTarget",
                "predicted recovery 9.5s (detect 2.0s + restore 1.5s + replay 6.0s) within the 30s target at a 12s checkpoint interval"
            ))
        );
        assert_eq!(status.conditions.len(), 5);
        // A prediction exactly at the target meets it.
        let observed = reporting(Some(objective(Some(30_000), None)));
        update(&mut status, &with_objective(&observed));
        assert_eq!(objective_condition(&status).unwrap().0, "True");
    }

    #[test]
    fn a_prediction_over_the_target_says_why() {
        let mut status = running_with_checkpoint_age(5);
        let problem = "the busiest container is busy 98% of the time: raise the target, lower minInterval, or add parallelism";
        let mut over = objective(Some(41_250), Some(problem));
        over.interval_ms = 1_000;
        let observed = reporting(Some(over));
        update(&mut status, &with_objective(&observed));
        assert_eq!(
            objective_condition(&status),
            Some((
                "False",
                "OverTarget",
                "predicted recovery 41.3s (detect 2.0s + restore 1.5s + replay 37.8s) over the 30s target at a 1s checkpoint interval: the busiest container is busy 98% of the time: raise the target, lower minInterval, or add parallelism"
            ))
        );
        // Without a problem text, the numbers alone.
        let observed = reporting(Some(objective(Some(31_000), None)));
        update(&mut status, &with_objective(&observed));
        assert_eq!(
            objective_condition(&status),
            Some((
                "False",
                "OverTarget",
                "predicted recovery 31.0s (detect 2.0s + restore 1.5s + replay 27.5s) over the 30s target at a 12s checkpoint interval"
            ))
        );
    }

    #[test]
    fn no_prediction_yet_is_unknown() {
        let mut status = running_with_checkpoint_age(5);
        let observed = reporting(Some(objective(None, None)));
        update(&mut status, &with_objective(&observed));
        assert_eq!(
            objective_condition(&status),
            Some(("Unknown", "NotPredictedYet", "no checkpoint committed yet"))
        );
        let observed = reporting(Some(objective(
            None,
            Some("no checkpoint has committed yet: nothing measured to predict from"),
        )));
        update(&mut status, &with_objective(&observed));
        assert_eq!(
            objective_condition(&status),
            Some((
                "Unknown",
                "NotPredictedYet",
                "no checkpoint has committed yet: nothing measured to predict from"
            ))
        );
    }

    #[test]
    fn an_unreachable_or_suspended_job_has_an_unknown_objective() {
        let mut status = running_with_checkpoint_age(5);
        let nothing = Observed::default();
        update(&mut status, &with_objective(&nothing));
        assert_eq!(
            objective_condition(&status),
            Some((
                "Unknown",
                "JobUnreachable",
                "the job's control API does not answer"
            ))
        );
        status.phase = Some(Phase::Suspended);
        update(&mut status, &with_objective(&nothing));
        assert_eq!(
            objective_condition(&status),
            Some(("Unknown", "Suspended", "no pods run"))
        );
    }

    #[test]
    fn the_objective_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut status = running_with_checkpoint_age(5);
        let observed = reporting(Some(objective(Some(9_500), None)));
        update(&mut status, &with_objective(&observed));
        let since = |status: &StreamJobStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == RECOVERY_OBJECTIVE_MET)
                .unwrap()
                .last_transition_time
                .0
        };
        let first = since(&status);
        let observed = reporting(Some(objective(Some(12_000), None)));
        let later = Facts {
            now: "2026-12-03T12:00:20Z".parse().unwrap(),
            ..with_objective(&observed)
        };
        update(&mut status, &later);
        assert_eq!(since(&status), first);
        let observed = reporting(Some(objective(Some(40_000), None)));
        let over = Facts {
            now: "2026-12-03T12:00:30Z".parse().unwrap(),
            ..with_objective(&observed)
        };
        update(&mut status, &over);
        assert_eq!(since(&status), over.now);
    }

    #[test]
    fn durations_in_messages_are_rounded_to_tenths() {
        assert_eq!(tenths(0), "0.0s");
        assert_eq!(tenths(9_549), "9.5s");
        assert_eq!(tenths(9_550), "9.6s");
        assert_eq!(tenths(59_999), "60.0s");
        assert_eq!(seconds(30_000), "30s");
        assert_eq!(seconds(12_340), "12.3s");
        assert!(tenths(u64::MAX).ends_with('s'));
    }
}

//! The four conditions, computed by the plan from its new status and the observation.
//! Transition times are kept when a condition's status did not change, so `kubectl describe`
//! shows since when a job has been Ready, not since the last reconcile.

use std::time::Duration;

use cairn_contract::health::HealthRule;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{elapsed, Observed};
use crate::crd::{Phase, StreamJobStatus};

/// Conditions the operator maintains.
pub const READY: &str = "Ready";
/// An operation (or the first deployment) is under way.
pub const PROGRESSING: &str = "Progressing";
/// Something needs attention.
pub const DEGRADED: &str = "Degraded";
/// Checkpoints commit on time.
pub const CHECKPOINTS_HEALTHY: &str = "CheckpointsHealthy";

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
    /// Checkpoint interval of the deployed job.
    pub checkpoint_interval: Duration,
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

type Row = (&'static str, Option<bool>, &'static str, String);

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
    } else if facts.desired_failed_before {
        (DEGRADED, Some(true), "RolledBack", "the current spec failed to deploy and the job was rolled back to the last good spec; change the spec to try again".into())
    } else if let Some(op) = status.operation.as_ref().filter(|o| o.attempts > 0) {
        (
            DEGRADED,
            Some(true),
            "SavepointFailing",
            op.message.clone().unwrap_or_default(),
        )
    } else if let Some(failing) = &facts.observed.workers.failing {
        (DEGRADED, Some(true), "WorkersFailing", failing.clone())
    } else {
        (
            DEGRADED,
            Some(false),
            "Healthy",
            "nothing needs attention".into(),
        )
    };
    vec![ready, progressing, degraded, checkpoints]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CheckpointInfo;
    use crate::lifecycle::Workers;

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
            operation: None,
        }
    }

    fn facts<'a>(observed: &'a Observed, interval_s: u64, now: &str) -> Facts<'a> {
        Facts {
            observed,
            checkpoint_interval: Duration::from_secs(interval_s),
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
}

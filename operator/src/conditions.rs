//! Step 5 of the pipeline, the pure half: the four conditions computed from the new status and
//! the observation. Transition times are kept when a condition's status did not change, so
//! `kubectl describe` shows since when a job has been Ready, not since the last reconcile.

use std::time::Duration;

use cairn_contract::health::HealthRule;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{Phase, StreamJobStatus};
use crate::lifecycle::{elapsed, Observed};

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

//! Warm standbys (`standby: true`) in status: `status.standbys`, mirrored from pod 0's
//! `/v1/status`, and the `StandbyReady` condition, which says whether every container that can
//! have one (1..P-1) has a standby holding a checkpoint, i.e. whether a failure of any of them is
//! taken over at once rather than restored.

use cairn_contract::control::JobStatus;

use super::conditions::{job_report, Facts, Row};
use crate::crd::{Phase, StandbyInfo};

/// Condition type: every container 1..P-1 has a standby holding a checkpoint; only for jobs with
/// `standby: true`.
pub const STANDBY_READY: &str = "StandbyReady";

/// The report's standbys as status shows them, in container order (so that a job listing them in
/// another order does not rewrite the status).
pub fn mirror(report: &JobStatus) -> Vec<StandbyInfo> {
    let mut standbys: Vec<StandbyInfo> = report
        .standbys
        .iter()
        .map(|s| StandbyInfo {
            container: s.container,
            pod: s.host.clone(),
            checkpoint: s.checkpoint,
        })
        .collect();
    standbys.sort_by(|a, b| (a.container, &a.pod).cmp(&(b.container, &b.pod)));
    standbys
}

/// `StandbyReady` of a deployed job with standbys and `parallelism` containers
/// ([`Facts::standby`]); none for a job without.
pub(super) fn standby_ready(phase: Option<Phase>, facts: &Facts) -> Option<Row> {
    let parallelism = facts.standby?;
    let row = |ok, reason, message| Some((STANDBY_READY, ok, reason, message));
    let report = match job_report(STANDBY_READY, phase, facts) {
        Ok(report) => report,
        Err(unknown) => return Some(unknown),
    };
    let standbys = mirror(report);
    let mut holding = Vec::new();
    let mut catching_up = Vec::new();
    let mut missing = Vec::new();
    for container in 1..parallelism {
        let mine: Vec<&StandbyInfo> = standbys
            .iter()
            .filter(|s| s.container == container)
            .collect();
        match mine.iter().find_map(|s| Some((s, s.checkpoint?))) {
            Some((s, checkpoint)) => {
                holding.push(format!("{container}: {} at checkpoint {checkpoint}", s.pod))
            }
            None => match mine.first() {
                Some(s) => catching_up.push(format!("{container} ({})", s.pod)),
                None => missing.push(container.to_string()),
            },
        }
    }
    if missing.is_empty() && catching_up.is_empty() {
        return row(
            Some(true),
            "StandingBy",
            format!(
                "every container from 1 to {} has a standby holding a checkpoint ({})",
                parallelism.saturating_sub(1),
                holding.join("; ")
            ),
        );
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "no standby connected for container {}: its standby pod is starting, pending, or failing (see the pods of StatefulSet <job>-standby and of the job), or, after a takeover, the restarted pod is not back yet",
            missing.join(", ")
        ));
    }
    if !catching_up.is_empty() {
        problems.push(format!(
            "the standby of container {} holds no committed checkpoint yet (it follows the next commit)",
            catching_up.join(", ")
        ));
    }
    let reason = if missing.is_empty() {
        "StandbyCatchingUp"
    } else {
        "StandbyMissing"
    };
    row(Some(false), reason, problems.join("; "))
}

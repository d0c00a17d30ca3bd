//! The autoscaler's decisions (docs/autoscaling.md): each look at a running job is evaluated
//! ([`super::load_model`]); P changes only when every recommendation of the stabilization window
//! agrees, never within the cooldown of the last change, and a scale-down only while the backlog
//! does not grow. At the end of the cooldown the change is verified: a scale-down after which
//! the job does not keep up, and a scale-up that did not raise the processing rate, are rolled
//! back. Every change is an event and an entry of `status.autoscaler.history` with the load
//! behind it.
//!
//! The chosen P lives in `status.autoscaler.parallelism` and replaces `job.parallelism` in the
//! desired spec ([`with_autoscaled_parallelism`]), so a change of P is an ordinary rescale
//! (savepoint, new pods, restore), rolled back by the usual rules if it never commits.
//!
//! The looks themselves (per-task counters) and the window's recommendations are kept in the
//! operator's memory ([`LoadMemory`]), not in status: they are per task and change every look.
//! An operator restart forgets them, which only delays the next decision by a window.

use std::time::Duration;

use jiff::Timestamp;

use super::load_model::{evaluate, Evaluation, Sample};
use super::plan::{elapsed, Stepper};
use crate::crd::{AutoscalerStatus, LoadEvaluation, Phase, ScalingDecision, StreamJobStatus};
use crate::validate::{AutoscalerPolicy, ValidatedJob};
use cairn_contract::control::RunState;

/// Decisions kept in `status.autoscaler.history`.
pub const HISTORY: usize = 10;
/// Shortest time between two looks that are compared: over less, a rate is mostly noise.
const MIN_LOOK_SPACING: Duration = Duration::from_secs(5);
/// A rolled-back change blocks its direction for this many cooldowns.
const BLOCK_COOLDOWNS: u32 = 4;
/// A scale-up whose processing rate rose by less than this factor did not help.
const EFFECTIVE_SCALE_UP: f64 = 1.1;

/// What the autoscaler remembers of a job between reconciles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadMemory {
    /// The last look.
    sample: Option<Sample>,
    /// The recommendations of the stabilization window, oldest first.
    recommendations: Vec<(Timestamp, u32)>,
    /// The first recommendation of this run: the window is full once it is a window old.
    since: Option<Timestamp>,
}

/// `desired` with the autoscaler's P instead of `job.parallelism`, kept within its bounds.
pub fn with_autoscaled_parallelism(
    desired: ValidatedJob,
    status: &StreamJobStatus,
) -> ValidatedJob {
    let Some(policy) = &desired.autoscaler else {
        return desired;
    };
    // Before its first decision the autoscaler starts from job.parallelism, within its bounds.
    let chosen = status.autoscaler.as_ref().and_then(|a| a.parallelism);
    let p = chosen
        .unwrap_or(desired.job().parallelism)
        .clamp(policy.min, policy.max);
    if p == desired.job().parallelism {
        desired
    } else {
        desired.with_parallelism(p)
    }
}

impl Stepper<'_> {
    /// One look at a running job: evaluate its load, and change P when that is called for.
    pub(super) fn autoscale(&mut self) {
        let input = self.input;
        let Some(policy) = &input.desired.autoscaler else {
            self.status.autoscaler = None;
            self.load = None;
            return;
        };
        if input.deleting
            || self.status.operation.is_some()
            || self.status.phase != Some(Phase::Running)
        {
            return;
        }
        let deployed_p = self.deployed_job().parallelism;
        let failed_before = self.status.failed_hash.as_deref() == Some(&input.desired.hash);
        let state = self.status.autoscaler.get_or_insert_default();
        if failed_before && state.parallelism.is_some_and(|p| p != deployed_p) {
            return self.rescale_failed(policy, deployed_p);
        }
        let Some(deployed) = &self.status.deployed else {
            return;
        };
        let Some(report) = input.observed.report.as_ref().filter(|r| {
            r.deployment.as_deref() == Some(deployed.hash.as_str()) && r.state == RunState::Running
        }) else {
            return;
        };
        let now = input.now;
        let partitions = self.deployed_job().input.partitions();
        let look = Sample::of(report, partitions, now);
        let memory = self.load.get_or_insert_default();
        let before = match memory.sample.take() {
            Some(before) if before.continued_by(&look) => before,
            _ => {
                // A new run (or the first look): its counters start here.
                *memory = LoadMemory {
                    sample: Some(look),
                    ..LoadMemory::default()
                };
                return;
            }
        };
        if elapsed(before.at, now) < MIN_LOOK_SPACING {
            memory.sample = Some(before);
            return;
        }
        let evaluation = evaluate(policy, partitions, &before, &look);
        memory.sample = Some(look);
        let evaluation = match evaluation {
            Ok(e) => e,
            Err(why) => return self.evaluated(None, why),
        };
        if self.verify_last_change(policy, &evaluation, deployed_p) {
            return;
        }
        let memory = self.load.get_or_insert_default();
        memory.since.get_or_insert(now);
        memory.recommendations.push((now, evaluation.recommended));
        memory
            .recommendations
            .retain(|(at, _)| elapsed(*at, now) <= policy.window);
        let message = self.decide(policy, &evaluation, deployed_p);
        self.evaluated(Some(&evaluation), message);
    }

    /// Records the latest evaluation in status.
    fn evaluated(&mut self, evaluation: Option<&Evaluation>, message: String) {
        let state = self.status.autoscaler.get_or_insert_default();
        state.last_evaluation = Some(LoadEvaluation {
            time: self.input.now.to_string(),
            load: evaluation.map(|e| e.load.clone()),
            recommended: evaluation.map(|e| e.recommended),
            predicted_utilization: evaluation.map(|e| e.predicted_utilization),
            message,
        });
    }

    /// Changes P when the window agrees and nothing holds it; says what it did or why not.
    fn decide(&mut self, policy: &AutoscalerPolicy, e: &Evaluation, p: u32) -> String {
        let now = self.input.now;
        let blocked = |until: &Option<String>| {
            until
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .filter(|t| *t > now)
        };
        let (last_change, up_blocked, down_blocked) = match &self.status.autoscaler {
            Some(state) => (
                state.history.last().map(|d| since(&d.time, now)),
                blocked(&state.scale_up_blocked_until),
                blocked(&state.scale_down_blocked_until),
            ),
            None => (None, None, None),
        };
        if let Some(since) = last_change.filter(|s| *s < policy.cooldown) {
            return format!(
                "cooling down: P changed {}s ago, the cooldown is {}s",
                since.as_secs(),
                policy.cooldown.as_secs()
            );
        }
        let memory = self.load.as_ref();
        let full_since = memory
            .and_then(|m| m.since)
            .map_or(Duration::ZERO, |s| elapsed(s, now));
        if full_since < policy.window {
            return format!(
                "stabilizing: {}s of the {}s window seen in this run; recommends P {}",
                full_since.as_secs(),
                policy.window.as_secs(),
                e.recommended
            );
        }
        let recommendations = memory
            .into_iter()
            .flat_map(|m| m.recommendations.iter().map(|(_, r)| *r));
        let lowest = recommendations.clone().min().unwrap_or(p);
        let highest = recommendations.max().unwrap_or(p);
        if lowest > p {
            if let Some(until) = up_blocked {
                return format!("recommends P {lowest}, but scale-ups are blocked until {until}: the last one did not raise the processing rate");
            }
            let why = format!(
                "for {}s every look called for at least P {lowest}: the input ({} records/s) and a backlog of {} records to work off in {}s need it to keep the busiest container at {:.0}% (target {:.0}%)",
                policy.window.as_secs(),
                e.load.input_rate,
                e.load.backlog,
                policy.catch_up.as_secs(),
                e.predicted_utilization * 100.0,
                policy.target_utilization * 100.0
            );
            self.change(p, lowest, "ScaleUp", why, e);
            return format!("scaling up from P {p} to {lowest}");
        }
        if highest < p {
            if let Some(until) = down_blocked {
                return format!("recommends P {highest}, but scale-downs are blocked until {until}: the last one did not keep up");
            }
            if e.backlog_growth > 0.0 {
                return format!(
                    "recommends P {highest}, but the backlog grows ({:.1} records/s): not scaling down",
                    e.backlog_growth
                );
            }
            let why = format!(
                "for {}s every look called for at most P {highest}: the input ({} records/s) keeps the busiest container at {:.0}% with P {highest} (target {:.0}%)",
                policy.window.as_secs(),
                e.load.input_rate,
                e.predicted_utilization * 100.0,
                policy.target_utilization * 100.0
            );
            self.change(p, highest, "ScaleDown", why, e);
            return format!("scaling down from P {p} to {highest}");
        }
        format!("holding P {p}: the window's recommendations range from {lowest} to {highest}")
    }

    /// Verifies the last change once its cooldown is over: kept, or rolled back. True when it
    /// was rolled back (nothing else is decided on this look).
    fn verify_last_change(&mut self, policy: &AutoscalerPolicy, e: &Evaluation, p: u32) -> bool {
        let now = self.input.now;
        let state = self.status.autoscaler.get_or_insert_default();
        let Some(last) = state.history.last_mut() else {
            return false;
        };
        if last.outcome.is_some() || last.to != p || since(&last.time, now) < policy.cooldown {
            return false;
        }
        let last = last.clone();
        let scaled_down = last.to < last.from;
        let (roll_back, why) = if scaled_down && !e.keeps_up() {
            let why = format!(
                "the scale-down from P {} to {} does not keep up: the backlog grows by {:.1} records/s at an input of {} records/s",
                last.from, last.to, e.backlog_growth, e.load.input_rate
            );
            state.scale_down_blocked_until = blocked_until(policy, now);
            (true, why)
        } else if !scaled_down
            && !e.keeps_up()
            && e.load.processing_rate < last.load.processing_rate * EFFECTIVE_SCALE_UP
        {
            let why = format!(
                "the scale-up from P {} to {} did not raise the processing rate ({} -> {} records/s) and the job still does not keep up: the bottleneck is not the workers (input, output or checkpoint store?)",
                last.from, last.to, last.load.processing_rate, e.load.processing_rate
            );
            state.scale_up_blocked_until = blocked_until(policy, now);
            (true, why)
        } else {
            (false, String::new())
        };
        let outcome = if roll_back { "RolledBack" } else { "KeptUp" };
        if let Some(entry) = state.history.last_mut() {
            entry.outcome = Some(outcome.into());
        }
        if !roll_back {
            let message = format!(
                "P {} kept up after the cooldown: {} records/s in, {} processed, backlog {}",
                p, e.load.input_rate, e.load.processing_rate, e.load.backlog
            );
            self.note(false, "AutoscaleVerified", message);
            return false;
        }
        self.note(
            true,
            "AutoscaleRolledBack",
            format!("{why}; back to P {}", last.from),
        );
        self.change(p, last.from, "RollBack", why, e);
        self.evaluated(Some(e), format!("rolling back to P {}", last.from));
        true
    }

    /// The autoscaler's last change was rolled back by the operator (its deployment never
    /// committed): P goes back to what runs, and that direction waits.
    fn rescale_failed(&mut self, policy: &AutoscalerPolicy, running: u32) {
        let now = self.input.now;
        // The failed spec was the autoscaler's P, not the user's: forgetting it lets the
        // autoscaler try that P again once the block is over, rather than have every later
        // choice of it refused as a spec that failed before.
        self.status.failed_hash = None;
        let state = self.status.autoscaler.get_or_insert_default();
        let tried = state.parallelism.unwrap_or(running);
        state.parallelism = Some(running);
        let until = blocked_until(policy, now);
        if tried > running {
            state.scale_up_blocked_until = until;
        } else {
            state.scale_down_blocked_until = until;
        }
        if let Some(last) = state.history.last_mut().filter(|l| l.outcome.is_none()) {
            last.outcome = Some("Failed".into());
        }
        self.note(
            true,
            "AutoscaleFailed",
            format!("the rescale to P {tried} did not commit and was rolled back (see the RolledBack event); staying at P {running}"),
        );
    }

    /// Sets the new P and records the decision.
    fn change(&mut self, from: u32, to: u32, reason: &str, why: String, e: &Evaluation) {
        let now = self.now();
        let state = self
            .status
            .autoscaler
            .get_or_insert_with(AutoscalerStatus::default);
        state.parallelism = Some(to);
        state.history.push(ScalingDecision {
            time: now,
            from,
            to,
            reason: reason.into(),
            message: why.clone(),
            load: e.load.clone(),
            outcome: None,
        });
        let excess = state.history.len().saturating_sub(HISTORY);
        state.history.drain(..excess);
        if reason != "RollBack" {
            self.note(false, "Autoscaled", format!("P {from} -> {to}: {why}"));
        }
        // The next reconcile starts the rescale.
        self.requeue = Duration::from_secs(1);
        self.load = Some(LoadMemory::default());
    }
}

/// Until when a direction whose change was rolled back or failed is blocked (RFC 3339).
fn blocked_until(policy: &AutoscalerPolicy, now: Timestamp) -> Option<String> {
    now.checked_add(policy.cooldown * BLOCK_COOLDOWNS)
        .map(|t| t.to_string())
        .ok()
}

/// Time since the RFC 3339 `time`: zero if it is in the future, and unbounded if it does not
/// read (a status edited by hand must not hold the autoscaler in a cooldown for ever).
fn since(time: &str, now: Timestamp) -> Duration {
    time.parse::<Timestamp>()
        .map_or(Duration::MAX, |t| elapsed(t, now))
}

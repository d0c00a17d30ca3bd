//! Step 2 of the reconcile pipeline: from a StreamJob spec to a [`ValidatedJob`], whose
//! [`PodDocument`] is what a new deployment records and its pods run. The job section is parsed
//! and checked by the contract crate (the same rules `cairn-worker validate` applies); the pod
//! settings get their defaults here. Only the desired spec is validated: a deployment recorded
//! in status is read back as it was written.

use std::time::Duration;

use cairn_contract::{JobSpec, SpecError};
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::crd::{
    AutoscalerSettings, DataRetention, DesiredState, RestoreFrom, SavepointSettings, StreamJobSpec,
    UpgradeMode,
};
use crate::pods::PodDocument;

/// Where the worker pod keeps its local state (the state volume's mount point).
pub const STATE_MOUNT: &str = "/var/lib/cairn";
/// Default `output.spoolDir` of a Kafka output on Kubernetes: on the state volume.
pub const KAFKA_SPOOL_DIR: &str = "/var/lib/cairn/kafka-spool";
/// `state.dir` of every job on Kubernetes.
pub const STATE_DIR: &str = "/var/lib/cairn/state";
/// Default `upgradeTimeout`.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `savepoints.maxCount`.
pub const DEFAULT_SAVEPOINT_HISTORY: u32 = 10;
/// Largest `savepoints.maxCount`: the history lives in the StreamJob's status, which must stay
/// far below the API server's object size limit.
pub const MAX_SAVEPOINT_HISTORY: u32 = 100;
/// Largest `savepoints.fallbackToLastStateAfter` (failed attempts, 10 s to 5 min apart).
pub const MAX_FALLBACK_ATTEMPTS: u32 = 100;
/// Largest `job.checkpoint.retained` on Kubernetes (also a CRD `maximum`).
pub const MAX_RETAINED: u32 = 1000;
/// Longest name of a StreamJob with `standby: true` (also a CRD rule). Its standbys' StatefulSet
/// is `<name>-standby`, and the StatefulSet controller labels each pod with
/// `controller-revision-hash: <set>-<hash of up to 10 characters>`, a label value of at most 63
/// characters: so at most 52 for the set's name, 44 for the job's.
pub const MAX_STANDBY_JOB_NAME: usize = 44;

/// A StreamJob spec that passed validation, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJob {
    /// What the pods run.
    pub pods: PodDocument,
    /// [`PodDocument::hash`] of `pods`.
    pub hash: String,
    /// Upgrade mode.
    pub upgrade_mode: UpgradeMode,
    /// Savepoint settings.
    pub savepoints: SavepointPolicy,
    /// Restore settings of the first deployment.
    pub restore_from: RestoreFrom,
    /// Running or suspended.
    pub desired_state: DesiredState,
    /// Restart nonce.
    pub restart_nonce: Option<i64>,
    /// Upgrade timeout.
    pub upgrade_timeout: Duration,
    /// Take a final savepoint on deletion.
    pub final_savepoint: bool,
    /// Delete the job's store data on deletion (`deletion.checkpointData: delete`).
    pub delete_data: bool,
    /// Savepoints that deletion keeps (`deletion.retainSavepoints`).
    pub retain_savepoints: Vec<String>,
    /// `spec.autoscaler` with its defaults; `None` without one.
    pub autoscaler: Option<AutoscalerPolicy>,
}

/// `spec.autoscaler` with every default applied (docs/autoscaling.md).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerPolicy {
    /// Fewest containers.
    pub min: u32,
    /// Most containers (at most N).
    pub max: u32,
    /// Busy fraction the busiest container should stay under.
    pub target_utilization: f64,
    /// Time to work off a backlog in.
    pub catch_up: Duration,
    /// How long recommendations must agree.
    pub window: Duration,
    /// Quiet time after a change, then its verification.
    pub cooldown: Duration,
}

/// Default `autoscaler.targetUtilization`.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// Default `autoscaler.catchUpTime`.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(300);
/// Default `autoscaler.stabilizationWindow`.
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(180);
/// Default `autoscaler.cooldown`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// Shortest stabilization window and cooldown: the operator looks at a running job every 10 s,
/// and a decision on a single look would follow every blip.
pub const MIN_AUTOSCALER_PERIOD: Duration = Duration::from_secs(10);
/// Longest autoscaler duration: the recommendations of a window are kept in memory.
pub const MAX_AUTOSCALER_PERIOD: Duration = Duration::from_secs(3600);

impl ValidatedJob {
    /// Deletion has work to do outside Kubernetes (a final savepoint, or the store's data), so
    /// the StreamJob carries the finalizer.
    pub fn needs_finalizer(&self) -> bool {
        self.final_savepoint || self.delete_data
    }
}

impl ValidatedJob {
    /// The job the pods run.
    pub fn job(&self) -> &JobSpec {
        &self.pods.job
    }

    /// The same job with `parallelism` containers (the autoscaler's choice), re-hashed.
    pub fn with_parallelism(mut self, parallelism: u32) -> Self {
        self.pods.job.parallelism = parallelism;
        self.hash = self.pods.hash();
        self
    }
}

/// Savepoint settings with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavepointPolicy {
    /// Manual trigger.
    pub trigger_nonce: Option<i64>,
    /// Periodic interval.
    pub interval: Option<Duration>,
    /// History length.
    pub max_count: u32,
    /// History age.
    pub max_age: Option<Duration>,
    /// Fall back to last-state after this many failed upgrade savepoints.
    pub fallback_after: Option<u32>,
}

/// Why a spec is invalid: every problem, each naming its field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid StreamJob spec: {}", .problems.join("; "))]
pub struct InvalidSpec {
    /// One line per problem, e.g. `spec.job.input.partitions: ...`.
    pub problems: Vec<String>,
}

/// Validates `spec` of the StreamJob `name`.
pub fn validate(
    name: &str,
    spec: &StreamJobSpec,
    config: &OperatorConfig,
) -> Result<ValidatedJob, InvalidSpec> {
    let mut problems = Vec::new();
    let job = match parse_job(name, &spec.job) {
        Ok(job) => Some(job),
        Err(mut p) => {
            problems.append(&mut p);
            None
        }
    };
    let upgrade_timeout = duration_field(
        "spec.upgradeTimeout",
        spec.upgrade_timeout.as_deref(),
        &mut problems,
    )
    .unwrap_or(DEFAULT_UPGRADE_TIMEOUT);
    let settings = spec.savepoints.clone().unwrap_or_default();
    let savepoints = savepoint_policy(&settings, &mut problems);
    let state_volume = spec.state_volume.clone().unwrap_or_default();
    if state_volume.empty_dir.is_some() && state_volume.persistent_volume_claim.is_some() {
        problems.push(
            "spec.stateVolume: both emptyDir and persistentVolumeClaim are set; keep one".into(),
        );
    }
    if let (Some(job), UpgradeMode::Stateless) = (&job, spec.upgrade_mode) {
        if spec
            .restore_from
            .as_ref()
            .and_then(|r| r.savepoint.as_ref())
            .is_some()
        {
            problems.push(format!(
                "spec.restoreFrom.savepoint: job {} has upgradeMode stateless, which never restores state; remove restoreFrom.savepoint or use upgradeMode savepoint",
                job.name
            ));
        }
    }
    if let Some(job) = job.as_ref().filter(|j| j.standby) {
        if job.name.len() > MAX_STANDBY_JOB_NAME {
            problems.push(format!(
                "spec.job.standby: the StreamJob's name {:?} has {} characters, more than the {MAX_STANDBY_JOB_NAME} a job with standbys may have (its standbys' StatefulSet {:?} names its pods' labels); use a shorter name or remove standby",
                job.name,
                job.name.len(),
                crate::children::standby_set_name(&job.name)
            ));
        }
    }
    let autoscaler = match (&job, &spec.autoscaler) {
        (Some(job), Some(settings)) => {
            autoscaler_policy(job, spec.upgrade_mode, settings, &mut problems)
        }
        _ => None,
    };
    let Some(job) = job.filter(|_| problems.is_empty()) else {
        return Err(InvalidSpec { problems });
    };
    let mut pod = spec.pod_template.clone().unwrap_or_default();
    // Resolved into `service_account` below; left in `pod` too, a spec that names the default
    // account would hash differently from one that omits it, although the pods are the same.
    let service_account = pod
        .service_account_name
        .take()
        .unwrap_or_else(|| config.worker_service_account.clone());
    let pods = PodDocument {
        job,
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| config.worker_image.clone()),
        pull_policy: spec.image_pull_policy,
        resources: spec.resources.clone(),
        service_account,
        pod,
        state_volume,
        credentials_secret: spec.credentials_secret.clone(),
    };
    Ok(ValidatedJob {
        hash: pods.hash(),
        pods,
        upgrade_mode: spec.upgrade_mode,
        savepoints,
        restore_from: spec.restore_from.clone().unwrap_or_default(),
        desired_state: spec.state,
        restart_nonce: spec.restart_nonce,
        upgrade_timeout,
        final_savepoint: spec.deletion.as_ref().is_some_and(|d| d.final_savepoint),
        delete_data: spec
            .deletion
            .as_ref()
            .is_some_and(|d| d.checkpoint_data == DataRetention::Delete),
        retain_savepoints: spec
            .deletion
            .as_ref()
            .map(|d| d.retain_savepoints.clone())
            .unwrap_or_default(),
        autoscaler,
    })
}

/// `spec.autoscaler` checked against the job it scales.
fn autoscaler_policy(
    job: &JobSpec,
    mode: UpgradeMode,
    settings: &AutoscalerSettings,
    problems: &mut Vec<String>,
) -> Option<AutoscalerPolicy> {
    let before = problems.len();
    let n = job.input.partitions();
    if mode == UpgradeMode::Stateless {
        problems.push("spec.autoscaler: upgradeMode stateless starts every new deployment with empty state, so each rescale would lose the job's state; use upgradeMode savepoint or last-state, or remove the autoscaler".into());
    }
    if let cairn_contract::InputSpec::File(_) = job.input {
        problems.push("spec.autoscaler: a file input reports its lag in bytes, and the autoscaler needs it in records (kafka and generator inputs); remove the autoscaler or set job.parallelism yourself".into());
    }
    let min = settings.min_parallelism.unwrap_or(1);
    let max = settings.max_parallelism.unwrap_or(n);
    if min == 0 {
        problems.push("spec.autoscaler.minParallelism: must be at least 1".into());
    }
    if max > n {
        problems.push(format!("spec.autoscaler.maxParallelism: {max} is more than the job's {n} partitions (a task is one partition and never split); write at most {n} or leave it out"));
    }
    if min > max {
        problems.push(format!("spec.autoscaler.minParallelism: {min} is more than maxParallelism {max}; make min <= max"));
    }
    let target_utilization = settings
        .target_utilization
        .unwrap_or(DEFAULT_TARGET_UTILIZATION);
    if !(0.1..=1.0).contains(&target_utilization) {
        problems.push(format!("spec.autoscaler.targetUtilization: {target_utilization} is not between 0.1 and 1; use e.g. 0.7 (30% headroom for bursts)"));
    }
    let period =
        |field: &str, text: &Option<String>, default: Duration, problems: &mut Vec<String>| {
            let value = duration_field(field, text.as_deref(), problems).unwrap_or(default);
            if !(MIN_AUTOSCALER_PERIOD..=MAX_AUTOSCALER_PERIOD).contains(&value) {
                problems.push(format!(
                    "{field}: {} is not between 10s and 1h",
                    cairn_contract::format_duration(value)
                ));
            }
            value
        };
    let catch_up = period(
        "spec.autoscaler.catchUpTime",
        &settings.catch_up_time,
        DEFAULT_CATCH_UP,
        problems,
    );
    let window = period(
        "spec.autoscaler.stabilizationWindow",
        &settings.stabilization_window,
        DEFAULT_STABILIZATION,
        problems,
    );
    let cooldown = period(
        "spec.autoscaler.cooldown",
        &settings.cooldown,
        DEFAULT_COOLDOWN,
        problems,
    );
    (problems.len() == before).then_some(AutoscalerPolicy {
        min,
        max,
        target_utilization,
        catch_up,
        window,
        cooldown,
    })
}

/// Parses the job section with the contract crate: the name defaults to the StreamJob's, the state
/// directory is the pod's state volume.
fn parse_job(name: &str, job: &Value) -> Result<JobSpec, Vec<String>> {
    let Value::Object(map) = job else {
        return Err(vec!["spec.job: must be a map with input and task".into()]);
    };
    let mut map = map.clone();
    match map.get("name") {
        None => {
            map.insert("name".into(), Value::String(name.into()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(vec![format!(
                "spec.job.name: {other} differs from the StreamJob's name {name:?}; leave it out or make them equal"
            )])
        }
    }
    if map.contains_key("restore") {
        return Err(vec![
            "spec.job.restore: set by the operator; use spec.restoreFrom instead".into(),
        ]);
    }
    let state = map
        .entry("state")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(state) = state {
        if state.contains_key("dir") {
            return Err(vec![format!(
                "spec.job.state.dir: set by the operator to the pod's state volume ({STATE_DIR}); remove it (size the volume with spec.stateVolume)"
            )]);
        }
        state.insert("dir".into(), Value::String(STATE_DIR.into()));
    }
    if let Some(Value::Object(output)) = map.get_mut("output") {
        // The worker's default spool directory is relative to its working directory, which is
        // read-only in the pod and not kept across restarts: exactly-once output waiting for its
        // checkpoint must survive a pod restart, so it goes on the state volume.
        if output.get("type") == Some(&Value::String("kafka".into()))
            && !output.contains_key("spoolDir")
        {
            output.insert("spoolDir".into(), Value::String(KAFKA_SPOOL_DIR.into()));
        }
    }
    let value = serde_yaml::to_value(Value::Object(map)).expect("JSON converts to YAML");
    let job = JobSpec::from_yaml_value(value).map_err(job_problems)?;
    if job.checkpoint.retained > MAX_RETAINED {
        return Err(vec![format!(
            "spec.job.checkpoint.retained: {} is more than {MAX_RETAINED}; keep at most {MAX_RETAINED} checkpoints (default 3)",
            job.checkpoint.retained
        )]);
    }
    Ok(job)
}

/// The contract crate's errors, with their field paths moved under `spec.job`.
fn job_problems(err: SpecError) -> Vec<String> {
    match err {
        SpecError::Invalid(fields) => fields
            .into_iter()
            .map(|f| format!("spec.job.{}: {}; {}", f.field, f.problem, f.fix))
            .collect(),
        SpecError::Parse { field, message } if !field.is_empty() => {
            vec![format!("spec.job.{field}: {message}")]
        }
        other => vec![format!("spec.job: {other}")],
    }
}

fn duration_field(field: &str, text: Option<&str>, problems: &mut Vec<String>) -> Option<Duration> {
    let text = text?;
    match cairn_contract::parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.push(format!("{field}: must be more than 0"));
            None
        }
        Err(e) => {
            problems.push(format!("{field}: {e}"));
            None
        }
    }
}

fn savepoint_policy(settings: &SavepointSettings, problems: &mut Vec<String>) -> SavepointPolicy {
    let max_count = settings.max_count.unwrap_or(DEFAULT_SAVEPOINT_HISTORY);
    if max_count == 0 {
        problems.push("spec.savepoints.maxCount: must be at least 1".into());
    }
    if max_count > MAX_SAVEPOINT_HISTORY {
        problems.push(format!(
            "spec.savepoints.maxCount: {max_count} is more than {MAX_SAVEPOINT_HISTORY}; the history is kept in the StreamJob's status, keep at most {MAX_SAVEPOINT_HISTORY}"
        ));
    }
    if let Some(n) = settings
        .fallback_to_last_state_after
        .filter(|n| *n > MAX_FALLBACK_ATTEMPTS)
    {
        problems.push(format!(
            "spec.savepoints.fallbackToLastStateAfter: {n} is more than {MAX_FALLBACK_ATTEMPTS}; write at most {MAX_FALLBACK_ATTEMPTS} (or leave it out to never fall back)"
        ));
    }
    SavepointPolicy {
        trigger_nonce: settings.trigger_nonce,
        interval: duration_field(
            "spec.savepoints.interval",
            settings.interval.as_deref(),
            problems,
        ),
        max_count,
        max_age: duration_field(
            "spec.savepoints.maxAge",
            settings.max_age.as_deref(),
            problems,
        ),
        fallback_after: settings.fallback_to_last_state_after,
    }
}

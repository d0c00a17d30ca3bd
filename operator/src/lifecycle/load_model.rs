//! The autoscaler's model of a job's load (docs/autoscaling.md): from two looks at the per-task
//! counters the workers report (records read, busy time, lag), the rate records arrive at, what
//! one record costs, and the smallest P that keeps up with the input and works off the backlog
//! in time while its busiest container stays under the target utilization.
//!
//! Tasks are whole partitions and task t runs in container t % P
//! ([`cairn_contract::container_of`]), so P need not divide N: the busiest container of each
//! candidate P is computed from the tasks it would hold, and the smallest P that meets the
//! target wins. A P that only adds containers without unloading the busiest one (P = 5 for
//! N = 8, whose busiest container still holds two tasks like P = 4) is never chosen over the
//! smaller one.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::plan::elapsed;
use crate::crd::LoadMetrics;
use crate::validate::AutoscalerPolicy;
use cairn_contract::control::JobStatus;

/// Fewest records a look must have seen read before a per-record cost is taken from them: a
/// cost from a handful of records is mostly timer noise.
const MIN_RECORDS_FOR_COST: u64 = 20;

/// Which run of the job a sample is from: counters restart with every process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    deployment: Option<String>,
    generation: u64,
    started_at_ms: u64,
}

/// One task's counters at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskCounters {
    records_in: u64,
    busy_ms: u64,
    lag: u64,
    container: u32,
}

/// The per-task counters of one look at a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When.
    pub at: Timestamp,
    /// Of which run.
    pub run: RunId,
    tasks: BTreeMap<u32, TaskCounters>,
}

impl Sample {
    /// The counters of `report`, taken at `at`. Tasks outside `0..partitions` are left out: the
    /// report comes from a process, and a task id the job does not have cannot be placed.
    pub fn of(report: &JobStatus, partitions: u32, at: Timestamp) -> Self {
        let tasks = report
            .tasks
            .iter()
            .filter(|t| t.task < partitions)
            .map(|t| {
                let counters = TaskCounters {
                    records_in: t.records_in,
                    busy_ms: t.busy_ms,
                    lag: u64::try_from(t.lag).unwrap_or(0),
                    container: t.container,
                };
                (t.task, counters)
            })
            .collect();
        Sample {
            at,
            run: RunId {
                deployment: report.deployment.clone(),
                generation: report.generation,
                started_at_ms: report.started_at_ms,
            },
            tasks,
        }
    }

    /// `later` continues this sample: same run, no counter went backwards.
    pub fn continued_by(&self, later: &Sample) -> bool {
        self.run == later.run
            && later.tasks.iter().all(|(task, c)| {
                self.tasks.get(task).is_none_or(|before| {
                    c.records_in >= before.records_in && c.busy_ms >= before.busy_ms
                })
            })
    }
}

/// What two looks say about the load, and the P it calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Rates and backlog over the job.
    pub load: LoadMetrics,
    /// How fast the backlog grew, records per second (negative while it shrinks).
    pub backlog_growth: f64,
    /// The smallest P in `min..=max` that meets the target, or `max` if none does.
    pub recommended: u32,
    /// The busiest container's predicted utilization at `recommended`.
    pub predicted_utilization: f64,
}

impl Evaluation {
    /// The job keeps up with its input: its backlog did not grow by more than 5% of the input
    /// rate (plus one record a second, so an idle job's jitter is not a failure).
    pub fn keeps_up(&self) -> bool {
        self.backlog_growth <= 0.05 * self.load.input_rate + 1.0
    }
}

/// Evaluates the load between `before` and `now` (a continuation of it) for a job of
/// `partitions` tasks. `Err` says why there is nothing to go on yet.
pub fn evaluate(
    policy: &AutoscalerPolicy,
    partitions: u32,
    before: &Sample,
    now: &Sample,
) -> Result<Evaluation, String> {
    let seconds = elapsed(before.at, now.at).as_secs_f64();
    if seconds <= 0.0 {
        return Err("no time passed between two looks at the job".into());
    }
    let catch_up = policy.catch_up.as_secs_f64();
    struct Task {
        read: u64,
        busy_s: f64,
        arrival: f64,
        backlog: f64,
        growth: f64,
        container: u32,
    }
    let tasks: BTreeMap<u32, Task> = now
        .tasks
        .iter()
        .map(|(id, c)| {
            let prior = before.tasks.get(id).copied().unwrap_or(TaskCounters {
                records_in: c.records_in,
                busy_ms: c.busy_ms,
                lag: c.lag,
                container: c.container,
            });
            let read = c.records_in.saturating_sub(prior.records_in);
            let growth = (c.lag as f64 - prior.lag as f64) / seconds;
            let task = Task {
                read,
                busy_s: c.busy_ms.saturating_sub(prior.busy_ms) as f64 / 1000.0,
                arrival: (read as f64 / seconds + growth).max(0.0),
                backlog: c.lag as f64,
                growth,
                container: c.container,
            };
            (*id, task)
        })
        .collect();
    let read: u64 = tasks.values().map(|t| t.read).sum();
    let busy_s: f64 = tasks.values().map(|t| t.busy_s).sum();
    let job_cost = (read >= MIN_RECORDS_FOR_COST).then(|| busy_s / read as f64);
    // Thread-seconds per second each task needs: its arrivals plus its share of working off the
    // backlog in time, at what a record of that task costs (its own when it read enough, else
    // the job's: tasks run the same code on differently sized records).
    let mut demands = vec![0.0; partitions as usize];
    for (id, t) in &tasks {
        let work = t.arrival + t.backlog / catch_up;
        if work == 0.0 {
            continue;
        }
        let cost = if t.read >= MIN_RECORDS_FOR_COST {
            Some(t.busy_s / t.read as f64)
        } else {
            job_cost
        };
        let Some(cost) = cost else {
            return Err(format!(
                "only {read} records were read in {seconds:.0}s, too few to measure what a record costs; waiting for more"
            ));
        };
        demands[*id as usize] = work * cost;
    }
    let mut by_container: BTreeMap<u32, f64> = BTreeMap::new();
    for t in tasks.values() {
        *by_container.entry(t.container).or_default() += t.busy_s / seconds;
    }
    let (recommended, predicted_utilization) = recommend(policy, &demands);
    Ok(Evaluation {
        load: LoadMetrics {
            input_rate: round(tasks.values().map(|t| t.arrival).sum(), 10.0),
            processing_rate: round(read as f64 / seconds, 10.0),
            backlog: tasks.values().map(|t| t.backlog as u64).sum(),
            busiest_utilization: round(by_container.into_values().fold(0.0, f64::max), 1000.0),
        },
        backlog_growth: tasks.values().map(|t| t.growth).sum(),
        recommended,
        predicted_utilization: round(predicted_utilization, 1000.0),
    })
}

/// The smallest P in `min..=max` whose busiest container's demand stays within the target
/// utilization, with that demand; `max` when none does (one task alone may need more than a
/// container: a task is never split).
fn recommend(policy: &AutoscalerPolicy, demands: &[f64]) -> (u32, f64) {
    let target = policy.target_utilization;
    let total: f64 = demands.iter().sum();
    let heaviest = demands.iter().copied().fold(0.0, f64::max);
    if heaviest > target {
        return (policy.max, busiest(demands, policy.max));
    }
    // No P below total / target can meet it (the containers share the total): start there.
    let floor = (total / target).ceil().min(f64::from(policy.max)) as u32;
    for p in floor.max(policy.min)..=policy.max {
        let load = busiest(demands, p);
        if load <= target {
            return (p, load);
        }
    }
    (policy.max, busiest(demands, policy.max))
}

/// The demand of the busiest container when the tasks run in `parallelism` containers.
pub fn busiest(demands: &[f64], parallelism: u32) -> f64 {
    let mut containers = vec![0.0; parallelism.max(1) as usize];
    for (task, demand) in demands.iter().enumerate() {
        let task = u32::try_from(task).unwrap_or(u32::MAX);
        containers[cairn_contract::container_of(task, parallelism) as usize] += demand;
    }
    containers.into_iter().fold(0.0, f64::max)
}

/// `value` rounded to `1 / per` (status shows it, and a stable value is not rewritten).
fn round(value: f64, per: f64) -> f64 {
    (value * per).round() / per
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use cairn_contract::control::TaskStatus;

    fn policy(min: u32, max: u32) -> AutoscalerPolicy {
        AutoscalerPolicy {
            min,
            max,
            target_utilization: 0.7,
            catch_up: Duration::from_secs(100),
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(60),
        }
    }

    /// FLINK-39299: aligning P to divisors of a prime partition count leaves only 1 and N.
    /// Here 7 tasks at 0.3 each: P 3 puts three tasks (0.9) in container 0, P 4 at most two
    /// (0.6), so 4 it is, neither 1 nor 7.
    #[test]
    fn a_prime_partition_count_gets_the_smallest_p_that_meets_the_target() {
        let demands = [0.3; 7];
        assert!((busiest(&demands, 3) - 0.9).abs() < 1e-9);
        assert!((busiest(&demands, 4) - 0.6).abs() < 1e-9);
        let (p, load) = recommend(&policy(1, 7), &demands);
        assert_eq!(p, 4);
        assert!((load - 0.6).abs() < 1e-9);
    }

    /// 8 tasks at 0.4: P 5, 6 and 7 all leave a container with two tasks (0.8), no better than
    /// P 4; only P 8 meets 70%.
    #[test]
    fn a_p_that_does_not_unload_the_busiest_container_is_passed_over() {
        let demands = [0.4; 8];
        for p in 4..8 {
            assert!((busiest(&demands, p) - 0.8).abs() < 1e-9, "P {p}");
        }
        assert_eq!(recommend(&policy(1, 8), &demands).0, 8);
    }

    /// Bounds hold: never below min, and max when even that does not meet the target (one
    /// task needing more than a container is never split).
    #[test]
    fn the_recommendation_stays_within_min_and_max() {
        assert_eq!(recommend(&policy(3, 8), &[0.01; 8]).0, 3);
        assert_eq!(recommend(&policy(1, 2), &[0.5; 8]).0, 2);
        let (p, load) = recommend(&policy(1, 4), &[0.9, 0.1, 0.1, 0.1]);
        assert_eq!(p, 4);
        assert!((load - 0.9).abs() < 1e-9);
        assert_eq!(recommend(&policy(1, 4), &[0.0; 4]).0, 1);
    }

    fn sample(at_s: i64, tasks: &[(u64, u64, i64)]) -> Sample {
        let report = JobStatus {
            started_at_ms: 1,
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(t, &(records_in, busy_ms, lag))| TaskStatus {
                    task: t as u32,
                    container: t as u32 % 2,
                    records_in,
                    busy_ms,
                    lag,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let at = Timestamp::from_second(1_790_000_000 + at_s).unwrap();
        Sample::of(&report, 4, at)
    }

    /// Arrivals are records read plus the backlog's growth; a record's cost is busy time over
    /// records read; the demand adds the backlog's share of catchUpTime.
    #[test]
    fn the_evaluation_takes_rates_costs_and_backlog_from_two_looks() {
        let before = sample(0, &[(0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 1000)]);
        // 10 s: tasks read 1000 each at 2 ms; task 3's backlog grows to 2000 (+100/s).
        let now = sample(
            10,
            &[
                (1000, 2000, 0),
                (1000, 2000, 0),
                (1000, 2000, 0),
                (1000, 2000, 2000),
            ],
        );
        let e = evaluate(&policy(1, 4), 4, &before, &now).unwrap();
        assert_eq!(e.load.processing_rate, 400.0);
        assert_eq!(e.load.input_rate, 500.0);
        assert_eq!(e.load.backlog, 2000);
        assert_eq!(e.load.busiest_utilization, 0.4);
        assert_eq!(e.backlog_growth, 100.0);
        assert!(!e.keeps_up(), "100/s of growth at 500/s in");
        // Demands: 0.2, 0.2, 0.2 and (200 + 2000/100) × 2 ms = 0.44: P 1 would be 1.04, P 2
        // puts tasks 1 and 3 together (0.64).
        assert_eq!(e.recommended, 2);
        assert_eq!(e.predicted_utilization, 0.64);
        // Counters that went backwards are another run.
        assert!(!now.continued_by(&before));
        assert!(before.continued_by(&now));
    }

    /// Too few records to price one: no recommendation, and the reason.
    #[test]
    fn an_idle_job_is_not_priced() {
        let before = sample(0, &[(0, 0, 0); 4]);
        let now = sample(10, &[(2, 1, 0); 4]);
        let err = evaluate(&policy(1, 4), 4, &before, &now).unwrap_err();
        assert!(err.contains("only 8 records were read in 10s"), "{err}");
        // Nothing read and no backlog: nothing to do, P min.
        let idle = sample(20, &[(2, 1, 0); 4]);
        assert_eq!(
            evaluate(&policy(1, 4), 4, &now, &idle).unwrap().recommended,
            1
        );
    }
}

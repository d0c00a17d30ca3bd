//! [`TaskInstance`]: one task of one partition, with its state, source, sink and checkpointer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use super::event_time::{EventClock, END_OF_TIME};
use super::messages::{Event, TaskLoad};
use super::recovery::TaskRecovery;
use crate::checkpoint::upload::{PhaseInput, PhaseReport, TaskCheckpointer};
use crate::checkpoint::{now_ms, CheckpointError};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};
use crate::source::{Poll, RecordBatch, Source, SourceError};
use crate::state::keyed::PlainKeyHash;
use crate::state::{KeyedState, TimeDomain};
use crate::task::{StreamTask, TaskContext, TaskError};

/// Why a task instance stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The task failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The local state store failed [`STATE_FAILURES_TOLERATED`] checkpoints in a row.
    #[error("the state store of task {task} failed {failures} checkpoints in a row (last: {last}); the task stops so that the job restarts from the last committed checkpoint; check the volume of state.dir (full, removed or read-only)")]
    StateStoreBroken {
        /// Task id.
        task: u32,
        /// Failed checkpoints in a row.
        failures: u32,
        /// The last failure.
        last: String,
    },
}

/// How many checkpoints in a row a task's local state store (RocksDB and the checkpoint
/// directory next to it) may fail before the task fails. One failure may pass (a full disk
/// that is cleaned up); after a hard RocksDB error every checkpoint fails, and a process that
/// stayed up would never commit again. Failing the task ends the process with an error, and
/// its restart rebuilds the state from the last committed checkpoint.
pub const STATE_FAILURES_TOLERATED: u32 = 3;

/// Checkpoints in a row whose asynchronous phase failed in a task's local state store; shared
/// by the task and the phases it starts.
#[derive(Debug, Default)]
pub struct StateFailures {
    in_a_row: AtomicU32,
    last: Mutex<Option<String>>,
}

impl StateFailures {
    /// Counts the outcome of one asynchronous phase: a failure of the local state store adds
    /// one, a success starts over, other failures (the durable store, the sink) do not count.
    pub fn record(&self, result: &Result<PhaseReport, CheckpointError>) {
        match result {
            Ok(_) => self.in_a_row.store(0, Ordering::Release),
            Err(e @ (CheckpointError::State(_) | CheckpointError::Local { .. })) => {
                *self.last.lock().expect("state failures lock") = Some(e.to_string());
                self.in_a_row.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {}
        }
    }

    /// The failures in a row and the last one, once there are too many.
    fn too_many(&self) -> Option<(u32, String)> {
        let failures = self.in_a_row.load(Ordering::Acquire);
        (failures >= STATE_FAILURES_TOLERATED).then(|| {
            let last = self.last.lock().expect("state failures lock").clone();
            (failures, last.unwrap_or_default())
        })
    }
}

/// Metric handles of one task, resolved once.
struct TaskMetrics {
    records_in: IntCounter,
    records_out: IntCounter,
    bad_records: IntCounter,
    late_records: IntCounter,
    lag: IntGauge,
    watermark: IntGauge,
    event_time_lag: IntGauge,
    resumed_ms: IntGauge,
    caught_up_ms: IntGauge,
}

/// One running task.
pub struct TaskInstance {
    /// Task id (= input partition).
    pub id: u32,
    task: Box<dyn StreamTask>,
    state: KeyedState,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    batch: RecordBatch,
    checkpointer: Arc<TaskCheckpointer>,
    metrics: Arc<Metrics>,
    handles: TaskMetrics,
    next_tick: Option<Instant>,
    /// Timestamps and watermark, in a job with event time.
    clock: Option<EventClock>,
    /// True once the source reported the end of a finite input.
    pub finished: bool,
    last_bad_log: Option<Instant>,
    state_failures: Arc<StateFailures>,
    /// Progress marks and the time to resume (`super::recovery`).
    recovery: TaskRecovery,
    /// Load since the last checkpoint, and since the last `Event::Busy`, for the recovery-time
    /// objective and the status.
    load: LoadMeter,
    /// The lag sent in the last `Event::Busy`; `None` before the first.
    reported_lag: Option<i64>,
    /// The state hashes of the batch's keys, when the task's state follows them (for
    /// prefetching; see `StreamTask::state_keyed_by_record`).
    key_hashes: Vec<PlainKeyHash>,
    /// Wall-clock time (ms since the epoch) at which the last batch with records was
    /// processed; 0 before the first. Logged when the task pauses for a stop, so the time a
    /// savepoint upgrade keeps a job from processing can be measured across processes.
    last_record_ms: u64,
}

/// How many records ahead the runtime starts loading a record's state: its cache entry this
/// far ahead, the index slot naming it twice as far. Far enough for a load from memory
/// (about 100 ns) to land while the records in between are processed (tens of ns each).
const PREFETCH_AHEAD: usize = 8;

/// Counts a task's records and busy time between checkpoints.
#[derive(Debug)]
struct LoadMeter {
    since: Instant,
    records: u64,
    busy: Duration,
    /// Busy time not yet reported in an `Event::Busy` (reset about once a second, not at
    /// checkpoints).
    unreported: Duration,
    /// Records not yet reported in an `Event::Busy`, likewise.
    unreported_records: u64,
}

impl LoadMeter {
    fn new() -> Self {
        LoadMeter {
            since: Instant::now(),
            records: 0,
            busy: Duration::ZERO,
            unreported: Duration::ZERO,
            unreported_records: 0,
        }
    }

    /// A batch of `records` took `busy`.
    fn counted(&mut self, records: u64, busy: Duration) {
        self.records += records;
        self.busy += busy;
        self.unreported += busy;
        self.unreported_records += records;
    }

    /// What was counted since the last call (or since the task opened), and start again.
    fn take(&mut self, now: Instant) -> TaskLoad {
        let load = TaskLoad {
            records: self.records,
            busy_us: micros(self.busy),
            window_us: micros(now.duration_since(self.since)),
        };
        self.since = now;
        self.records = 0;
        self.busy = Duration::ZERO;
        load
    }

    /// Busy time (µs) and records since the last call.
    fn take_unreported(&mut self) -> (u64, u64) {
        (
            micros(std::mem::take(&mut self.unreported)),
            std::mem::take(&mut self.unreported_records),
        )
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl TaskInstance {
    /// Assembles a task instance whose state and source are already restored and positioned,
    /// and calls the task's `open`.
    #[allow(clippy::too_many_arguments)] // one call site (job.rs); each part is built there
    pub fn open(
        id: u32,
        mut task: Box<dyn StreamTask>,
        mut state: KeyedState,
        source: Box<dyn Source>,
        mut sink: Box<dyn Sink>,
        checkpointer: Arc<TaskCheckpointer>,
        metrics: Arc<Metrics>,
        clock: Option<EventClock>,
        mut recovery: TaskRecovery,
    ) -> Result<Self, InstanceError> {
        // At once, so that a kill within the first mark period is not measured from the
        // previous run's mark.
        recovery.mark(source.position(), Instant::now());
        let unreadable = state.load_timers().map_err(TaskError::from)?;
        if unreadable > 0 {
            tracing::warn!(
                task = id,
                unreadable,
                "skipped stored timers this worker cannot read (written by a newer Cairn?)"
            );
        }
        let mut ctx = TaskContext::new(&mut state, sink.as_mut(), id);
        ctx.set_watermark(clock.as_ref().and_then(EventClock::watermark));
        task.open(&mut ctx)?;
        let label = id.to_string();
        let handles = TaskMetrics {
            records_in: metrics.records_in.with_label_values(&[&label]),
            records_out: metrics.records_out.with_label_values(&[&label]),
            bad_records: metrics.bad_records.with_label_values(&[&label]),
            late_records: metrics.late_records.with_label_values(&[&label]),
            lag: metrics.lag.with_label_values(&[&label]),
            watermark: metrics.watermark.with_label_values(&[&label]),
            event_time_lag: metrics.event_time_lag.with_label_values(&[&label]),
            resumed_ms: metrics.task_resumed_ms.with_label_values(&[&label]),
            caught_up_ms: metrics.task_caught_up_ms.with_label_values(&[&label]),
        };
        // -1 until the task has a watermark (and always without event time), so the status
        // and dashboards tell "none" from the epoch.
        handles.watermark.set(-1);
        handles.event_time_lag.set(-1);
        handles.resumed_ms.set(-1);
        handles.caught_up_ms.set(-1);
        let next_tick = next_tick_after(task.as_ref());
        Ok(TaskInstance {
            id,
            task,
            state,
            source,
            sink,
            batch: RecordBatch::default(),
            checkpointer,
            metrics,
            handles,
            next_tick,
            clock,
            finished: false,
            last_bad_log: None,
            state_failures: Arc::default(),
            recovery,
            load: LoadMeter::new(),
            reported_lag: None,
            last_record_ms: 0,
            key_hashes: Vec::new(),
        })
    }

    /// Reads and processes one batch of at most `max` records. In a job with event time each
    /// record's timestamp moves the watermark, and event-time timers it passes fire before the
    /// next record (see [`super::event_time`]).
    pub fn run_batch(&mut self, max: usize) -> Result<Poll, InstanceError> {
        let batch_started = Instant::now();
        self.run_tick()?;
        self.fire_processing_timers(now_ms(), max)?;
        self.batch.clear(self.id);
        let poll = self.source.poll(&mut self.batch, max)?;
        if self.batch.is_empty() {
            self.clock_without_records(poll)?;
            return Ok(poll);
        }
        let started = Instant::now();
        let hashes = &mut self.key_hashes;
        hashes.clear();
        if self.task.state_keyed_by_record() {
            for i in 0..self.batch.len() {
                // A key too long for state fails in `process`; its prefetch is just unused.
                let hash = self.state.plain_key_hash(self.batch.get(i).key);
                hashes.push(hash.unwrap_or_default());
            }
        }
        let mut ctx = TaskContext::new(&mut self.state, self.sink.as_mut(), self.id);
        ctx.set_watermark(self.clock.as_ref().and_then(EventClock::watermark));
        for hash in hashes.iter().take(2 * PREFETCH_AHEAD) {
            ctx.prefetch_slot(hash.cache);
        }
        for hash in hashes.iter().take(PREFETCH_AHEAD) {
            ctx.prefetch_entry(hash.cache);
        }
        let mut bad = 0u64;
        let whole_batch = self.clock.is_none() && self.task.processes_batches();
        if whole_batch {
            for (index, reason) in self.task.process_batch(&self.batch, &mut ctx)? {
                bad += 1;
                let offset = index.map(|i| self.batch.get(i).offset);
                log_bad(
                    &mut self.last_bad_log,
                    || tracing::warn!(task = self.id, ?offset, %reason, "skipping bad record (counted in cairn_bad_records_total)"),
                );
            }
        }
        for i in (0..self.batch.len()).filter(|_| !whole_batch) {
            if let Some(hash) = hashes.get(i + 2 * PREFETCH_AHEAD) {
                ctx.prefetch_slot(hash.cache);
            }
            if let Some(hash) = hashes.get(i + PREFETCH_AHEAD) {
                ctx.prefetch_entry(hash.cache);
            }
            let mut record = self.batch.get(i);
            if let Some(&hash) = hashes.get(i) {
                ctx.expect_plain_key(record.key, hash);
            }
            if let Some(clock) = &self.clock {
                match clock.timestamp(&record) {
                    Ok(timestamp) => record.timestamp = Some(timestamp),
                    Err(reason) => {
                        bad += 1;
                        log_bad(
                            &mut self.last_bad_log,
                            || tracing::warn!(task = self.id, partition = record.partition, offset = record.offset, %reason, "skipping a record without a usable timestamp (counted in cairn_bad_records_total)"),
                        );
                        continue;
                    }
                }
            }
            match self.task.process(&record, &mut ctx) {
                Ok(()) => {}
                Err(TaskError::BadRecord { reason }) => {
                    bad += 1;
                    log_bad(
                        &mut self.last_bad_log,
                        || tracing::warn!(task = self.id, partition = record.partition, offset = record.offset, %reason, "skipping bad record (counted in cairn_bad_records_total)"),
                    );
                }
                Err(e) => return Err(e.into()),
            }
            if let (Some(clock), Some(timestamp)) = (&mut self.clock, record.timestamp) {
                if clock.observe(timestamp) {
                    ctx.set_watermark(clock.watermark());
                    bad += fire_due(
                        self.task.as_mut(),
                        &mut ctx,
                        TimeDomain::Event,
                        clock.watermark().unwrap_or(0),
                        usize::MAX,
                        &mut self.last_bad_log,
                    )?;
                }
            }
        }
        let (emitted, late) = (ctx.emitted(), ctx.late());
        let now = Instant::now();
        if let Some(clock) = &mut self.clock {
            clock.saw_records(now);
        }
        self.metrics
            .batch_seconds
            .observe(now.duration_since(started).as_secs_f64());
        self.handles.records_in.inc_by(self.batch.len() as u64);
        self.count_output(emitted, bad, late);
        self.last_record_ms = now_ms();
        if let Some(seconds) = self.recovery.processed() {
            self.handles.resumed_ms.set((seconds * 1000.0) as i64);
            // With the stop's "paused for a stop" line of the previous process, the time the
            // job processed nothing, on wall clocks (docs/benchmarks.md, kind pauses).
            tracing::info!(
                task = self.id,
                unix_ms = self.last_record_ms,
                since_start_ms = (seconds * 1000.0) as u64,
                "first record processed since the process started"
            );
        }
        if let Some(seconds) = self.recovery.caught_up(self.source.position()) {
            self.handles.caught_up_ms.set((seconds * 1000.0) as i64);
        }
        self.load
            .counted(self.batch.len() as u64, now.duration_since(batch_started));
        if poll == Poll::End {
            self.clock_without_records(poll)?;
        }
        Ok(Poll::Records)
    }

    fn run_tick(&mut self) -> Result<(), InstanceError> {
        let Some(due) = self.next_tick else {
            return Ok(());
        };
        if Instant::now() < due {
            return Ok(());
        }
        let mut ctx = TaskContext::new(&mut self.state, self.sink.as_mut(), self.id);
        self.task.on_tick(&mut ctx)?;
        self.next_tick = next_tick_after(self.task.as_ref());
        Ok(())
    }

    /// Fires at most `max` processing-time timers due at `now` (ms since the epoch), earliest
    /// first, at a record boundary: their callbacks' state changes and output belong to the
    /// same checkpoint as the records around them. The rest wait for the next batch, so a
    /// flood of due timers cannot hold off a checkpoint.
    fn fire_processing_timers(&mut self, now: u64, max: usize) -> Result<(), InstanceError> {
        let mut ctx = TaskContext::new(&mut self.state, self.sink.as_mut(), self.id);
        ctx.set_watermark(self.clock.as_ref().and_then(EventClock::watermark));
        let bad = fire_due(
            self.task.as_mut(),
            &mut ctx,
            TimeDomain::Processing,
            now,
            max,
            &mut self.last_bad_log,
        )?;
        let (emitted, late) = (ctx.emitted(), ctx.late());
        self.count_output(emitted, bad, late);
        Ok(())
    }

    /// A poll without records: the end of a finite input moves the watermark to the end of
    /// time (every window closes), a quiet partition past `idleTimeout` moves it with the
    /// clock; either fires the event-time timers it passes.
    fn clock_without_records(&mut self, poll: Poll) -> Result<(), InstanceError> {
        let Some(clock) = &mut self.clock else {
            return Ok(());
        };
        let moved = match poll {
            Poll::End => clock.end(),
            Poll::Idle | Poll::Records => clock.idle(Instant::now()),
        };
        if !moved {
            return Ok(());
        }
        let watermark = clock.watermark();
        let mut ctx = TaskContext::new(&mut self.state, self.sink.as_mut(), self.id);
        ctx.set_watermark(watermark);
        let bad = fire_due(
            self.task.as_mut(),
            &mut ctx,
            TimeDomain::Event,
            watermark.unwrap_or(0),
            usize::MAX,
            &mut self.last_bad_log,
        )?;
        let (emitted, late) = (ctx.emitted(), ctx.late());
        self.count_output(emitted, bad, late);
        Ok(())
    }

    /// Counts what one pass through the task produced: records emitted, records (or timers)
    /// refused as bad, records dropped as late.
    fn count_output(&self, emitted: u64, bad: u64, late: u64) {
        self.handles.records_out.inc_by(emitted);
        if bad > 0 {
            self.handles.bad_records.inc_by(bad);
        }
        if late > 0 {
            self.handles.late_records.inc_by(late);
        }
    }

    /// When the last batch with records was processed (ms since the epoch; 0 before any).
    pub fn last_record_ms(&self) -> u64 {
        self.last_record_ms
    }

    /// The task's watermark (jobs with event time).
    pub fn watermark(&self) -> Option<u64> {
        self.clock.as_ref().and_then(EventClock::watermark)
    }

    /// Leaves the task's progress mark, at most once per [`super::recovery::MARK_PERIOD`].
    pub fn mark_progress(&mut self, now: Instant) {
        self.recovery.mark(self.source.position(), now);
    }

    /// Refreshes the lag and watermark gauges (called about once a second, not per batch).
    pub fn refresh_lag(&self) {
        if let Some(lag) = self.source.lag() {
            self.handles.lag.set(lag as i64);
        }
        if let Some(watermark) = self.watermark().filter(|w| *w != END_OF_TIME) {
            let gauge = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
            self.handles.watermark.set(gauge(watermark));
            self.handles
                .event_time_lag
                .set(gauge(now_ms().saturating_sub(watermark)));
        }
    }

    /// The synchronous phase of checkpoint `id`, at a record boundary: `before_checkpoint`,
    /// record the offsets, freeze the state cache, seal the output. Returns what the
    /// asynchronous phase needs, and the checkpointer to run it with.
    pub fn sync_phase(
        &mut self,
        id: u64,
    ) -> Result<(PhaseInput, Arc<TaskCheckpointer>), InstanceError> {
        let mut ctx = TaskContext::new(&mut self.state, self.sink.as_mut(), self.id);
        self.task.before_checkpoint(&mut ctx)?;
        let offsets = BTreeMap::from([(self.id, self.source.position())]);
        let watermarks = self
            .clock
            .as_ref()
            .and_then(EventClock::checkpointed)
            .map(|w| BTreeMap::from([(self.id, w)]))
            .unwrap_or_default();
        let snapshot = self.state.begin_snapshot().map_err(TaskError::from)?;
        let sealed = self.sink.seal(id)?;
        Ok((
            PhaseInput {
                id,
                snapshot,
                sealed,
                offsets,
                watermarks,
            },
            self.checkpointer.clone(),
        ))
    }

    /// The `Event::Busy` to send now: busy time and records since the last one, and the lag
    /// as last refreshed ([`Self::refresh_lag`]). `None` when there is nothing new: no records,
    /// no busy time and the same lag (an idle task whose backlog grows still reports).
    pub fn take_busy(&mut self) -> Option<Event> {
        let (busy_us, records) = self.load.take_unreported();
        let lag = self.handles.lag.get();
        if busy_us == 0 && records == 0 && self.reported_lag == Some(lag) {
            return None;
        }
        self.reported_lag = Some(lag);
        Some(Event::Busy {
            task: self.id,
            busy_us,
            records,
            lag,
        })
    }

    /// What the task did since its previous checkpoint; called at each synchronous phase.
    pub fn take_load(&mut self, now: Instant) -> TaskLoad {
        self.load.take(now)
    }

    /// Checkpoint `id` is committed: publish its output, then `after_checkpoint`.
    pub fn committed(&mut self, id: u64) -> Result<(), InstanceError> {
        self.metrics.liveness.committed();
        self.sink.publish(id)?;
        self.task.after_checkpoint(id);
        Ok(())
    }

    /// Where the asynchronous phases of this task count failures of its state store.
    pub fn state_failures(&self) -> Arc<StateFailures> {
        self.state_failures.clone()
    }

    /// `Err` once the state store failed [`STATE_FAILURES_TOLERATED`] checkpoints in a row.
    pub fn check_state_store(&self) -> Result<(), InstanceError> {
        match self.state_failures.too_many() {
            Some((failures, last)) => Err(InstanceError::StateStoreBroken {
                task: self.id,
                failures,
                last,
            }),
            None => Ok(()),
        }
    }

    /// The job stopped: nothing commits any more, and the liveness probe must not hold that
    /// against a process that holds after the stop.
    pub fn job_stopped(&self) {
        self.metrics.liveness.stopped();
    }
}

/// Fires the timers of `domain` due at `now`, at most `max`, earliest first; returns how
/// many callbacks refused theirs as bad (counted like bad records).
fn fire_due(
    task: &mut dyn StreamTask,
    ctx: &mut TaskContext<'_>,
    domain: TimeDomain,
    now: u64,
    max: usize,
    last_bad_log: &mut Option<Instant>,
) -> Result<u64, InstanceError> {
    let mut bad = 0;
    for _ in 0..max {
        let Some((key, timer)) = ctx.pop_due_timer(domain, now)? else {
            break;
        };
        match task.on_timer(&key, timer, ctx) {
            Ok(()) => {}
            Err(TaskError::BadRecord { reason }) => {
                bad += 1;
                log_bad(
                    last_bad_log,
                    || tracing::warn!(task = ctx.task_id(), ?timer, %reason, "skipping a timer whose callback refused it (counted in cairn_bad_records_total)"),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bad)
}

/// Logs through `log` at most once a second per task: a flood of bad input must not become a
/// flood of logs.
fn log_bad(last: &mut Option<Instant>, log: impl FnOnce()) {
    if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
        *last = Some(Instant::now());
        log();
    }
}

/// When the task's tick comes next, if it has one. An interval too long to add to the clock
/// (a task may return any `Duration`) means the tick never comes, instead of a panic.
fn next_tick_after(task: &dyn StreamTask) -> Option<Instant> {
    task.tick_interval()
        .and_then(|d| Instant::now().checked_add(d))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::task::Record;

    /// A task whose tick interval is whatever the test says.
    struct Every(Duration);

    impl StreamTask for Every {
        fn process(&mut self, _: &Record<'_>, _: &mut TaskContext<'_>) -> Result<(), TaskError> {
            Ok(())
        }

        fn tick_interval(&self) -> Option<Duration> {
            Some(self.0)
        }
    }

    /// The checkpoint window and the `Busy` reports count the same batches independently:
    /// taking one leaves the other whole.
    #[test]
    fn busy_reports_and_checkpoint_windows_count_independently() {
        let mut meter = LoadMeter::new();
        meter.counted(10, Duration::from_micros(300));
        assert_eq!(meter.take_unreported(), (300, 10));
        meter.counted(5, Duration::from_micros(100));
        let load = meter.take(Instant::now());
        assert_eq!((load.records, load.busy_us), (15, 400));
        assert_eq!(meter.take_unreported(), (100, 5));
        assert_eq!(meter.take_unreported(), (0, 0));
    }

    #[test]
    fn a_tick_interval_too_long_for_the_clock_never_comes_instead_of_panicking() {
        assert_eq!(next_tick_after(&Every(Duration::MAX)), None);
        let before = Instant::now();
        let due = next_tick_after(&Every(Duration::from_secs(3600))).expect("representable");
        assert!(due >= before + Duration::from_secs(3600));
    }
}

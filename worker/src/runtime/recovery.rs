//! Recovery, measured: what a start after a failure cost, seen from the worker.
//!
//! Each task leaves a *progress mark* in its local directory about once a second: its input
//! position and the time. A process that starts on the same directory (a restarted container
//! with the same volume, a local re-run) reads the marks the previous run left, and learns:
//! - **detect**: how long before this start the previous run was last seen alive. It covers
//!   the failure, its detection (a kubelet restart, a supervisor) and this process's start-up,
//!   and overstates them by at most the mark period;
//! - **replay**: how many input offsets lie between the restored checkpoint and where the
//!   previous run had got to, which this run processes again. It understates them by at most
//!   the input of one mark period.
//!
//! With the bytes fetched, the restore's duration and the time until each task processes a
//! record again, these are exported as `cairn_recovery_*` metrics and in `/v1/status`.
//! Without marks (a first start, a pod rescheduled onto an empty volume) detect and replay are
//! unknown: -1 in the metrics, absent in the status. docs/recovery.md has the whole picture.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_contract::control::Recovery;

use crate::checkpoint::now_ms;
use crate::checkpoint::start::PROGRESS_MARK_FILE as MARK_FILE;
use crate::metrics::Metrics;

/// How often a task leaves its mark (the precision of detect and replay).
pub const MARK_PERIOD: Duration = Duration::from_secs(1);

/// A mark is two numbers; anything longer is not one of ours.
const MARK_MAX_BYTES: u64 = 64;

/// Where a task had got to, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressMark {
    /// The input offset of the next record to read.
    pub position: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Writes and reads one task's mark.
#[derive(Debug, Clone)]
pub struct MarkFile {
    path: PathBuf,
}

impl MarkFile {
    /// The mark of the task whose local directory is `task_dir`.
    pub fn in_task_dir(task_dir: &Path) -> Self {
        MarkFile {
            path: task_dir.join(MARK_FILE),
        }
    }

    /// Replaces the mark (a new file renamed over the old one, so a reader never sees half a
    /// mark). Not synced: the mark must survive the process, not the machine.
    pub fn write(&self, mark: ProgressMark) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {}\n", mark.position, mark.at_ms))?;
        std::fs::rename(&tmp, &self.path)
    }

    /// The mark a previous run left; `None` when there is none or it is not a mark (a file
    /// someone else wrote is read no further than [`MARK_MAX_BYTES`]).
    pub fn read(&self) -> Option<ProgressMark> {
        let mut text = String::new();
        std::fs::File::open(&self.path)
            .ok()?
            .take(MARK_MAX_BYTES + 1)
            .read_to_string(&mut text)
            .ok()?;
        if text.len() as u64 > MARK_MAX_BYTES {
            return None;
        }
        let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
        let mark = ProgressMark {
            position: fields.next()?.ok()?,
            at_ms: fields.next()?.ok()?,
        };
        fields.next().is_none().then_some(mark)
    }
}

/// What one task's restore found: its restored offset and the previous run's mark.
#[derive(Debug, Clone, Copy)]
pub struct TaskRestart {
    /// Task id.
    pub task: u32,
    /// The offset the task resumes from.
    pub offset: u64,
    /// The previous run's last mark, if it left one.
    pub previous: Option<ProgressMark>,
}

/// Sums up a start: `tasks` are this process's tasks, `started_at_ms` when it started.
pub fn summarize(
    tasks: &[TaskRestart],
    started_at_ms: u64,
    fetched_bytes: u64,
    restore: Duration,
) -> Recovery {
    let last_seen = tasks
        .iter()
        .filter_map(|t| t.previous)
        .map(|m| m.at_ms)
        .max();
    // Replay is known only if every task has a mark: a missing one would make the sum short.
    let replay = tasks
        .iter()
        .map(|t| t.previous.map(|m| m.position.saturating_sub(t.offset)))
        .sum::<Option<u64>>()
        .filter(|_| !tasks.is_empty());
    Recovery {
        detect_ms: last_seen.map(|at| started_at_ms.saturating_sub(at)),
        fetched_bytes,
        restore_ms: restore.as_millis() as u64,
        replay_offsets: replay,
    }
}

/// Exports a start's summary in the metrics.
pub fn export(metrics: &Metrics, recovery: &Recovery) {
    let or_unknown = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    metrics
        .recovery_detect_seconds
        .set(recovery.detect_ms.map_or(-1.0, |ms| ms as f64 / 1000.0));
    metrics
        .recovery_fetched_bytes
        .set(i64::try_from(recovery.fetched_bytes).unwrap_or(i64::MAX));
    metrics
        .restore_seconds
        .set(recovery.restore_ms as f64 / 1000.0);
    metrics
        .recovery_replay_offsets
        .set(or_unknown(recovery.replay_offsets));
}

/// One task's side of the measurement while it runs: its mark, when it first processed a
/// record in this run, and when it got back to where the previous run had got to.
#[derive(Debug)]
pub struct TaskRecovery {
    mark: MarkFile,
    last_mark: Option<Instant>,
    process_started: Instant,
    resumed: bool,
    /// The previous run's last position, until this run has passed it.
    catch_up_to: Option<u64>,
}

impl TaskRecovery {
    /// `process_started`: when this process started, the origin of the times to resume and to
    /// catch up. `previous`: the mark the previous run left, if any.
    pub fn new(mark: MarkFile, process_started: Instant, previous: Option<ProgressMark>) -> Self {
        TaskRecovery {
            mark,
            last_mark: None,
            process_started,
            resumed: false,
            catch_up_to: previous.map(|m| m.position),
        }
    }

    /// Called after each batch with the input position: the first time it reaches the
    /// previous run's last position gives the time to catch up (seconds since the process
    /// started), once. The end of recovery as docs/recovery.md defines it.
    pub fn caught_up(&mut self, position: u64) -> Option<f64> {
        let target = self.catch_up_to?;
        if position < target {
            return None;
        }
        self.catch_up_to = None;
        Some(self.process_started.elapsed().as_secs_f64())
    }

    /// Called after each batch with records: the first one gives the time to resume (seconds
    /// since the process started), once.
    pub fn processed(&mut self) -> Option<f64> {
        if self.resumed {
            return None;
        }
        self.resumed = true;
        Some(self.process_started.elapsed().as_secs_f64())
    }

    /// Leaves a mark at `position` if the last one is a period old. A failed write is logged
    /// once and costs nothing else: the mark only measures.
    pub fn mark(&mut self, position: u64, now: Instant) {
        if self
            .last_mark
            .is_some_and(|at| now.duration_since(at) < MARK_PERIOD)
        {
            return;
        }
        let first = self.last_mark.is_none();
        self.last_mark = Some(now);
        let mark = ProgressMark {
            position,
            at_ms: now_ms(),
        };
        if let Err(e) = self.mark.write(mark) {
            if first {
                tracing::warn!(path = %self.mark.path.display(), error = %e, "cannot write the task's progress mark; the next restart will not know its detect time and replay");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_nothing_else_does() {
        let tmp = tempfile::tempdir().unwrap();
        let file = MarkFile::in_task_dir(tmp.path());
        assert_eq!(file.read(), None);
        let mark = ProgressMark {
            position: 42,
            at_ms: 1_700_000_000_000,
        };
        file.write(mark).unwrap();
        assert_eq!(file.read(), Some(mark));
        for junk in [
            "",
            "42",
            "42 x",
            "-1 5",
            "1 2 3",
            "18446744073709551616 1",
            &"9".repeat(100),
        ] {
            std::fs::write(tmp.path().join(MARK_FILE), junk).unwrap();
            assert_eq!(file.read(), None, "{junk:?}");
        }
    }

    #[test]
    fn detect_and_replay_come_from_the_marks() {
        let mark = |position, at_ms| Some(ProgressMark { position, at_ms });
        let tasks = [
            TaskRestart {
                task: 0,
                offset: 100,
                previous: mark(250, 9_000),
            },
            TaskRestart {
                task: 0,
                offset: 80,
                previous: mark(80, 9_400),
            },
            // A mark older than the checkpoint: nothing to replay, not a negative count.
            TaskRestart {
                task: 0,
                offset: 500,
                previous: mark(400, 8_000),
            },
        ];
        let r = summarize(&tasks, 10_000, 7, Duration::from_millis(300));
        assert_eq!(r.detect_ms, Some(600));
        assert_eq!(r.replay_offsets, Some(150));
        assert_eq!((r.fetched_bytes, r.restore_ms), (7, 300));

        let one_unmarked = [
            tasks[0],
            TaskRestart {
                task: 0,
                offset: 0,
                previous: None,
            },
        ];
        let r = summarize(&one_unmarked, 10_000, 0, Duration::ZERO);
        assert_eq!((r.detect_ms, r.replay_offsets), (Some(1_000), None));
        let r = summarize(&[], 10_000, 0, Duration::ZERO);
        assert_eq!((r.detect_ms, r.replay_offsets), (None, None));
    }

    #[test]
    fn a_task_marks_once_a_period_and_resumes_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = MarkFile::in_task_dir(tmp.path());
        let started = Instant::now();
        let previous = ProgressMark {
            position: 25,
            at_ms: 0,
        };
        let mut task = TaskRecovery::new(file.clone(), started, Some(previous));
        task.mark(10, started);
        task.mark(20, started + MARK_PERIOD / 2);
        assert_eq!(file.read().map(|m| m.position), Some(10));
        task.mark(30, started + MARK_PERIOD);
        assert_eq!(file.read().map(|m| m.position), Some(30));
        assert!(task.processed().is_some());
        assert_eq!(task.processed(), None);
        assert_eq!(task.caught_up(24), None);
        assert!(task.caught_up(25).is_some());
        assert_eq!(task.caught_up(26), None, "once");
        let mut unmarked = TaskRecovery::new(file, started, None);
        assert_eq!(
            unmarked.caught_up(u64::MAX),
            None,
            "nothing to catch up to is unknown"
        );
    }
}

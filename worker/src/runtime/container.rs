//! A container: one thread that runs a group of task instances round-robin (Samza's run loop)
//! and carries out the coordinator's commands at record boundaries.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::failure::TaskFailure;
use super::messages::{Command, Event};
use super::task_instance::TaskInstance;
use crate::source::Poll;

/// Records per batch: large enough to amortise per-batch work, small enough that a checkpoint
/// request waits well under a millisecond for the record boundary.
pub const BATCH: usize = 1024;
/// How long an idle container waits for a command before polling its sources again.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// Runs `tasks` until told to stop. Returns when the coordinator sends `Stop` or `Shutdown`, or
/// after reporting a failure.
pub fn run(
    mut tasks: Vec<TaskInstance>,
    commands: Receiver<Command>,
    events: UnboundedSender<Event>,
    runtime: tokio::runtime::Handle,
) {
    let mut paused = false;
    let mut last_lag = Instant::now();
    loop {
        // Commands first: they are handled between batches, i.e. at record boundaries.
        loop {
            match commands.try_recv() {
                Ok(cmd) => {
                    if !handle(cmd, &mut tasks, &mut paused, &events, &runtime) {
                        return;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        // A task whose state store keeps failing stops here: its process exits with the error
        // and restarts from the last committed checkpoint.
        if let Some((task, e)) = tasks
            .iter()
            .find_map(|t| t.check_state_store().err().map(|e| (t.id, e)))
        {
            tracing::error!(task, error = %e, "task failed");
            let _ = events.send(Event::Failed {
                task,
                failure: TaskFailure::from(&e),
            });
            return;
        }
        let mut busy = false;
        if !paused {
            for t in tasks.iter_mut().filter(|t| !t.finished) {
                match t.run_batch(BATCH) {
                    Ok(Poll::Records) => busy = true,
                    Ok(Poll::Idle) => {}
                    Ok(Poll::End) => {
                        t.finished = true;
                        // Its last records and its final lag first: the coordinator ends the
                        // run once every task finished, and the status reports tasks of other
                        // processes from these totals.
                        t.refresh_lag();
                        report_busy(t, &events);
                        let _ = events.send(Event::Finished(t.id));
                    }
                    Err(e) => {
                        tracing::error!(task = t.id, error = %e, "task failed");
                        let _ = events.send(Event::Failed {
                            task: t.id,
                            failure: TaskFailure::from(&e),
                        });
                        return;
                    }
                }
            }
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = Instant::now();
            tasks.iter().for_each(TaskInstance::refresh_lag);
            tasks.iter_mut().for_each(|t| t.mark_progress(last_lag));
            tasks.iter_mut().for_each(|t| report_busy(t, &events));
        }
        if !busy {
            match commands.recv_timeout(IDLE_WAIT) {
                Ok(cmd) => {
                    if !handle(cmd, &mut tasks, &mut paused, &events, &runtime) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Sends the task's `Event::Busy`, if it has anything new to report.
fn report_busy(task: &mut TaskInstance, events: &UnboundedSender<Event>) {
    if let Some(busy) = task.take_busy() {
        let _ = events.send(busy);
    }
}

/// Carries out one command; false means leave the run loop.
fn handle(
    cmd: Command,
    tasks: &mut [TaskInstance],
    paused: &mut bool,
    events: &UnboundedSender<Event>,
    runtime: &tokio::runtime::Handle,
) -> bool {
    match cmd {
        Command::Checkpoint { id, pause } => {
            for t in tasks.iter_mut() {
                if pause {
                    // The run's last records before it stops (a stop, or a stop with a
                    // savepoint): reported ahead of the acknowledgement, so the totals the
                    // status shows once the run has stopped are complete.
                    t.refresh_lag();
                    report_busy(t, events);
                    // The start of the pause a stop (upgrade, rescale, repartition) causes:
                    // the successor logs its first record (task_instance.rs).
                    tracing::info!(
                        task = t.id,
                        checkpoint = id,
                        last_record_unix_ms = t.last_record_ms(),
                        "paused for a stop; no record is processed after this checkpoint"
                    );
                }
                let started = Instant::now();
                let load = t.take_load(started);
                match t.sync_phase(id) {
                    Ok((input, checkpointer)) => {
                        let sync_seconds = started.elapsed().as_secs_f64();
                        let events = events.clone();
                        let task = t.id;
                        let state_failures = t.state_failures();
                        runtime.spawn(async move {
                            let result = checkpointer.run(input).await;
                            // Counted before the acknowledgement, so the container sees it
                            // no later than the coordinator's answer.
                            state_failures.record(&result);
                            let result = result.map_err(|e| TaskFailure::from(&e));
                            let _ = events.send(Event::Ack {
                                task,
                                checkpoint: id,
                                result,
                                sync_seconds,
                                load,
                            });
                        });
                    }
                    Err(e) => {
                        let _ = events.send(Event::Ack {
                            task: t.id,
                            checkpoint: id,
                            result: Err(TaskFailure::from(&e)),
                            sync_seconds: started.elapsed().as_secs_f64(),
                            load,
                        });
                    }
                }
            }
            *paused |= pause;
            true
        }
        Command::Committed(id) => {
            for t in tasks.iter_mut() {
                if let Err(e) = t.committed(id) {
                    tracing::error!(task = t.id, error = %e, "publishing committed output failed");
                    let _ = events.send(Event::Failed {
                        task: t.id,
                        failure: TaskFailure::from(&e),
                    });
                    return false;
                }
            }
            true
        }
        Command::Aborted(_) | Command::Restore { .. } | Command::Follow(_) => true,
        Command::Resume => {
            *paused = false;
            true
        }
        Command::Stop | Command::Shutdown => {
            tasks.iter().for_each(TaskInstance::job_stopped);
            false
        }
    }
}

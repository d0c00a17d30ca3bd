//! Live progress for a person watching `cairn-worker run`: one line a second on a terminal,
//! one log line every ten seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::now_ms;
use crate::metrics::Metrics;
use crate::runtime::job_progress::JobProgress;

/// The running progress reporter.
pub struct ProgressThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ProgressThread {
    /// Stops the reporter and ends its line.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn total(m: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    m.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|x| x.get_counter().get_value() as u64)
        .sum()
}

/// Starts the reporter.
pub fn spawn(metrics: Arc<Metrics>, progress: Arc<JobProgress>) -> ProgressThread {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let tty = std::io::stderr().is_terminal();
        let period = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let mut last = (Instant::now(), total(&metrics.records_in));
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.0.elapsed() < period {
                continue;
            }
            let records = total(&metrics.records_in);
            let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), records);
            let checkpoint = match progress
                .last_committed
                .lock()
                .expect("progress lock")
                .clone()
            {
                Some(c) => format!(
                    "checkpoint {} committed {:.0}s ago ({})",
                    c.id,
                    now_ms().saturating_sub(c.committed_at_ms) as f64 / 1000.0,
                    human_bytes(c.total_bytes)
                ),
                None => "no checkpoint yet".to_owned(),
            };
            let line = format!("records {records} ({:.0}/s) | {checkpoint}", rate);
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else {
                tracing::info!("{line}");
            }
        }
        if tty {
            eprintln!();
        }
    });
    ProgressThread { stop, thread }
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

//! `cairn-bench objective`: the recovery-time objective (`checkpoint.targetRecoveryTime`,
//! docs/recovery.md) while the input rate doubles and halves.
//!
//! The job is the builtin `count` over a followed `file` input of two partitions, with
//! `targetRecoveryTime` set: its coordinator predicts the recovery time after each commit and
//! picks the checkpoint interval. A writer thread in this process appends lines to the
//! partition files every 10 ms at the phase's rate, like a producer: it keeps writing while the
//! worker is dead. The worker runs in a child process (this binary, `recovery-child`) with its
//! metrics on loopback, as in `cairn-bench recovery`.
//!
//! Before the phases, a backlog of [`PREFILL`] lines is processed at full speed: the records/s
//! it goes at is the job's capacity on this machine, so `rate / capacity` is about the busy
//! fraction the coordinator should see.
//!
//! Each phase runs at a multiple of the base rate R and ends with a kill aimed at the worst
//! moment, just before a commit (wait for a commit, then for the interval it chose less
//! [`KILL_EARLY`]):
//! - a *steady* phase (`2R`): `phase-secs` after the rate change, when the coordinator has
//!   adapted the interval to the rate;
//! - a *rise* phase (`2R:rise`): the rate changes right after a commit, and the kill lands
//!   just before the next one, before the coordinator has seen the new rate at all: the
//!   interval in force is the one chosen for the previous rate. This is the worst case of a
//!   rate increase.
//!
//! The default, `R,2R:rise,2R,R,4R:rise`, doubles the rate, holds it, halves it, then
//! quadruples it. The worker is SIGKILLed and restarted at once on the same directory, as
//! a kubelet restarts a container with the same volume. Recovery, as docs/recovery.md defines
//! it, runs until every task is back at the input position the killed process had reached; it
//! is measured on this process's clock in two ways:
//! - *back at the kill position*: each task's position (restored checkpoint offset + records
//!   read since) reaches the position it had when killed (the offset it had reached according
//!   to a scrape of its records counter just before the kill). Lines have a fixed width, so
//!   byte offsets and record counts convert exactly;
//! - *back at the last mark*: every task's `cairn_task_caught_up_milliseconds` is set, i.e. the
//!   worker saw itself pass the previous run's last progress mark (written about once a second,
//!   so up to a second of input before the kill).
//!
//! and from the worker's side as `cairn_recovery_detect_seconds` (last mark -> process start)
//! plus the longest caught-up time (process start -> past the mark). A restarted worker starts
//! again from the first interval: before a phase that changes the rate (or is a rise), the
//! restarted worker runs on at the old rate until its interval is stable again (three commits,
//! the last two within 20%; at most 60 s), so that the rate change meets a settled interval.
//!
//! Every 5 s the input below the newest checkpoint is punched out of the files (`fallocate
//! --punch-hole`): offsets stay valid, and a run at millions of records/s does not leave
//! gigabytes on the disk or in dirty pages that the checkpoints' syncs would wait behind.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_contract::units::format_duration;
use cairn_worker::checkpoint::{catalog, now_ms};
use cairn_worker::partition::{mix64, partition_of};
use cairn_worker::storage::CheckpointStore;

use crate::block_on;
use crate::recovery::{scrape, spawn_child, values};

pub(crate) const PARTITIONS: usize = 2;
/// The writer appends every this often.
const CHUNK: Duration = Duration::from_millis(10);
/// The kill lands this long before the next commit would (the commit after the one awaited is
/// due an interval after it, plus that checkpoint's own duration).
const KILL_EARLY: Duration = Duration::from_millis(300);
/// Metrics are polled this often while a commit or a recovery is awaited...
const FINE: Duration = Duration::from_millis(10);
/// ...and this often otherwise.
const COARSE: Duration = Duration::from_millis(100);
/// A recovery taking longer than this is reported as not finished.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// Lines written before the worker starts, processed at full speed to measure the capacity.
const PREFILL: u64 = 20_000_000;
/// A restarted worker starts again from the first interval, its first busy fraction includes
/// the catch-up, and it lengthens the interval at most twofold per commit: the next phase
/// changes the rate only once it has committed [`SETTLE_COMMITS`] times and the last two
/// commits chose intervals within this fraction of each other (the busy fraction measured
/// between two commits varies by some 10% at a steady rate)...
const SETTLED_WITHIN: f64 = 0.2;
const SETTLE_COMMITS: f64 = 3.0;
/// ...or this long after the recovery at the latest.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How often the input already covered by the newest checkpoint is punched out of the
/// partition files, so that the run does not leave gigabytes of input on the disk.
const PUNCH_EVERY: Duration = Duration::from_secs(5);

pub struct Options {
    pub target: Duration,
    /// Records/s over both partitions at 1R.
    pub rate: u64,
    /// Seconds from the rate change of a steady phase to aiming its kill.
    pub phase_secs: u64,
    /// The phases: comma-separated multiples of `rate`, `2R` (steady) or `2R:rise`.
    pub phases: String,
    pub keys: u64,
}

struct Phase {
    /// `2R` or `2R:rise`.
    name: String,
    rate: u64,
    /// Killed before the first commit after the rate change (else `phase_secs` after it).
    rise: bool,
}

/// Parses `R,2R:rise,...` (multiples of `rate`).
fn parse_phases(text: &str, rate: u64) -> Vec<Phase> {
    text.split(',')
        .map(|item| {
            let item = item.trim();
            let (multiple, kind) = item.split_once(':').unwrap_or((item, "steady"));
            let factor = match multiple.strip_suffix('R') {
                Some("") => 1,
                Some(n) => n
                    .parse()
                    .unwrap_or_else(|_| panic!("phase `{item}`: expected e.g. 2R")),
                None => panic!("phase `{item}`: expected e.g. 2R or 2R:rise"),
            };
            let rise = match kind {
                "steady" => false,
                "rise" => true,
                other => panic!("phase `{item}`: `{other}` is neither steady nor rise"),
            };
            Phase {
                name: item.to_owned(),
                rate: factor * rate,
                rise,
            }
        })
        .collect()
}

/// What one kill and recovery showed.
struct Kill {
    phase: usize,
    at: Instant,
    at_wall_ms: u64,
    /// The commit awaited before aiming: the kill should land before the next one.
    aimed_after: u64,
    /// Interval in force and predicted recovery, scraped just before the kill.
    interval: f64,
    predicted: f64,
    /// Where each task had got to (records from the start of its file).
    positions: [u64; PARTITIONS],
    /// The checkpoint the restarted worker restores, and when it was triggered.
    restored: u64,
    restored_trigger_ms: u64,
    back_at_mark: Option<f64>,
    back_at_kill: Option<f64>,
    detect: f64,
    caught_up: f64,
    restore: f64,
    replay_offsets: f64,
}

enum Stage {
    /// The backlog: 10% and 90% of it processed at these instants.
    Prefill {
        lo: Option<Instant>,
        hi: Option<Instant>,
    },
    Steady {
        until: Instant,
    },
    /// `rise`: the next phase, a rise, begins at the commit.
    AwaitCommit {
        seen: Option<f64>,
        rise: bool,
    },
    /// A commit was seen at `seen_at`; the interval it chose is read from the next scrape.
    AwaitInterval {
        seen_at: Instant,
        id: u64,
        rise: bool,
    },
    Aim {
        at: Instant,
        id: u64,
    },
    Recovering(Box<Kill>),
    /// The restarted worker runs on at the phase's rate until its interval is stable.
    Settle {
        until: Instant,
        seen: Option<f64>,
        /// The last commit was seen then: the interval it chose is read from the next scrape.
        pending: Option<Instant>,
        last: Option<f64>,
    },
    Done,
}

/// One scrape of the worker's metrics.
#[derive(Debug, Clone, Default)]
struct Snap {
    records_in: BTreeMap<u32, f64>,
    caught_up: BTreeMap<u32, f64>,
    interval: Option<f64>,
    predicted: Option<f64>,
    committed: Option<f64>,
    /// Checkpoints this worker process committed.
    commits: Option<f64>,
    detect: Option<f64>,
    restore: Option<f64>,
    replay: Option<f64>,
}

impl Snap {
    fn parse(text: &str) -> Snap {
        let one = |name| values(text, name).first().copied();
        Snap {
            records_in: per_task(text, "cairn_records_in_total"),
            caught_up: per_task(text, "cairn_task_caught_up_milliseconds"),
            interval: one("cairn_checkpoint_interval_seconds"),
            predicted: one("cairn_recovery_predicted_seconds"),
            committed: one("cairn_checkpoint_last_committed_id"),
            commits: one("cairn_checkpoints_total{result=\"committed\"}"),
            detect: one("cairn_recovery_detect_seconds"),
            restore: one("cairn_restore_seconds"),
            replay: one("cairn_recovery_replay_offsets"),
        }
    }

    /// Records read by each task in this run, once every task reports.
    fn records(&self) -> Option<[u64; PARTITIONS]> {
        let mut out = [0; PARTITIONS];
        for (t, slot) in out.iter_mut().enumerate() {
            *slot = *self.records_in.get(&(t as u32))? as u64;
        }
        Some(out)
    }

    fn total(&self) -> u64 {
        self.records_in.values().sum::<f64>() as u64
    }
}

/// The values of metric `name` by its `task` label.
pub(crate) fn per_task(text: &str, name: &str) -> BTreeMap<u32, f64> {
    text.lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            let task = labels
                .split(',')
                .find_map(|l| l.strip_prefix("task=\"")?.strip_suffix('"')?.parse().ok())?;
            Some((task, value.trim().parse().ok()?))
        })
        .collect()
}

/// The worker process; killed when dropped (also on a panic of the benchmark).
struct Worker {
    child: Option<Child>,
    dir: PathBuf,
    yaml: PathBuf,
    addr: SocketAddr,
}

impl Worker {
    fn start(dir: &Path, yaml: &Path, addr: SocketAddr) -> Worker {
        Worker {
            child: Some(spawn_child(dir, yaml, addr)),
            dir: dir.to_path_buf(),
            yaml: yaml.to_path_buf(),
            addr,
        }
    }

    fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("worker running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the benchmark's worker exited by itself: {status}");
        }
    }

    /// SIGKILL; returns the instant right after the signal was sent.
    fn kill(&mut self) -> Instant {
        let mut child = self.child.take().expect("worker running");
        child.kill().expect("SIGKILL the worker");
        let at = Instant::now();
        child.wait().expect("reap the worker");
        at
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.child = Some(spawn_child(&self.dir, &self.yaml, self.addr));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The input's lines: `k<id>\n` with the id zero-padded to the width of the largest, so every
/// line has the same length and byte offsets convert to record counts.
#[derive(Clone, Copy)]
pub(crate) struct Lines {
    keys: u64,
    width: usize,
}

impl Lines {
    pub(crate) fn new(keys: u64) -> Lines {
        Lines {
            keys,
            width: (keys.max(2) - 1).to_string().len(),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.width as u64 + 2
    }
}

/// Appends lines to the partition files; shared counters say how many each holds.
struct Gen {
    lines: Lines,
    files: Vec<File>,
    bufs: Vec<Vec<u8>>,
    seq: u64,
    written: Arc<[AtomicU64; PARTITIONS]>,
}

impl Gen {
    /// `n` more lines, with pseudo-random keys. Each goes to the partition the worker's
    /// partition function gives its key, as a keyed producer would route it (the `count` task
    /// would count right wherever a key went; routing keeps each key's state in one task).
    fn write(&mut self, n: u64) {
        let mut key = vec![b'0'; self.lines.width + 1];
        key[0] = b'k';
        let mut counts = [0u64; PARTITIONS];
        for _ in 0..n {
            let mut id = mix64(self.seq ^ 0x5eed) % self.lines.keys;
            self.seq += 1;
            for d in key[1..].iter_mut().rev() {
                *d = b'0' + (id % 10) as u8;
                id /= 10;
            }
            let p = partition_of(&key, PARTITIONS as u32) as usize;
            self.bufs[p].extend_from_slice(&key);
            self.bufs[p].push(b'\n');
            counts[p] += 1;
        }
        for (p, buf) in self.bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                self.files[p].write_all(buf).expect("append to the input");
                buf.clear();
                self.written[p].fetch_add(counts[p], Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread: every [`CHUNK`], the lines owed at the current rate.
pub(crate) struct Writer {
    rate: Arc<AtomicU64>,
    written: Arc<[AtomicU64; PARTITIONS]>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Writes `prefill` lines at once, then keeps writing at `rate` records/s.
    pub(crate) fn start(dir: &Path, lines: Lines, prefill: u64, rate: u64) -> Writer {
        let written: Arc<[AtomicU64; PARTITIONS]> = Arc::new(Default::default());
        let mut gen = Gen {
            lines,
            files: (0..PARTITIONS)
                .map(|p| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join(format!("partition-{p}")))
                        .expect("input file")
                })
                .collect(),
            bufs: (0..PARTITIONS)
                .map(|_| Vec::with_capacity(1 << 20))
                .collect(),
            seq: 0,
            written: written.clone(),
        };
        for _ in 0..prefill / 100_000 {
            gen.write(100_000);
        }
        gen.write(prefill % 100_000);
        let rate = Arc::new(AtomicU64::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (rate, stop) = (rate.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut owed = 0.0f64;
                let mut last = Instant::now();
                let mut next = last + CHUNK;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += CHUNK;
                    let now = Instant::now();
                    owed += rate.load(Ordering::Relaxed) as f64
                        * now.duration_since(last).as_secs_f64();
                    last = now;
                    let n = owed as u64;
                    owed -= n as f64;
                    gen.write(n);
                }
            })
        };
        Writer {
            rate,
            written,
            stop,
            thread: Some(thread),
        }
    }

    fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    pub(crate) fn written(&self) -> [u64; PARTITIONS] {
        std::array::from_fn(|p| self.written[p].load(Ordering::Relaxed))
    }

    pub(crate) fn assert_alive(&self) {
        assert!(
            !self.thread.as_ref().is_some_and(|t| t.is_finished()),
            "the input writer stopped"
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The newest committed checkpoint (the one a restart restores): its id, when it was
/// triggered, and each task's offset in records. `None` before the first commit, or if the
/// catalog changed under the read (retention).
pub(crate) fn newest_checkpoint(dir: &Path, lines: Lines) -> Option<(u64, u64, [u64; PARTITIONS])> {
    let store = CheckpointStore::from_url("file://./ckpt", dir).unwrap();
    let record = block_on(async {
        let id = *catalog::committed_ids(&store).await.ok()?.last()?;
        catalog::load_commit(&store, id).await.ok()
    })?;
    let mut offsets = [0; PARTITIONS];
    for t in &record.tasks {
        for (p, offset) in &t.offsets {
            assert_eq!(offset % lines.len(), 0, "an offset between lines");
            offsets[*p as usize] = offset / lines.len();
        }
    }
    Some((record.checkpoint, record.triggered_at_ms, offsets))
}

/// Frees the input below the newest checkpoint's offsets (`fallocate --punch-hole`: the files
/// keep their size and offsets, the blocks and cached pages go). No restart reads there.
/// Returns false if the file system cannot punch holes.
fn punch_consumed(dir: &Path, input: &Path, lines: Lines) -> bool {
    let Some((_, _, offsets)) = newest_checkpoint(dir, lines) else {
        return true;
    };
    (0..PARTITIONS).all(|p| {
        let bytes = offsets[p] * lines.len() / 4096 * 4096;
        bytes == 0
            || std::process::Command::new("fallocate")
                .args(["--punch-hole", "--offset", "0", "--length"])
                .arg(bytes.to_string())
                .arg(input.join(format!("partition-{p}")))
                .status()
                .is_ok_and(|s| s.success())
    })
}

pub(crate) fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Aims the kill just before the commit after the one seen at `seen_at`, which chose
/// `interval`: the next checkpoint is triggered an interval after this one was, and commits
/// about as long after its trigger as this one did.
fn aim(seen_at: Instant, id: u64, interval: f64, now: Instant, events: &mut Vec<String>) -> Stage {
    let at = seen_at + Duration::from_secs_f64(interval).saturating_sub(KILL_EARLY);
    events.push(format!(
        "commit {id}; kill in {:.2} s",
        at.saturating_duration_since(now).as_secs_f64()
    ));
    Stage::Aim { at, id }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

pub fn objective(scratch: &Path, o: &Options) {
    let phases = parse_phases(&o.phases, o.rate);
    assert!(
        phases.first().is_some_and(|p| !p.rise),
        "the first phase cannot be a rise: there is no rate before it"
    );
    let dir = scratch.join("objective");
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let lines = Lines::new(o.keys);
    let target = o.target.as_secs_f64();
    let yaml = dir.join("job.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: bench-objective\ninput: {{type: file, partitions: {PARTITIONS}, path: \"{}\", follow: true}}\n\
             task: {{name: count}}\noutput: {{type: \"null\"}}\nparallelism: {PARTITIONS}\n\
             checkpoint: {{interval: 5s, targetRecoveryTime: {}, minInterval: 1s, maxInterval: 60s, store: \"file://./ckpt\"}}\n\
             state: {{dir: ./state, cacheSize: 64MiB}}\n",
            input.display(),
            format_duration(o.target)
        ),
    )
    .unwrap();
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };

    println!(
        "\n### recovery-time objective under a changing input rate ({})\n",
        date()
    );
    println!(
        "job: `count` over a followed `file` input, {PARTITIONS} partitions, parallelism {PARTITIONS}, {} keys, {}-byte lines; \
         checkpoint: interval 5s (the first), targetRecoveryTime {}, minInterval 1s, maxInterval 60s, file:// store. \
         Phases: {}. Each ends with a SIGKILL aimed {:.1} s before a commit and an immediate restart on the same volume.\n",
        o.keys,
        lines.len(),
        format_duration(o.target),
        phases
            .iter()
            .map(|p| format!(
                "{} = {} rec/s, {}",
                p.name,
                p.rate,
                if p.rise {
                    "the rate changes right after a commit, killed before the next".to_owned()
                } else {
                    format!("killed {} s after the rate change", o.phase_secs)
                }
            ))
            .collect::<Vec<_>>()
            .join("; "),
        KILL_EARLY.as_secs_f64()
    );

    let writer = Writer::start(&input, lines, PREFILL, phases[0].rate);
    let mut worker = Worker::start(&dir, &yaml, addr);
    let t0 = Instant::now();
    println!("| t (s) | phase | rate (rec/s) | written/s | processed/s | lag (records) | interval (s) | predicted (s) | committed | event |");
    println!("|---|---|---|---|---|---|---|---|---|---|");

    let phase_secs = Duration::from_secs(o.phase_secs);
    let mut stage = Stage::Prefill { lo: None, hi: None };
    let mut phase = 0usize;
    // Moves on to phase `next`: the writer switches to its rate.
    let enter = |phase: &mut usize, next: usize, events: &mut Vec<String>| {
        *phase = next;
        let p = &phases[next];
        writer.set_rate(p.rate);
        events.push(format!(
            "phase {}: {} = {} rec/s{}",
            next + 1,
            p.name,
            p.rate,
            if p.rise { ", just after a commit" } else { "" }
        ));
    };
    let mut capacity = f64::NAN;
    // Each task's offset (records) where the running worker started.
    let mut base = [0u64; PARTITIONS];
    // Records read by the killed workers, for the processed/s column.
    let mut done_before = 0u64;
    let mut snap = Snap::default();
    let mut kills: Vec<Kill> = Vec::new();
    // The intervals in force in each phase, and how many of them came before its kill.
    let mut chosen: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    let mut before_kill = vec![0usize; phases.len()];
    let mut punched = Instant::now();
    let mut can_punch = true;
    let mut events: Vec<String> = Vec::new();
    let mut next_row = t0 + Duration::from_secs(1);
    let mut last_row = (t0, 0u64, PREFILL);

    loop {
        writer.assert_alive();
        if worker.child.is_some() {
            worker.assert_alive();
        }
        if let Some(text) = scrape(addr) {
            snap = Snap::parse(&text);
        }
        let now = Instant::now();
        let positions = snap
            .records()
            .map(|r| std::array::from_fn::<u64, PARTITIONS, _>(|t| base[t] + r[t]));
        if let (Some(i), false) = (snap.interval, matches!(stage, Stage::Prefill { .. })) {
            if chosen[phase].last() != Some(&i) {
                chosen[phase].push(i);
            }
        }
        match &mut stage {
            Stage::Prefill { lo, hi } => {
                let total = snap.total();
                if lo.is_none() && total >= PREFILL / 10 {
                    *lo = Some(now);
                }
                if hi.is_none() && total >= PREFILL * 9 / 10 {
                    *hi = Some(now);
                }
                let caught_up = positions.is_some_and(|p| {
                    let written = writer.written();
                    (0..PARTITIONS).all(|t| p[t] + phases[0].rate / 20 >= written[t])
                });
                if let (Some(lo), Some(hi), true) = (*lo, *hi, caught_up) {
                    capacity = (PREFILL * 8 / 10) as f64 / hi.duration_since(lo).as_secs_f64();
                    events.push(format!("backlog processed: capacity {capacity:.0} rec/s"));
                    enter(&mut phase, 0, &mut events);
                    stage = Stage::Steady {
                        until: now + phase_secs,
                    };
                }
            }
            Stage::Steady { until } => {
                if now >= *until {
                    events.push("aiming: waiting for a commit".into());
                    stage = Stage::AwaitCommit {
                        seen: None,
                        rise: false,
                    };
                }
            }
            Stage::AwaitCommit { seen, rise } => match (*seen, snap.committed) {
                (None, c) => *seen = c,
                (Some(before), Some(c)) if c != before => {
                    stage = Stage::AwaitInterval {
                        seen_at: now,
                        id: c as u64,
                        rise: *rise,
                    }
                }
                _ => {}
            },
            Stage::AwaitInterval { seen_at, id, rise } => {
                if let Some(interval) = snap.interval {
                    let (seen_at, id) = (*seen_at, *id);
                    if *rise {
                        let next = phase + 1;
                        enter(&mut phase, next, &mut events);
                    }
                    stage = aim(seen_at, id, interval, now, &mut events);
                }
            }
            Stage::Aim { at, id } => {
                if now >= *at {
                    // `snap` is from this iteration's scrape, just now.
                    let records = snap.records().expect("every task reports");
                    let positions = std::array::from_fn(|t| base[t] + records[t]);
                    before_kill[phase] = chosen[phase].len();
                    let killed = worker.kill();
                    let at_wall_ms = now_ms();
                    worker.restart();
                    let (restored, restored_trigger_ms, offsets) =
                        newest_checkpoint(&dir, lines).expect("a committed checkpoint");
                    done_before += snap.total();
                    base = offsets;
                    let kill = Kill {
                        phase,
                        at: killed,
                        at_wall_ms,
                        aimed_after: *id,
                        interval: snap.interval.unwrap_or(f64::NAN),
                        predicted: snap.predicted.unwrap_or(f64::NAN),
                        positions,
                        restored,
                        restored_trigger_ms,
                        back_at_mark: None,
                        back_at_kill: None,
                        detect: f64::NAN,
                        caught_up: f64::NAN,
                        restore: f64::NAN,
                        replay_offsets: f64::NAN,
                    };
                    snap = Snap::default();
                    events.push(format!(
                        "SIGKILL (predicted {:.2} s), restarted; restores checkpoint {restored}",
                        kill.predicted
                    ));
                    stage = Stage::Recovering(Box::new(kill));
                }
            }
            Stage::Recovering(k) => {
                let since = now.duration_since(k.at).as_secs_f64();
                if k.back_at_mark.is_none()
                    && snap.caught_up.len() == PARTITIONS
                    && snap.caught_up.values().all(|v| *v >= 0.0)
                {
                    k.back_at_mark = Some(since);
                    events.push(format!("every task past the last mark: {since:.2} s"));
                }
                if k.back_at_kill.is_none()
                    && positions.is_some_and(|p| (0..PARTITIONS).all(|t| p[t] >= k.positions[t]))
                {
                    k.back_at_kill = Some(since);
                    events.push(format!(
                        "every task back at the kill position: {since:.2} s"
                    ));
                }
                let finished = k.back_at_mark.is_some() && k.back_at_kill.is_some();
                if finished || since > RECOVERY_LIMIT.as_secs_f64() {
                    if !finished {
                        events.push(format!(
                            "not recovered after {} s",
                            RECOVERY_LIMIT.as_secs()
                        ));
                    }
                    k.detect = snap.detect.unwrap_or(f64::NAN);
                    k.caught_up = snap.caught_up.values().fold(f64::NAN, |a, b| a.max(*b)) / 1000.0;
                    k.restore = snap.restore.unwrap_or(f64::NAN);
                    k.replay_offsets = snap.replay.unwrap_or(f64::NAN);
                    let Stage::Recovering(k) = std::mem::replace(&mut stage, Stage::Done) else {
                        unreachable!()
                    };
                    kills.push(*k);
                    if let Some(next) = phases.get(phase + 1) {
                        if next.rise || next.rate != phases[phase].rate {
                            events.push("settling".into());
                            stage = Stage::Settle {
                                until: now + SETTLE_LIMIT,
                                seen: None,
                                pending: None,
                                last: None,
                            };
                        } else {
                            let next = phase + 1;
                            enter(&mut phase, next, &mut events);
                            stage = Stage::Steady {
                                until: now + phase_secs,
                            };
                        }
                    }
                }
            }
            Stage::Settle {
                until,
                seen,
                pending,
                last,
            } => {
                // The commit seen last time and the interval it chose, if that made it settled.
                let mut settled_at = None;
                if let (Some(seen_at), Some(i)) = (*pending, snap.interval) {
                    *pending = None;
                    if snap.commits.is_some_and(|n| n >= SETTLE_COMMITS)
                        && last.is_some_and(|l| (i - l).abs() <= SETTLED_WITHIN * l)
                    {
                        settled_at = Some((seen_at, seen.unwrap_or(0.0) as u64, i));
                    }
                    *last = Some(i);
                }
                match (*seen, snap.committed) {
                    (None, c) => *seen = c,
                    (Some(before), Some(c)) if c != before => {
                        *seen = Some(c);
                        *pending = Some(now);
                    }
                    _ => {}
                }
                let next = phase + 1;
                if let Some((seen_at, id, interval)) = settled_at {
                    events.push("settled".into());
                    enter(&mut phase, next, &mut events);
                    stage = if phases[next].rise {
                        aim(seen_at, id, interval, now, &mut events)
                    } else {
                        Stage::Steady {
                            until: now + phase_secs,
                        }
                    };
                } else if now >= *until {
                    events.push(format!("not settled after {} s", SETTLE_LIMIT.as_secs()));
                    if phases[next].rise {
                        // The rate rises at the next commit.
                        stage = Stage::AwaitCommit {
                            seen: None,
                            rise: true,
                        };
                    } else {
                        enter(&mut phase, next, &mut events);
                        stage = Stage::Steady {
                            until: now + phase_secs,
                        };
                    }
                }
            }
            Stage::Done => {}
        }

        if can_punch && now.duration_since(punched) >= PUNCH_EVERY {
            punched = now;
            can_punch = punch_consumed(&dir, &input, lines);
            if !can_punch {
                events.push("cannot punch holes in the input files: they keep growing".into());
            }
        }
        let done = matches!(stage, Stage::Done);
        if now >= next_row || done {
            let written = writer.written();
            let written_total: u64 = written.iter().sum();
            let processed = done_before + snap.total();
            let dt = now.duration_since(last_row.0).as_secs_f64();
            let lag = positions.map(|p| {
                (0..PARTITIONS)
                    .map(|t| written[t] - p[t].min(written[t]))
                    .sum::<u64>()
            });
            let worker_up = snap.records().is_some();
            println!(
                "| {:.1} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                now.duration_since(t0).as_secs_f64(),
                match stage {
                    Stage::Prefill { .. } => "backlog".to_owned(),
                    _ => format!("{} {}", phase + 1, phases[phase].name),
                },
                phases[phase].rate,
                written_total.saturating_sub(last_row.2) as f64 / dt,
                processed.saturating_sub(last_row.1) as f64 / dt,
                lag.map_or("-".into(), |l| l.to_string()),
                if worker_up {
                    secs(snap.interval)
                } else {
                    "-".into()
                },
                if worker_up {
                    secs(snap.predicted)
                } else {
                    "-".into()
                },
                if worker_up {
                    snap.committed.map_or("-".into(), |c| c.to_string())
                } else {
                    "-".into()
                },
                events.join("; ")
            );
            events.clear();
            last_row = (now, processed, written_total);
            while next_row <= now {
                next_row += Duration::from_secs(1);
            }
        }
        if done {
            break;
        }
        // Commits are watched closely where the time of one aims the kill.
        let rise_next = phases.get(phase + 1).is_some_and(|p| p.rise);
        let fine = match stage {
            Stage::Prefill { .. }
            | Stage::AwaitCommit { .. }
            | Stage::AwaitInterval { .. }
            | Stage::Recovering(_) => true,
            Stage::Settle { .. } => rise_next,
            _ => false,
        };
        let wake = match &stage {
            Stage::Aim { at, .. } => (*at).min(now + COARSE),
            _ if fine => now + FINE,
            _ => now + COARSE,
        };
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    drop(worker);
    drop(writer);

    println!(
        "\ncapacity of the job on this machine (the {PREFILL}-line backlog at full speed): {capacity:.0} rec/s; load = rate / capacity, about the busy fraction the coordinator should measure\n"
    );
    println!("| phase | kill | rate (rec/s) | load | interval at kill (s) | predicted (s) | replayed input (s) | measured recovery: kill -> back at the kill position (s) | kill -> past the last mark (s) | worker's view: detect + caught up (s) | target (s) | met? |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for k in &kills {
        let p = &phases[k.phase];
        let window = k.at_wall_ms.saturating_sub(k.restored_trigger_ms) as f64 / 1000.0;
        let met = match k.back_at_kill {
            Some(r) if r <= target => "yes",
            _ => "no",
        };
        println!(
            "| {} {} | {} | {} | {:.0}% | {:.2} | {:.2} | {window:.2} | {} | {} | {:.2} | {target:.0} | {met} |",
            k.phase + 1,
            p.name,
            if p.rise {
                "before the first commit at the new rate".to_owned()
            } else {
                format!("{} s after the rate change", o.phase_secs)
            },
            p.rate,
            100.0 * p.rate as f64 / capacity,
            k.interval,
            k.predicted,
            secs(k.back_at_kill),
            secs(k.back_at_mark),
            k.detect + k.caught_up,
        );
    }
    println!();
    let list = |intervals: &[f64]| {
        intervals
            .iter()
            .map(|i| format!("{i:.2}"))
            .collect::<Vec<_>>()
            .join(" -> ")
    };
    for k in &kills {
        let late = if k.restored > k.aimed_after {
            format!(
                " -- the kill landed after checkpoint {} committed, not before: not the worst moment",
                k.restored
            )
        } else {
            String::new()
        };
        println!(
            "- phase {} {}: intervals in force (s) from the rate change to the kill: {}; after the restart: {}; \
             restored checkpoint {} (aimed: before checkpoint {} commits){late}; \
             worker: detect {:.2} s, restore {:.3} s, replayed {:.0} records to the last mark, longest caught-up {:.2} s after its start",
            k.phase + 1,
            phases[k.phase].name,
            list(&chosen[k.phase][..before_kill[k.phase]]),
            list(&chosen[k.phase][before_kill[k.phase]..]),
            k.restored,
            k.aimed_after + 1,
            k.detect,
            k.restore,
            k.replay_offsets / lines.len() as f64,
            k.caught_up
        );
    }
    println!(
        "\nThe prediction assumes {} s from the failure to a restarted process; this benchmark restarts at once, so the measured detect is the restart and the staleness of the last mark (up to 1 s).",
        cairn_worker::runtime::objective::DETECT.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! `cairn-bench failover`: recovery of a SIGKILLed container with and without a warm standby
//! (`standby: true`, docs/recovery.md).
//!
//! The job runs as separate processes, as on Kubernetes: container 0 with the coordinator,
//! and one or two processes for container 1, each in a directory of its own (its "volume";
//! the state directory is relative). Each process is this binary run as a worker
//! (`cairn_worker::cli::main_with`, the entry point of user worker binaries, with the `fill`
//! task of `cairn-bench recovery` registered), with the arguments `cairn-worker run` takes in
//! a pod: `--container K`, `--coordinator(-listen)`, `--coordinator-token-file`,
//! `--metrics-addr`.
//!
//! The input is the followed `file` input of `cairn-bench objective`: a writer thread in this
//! process appends fixed-width lines to two partition files at a steady rate and keeps writing
//! while a process is dead, so a recovered task replays at full speed. The task is `fill`: a
//! 1 KiB incompressible value per record, keyed by the line. A backlog of `state-mb` * 1024
//! lines (as many keys) builds the state first, processed at full speed.
//!
//! Each kill lands `kill-after` after a commit (polled on the coordinator's metrics), on the
//! process running container 1 (task 1). Its position (restored checkpoint offset + records
//! read since) is scraped just before the SIGKILL. Measured on this process's clock, polling
//! the metrics of the process that takes container 1 over:
//! - *takeover* (standby only): its `cairn_standby_checkpoint` goes to -1 (it got `Restore`);
//! - *first record*: `cairn_task_resumed_milliseconds{task="1"}` is set;
//! - *caught up*: its position reaches the killed process's.
//!
//! Scenarios, in this order:
//! - A, no standby, same volume: the killed process is restarted at once on its directory
//!   (a kubelet restarting the container with its volume kept): local SSTs are linked;
//! - A, no standby, emptied volume: its state directory is wiped before the restart (a pod
//!   rescheduled onto a new volume);
//! - B, a warm standby: a second process for container 1 follows every commit; after the kill
//!   it takes over. The killed process is restarted (it becomes the new standby) once the
//!   takeover has caught up: on Kubernetes it would run on another node, and here it would
//!   compete for the same 2 cores with the takeover being measured.
//!
//! The checkpoint store is `file://./ckpt` (in the benchmark's directory) or, with `--store
//! s3://bucket/prefix`, an S3 server named in the environment, as for `cairn-bench recovery`
//! (`CAIRN_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`; the worker processes
//! inherit it). `tests/services/bench-connectors.sh` starts MinIO on loopback and runs it. On
//! `file://` a restore or a standby hard-links the store's files; on S3 it downloads them. The
//! S3 prefix must be empty at the start (a job restores what it finds there); the run deletes
//! what it wrote under it at the end.
//!
//! Baselines, in the same run, on container 1's files of the newest checkpoint (as `cairn-bench
//! recovery`): on `file://`, `cp -r --reflink=never && sync` and a read with the page cache
//! dropped; on S3, a bare `object_store` get of the same files into local files, then `sync`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cairn_worker::checkpoint::{catalog, now_ms};
use cairn_worker::storage::CheckpointStore;

use crate::objective::{date, per_task, Lines, Writer, PARTITIONS};
use crate::recovery::{checkpoint_keys, file_baselines, registry, s3_download, scrape, values};
use crate::{block_on, mib};

/// Set in the environment of the processes this benchmark starts: run as a worker.
pub const AS_WORKER: &str = "CAIRN_BENCH_AS_WORKER";
/// The task of container 1 (task t runs in container t % parallelism).
const TASK: u32 = 1;
const TOKEN: &str = "failover-bench-token-0123456789abcdef";
/// Polling period while a commit or a recovery is awaited.
const FINE: Duration = Duration::from_millis(5);
/// A recovery taking longer is reported as not finished.
const LIMIT: Duration = Duration::from_secs(120);

/// The worker binary: `cairn-worker` with `fill` (see the module doc); its exit status.
pub fn worker_main() -> i32 {
    if cairn_worker::cli::main_with(registry()) == ExitCode::SUCCESS {
        0
    } else {
        1
    }
}

pub struct Options {
    pub state_mb: u64,
    /// Lines/s over both partitions once the backlog is processed.
    pub rate: u64,
    pub interval: Duration,
    pub kill_after: Duration,
    pub rounds: u32,
    /// `file://./ckpt` or `s3://bucket/prefix` (see the module doc).
    pub store: String,
}

/// One process of the job.
struct Proc {
    name: String,
    dir: PathBuf,
    logs: PathBuf,
    metrics: SocketAddr,
    child: Option<Child>,
    runs: u32,
}

impl Proc {
    fn new(root: &Path, name: &str, yaml: &str) -> Proc {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.yaml"), yaml).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        Proc {
            name: name.to_owned(),
            dir,
            logs: root.join("logs"),
            metrics: free_addr(),
            child: None,
            runs: 0,
        }
    }

    /// Starts `cairn-worker run job.yaml` for `container` (0 listens on `coordinator`).
    fn start(&mut self, container: u32, coordinator: SocketAddr) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        self.runs += 1;
        std::fs::create_dir_all(&self.logs).unwrap();
        let log = File::create(self.log()).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(AS_WORKER, "1")
            .env("RUST_LOG", "info,rocksdb=warn")
            .current_dir(&self.dir)
            .args([
                "run",
                "job.yaml",
                "--quiet",
                "--coordinator-token-file",
                "token",
            ])
            .args(["--container", &container.to_string()])
            .arg(if container == 0 {
                "--coordinator-listen"
            } else {
                "--coordinator"
            })
            .arg(coordinator.to_string())
            .args(["--metrics-addr", &self.metrics.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a worker process");
        self.child = Some(child);
    }

    fn log(&self) -> PathBuf {
        self.logs.join(format!("{}-{}.log", self.name, self.runs))
    }

    fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "process {} exited by itself ({status}); its log: {}",
                self.name,
                self.log().display()
            );
        }
    }

    /// SIGKILL; the instant right after the signal was sent, and the wall clock's ms then.
    fn kill(&mut self) -> (Instant, u64) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let at = (Instant::now(), now_ms());
        child.wait().expect("reap");
        at
    }

    fn scrape(&self) -> Option<String> {
        scrape(self.metrics)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn one(text: &str, name: &str) -> Option<f64> {
    values(text, name).first().copied()
}

fn task_value(text: &str, name: &str) -> Option<f64> {
    per_task(text, name).get(&TASK).copied()
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    SameVolume,
    EmptiedVolume,
    Standby,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::SameVolume => "A: no standby, restarted on the same volume",
            Scenario::EmptiedVolume => "A: no standby, restarted on an emptied volume",
            Scenario::Standby => "B: warm standby takes over",
        }
    }
}

/// One kill's measures (seconds from the kill).
struct Kill {
    scenario: Scenario,
    /// Checkpoint the standby held at the kill (B).
    held: Option<i64>,
    restored: u64,
    replay: u64,
    takeover: Option<f64>,
    first_record: Option<f64>,
    caught_up: Option<f64>,
    restore: f64,
    fetched: f64,
    /// What the standby fetched while following, before the kill (B).
    followed_bytes: f64,
    /// The promoted / restarted process's log, and the kill on the wall clock.
    log: PathBuf,
    /// The coordinator's log.
    c0_log: PathBuf,
    killed_ms: u64,
}

/// The job while it runs: the coordinator's process and the processes for container 1.
struct Job {
    store: CheckpointStore,
    lines: Lines,
    addr: SocketAddr,
    c0: Proc,
    active: Proc,
    standby: Option<Proc>,
    /// Task 1's offset (records) where the active process started.
    base: u64,
    writer: Writer,
    kill_after: Duration,
}

impl Job {
    fn committed(&self) -> Option<f64> {
        self.c0
            .scrape()
            .and_then(|t| one(&t, "cairn_checkpoint_last_committed_id"))
    }

    fn check(&mut self) {
        self.writer.assert_alive();
        self.c0.assert_alive();
        self.active.assert_alive();
        if let Some(s) = self.standby.as_mut() {
            s.assert_alive();
        }
    }

    /// Waits for the next commit; returns its id.
    fn next_commit(&mut self) -> u64 {
        let before = self.committed();
        loop {
            self.check();
            if let Some(c) = self.committed() {
                if Some(c) != before {
                    return c as u64;
                }
            }
            std::thread::sleep(FINE);
        }
    }

    /// Kills the process running container 1 `kill_after` after a commit and measures until
    /// its successor is back at the kill position.
    fn kill(&mut self, scenario: Scenario) -> Kill {
        let id = self.next_commit();
        let committed_at = Instant::now();
        // The checkpoint the successor restores, read now rather than after the kill: on S3
        // the read (a list and a get) would delay the restart being measured. Nothing commits
        // after the kill before the successor has restored (task 1 must acknowledge), and the
        // next trigger is an interval away; a commit before the kill is checked for below.
        let mut newest = newest_checkpoint(&self.store, self.lines);
        let mut held = None;
        if let Some(standby) = &self.standby {
            // A warm standby holds the newest commit (its files hard-linked from a file://
            // store, downloaded from S3).
            let limit = Instant::now() + Duration::from_secs(30);
            while Instant::now() < limit {
                held = standby
                    .scrape()
                    .and_then(|t| one(&t, "cairn_standby_checkpoint"))
                    .map(|c| c as i64);
                if held == Some(id as i64) {
                    break;
                }
                std::thread::sleep(FINE);
            }
        }
        let followed_bytes = self
            .standby
            .as_ref()
            .and_then(|s| s.scrape())
            .and_then(|t| one(&t, "cairn_standby_fetched_bytes_total"))
            .unwrap_or(0.0);
        std::thread::sleep(
            (committed_at + self.kill_after).saturating_duration_since(Instant::now()),
        );
        self.check();
        // A commit since the read (a kill-after close to the interval): read again.
        if self.committed() != newest.map(|(c, _)| c as f64) {
            newest = newest_checkpoint(&self.store, self.lines);
        }
        let text = self.active.scrape().expect("the active process answers");
        let position =
            self.base + task_value(&text, "cairn_records_in_total").unwrap_or(0.0) as u64;
        let (killed, killed_ms) = self.active.kill();
        let (restored, offsets) = newest.expect("a committed checkpoint");
        let base = offsets[TASK as usize];
        match scenario {
            Scenario::SameVolume => self.active.start(1, self.addr),
            Scenario::EmptiedVolume => {
                std::fs::remove_dir_all(self.active.dir.join("state")).unwrap();
                self.active.start(1, self.addr);
            }
            Scenario::Standby => {
                let standby = self.standby.take().expect("a standby");
                let killed_proc = std::mem::replace(&mut self.active, standby);
                self.standby = Some(killed_proc);
            }
        }
        self.base = base;
        let since = |t: Instant| t.duration_since(killed).as_secs_f64();
        let (mut takeover, mut first_record, mut caught_up) = (None, None, None);
        let mut last = String::new();
        while killed.elapsed() < LIMIT && caught_up.is_none() {
            self.writer.assert_alive();
            self.c0.assert_alive();
            self.active.assert_alive();
            if let Some(text) = self.active.scrape() {
                let now = Instant::now();
                if takeover.is_none()
                    && scenario == Scenario::Standby
                    && one(&text, "cairn_standby_checkpoint").is_some_and(|c| c < 0.0)
                {
                    takeover = Some(since(now));
                }
                if first_record.is_none()
                    && task_value(&text, "cairn_task_resumed_milliseconds")
                        .is_some_and(|v| v >= 0.0)
                {
                    first_record = Some(since(now));
                }
                let records = task_value(&text, "cairn_records_in_total").unwrap_or(0.0) as u64;
                if first_record.is_some() && base + records >= position {
                    caught_up = Some(since(now));
                }
                last = text;
            }
            std::thread::sleep(FINE);
        }
        let kill = Kill {
            scenario,
            held,
            restored,
            replay: position.saturating_sub(base),
            takeover,
            first_record,
            caught_up,
            restore: one(&last, "cairn_restore_seconds").unwrap_or(f64::NAN),
            fetched: one(&last, "cairn_recovery_fetched_bytes").unwrap_or(f64::NAN),
            followed_bytes,
            log: self.active.log(),
            c0_log: self.c0.log(),
            killed_ms,
        };
        if scenario == Scenario::Standby {
            // The killed process comes back and stands by in turn.
            let killed_proc = self.standby.as_mut().unwrap();
            killed_proc.start(1, self.addr);
        }
        kill
    }

    /// Waits until the standby holds a committed checkpoint.
    fn await_warm(&mut self) {
        let limit = Instant::now() + Duration::from_secs(300);
        while Instant::now() < limit {
            self.check();
            let held = self
                .standby
                .as_ref()
                .and_then(|s| s.scrape())
                .and_then(|t| one(&t, "cairn_standby_checkpoint"));
            if held.is_some_and(|h| h >= 0.0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the standby held no checkpoint after 300 s");
    }
}

/// The newest committed checkpoint: its id and each task's offset in records. `None` before
/// the first commit, or if the catalog changed under the read (retention). As
/// `objective::newest_checkpoint`, on any store.
fn newest_checkpoint(store: &CheckpointStore, lines: Lines) -> Option<(u64, [u64; PARTITIONS])> {
    let record = block_on(async {
        let id = *catalog::committed_ids(store).await.ok()?.last()?;
        catalog::load_commit(store, id).await.ok()
    })?;
    let mut offsets = [0; PARTITIONS];
    for t in &record.tasks {
        for (p, offset) in &t.offsets {
            assert_eq!(offset % lines.len(), 0, "an offset between lines");
            offsets[*p as usize] = offset / lines.len();
        }
    }
    Some((record.checkpoint, offsets))
}

/// `store`: an absolute `file://` URL (each process runs in a directory of its own) or the
/// `s3://` URL as given.
fn job_yaml(dir: &Path, interval: Duration, store: &str) -> String {
    format!(
        "name: bench-failover\ninput: {{type: file, partitions: {PARTITIONS}, path: \"{input}\", follow: true}}\n\
         task: {{name: fill}}\noutput: {{type: \"null\"}}\nparallelism: 2\nstandby: true\n\
         checkpoint: {{interval: {interval}, store: \"{store}\", retained: 2}}\n\
         state: {{dir: ./state, cacheSize: 64MiB}}\n",
        input = dir.join("input").display(),
        interval = cairn_contract::units::format_duration(interval),
    )
}

/// Stops the benchmark before anything runs: a store it cannot use.
fn refuse(why: String) -> ! {
    eprintln!("cairn-bench failover: {why}");
    std::process::exit(2);
}

pub fn failover(scratch: &Path, o: &Options) {
    let s3 = o.store.strip_prefix("s3://");
    // The file:// baselines hard-link the checkpoint's files from <dir>/ckpt.
    if s3.is_none() && o.store != "file://./ckpt" {
        refuse(format!(
            "--store is file://./ckpt or s3://bucket/prefix, not {}",
            o.store
        ));
    }
    // Without it the workers would look for the endpoint elsewhere (AWS by default), and the
    // bare-get baseline needs it.
    if s3.is_some() && std::env::var_os("CAIRN_S3_ENDPOINT").is_none() {
        refuse(format!(
            "--store {} needs the server in CAIRN_S3_ENDPOINT (and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
            o.store
        ));
    }
    let dir = scratch.join("failover");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("input")).unwrap();
    let store = CheckpointStore::from_url(&o.store, &dir)
        .unwrap_or_else(|e| refuse(format!("--store {}: {e}", o.store)));
    // A job restores the newest checkpoint in its store, and the end of the run deletes
    // everything under the prefix: it must hold nothing of anyone's at the start.
    match block_on(store.list("")) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => refuse(format!(
            "--store {} already holds {} files; give an empty prefix",
            o.store,
            found.len()
        )),
        Err(e) => refuse(format!("--store {}: listing it failed: {e}", o.store)),
    }
    // Each process runs in a directory of its own: a file:// store is given as absolute.
    let url = match store.local_root() {
        Some(root) => format!("file://{}", root.display()),
        None => o.store.clone(),
    };
    let keys = o.state_mb * 1024;
    let lines = Lines::new(keys);
    let yaml = job_yaml(&dir, o.interval, &url);
    println!(
        "\n### failover of a SIGKILLed container, with and without a warm standby, {} store ({})\n",
        if s3.is_some() { "S3" } else { "file://" },
        date()
    );
    let server = std::env::var("CAIRN_S3_ENDPOINT")
        .ok()
        .filter(|_| s3.is_some())
        .map(|e| format!(" (server {e})"))
        .unwrap_or_default();
    println!(
        "job: `fill` (1 KiB value per record) over a followed `file` input, {PARTITIONS} partitions, parallelism 2, \
         `standby: true`, {keys} keys, checkpoint every {} to {}{server}; backlog of {keys} lines, then {} lines/s; \
         each process in a directory of its own; kill {} after a commit\n",
        cairn_contract::units::format_duration(o.interval),
        o.store,
        o.rate,
        cairn_contract::units::format_duration(o.kill_after),
    );

    let addr = free_addr();
    let writer = Writer::start(&dir.join("input"), lines, keys, o.rate);
    let backlog = writer.written();
    let mut c0 = Proc::new(&dir, "c0", &yaml);
    let mut a = Proc::new(&dir, "a", &yaml);
    let b = Proc::new(&dir, "b", &yaml);
    let started = Instant::now();
    c0.start(0, addr);
    a.start(1, addr);
    let mut job = Job {
        store: store.clone(),
        lines,
        addr,
        c0,
        active: a,
        standby: None,
        base: 0,
        writer,
        kill_after: o.kill_after,
    };
    // The backlog: both tasks past it (each started from offset 0).
    loop {
        job.check();
        let done = [&job.c0, &job.active].iter().enumerate().all(|(t, p)| {
            p.scrape()
                .and_then(|text| {
                    per_task(&text, "cairn_records_in_total")
                        .get(&(t as u32))
                        .copied()
                })
                .is_some_and(|r| r as u64 >= backlog[t])
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let filled = started.elapsed().as_secs_f64();
    // Two commits: the second holds the whole backlog's state.
    job.next_commit();
    job.next_commit();
    let (state_bytes, _) = checkpoint_keys(&dir, &o.store, None);
    println!(
        "backlog processed in {filled:.1} s; state in the newest checkpoint: {} MiB (container 1's task: {} MiB)\n",
        mib(state_bytes),
        mib(checkpoint_keys(&dir, &o.store, Some(TASK)).0)
    );

    let mut kills = Vec::new();
    for scenario in [Scenario::SameVolume, Scenario::EmptiedVolume] {
        for _ in 0..o.rounds {
            let k = job.kill(scenario);
            eprintln!("{}: caught up {:?}", scenario.name(), k.caught_up);
            kills.push(k);
        }
    }
    let mut b = b;
    b.start(1, addr);
    job.standby = Some(b);
    job.await_warm();
    for _ in 0..o.rounds {
        let k = job.kill(Scenario::Standby);
        eprintln!("{}: caught up {:?}", Scenario::Standby.name(), k.caught_up);
        kills.push(k);
        job.await_warm();
    }
    // The state container 1's successor restores: task 1's files in the newest checkpoint.
    let (task_bytes, task_keys) = checkpoint_keys(&dir, &o.store, Some(TASK));
    drop(job);
    let baselines = match s3 {
        None => file_baselines(&dir, &task_keys),
        Some(bucket_prefix) => vec![(
            "bare object_store get of the same files into local files (4 in flight), then sync",
            s3_download(&dir, bucket_prefix, &task_keys),
        )],
    };

    let secs = |v: Option<f64>| v.map_or("not reached".to_owned(), |v| format!("{v:.3}"));
    println!(
        "| scenario | restored checkpoint (standby held) | replayed records | kill -> takeover (s) | kill -> first record (s) | kill -> caught up (s) | restore (s, worker) | fetched by the restore |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for k in &kills {
        println!(
            "| {} | {}{} | {} | {} | {} | {} | {:.3} | {} |",
            k.scenario.name(),
            k.restored,
            k.held.map(|h| format!(" ({h})")).unwrap_or_default(),
            k.replay,
            if k.scenario == Scenario::Standby {
                secs(k.takeover)
            } else {
                "-".to_owned()
            },
            secs(k.first_record),
            secs(k.caught_up),
            k.restore,
            size(k.fetched),
        );
    }
    for (name, seconds) in baselines {
        println!(
            "| baseline: {name} ({} MiB, container 1's files) | | | | | {seconds:.3} | | |",
            mib(task_bytes)
        );
    }
    println!();
    for k in kills.iter().filter(|k| k.scenario == Scenario::Standby) {
        println!(
            "- standby followed {:.1} MiB before this kill (cumulative, {} from the store); restored checkpoint {}",
            k.followed_bytes / 1048576.0,
            if s3.is_some() { "downloaded" } else { "hard-linked" },
            k.restored
        );
    }
    // Where the time goes: the log of the process that took container 1 over, from the kill
    // until it caught up, for the first kill of each scenario.
    for scenario in [
        Scenario::SameVolume,
        Scenario::EmptiedVolume,
        Scenario::Standby,
    ] {
        let Some(k) = kills.iter().find(|k| k.scenario == scenario) else {
            continue;
        };
        let window = (k.caught_up.unwrap_or(5.0) * 1000.0) as u64 + 100;
        println!(
            "\n{}, first kill: the log of the process that took container 1 over, ms after the kill (and the coordinator's):\n",
            scenario.name()
        );
        println!("```text");
        let mut lines: Vec<_> = log_after(&k.c0_log, k.killed_ms, window)
            .into_iter()
            .map(|(ms, line)| (ms, "coordinator", line))
            .chain(
                log_after(&k.log, k.killed_ms, window)
                    .into_iter()
                    .map(|(ms, line)| (ms, "container 1", line)),
            )
            .collect();
        lines.sort_by_key(|(ms, _, _)| *ms);
        for (ms, who, line) in lines {
            println!("+{ms:>5} {who:<11} {line}");
        }
        println!("```");
    }
    if s3.is_some() {
        // The prefix was empty at the start: everything under it is this run's.
        let deleted = block_on(async {
            for file in store.list("").await? {
                store.delete(&file.key).await?;
            }
            Ok::<_, cairn_worker::storage::StorageError>(())
        });
        if let Err(e) = deleted {
            eprintln!(
                "cairn-bench failover: deleting the run's files under {} failed: {e}",
                o.store
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn size(bytes: f64) -> String {
    if bytes.is_nan() {
        "-".to_owned()
    } else if bytes >= 1048576.0 {
        format!("{:.1} MiB", bytes / 1048576.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

/// The lines of a worker's log written within `window_ms` after `from_ms` (wall clock), with
/// their time from it. The log's timestamps are RFC 3339 in UTC (`tracing`'s default).
fn log_after(log: &Path, from_ms: u64, window_ms: u64) -> Vec<(i64, String)> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    let day_ms = (from_ms % 86_400_000) as i64;
    text.lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let time = stamp.split_once('T')?.1.trim_end_matches('Z');
            let mut parts = time.split(':');
            let h: i64 = parts.next()?.parse().ok()?;
            let m: i64 = parts.next()?.parse().ok()?;
            let s: f64 = parts.next()?.parse().ok()?;
            let ms = ((h * 3600 + m * 60) as f64 * 1000.0 + s * 1000.0) as i64 - day_ms;
            (0..=window_ms as i64)
                .contains(&ms)
                .then(|| (ms, rest.trim().chars().take(220).collect()))
        })
        .collect()
}

//! The worker's network surfaces hold up against hostile clients (real `cairn-worker`
//! processes, real sockets):
//!
//! - the coordinator's port: a hello line without a newline is cut off at its cap, a silent
//!   connection is closed at the hello timeout, connections beyond the pending limit are refused,
//!   a wrong or missing token is refused, and a container speaking for tasks it does not run is
//!   disconnected — never a panic, and the job goes on committing with exact state;
//! - the control API and `/metrics`: half-sent requests are closed at the header timeout, and
//!   more idle connections than the limit (in a process with `ulimit -n 256`) neither lock out
//!   `/healthz` nor make checkpoints fail.
//!
//! Timeouts below only bound how long a broken build may hang the test; nothing measures speed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::launcher::wait_until;
use common::*;
use serde_json::{json, Value};

/// The token the job's processes share, and the control API's.
const TOKEN: &str = "hardening-token-0123456789abcdef";
/// A finite input far longer than a test runs, read slowly.
const RECORDS_PER_PARTITION: u64 = 10_000_000;
/// How long a correct server may take to close what it must close: the hello and header
/// timeouts are 10 s, so 30 s only catches a server that never does.
const CLOSE_BOUND: Duration = Duration::from_secs(30);
/// The coordinator's limit on connections waiting to send their hello (remote.rs).
const MAX_PENDING_HELLOS: usize = 16;

fn job(partitions: u32, parallelism: u32) -> String {
    format!(
        "\
name: hardened
input:
  type: generator
  partitions: {partitions}
  keys: 300
  seed: 11
  recordsPerPartition: {RECORDS_PER_PARTITION}
  ratePerSecond: 2000
task:
  name: count
output:
  type: file
  path: ./out
parallelism: {parallelism}
checkpoint:
  interval: 200ms
  timeout: 5s
  store: file://./ckpt
  retained: 3
"
    )
}

/// The processes of one job in `dir`, each logging (at info) to `<name>.log`; killed on drop.
struct Procs {
    dir: PathBuf,
    children: BTreeMap<String, Child>,
}

impl Procs {
    fn new(dir: &Path, job_yaml: &str) -> Procs {
        std::fs::write(dir.join("job.yaml"), job_yaml).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        Procs {
            dir: dir.to_owned(),
            children: BTreeMap::new(),
        }
    }

    /// Starts `cairn-worker run job.yaml ARGS` as `name`; `nofile` sets its `ulimit -n`.
    fn start(&mut self, name: &str, args: &[&str], nofile: Option<u64>) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = worker(&self.dir);
        cmd.env("RUST_LOG", "info")
            .args(["run", "job.yaml", "--quiet"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe; this runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rlim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start cairn-worker");
        self.children.insert(name.to_owned(), child);
    }

    fn pid(&self, name: &str) -> u32 {
        self.children[name].id()
    }

    fn logs(&self) -> String {
        self.children
            .keys()
            .map(|name| {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                format!("--- {name}:\n{log}")
            })
            .collect()
    }

    /// Panics (with every log) if a process exited.
    fn assert_running(&mut self) {
        let mut exited = Vec::new();
        for (name, child) in self.children.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                exited.push(format!("{name} ({status})"));
            }
        }
        assert!(exited.is_empty(), "exited: {exited:?}\n{}", self.logs());
    }

    /// Waits until a checkpoint newer than `after` is committed, while every process runs.
    fn await_commit_after(&mut self, after: Option<u64>) -> u64 {
        let mut latest = None;
        wait_until("a new committed checkpoint", 90, || {
            self.assert_running();
            latest = committed_ids(&self.dir, "file://./ckpt").last().copied();
            latest > after
        });
        latest.unwrap()
    }

    /// SIGTERM to every process; each must exit 0 within the bound.
    fn stop_all(&mut self) {
        for child in self.children.values() {
            sigterm(child);
        }
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            let mut status = None;
            wait_until(&format!("{name} to exit"), 60, || {
                status = self.children.get_mut(&name).unwrap().try_wait().unwrap();
                status.is_some()
            });
            let status = status.unwrap();
            assert_eq!(status.code(), Some(0), "{name}: {status}\n{}", self.logs());
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The state and the published output of the newest committed checkpoint are exactly those of
/// the records its offsets say were read.
fn assert_exact(dir: &Path, job_yaml: &str) {
    let last = *committed_ids(dir, "file://./ckpt")
        .last()
        .expect("a commit");
    let commit: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("ckpt/checkpoints/{last:012}/_COMMIT.json"))).unwrap(),
    )
    .unwrap();
    let spec = cairn_contract::JobSpec::from_yaml_str(job_yaml).unwrap();
    let tasks = commit["tasks"].as_array().unwrap();
    assert_eq!(tasks.len() as u32, spec.input.partitions(), "{commit}");
    let mut offsets = BTreeMap::new();
    for t in tasks {
        let task = t["task"].as_u64().unwrap() as u32;
        let recorded = t["offsets"].as_object().unwrap();
        assert_eq!(recorded.len(), 1, "{t}");
        offsets.insert(task, recorded[&task.to_string()].as_u64().unwrap());
    }
    assert!(offsets.values().sum::<u64>() > 0, "nothing was read");
    assert_counts_exact(dir, "file://./ckpt", &spec, &offsets);
}

/// Resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// A raw client of the coordinator's port (or an HTTP port), reading lines.
struct Peer {
    reader: BufReader<TcpStream>,
}

impl Peer {
    /// Connects, waiting (up to 60 s) for a process that is still starting to listen.
    fn connect(addr: &str) -> Peer {
        let started = std::time::Instant::now();
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(stream) => break stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && started.elapsed() < Duration::from_secs(60) =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("connecting to {addr}: {e}"),
            }
        };
        stream.set_read_timeout(Some(CLOSE_BOUND)).unwrap();
        Peer {
            reader: BufReader::new(stream),
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    fn send(&mut self, line: &Value) {
        let mut bytes = serde_json::to_vec(line).unwrap();
        bytes.push(b'\n');
        self.stream().write_all(&bytes).unwrap();
    }

    /// The next line; `None` once the server closed the connection. Panics if nothing comes
    /// within [`CLOSE_BOUND`].
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server neither answered nor closed the connection within {CLOSE_BOUND:?}"
                )
            }
            // Reset: the server closed with our bytes unread.
            Err(_) => None,
        }
    }

    /// Every line until the server closes the connection (which must happen within
    /// [`CLOSE_BOUND`] of the last line).
    fn lines_until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.line() {
            lines.push(line);
        }
        lines
    }

    /// Reads until a line satisfies `pick` (panics if the connection closes first).
    fn until<T>(&mut self, mut pick: impl FnMut(&Value) -> Option<T>) -> T {
        loop {
            let line = self.line().expect("the coordinator closed the connection");
            let value: Value = serde_json::from_str(&line).unwrap();
            if let Some(found) = pick(&value) {
                return found;
            }
        }
    }
}

fn hello(container: u32, job: &str, spec_hash: &str, token: Option<&str>) -> Value {
    json!({"container": container, "job": job, "spec_hash": spec_hash, "token": token})
}

/// A successful `Ack` as a container sends it.
fn ack(task: u32, checkpoint: u64) -> Value {
    json!({"Ack": {
        "task": task,
        "checkpoint": checkpoint,
        "result": {"Ok": {
            "manifest_key": format!("checkpoints/{checkpoint:012}/task-{task:04}.json"),
            "offsets": {task.to_string(): 0},
            "total_bytes": 0, "uploaded_bytes": 0, "new_sst_bytes": 0,
            "duration": {"secs": 0, "nanos": 0},
        }},
        "sync_seconds": 0.0,
    }})
}

fn refusal(line: &str) -> String {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    value["Refused"]
        .as_str()
        .unwrap_or_else(|| panic!("not a refusal: {line}"))
        .to_owned()
}

fn coordinator_args(addr: &str) -> Vec<&str> {
    vec![
        "--coordinator-token-file",
        "token",
        "--container",
        "0",
        "--coordinator-listen",
        addr,
    ]
}

fn container_args<'a>(k: &'a str, addr: &'a str) -> Vec<&'a str> {
    vec![
        "--coordinator-token-file",
        "token",
        "--container",
        k,
        "--coordinator",
        addr,
    ]
}

/// A stranger on the coordinator's port: too many silent connections, silent ones, wrong and
/// missing tokens, and a 100 MiB hello line. Each is refused or cut off, the coordinator's
/// memory stays put, and the job keeps committing with exact state.
#[test]
fn the_coordinator_port_bounds_what_a_stranger_can_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job_yaml = job(4, 2);
    let mut procs = Procs::new(dir, &job_yaml);
    let addr = free_local_addr();
    procs.start("c0", &coordinator_args(&addr), None);
    procs.start("c1", &container_args("1", &addr), None);
    let first = procs.await_commit_after(None);
    let rss_before = rss_bytes(procs.pid("c0"));

    // The pending limit: that many silent connections are held, the next one is refused at
    // once with the reason...
    let mut silent: Vec<Peer> = (0..MAX_PENDING_HELLOS)
        .map(|_| Peer::connect(&addr))
        .collect();
    let mut extra = Peer::connect(&addr);
    let lines = extra.lines_until_closed();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        refusal(&lines[0]).contains("16 connections waiting to introduce themselves"),
        "{lines:?}"
    );
    // ...and the silent ones are closed at the hello timeout.
    for peer in &mut silent {
        let lines = peer.lines_until_closed();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(refusal(&lines[0]), "no hello within 10s");
    }

    // Wrong and missing tokens are refused, whatever else the hello says.
    for token in [Some("wrong-token-wrong-token-wrong!!"), None, Some("")] {
        let mut peer = Peer::connect(&addr);
        peer.send(&hello(1, "hardened", "whatever", token));
        let lines = peer.lines_until_closed();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(refusal(&lines[0]), "wrong or missing token");
    }

    // A 100 MiB line without a newline: the coordinator stops reading at its cap and closes
    // the connection, so the write cannot complete.
    let mut flood = Peer::connect(&addr);
    let mut writer = flood.stream().try_clone().unwrap();
    writer.set_write_timeout(Some(CLOSE_BOUND)).unwrap();
    let wrote = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        (0..100).try_for_each(|_| writer.write_all(&chunk))
    });
    let lines = flood.lines_until_closed();
    let written = wrote.join().unwrap();
    assert!(
        written.is_err(),
        "the coordinator read a 100 MiB hello line to its end"
    );
    if let Some(line) = lines.first() {
        assert!(
            refusal(line).contains("a line longer than 65536 bytes"),
            "{lines:?}"
        );
    }
    let rss_after = rss_bytes(procs.pid("c0"));
    assert!(
        rss_after < rss_before + (48 << 20),
        "the coordinator grew from {rss_before} to {rss_after} bytes"
    );

    // The job never noticed: it commits on, and stops with exact state.
    procs.await_commit_after(Some(first));
    procs.stop_all();
    assert_exact(dir, &job_yaml);
    let log = std::fs::read_to_string(dir.join("c0.log")).unwrap();
    assert!(!log.contains(TOKEN), "the token must never be logged");
}

/// A container with the token speaks for tasks it does not run: an `Ack` for a task the job
/// does not have, an `Ack` for another container's task, `Finished` for another container's
/// task. Each closes its connection (logged) instead of reaching the coordinator — never a
/// panic — and once the real container joins, the job commits and stops with exact state.
#[test]
fn a_container_speaking_for_tasks_it_does_not_run_is_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job_yaml = job(6, 3);
    let spec_hash = cairn_contract::JobSpec::from_yaml_str(&job_yaml)
        .unwrap()
        .spec_hash();
    let mut procs = Procs::new(dir, &job_yaml);
    let addr = free_local_addr();
    procs.start("c0", &coordinator_args(&addr), None);
    procs.start("c1", &container_args("1", &addr), None);

    // Plays container 2 up to its first checkpoint; returns the connection and the id.
    let join_as_container_2 = || {
        let mut peer = Peer::connect(&addr);
        peer.send(&hello(2, "hardened", &spec_hash, Some(TOKEN)));
        assert_eq!(peer.line().as_deref(), Some("\"Accepted\""));
        peer.until(|v| v.get("Restore").map(|_| ()));
        peer.send(&json!({"Ready": 2}));
        let id = peer.until(|v| v["Checkpoint"]["id"].as_u64());
        (peer, id)
    };
    type Forge = Box<dyn Fn(u64) -> Vec<Value>>;
    let forgeries: [(&str, Forge); 3] = [
        // Two tasks the job does not have: with the four real acks they would make six.
        (
            "unknown tasks",
            Box::new(|id| vec![ack(99, id), ack(98, id)]),
        ),
        ("another container's task", Box::new(|id| vec![ack(0, id)])),
        (
            "another container's finished task",
            Box::new(|_| vec![json!({"Finished": 1})]),
        ),
    ];
    for (what, messages) in &forgeries {
        let (mut peer, id) = join_as_container_2();
        for message in messages(id) {
            peer.send(&message);
        }
        // The coordinator closes the connection (commands already on their way may come
        // first).
        peer.lines_until_closed();
        procs.assert_running();
        let log = std::fs::read_to_string(dir.join("c0.log")).unwrap();
        assert!(
            log.contains("container 2 sent a message it may not send"),
            "{what}: {log}"
        );
    }
    let log = std::fs::read_to_string(dir.join("c0.log")).unwrap();
    for why in [
        "Ack for task 99, which this job does not have",
        "Ack for task 0, which runs in container 0",
        "Finished for task 1, which runs in container 1",
    ] {
        assert!(log.contains(why), "{why}: {log}");
    }
    assert!(!log.contains("panicked"), "{log}");

    // The real container 2 joins; the job commits and stops with exact state.
    let before = committed_ids(dir, "file://./ckpt").last().copied();
    procs.start("c2", &container_args("2", &addr), None);
    procs.await_commit_after(before);
    procs.stop_all();
    assert_exact(dir, &job_yaml);
}

/// Sends `request` (possibly incomplete) on a new connection and reads until the server
/// closes it; returns what it answered.
fn http_exchange(addr: &str, request: &str) -> String {
    let mut peer = Peer::connect(addr);
    peer.stream().write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    match peer.reader.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{addr}: the server neither answered nor closed within {CLOSE_BOUND:?}")
        }
        Err(_) => {} // reset
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path` answered in full (the connection is closed by `Connection: close`).
fn http_get(addr: &str, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
}

/// Both HTTP servers of a process with `ulimit -n 256`: half-sent requests are closed at the
/// header timeout; then 300 idle connections to each (more than the limit of 8, more than the
/// process has descriptors) still leave `/healthz` and `/v1/status` answering and checkpoints
/// committing, and the job stops with exact state.
#[test]
fn http_servers_close_half_sent_requests_and_outlast_a_flood_of_idle_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job_yaml = job(2, 1);
    let mut procs = Procs::new(dir, &job_yaml);
    let (metrics, control) = (free_local_addr(), free_local_addr());
    procs.start(
        "worker",
        &[
            "--metrics-addr",
            &metrics,
            "--control-addr",
            &control,
            "--control-token-file",
            "token",
            "--http-max-connections",
            "8",
        ],
        Some(256),
    );
    let first = procs.await_commit_after(None);

    // Half-sent requests, within the connection limit: closed at the header timeout.
    let half: Vec<_> = [&metrics, &control]
        .iter()
        .flat_map(|addr| (0..4).map(move |_| (*addr).clone()))
        .map(|addr| {
            std::thread::spawn(move || http_exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n"))
        })
        .collect();
    for h in half {
        let answer = h.join().unwrap();
        assert!(
            !answer.contains("200 OK"),
            "a half-sent request was answered: {answer}"
        );
    }

    // A flood of idle connections.
    let flood: Vec<TcpStream> = [&metrics, &control]
        .iter()
        .flat_map(|addr| (0..300).map(move |_| TcpStream::connect(addr.as_str()).unwrap()))
        .collect();
    let health = http_get(&metrics, "/healthz", None);
    assert!(
        health.starts_with("HTTP/1.1 200 OK") && health.contains("\"status\":\"ok\""),
        "{health}"
    );
    let status = http_get(&control, "/v1/status", Some(TOKEN));
    assert!(
        status.starts_with("HTTP/1.1 200 OK") && status.contains("\"job\":\"hardened\""),
        "{status}"
    );
    let during = procs.await_commit_after(Some(first));
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(
        !log.contains("Too many open files"),
        "the flood exhausted the worker's descriptors: {log}"
    );
    drop(flood);

    procs.await_commit_after(Some(during));
    procs.stop_all();
    assert_exact(dir, &job_yaml);
}

//! The control API of a running job: authentication, bad requests, status, on-demand
//! checkpoints, concurrent savepoint requests, and stop-with-savepoint under load with exact
//! results after restoring the savepoint; and of a finished job that holds: its status,
//! savepoints of its final checkpoint, and a restore of one with more input.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::jobs::committed_offsets;
use common::launcher::wait_until;
use common::*;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Http {
    addr: String,
}

impl Http {
    /// Sends a request; returns (status code, body).
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (code, text) = self.call(method, path, Some(TOKEN), body);
        (
            code,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}")),
        )
    }

    /// Polls an operation until it is no longer pending.
    fn wait(&self, id: &str) -> serde_json::Value {
        for _ in 0..600 {
            let (code, op) = self.json("GET", &format!("/v1/operations/{id}"), "");
            assert_eq!(code, 200, "{op}");
            if op["state"] != "pending" {
                return op;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("operation {id} still pending");
    }
}

fn start(dir: &Path, job: &str) -> (std::process::Child, Http) {
    start_with(dir, job, &[])
}

/// [`start`] with more arguments to `cairn-worker run`.
fn start_with(dir: &Path, job: &str, args: &[&str]) -> (std::process::Child, Http) {
    std::fs::write(dir.join("job.yaml"), job).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let addr = free_local_addr();
    let child = worker(dir)
        .args([
            "run",
            "job.yaml",
            "--quiet",
            "--control-addr",
            &addr,
            "--control-token-file",
            "token",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = Http { addr };
    for _ in 0..200 {
        if std::net::TcpStream::connect(&http.addr).is_ok() {
            return (child, http);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("control API did not come up");
}

const JOB: &str = "\
name: ctl
input:
  type: generator
  partitions: 3
  keys: 200
  seed: 4
  recordsPerPartition: 40000
  ratePerSecond: 8000
task:
  name: count
parallelism: 2
checkpoint:
  interval: 1h
";

#[test]
fn unauthenticated_and_malformed_requests_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (child, http) = start(dir, JOB);

    for (method, path) in [
        ("GET", "/v1/status"),
        ("POST", "/v1/checkpoints"),
        ("POST", "/v1/savepoints"),
        ("POST", "/v1/stop"),
    ] {
        let (code, _) = http.call(method, path, None, "");
        assert_eq!(code, 401, "{method} {path} without a token");
        let (code, _) = http.call(method, path, Some("wrong-token-wrong-token"), "");
        assert_eq!(code, 401, "{method} {path} with a wrong token");
    }
    let (code, body) = http.call("POST", "/v1/savepoints", Some(TOKEN), "{\"stop\": \"yes\"}");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("stop"), "{body}");
    let (code, body) = http.call("POST", "/v1/savepoints", Some(TOKEN), "{\"stp\": true}");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("stp"), "{body}");
    let (code, _) = http.call("GET", "/v1/operations/nope", Some(TOKEN), "");
    assert_eq!(code, 404);

    // None of that took a checkpoint or stopped the job.
    let (code, status) = http.json("GET", "/v1/status", "");
    assert_eq!(code, 200);
    assert_eq!(status["state"], "running");
    assert!(status["lastCheckpoint"].is_null(), "{status}");
    assert_eq!(status["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(status["parallelism"], 2);

    // A checkpoint on demand shows in the status.
    let (code, op) = http.json("POST", "/v1/checkpoints", "");
    assert_eq!(code, 202);
    let done = http.wait(op["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, status) = http.json("GET", "/v1/status", "");
    assert_eq!(status["lastCheckpoint"]["id"], done["checkpoint"]);

    let (code, _) = http.json("POST", "/v1/stop", "");
    assert_eq!(code, 202);
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(
        committed_ids(dir, "file://./.cairn/checkpoints").len(),
        2,
        "the on-demand one and the final one"
    );
}

#[test]
fn stop_with_savepoint_under_load_then_restore_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (child, http) = start(dir, JOB);
    std::thread::sleep(Duration::from_millis(700));

    // Two savepoint requests at once: the second joins the first; a different one conflicts.
    let (code, first) = http.json("POST", "/v1/savepoints", "{\"stop\": true}");
    assert_eq!(code, 202, "{first}");
    let (code, second) = http.json("POST", "/v1/savepoints", "{\"stop\": true}");
    let (conflict, body) = http.call("POST", "/v1/savepoints", Some(TOKEN), "{}");
    let done = http.wait(first["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    // The savepoint takes far longer than two local requests, so both arrive while it runs;
    // should the job already be gone, the answer is 503, never a second savepoint.
    match code {
        202 => assert_eq!(
            second["id"], first["id"],
            "a repeated request joins the running one"
        ),
        other => assert_eq!(other, 503, "{second}"),
    }
    match conflict {
        409 => assert!(body.contains(first["id"].as_str().unwrap()), "{body}"),
        other => assert_eq!(other, 503, "{body}"),
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = done["savepoint"]["url"].as_str().unwrap().to_owned();

    // The job stopped mid-input: the savepoint's offsets are between 0 and the end.
    let sp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(url.strip_prefix("file://").unwrap()).join("_SAVEPOINT.json"))
            .unwrap(),
    )
    .unwrap();
    let read: u64 = total_offsets(&sp);
    assert!(
        read > 0 && read < 120_000,
        "stopped mid-input after {read} records"
    );

    // Restore it (at full speed now) in a fresh store: the result is the exact full count.
    let fresh = dir.join("again");
    std::fs::create_dir(&fresh).unwrap();
    let job = JOB.replace("  ratePerSecond: 8000\n", "");
    std::fs::write(fresh.join("job.yaml"), &job).unwrap();
    let out = run_cmd(
        &fresh,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &url],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: BTreeMap<String, i64> =
        expected_counts(&cairn_contract::JobSpec::from_yaml_str(&job).unwrap());
    assert_eq!(
        dumped_counts(&fresh, "file://./.cairn/checkpoints"),
        expected
    );
}

#[test]
fn a_bad_token_file_stops_the_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    std::fs::write(dir.join("token"), "short\n").unwrap();
    let out = run_cmd(
        dir,
        &[
            "run",
            "job.yaml",
            "--control-addr",
            "127.0.0.1:0",
            "--control-token-file",
            "token",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("token file") && err.contains("at least 16"),
        "{err}"
    );
    assert!(
        !err.contains("short"),
        "the token must never be printed: {err}"
    );
    let out = run_cmd(
        dir,
        &[
            "run",
            "job.yaml",
            "--control-addr",
            "127.0.0.1:0",
            "--control-token-file",
            "missing",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[test]
fn a_savepoint_that_times_out_is_aborted_and_the_job_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Every upload is slowed far past the checkpoint timeout.
    let job = JOB.replace("  interval: 1h\n", "  interval: 1h\n  timeout: 300ms\n");
    std::fs::write(dir.join("job.yaml"), &job).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let http = Http {
        addr: free_local_addr(),
    };
    let mut child = worker(dir)
        .args([
            "run",
            "job.yaml",
            "--quiet",
            "--control-addr",
            &http.addr,
            "--control-token-file",
            "token",
        ])
        .env("CAIRN_FAULT_UPLOAD_DELAY_MS", "2000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(&http.addr).is_err() {
        std::thread::sleep(Duration::from_millis(25));
    }

    let (code, op) = http.json("POST", "/v1/savepoints", "{\"stop\": true}");
    assert_eq!(code, 202, "{op}");
    let done = http.wait(op["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("keeps running"),
        "{done}"
    );

    // Still running and reading input: the records counter moves.
    let read = |http: &Http| -> u64 {
        let (_, status) = http.json("GET", "/v1/status", "");
        assert_eq!(status["state"], "running", "{status}");
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["recordsIn"].as_u64().unwrap())
            .sum()
    };
    let before = read(&http);
    std::thread::sleep(Duration::from_millis(1500));
    let after = read(&http);
    assert!(
        after > before,
        "tasks must resume after the failed stop-with-savepoint ({before} -> {after})"
    );
    assert!(committed_ids(dir, "file://./.cairn/checkpoints").is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A restart after a SIGKILL, on a machine that kept only the task directories' progress marks
/// (the databases removed, as on a node whose volume lost them), reports what its recovery
/// cost: how long the killed run has been gone, the input it replays, the bytes it fetched
/// (the whole checkpoint), and when each task processed a record again.
#[test]
fn a_restart_after_a_kill_reports_what_its_recovery_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 100 s of input: it is still running when killed.
    let job = JOB
        .replace("recordsPerPartition: 40000", "recordsPerPartition: 400000")
        .replace("ratePerSecond: 8000", "ratePerSecond: 4000")
        + "  store: file://./ckpt\n";
    let (mut child, http) = start(dir, &job);
    let (code, op) = http.json("POST", "/v1/checkpoints", "");
    assert_eq!(code, 202);
    let done = http.wait(op["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, status) = http.json("GET", "/v1/status", "");
    let checkpoint_bytes = status["lastCheckpoint"]["totalBytes"].as_u64().unwrap();
    let recovery = &status["recovery"];
    assert_eq!(recovery["fetchedBytes"], 0, "a first start fetches nothing");
    assert!(recovery.get("detectMs").is_none(), "{recovery}");
    assert!(recovery.get("replayOffsets").is_none(), "{recovery}");

    std::thread::sleep(Duration::from_millis(1_000));
    let records_in = |status: &serde_json::Value| -> u64 {
        let tasks = status["tasks"].as_array().unwrap();
        tasks.iter().map(|t| t["recordsIn"].as_u64().unwrap()).sum()
    };
    let (_, status) = http.json("GET", "/v1/status", "");
    let read_before_kill = records_in(&status);
    // Every task marks its progress at least once a second: its last mark is past that sample.
    std::thread::sleep(Duration::from_millis(1_500));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    let committed = committed_offsets(dir);
    assert!(read_before_kill > committed, "input after the checkpoint");
    for task in std::fs::read_dir(dir.join(".cairn/state/ctl")).unwrap() {
        for entry in std::fs::read_dir(task.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
    }
    let gone = Duration::from_millis(700);
    std::thread::sleep(gone);

    let (child, http) = start(dir, &job);
    let up_after = killed.elapsed();
    let mut status = serde_json::Value::Null;
    wait_until("every task to process a record again", 60, || {
        status = http.json("GET", "/v1/status", "").1;
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["resumedMs"].is_u64())
    });
    let recovery = &status["recovery"];
    let detect = recovery["detectMs"].as_u64().expect("a detect time");
    assert!(
        detect >= gone.as_millis() as u64,
        "{detect} ms: the run was gone longer"
    );
    assert!(
        detect <= (up_after + Duration::from_millis(2_500)).as_millis() as u64,
        "{detect} ms: more than the time since the kill and a mark period"
    );
    let replay = recovery["replayOffsets"].as_u64().expect("a replay count");
    assert!(
        replay >= read_before_kill - committed,
        "replay {replay}: less than was read after the checkpoint 1.5 s before the kill"
    );
    assert!(replay <= 3 * 400_000 - committed, "replay {replay}");
    assert_eq!(recovery["fetchedBytes"], checkpoint_bytes, "{recovery}");
    for task in status["tasks"].as_array().unwrap() {
        assert!(task["resumedMs"].as_u64().unwrap() < 60_000, "{task}");
    }
    // Back where the previous run had got to: each task passes its last mark (the generator
    // replays at its rate, so this takes about as long as the input after the checkpoint).
    wait_until("every task to catch up with the killed run", 60, || {
        status = http.json("GET", "/v1/status", "").1;
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["caughtUpMs"].is_u64())
    });
    for task in status["tasks"].as_array().unwrap() {
        let (resumed, caught_up) = (task["resumedMs"].as_u64(), task["caughtUpMs"].as_u64());
        assert!(caught_up >= resumed, "{task}");
    }
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `checkpoint.targetRecoveryTime`: the coordinator predicts the recovery time from what it
/// measures and sets the interval. Light input: the prediction is far under the target, so
/// the interval grows (at most twofold per commit) to `maxInterval`, and checkpoints follow it.
#[test]
fn a_recovery_objective_lengthens_the_interval_of_a_light_job_and_checkpoints_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = JOB
        .replace("recordsPerPartition: 40000", "recordsPerPartition: 4000000")
        .replace(
            "interval: 1h",
            "interval: 500ms\n  targetRecoveryTime: 30s\n  minInterval: 500ms\n  maxInterval: 4s",
        );
    let (mut child, http) = start(dir, &job);
    let status = |http: &Http| http.json("GET", "/v1/status", "").1;
    assert_eq!(status(&http)["recoveryObjective"]["targetMs"], 30_000);
    // 500 ms, then 1, 2 and 4 s: three commits.
    wait_until("the interval to grow to maxInterval", 60, || {
        status(&http)["recoveryObjective"]["intervalMs"] == 4_000
    });
    let objective = status(&http)["recoveryObjective"].clone();
    let p = &objective["predicted"];
    let part = |name: &str| {
        p[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {objective}"))
    };
    assert_eq!(
        part("totalMs"),
        part("detectMs") + part("restoreMs") + part("replayMs"),
        "{objective}"
    );
    assert!(part("totalMs") <= 30_000, "{objective}");
    assert!(objective.get("problem").is_none(), "{objective}");
    // Commits follow the 4 s interval: 1 to 3 in 9 s (a 500 ms interval would make ~18).
    let id = |s: serde_json::Value| s["lastCheckpoint"]["id"].as_u64().unwrap();
    let before = id(status(&http));
    std::thread::sleep(Duration::from_secs(9));
    let commits = id(status(&http)) - before;
    assert!((1..=3).contains(&commits), "{commits} commits in 9 s");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A job that processes all the time cannot replay faster than it reads: with a target that
/// leaves less than `minInterval` for replay, the interval stays at `minInterval` and the
/// status says the objective is missed, and why.
#[test]
fn a_recovery_objective_out_of_reach_keeps_min_interval_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = JOB
        .replace(
            "recordsPerPartition: 40000",
            "recordsPerPartition: 400000000",
        )
        .replace("  ratePerSecond: 8000\n", "")
        .replace(
            "interval: 1h",
            "interval: 2s\n  targetRecoveryTime: 4s\n  minInterval: 2s\n  maxInterval: 10s",
        );
    let (mut child, http) = start(dir, &job);
    let mut objective = serde_json::Value::Null;
    wait_until("a prediction", 60, || {
        objective = http.json("GET", "/v1/status", "").1["recoveryObjective"].clone();
        objective["predicted"].is_object()
    });
    // Detect 2 s + restore 0.5 s leave 0.7 s of the 3.2 s budget for replay, but replaying
    // the input of a 2 s interval takes about 2 s when the task is never idle.
    assert_eq!(objective["intervalMs"], 2_000, "{objective}");
    assert!(
        objective["predicted"]["totalMs"].as_u64().unwrap() > 4_000,
        "{objective}"
    );
    let problem = objective["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("processes for"), "{objective}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The interval is chosen at each commit from the load before it; a flood of input after a
/// commit must not wait for that interval. The busy time the tasks report every second is the
/// replay a failure would cost, and once it passes the objective's budget the coordinator
/// checkpoints at once.
#[test]
fn a_flood_of_input_after_a_commit_is_checkpointed_before_the_interval_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    let input = dir.join("in/partition-0");
    std::fs::write(&input, "k1\n").unwrap();
    // Budget for replay: 0.8 x 4 s - 2 s detect - 0.5 s restore = 0.7 s of processing.
    let job = "\
name: flood
input: {type: file, partitions: 1, path: ./in, follow: true}
task: {name: count}
checkpoint:
  interval: 20s
  targetRecoveryTime: 4s
  minInterval: 1s
  maxInterval: 1h
";
    let (mut child, http) = start(dir, job);
    let status = |http: &Http| http.json("GET", "/v1/status", "").1;
    // Idle: the first commit (after 20 s) doubles the interval.
    wait_until("a long interval", 90, || {
        status(&http)["recoveryObjective"]["intervalMs"]
            .as_u64()
            .is_some_and(|ms| ms >= 40_000)
    });
    let before = status(&http)["lastCheckpoint"]["id"].as_u64().unwrap();
    let lines: String = (0..3_000_000).map(|i| format!("k{}\n", i % 1000)).collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    file.write_all(lines.as_bytes()).unwrap();
    drop(file);
    let flooded = std::time::Instant::now();
    wait_until("a checkpoint after the flood", 60, || {
        status(&http)["lastCheckpoint"]["id"].as_u64() > Some(before)
    });
    // Well before the 40 s interval: about the time to be 0.7 s behind, plus a report period
    // and a checkpoint.
    assert!(
        flooded.elapsed() < Duration::from_secs(20),
        "{:?}",
        flooded.elapsed()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A finite job that has processed all its input holds (`--hold-after-stop`, as on
/// Kubernetes) and stays manageable: its status says `finished` and stays healthy with no
/// commits, its final checkpoint is savepointed (once, however often asked) with the
/// stop-with-savepoint semantics of a running job, a checkpoint is refused naming the final
/// one, and a new job restored from the savepoint with more input ends with exact counts.
#[test]
fn a_finished_job_holds_takes_savepoints_and_its_savepoint_resumes_with_more_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = JOB
        .replace("recordsPerPartition: 40000", "recordsPerPartition: 3000")
        .replace("  ratePerSecond: 8000\n", "")
        + "  store: file://./ckpt\n";
    let (child, http) = start_with(dir, &job, &["--hold-after-stop"]);
    let status = |http: &Http| http.json("GET", "/v1/status", "").1;
    wait_until("the job to finish", 60, || {
        status(&http)["state"] == "finished"
    });
    let finished = status(&http);
    let last = committed_ids(dir, "file://./ckpt")
        .last()
        .copied()
        .expect("a final checkpoint");
    assert_eq!(finished["lastCheckpoint"]["id"], last, "{finished}");
    assert_eq!(finished["health"], "healthy", "{finished}");
    let records_in: u64 = finished["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["recordsIn"].as_u64().unwrap())
        .sum();
    assert_eq!(records_in, 3 * 3000);

    // A savepoint: pending at first, like a running job's, then a copy of the final checkpoint.
    let (code, op) = http.json("POST", "/v1/savepoints", "{\"stop\": false}");
    assert_eq!(code, 202, "{op}");
    assert_eq!(op["state"], "pending", "{op}");
    let first = http.wait(op["id"].as_str().unwrap());
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["checkpoint"], last, "{first}");
    assert_eq!(first["savepoint"]["checkpoint"], last, "{first}");
    let url = first["savepoint"]["url"].as_str().unwrap().to_owned();
    let sp_dir = Path::new(url.strip_prefix("file://").unwrap()).to_path_buf();
    assert!(
        sp_dir.ends_with(format!("ckpt/savepoints/sp-{last:012}")),
        "{url}"
    );
    let sp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sp_dir.join("_SAVEPOINT.json")).unwrap()).unwrap();
    assert_eq!(sp["sourceCheckpoint"], last, "{sp}");
    assert_eq!(sp["taskName"], "count", "{sp}");
    // The count task's own version (StreamTask::state_version), as the running job knows it.
    assert_eq!(sp["stateVersion"], 1, "{sp}");
    assert_eq!(total_offsets(&sp), 3 * 3000, "{sp}");

    // Asked again: a new operation answering with the same savepoint (copied once).
    let (code, op) = http.json("POST", "/v1/savepoints", "{}");
    assert_eq!(code, 202, "{op}");
    assert_ne!(op["id"], first["id"]);
    let again = http.wait(op["id"].as_str().unwrap());
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["savepoint"], first["savepoint"], "{again}");

    // Stop-with-savepoint: succeeds, and the job has stopped with it from then on.
    let (code, op) = http.json("POST", "/v1/savepoints", "{\"stop\": true}");
    assert_eq!(code, 202, "{op}");
    let stopped = http.wait(op["id"].as_str().unwrap());
    assert_eq!(stopped["state"], "succeeded", "{stopped}");
    assert_eq!(stopped["stop"], true, "{stopped}");
    assert_eq!(stopped["savepoint"], first["savepoint"], "{stopped}");
    let (code, repeat) = http.json("POST", "/v1/savepoints", "{\"stop\": true}");
    assert_eq!(code, 200, "{repeat}");
    assert_eq!(repeat["id"], stopped["id"], "the same operation");
    let (code, body) = http.call("POST", "/v1/savepoints", Some(TOKEN), "{\"stop\": false}");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains(stopped["id"].as_str().unwrap()), "{body}");

    // No checkpoint: nothing runs to take one, and the answer names the final one.
    let (code, body) = http.call("POST", "/v1/checkpoints", Some(TOKEN), "");
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains(&format!("final checkpoint {last} is committed")),
        "{body}"
    );
    assert_eq!(committed_ids(dir, "file://./ckpt").last(), Some(&last));

    // A new job from the savepoint, with more input: it reads on from the savepoint's offsets
    // to the new end, and counts exactly the whole input.
    let fresh = dir.join("more");
    std::fs::create_dir(&fresh).unwrap();
    let more = job.replace("recordsPerPartition: 3000", "recordsPerPartition: 5000");
    std::fs::write(fresh.join("job.yaml"), &more).unwrap();
    let out = run_cmd(
        &fresh,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &url],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = expected_counts(&cairn_contract::JobSpec::from_yaml_str(&more).unwrap());
    assert_eq!(expected.values().sum::<i64>(), 3 * 5000);
    assert_eq!(dumped_counts(&fresh, "file://./ckpt"), expected);

    // Past the point where a running job with no commit would be degraded (30 s after its last
    // commit), the finished one is still healthy and finished.
    let committed_at = finished["lastCheckpoint"]["committedAtMs"]
        .as_u64()
        .unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    wait_until("30 s since the final commit", 60, || {
        now_ms() > committed_at + 31_000
    });
    let held = status(&http);
    assert_eq!(
        (held["state"].as_str(), held["health"].as_str()),
        (Some("finished"), Some("healthy")),
        "{held}"
    );

    // The hold ends with SIGTERM, cleanly.
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Helpers shared by the worker's integration tests: run the real `cairn-worker` binary,
//! compute exact expected results of generator jobs, read dumps and file-sink output.
#![allow(dead_code)]

pub mod azurite;
pub mod gcs;
pub mod hdfs;
pub mod jobs;
pub mod kafka;
pub mod launcher;
pub mod minio;
pub mod windows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use cairn_contract::JobSpec;
use cairn_worker::source::generator::{KeyTable, RecordRule};

/// Path of the worker binary built by cargo for this test run.
pub fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-worker"))
}

/// A `cairn-worker` command running in `dir`, logs kept quiet.
pub fn worker(dir: &Path) -> Command {
    let mut cmd = Command::new(worker_bin());
    cmd.current_dir(dir).env("RUST_LOG", "warn");
    cmd
}

/// `cairn-worker run job.yaml` in `dir` as container `k` of a job run as several processes:
/// container 0 listens for the others at `addr`, the others join it there. All present the
/// token in `dir/token`, written here if the directory has none yet.
pub fn container_command(dir: &Path, k: u32, addr: &str) -> Command {
    let token = dir.join("token");
    if !token.exists() {
        std::fs::write(&token, "test-coordinator-token-0123456789").unwrap();
    }
    let mut cmd = worker(dir);
    cmd.args([
        "run",
        "job.yaml",
        "--quiet",
        "--coordinator-token-file",
        "token",
    ])
    .args(["--container", &k.to_string()])
    .args([
        if k == 0 {
            "--coordinator-listen"
        } else {
            "--coordinator"
        },
        addr,
    ]);
    cmd
}

/// Starts `cairn-worker run job.yaml` in `dir` in the background.
pub fn spawn_run(dir: &Path, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = worker(dir);
    cmd.args(["run", "job.yaml", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start cairn-worker")
}

/// Runs a `cairn-worker` subcommand to completion.
pub fn run_cmd(dir: &Path, args: &[&str]) -> Output {
    run_cmd_with_env(dir, args, &[])
}

/// Runs a `cairn-worker` subcommand to completion with extra environment (e.g. the settings
/// of an S3 store).
pub fn run_cmd_with_env(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    worker(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("run cairn-worker")
}

/// Exact final count per key of a finite generator job: replays the generator's definition.
pub fn expected_counts(spec: &JobSpec) -> BTreeMap<String, i64> {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        panic!("generator input expected")
    };
    let end = g.records_per_partition.expect("finite job");
    expected_counts_up_to(spec, &(0..g.partitions).map(|p| (p, end)).collect())
}

/// Exact count per key of the records of a generator job before `offsets` (partition ->
/// offset): the state a checkpoint with those offsets holds.
pub fn expected_counts_up_to(
    spec: &JobSpec,
    offsets: &BTreeMap<u32, u64>,
) -> BTreeMap<String, i64> {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        panic!("generator input expected")
    };
    let table = KeyTable::build(g);
    let mut counts = BTreeMap::new();
    for (&p, &offset) in offsets {
        let rule = RecordRule::new(g, &table, p);
        if !rule.has_keys() {
            continue;
        }
        for j in 0..offset {
            *counts.entry(format!("k{}", rule.record(j).0)).or_insert(0) += 1;
        }
    }
    counts
}

/// `state dump` of the latest checkpoint as key -> integer value.
pub fn dumped_counts(dir: &Path, store: &str) -> BTreeMap<String, i64> {
    dumped_counts_with_env(dir, store, &[])
}

/// [`dumped_counts`] with extra environment.
pub fn dumped_counts_with_env(
    dir: &Path,
    store: &str,
    env: &[(&str, String)],
) -> BTreeMap<String, i64> {
    let out = run_cmd_with_env(dir, &["state", "dump", "--store", store], env);
    assert!(
        out.status.success(),
        "state dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    counts_from_dump(&out.stdout)
}

/// The JSON lines of `state dump` as key -> integer value; a key listed twice is an error.
pub fn counts_from_dump(stdout: &[u8]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for line in std::str::from_utf8(stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        assert!(
            counts.insert(key, v["value"].as_i64().unwrap()).is_none(),
            "key dumped twice: {line}"
        );
    }
    counts
}

/// Every published line of a file sink, as (key, value) -> occurrences.
pub fn published_lines(out_dir: &Path) -> BTreeMap<(String, String), u32> {
    let mut lines = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(out_dir) else {
        return lines;
    };
    for task in tasks {
        let task = task.unwrap().path();
        for f in std::fs::read_dir(&task).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "out") {
                for line in std::fs::read_to_string(&f).unwrap().lines() {
                    let (k, v) = line.split_once('\t').expect("key<TAB>value");
                    *lines.entry((k.to_owned(), v.to_owned())).or_insert(0) += 1;
                }
            }
        }
    }
    lines
}

/// What the `count` task must have published, exactly once each: `(key, 1..=count)`.
pub fn expected_count_output(counts: &BTreeMap<String, i64>) -> BTreeMap<(String, String), u32> {
    counts
        .iter()
        .flat_map(|(k, c)| (1..=*c).map(move |i| ((k.clone(), i.to_string()), 1)))
        .collect()
}

/// Checks a `file://` store against its own manifests, reading the files directly: exactly
/// `retained` commit records remain (or fewer if fewer were taken), every file a retained
/// manifest references exists with its recorded size, and no SST is left that none references.
pub fn assert_store_consistent(store_dir: &Path, retained: usize) {
    let ckpt_root = store_dir.join("checkpoints");
    let mut commits: Vec<PathBuf> = std::fs::read_dir(&ckpt_root)
        .unwrap()
        .map(|e| e.unwrap().path().join("_COMMIT.json"))
        .filter(|p| p.exists())
        .collect();
    commits.sort();
    assert!(
        !commits.is_empty() && commits.len() <= retained,
        "{} commit records for retained={retained}",
        commits.len()
    );
    let mut referenced = std::collections::BTreeSet::new();
    for commit in &commits {
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(commit).unwrap()).unwrap();
        for t in c["tasks"].as_array().unwrap() {
            let m: serde_json::Value = serde_json::from_slice(
                &std::fs::read(store_dir.join(t["manifest"].as_str().unwrap())).unwrap(),
            )
            .unwrap();
            for f in m["files"].as_array().unwrap() {
                let key = f["key"].as_str().unwrap().to_owned();
                let len = std::fs::metadata(store_dir.join(&key))
                    .unwrap_or_else(|_| panic!("referenced file {key} is missing"))
                    .len();
                assert_eq!(len, f["size"].as_u64().unwrap(), "{key} has the wrong size");
                referenced.insert(key);
            }
        }
    }
    for entry in walk(&store_dir.join("tasks")) {
        let key = entry
            .strip_prefix(store_dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            referenced.contains(&key),
            "unreferenced file left behind: {key}"
        );
    }
}

/// Every file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Sends SIGTERM to a child (graceful stop).
pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child this test started and has not reaped yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0,
        "SIGTERM to {}",
        child.id()
    );
}

/// Committed checkpoint ids listed by `cairn-worker checkpoints --json`.
pub fn committed_ids(dir: &Path, store: &str) -> Vec<u64> {
    committed_ids_with_env(dir, store, &[])
}

/// [`committed_ids`] with extra environment.
pub fn committed_ids_with_env(dir: &Path, store: &str, env: &[(&str, String)]) -> Vec<u64> {
    let out = run_cmd_with_env(dir, &["checkpoints", store, "--json"], env);
    // Reading creates nothing: a store the job has not written yet does not exist.
    if !out.status.success()
        && String::from_utf8_lossy(&out.stderr).contains("no such checkpoint store")
    {
        return Vec::new();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ids_from_listing(&out.stdout)
}

/// The ids of a `cairn-worker checkpoints --json` listing.
pub fn ids_from_listing(stdout: &[u8]) -> Vec<u64> {
    std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Total of the input offsets recorded in a commit record or savepoint manifest (`tasks[].offsets`).
pub fn total_offsets(doc: &serde_json::Value) -> u64 {
    doc["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .flat_map(|t| t["offsets"].as_object().expect("offsets").values())
        .map(|v| v.as_u64().expect("offset"))
        .sum()
}

/// A loopback address with a port free right now (for a server the test starts).
pub fn free_local_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The whole answer (status line, headers, body) of a plain `GET` on a worker's HTTP server.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Asserts that a count job's committed state and published file output are exactly the counts
/// of its generator input up to `offsets` (the offsets of the commit checked), and that those
/// counts account for every record read.
pub fn assert_counts_exact(dir: &Path, store: &str, spec: &JobSpec, offsets: &BTreeMap<u32, u64>) {
    let expected = expected_counts_up_to(spec, offsets);
    assert_eq!(
        expected.values().sum::<i64>() as u64,
        offsets.values().sum::<u64>()
    );
    assert_eq!(dumped_counts(dir, store), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
}

/// The random kill schedule of a test: seeded by `CAIRN_TEST_SEED` when set (to replay a
/// failure), else by `default_seed`; the seed is printed.
pub fn kill_schedule(default_seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    eprintln!("kill schedule seed {seed} (set CAIRN_TEST_SEED to replay)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Starts `cairn-worker run job.yaml` in `dir` again and again, SIGKILLing each run after a
/// random 80–900 ms, until it has been killed `wanted` times or a run ends by itself (which
/// must succeed). Run `k` (counting kills so far) gets the environment `env(k)`. Returns how
/// many times it was killed.
pub fn kill_repeatedly(
    dir: &Path,
    rng: &mut impl rand::Rng,
    wanted: u32,
    env: impl Fn(u32) -> &'static [(&'static str, &'static str)],
) -> u32 {
    kill_repeatedly_after(dir, rng, wanted, 80..900, env)
}

/// [`kill_repeatedly`], each run killed after a random number of milliseconds in `after`.
pub fn kill_repeatedly_after(
    dir: &Path,
    rng: &mut impl rand::Rng,
    wanted: u32,
    after: std::ops::Range<u64>,
    env: impl Fn(u32) -> &'static [(&'static str, &'static str)],
) -> u32 {
    use std::time::{Duration, Instant};
    let mut kills = 0;
    while kills < wanted {
        let mut child = spawn_run(dir, env(kills));
        let wait = Duration::from_millis(rng.random_range(after.clone()));
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    kills
}

/// Adds to `counts` the records of `spec`'s generator from `from[p]` (default 0) to the end of
/// each partition: the counts a job resumed at offsets `from` adds.
pub fn add_generator_records(
    counts: &mut BTreeMap<String, i64>,
    spec: &JobSpec,
    from: &BTreeMap<u32, u64>,
) {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        panic!("not a generator job")
    };
    let table = KeyTable::build(g);
    for p in 0..g.partitions {
        let rule = RecordRule::new(g, &table, p);
        if !rule.has_keys() {
            continue;
        }
        for j in from.get(&p).copied().unwrap_or(0)..g.records_per_partition.unwrap() {
            *counts.entry(format!("k{}", rule.record(j).0)).or_insert(0) += 1;
        }
    }
}

/// Runs `cairn-worker <args>` (log at info level), which must succeed; returns its log and
/// output.
pub fn run_logged_ok(dir: &Path, args: &[&str]) -> String {
    let out = worker(dir)
        .env("RUST_LOG", "info")
        .args(args)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {log}");
    log + &String::from_utf8_lossy(&out.stdout)
}

/// `cairn-worker savepoint <store>`: a savepoint of the latest checkpoint; its URL.
pub fn savepoint_of_latest(dir: &Path, store: &str) -> String {
    savepoint_of_latest_with_env(dir, store, &[])
}

/// [`savepoint_of_latest`] with extra environment (a remote store's settings).
pub fn savepoint_of_latest_with_env(dir: &Path, store: &str, env: &[(&str, String)]) -> String {
    let out = run_cmd_with_env(dir, &["savepoint", store], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every file referenced by every committed checkpoint of `store` exists with its recorded
/// size: no commit points at a missing or partial object.
pub fn assert_commits_complete(store: &cairn_worker::storage::CheckpointStore) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let all = store.list("").await.unwrap();
        let size_of = |key: &str| all.iter().find(|o| o.key == key).map(|o| o.size);
        let commits: Vec<_> = all
            .iter()
            .filter(|o| o.key.starts_with("checkpoints/") && o.key.ends_with("/_COMMIT.json"))
            .collect();
        assert!(!commits.is_empty());
        for commit in commits {
            let c: serde_json::Value =
                serde_json::from_slice(&store.get_bytes(&commit.key).await.unwrap()).unwrap();
            for task in c["tasks"].as_array().unwrap() {
                let key = task["manifest"].as_str().unwrap();
                let m: serde_json::Value =
                    serde_json::from_slice(&store.get_bytes(key).await.unwrap()).unwrap();
                for f in m["files"].as_array().unwrap() {
                    let key = f["key"].as_str().unwrap();
                    assert_eq!(
                        size_of(key),
                        Some(f["size"].as_u64().unwrap()),
                        "{} references {key}",
                        commit.key
                    );
                }
            }
        }
    });
}

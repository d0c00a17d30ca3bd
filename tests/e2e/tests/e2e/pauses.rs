//! A measurement, not a test of behaviour: how long an upgrade, a rescale and a repartition
//! keep a job from processing (the pause: the last record any task processed before the stop's
//! savepoint -> the last task's first record after restore) and how long each takes in all
//! (spec change -> Running on the new spec), with the steps in between, on a job with
//! `CAIRN_E2E_PAUSES_MB` (default 100) MB of state. Opt-in (`tests/e2e/kind.sh pauses`): it
//! takes minutes and asserts nothing but that the operations finish. Results:
//! docs/benchmarks.md, "Upgrade, rescale and repartition pauses on kind".
//!
//! Clocks: the kind node shares this machine's clock, so the workers' log times (their
//! `tracing` timestamps and the `unix_ms` fields of the "paused for a stop" and "first record"
//! lines) and the receipt times of `kubectl get -w` events here are comparable; watch events
//! arrive some milliseconds late.
//!
//! The job: the keyed `count` over a generator with `MB * 100_000` keys (about 17 bytes of
//! checkpointed state a key). Its state is made first by a pod of the worker image running the
//! same job without a rate in one process, with a cache that holds the state, into the job's
//! store until a committed checkpoint references the size wanted; the StreamJob (500 records/s
//! a partition) then starts from that checkpoint and goes through the three operations.
//! (Filling through the StreamJob itself, with the default 64 MiB cache, made only a few
//! thousand records a second a task on the kind node.) Every process builds the generator's
//! key table (a `u64` a key) when it starts, so every restore here includes that: about 1.4 s
//! at 10M keys, several seconds at 100M.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::count::store_url;
use crate::jobs::idle_running;
use crate::target::{Suite, NS};

const JOB: &str = "pauses";
/// Records per second per partition once the state is filled: a steady flow (so there is a
/// last record before the stop and a first after it) that leaves the 2 cores mostly free.
const STEADY_RATE: u64 = 500;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn job(suite: &Suite, mb: u64) -> Value {
    json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": JOB, "namespace": NS},
        "spec": {
            "job": {
                "input": {"type": "generator", "partitions": 4, "keys": mb * 100_000, "seed": 7, "ratePerSecond": STEADY_RATE},
                "task": {"name": "count"},
                "parallelism": 2,
                "checkpoint": {"interval": "3s", "store": store_url(JOB)},
            },
            "upgradeMode": "savepoint",
            // The store's files go with the job: at 1 GB they would fill the node's disk.
            "deletion": {"checkpointData": "delete"},
            "upgradeTimeout": "5m",
            "podTemplate": {
                "volumes": [suite.store_volume("store")],
                "volumeMounts": [{"name": "store", "mountPath": crate::inspect::STORE_MOUNT}],
            },
        }
    })
}

/// A `kubectl` that runs in the background for the length of one operation (a watch, or
/// `logs -f`), each item stamped with the time it arrived.
struct Recorder {
    child: Child,
    items: Arc<Mutex<Vec<(u64, Value)>>>,
    reader: Option<JoinHandle<()>>,
}

impl Recorder {
    /// `kubectl get ... -w -o json --output-watch-events`: one item per watch event.
    fn watch(suite: &Suite, args: &[&str]) -> Recorder {
        Self::start(suite, args, true)
    }

    /// The watch events of the pods of the namespace that `selector` selects.
    fn watch_pods(suite: &Suite, selector: &str) -> Recorder {
        Self::watch(
            suite,
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                selector,
                "-w",
                "-o",
                "json",
                "--output-watch-events",
            ],
        )
    }

    /// `kubectl logs -f ...`: one item per line (a JSON string).
    fn logs(suite: &Suite, args: &[&str]) -> Recorder {
        Self::start(suite, args, false)
    }

    fn start(suite: &Suite, args: &[&str], json_stream: bool) -> Recorder {
        let mut child = suite
            .kubectl_command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl starts");
        let stdout = child.stdout.take().unwrap();
        let items = Arc::new(Mutex::new(Vec::new()));
        let sink = items.clone();
        let reader = std::thread::spawn(move || {
            if json_stream {
                for v in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                    let Ok(v) = v else { break };
                    sink.lock().unwrap().push((now_ms(), v));
                }
            } else {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push((now_ms(), Value::String(line)));
                }
            }
        });
        Recorder {
            child,
            items,
            reader: Some(reader),
        }
    }

    fn stop(mut self) -> Vec<(u64, Value)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.items.lock().unwrap())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as `tracing` prints it
/// (`2026-12-07T03:45:12.123456Z`).
fn rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = text[19..].strip_prefix('.').map_or(0.0, |rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        format!("0.{digits}").parse::<f64>().unwrap_or(0.0)
    });
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some((secs as f64 * 1000.0 + frac * 1000.0) as u64)
}

/// The log time of a worker's line (after `kubectl logs --prefix`'s `[pod/…] `).
fn line_ms(line: &str) -> Option<u64> {
    line.split_whitespace().find_map(rfc3339_ms)
}

/// The value of `field=` on a `tracing` line.
fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
}

/// Every worker pod of the job: name -> uid.
fn worker_pods(suite: &Suite) -> BTreeMap<String, String> {
    let text = suite.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        &format!("cairn.dev/job={JOB},app.kubernetes.io/name=cairn-worker"),
        "-o",
        "json",
    ]);
    let pods: Value = serde_json::from_str(&text).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["uid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The milestones of one operation, in ms since its spec change (`None`: not seen).
#[derive(Default)]
struct Timeline {
    rows: Vec<(&'static str, Option<u64>)>,
}

impl Timeline {
    fn add(&mut self, what: &'static str, at: Option<u64>, t0: u64) {
        self.rows.push((what, at.map(|t| t.saturating_sub(t0))));
    }

    fn get(&self, what: &str) -> Option<u64> {
        self.rows.iter().find(|(w, _)| *w == what).and_then(|r| r.1)
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.2}", ms as f64 / 1000.0))
}

/// Performs one operation (`change`) and prints its timeline.
fn measure(suite: &Suite, name: &str, change: impl FnOnce(), done: impl Fn(&Value) -> bool) {
    let old = worker_pods(suite);
    let selector = format!("cairn.dev/job={JOB},app.kubernetes.io/name=cairn-worker");
    let pods = Recorder::watch_pods(suite, &selector);
    let sj = Recorder::watch(
        suite,
        &[
            "get",
            "sj",
            JOB,
            "-n",
            NS,
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ],
    );
    // The old pods' logs are gone with them: follow them until they end.
    let old_logs = Recorder::logs(
        suite,
        &[
            "logs",
            "-f",
            "--prefix",
            "-n",
            NS,
            "-l",
            &selector,
            "-c",
            "worker",
            "--since=20s",
            "--max-log-requests=20",
        ],
    );
    std::thread::sleep(Duration::from_secs(2)); // the watches have listed what is there
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let t0 = now_ms();
    change();
    let j = suite.wait(JOB, name, Duration::from_secs(600), |j| {
        idle_running(j) && done(j)
    });
    std::thread::sleep(Duration::from_secs(1));
    let sj = sj.stop();
    let pods = pods.stop();
    let old_logs = old_logs.stop();
    let new_pods: BTreeMap<String, String> = worker_pods(suite)
        .into_iter()
        .filter(|(_, uid)| !old.values().any(|u| u == uid))
        .collect();
    let coordinator_log = suite.pod_log(NS, &format!("{JOB}-0"), "worker");
    let new_logs: Vec<String> = new_pods
        .keys()
        .flat_map(|pod| {
            suite
                .pod_log(NS, pod, "worker")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let old_lines: Vec<String> = old_logs
        .iter()
        .filter_map(|(_, v)| v.as_str().map(str::to_owned))
        .collect();

    // The StreamJob's steps, first seen.
    let mut steps: BTreeMap<String, u64> = BTreeMap::new();
    let mut running = None;
    let mut operating = false;
    for (at, e) in &sj {
        let status = &e["object"]["status"];
        if let Some(step) = status["operation"]["step"].as_str() {
            operating = true;
            steps.entry(step.to_owned()).or_insert(*at);
        } else if operating && running.is_none() && status["phase"] == "Running" {
            running = Some(*at);
        }
    }
    // The pods: old ones going, new ones coming.
    let old_uids: BTreeSet<&String> = old.values().collect();
    let mut deleting = None;
    let mut gone: BTreeMap<String, u64> = BTreeMap::new();
    let mut created: BTreeMap<String, u64> = BTreeMap::new();
    let mut scheduled: BTreeMap<String, u64> = BTreeMap::new();
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    let mut ready: BTreeMap<String, u64> = BTreeMap::new();
    for (at, e) in &pods {
        let pod = &e["object"];
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        if old_uids.contains(&uid) {
            if !pod["metadata"]["deletionTimestamp"].is_null() && deleting.is_none() {
                deleting = Some(*at);
            }
            if e["type"] == "DELETED" {
                gone.entry(uid).or_insert(*at);
            }
            continue;
        }
        if !new_pods.values().any(|u| *u == uid) {
            continue; // a pod of a step in between (none expected)
        }
        created.entry(uid.clone()).or_insert(*at);
        if pod["spec"]["nodeName"].is_string() {
            scheduled.entry(uid.clone()).or_insert(*at);
        }
        if pod["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            started.entry(uid.clone()).or_insert(*at);
        }
        let is_ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if is_ready {
            ready.entry(uid).or_insert(*at);
        }
    }
    let all =
        |m: &BTreeMap<String, u64>, n: usize| m.values().max().copied().filter(|_| m.len() == n);
    let first = |m: &BTreeMap<String, u64>| m.values().min().copied();

    // The workers' own lines.
    let last_before: Vec<u64> = old_lines
        .iter()
        .filter(|l| l.contains("paused for a stop"))
        .filter_map(|l| field(l, "last_record_unix_ms"))
        .filter(|&ms| ms > 0)
        .collect();
    let savepoint_taken = old_lines
        .iter()
        .filter(|l| l.contains("savepoint taken"))
        .filter_map(|l| line_ms(l))
        .max();
    let first_after: Vec<u64> = new_logs
        .iter()
        .filter(|l| l.contains("first record processed"))
        .filter_map(|l| field(l, "unix_ms"))
        .collect();
    // Process start, on the worker's clock (the pod status's "running" arrives a second or
    // more late): its first record's time less the time since it started.
    let processes_started = new_logs
        .iter()
        .filter(|l| l.contains("first record processed"))
        .filter_map(|l| Some(field(l, "unix_ms")? - field(l, "since_start_ms")?))
        .max();
    let joined = new_logs
        .iter()
        .filter(|l| l.contains("joined the coordinator") || l.contains("container connected"))
        .filter_map(|l| line_ms(l))
        .max();
    // The coordinator (pod 0) restores its own tasks before it listens for the others; its
    // `restore_ms` is the restore alone, the rest of its start is mostly the generator's key
    // table.
    let coordinator_ready = coordinator_log.lines().find(|l| l.contains("state ready"));
    let coordinator_restore_ms = coordinator_ready
        .and_then(|l| l.split("restore_ms: ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse::<u64>().ok());
    let restored = new_logs
        .iter()
        .filter(|l| l.contains("state ready"))
        .filter_map(|l| line_ms(l))
        .max();

    let mut t = Timeline::default();
    t.add(
        "restorability check done",
        steps.get("TakingSavepoint").copied(),
        t0,
    );
    t.add(
        "last record before the stop",
        last_before.iter().min().copied(),
        t0,
    );
    t.add("savepoint taken (coordinator)", savepoint_taken, t0);
    t.add(
        "operator saw it, deletes the pods",
        steps.get("StoppingWorkers").copied(),
        t0,
    );
    t.add("old pods terminating", deleting, t0);
    t.add("old pods gone", all(&gone, old.len()), t0);
    t.add("new pods created", first(&created), t0);
    t.add("new pods scheduled", all(&scheduled, new_pods.len()), t0);
    t.add(
        "new containers running (pod status)",
        all(&started, new_pods.len()),
        t0,
    );
    t.add("worker processes started (last)", processes_started, t0);
    t.add(
        "coordinator's own state ready",
        coordinator_ready.and_then(line_ms),
        t0,
    );
    t.add("containers joined the coordinator", joined, t0);
    t.add("state restored (last pod)", restored, t0);
    t.add(
        "first record after restore (last task)",
        first_after.iter().max().copied(),
        t0,
    );
    t.add("new pods Ready", all(&ready, new_pods.len()), t0);
    t.add("Running on the new spec", running, t0);
    let pause = match (last_before.iter().min(), first_after.iter().max()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(*a)),
        _ => None,
    };
    let bytes = j["status"]["lastCheckpoint"]["bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "e2e: pauses: {name}: pause {} s, whole operation {} s; state {} MB in the last checkpoint; load before {}",
        secs(pause),
        secs(t.get("Running on the new spec")),
        bytes / 1_000_000,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for (what, at) in &t.rows {
        eprintln!("e2e: pauses: {name}:   {:>7} s  {what}", secs(*at));
    }
    eprintln!(
        "e2e: pauses: {name}:   the coordinator's restore alone (its restore_ms): {} s",
        secs(coordinator_restore_ms)
    );
    println!(
        "PAUSES\t{name}\tpause_s={}\twhole_s={}\tstate_mb={}\tload={}\t{}",
        secs(pause),
        secs(t.get("Running on the new spec")),
        bytes / 1_000_000,
        load.split_whitespace().next().unwrap_or(""),
        t.rows
            .iter()
            .map(|(w, at)| format!("{w}={}", secs(*at)))
            .collect::<Vec<_>>()
            .join("\t")
    );
}

/// The physical floor on this node: a pod of the worker image running a small job from a
/// ConfigMap, deleted and created again (no state, no savepoint, no coordinator): how long
/// kubelet takes to end one and start the other up to its first record.
fn baseline(suite: &Suite) {
    let job = "name: baseline\ninput: {type: generator, partitions: 1, keys: 10, ratePerSecond: 100}\ntask: {name: count}\ncheckpoint: {interval: 10s, store: \"file:///work/ckpt\"}\nstate: {dir: /work/state}\n";
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "pauses-baseline", "namespace": NS},
        "data": {"job.yaml": job},
    }));
    let pod = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"cairn.dev/baseline": "1"}},
            "spec": {
                "containers": [{
                    "name": "worker", "image": suite.worker_image, "imagePullPolicy": "IfNotPresent",
                    "args": ["run", "/etc/job/job.yaml", "--quiet"],
                    "workingDir": "/work",
                    "volumeMounts": [{"name": "job", "mountPath": "/etc/job"}, {"name": "work", "mountPath": "/work"}],
                }],
                "volumes": [{"name": "job", "configMap": {"name": "pauses-baseline"}}, {"name": "work", "emptyDir": {}}],
                "terminationGracePeriodSeconds": 30,
            }
        })
    };
    let first_record = |name: &str| {
        crate::poll(Duration::from_secs(120), Duration::from_millis(200), || {
            suite
                .pod_log(NS, name, "worker")
                .lines()
                .find(|l| l.contains("first record processed"))
                .and_then(|l| field(l, "unix_ms"))
                .ok_or(())
        })
        .unwrap_or_else(|_| panic!("baseline pod {name} processed no record"))
    };
    suite.apply_ok(&pod("pauses-baseline-a"));
    first_record("pauses-baseline-a");
    let watch = Recorder::watch_pods(suite, "cairn.dev/baseline=1");
    std::thread::sleep(Duration::from_secs(2));
    let t0 = now_ms();
    suite.kubectl_ok(&[
        "delete",
        "pod",
        "pauses-baseline-a",
        "-n",
        NS,
        "--wait=false",
    ]);
    // As the operator does: the new pod once the old one is gone.
    crate::poll(Duration::from_secs(60), Duration::from_millis(100), || {
        let get = suite.kubectl(&["get", "pod", "pauses-baseline-a", "-n", NS]);
        if get.ok {
            Err(())
        } else {
            Ok(())
        }
    })
    .unwrap();
    let t_gone_polled = now_ms();
    suite.apply_ok(&pod("pauses-baseline-b"));
    let t_first = first_record("pauses-baseline-b");
    let events = watch.stop();
    let mut gone = None;
    let mut running = None;
    for (at, e) in &events {
        let name = e["object"]["metadata"]["name"].as_str().unwrap_or("");
        if name == "pauses-baseline-a" && e["type"] == "DELETED" {
            gone.get_or_insert(*at);
        }
        if name == "pauses-baseline-b"
            && e["object"]["status"]["containerStatuses"][0]["state"]["running"].is_object()
        {
            running.get_or_insert(*at);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let rel = |t: Option<u64>| secs(t.map(|t| t.saturating_sub(t0)));
    eprintln!(
        "e2e: pauses: baseline (a worker-image pod deleted, another created once it is gone): gone {} s (polled {} s), new container running {} s, its first record {} s; load {}",
        rel(gone),
        rel(Some(t_gone_polled)),
        rel(running),
        rel(Some(t_first)),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "PAUSES\tbaseline\tgone={}\trunning={}\tfirst_record={}",
        rel(gone),
        rel(running),
        rel(Some(t_first))
    );
    suite.kubectl(&[
        "delete",
        "pod",
        "pauses-baseline-b",
        "-n",
        NS,
        "--wait=false",
    ]);
}

/// The job's state, made by one pod of the worker image running the same job to a finite end
/// into the job's store (where the StreamJob then restores it from).
fn fill(suite: &Suite, mb: u64) {
    let node = suite.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    // What an interrupted earlier run left in the store (kind: a hostPath on the node).
    let _ = std::process::Command::new("docker")
        .args([
            "exec",
            &node,
            "rm",
            "-rf",
            "/var/lib/cairn-e2e-store/pauses",
        ])
        .status();
    // A cache that holds most of the state: with the default 64 MiB, most records of the fill
    // missed it and a 1 GB fill slowed to about 1 MB of state every 30 s.
    let spec = format!(
        "name: {JOB}\ninput: {{type: generator, partitions: 4, keys: {}, seed: 7, recordsPerPartition: {}}}\ntask: {{name: count}}\nparallelism: 2\ncheckpoint: {{interval: 20s, store: \"{}\"}}\nstate: {{dir: /work/state, cacheSize: 3GiB}}\n",
        mb * 100_000,
        mb * 23_000,
        store_url(JOB)
    );
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "pauses-fill", "namespace": NS},
        "data": {"job.yaml": spec},
    }));
    let mut store = suite.store_volume("store");
    store["name"] = json!("store");
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pauses-fill", "namespace": NS},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "worker", "image": suite.worker_image, "imagePullPolicy": "IfNotPresent",
                "args": ["run", "/etc/job/job.yaml", "--quiet"],
                "workingDir": "/work",
                "volumeMounts": [
                    {"name": "job", "mountPath": "/etc/job"},
                    {"name": "work", "mountPath": "/work"},
                    {"name": "store", "mountPath": crate::inspect::STORE_MOUNT},
                ],
            }],
            "volumes": [{"name": "job", "configMap": {"name": "pauses-fill"}}, {"name": "work", "emptyDir": {}}, store],
        }
    }));
    // Until a committed checkpoint references the size wanted (or the input ends): the
    // StreamJob restores the store's latest checkpoint.
    let started = std::time::Instant::now();
    let enough = mb * 950_000;
    let last = crate::poll(Duration::from_secs(1800), Duration::from_secs(3), || {
        let log = suite.pod_log(NS, "pauses-fill", "worker");
        let last = log
            .lines()
            .rfind(|l| l.contains("checkpoint committed"))
            .unwrap_or("")
            .to_owned();
        let phase = suite.kubectl_ok(&[
            "get",
            "pod",
            "pauses-fill",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        assert_ne!(phase, "Failed", "fill: {log}");
        if phase == "Succeeded" || field(&last, "total_bytes").is_some_and(|b| b >= enough) {
            Ok(last)
        } else {
            Err(phase)
        }
    })
    .unwrap_or_else(|p| panic!("the fill pod is still {p}"));
    eprintln!(
        "e2e: pauses: filled in {:.0} s: {last}",
        started.elapsed().as_secs_f64()
    );
    // Gone before the job starts: the job's generation fences it off anyway.
    suite.kubectl_ok(&[
        "delete",
        "pod",
        "pauses-fill",
        "-n",
        NS,
        "--wait=true",
        "--timeout=120s",
    ]);
}

pub fn pauses_flow(suite: &Suite) {
    let mb: u64 = std::env::var("CAIRN_E2E_PAUSES_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    baseline(suite);
    fill(suite, mb);
    suite.apply_ok(&job(suite, mb));
    let started = suite.wait(
        JOB,
        "Running on the filled state",
        Duration::from_secs(600),
        |j| idle_running(j) && !j["status"]["lastCheckpoint"].is_null(),
    );
    eprintln!(
        "e2e: pauses: started: {} bytes in checkpoint {}",
        started["status"]["lastCheckpoint"]["bytes"], started["status"]["lastCheckpoint"]["id"]
    );
    let savepoints = |j: &Value| j["status"]["savepoints"].as_array().map_or(0, Vec::len);
    std::thread::sleep(Duration::from_secs(8)); // a steady flow, and a checkpoint of it
    let n = savepoints(&suite.job(JOB));
    measure(
        suite,
        "upgrade",
        || {
            suite.patch(
                JOB,
                json!({"spec": {"job": {"checkpoint": {"interval": "2s"}}}}),
            )
        },
        move |j| savepoints(j) > n,
    );
    std::thread::sleep(Duration::from_secs(8));
    measure(
        suite,
        "rescale P 2 -> 3",
        || {
            suite.kubectl_ok(&["scale", "sj", JOB, "-n", NS, "--replicas", "3"]);
        },
        |j| j["status"]["parallelism"] == 3,
    );
    std::thread::sleep(Duration::from_secs(8));
    measure(
        suite,
        "repartition N 4 -> 6",
        || suite.patch(JOB, json!({"spec": {"job": {"input": {"partitions": 6}}}})),
        |j| j["status"]["partitions"] == 6,
    );
    suite.delete_job(JOB);
}

//! `cairn-bench recovery`: kill -> processing again (RTO) and the input processed again (RPO)
//! for a job holding about 1 GB of state at full speed.
//!
//! The job runs in a child process (this binary, `recovery-child`), so the kill is a real
//! SIGKILL. The child is restarted at once, as a supervisor or kubelet would without back-off.
//! This process measures the RTO on its own clock: from the kill until every task of the new
//! process has processed a record (`cairn_task_resumed_milliseconds`, polled on loopback). The
//! replay, bytes fetched and restore time come from the restarted worker's metrics
//! (docs/recovery.md).
//!
//! Two restarts are measured:
//! - on the same volume: the local SSTs are hard-linked;
//! - on an emptied volume, as after a move to another node: every file comes from the store.
//!
//! Next to them, in the same run, are the baselines: `cp -r --reflink=never && sync` of the
//! checkpoint's bytes, and a plain read of them with the page cache dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_contract::JobSpec;
use cairn_worker::runtime::{run_job, RunOptions};
use cairn_worker::task::TaskRegistry;

use crate::{block_on, drop_caches, mib, Fill};

const PARTITIONS: u64 = 4;

fn job_yaml(keys: u64, records_per_partition: Option<u64>, interval: &str, store: &str) -> String {
    let records = records_per_partition
        .map(|n| format!(", recordsPerPartition: {n}"))
        .unwrap_or_default();
    format!(
        "name: bench-recovery\ninput: {{type: generator, partitions: {PARTITIONS}, keys: {keys}, seed: 5{records}}}\n\
         task: {{name: fill}}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: {interval}, store: \"{store}\", retained: 2}}\nstate: {{dir: ./state, cacheSize: 64MiB}}\n"
    )
}

/// The builtin tasks (`count` for `objective`) and `fill` (this benchmark's).
pub(crate) fn registry() -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    registry.register("fill", |_| {
        Ok(Box::new(Fill {
            value: vec![0; 1024],
        }))
    });
    registry
}

/// The child: runs `yaml` in `dir` with metrics on `metrics_addr` until killed. Its task may be
/// `fill` or a builtin one (`objective` runs `count`).
pub fn child(dir: &Path, yaml: &Path, metrics_addr: SocketAddr) {
    let text = std::fs::read_to_string(yaml).expect("job file");
    let spec = JobSpec::from_yaml_str(&text).expect("job spec");
    run_job(RunOptions {
        spec,
        registry: registry(),
        from_checkpoint: None,
        from_savepoint: None,
        control: None,
        role: Default::default(),
        metrics_addr: Some(metrics_addr),
        http_limits: Default::default(),
        show_progress: false,
        base_dir: dir.to_path_buf(),
        upload_delay: None,
        hold_after_stop: false,
        metrics: Default::default(),
        progress: Default::default(),
    })
    .expect("benchmark job failed");
}

/// One restart's measures.
struct Restart {
    rto: f64,
    replay: i64,
    fetched: i64,
    restore: f64,
    detect: f64,
    rate: f64,
}

/// `store`: `file://./ckpt`, or an `s3://bucket/prefix` URL with the server in the
/// environment (`CAIRN_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`; docs/s3.md).
pub fn recovery(scratch: &Path, values_mb: u64, store: &str) {
    let dir = scratch.join("recovery");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 1 KiB values; the keys are as many as the records, so about 63% are distinct.
    let keys = values_mb * 1024;

    // Fill: a finite run of the same job leaves ~1 GB of state in its final checkpoint.
    let fill =
        JobSpec::from_yaml_str(&job_yaml(keys, Some(keys / PARTITIONS), "5s", store)).unwrap();
    let filled = Instant::now();
    crate::run_spec(fill, registry(), &dir);
    let fill_seconds = filled.elapsed().as_secs_f64();

    // The endless job on that state, at full speed, checkpointing every 10 s.
    let yaml = dir.join("job.yaml");
    std::fs::write(&yaml, job_yaml(keys, None, "10s", store)).unwrap();
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut worker = spawn_child(&dir, &yaml, addr);
    wait_resumed(&mut worker, addr);
    let same_volume = kill_and_restart(&dir, &yaml, addr, &mut worker, false);
    let empty_volume = kill_and_restart(&dir, &yaml, addr, &mut worker, true);
    let _ = worker.kill();
    let _ = worker.wait();

    let (state_bytes, keys) = checkpoint_keys(&dir, store, None);
    let baselines = match store.strip_prefix("s3://") {
        None => file_baselines(&dir, &keys),
        Some(bucket_prefix) => vec![(
            "bare object_store get of the checkpoint's files into local files (4 in flight), then sync",
            s3_download(&dir, bucket_prefix, &keys),
        )],
    };
    let kind = if store.starts_with("s3://") {
        "S3 (MinIO on loopback)"
    } else {
        "file://"
    };
    println!(
        "\n### recovery after SIGKILL at full speed, {} MiB of state, {kind} store, checkpoint every 10 s\n",
        mib(state_bytes)
    );
    println!("filled in {fill_seconds:.1} s; every restart is immediate (no supervisor back-off); RTO is kill -> every task processed a record, on this process's clock\n");
    println!("| restart | RTO (s) | restore (s) | fetched (MiB) | replayed records | replayed input (s at the measured rate) | detect (s, from the marks) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("same volume (local SSTs hard-linked)", &same_volume),
        ("emptied volume (every file from the store)", &empty_volume),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {} | {} | {:.2} | {:.3} |",
            r.rto,
            r.restore,
            mib(r.fetched.max(0) as u64),
            r.replay,
            r.replay as f64 / r.rate,
            r.detect
        );
    }
    for (name, seconds) in baselines {
        println!(
            "| baseline: {name} | {seconds:.3} | | {} | | | |",
            mib(state_bytes)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

pub(crate) fn spawn_child(dir: &Path, yaml: &Path, addr: SocketAddr) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["recovery-child", "--dir"])
        .arg(dir)
        .arg("--job")
        .arg(yaml)
        .args(["--metrics-addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker")
}

/// Waits until every task of the child has processed a record; returns when that was seen.
fn wait_resumed(child: &mut Child, addr: SocketAddr) -> Instant {
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the benchmark's worker exited"
        );
        if let Some(text) = scrape(addr) {
            let resumed = values(&text, "cairn_task_resumed_milliseconds");
            if resumed.len() == PARTITIONS as usize && resumed.iter().all(|v| *v >= 0.0) {
                return Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs until the child's first checkpoint of this run has committed and 5 s more (half an
/// interval: the replay of an average failure), kills it, optionally empties its volume of
/// databases, restarts it and measures.
fn kill_and_restart(
    dir: &Path,
    yaml: &Path,
    addr: SocketAddr,
    worker: &mut Child,
    empty_volume: bool,
) -> Restart {
    let committed = |addr| {
        scrape(addr)
            .map(|t| values(&t, "cairn_checkpoint_last_committed_id"))
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0)
    };
    let first = committed(addr);
    while committed(addr) <= first {
        assert!(worker.try_wait().unwrap().is_none(), "worker exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = |addr| {
        scrape(addr)
            .map(|t| values(&t, "cairn_records_in_total").iter().sum::<f64>())
            .unwrap_or(0.0)
    };
    let (r0, t0) = (records(addr), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let rate = (records(addr) - r0) / t0.elapsed().as_secs_f64();
    worker.kill().unwrap();
    let killed = Instant::now();
    worker.wait().unwrap();
    if empty_volume {
        remove_databases(&dir.join("state/bench-recovery"));
    }
    *worker = spawn_child(dir, yaml, addr);
    let resumed = wait_resumed(worker, addr);
    let text = scrape(addr).unwrap();
    let one = |name| values(&text, name).first().copied().unwrap_or(-1.0);
    Restart {
        rto: resumed.duration_since(killed).as_secs_f64(),
        replay: one("cairn_recovery_replay_offsets") as i64,
        fetched: one("cairn_recovery_fetched_bytes") as i64,
        restore: one("cairn_restore_seconds"),
        detect: one("cairn_recovery_detect_seconds"),
        rate,
    }
}

/// Every directory in the task directories (databases, snapshots); the progress marks stay.
fn remove_databases(job_dir: &Path) {
    for task in std::fs::read_dir(job_dir).unwrap().filter_map(|e| e.ok()) {
        for entry in std::fs::read_dir(task.path())
            .unwrap()
            .filter_map(|e| e.ok())
        {
            if entry.path().is_dir() {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
    }
}

/// The store keys of the newest committed checkpoint's files (of one task's, with `task`), and
/// their total size.
pub(crate) fn checkpoint_keys(dir: &Path, store: &str, task: Option<u32>) -> (u64, Vec<String>) {
    use cairn_worker::checkpoint::catalog;
    use cairn_worker::storage::CheckpointStore;
    let store = CheckpointStore::from_url(store, dir).unwrap();
    let manifests = block_on(async {
        let id = *catalog::committed_ids(&store)
            .await
            .unwrap()
            .last()
            .unwrap();
        let mut manifests = catalog::load_checkpoint(&store, id).await.unwrap().1;
        manifests.retain(|m| task.is_none_or(|t| m.task == t));
        manifests
    });
    let keys = manifests
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.key.clone()))
        .collect();
    (manifests.iter().map(|m| m.total_bytes()).sum(), keys)
}

/// For a `file://./ckpt` store: `cp -r --reflink=never && sync` of the checkpoint's files
/// (hard-linked into one tree first), and a read of them with the page cache dropped.
pub(crate) fn file_baselines(dir: &Path, keys: &[String]) -> Vec<(&'static str, f64)> {
    let tree = dir.join("ckpt-files");
    for key in keys {
        let to = tree.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::hard_link(dir.join("ckpt").join(key), &to).unwrap();
    }
    let cp = crate::copy_and_sync(&tree, &dir.join("cp"));
    drop_caches();
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for key in keys {
        let mut file = std::fs::File::open(tree.join(key)).unwrap();
        while file.read(&mut buf).unwrap() > 0 {}
    }
    vec![
        (
            "`cp -r --reflink=never && sync` of the checkpoint's files",
            cp,
        ),
        (
            "read the same files, page cache dropped",
            t.elapsed().as_secs_f64(),
        ),
    ]
}

/// A bare object_store download of `keys` from `bucket/prefix` into files, 4 in flight, then
/// `sync`: seconds.
pub(crate) fn s3_download(dir: &Path, bucket_prefix: &str, keys: &[String]) -> f64 {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    let (bucket, prefix) = bucket_prefix.split_once('/').unwrap_or((bucket_prefix, ""));
    let endpoint = std::env::var("CAIRN_S3_ENDPOINT").expect("CAIRN_S3_ENDPOINT");
    let raw = std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_endpoint(&endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .build()
            .unwrap(),
    );
    let target = dir.join("bare-download");
    std::fs::create_dir_all(&target).unwrap();
    let t = Instant::now();
    block_on(async {
        let gets = keys.iter().enumerate().map(|(i, key)| {
            let raw = raw.clone();
            let path = format!("{}/{key}", prefix.trim_end_matches('/'));
            let local = target.join(i.to_string());
            async move {
                let bytes = raw.get(&path.into()).await.unwrap().bytes().await.unwrap();
                tokio::fs::write(local, bytes).await.unwrap();
            }
        });
        futures::stream::iter(gets)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    });
    assert!(Command::new("sync").status().unwrap().success());
    t.elapsed().as_secs_f64()
}

/// `GET /metrics` from the child; `None` while it is not serving.
pub(crate) fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The values of every series of metric `name` in a text exposition.
pub(crate) fn values(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

//! `cairn-bench`: the benchmarks behind docs/benchmarks.md. Each runs the real engine (or the
//! real storage code) next to a baseline measured in the same run on the same machine.
//!
//! ```text
//! cairn-bench count --keys 100000            keyed count vs a bare RocksDB get+put loop
//! cairn-bench pause --values-mb 1200         checkpoint synchronous pause at ~1 GB of state,
//!                                            bytes uploaded per checkpoint, then file:// copy
//!                                            and restore vs `cp -r --reflink=never && sync`
//! cairn-bench repartition --values-mb 1200  savepoint and repartition 4 -> 8 of ~1 GB vs
//!                                            `cp -r --reflink=never && sync`, alternating rounds
//! cairn-bench windows --records 40000000    q5-like sliding-window count and a tumbling count
//!                                            vs a bare HashMap loop over the same records
//!                                            (`--case q5` or `--case tumbling`: one of them)
//! cairn-bench recovery --values-mb 1024      SIGKILL at full speed on ~1 GB of state: kill ->
//!                                            processing again and the replayed input, restarted
//!                                            on the same and on an emptied volume, vs `cp && sync`
//!                                            (`--store s3://...`: the same on S3, vs a bare get)
//! cairn-bench objective --target 10s         recovery-time objective while the input rate
//!                                            doubles, halves and quadruples: the adapted
//!                                            interval, and SIGKILLs just before a commit (also
//!                                            right after a rise) vs the target
//! cairn-bench failover --state-mb 1024       SIGKILL of container 1 of a 2-process job on ~1 GB
//!                                            of state: restarted (same / emptied volume) vs
//!                                            taken over by a warm standby, vs `cp && sync`
//!                                            (`--store s3://...`: the same on S3, vs a bare get)
//! cairn-bench wasm --records 20000000        the count as WebAssembly components (C, JavaScript,
//!                                            Python) vs the native built-in count
//! cairn-bench all                            all of the above with the documented sizes
//! cairn-bench kafka --brokers HOST:PORT       Kafka source on the count job vs a bare consumer
//! cairn-bench store --url s3://bench          checkpoint upload/restore on a remote store (S3,
//!                                            GCS, Azure, HDFS) vs its bare client
//! ```
//! The Kafka and store modes need servers: `tests/services/bench-connectors.sh` starts a KRaft
//! broker and MinIO on loopback and runs them, and `recovery` and `failover` on S3;
//! `tests/services/bench-stores.sh` runs `store` on MinIO, Azurite, the GCS emulator and HDFS.
//! Build with `--release`. Results go to stdout as Markdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_contract::JobSpec;
use cairn_worker::checkpoint::catalog;
use cairn_worker::checkpoint::manifest::TaskManifest;
use cairn_worker::checkpoint::restore::restore_task_db;
use cairn_worker::partition::mix64;
use cairn_worker::runtime::{run_job, RunOptions};
use cairn_worker::source::generator::{KeyTable, RecordRule};
use cairn_worker::state::{db::no_wal, open_task_db};
use cairn_worker::storage::CheckpointStore;
use cairn_worker::task::{Record, StreamTask, TaskContext, TaskError, TaskRegistry};
use clap::{Parser, Subcommand};

mod connectors;
mod failover;
mod objective;
mod recovery;
mod repartition;
mod stores;
mod wasm;
mod windows;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Scratch directory (default: a fresh directory under /tmp or $TMPDIR).
    #[arg(long, global = true)]
    scratch: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Keyed count throughput vs bare RocksDB.
    Count {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 20_000_000)]
        records: u64,
        /// Skip the bare RocksDB loop (slow: 30 s and more), keep the bare hash map.
        #[arg(long)]
        no_rocksdb: bool,
    },
    /// Sync pause, upload volume, copy and restore at ~1 GB of state.
    Pause {
        /// Megabytes of 1 KiB values written (about the state size).
        #[arg(long, default_value_t = 1200)]
        values_mb: u64,
    },
    /// Savepoint and repartition 4 -> 8 of ~1 GB vs `cp -r --reflink=never && sync`,
    /// alternating, median of the rounds.
    Repartition {
        /// Megabytes of 1 KiB values written (the state is about 0.8 of it).
        #[arg(long, default_value_t = 1200)]
        values_mb: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Windowed aggregations (q5-like sliding count, tumbling count) vs a bare loop.
    Wasm {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 20_000_000)]
        records: u64,
        /// Records for the interpreted languages (JavaScript, Python), slower by far.
        #[arg(long, default_value_t = 2_000_000)]
        interpreted_records: u64,
    },
    Windows {
        #[arg(long, default_value_t = 40_000_000)]
        records: u64,
        /// Only the case whose title starts with this (`q5`, `tumbling`); default: both.
        #[arg(long)]
        case: Option<String>,
    },
    /// RTO and replay after a SIGKILL at ~1 GB of state (docs/recovery.md).
    Recovery {
        /// Keys of 1 KiB values: the live state grows to about this many megabytes.
        #[arg(long, default_value_t = 1024)]
        values_mb: u64,
        /// Checkpoint store: `file://./ckpt`, or `s3://bucket/prefix` with the server in the
        /// environment (CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
        #[arg(long, default_value = "file://./ckpt")]
        store: String,
    },
    /// Recovery-time objective (checkpoint.targetRecoveryTime) while the input rate doubles and
    /// halves: the interval the coordinator picks, and the recovery after a SIGKILL just
    /// before a commit, against the target.
    Objective {
        /// checkpoint.targetRecoveryTime of the job.
        #[arg(long, default_value = "10s", value_parser = cairn_contract::units::parse_duration)]
        target: Duration,
        /// Input records/s over both partitions at 1R.
        #[arg(long, default_value_t = 3_000_000)]
        rate: u64,
        /// Seconds a steady phase runs before its kill is aimed.
        #[arg(long, default_value_t = 40)]
        phase_secs: u64,
        /// The phases, as multiples of the rate: `2R` is killed `phase-secs` after the rate
        /// change, `2R:rise` just before the first commit after it.
        #[arg(long, default_value = "R,2R:rise,2R,R,4R:rise")]
        phases: String,
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
    },
    /// Recovery of a SIGKILLed container of a 2-process job (`standby: true`): restarted on
    /// the same or an emptied volume, and taken over by a warm standby.
    Failover {
        /// Keys of 1 KiB values: the state grows to about this many megabytes.
        #[arg(long, default_value_t = 1024)]
        state_mb: u64,
        /// Input lines/s over both partitions once the backlog is processed.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// checkpoint.interval of the job.
        #[arg(long, default_value = "5s", value_parser = cairn_contract::units::parse_duration)]
        interval: Duration,
        /// The kill lands this long after a commit.
        #[arg(long, default_value = "1s", value_parser = cairn_contract::units::parse_duration)]
        kill_after: Duration,
        /// Kills per scenario.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Checkpoint store: `file://./ckpt`, or an empty `s3://bucket/prefix` with the server
        /// in the environment (CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
        #[arg(long, default_value = "file://./ckpt")]
        store: String,
    },
    /// The job `recovery` and `objective` kill: runs until killed (not for direct use).
    #[command(hide = true)]
    RecoveryChild {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        metrics_addr: std::net::SocketAddr,
    },
    /// Everything, with the sizes of docs/benchmarks.md.
    All,
    /// Kafka source on the count job vs a bare consumer loop (needs a broker).
    Kafka {
        /// Bootstrap broker.
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
    },
    /// Checkpoint upload and restore on a remote store vs its bare client moving the same bytes
    /// (needs a server; settings from the environment, as for the worker: docs/stores.md).
    Store {
        /// The store: `s3://bucket`, `gs://bucket`, `az://container`, `hdfs://namenode:port/dir`.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 8)]
        files: usize,
        #[arg(long, default_value_t = 64)]
        file_mb: usize,
    },
}

fn main() {
    if std::env::var_os(failover::AS_WORKER).is_some() {
        std::process::exit(failover::worker_main());
    }
    let cli = Cli::parse();
    if let Cmd::RecoveryChild {
        dir,
        job,
        metrics_addr,
    } = &cli.command
    {
        return recovery::child(dir, job, *metrics_addr);
    }
    let scratch = cli.scratch.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    println!(
        "machine: {} cores, {}; scratch {}",
        num_cpus(),
        cpu_model(),
        scratch.display()
    );
    match cli.command {
        Cmd::Count {
            keys,
            records,
            no_rocksdb,
        } => count(&scratch, keys, records, !no_rocksdb),
        Cmd::Pause { values_mb } => pause(&scratch, values_mb),
        Cmd::Repartition { values_mb, rounds } => repartition::bench(&scratch, values_mb, rounds),
        Cmd::Recovery { values_mb, store } => recovery::recovery(&scratch, values_mb, &store),
        Cmd::Objective {
            target,
            rate,
            phase_secs,
            phases,
            keys,
        } => objective::objective(
            &scratch,
            &objective::Options {
                target,
                rate,
                phase_secs,
                phases,
                keys,
            },
        ),
        Cmd::Failover {
            state_mb,
            rate,
            interval,
            kill_after,
            rounds,
            store,
        } => failover::failover(
            &scratch,
            &failover::Options {
                state_mb,
                rate,
                interval,
                kill_after,
                rounds,
                store,
            },
        ),
        Cmd::RecoveryChild { .. } => unreachable!("handled above"),
        Cmd::Wasm {
            keys,
            records,
            interpreted_records,
        } => wasm::wasm(&scratch, keys, records, interpreted_records),
        Cmd::Windows { records, case } => windows::windows(&scratch, records, case.as_deref()),
        Cmd::Kafka {
            brokers,
            keys,
            records,
        } => connectors::kafka(&scratch, &brokers, records, keys),
        Cmd::Store {
            url,
            files,
            file_mb,
        } => stores::store(&scratch, &url, files, file_mb),
        Cmd::All => {
            count(&scratch, 100_000, 20_000_000, true);
            // Long enough for periodic checkpoints every 10 s while the job runs.
            count(&scratch, 100_000, 400_000_000, true);
            count(&scratch, 10_000_000, 20_000_000, true);
            pause(&scratch, 1200);
            windows::windows(&scratch, 40_000_000, None);
            wasm::wasm(&scratch, 100_000, 20_000_000, 2_000_000);
            recovery::recovery(&scratch, 1024, "file://./ckpt");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn run_spec(
    spec: JobSpec,
    registry: TaskRegistry,
    base: &Path,
) -> (
    Duration,
    Arc<cairn_worker::runtime::coordinator::JobProgress>,
) {
    let progress: Arc<cairn_worker::runtime::coordinator::JobProgress> = Default::default();
    let started = Instant::now();
    run_job(RunOptions {
        spec,
        registry,
        from_checkpoint: None,
        from_savepoint: None,
        control: None,
        role: Default::default(),
        metrics_addr: None,
        http_limits: Default::default(),
        show_progress: false,
        base_dir: base.to_path_buf(),
        upload_delay: None,
        hold_after_stop: false,
        metrics: Default::default(),
        progress: progress.clone(),
    })
    .expect("benchmark job failed");
    (started.elapsed(), progress)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ---------------------------------------------------------------------------------------------
// count

fn count(scratch: &Path, keys: u64, records: u64, rocksdb_baseline: bool) {
    let partitions = 4u32;
    let dir = scratch.join(format!("count-{keys}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "name: bench-count\ninput: {{type: generator, partitions: {partitions}, keys: {keys}, seed: 1, recordsPerPartition: {}}}\n\
         task: {{name: count}}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: 10s, store: \"file://./ckpt\", retained: 3}}\nstate: {{dir: ./state, cacheSize: 256MiB}}\n",
        records / partitions as u64
    );
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    drop_caches();
    let (elapsed, progress) = run_spec(spec.clone(), TaskRegistry::with_builtins(), &dir);
    let cairn_rate = records as f64 / elapsed.as_secs_f64();
    let commits = block_on(async {
        let store = CheckpointStore::from_url("file://./ckpt", &dir).unwrap();
        let mut out = Vec::new();
        for id in catalog::committed_ids(&store).await.unwrap() {
            out.push(catalog::load_commit(&store, id).await.unwrap());
        }
        out
    });
    let pauses = sorted(
        progress
            .sync_pauses
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect(),
    );

    // The bare loop runs at most 20M records: its rate does not depend on the run length, and
    // 400M records of it would take ten minutes.
    let baseline_records = records.min(20_000_000);
    let mut baseline_spec = spec.clone();
    if let cairn_contract::InputSpec::Generator(g) = &mut baseline_spec.input {
        g.records_per_partition = Some(baseline_records / partitions as u64);
    }
    let limit = bare_hashmap(&spec, records);
    let baseline = rocksdb_baseline.then(|| bare_rocksdb(&dir, &baseline_spec, baseline_records));
    println!("\n### keyed count, {keys} keys, {records} records, 4 partitions, 2 containers, checkpoint every 10 s\n");
    println!("| what | records/s | time |");
    println!("|---|---|---|");
    println!("| Cairn `count` job (generator -> count -> null sink, incl. restore-less start and final checkpoint) | {:.0} | {:.2} s |", cairn_rate, elapsed.as_secs_f64());
    println!("| bare in-memory count: the same records into a hash map per thread, 2 threads, nothing kept (the workload's limit) | {:.0} | {:.2} s |", limit.0, limit.1);
    if let Some(baseline) = baseline {
        println!("| bare RocksDB get+put loop, same key sequence ({baseline_records} records), 2 threads x 2 DBs, WAL off | {:.0} | {:.2} s |", baseline.0, baseline.1);
        println!("\nCairn / bare RocksDB: {:.1}x", cairn_rate / baseline.0);
    }
    println!(
        "\nCairn / bare hash map: **{:.1}%**",
        100.0 * cairn_rate / limit.0
    );
    println!("\ncheckpoints committed: {} (last one is the final checkpoint); sync pauses: {} samples, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", commits.len(), pauses.len(), pct(&pauses, 0.5) * 1e3, pct(&pauses, 0.99) * 1e3, pauses.last().copied().unwrap_or(0.0) * 1e3);
    for c in &commits {
        println!(
            "- checkpoint {}: state {} MiB, uploaded {} MiB, new SST {} MiB, trigger to commit {:.2} s",
            c.checkpoint,
            mib(c.total_bytes),
            mib(c.uploaded_bytes),
            mib(c.new_sst_bytes),
            c.committed_at_ms.saturating_sub(c.triggered_at_ms) as f64 / 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plain loop over the same records: for each, read the count from RocksDB, add one, write it
/// back (WAL off, the same options as task databases). Two threads, each with its own DB and
/// half the partitions, like the two containers.
fn bare_rocksdb(dir: &Path, spec: &JobSpec, records: u64) -> (f64, f64) {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        unreachable!()
    };
    let table = Arc::new(KeyTable::build(g));
    drop_caches();
    let started = Instant::now();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let table = table.clone();
            let g = g.clone();
            let path = dir.join(format!("bare-{t}"));
            std::thread::spawn(move || {
                let cache = rocksdb::Cache::new_lru_cache(256 << 20);
                let db = open_task_db(&path, &cache).unwrap();
                let w = no_wal();
                let mut key = Vec::with_capacity(16);
                for p in (0..g.partitions).filter(|p| p % 2 == t) {
                    let rule = RecordRule::new(&g, &table, p);
                    for j in 0..g.records_per_partition.unwrap() {
                        cairn_worker::source::generator::key_into(&mut key, rule.record(j).0);
                        let n = db
                            .get_pinned(&key)
                            .unwrap()
                            .map_or(0, |v| u64::from_le_bytes(v.as_ref().try_into().unwrap()));
                        db.put_opt(&key, (n + 1).to_le_bytes(), &w).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    (records as f64 / secs, secs)
}

/// The workload's limit: the same generated records (same key table, same rule, same key
/// bytes) counted in a hash map per thread, two threads with half the partitions each, like
/// the two containers. No state store, no checkpoint, no output: what any count of these
/// records must at least do.
fn bare_hashmap(spec: &JobSpec, records: u64) -> (f64, f64) {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        unreachable!()
    };
    let table = Arc::new(KeyTable::build(g));
    let started = Instant::now();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let table = table.clone();
            let g = g.clone();
            std::thread::spawn(move || {
                let mut counts: hashbrown::HashMap<Box<[u8]>, u64, rustc_hash::FxBuildHasher> =
                    Default::default();
                let mut key = Vec::with_capacity(16);
                for p in (0..g.partitions).filter(|p| p % 2 == t) {
                    let rule = RecordRule::new(&g, &table, p);
                    for j in 0..g.records_per_partition.unwrap() {
                        cairn_worker::source::generator::key_into(&mut key, rule.record(j).0);
                        match counts.get_mut(key.as_slice()) {
                            Some(n) => *n += 1,
                            None => {
                                counts.insert(key.as_slice().into(), 1);
                            }
                        }
                    }
                }
                // Read the result, so the loop cannot be optimised away.
                counts.values().sum::<u64>()
            })
        })
        .collect();
    let counted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(counted, records, "the bare count lost records");
    let secs = started.elapsed().as_secs_f64();
    (records as f64 / secs, secs)
}

// ---------------------------------------------------------------------------------------------
// pause, upload volume, copy/restore

/// Writes a 1 KiB value per record (keyed state that grows to about `values_mb`).
struct Fill {
    value: Vec<u8>,
}

impl StreamTask for Fill {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        // Incompressible-ish value derived from the offset, so compression cannot shrink state.
        let mut x = r.offset ^ (r.partition as u64) << 40;
        for chunk in self.value.chunks_mut(8) {
            x = mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        ctx.put(r.key, &self.value)
    }
}

/// Phase 1 of `pause` and the state of `repartition`: a job writing 1 KiB values until its
/// state is about `values_mb` (~63% of the keys distinct), checkpointing every second to
/// `file://<dir>/ckpt`. Returns its spec, task registry, run time and checkpoint pauses.
fn fill_state(dir: &Path, values_mb: u64) -> (JobSpec, TaskRegistry, Duration, Vec<f64>) {
    let records = values_mb * 1024; // 1 KiB each
    let keys = records; // ~63% distinct: the state is about 0.63 * values_mb
    let yaml = format!(
        "name: bench-pause\ninput: {{type: generator, partitions: 4, keys: {keys}, seed: 3, recordsPerPartition: {}}}\n\
         task: {{name: fill}}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: 1s, store: \"file://./ckpt\", retained: 2}}\nstate: {{dir: ./state, cacheSize: 64MiB}}\n",
        records / 4
    );
    let mut registry = TaskRegistry::new();
    registry.register("fill", |_| {
        Ok(Box::new(Fill {
            value: vec![0; 1024],
        }))
    });
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    let (elapsed, progress) = run_spec(spec.clone(), registry.clone(), dir);
    let pauses = sorted(
        progress
            .sync_pauses
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect(),
    );
    (spec, registry, elapsed, pauses)
}

fn pause(scratch: &Path, values_mb: u64) {
    let dir = scratch.join("pause");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let records = values_mb * 1024;
    let (spec, registry, elapsed, fill) = fill_state(&dir, values_mb);

    // Phase 2: the job restarts on its ~1 GB state (restored from its last checkpoint) and keeps
    // updating at 20k records/s (20 MB/s of new values) for 30 s, checkpointing every 250 ms:
    // enough synchronous pauses at full state size for a meaningful p99.
    let mut steady_spec = spec;
    steady_spec.checkpoint.interval = Duration::from_millis(250);
    if let cairn_contract::InputSpec::Generator(g) = &mut steady_spec.input {
        g.records_per_partition = Some(records / 4 + 5_000 * 30);
        g.rate_per_second = Some(5_000);
    }
    let (_, progress) = run_spec(steady_spec, registry, &dir);
    let pauses: Vec<f64> = progress
        .sync_pauses
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let steady = sorted(pauses);

    let store = CheckpointStore::from_url("file://./ckpt", &dir).unwrap();
    let (commits, manifests) = block_on(async {
        let mut commits = Vec::new();
        let ids = catalog::committed_ids(&store).await.unwrap();
        for id in &ids {
            commits.push(catalog::load_commit(&store, *id).await.unwrap());
        }
        let (_, manifests) = catalog::load_checkpoint(&store, *ids.last().unwrap())
            .await
            .unwrap();
        (commits, manifests)
    });
    let last = commits.last().unwrap();
    println!(
        "\n### checkpoint pause and upload volume, {} MiB of state (1 KiB values)\n",
        mib(last.total_bytes)
    );
    println!(
        "run time {:.1} s for {records} records",
        elapsed.as_secs_f64()
    );
    println!("sync pause while filling (state growing to full size), {} samples: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", fill.len(), pct(&fill, 0.5) * 1e3, pct(&fill, 0.99) * 1e3, fill.last().unwrap() * 1e3);
    println!("sync pause at full size (restarted on it, 20k updates/s, checkpoint every 250 ms for 30 s), {} samples: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", steady.len(), pct(&steady, 0.5) * 1e3, pct(&steady, 0.99) * 1e3, steady.last().unwrap() * 1e3);
    println!("\n| checkpoint | state MiB | uploaded MiB | new SST MiB | uploaded / new SST |");
    println!("|---|---|---|---|---|");
    for c in &commits {
        let ratio = if c.new_sst_bytes > 0 {
            c.uploaded_bytes as f64 / c.new_sst_bytes as f64
        } else {
            f64::NAN
        };
        println!(
            "| {} | {} | {} | {} | {:.3} |",
            c.checkpoint,
            mib(c.total_bytes),
            mib(c.uploaded_bytes),
            mib(c.new_sst_bytes),
            ratio
        );
    }
    let cp_seconds = copy_and_restore(&dir, &store, &manifests);
    repartition::savepoint_and_repartition(&dir, &store, last.checkpoint, &last.spec, cp_seconds);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Returns the median `cp -r && sync` time, the baseline of [`repartition`].
/// The baseline: `cp -r --reflink=never src dst && sync` with the page cache dropped first;
/// seconds.
fn copy_and_sync(src: &Path, dst: &Path) -> f64 {
    drop_caches();
    let t = Instant::now();
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cp -r --reflink=never '{}' '{}' && sync",
            src.display(),
            dst.display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "cp -r {} {} && sync failed",
        src.display(),
        dst.display()
    );
    t.elapsed().as_secs_f64()
}

/// The checkpoint's files, hard-linked into one source tree `<dir>/copy-src` for `cp -r`;
/// returns it and each file's path there with its store key.
fn checkpoint_tree(
    dir: &Path,
    store: &CheckpointStore,
    manifests: &[TaskManifest],
) -> (PathBuf, Vec<(PathBuf, String)>) {
    let root = store.local_root().unwrap().to_path_buf();
    let src = dir.join("copy-src");
    let mut files = Vec::new();
    for m in manifests {
        for f in &m.files {
            let from = root.join(&f.key);
            let to = src.join(&f.key);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::hard_link(&from, &to).unwrap();
            files.push((to, f.key.clone()));
        }
    }
    (src, files)
}

fn copy_and_restore(dir: &Path, store: &CheckpointStore, manifests: &[TaskManifest]) -> f64 {
    let (src, files) = checkpoint_tree(dir, store, manifests);
    let bytes: u64 = manifests.iter().map(|m| m.total_bytes()).sum();
    let mut rows = Vec::new();
    for round in 0..5 {
        let cp_dst = dir.join(format!("cp-dst-{round}"));
        let cp = copy_and_sync(&src, &cp_dst);

        let ours = CheckpointStore::from_url(
            &format!("file://{}", dir.join(format!("store-{round}")).display()),
            dir,
        )
        .unwrap();
        drop_caches();
        let t = Instant::now();
        block_on(ours.upload_files(&files)).unwrap();
        let upload = t.elapsed().as_secs_f64();

        let restore_dst = dir.join(format!("restore-{round}"));
        drop_caches();
        let t = Instant::now();
        block_on(async {
            for m in manifests {
                restore_task_db(
                    store,
                    m,
                    &restore_dst.join(format!("task-{}", m.task)),
                    "bench",
                )
                .await
                .unwrap();
            }
        });
        let _ = Command::new("sync").status();
        let restore = t.elapsed().as_secs_f64();
        rows.push((cp, upload, restore));
        for d in [cp_dst, restore_dst, dir.join(format!("store-{round}"))] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let med = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (cp, up, rs) = (med(|r| r.0), med(|r| r.1), med(|r| r.2));
    println!("\n### file:// checkpoint copy and restore of {} MiB in {} files (median of 5, page cache dropped before each)\n", mib(bytes), files.len());
    println!("| what | seconds | MiB/s | vs cp && sync |");
    println!("|---|---|---|---|");
    println!(
        "| `cp -r --reflink=never src dst && sync` | {cp:.3} | {:.0} | 1.00 |",
        mib(bytes) as f64 / cp
    );
    println!(
        "| Cairn upload_files (copy, CRC32C, fdatasync, publish) | {up:.3} | {:.0} | {:.2} |",
        mib(bytes) as f64 / up,
        up / cp
    );
    println!(
        "| Cairn restore (SSTs hard-linked from the same-filesystem store and CRC32C-verified, small files copied, then sync) | {rs:.3} | {:.0} | {:.2} |",
        mib(bytes) as f64 / rs,
        rs / cp
    );
    println!("\nraw rounds (cp, upload, restore): {rows:?}");
    cp
}

/// Savepoint of the ~1 GB state, then the real restore path re-splitting it from 4 to 8
/// partitions (scan, SST files, ingest), next to `cp -r && sync` of the same bytes.
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn mib(b: u64) -> u64 {
    b >> 20
}

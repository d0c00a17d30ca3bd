//! Savepoint and repartition 4 -> 8 through the worker's real start path, next to
//! `cp -r --reflink=never && sync` of the same checkpoint files.
//!
//! `cairn-bench repartition` fills ~1 GB of state once, then alternates a copy and a
//! repartition for several rounds (page cache dropped before each) and reports the medians, so
//! that both see the same disk at the same moment. `cairn-bench pause` runs one round at the
//! end of its own measurements.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cairn_contract::JobSpec;
use cairn_worker::checkpoint::catalog;
use cairn_worker::checkpoint::savepoint::{self, SavepointLocation};
use cairn_worker::checkpoint::start::{prepare, StartRequest};
use cairn_worker::storage::CheckpointStore;

use crate::{block_on, checkpoint_tree, copy_and_sync, drop_caches, fill_state, mib};

/// The partition count the 4-partition state is re-split into.
const NEW_PARTITIONS: u32 = 8;

/// `cairn-bench repartition`: see the module documentation.
pub fn bench(scratch: &Path, values_mb: u64, rounds: usize) {
    let dir = scratch.join("repartition");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_, _, filled, _) = fill_state(&dir, values_mb);
    let store = CheckpointStore::from_url("file://./ckpt", &dir).unwrap();
    let (commit, manifests) = block_on(async {
        let ids = catalog::committed_ids(&store).await.unwrap();
        let id = *ids.last().unwrap();
        let commit = catalog::load_commit(&store, id).await.unwrap();
        let (_, manifests) = catalog::load_checkpoint(&store, id).await.unwrap();
        (commit, manifests)
    });
    let (src, _) = checkpoint_tree(&dir, &store, &manifests);
    let (location, _) = block_on(savepoint::create(&store, commit.checkpoint, 1)).unwrap();
    let spec = respread(&commit.spec);

    let mut rows = Vec::new();
    for round in 0..rounds {
        let cp_dst = dir.join(format!("cp-dst-{round}"));
        let cp = copy_and_sync(&src, &cp_dst);
        let _ = std::fs::remove_dir_all(&cp_dst);
        let split = repartition_once(&dir, &store, &location, &spec, round);
        rows.push((cp, split));
    }
    let median = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (cp, split) = (median(|r| r.0), median(|r| r.1));
    let state = mib(commit.total_bytes) as f64;
    println!(
        "\n### repartition 4 -> {NEW_PARTITIONS} of {} MiB (filled in {:.1} s), median of {rounds} alternating rounds, page cache dropped before each\n",
        mib(commit.total_bytes),
        filled.as_secs_f64()
    );
    println!("| what | seconds | MiB/s | throughput vs cp && sync |");
    println!("|---|---|---|---|");
    println!(
        "| `cp -r --reflink=never && sync` of the checkpoint's files | {cp:.3} | {:.0} | 100% |",
        state / cp
    );
    println!(
        "| repartition 4 -> {NEW_PARTITIONS} (restore the old databases from the savepoint, split into SSTs, ingest into the new databases, sync) | {split:.3} | {:.0} | **{:.0}%** |",
        state / split,
        100.0 * cp / split
    );
    println!("\nraw rounds (cp, repartition), seconds: {rows:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One round for `cairn-bench pause`: a savepoint of `checkpoint`, then one repartition.
pub fn savepoint_and_repartition(
    dir: &Path,
    store: &CheckpointStore,
    checkpoint: u64,
    spec: &JobSpec,
    cp_seconds: f64,
) {
    let t = Instant::now();
    let (location, sp) = block_on(savepoint::create(store, checkpoint, 1)).unwrap();
    let savepoint_seconds = t.elapsed().as_secs_f64();
    let seconds = repartition_once(dir, store, &location, &respread(spec), 0);
    let state = mib(sp.total_bytes) as f64;
    println!(
        "\n### savepoint and repartition 4 -> {NEW_PARTITIONS} of {} MiB\n",
        mib(sp.total_bytes)
    );
    println!("| what | seconds | MiB/s | vs cp && sync |");
    println!("|---|---|---|---|");
    println!("| savepoint of the last checkpoint (file://: hard links + manifest) | {savepoint_seconds:.3} | {:.0} | - |", state / savepoint_seconds);
    println!("| `cp -r --reflink=never && sync` of the same state (median above) | {cp_seconds:.3} | {:.0} | 1.00 |", state / cp_seconds);
    println!("| repartition 4 -> {NEW_PARTITIONS}: restore the old DBs from the savepoint, split into SSTs, ingest into the new DBs, sync | {seconds:.3} | {:.0} | {:.2} (throughput {:.0}% of cp) |", state / seconds, seconds / cp_seconds, 100.0 * cp_seconds / seconds);
}

/// The job's spec with [`NEW_PARTITIONS`] partitions.
fn respread(spec: &JobSpec) -> JobSpec {
    let mut spec = spec.clone();
    if let cairn_contract::InputSpec::Generator(g) = &mut spec.input {
        g.partitions = NEW_PARTITIONS;
    }
    spec
}

/// Starts every new task from the savepoint the way a worker does (`prepare`), with a cold
/// page cache, and syncs: the seconds it took. The new state is removed afterwards.
fn repartition_once(
    dir: &Path,
    store: &CheckpointStore,
    location: &SavepointLocation,
    spec: &JobSpec,
    round: usize,
) -> f64 {
    let job_dir = dir.join(format!("repartitioned-{round}"));
    std::fs::create_dir_all(&job_dir).unwrap();
    let cache = rocksdb::Cache::new_lru_cache(64 << 20);
    let all: Vec<u32> = (0..NEW_PARTITIONS).collect();
    drop_caches();
    let t = Instant::now();
    let start = block_on(prepare(StartRequest {
        store,
        spec,
        job_dir: &job_dir,
        generation: 1_000 + round as u64,
        checkpoint: None,
        savepoint: Some((location.url(), true)),
        base_dir: dir,
        state_version: 1,
        cache: &cache,
        only: &all,
        process: "all",
        prefetched: &cairn_worker::checkpoint::prefetch::Prefetched::none(),
    }))
    .unwrap();
    let _ = Command::new("sync").status();
    let seconds = t.elapsed().as_secs_f64();
    drop(start);
    let _ = std::fs::remove_dir_all(&job_dir);
    seconds
}

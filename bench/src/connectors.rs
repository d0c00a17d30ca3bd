//! `cairn-bench kafka` and `cairn-bench s3`: the connectors next to bare client loops, both
//! measured in the same run against the same servers (started by
//! `tests/services/bench-connectors.sh`: a KRaft broker from the official jars, MinIO built from
//! source, both on loopback).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_contract::JobSpec;
use cairn_worker::metrics::Metrics;
use cairn_worker::partition::mix64;
use cairn_worker::storage::{CheckpointStore, FileMeta, S3Settings, ENV_ENDPOINT};
use cairn_worker::task::TaskRegistry;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{block_on, drop_caches, mib};

const PARTITIONS: i32 = 4;

// ---------------------------------------------------------------------------------------------
// kafka

/// Kafka source throughput of the `count` job vs a bare consumer loop over the same topic.
pub fn kafka(scratch: &Path, brokers: &str, records: u64, keys: u64) {
    let topic = format!("bench-count-{}", std::process::id());
    create_topic(brokers, &topic);
    let produce_started = Instant::now();
    produce(brokers, &topic, records, keys);
    let produce_secs = produce_started.elapsed().as_secs_f64();

    let (bare_rate, bare_secs) = bare_consumers(brokers, &topic, records);
    let (cairn_rate, cairn_secs) = cairn_count(scratch, brokers, &topic, records);

    println!("\n### Kafka source: keyed count, {keys} keys, {records} records, {PARTITIONS} partitions, 2 containers, checkpoint every 10 s\n");
    println!("| what | records/s | time |");
    println!("|---|---|---|");
    println!("| Cairn `count` job (kafka -> count -> null sink), until every record is processed | {cairn_rate:.0} | {cairn_secs:.2} s |");
    println!("| bare librdkafka consumer loop (2 threads x 2 assigned partitions, read_committed, records touched not processed) | {bare_rate:.0} | {bare_secs:.2} s |");
    println!(
        "\nproducing the topic (idempotent producer, murmur2 partitioner): {:.0} records/s",
        records as f64 / produce_secs
    );
}

fn admin_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = admin_config(brokers).create().unwrap();
    // The broker may still be starting: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results = block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ));
        match results.map(|r| r.into_iter().collect::<Result<Vec<_>, _>>()) {
            Ok(Ok(_)) => return,
            Ok(Err((t, e))) if Instant::now() > deadline => panic!("create topic {t}: {e}"),
            Err(e) if Instant::now() > deadline => panic!("create topic {topic}: {e}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The brief's `count` workload: record i carries the key `"k" + (mix64(i) % keys)`.
fn produce(brokers: &str, topic: &str, records: u64, keys: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = admin_config(brokers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap();
    let mut key = String::new();
    for i in 0..records {
        key.clear();
        key.push('k');
        key.push_str(itoa::Buffer::new().format((mix64(i) & !(1 << 63)) % keys));
        let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload("1");
        // Only a full local queue is worth waiting for (the producer's thread drains it).
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("cannot produce record {i} to {topic}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

/// Two threads, each with one consumer per assigned partition (as Cairn's tasks), reading
/// everything and touching each key and value.
fn bare_consumers(brokers: &str, topic: &str, records: u64) -> (f64, f64) {
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
            std::thread::spawn(move || {
                let consumers: Vec<BaseConsumer> = (0..PARTITIONS)
                    .filter(|p| p % 2 == t)
                    .map(|p| {
                        let consumer: BaseConsumer = admin_config(&brokers)
                            .set("group.id", "bench-bare")
                            .set("enable.auto.commit", "false")
                            .set("isolation.level", "read_committed")
                            .create()
                            .unwrap();
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(&topic, p, Offset::Beginning)
                            .unwrap();
                        consumer.assign(&tpl).unwrap();
                        consumer
                    })
                    .collect();
                let ends: Vec<i64> = (0..PARTITIONS)
                    .filter(|p| p % 2 == t)
                    .map(|p| {
                        consumers[0]
                            .fetch_watermarks(&topic, p, Duration::from_secs(10))
                            .unwrap()
                            .1
                    })
                    .collect();
                let mut next = vec![0i64; consumers.len()];
                let (mut count, mut bytes) = (0u64, 0usize);
                while next.iter().zip(&ends).any(|(n, e)| n < e) {
                    for (i, consumer) in consumers.iter().enumerate() {
                        for _ in 0..1024 {
                            match consumer.poll(Duration::ZERO) {
                                Some(Ok(m)) => {
                                    bytes += m.key().map_or(0, <[u8]>::len)
                                        + m.payload().map_or(0, <[u8]>::len);
                                    next[i] = m.offset() + 1;
                                    count += 1;
                                }
                                Some(Err(e)) => panic!("consumer error: {e}"),
                                None => break,
                            }
                        }
                    }
                }
                std::hint::black_box(bytes);
                count
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, records);
    let secs = started.elapsed().as_secs_f64();
    (records as f64 / secs, secs)
}

/// Runs the `count` job over the topic until every record is processed, then stops it (SIGTERM
/// to this process, which the job handles as a stop with a final checkpoint).
fn cairn_count(scratch: &Path, brokers: &str, topic: &str, records: u64) -> (f64, f64) {
    let dir = scratch.join("kafka-count");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "name: bench-kafka\ninput: {{type: kafka, topic: {topic}, partitions: {PARTITIONS}, brokers: '{brokers}'}}\n\
         task: {{name: count}}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: 10s, store: \"file://./ckpt\", retained: 3}}\nstate: {{dir: ./state, cacheSize: 256MiB}}\n"
    );
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    let metrics = Arc::new(Metrics::new());
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let watcher = {
        let (metrics, done) = (metrics.clone(), done.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(20));
            let read: u64 = (0..PARTITIONS as u32)
                .map(|t| {
                    metrics
                        .records_in
                        .with_label_values(&[&t.to_string()])
                        .get()
                })
                .sum();
            if read >= records {
                let elapsed = started.elapsed();
                done.store(true, Ordering::SeqCst);
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &std::process::id().to_string()])
                    .status();
                return elapsed;
            }
        })
    };
    drop_caches();
    cairn_worker::runtime::run_job(cairn_worker::runtime::RunOptions {
        spec,
        registry: TaskRegistry::with_builtins(),
        from_checkpoint: None,
        from_savepoint: None,
        control: None,
        role: Default::default(),
        metrics_addr: None,
        http_limits: Default::default(),
        show_progress: false,
        base_dir: dir.clone(),
        upload_delay: None,
        hold_after_stop: false,
        metrics,
        progress: Default::default(),
    })
    .expect("benchmark job failed");
    assert!(done.load(Ordering::SeqCst));
    let elapsed = watcher.join().unwrap().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    (records as f64 / elapsed, elapsed)
}

// ---------------------------------------------------------------------------------------------
// s3

/// Checkpoint upload (and restore download) through the S3 store vs a bare object_store
/// multipart upload (and get) of the same files.
pub fn s3(scratch: &Path, endpoint: &str, bucket: &str, files: usize, file_mb: usize) {
    let settings = S3Settings::from_lookup(|name| match name {
        ENV_ENDPOINT => Some(endpoint.to_owned()),
        _ => std::env::var(name).ok(),
    })
    .expect("S3 settings");
    let dir = scratch.join("s3-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| {
            let path = dir.join(format!("{:06}.sst", i + 1));
            write_incompressible(&path, file_mb << 20, i as u64);
            path
        })
        .collect();
    let total = (files * (file_mb << 20)) as u64;
    let prefix = format!("bench-{}", std::process::id());

    // Cairn: the checkpoint upload path (CRC32C, create-only small puts, multipart large ones,
    // 4 files x 4 parts in flight), then restore downloads (verified).
    let store = CheckpointStore::s3(&format!("s3://{bucket}/{prefix}/cairn"), &settings).unwrap();
    let batch: Vec<(PathBuf, String)> = paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            (p.clone(), format!("tasks/task-0000/db-bench/{name}"))
        })
        .collect();
    drop_caches();
    let started = Instant::now();
    let metas: Vec<FileMeta> = block_on(store.upload_files(&batch)).unwrap();
    let cairn_up = started.elapsed().as_secs_f64();
    let restore_dir = scratch.join("s3-restore");
    let started = Instant::now();
    block_on(async {
        let downloads = batch.iter().zip(&metas).map(|((p, key), meta)| {
            let local = restore_dir.join(p.file_name().unwrap());
            let store = store.clone();
            async move { store.download_file(key, &local, *meta).await }
        });
        let results: Vec<_> = futures::stream::iter(downloads)
            .buffer_unordered(4)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>().unwrap();
    });
    let cairn_down = started.elapsed().as_secs_f64();

    // Bare: object_store multipart uploads of the same files with the same part size and
    // parallelism, no checksum, no existence check; then plain gets into files.
    let raw: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_region(&settings.region)
            .with_bucket_name(bucket)
            .build()
            .unwrap(),
    );
    drop_caches();
    let started = Instant::now();
    block_on(async {
        let uploads = paths.iter().map(|p| {
            let raw = raw.clone();
            let key = format!("{prefix}/bare/{}", p.file_name().unwrap().to_string_lossy());
            let p = p.clone();
            async move {
                let upload = raw.put_multipart(&key.into()).await.unwrap();
                let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                let data = tokio::fs::read(&p).await.unwrap();
                for chunk in data.chunks(8 << 20) {
                    writer.wait_for_capacity(4).await.unwrap();
                    writer.put(Bytes::copy_from_slice(chunk));
                }
                writer.finish().await.unwrap();
            }
        });
        futures::stream::iter(uploads)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    });
    let bare_up = started.elapsed().as_secs_f64();
    let bare_dir = scratch.join("s3-bare-restore");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let started = Instant::now();
    block_on(async {
        let gets = paths.iter().map(|p| {
            let raw = raw.clone();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let local = bare_dir.join(&name);
            let key = format!("{prefix}/bare/{name}");
            async move {
                let bytes = raw.get(&key.into()).await.unwrap().bytes().await.unwrap();
                tokio::fs::write(local, bytes).await.unwrap();
            }
        });
        futures::stream::iter(gets)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    });
    let bare_down = started.elapsed().as_secs_f64();

    let rate = |secs: f64| total as f64 / (1 << 20) as f64 / secs;
    println!("\n### S3 (MinIO on loopback): checkpoint upload and restore of {files} files x {file_mb} MiB ({} MiB)\n", mib(total));
    println!("| what | MiB/s | time |");
    println!("|---|---|---|");
    println!("| Cairn checkpoint upload (`upload_files`: CRC32C, multipart 8 MiB parts, 4 files x 4 parts in flight) | {:.0} | {cairn_up:.2} s |", rate(cairn_up));
    println!("| bare object_store multipart upload, same part size and parallelism | {:.0} | {bare_up:.2} s |", rate(bare_up));
    println!("| Cairn restore download (`download_file`: streamed, CRC32C verified, renamed into place) | {:.0} | {cairn_down:.2} s |", rate(cairn_down));
    println!(
        "| bare object_store get into files | {:.0} | {bare_down:.2} s |",
        rate(bare_down)
    );
    for path in [dir, restore_dir, bare_dir] {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Writes `len` bytes that do not compress (like compressed SST blocks).
fn write_incompressible(path: &Path, len: usize, seed: u64) {
    let mut data = vec![0u8; len];
    let mut x = seed;
    for chunk in data.chunks_mut(8) {
        x = mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, data).unwrap();
}

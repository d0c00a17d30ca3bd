//! `cairn-bench kafka`: the Kafka source next to a bare consumer loop, both measured in the
//! same run against the same broker (started by `tests/services/bench-connectors.sh`: a KRaft
//! broker from the official jars on loopback).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_contract::JobSpec;
use cairn_worker::metrics::Metrics;
use cairn_worker::partition::mix64;
use cairn_worker::task::TaskRegistry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{block_on, drop_caches};

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

/// Writes `len` bytes that do not compress (so no layer can shortcut them) to `path`.
pub(crate) fn write_incompressible(path: &Path, len: usize, seed: u64) {
    let mut data = vec![0u8; len];
    let mut x = seed;
    for chunk in data.chunks_mut(8) {
        x = mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, data).unwrap();
}

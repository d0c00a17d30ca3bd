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
use cairn_worker::source::kafka::queue::PartitionQueue;
use cairn_worker::source::kafka::{FETCH, FETCH_QUEUE_BACKOFF_MS};
use cairn_worker::task::TaskRegistry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::block_on;

const PARTITIONS: i32 = 4;
/// Bare reads of the whole topic before the measured runs (see [`kafka`]).
const WARM_UP_READS: usize = 3;

// ---------------------------------------------------------------------------------------------
// kafka

/// Kafka source throughput of the `count` job vs a bare consumer loop over the same topic:
/// the bare loop runs before and after the job (the machine is shared: the two bare runs show
/// how much the background moved), and the job is compared with the faster of them. Nothing
/// drops the page cache in between: all three read the topic the broker just wrote.
pub fn kafka(scratch: &Path, brokers: &str, records: u64, keys: u64) {
    let topic = format!("bench-count-{}", std::process::id());
    create_topic(brokers, &topic);
    let produce_started = Instant::now();
    produce(brokers, &topic, records, keys);
    let produce_secs = produce_started.elapsed().as_secs_f64();

    // The broker is a fresh JVM: its JIT compiles the fetch path during the first reads (C2
    // compiler threads took a third of the CPU in the first runs), and whichever ran first
    // paid for it. Warm it up with whole reads of the topic, reported but not compared.
    let warm_up: Vec<f64> = (0..WARM_UP_READS)
        .map(|_| bare_consumers(brokers, &topic, records).rate())
        .collect();
    let bare_before = bare_consumers(brokers, &topic, records);
    let cairn = cairn_count(scratch, brokers, &topic, records);
    let bare_after = bare_consumers(brokers, &topic, records);
    let bare = if bare_after.rate() > bare_before.rate() {
        &bare_after
    } else {
        &bare_before
    };

    println!("\n### Kafka source: keyed count, {keys} keys, {records} records, {PARTITIONS} partitions, 2 containers, checkpoint every 10 s\n");
    println!("| what | records/s | time | records/s after the first record |");
    println!("|---|---|---|---|");
    let row = |what: &str, r: &Run| {
        println!(
            "| {what} | {:.0} | {:.2} s | {:.0} |",
            r.rate(),
            r.secs,
            r.steady_rate()
        )
    };
    row(
        "Cairn `count` job (kafka -> count -> null sink), until every record is processed",
        &cairn,
    );
    let bare_what =
        "bare librdkafka consumer loop (2 threads x 2 assigned partitions, read_committed, \
                     partition queues read with rd_kafka_consume_batch_queue as Cairn's source, \
                     records touched not processed)";
    row(&format!("{bare_what}, before the job"), &bare_before);
    row(&format!("{bare_what}, after the job"), &bare_after);
    println!("\nbroker warm-up reads before these (bare loop, records/s): {warm_up:.0?}");
    println!(
        "\nCairn / faster bare run: {:.1}% (from the start), {:.1}% (after the first record)",
        100.0 * cairn.rate() / bare.rate(),
        100.0 * cairn.steady_rate() / bare.steady_rate()
    );
    println!(
        "producing the topic (idempotent producer, murmur2 partitioner): {:.0} records/s",
        records as f64 / produce_secs
    );
}

/// One timed read of the whole topic: `secs` from the start (clients created, partitions
/// assigned or the job started) until the last record, `steady_secs` from the first record.
struct Run {
    records: u64,
    secs: f64,
    steady_secs: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }

    fn steady_rate(&self) -> f64 {
        self.records as f64 / self.steady_secs
    }
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
/// everything and touching each key and value. Read as Cairn's source reads: the partition's
/// own queue, detached from the consumer's before the assignment, taken 1024 records at a time
/// with `rd_kafka_consume_batch_queue` (the fastest consumption librdkafka offers; the
/// rdkafka crate's `poll` hands over one event per record). Nothing else per record.
fn bare_consumers(brokers: &str, topic: &str, records: u64) -> Run {
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
            let thread = std::thread::Builder::new().name(format!("bare-consumer-{t}"));
            thread
                .spawn(move || {
                    let mut partitions: Vec<BarePartition> = (0..PARTITIONS)
                        .filter(|p| p % 2 == t)
                        .map(|p| BarePartition::open(&brokers, &topic, p))
                        .collect();
                    let (mut count, mut bytes) = (0u64, 0usize);
                    let mut wait_ms = 0;
                    let mut first = None;
                    while partitions.iter().any(|p| p.next < p.end) {
                        let mut round = 0;
                        for p in &mut partitions {
                            // Client events (errors, logs); records never arrive here.
                            if let Some(Err(e)) = p.consumer.poll(Duration::ZERO) {
                                panic!("consumer error: {e}");
                            }
                            // One batch off the queue: what a `Source::poll` of Cairn's takes.
                            for taken in 0..FETCH {
                                let wait = if taken == 0 { wait_ms } else { 0 };
                                let Some(m) = p.queue.next(FETCH - taken, wait) else {
                                    break;
                                };
                                assert!(m.error().is_none(), "consumer error: {:?}", m.error());
                                let (key, value) = m.key_value();
                                bytes += key.len() + value.len();
                                p.next = m.offset() + 1;
                                round += 1;
                            }
                        }
                        if round > 0 && first.is_none() {
                            first = Some(Instant::now());
                        }
                        count += round as u64;
                        // Nothing fetched in a whole round: wait up to 1 ms on each queue
                        // instead of spinning against the broker for the 2 cores.
                        wait_ms = if round == 0 { 1 } else { 0 };
                    }
                    std::hint::black_box(bytes);
                    (count, first)
                })
                .unwrap()
        })
        .collect();
    let results: Vec<(u64, Option<Instant>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ended = Instant::now();
    let total: u64 = results.iter().map(|r| r.0).sum();
    assert_eq!(total, records);
    let first = results.iter().filter_map(|r| r.1).min().unwrap_or(started);
    Run {
        records,
        secs: (ended - started).as_secs_f64(),
        steady_secs: (ended - first).as_secs_f64(),
    }
}

/// One partition of the bare loop: its consumer (read_committed, as Cairn's), the partition's
/// own queue (Cairn's source's [`PartitionQueue`]), where its records are and where they end.
struct BarePartition {
    /// Dropped before `consumer` (field order): librdkafka wants the queue released first.
    queue: PartitionQueue,
    consumer: BaseConsumer,
    next: i64,
    end: i64,
}

impl BarePartition {
    fn open(brokers: &str, topic: &str, partition: i32) -> Self {
        let consumer: BaseConsumer = admin_config(brokers)
            .set("group.id", "bench-bare")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .create()
            .unwrap();
        // Detached before the assignment, as the source does.
        let queue = PartitionQueue::detach(&consumer, topic, partition as u32).unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let end = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap()
            .1;
        BarePartition {
            queue,
            consumer,
            next: 0,
            end,
        }
    }
}

/// Runs the `count` job over the topic until every record is processed, then stops it (SIGTERM
/// to this process, which the job handles as a stop with a final checkpoint). Timed from the
/// call that starts the job (state opened, consumers created and assigned: the job's start-up
/// is in `secs`).
fn cairn_count(scratch: &Path, brokers: &str, topic: &str, records: u64) -> Run {
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
    // Polls the job's record counters every 5 ms: when the first record and the last were in.
    let watcher = {
        let (metrics, done) = (metrics.clone(), done.clone());
        std::thread::spawn(move || {
            let mut first = None;
            loop {
                std::thread::sleep(Duration::from_millis(5));
                let read: u64 = (0..PARTITIONS as u32)
                    .map(|t| {
                        metrics
                            .records_in
                            .with_label_values(&[&t.to_string()])
                            .get()
                    })
                    .sum();
                if read > 0 && first.is_none() {
                    first = Some(Instant::now());
                }
                if read >= records {
                    let ended = Instant::now();
                    done.store(true, Ordering::SeqCst);
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &std::process::id().to_string()])
                        .status();
                    return (ended, first.unwrap_or(started));
                }
            }
        })
    };
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
    let (ended, first) = watcher.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        records,
        secs: (ended - started).as_secs_f64(),
        steady_secs: (ended - first).as_secs_f64(),
    }
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

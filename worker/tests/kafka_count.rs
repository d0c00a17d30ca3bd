//! A keyed `count` job reading a real Kafka topic (KRaft broker from the official jars) and
//! writing its output to another topic, exactly once: SIGKILLed at random times while records
//! keep arriving, it must end with exactly the counts of the records produced and every output
//! record `(key, n)` visible exactly once to a `read_committed` consumer. Also: a crash between
//! Cairn's commit and the Kafka commit, at-least-once output, and a topic that does not match
//! the spec.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::jobs::{start_logged, stop_when_checkpointed as finish, worker_log as log};
use common::kafka::{broker, counts_of, keyed_records};
use common::*;
use rand::{Rng, SeedableRng};

/// A job spec reading `input` (4 partitions) and writing `output` with `delivery`.
fn job(name: &str, input: &str, output: &str, delivery: &str) -> String {
    let kafka = broker();
    let transactional = if delivery == "exactlyOnce" {
        format!("  transactionalId: {name}\n")
    } else {
        String::new()
    };
    format!(
        "name: {name}
input:
  type: kafka
  topic: {input}
  partitions: 4
  brokers: {bootstrap}
task:
  name: count
output:
  type: kafka
  topic: {output}
  brokers: {bootstrap}
  delivery: {delivery}
{transactional}parallelism: 2
checkpoint:
  interval: 300ms
  retained: 2
  store: file://./ckpt
",
        bootstrap = kafka.bootstrap
    )
}

/// Starts the job in `dir` with extra environment.
fn start(dir: &Path, env: &[(&str, &str)]) -> Child {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    start_logged(dir, &[], &env)
}

/// A directory with `job.yaml` for a count job named `name` from `<name>-in` (4 partitions)
/// to `<name>-out` (`out_partitions`), both topics created.
fn setup(name: &str, out_partitions: i32, delivery: &str) -> tempfile::TempDir {
    let kafka = broker();
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    kafka.create_topic(&input, 4);
    kafka.create_topic(&output, out_partitions);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("job.yaml"),
        job(name, &input, &output, delivery),
    )
    .unwrap();
    tmp
}

/// Output of the topic as (key, value) -> occurrences.
fn output(topic: &str, read_committed: bool) -> BTreeMap<(String, String), u32> {
    let mut seen = BTreeMap::new();
    for (_, key, value) in broker().read_all(topic, read_committed) {
        *seen.entry((key, value)).or_insert(0) += 1;
    }
    seen
}

#[test]
fn random_sigkills_with_exactly_once_output_lose_and_duplicate_nothing() {
    let kafka = broker();
    let started = Instant::now();
    let tmp = setup("kc", 4, "exactlyOnce");
    let dir = tmp.path();

    let first = keyed_records(1, 20_000, 300);
    let second = keyed_records(2, 20_000, 300);
    kafka.produce("kc-in", &first);

    let seed: u64 = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x4AF4A);
    eprintln!("kill schedule seed {seed} (set CAIRN_TEST_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..6 {
        let mut child = start(dir, &[]);
        if round == 2 {
            // More records arrive while the job runs.
            kafka.produce("kc-in", &second);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1500)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker exited: {}",
            log(dir)
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    finish(dir, start(dir, &[]), 40_000);

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let expected = counts_of(&all);
    assert_eq!(dumped_counts(dir, "file://./ckpt"), expected);
    assert_eq!(output("kc-out", true), expected_count_output(&expected));
    // Output keys sit in the partition Kafka's default partitioner gives them.
    for (partition, key, _) in kafka.read_all("kc-out", true) {
        assert_eq!(
            partition as u32,
            cairn_worker::partition::partition_of(key.as_bytes(), 4),
            "{key}"
        );
    }
    eprintln!(
        "kafka crash test took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_crash_between_the_checkpoint_commit_and_the_kafka_commit_loses_nothing() {
    let kafka = broker();
    let tmp = setup("kw", 4, "exactlyOnce");
    let dir = tmp.path();
    let records = keyed_records(3, 8_000, 100);
    kafka.produce("kw-in", &records);

    // The first publish after a committed checkpoint aborts the process just before the Kafka
    // commit: the checkpoint is committed, its output is in an open transaction.
    let mut child = start(
        dir,
        &[(
            cairn_worker::sink::kafka::CRASH_BEFORE_KAFKA_COMMIT_ENV,
            "1",
        )],
    );
    let status = child.wait().unwrap();
    // The hook calls `std::process::abort()`: only SIGABRT proves it fired, not any failure.
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the crash hook did not fire ({status}): {}",
        log(dir)
    );
    assert!(
        log(dir).contains("aborting before the Kafka commit"),
        "{}",
        log(dir)
    );
    assert!(!committed_ids(dir, "file://./ckpt").is_empty());
    assert!(
        output("kw-out", true).is_empty(),
        "nothing may be visible yet"
    );
    assert!(
        !output("kw-out", false).is_empty(),
        "the open transaction holds the first checkpoint's output"
    );

    // The restart fences the old transaction (aborting it) and publishes that checkpoint again.
    finish(dir, start(dir, &[]), 8_000);
    let expected = counts_of(&records);
    assert_eq!(dumped_counts(dir, "file://./ckpt"), expected);
    assert_eq!(output("kw-out", true), expected_count_output(&expected));
}

#[test]
fn at_least_once_output_has_every_record() {
    let kafka = broker();
    let tmp = setup("ka", 3, "atLeastOnce");
    let dir = tmp.path();
    let records = keyed_records(4, 10_000, 200);
    kafka.produce("ka-in", &records);
    let mut child = start(dir, &[]);
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    finish(dir, start(dir, &[]), 10_000);

    let expected = counts_of(&records);
    assert_eq!(dumped_counts(dir, "file://./ckpt"), expected);
    // Every output record is there; the kill may have repeated some.
    let seen = output("ka-out", false);
    let distinct: BTreeMap<_, _> = seen.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(distinct, expected_count_output(&expected));
}

#[test]
fn a_topic_that_does_not_match_the_spec_is_refused_with_the_fix() {
    broker().create_topic("km-six", 6);
    let tmp = tempfile::tempdir().unwrap();
    let refused = |input: &str| {
        let dir = tmp.path();
        std::fs::write(
            dir.join("job.yaml"),
            job("km", input, "km-six", "atLeastOnce"),
        )
        .unwrap();
        let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
        assert!(!out.status.success());
        // Refused before anything else: no generation claimed, so a running job of the same
        // store would not have been fenced off.
        assert!(
            !dir.join("ckpt/generations").exists(),
            "a generation was claimed"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("km-six");
    assert!(
        err.contains(
            "input.partitions is 4 but kafka topic km-six has 6 partitions; a task reads \
             exactly one partition, so repartition the job to 6"
        ),
        "{err}"
    );
    let err = refused("km-missing");
    assert!(
        err.contains(
            "kafka topic km-missing: the topic does not exist; create it with 4 partitions"
        ),
        "{err}"
    );
}

#[test]
fn tls_and_sasl_with_a_password_file_read_and_write_the_topics() {
    let kafka = broker();
    let tmp = setup("ks", 2, "atLeastOnce");
    let dir = tmp.path();
    std::fs::write(
        dir.join("password"),
        format!("{}\n", common::kafka::SASL_PASSWORD),
    )
    .unwrap();
    let security = format!(
        "  security:\n    protocol: saslSsl\n    caFile: {ca}\n    sasl: {{mechanism: PLAIN, \
         username: {user}, passwordFile: ./password}}\n",
        ca = kafka.ca_file.display(),
        user = common::kafka::SASL_USER
    );
    let spec = std::fs::read_to_string(dir.join("job.yaml"))
        .unwrap()
        .replace(&kafka.bootstrap, &kafka.sasl_ssl)
        .replace("  brokers:", &format!("{security}  brokers:"));
    std::fs::write(dir.join("job.yaml"), &spec).unwrap();
    let records = keyed_records(5, 4_000, 50);
    kafka.produce("ks-in", &records);
    finish(dir, start(dir, &[]), 4_000);
    let expected = counts_of(&records);
    assert_eq!(dumped_counts(dir, "file://./ckpt"), expected);
    assert_eq!(output("ks-out", true), expected_count_output(&expected));

    // A wrong password is refused by the broker and the job does not start; the password is
    // printed nowhere, even with every log line of Cairn and librdkafka on.
    let wrong = "wrong-pw-5b1f9e7c2d";
    std::fs::write(dir.join("password"), format!("{wrong}\n")).unwrap();
    std::fs::write(dir.join("job.yaml"), spec.replace("ks-in", "ks-out")).unwrap();
    let out = worker(dir)
        .env("RUST_LOG", "trace")
        .args(["run", "job.yaml", "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kafka topic ks-out: cannot read the topic's metadata"),
        "{err}"
    );
    for printed in [&err, &String::from_utf8_lossy(&out.stdout)] {
        assert!(
            !printed.contains(wrong),
            "the password must not be printed: {printed}"
        );
    }
}

/// The source takes records off librdkafka's queue in batches of up to 1024 and hands them to
/// the task until the task's batch is full: the rest wait inside the source. A checkpoint taken
/// then records the first record not handed over, and a source restored there (or seeked back
/// on the same consumer) reads every record after it exactly once. A checkpointed offset the
/// partition does not have is still an error, not a jump.
#[test]
fn records_fetched_but_not_handed_to_the_task_are_read_after_a_restore() {
    use cairn_contract::{InputSpec, KafkaInput};
    use cairn_worker::source::batch::MAX_BATCH_BYTES;
    use cairn_worker::source::{RecordBatch, Source, SourceError, SourceFactory};

    let kafka = broker();
    kafka.create_topic("kb-in", 1);
    let records = keyed_records(7, 3_000, 40);
    kafka.produce("kb-in", &records);
    let factory = SourceFactory::new(&InputSpec::Kafka(KafkaInput::new(
        1,
        "kb-in",
        kafka.bootstrap.clone(),
    )));
    factory.check().unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();

    // Polls until `want` records were handed over (at most `max` per poll), each batch
    // starting with `filler` bytes of the task's own: a batch nearly full takes one record.
    let read = |source: &mut Box<dyn Source>, want: usize, max: usize, filler: usize| {
        let (mut batch, mut got) = (RecordBatch::default(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        let filler = vec![b'x'; filler];
        while got.len() < want {
            assert!(Instant::now() < deadline, "read {} of {want}", got.len());
            batch.clear(0);
            let skip = usize::from(!filler.is_empty());
            if !filler.is_empty() {
                batch.push(u64::MAX, b"", &filler);
            }
            source.poll(&mut batch, max).unwrap();
            if !filler.is_empty() {
                assert!(batch.len() <= 2, "a full batch took {}", batch.len() - 1);
            }
            for i in skip..batch.len() {
                let r = batch.get(i);
                got.push((r.offset, text(r.key), text(r.value)));
            }
            if batch.len() == skip {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        got
    };
    let produced: Vec<(u64, String, String)> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (i as u64, k.clone(), v.clone()))
        .collect();

    // Everything read once, in small polls, so that librdkafka has the partition prefetched.
    let mut first = factory.open(0);
    first.seek(0).unwrap();
    assert_eq!(read(&mut first, 10, 10, 0), produced[..10]);
    // Nearly full batches: each poll fetches up to 1024 records and hands over one.
    let one_by_one = read(&mut first, 5, 1024, MAX_BATCH_BYTES - 1);
    assert_eq!(one_by_one, produced[10..15]);
    let checkpointed = first.position();
    assert_eq!(
        checkpointed, 15,
        "the checkpoint must name the first record not handed over"
    );

    // Restored elsewhere from the checkpoint: every record after it, once.
    let mut restored = factory.open(0);
    restored.seek(checkpointed).unwrap();
    assert_eq!(read(&mut restored, 3_000 - 15, 1024, 0), produced[15..]);
    assert_eq!(restored.position(), 3_000);
    drop(restored);

    // Seeking back on the consumer that holds fetched records drops them and reads again
    // from the checkpoint.
    first.seek(12).unwrap();
    assert_eq!(read(&mut first, 3_000 - 12, 1024, 0), produced[12..]);

    // An offset the partition does not have (retention deleted it, or the topic was
    // recreated) stops the task.
    let mut gone = factory.open(0);
    gone.seek(1_000_000).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batch = RecordBatch::default();
    let err = loop {
        assert!(Instant::now() < deadline, "no error for a missing offset");
        batch.clear(0);
        match gone.poll(&mut batch, 1024) {
            Err(e) => break e,
            Ok(_) => {
                assert!(batch.is_empty());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        matches!(
            err,
            SourceError::OffsetOutOfRange {
                offset: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
}

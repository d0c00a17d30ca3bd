//! A real Kafka broker for the tests: Apache Kafka in KRaft mode (broker and controller in one
//! JVM) from the official jars that `tests/services/kafka/fetch.sh` fetches with Maven, on two
//! free loopback ports, one per test binary, killed with it (see [`super::launcher`]).
//! Plus the client calls the tests need: create topics, add partitions, produce keyed records
//! the way a Java producer would, and read a topic back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::launcher;

/// User and password the SASL_SSL listener accepts (mechanism PLAIN).
pub const SASL_USER: &str = "cairn";
/// The password of [`SASL_USER`].
pub const SASL_PASSWORD: &str = "cairn-test-password";

/// The broker of this test process.
pub struct Kafka {
    /// `host:port` of the PLAINTEXT listener.
    pub bootstrap: String,
    /// `host:port` of the SASL_SSL listener (TLS with a test CA, SASL PLAIN).
    pub sasl_ssl: String,
    /// PEM file of the CA that signed the broker's TLS certificate.
    pub ca_file: PathBuf,
    /// The broker's directory (config, data, `broker.log`).
    pub dir: PathBuf,
    child: Mutex<Child>,
}

/// The broker, started on first use.
pub fn broker() -> &'static Kafka {
    static BROKER: OnceLock<Kafka> = OnceLock::new();
    BROKER.get_or_init(Kafka::start)
}

impl Kafka {
    fn start() -> Kafka {
        let started = Instant::now();
        let libs = launcher::service_script("kafka/fetch.sh");
        let dir = launcher::service_dir("kafka");
        let bootstrap = super::free_local_addr();
        let sasl_ssl = super::free_local_addr();
        let controller = super::free_local_addr();
        let keystore = make_certificates(&dir);
        let config = dir.join("server.properties");
        // The broker settings shared with the e2e suite's broker pod and the JVM flags live in
        // tests/services/kafka/ (one source for both); this broker adds a SASL_SSL listener.
        const TEMPLATE: &str = include_str!("../../../tests/services/kafka/broker.properties");
        const JVM_FLAGS: &str = include_str!("../../../tests/services/kafka/jvm.flags");
        let mut properties = TEMPLATE.to_owned();
        for (name, value) in [
            ("controller", controller.clone()),
            (
                "listeners",
                format!("PLAINTEXT://{bootstrap},SASL_SSL://{sasl_ssl},CONTROLLER://{controller}"),
            ),
            (
                "advertised_listeners",
                format!("PLAINTEXT://{bootstrap},SASL_SSL://{sasl_ssl}"),
            ),
            (
                "protocol_map",
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT".to_owned(),
            ),
            ("data_dir", dir.join("data").display().to_string()),
            ("internal_topic_partitions", "4".to_owned()),
        ] {
            properties = properties.replace(&format!("{{{name}}}"), &value);
        }
        assert!(
            !properties
                .lines()
                .any(|l| !l.starts_with('#') && l.contains('{')),
            "tests/services/kafka/broker.properties has a placeholder this test does not fill in:\n{properties}"
        );
        properties.push_str(&format!(
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{SASL_PASSWORD}\";\n\
             listener.name.sasl_ssl.ssl.keystore.type=PKCS12\n\
             listener.name.sasl_ssl.ssl.keystore.location={keystore}\n\
             listener.name.sasl_ssl.ssl.keystore.password={KEYSTORE_PASSWORD}\n",
            keystore = keystore.display(),
        ));
        std::fs::write(&config, properties).unwrap();
        let classpath = format!("{}/*", libs.display());
        let jvm_flags: Vec<&str> = JVM_FLAGS
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .collect();
        let java = |class: &str| {
            let mut cmd = Command::new("java");
            cmd.args(&jvm_flags).args(["-cp", &classpath, class]);
            cmd
        };
        let format = java("kafka.tools.StorageTool")
            .args([
                "format",
                "--standalone",
                "-t",
                "cairn-test-cluster-0001",
                "-c",
            ])
            .arg(&config)
            .output()
            .expect("run the Kafka storage formatter");
        assert!(
            format.status.success(),
            "formatting Kafka storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let log = std::fs::File::create(dir.join("broker.log")).unwrap();
        let mut cmd = java("kafka.Kafka");
        cmd.arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = launcher::spawn(cmd).expect("start the Kafka broker");
        let kafka = Kafka {
            bootstrap,
            sasl_ssl,
            ca_file: dir.join("ca.pem"),
            dir,
            child: Mutex::new(child),
        };
        kafka.wait_ready(started);
        kafka
    }

    fn wait_ready(&self, started: Instant) {
        let consumer: BaseConsumer = self.client_config().create().unwrap();
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "the Kafka broker exited ({status}); see {}",
                    self.dir.join("broker.log").display()
                );
            }
            if consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                eprintln!(
                    "kafka broker on {} ready after {:.1}s",
                    self.bootstrap,
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the Kafka broker did not start within 120s; see {}",
                self.dir.join("broker.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Client settings for this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().unwrap()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin = self.admin();
        let results = futures::executor::block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        super::launcher::wait_until(&format!("topic {topic} to be ready"), 30, || {
            self.partition_count(topic) == Some(partitions as u32)
        });
    }

    /// Grows `topic` to `total` partitions.
    pub fn add_partitions(&self, topic: &str, total: usize) {
        let admin = self.admin();
        let results = futures::executor::block_on(admin.create_partitions(
            &[NewPartitions::new(topic, total)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("add partitions to {t}: {e}"));
        }
    }

    /// The topic's partition count, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        let consumer: BaseConsumer = self.client_config().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len() as u32)
    }

    /// Produces `records` (key, value) with the Java client's default partitioner (murmur2 of
    /// the key), as a keyed producer application would, and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, records: &[(String, String)]) {
        let producer: ThreadedProducer<DefaultProducerContext> = self
            .client_config()
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for (key, value) in records {
            let mut record = BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_bytes());
            // Only a full local queue is worth waiting for (the producer's thread drains it).
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => panic!("cannot produce ({key}, {value}) to {topic}: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// Every record of `topic` as (partition, key, value), read from the beginning to the end
    /// of each partition; `read_committed` hides records of aborted and open transactions.
    pub fn read_all(&self, topic: &str, read_committed: bool) -> Vec<(i32, String, String)> {
        let partitions = self.partition_count(topic).expect("topic exists") as i32;
        let consumer: BaseConsumer = self
            .client_config()
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .set("enable.auto.commit", "false")
            .set("group.id", "cairn-test-reader")
            .create()
            .unwrap();
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let position = consumer.position().unwrap();
            let done = ends.iter().all(|(p, high)| {
                *high == 0
                    || matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *high
                    )
            });
            if done {
                return out;
            }
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let m = message.unwrap();
                out.push((
                    m.partition(),
                    String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                    String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
                ));
            }
        }
    }
}

const KEYSTORE_PASSWORD: &str = "cairn-keystore";

/// A test CA (`ca.pem`) and a broker certificate for 127.0.0.1 signed by it, as the PKCS12
/// keystore the broker reads; returns the keystore's path.
fn make_certificates(dir: &std::path::Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (needed to make the test broker's TLS certificate)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cairn-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "broker.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "broker.pem",
        "-inkey",
        "broker.key",
        "-out",
        "broker.p12",
        "-name",
        "broker",
        "-passout",
        &format!("pass:{KEYSTORE_PASSWORD}"),
    ]);
    dir.join("broker.p12")
}

/// `records` keyed records `("k<id>", "1")`, keys drawn deterministically from `keys` ids.
pub fn keyed_records(seed: u64, records: usize, keys: u64) -> Vec<(String, String)> {
    (0..records as u64)
        .map(|i| {
            let mut x = seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            (format!("k{}", x % keys), "1".to_owned())
        })
        .collect()
}

/// Exact count per key of `records`.
pub fn counts_of(records: &[(String, String)]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (key, _) in records {
        *counts.entry(key.clone()).or_insert(0) += 1;
    }
    counts
}

//! Kafka and MinIO as pods of the cluster under test, for the Kafka + S3 flow: both from the
//! services image `CAIRN_E2E_SERVICES_IMAGE` (tests/services/image/build.sh, loaded onto the
//! nodes by kind.sh), in their own namespace [`SERVICES_NS`]. Workers reach them through
//! cluster DNS: the broker advertises its StatefulSet pod's name under a headless Service,
//! MinIO is a ClusterIP Service. The suite talks to them with `kubectl exec`: Kafka's own tools
//! in the broker's pod, curl in MinIO's, so nothing needs a route from the test's host into the
//! cluster.

use std::path::Path;
use std::time::Duration;

use cairn_e2e::services::{broker_properties, java_args, S3_ACCESS_KEY, S3_SECRET_KEY};
use serde_json::{json, Value};

use crate::poll;
use crate::target::Suite;

/// Namespace of the Kafka and MinIO pods.
pub const SERVICES_NS: &str = "cairn-e2e-services";
/// Where the services image keeps the Kafka jars.
const KAFKA_LIBS: &str = "/opt/kafka/libs";
/// The broker's address inside the cluster: its pod under the headless Service `kafka`.
const KAFKA_BOOTSTRAP: &str = "kafka-0.kafka.cairn-e2e-services.svc.cluster.local:9092";
const MINIO_ENDPOINT: &str = "http://minio.cairn-e2e-services.svc.cluster.local:9000";

fn services_image() -> String {
    std::env::var("CAIRN_E2E_SERVICES_IMAGE").unwrap_or_else(|_| {
        panic!(
            "CAIRN_E2E_SERVICES_IMAGE is not set: build the Kafka + MinIO image with \
             tests/services/image/build.sh, load it onto the nodes and name it here \
             (tests/e2e/kind.sh does all three)"
        )
    })
}

/// Applies a StatefulSet of one pod running `container` (of the services image), with a Service
/// in front — headless for Kafka (a stable per-pod DNS name to advertise), a ClusterIP one for
/// MinIO — and waits until its pod `<name>-0` is Ready.
fn deploy_stateful_service(
    suite: &Suite,
    name: &str,
    port: u16,
    headless: bool,
    container: Value,
    volumes: Value,
) {
    let labels = json!({"app.kubernetes.io/name": name});
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": SERVICES_NS},
        "spec": {"selector": labels, "ports": [{"name": "main", "port": port}]},
    });
    if headless {
        service["spec"]["clusterIP"] = json!("None");
    }
    let set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": SERVICES_NS},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "volumes": volumes},
            },
        },
    });
    suite.apply_ok(&service);
    suite.apply_ok(&set);
    wait_ready(suite, &format!("{name}-0"));
}

/// Waits until pod `pod` of the services namespace is Ready.
fn wait_ready(suite: &Suite, pod: &str) {
    let ready = poll(Duration::from_secs(180), Duration::from_secs(2), || {
        let out = suite.kubectl(&[
            "wait",
            "-n",
            SERVICES_NS,
            "--for=condition=Ready",
            "pod",
            pod,
            "--timeout=10s",
        ]);
        if out.ok {
            Ok(())
        } else {
            Err(out.text())
        }
    });
    if let Err(seen) = ready {
        let log = suite.kubectl(&["logs", "-n", SERVICES_NS, pod, "--tail=40"]);
        panic!(
            "{SERVICES_NS}/{pod} not Ready: {seen}\nits log:\n{}\n{}",
            log.text(),
            suite.diagnostics()
        );
    }
}

/// A single-node Kafka broker (broker and KRaft controller in one JVM) in the cluster.
pub struct Kafka<'a> {
    suite: &'a Suite,
    /// What workers put in `brokers`.
    pub bootstrap: &'static str,
}

impl<'a> Kafka<'a> {
    pub fn start(suite: &'a Suite) -> Kafka<'a> {
        let properties = broker_properties(&[
            ("controller", "127.0.0.1:9093".into()),
            (
                "listeners",
                "PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093".into(),
            ),
            (
                "advertised_listeners",
                format!("PLAINTEXT://{KAFKA_BOOTSTRAP}"),
            ),
            (
                "protocol_map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("data_dir", "/var/lib/kafka".into()),
            ("internal_topic_partitions", "2".into()),
        ])
        .expect("the broker template is filled in");
        let libs = Path::new(KAFKA_LIBS);
        let shell_words = |args: Vec<String>| {
            args.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut format = java_args(libs, "kafka.tools.StorageTool");
        format.extend(
            [
                "format",
                "--standalone",
                "-t",
                "cairn-e2e-cluster-00001",
                "-c",
            ]
            .map(String::from),
        );
        format.push("/etc/kafka/server.properties".into());
        let mut broker = java_args(libs, "kafka.Kafka");
        broker.push("/etc/kafka/server.properties".into());
        // Format the (empty) data directory, then become the broker.
        let script = format!(
            "java {} && exec java {}",
            shell_words(format),
            shell_words(broker)
        );
        let config = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kafka", "namespace": SERVICES_NS},
            "data": {"server.properties": properties},
        });
        let container = json!({
            "name": "kafka",
            "image": services_image(),
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script],
            "ports": [{"containerPort": 9092}],
            "readinessProbe": {"tcpSocket": {"port": 9092}, "periodSeconds": 2},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/kafka"},
                {"name": "data", "mountPath": "/var/lib/kafka"},
            ],
        });
        let volumes = json!([
            {"name": "config", "configMap": {"name": "kafka"}},
            {"name": "data", "emptyDir": {}},
        ]);
        suite.apply_ok(&config);
        deploy_stateful_service(suite, "kafka", 9092, true, container, volumes);
        Kafka {
            suite,
            bootstrap: KAFKA_BOOTSTRAP,
        }
    }

    /// Runs Kafka tool `class` in the broker's pod with `args` and `input` on its stdin.
    fn tool(&self, class: &str, args: &[&str], input: &str) -> crate::target::KubectlOutput {
        let mut command: Vec<String> = ["exec", "-i", "-n", SERVICES_NS, "kafka-0", "--", "java"]
            .map(String::from)
            .to_vec();
        command.extend(java_args(Path::new(KAFKA_LIBS), class));
        command.extend(args.iter().map(|a| a.to_string()));
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        self.suite.kubectl_with_input(&command, input)
    }

    /// Creates `topic` with `partitions` partitions, with Kafka's own admin tool.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let partitions = partitions.to_string();
        let out = self.tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                "localhost:9092",
                "--create",
                "--topic",
                topic,
                "--partitions",
                &partitions,
                "--replication-factor",
                "1",
            ],
            "",
        );
        assert!(out.ok, "creating topic {topic}: {}", out.text());
    }

    /// Produces one record per key of `keys` (value `1`): see [`Self::produce_records`].
    pub fn produce(&self, topic: &str, keys: &[String]) {
        let records: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), "1".into())).collect();
        self.produce_records(topic, &records);
    }

    /// Produces the `(key, value)` records in order with Kafka's console producer: the Java
    /// client's default partitioner (murmur2 of the key) places them, as it would for a keyed
    /// producer application. Returns once every record is acknowledged.
    pub fn produce_records(&self, topic: &str, records: &[(String, String)]) {
        let input: String = records.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
        let out = self.tool(
            "org.apache.kafka.tools.ConsoleProducer",
            &[
                "--bootstrap-server",
                "localhost:9092",
                "--topic",
                topic,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=\t",
                "--producer-property",
                "acks=all",
            ],
            &input,
        );
        assert!(out.ok, "producing to {topic}: {}", out.text());
    }

    /// Every committed record of `topic` as (key, value), from the beginning; returns once no
    /// record arrived for a few seconds.
    pub fn read_committed(&self, topic: &str) -> Vec<(String, String)> {
        // The consumer exits non-zero after its timeout with nothing more to read: that is the
        // end, so only what it printed counts.
        let out = self.tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                "localhost:9092",
                "--topic",
                topic,
                "--from-beginning",
                "--timeout-ms",
                "5000",
                "--consumer-property",
                "isolation.level=read_committed",
                "--property",
                "print.key=true",
                "--property",
                "key.separator=\t",
            ],
            "",
        );
        out.stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// A MinIO server in the cluster.
pub struct Minio<'a> {
    suite: &'a Suite,
    /// What workers put in `CAIRN_S3_ENDPOINT`.
    pub endpoint: &'static str,
}

impl<'a> Minio<'a> {
    pub fn start(suite: &'a Suite) -> Minio<'a> {
        let container = json!({
            "name": "minio",
            "image": services_image(),
            "imagePullPolicy": "IfNotPresent",
            "command": ["minio", "server", "--quiet", "--address", ":9000", "--console-address", ":9001", "/data"],
            "env": [
                {"name": "MINIO_ROOT_USER", "value": S3_ACCESS_KEY},
                {"name": "MINIO_ROOT_PASSWORD", "value": S3_SECRET_KEY},
                {"name": "MINIO_BROWSER", "value": "off"},
            ],
            "ports": [{"containerPort": 9000}],
            // An open port is not a serving server yet: its readiness endpoint says when.
            "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 2},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        });
        let volumes = json!([{"name": "data", "emptyDir": {}}]);
        deploy_stateful_service(suite, "minio", 9000, false, container, volumes);
        Minio {
            suite,
            endpoint: MINIO_ENDPOINT,
        }
    }

    /// An S3 PUT of `path` (`bucket` or `bucket/key`) with `body`, signed with the root
    /// credentials, by curl in MinIO's pod (the body on its stdin); curl prints the HTTP status.
    fn signed_put(&self, path: &str, body: &[u8]) -> crate::target::KubectlOutput {
        let user = format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}");
        let url = format!("http://127.0.0.1:9000/{path}");
        self.suite.kubectl_with_bytes(
            &[
                "exec",
                "-i",
                "-n",
                SERVICES_NS,
                "minio-0",
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                "--data-binary",
                "@-",
                // curl signs no hash of a body read from stdin; S3 accepts one declared unsigned.
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &user,
                &url,
            ],
            body,
        )
    }

    /// Creates `bucket`. A server that just became ready may still answer 503 while it loads
    /// its IAM state, so 503 is retried for up to 30 s.
    pub fn create_bucket(&self, bucket: &str) {
        let created = poll(Duration::from_secs(30), Duration::from_millis(500), || {
            let out = self.signed_put(bucket, b"");
            match out.stdout.as_str() {
                "200" => Ok(Ok(())),
                "503" => Err(out.text()),
                _ => Ok(Err(out.text())),
            }
        });
        match created {
            Ok(Ok(())) => {}
            Ok(Err(seen)) | Err(seen) => panic!("creating bucket {bucket}: {seen}"),
        }
    }

    /// Stores `bytes` as `bucket/key`.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let out = self.signed_put(&format!("{bucket}/{key}"), bytes);
        assert_eq!(out.stdout, "200", "putting {bucket}/{key}: {}", out.text());
    }

    /// The environment a worker (or an inspection pod) needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CAIRN_S3_ENDPOINT", self.endpoint.to_owned()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }
}

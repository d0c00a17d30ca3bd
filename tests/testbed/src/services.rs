//! Real servers next to the cluster, for jobs that read Kafka and checkpoint to S3: a MinIO
//! server (built from its Go module by `tests/services/minio/build.sh`) and an Apache Kafka
//! broker in KRaft mode (the official jars, fetched by `tests/services/kafka/fetch.sh`). Both
//! listen on the cluster's API address — the pod network's gateway, which the pods reach and the
//! test process reaches too — and die with the test binary like every process of the test bed.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::ManagedProcess;

/// MinIO's root user in the tests.
pub const S3_ACCESS_KEY: &str = "cairn-e2e";
/// MinIO's root password in the tests (a throwaway credential of a throwaway server).
pub const S3_SECRET_KEY: &str = "cairn-e2e-secret";

/// Starting a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The helper script that builds or fetches the server failed.
    #[error("{script} failed: {message}")]
    Script {
        /// Script path.
        script: PathBuf,
        /// Its stderr.
        message: String,
    },
    /// The server did not answer in time.
    #[error("{name} did not start within {seconds}s; see {log}")]
    NotReady {
        /// Server.
        name: &'static str,
        /// Timeout.
        seconds: u64,
        /// Its log.
        log: PathBuf,
    },
    /// The server exited while it was starting.
    #[error("{name} exited during start ({status}); see {log}")]
    Exited {
        /// Server.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// Its log.
        log: PathBuf,
    },
    /// A configuration template still has a `{name}` placeholder after filling it in.
    #[error("{template}: placeholder {placeholder} was not filled in (a new placeholder in the template needs a value here)")]
    Template {
        /// The template file.
        template: &'static str,
        /// The first unfilled placeholder.
        placeholder: String,
    },
    /// Spawning, files, ports.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A process of the test bed could not start.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// Runs a script of `tests/services/` and returns the path it prints.
fn service_script(rel: &str) -> Result<PathBuf, ServiceError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services")
        .join(rel);
    let out = Command::new(&script)
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(ServiceError::Script {
            script,
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn free_addr(ip: IpAddr) -> Result<SocketAddr, ServiceError> {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map_err(io(format!("finding a free port on {ip}")))
}

/// Polls `ready` every 200 ms until it holds, failing as soon as `process` exits or after
/// `timeout`; both errors name the server's log.
fn wait_ready(
    name: &'static str,
    process: &mut ManagedProcess,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), ServiceError> {
    let start = Instant::now();
    loop {
        if let Some(status) = process.exit_status()? {
            return Err(ServiceError::Exited {
                name,
                status: status.to_string(),
                log: process.log_path().to_path_buf(),
            });
        }
        if ready() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(ServiceError::NotReady {
                name,
                seconds: timeout.as_secs(),
                log: process.log_path().to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// True when MinIO at `endpoint` answers its readiness endpoint with 200.
fn health_ready(endpoint: &str) -> bool {
    Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("{endpoint}/minio/health/ready"))
        .output()
        .is_ok_and(|o| o.stdout == b"200")
}

/// A MinIO server with one bucket per [`Minio::create_bucket`].
#[derive(Debug)]
pub struct Minio {
    /// `http://ip:port`.
    pub endpoint: String,
    process: ManagedProcess,
}

impl Minio {
    /// Builds MinIO (once per machine) and starts it on `ip` with its data under `dir`.
    pub fn start(dir: &Path, ip: IpAddr) -> Result<Minio, ServiceError> {
        let binary = service_script("minio/build.sh")?;
        let data = dir.join("minio-data");
        std::fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
        let addr = free_addr(ip)?;
        let console = free_addr(ip)?;
        let args: Vec<String> = vec![
            "server".into(),
            "--quiet".into(),
            "--address".into(),
            addr.to_string(),
            "--console-address".into(),
            console.to_string(),
            data.display().to_string(),
        ];
        let mut process = ManagedProcess::spawn_with_env(
            "minio",
            &binary,
            &args,
            &[
                ("MINIO_ROOT_USER", S3_ACCESS_KEY),
                ("MINIO_ROOT_PASSWORD", S3_SECRET_KEY),
                ("MINIO_BROWSER", "off"),
            ],
            &dir.join("minio.log"),
        )?;
        let endpoint = format!("http://{addr}");
        // Ready once the health endpoint answers: an open port is not a serving server yet.
        wait_ready("minio", &mut process, Duration::from_secs(60), || {
            health_ready(&endpoint)
        })?;
        Ok(Minio { endpoint, process })
    }

    /// Creates `bucket` (an S3 PUT Bucket signed with the root credentials). A server that just
    /// became ready may still answer 503 (it loads its IAM state after it reports ready, longer
    /// on a busy machine), so 503 is retried for up to 30 s.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), ServiceError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args(["--user", &format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}")])
                .arg(format!("{}/{bucket}", self.endpoint))
                .output()
                .map_err(io("running curl"))?;
            match out.stdout.as_slice() {
                b"200" => return Ok(()),
                b"503" if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                code => {
                    return Err(ServiceError::Io {
                        what: format!("creating bucket {bucket}"),
                        source: std::io::Error::other(format!(
                            "HTTP {}; see {}",
                            String::from_utf8_lossy(code),
                            self.log_path().display()
                        )),
                    })
                }
            }
        }
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The environment a `cairn-worker` process needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CAIRN_S3_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }
}

/// A single-node Kafka broker (broker and KRaft controller in one JVM), PLAINTEXT only.
#[derive(Debug)]
pub struct Kafka {
    /// `ip:port` of the PLAINTEXT listener (also the advertised one).
    pub bootstrap: String,
    libs: PathBuf,
    process: ManagedProcess,
}

impl Kafka {
    /// Fetches the jars (once per machine) and starts a broker on `ip` with its data under `dir`.
    pub fn start(dir: &Path, ip: IpAddr) -> Result<Kafka, ServiceError> {
        let libs = service_script("kafka/fetch.sh")?;
        let bootstrap = free_addr(ip)?;
        let controller = free_addr(ip)?;
        let config = dir.join("kafka.properties");
        let properties = broker_properties(&[
            ("controller", controller.to_string()),
            (
                "listeners",
                format!("PLAINTEXT://{bootstrap},CONTROLLER://{controller}"),
            ),
            ("advertised_listeners", format!("PLAINTEXT://{bootstrap}")),
            (
                "protocol_map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("data_dir", dir.join("kafka-data").display().to_string()),
            ("internal_topic_partitions", "2".into()),
        ])?;
        std::fs::write(&config, properties).map_err(io(format!("writing {}", config.display())))?;
        let format = Command::new("java")
            .args(java_args(&libs, "kafka.tools.StorageTool"))
            .args([
                "format",
                "--standalone",
                "-t",
                "cairn-e2e-cluster-00001",
                "-c",
            ])
            .arg(&config)
            .output()
            .map_err(io("running the Kafka storage formatter (java)"))?;
        if !format.status.success() {
            return Err(ServiceError::Script {
                script: "kafka.tools.StorageTool".into(),
                message: String::from_utf8_lossy(&format.stderr).into_owned(),
            });
        }
        let mut args = java_args(&libs, "kafka.Kafka");
        args.push(config.display().to_string());
        let mut process =
            ManagedProcess::spawn("kafka", Path::new("java"), &args, &dir.join("kafka.log"))?;
        wait_ready("kafka", &mut process, Duration::from_secs(120), || {
            TcpStream::connect_timeout(&bootstrap, Duration::from_millis(200)).is_ok()
        })?;
        Ok(Kafka {
            bootstrap: bootstrap.to_string(),
            libs,
            process,
        })
    }

    /// Creates `topic` with `partitions` partitions, through Kafka's own admin tool.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), ServiceError> {
        let out = Command::new("java")
            .args(java_args(&self.libs, "org.apache.kafka.tools.TopicCommand"))
            .args([
                "--bootstrap-server",
                &self.bootstrap,
                "--create",
                "--topic",
                topic,
            ])
            .args([
                "--partitions",
                &partitions.to_string(),
                "--replication-factor",
                "1",
            ])
            .output()
            .map_err(io("running Kafka's TopicCommand (java)"))?;
        check_tool("org.apache.kafka.tools.TopicCommand", &out)
    }

    /// Produces one record per key of `keys` (value `1`) with Kafka's console producer: the
    /// Java client's default partitioner (murmur2 of the key) places them, as it would for a
    /// keyed producer application. Returns once every record is acknowledged.
    pub fn produce(&self, topic: &str, keys: &[String]) -> Result<(), ServiceError> {
        let mut child = Command::new("java")
            .args(java_args(
                &self.libs,
                "org.apache.kafka.tools.ConsoleProducer",
            ))
            .args(["--bootstrap-server", &self.bootstrap, "--topic", topic])
            .args([
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=\t",
            ])
            .args(["--producer-property", "acks=all"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running Kafka's ConsoleProducer (java)"))?;
        let mut input = String::new();
        for key in keys {
            input.push_str(key);
            input.push_str("\t1\n");
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .map_err(io("writing records to the console producer"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(io("waiting for the console producer"))?;
        check_tool("org.apache.kafka.tools.ConsoleProducer", &out)
    }

    /// Every committed record of `topic` as (key, value), from the beginning; returns once no
    /// record arrived for a few seconds.
    pub fn read_committed(&self, topic: &str) -> Result<Vec<(String, String)>, ServiceError> {
        let out = Command::new("java")
            .args(java_args(
                &self.libs,
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
            ))
            .args(["--bootstrap-server", &self.bootstrap, "--topic", topic])
            .args(["--from-beginning", "--timeout-ms", "5000"])
            .args(["--consumer-property", "isolation.level=read_committed"])
            .args([
                "--property",
                "print.key=true",
                "--property",
                "key.separator=\t",
            ])
            .output()
            .map_err(io("running Kafka's ConsoleConsumer (java)"))?;
        // It exits non-zero after the timeout with nothing more to read: that is the end.
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

fn check_tool(class: &str, out: &Output) -> Result<(), ServiceError> {
    if out.status.success() {
        return Ok(());
    }
    Err(ServiceError::Script {
        script: class.into(),
        message: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The broker configuration shared with the worker's Kafka tests, with `{name}` placeholders.
const BROKER_TEMPLATE_PATH: &str = "tests/services/kafka/broker.properties";
const BROKER_TEMPLATE: &str = include_str!("../../services/kafka/broker.properties");
/// JVM flags shared with the worker's Kafka tests (see the file).
const JVM_FLAGS: &str = include_str!("../../services/kafka/jvm.flags");

/// `broker.properties` with every `{name}` of `values` filled in; an error names a placeholder
/// left over, so the template and this code cannot drift apart silently.
fn broker_properties(values: &[(&str, String)]) -> Result<String, ServiceError> {
    let mut text = BROKER_TEMPLATE.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    let leftover = text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let start = l.find('{')?;
        let end = start + l[start..].find('}')?;
        Some(l[start..=end].to_owned())
    });
    match leftover {
        Some(placeholder) => Err(ServiceError::Template {
            template: BROKER_TEMPLATE_PATH,
            placeholder,
        }),
        None => Ok(text),
    }
}

fn java_args(libs: &Path, class: &str) -> Vec<String> {
    let mut args: Vec<String> = JVM_FLAGS
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    args.extend(["-cp".into(), format!("{}/*", libs.display()), class.into()]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(&'static str, String)> {
        vec![
            ("controller", "10.0.0.1:9093".into()),
            (
                "listeners",
                "PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093".into(),
            ),
            ("advertised_listeners", "PLAINTEXT://10.0.0.1:9092".into()),
            (
                "protocol_map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("data_dir", "/tmp/kafka-data".into()),
            ("internal_topic_partitions", "2".into()),
        ]
    }

    #[test]
    fn the_broker_template_is_filled_in_completely() {
        let text = broker_properties(&values()).unwrap();
        let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            settings,
            [
                "process.roles=broker,controller",
                "node.id=1",
                "controller.quorum.voters=1@10.0.0.1:9093",
                "listeners=PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093",
                "advertised.listeners=PLAINTEXT://10.0.0.1:9092",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                "log.dirs=/tmp/kafka-data",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "num.network.threads=2",
                "num.io.threads=2",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=2",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=2",
                "group.initial.rebalance.delay.ms=0",
            ]
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_named() {
        let mut v = values();
        v.retain(|(name, _)| *name != "data_dir");
        let err = broker_properties(&v).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tests/services/kafka/broker.properties: placeholder {data_dir} was not filled in (a new placeholder in the template needs a value here)"
        );
    }

    #[test]
    fn java_args_carry_the_shared_jvm_flags() {
        assert_eq!(
            java_args(Path::new("/libs"), "kafka.Kafka"),
            [
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-cp",
                "/libs/*",
                "kafka.Kafka"
            ]
        );
    }
}

//! A real S3-compatible server for the tests: MinIO built from its Go module by
//! `tests/services/minio/build.sh`, serving a directory on a free loopback port, killed with
//! the test process (see [`super::launcher`]). Each test binary starts its own; tests use
//! their own buckets. It can be stopped and started again on the same port and data (a server
//! restart in the middle of an upload).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_worker::storage::{CheckpointStore, S3Credentials, S3Settings, ENV_ENDPOINT};
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;

use super::launcher;

/// Root credentials of test servers (they listen on loopback only).
pub const ACCESS_KEY: &str = "cairn-test";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "cairn-test-secret";

/// One MinIO server.
pub struct Minio {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    addr: String,
    console: String,
    binary: PathBuf,
    data: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Minio {
    /// Builds (once per machine) and starts a server with an empty data directory.
    pub fn start() -> Minio {
        let started = Instant::now();
        let binary = launcher::service_script("minio/build.sh");
        let dir = launcher::service_dir("minio");
        let addr = super::free_local_addr();
        let minio = Minio {
            endpoint: format!("http://{addr}"),
            console: super::free_local_addr(),
            addr,
            binary,
            data: dir.join("data"),
            log: dir.join("minio.log"),
            child: Mutex::new(None),
        };
        std::fs::create_dir_all(&minio.data).unwrap();
        minio.resume();
        eprintln!(
            "minio on {} ready after {:.1}s",
            minio.endpoint,
            started.elapsed().as_secs_f64()
        );
        minio
    }

    /// Starts the server (again) on the same port and data, and waits until it serves.
    pub fn resume(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.binary);
        cmd.args(["server", "--quiet", "--address", &self.addr])
            .args(["--console-address", &self.console])
            .arg(&self.data)
            .env("MINIO_ROOT_USER", ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
            .env("MINIO_BROWSER", "off")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = launcher::spawn(cmd).expect("start MinIO");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/minio/health/ready", self.endpoint);
        loop {
            let ready = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .is_ok_and(|o| o.stdout == b"200");
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "MinIO did not start within 60s; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: no graceful shutdown) and waits for it to exit.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Settings that reach this server with its root credentials.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            path_style: true,
            conditional_put: true,
            credentials: S3Credentials::Static {
                key_id: ACCESS_KEY.to_owned(),
                secret: SECRET_KEY.to_owned(),
                token: None,
            },
        }
    }

    /// The environment a `cairn-worker` process needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_ENDPOINT, self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
    }

    /// Creates a bucket (MinIO makes one per top-level directory of its data). A server that
    /// just became ready may still answer 503 (it loads its IAM state after it reports ready,
    /// longer on a busy machine), so 503 is retried for up to 30 s.
    pub fn create_bucket(&self, bucket: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
                .arg(format!("{}/{bucket}", self.endpoint))
                .output()
                .expect("run curl");
            let code = String::from_utf8_lossy(&status.stdout).into_owned();
            if code == "503" && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            assert_eq!(
                code,
                "200",
                "creating bucket {bucket} failed; see {}",
                self.log.display()
            );
            return;
        }
    }

    /// A checkpoint store at `s3://<bucket>/<prefix>` on this server.
    pub fn store(&self, url: &str) -> CheckpointStore {
        CheckpointStore::s3(url, &self.settings()).unwrap()
    }

    /// Raw object store access to `bucket` (to plant or delete objects behind Cairn's back).
    pub fn raw(&self, bucket: &str) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

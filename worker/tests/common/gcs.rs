//! A Google Cloud Storage server for the tests: the emulator of `tests/services/gcs` —
//! fake-gcs-server's library (from the Go module proxy) behind an adapter for the XML-API
//! requests object_store sends and fake-gcs-server lacks (simple and multipart uploads, copies,
//! the generation precondition header); the emulator's backend decides every write. Built by
//! `tests/services/gcs/build.sh`, serving a directory over plain HTTP on a free loopback port,
//! killed with the test process (see [`super::launcher`]). Each test binary starts its own;
//! tests use their own buckets.
//!
//! Stores reach it through the `GOOGLE_*` variables: its URL as the base URL, plain HTTP
//! allowed, and a static token (the emulator checks none).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use cairn_worker::storage::{CheckpointStore, StoreEnv};

use super::launcher;

/// One GCS emulator.
pub struct FakeGcs {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    addr: String,
    log: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl FakeGcs {
    /// Builds (once per machine) and starts a server with an empty directory.
    pub fn start() -> FakeGcs {
        let started = Instant::now();
        let binary = launcher::service_script("gcs/build.sh");
        let dir = launcher::service_dir("gcs");
        let addr = super::free_local_addr();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join("gcs.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary);
        cmd.args(["-addr", &addr, "-root"])
            .arg(&data)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        let child = launcher::spawn(cmd).expect("start the GCS emulator");
        let gcs = FakeGcs {
            endpoint: format!("http://{addr}"),
            addr,
            log,
            dir,
            child,
        };
        launcher::wait_until("the GCS emulator to listen", 60, || {
            std::net::TcpStream::connect(&gcs.addr).is_ok()
        });
        eprintln!(
            "gcs emulator on {} ready after {:.1}s",
            gcs.endpoint,
            started.elapsed().as_secs_f64()
        );
        gcs
    }

    /// The variables a store (or a `cairn-worker` process) needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_BASE_URL", self.endpoint.clone()),
            ("GOOGLE_ALLOW_HTTP", "true".to_owned()),
            // Any static token: the emulator checks none, and with no credential at all the
            // client would ask the instance metadata server (off this machine) for one.
            ("GOOGLE_BEARER_TOKEN", "emulator".to_owned()),
        ]
    }

    /// [`Self::env`] as store settings.
    pub fn store_env(&self) -> StoreEnv {
        StoreEnv::from_pairs(self.env())
    }

    /// A checkpoint store at `gs://<bucket>/<prefix>` on this server.
    pub fn store(&self, url: &str) -> CheckpointStore {
        CheckpointStore::from_url_with_env(url, &self.dir, &self.store_env()).unwrap()
    }

    /// Raw object store access to `bucket` (to plant or delete objects behind Cairn's back).
    pub fn raw(&self, bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_url(format!("gs://{bucket}"))
                .with_config(
                    object_store::gcp::GoogleConfigKey::BaseUrl,
                    self.endpoint.clone(),
                )
                .with_bearer_token("emulator")
                .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                .build()
                .unwrap(),
        )
    }

    /// Creates a bucket (JSON API).
    pub fn create_bucket(&self, bucket: &str) {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", &format!("{{\"name\":\"{bucket}\"}}")])
            .arg(format!("{}/storage/v1/b", self.endpoint))
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "creating bucket {bucket} failed; see {}",
            self.log.display()
        );
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        // SIGKILL: the data goes with the directory.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A real Azure Blob service for the tests: Azurite (Microsoft's emulator) installed from the
//! npm registry by `tests/services/azurite/install.sh`, serving a directory on a free loopback
//! port with telemetry off, killed with the test process (see [`super::launcher`]). Each test
//! binary starts its own; tests use their own containers.
//!
//! Stores reach it the way they reach Azure, through the `AZURE_*` variables: the emulator's
//! well-known account and key, and an endpoint URL (path-style, the account in the path).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use cairn_worker::storage::{CheckpointStore, StoreEnv};
use sha2::{Digest, Sha256};

use super::launcher;

/// Azurite's built-in account (the same in every installation, documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
/// The key of [`ACCOUNT`], also public and fixed.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// One Azurite Blob server.
pub struct Azurite {
    /// `http://127.0.0.1:<port>/devstoreaccount1`: the account's Blob endpoint.
    pub endpoint: String,
    addr: String,
    log: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Azurite {
    /// Installs (once per machine) and starts a server with an empty directory.
    pub fn start() -> Azurite {
        let started = Instant::now();
        let binary = launcher::service_script("azurite/install.sh");
        let dir = launcher::service_dir("azurite");
        let addr = super::free_local_addr();
        let (host, port) = addr.split_once(':').unwrap();
        let log = dir.join("azurite.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary);
        cmd.args(["--blobHost", host, "--blobPort", port])
            .arg("--location")
            .arg(dir.join("data"))
            // No telemetry (it would call out of the machine) and no access log.
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        let child = launcher::spawn(cmd).expect("start Azurite");
        let azurite = Azurite {
            endpoint: format!("http://{addr}/{ACCOUNT}"),
            addr,
            log,
            dir,
            child,
        };
        launcher::wait_until("Azurite to listen", 60, || {
            std::net::TcpStream::connect(&azurite.addr).is_ok()
        });
        eprintln!(
            "azurite on {} ready after {:.1}s",
            azurite.endpoint,
            started.elapsed().as_secs_f64()
        );
        azurite
    }

    /// The variables a store (or a `cairn-worker` process) needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.to_owned()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint.clone()),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// [`Self::env`] as store settings.
    pub fn store_env(&self) -> StoreEnv {
        StoreEnv::from_pairs(self.env())
    }

    /// A checkpoint store at `az://<container>/<prefix>` on this server.
    pub fn store(&self, url: &str) -> CheckpointStore {
        CheckpointStore::from_url_with_env(url, &self.dir, &self.store_env()).unwrap()
    }

    /// Raw object store access to `container` (to plant or delete blobs behind Cairn's back).
    pub fn raw(&self, container: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_endpoint(self.endpoint.clone())
                .with_allow_http(true)
                .with_container_name(container)
                .build()
                .unwrap(),
        )
    }

    /// Creates a container (the Blob REST API's Create Container, signed with the account key).
    pub fn create_container(&self, container: &str) {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let version = "2021-08-06";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .unwrap();
        let signature = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["-H", &format!("x-ms-date: {date}")])
            .args(["-H", &format!("x-ms-version: {version}")])
            .args(["-H", "Content-Length: 0"])
            .args([
                "-H",
                &format!("Authorization: SharedKey {ACCOUNT}:{signature}"),
            ])
            .arg(format!("{}/{container}?restype=container", self.endpoint))
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "201",
            "creating container {container} failed; see {}",
            self.log.display()
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // SIGKILL: the data goes with the directory.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

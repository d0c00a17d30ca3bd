//! Fuzz targets for what the worker reads from outside: checkpoint and savepoint documents
//! from the store, and requests to the control API.
//!
//! Each target first runs its seeds as they are (documents written by the worker's own
//! serialisers, real request bodies, and the findings kept in `tests/fuzz/findings/`), then
//! bolero-generated mutations of them (the contract crate's `tests/fuzz/mutate.rs`), bounded by
//! `CAIRN_FUZZ_ITERATIONS` / `CAIRN_FUZZ_SECONDS` (docs/fuzzing.md).
//!
//! * `manifests`: every input goes to the task manifest, commit record and savepoint manifest
//!   parsers. None panics; a rejected document gets an error naming the stored object; an
//!   accepted one is not of a newer format, writes back to bytes that parse to an equal
//!   document, and, read through the real store path, names only plain file names.
//! * `control_api`: requests with mutated bodies, operation ids, methods and tokens sent to
//!   the real control API server (real TCP, a stand-in coordinator) never get a 5xx or a
//!   dropped connection; a wrong token gets 401 and reaches nothing; a body that is not JSON or
//!   has an unknown field gets 400 with the reason; an accepted savepoint request does what its
//!   body asked.

#[path = "../../contract/tests/fuzz/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bolero::TypeGenerator;
use cairn_contract::control::JobStatus;
use cairn_contract::JobSpec;
use cairn_worker::checkpoint::catalog;
use cairn_worker::checkpoint::manifest::{
    self, CommitRecord, CommittedTask, ManifestFile, ManifestFiles, TaskManifest, FORMAT_VERSION,
};
use cairn_worker::checkpoint::paths;
use cairn_worker::checkpoint::savepoint::{
    SavepointLocation, SavepointManifest, SavepointTask, SAVEPOINT_FILE,
};
use cairn_worker::checkpoint::CheckpointError;
use cairn_worker::control::{self, ControlConfig, ControlHandles};
use cairn_worker::metrics::Metrics;
use cairn_worker::runtime::coordinator::{JobProgress, SavepointInfo};
use cairn_worker::runtime::messages::Request;
use cairn_worker::storage::{CheckpointStore, FileMeta};
use mutate::{Budget, Case, Dict};
use serde_json::Value;

fn worker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Inputs a target once failed on (files ending in `extension`): always run, never mutated.
fn findings(extension: &str) -> Vec<(PathBuf, Vec<u8>)> {
    mutate::read_dir_files(&worker_dir().join("tests/fuzz/findings"), &[extension])
}

/// Runs `check` on every seed as written, naming the seed that fails.
fn run_seeds(seeds: &[(PathBuf, Vec<u8>)], check: impl Fn(&[u8])) {
    for (path, bytes) in seeds {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(bytes)));
        if let Err(panic) = outcome {
            eprintln!("seed {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

/// The seed documents' trees, and the dictionary edits draw from.
struct Mutator {
    trees: Vec<Value>,
    dict: Dict,
}

impl Mutator {
    fn new(seeds: &[(PathBuf, Vec<u8>)], extra_keys: &[&str]) -> Mutator {
        let trees: Vec<Value> = seeds
            .iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(bytes).ok())
            .collect();
        assert!(!trees.is_empty(), "no JSON seeds");
        let dict = Dict::from_seeds(&trees, extra_keys);
        Mutator { trees, dict }
    }

    /// The JSON text of one case (see `mutate::apply`).
    fn bytes(&self, case: &Case) -> Vec<u8> {
        let mut tree = self.trees[usize::from(case.seed) % self.trees.len()].clone();
        mutate::apply(case, &mut tree, &self.dict, |t| {
            serde_json::to_vec_pretty(t).expect("a JSON value serialises")
        })
    }
}

// ------------------------------------------------------------------------------------------
// Checkpoint and savepoint documents.
// ------------------------------------------------------------------------------------------

/// A plain file name: one non-empty path segment that is not `.` or `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// A real store on disk, and a runtime to drive its async reads.
struct StoreCtx {
    _dir: tempfile::TempDir,
    store: CheckpointStore,
    runtime: tokio::runtime::Runtime,
}

impl StoreCtx {
    fn new() -> StoreCtx {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("file://{}", dir.path().display());
        let store = CheckpointStore::from_url(&url, dir.path()).expect("file store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        StoreCtx {
            _dir: dir,
            store,
            runtime,
        }
    }
}

/// A document the worker reads from a store.
trait Document:
    serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug + Sized
{
    /// What it is, for messages.
    const KIND: &'static str;
    /// Where the worker reads it from.
    fn key() -> String;
    /// Its format version.
    fn format(&self) -> u32;
    /// The file names restore joins to a local directory.
    fn file_names(&self) -> Vec<&str>;
    /// Reads it from `ctx.store` through the worker's own read path.
    fn load(ctx: &StoreCtx) -> Result<Self, CheckpointError>;
}

impl Document for TaskManifest {
    const KIND: &'static str = "task manifest";
    fn key() -> String {
        paths::task_manifest_key(7, 3, 1)
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn file_names(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.name.as_str()).collect()
    }
    fn load(ctx: &StoreCtx) -> Result<Self, CheckpointError> {
        ctx.runtime
            .block_on(catalog::load_task_manifest(&ctx.store, &Self::key()))
    }
}

impl Document for CommitRecord {
    const KIND: &'static str = "commit record";
    fn key() -> String {
        paths::commit_key(7)
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn file_names(&self) -> Vec<&str> {
        Vec::new()
    }
    fn load(ctx: &StoreCtx) -> Result<Self, CheckpointError> {
        ctx.runtime.block_on(catalog::load_commit(&ctx.store, 7))
    }
}

impl Document for SavepointManifest {
    const KIND: &'static str = "savepoint manifest";
    fn key() -> String {
        format!("savepoints/sp-000000000007/{SAVEPOINT_FILE}")
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn file_names(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .flat_map(|t| t.files.iter().map(|f| f.name.as_str()))
            .collect()
    }
    fn load(ctx: &StoreCtx) -> Result<Self, CheckpointError> {
        let location = SavepointLocation {
            store: ctx.store.clone(),
            prefix: "savepoints/sp-000000000007/".to_owned(),
        };
        ctx.runtime.block_on(location.load())
    }
}

/// Checks one input as a document of kind `D`.
fn check_document<D: Document>(ctx: &StoreCtx, bytes: &[u8]) {
    let key = D::key();
    let input = || String::from_utf8_lossy(bytes).into_owned();
    let doc: D = match manifest::parse(&key, bytes) {
        Ok(doc) => doc,
        Err(err) => {
            assert!(
                matches!(&err, CheckpointError::BadManifest { key: k, .. }
                    | CheckpointError::FormatTooNew { key: k, .. } if *k == key),
                "{} rejected with an error that does not name it: {err:?}\n{}",
                D::KIND,
                input()
            );
            assert!(err.to_string().contains(&key), "{err}");
            return;
        }
    };
    assert!(
        doc.format() <= FORMAT_VERSION,
        "accepted a {} of format {} > {FORMAT_VERSION}:\n{}",
        D::KIND,
        doc.format(),
        input()
    );
    let written = manifest::to_bytes(&doc);
    let again: D = manifest::parse(&key, &written).unwrap_or_else(|e| {
        panic!(
            "an accepted {} written back does not parse: {e}\n{}",
            D::KIND,
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(again, doc, "{} round trip changed it", D::KIND);

    // The worker's own read path, from a real store: whatever validation it does, what it
    // returns must be the same document, naming only plain files.
    ctx.runtime
        .block_on(ctx.store.put_bytes(&key, bytes.to_vec().into()))
        .expect("writing to the test store");
    match D::load(ctx) {
        Ok(loaded) => {
            assert_eq!(loaded, doc, "the store read path changed the {}", D::KIND);
            let bad: Vec<&str> = loaded
                .file_names()
                .into_iter()
                .filter(|n| !is_plain_file_name(n))
                .collect();
            assert!(
                bad.is_empty(),
                "accepted a {} naming files that are not plain names: {bad:?}\n{}",
                D::KIND,
                input()
            );
        }
        Err(err) => assert!(!err.to_string().trim().is_empty(), "{err:?}"),
    }
}

/// Checks one input as each kind of document.
fn check_all_documents(ctx: &StoreCtx, bytes: &[u8]) {
    check_document::<TaskManifest>(ctx, bytes);
    check_document::<CommitRecord>(ctx, bytes);
    check_document::<SavepointManifest>(ctx, bytes);
}

fn example_spec() -> JobSpec {
    let path = worker_dir().join("../examples/wordcount.yaml");
    JobSpec::from_path(&path).expect("examples/wordcount.yaml is valid")
}

fn file(name: &str, key: &str, size: u64, crc32c: u32) -> ManifestFile {
    ManifestFile {
        name: name.to_owned(),
        key: key.to_owned(),
        meta: FileMeta { size, crc32c },
    }
}

/// A task manifest, a commit record and a savepoint manifest as the worker writes them.
fn seed_documents() -> Vec<(PathBuf, Vec<u8>)> {
    let spec = example_spec();
    let offsets = BTreeMap::from([(1u32, 120_000u64)]);
    let task = TaskManifest {
        format: FORMAT_VERSION,
        checkpoint: 7,
        generation: 3,
        task: 1,
        db_id: "000003-9f2c01ab".to_owned(),
        offsets: offsets.clone(),
        watermarks: Default::default(),
        files: ManifestFiles::new(vec![
            file(
                "000012.sst",
                &paths::sst_key(1, "000003-9f2c01ab", "000012.sst"),
                40_960,
                0x1234_5678,
            ),
            file(
                "CURRENT",
                &paths::checkpoint_file_key(7, 3, 1, "CURRENT"),
                16,
                0xdead_beef,
            ),
            file(
                "MANIFEST-000005",
                &paths::checkpoint_file_key(7, 3, 1, "MANIFEST-000005"),
                1_024,
                7,
            ),
            file(
                "OPTIONS-000007",
                &paths::checkpoint_file_key(7, 3, 1, "OPTIONS-000007"),
                6_000,
                u32::MAX,
            ),
        ])
        .expect("the seed's files are valid"),
        uploaded_bytes: 47_000,
        new_sst_bytes: 40_960,
        created_at_ms: 1_700_000_000_000,
    };
    let commit = CommitRecord {
        format: FORMAT_VERSION,
        checkpoint: 7,
        generation: 3,
        triggered_at_ms: 1_700_000_000_000,
        committed_at_ms: 1_700_000_000_250,
        spec_hash: spec.spec_hash(),
        spec: spec.clone(),
        partitions: 4,
        parallelism: 2,
        tasks: vec![
            CommittedTask {
                task: 0,
                container: 0,
                manifest: paths::task_manifest_key(7, 3, 0),
                offsets: BTreeMap::from([(0, 5)]),
                watermarks: Default::default(),
            },
            CommittedTask {
                task: 1,
                container: 1,
                manifest: paths::task_manifest_key(7, 3, 1),
                offsets,
                watermarks: Default::default(),
            },
        ],
        total_bytes: 48_000,
        uploaded_bytes: 47_000,
        new_sst_bytes: 40_960,
        origin: Some("file://./.cairn/checkpoints/savepoints/sp-000000000003".to_owned()),
        state_version: Some(2),
    };
    let savepoint = SavepointManifest {
        format: FORMAT_VERSION,
        id: "sp-000000000007@1700000000300".to_owned(),
        name: "sp-000000000007".to_owned(),
        created_at_ms: 1_700_000_000_300,
        source_checkpoint: 7,
        spec_hash: spec.spec_hash(),
        spec,
        partitions: 4,
        parallelism: 2,
        assignment: BTreeMap::from([(0, 0), (1, 1), (2, 0), (3, 1)]),
        task_name: "count".to_owned(),
        state_version: 1,
        tasks: vec![SavepointTask {
            task: 1,
            offsets: BTreeMap::from([(1, 120_000)]),
            watermarks: Default::default(),
            files: ManifestFiles::new(
                task.files
                    .iter()
                    .map(|f| ManifestFile {
                        key: format!("task-0001/{}", f.name),
                        ..f.clone()
                    })
                    .collect(),
            )
            .expect("the seed's files are valid"),
        }],
        total_bytes: 48_000,
    };
    vec![
        (
            PathBuf::from("<task manifest>"),
            manifest::to_bytes(&task).to_vec(),
        ),
        (
            PathBuf::from("<commit record>"),
            manifest::to_bytes(&commit).to_vec(),
        ),
        (
            PathBuf::from("<savepoint manifest>"),
            manifest::to_bytes(&savepoint).to_vec(),
        ),
    ]
}

#[test]
fn manifests() {
    let ctx = StoreCtx::new();
    let seeds = seed_documents();
    // Each seed is accepted as what it is, or the fuzzer would start from errors.
    load_seed::<TaskManifest>(&ctx, &seeds[0].1);
    load_seed::<CommitRecord>(&ctx, &seeds[1].1);
    load_seed::<SavepointManifest>(&ctx, &seeds[2].1);

    let mutator = Mutator::new(&seeds, &[]);
    let mut all = seeds;
    all.extend(findings("json"));
    run_seeds(&all, |bytes| check_all_documents(&ctx, bytes));

    let budget = Budget::from_env();
    let ctx = AssertUnwindSafe(&ctx);
    bolero::check!()
        .with_type::<Case>()
        .with_iterations(budget.iterations)
        .with_test_time(budget.time)
        .for_each(|case| {
            let bytes = mutator.bytes(case);
            mutate::remember_input("manifests", &bytes);
            check_all_documents(&ctx, &bytes);
        });
}

/// Checks that the worker's own read path accepts a seed.
fn load_seed<D: Document>(ctx: &StoreCtx, bytes: &[u8]) {
    ctx.runtime
        .block_on(ctx.store.put_bytes(&D::key(), bytes.to_vec().into()))
        .expect("writing to the test store");
    D::load(ctx).unwrap_or_else(|e| panic!("seed {} rejected: {e}", D::KIND));
}

/// The audit's case, exactly: a task or savepoint manifest naming `../../escaped.sst`, an
/// absolute path or a nested one is refused by the parser every reader uses, with an error that
/// names the document and the entry.
#[test]
fn manifest_file_names_must_be_plain() {
    for (bad, doc) in [
        ("../../escaped.sst", 0),
        ("/etc/escaped", 0),
        ("a/b.sst", 2),
    ] {
        let mut tree: Value = serde_json::from_slice(&seed_documents()[doc].1).unwrap();
        let files = if doc == 0 {
            &mut tree["files"]
        } else {
            &mut tree["tasks"][0]["files"]
        };
        files[0]["name"] = bad.into();
        let bytes = serde_json::to_vec(&tree).unwrap();
        let err = if doc == 0 {
            manifest::parse::<TaskManifest>(&TaskManifest::key(), &bytes).unwrap_err()
        } else {
            manifest::parse::<SavepointManifest>(&SavepointManifest::key(), &bytes).unwrap_err()
        }
        .to_string();
        assert!(
            err.contains("files[0]") && err.contains("not a plain file name"),
            "{bad:?}: {err}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// The control API.
// ------------------------------------------------------------------------------------------

const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// A control API server on a loopback port with a stand-in coordinator that answers every
/// request at once.
struct ControlServer {
    addr: SocketAddr,
    /// Requests the stand-in coordinator took from its queue.
    requests: Arc<AtomicU64>,
    /// The queue's sender, to see what is still queued: the API queues a request before it
    /// answers, the stand-in takes it afterwards.
    queue: tokio::sync::mpsc::Sender<Request>,
    /// Whether anything asked the job to stop.
    shutdown: tokio::sync::watch::Receiver<bool>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn start_control_server() -> ControlServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Far more room than the fuzzer can fill between two answers: a full queue (503) would be
    // the stand-in's limit, not the API's.
    let (requests_tx, mut requests_rx) = tokio::sync::mpsc::channel::<Request>(4096);
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    runtime.spawn(async move {
        while let Some(request) = requests_rx.recv().await {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            match request {
                Request::Checkpoint(reply) => {
                    let _ = reply.send(Ok(n));
                }
                Request::Savepoint { reply, .. } => {
                    let _ = reply.send(Ok(SavepointInfo {
                        url: format!("file:///store/savepoints/sp-{n:012}"),
                        id: format!("sp-{n:012}@0"),
                        checkpoint: n,
                    }));
                }
            }
        }
    });
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let handles = ControlHandles {
        requests: requests_tx.clone(),
        shutdown: Arc::new(shutdown_tx),
        facts: JobStatus {
            job: "fuzz".to_owned(),
            generation: 1,
            partitions: 2,
            parallelism: 1,
            spec_hash: "0123456789abcdef".to_owned(),
            assignment: BTreeMap::from([(0, 0), (1, 0)]),
            checkpoint_interval_ms: 60_000,
            started_at_ms: 0,
            ..Default::default()
        },
        metrics: Arc::new(Metrics::new()),
        progress: Arc::new(JobProgress::default()),
    };
    let cfg = ControlConfig {
        addr: "127.0.0.1:0".parse().expect("address"),
        token_file: token_file.clone(),
        limits: Default::default(),
        deployment: None,
    };
    let token = control::read_token(&token_file).expect("token");
    let server = runtime
        .block_on(control::serve(&cfg, token, handles))
        .expect("control API starts");
    ControlServer {
        addr: server.addr,
        requests,
        queue: requests_tx,
        shutdown,
        _dir: dir,
        _runtime: runtime,
    }
}

/// An HTTP response: status and body.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

impl ControlServer {
    /// Requests that reached the coordinator, once every queued one has been taken: an
    /// authorised request answered earlier may still be on its way to the stand-in.
    fn reached(&self) -> u64 {
        let started = std::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the stand-in coordinator stopped taking requests"
            );
            if self.queue.capacity() == self.queue.max_capacity() {
                let taken = self.requests.load(Ordering::SeqCst);
                // The stand-in counts right after taking; give it that instant.
                std::thread::sleep(std::time::Duration::from_millis(1));
                if self.queue.capacity() == self.queue.max_capacity()
                    && self.requests.load(Ordering::SeqCst) == taken
                {
                    return taken;
                }
            }
            std::thread::yield_now();
        }
    }

    /// Sends one request with a raw body; `None` when no complete response came back (the
    /// connection was dropped, e.g. by a panicking handler).
    fn send(&self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Option<Response> {
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..split]).ok()?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Response {
            status,
            body: raw[split + 4..].to_vec(),
        })
    }
}

/// One fuzzed request: a body mutated from a real one, and how it is sent.
#[derive(Debug, Clone, TypeGenerator)]
struct ControlCase {
    /// Index into [`ENDPOINTS`].
    endpoint: u8,
    /// Index into [`auth_headers`].
    auth: u8,
    /// The body (also the operation id, for `/v1/operations/{id}`).
    body: Case,
}

/// Method and path of each request; `{id}` is replaced by an operation id.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/savepoints"),
    ("POST", "/v1/savepoints"),
    ("POST", "/v1/savepoints"),
    ("POST", "/v1/savepoints"),
    ("GET", "/v1/operations/{id}"),
    ("GET", "/v1/operations/{id}"),
    ("POST", "/v1/checkpoints"),
    ("GET", "/v1/status"),
    ("POST", "/v1/stop"),
    ("GET", "/v1/savepoints"),
    ("PUT", "/v1/savepoints"),
    ("DELETE", "/v1/operations/{id}"),
    ("POST", "/v1/status"),
    ("POST", "/v1/savepoints/"),
    ("POST", "/v1//savepoints"),
    ("GET", "/v1/operations/"),
    ("GET", "/v1/operations/{id}/x"),
    ("GET", "/v2/status"),
    ("GET", "/"),
];

/// Authorization headers: the right one first, then wrong ones.
fn auth_headers() -> Vec<Option<String>> {
    vec![
        Some(format!("Bearer {TOKEN}")),
        Some(format!("Bearer {TOKEN}")),
        Some(format!("Bearer {TOKEN}")),
        Some(format!("Bearer  {TOKEN} ")),
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
    ]
}

/// Whether `auth` presents the token (what the server must accept).
fn presents_token(auth: Option<&str>) -> bool {
    auth.and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == TOKEN)
}

/// Percent-encodes everything but letters, digits, `-`, `_` and `~`, so any id (`..` too) is
/// one path segment.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                char::from(*b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Savepoint request bodies the API documents, and operation ids it hands out.
fn control_seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = [
        &b"{\"stop\": false}"[..],
        b"{\"stop\": true}",
        b"{}",
        b"",
        b" \n",
        b"\"savepoint-1\"",
        b"\"checkpoint-2\"",
    ]
    .iter()
    .map(|b| (PathBuf::from("<control seed>"), b.to_vec()))
    .collect();
    seeds.extend(findings("body"));
    seeds
}

/// What a savepoint request body asks for, when that is certain from its JSON alone: `None`
/// when undecided (e.g. a key could be written twice), `Some(Err(()))` for a body the API must
/// refuse, `Some(Ok(stop))` for one it must accept.
fn expected_savepoint_body(body: &[u8]) -> Option<Result<bool, ()>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Ok(false));
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Some(Err(()));
    };
    match &value {
        Value::Object(map) if map.keys().any(|k| k != "stop") => Some(Err(())),
        // The JSON text may still write `stop` twice, which the API refuses; only the plain
        // cases are certain.
        Value::Object(map) if map.is_empty() && !body.contains(&b'"') => Some(Ok(false)),
        Value::Object(map) => match map.get("stop") {
            Some(Value::Bool(stop)) if count(body, b"stop") == 1 && !body.contains(&b'\\') => {
                Some(Ok(*stop))
            }
            Some(Value::Bool(_)) => None,
            _ => Some(Err(())),
        },
        // A struct also reads from a JSON array (`[true]`); anything else is refused.
        Value::Array(_) => None,
        _ => Some(Err(())),
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Sends one request and checks the answer.
fn check_request(
    server: &ControlServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) {
    let authorised = presents_token(auth);
    let requests_before = if authorised { 0 } else { server.reached() };
    let stopping_before = *server.shutdown.borrow();
    let shown = || {
        format!(
            "{method} {path} auth={auth:?} body={:?}",
            String::from_utf8_lossy(body)
        )
    };
    let response = server
        .send(method, path, auth, body)
        .unwrap_or_else(|| panic!("no HTTP response (dropped connection) to {}", shown()));
    let status = response.status;
    assert!(
        (200..500).contains(&status),
        "status {status} to {}: {}",
        shown(),
        String::from_utf8_lossy(&response.body)
    );
    let json: Option<Value> = if response.body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "a response that is not JSON ({e}) to {}: {:?}",
                shown(),
                String::from_utf8_lossy(&response.body)
            )
        }))
    };
    if matches!(status, 400 | 401 | 409) {
        let error = json
            .as_ref()
            .and_then(|j| j["error"].as_str())
            .unwrap_or("");
        assert!(
            !error.is_empty(),
            "{status} without a reason to {}",
            shown()
        );
    }
    let known_route = ENDPOINTS[..9].iter().any(|(m, p)| {
        *m == method
            && match p.strip_suffix("{id}") {
                Some(prefix) => path.starts_with(prefix) && !path[prefix.len()..].contains('/'),
                None => *p == path,
            }
    }) && !path.ends_with("/v1/operations/");
    if !authorised {
        if known_route {
            // 414/431: the HTTP layer refuses a request line or headers too long to read,
            // before any route or token is looked at.
            assert!(
                matches!(status, 401 | 414 | 431),
                "status {status} to {}",
                shown()
            );
        }
        assert_eq!(
            server.reached(),
            requests_before,
            "an unauthenticated request reached the coordinator: {}",
            shown()
        );
        assert_eq!(
            *server.shutdown.borrow(),
            stopping_before,
            "an unauthenticated request stopped the job: {}",
            shown()
        );
        return;
    }
    if (method, path) == ("POST", "/v1/savepoints") {
        match expected_savepoint_body(body) {
            Some(Err(())) => assert_eq!(status, 400, "{}", shown()),
            Some(Ok(stop)) => {
                assert!(
                    matches!(status, 200 | 202 | 409),
                    "status {status} to {}",
                    shown()
                );
                if status != 409 {
                    let op = json.as_ref().expect("an operation");
                    assert_eq!(op["kind"], "savepoint", "{op}");
                    assert_eq!(op["stop"], stop, "{op} for {}", shown());
                }
            }
            None => {}
        }
        if status == 400 {
            let error = json
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .unwrap_or("");
            assert!(error.starts_with("body must be JSON like"), "{error}");
        }
    }
}

fn fuzz_request(server: &ControlServer, case: &ControlCase, mutator: &Mutator) {
    let (method, template) = ENDPOINTS[usize::from(case.endpoint) % ENDPOINTS.len()];
    let auths = auth_headers();
    let auth = auths[usize::from(case.auth) % auths.len()].as_deref();
    let body = mutator.bytes(&case.body);
    mutate::remember_input("control_api", &body);
    let path = if template.contains("{id}") {
        // An id as the API writes them, mutated: a JSON string seed gives a real id.
        let id = serde_json::from_slice::<String>(&body)
            .map(String::into_bytes)
            .unwrap_or(body.clone());
        template.replace("{id}", &percent_encode(&id))
    } else {
        template.to_owned()
    };
    check_request(server, method, &path, auth, &body);
}

#[test]
fn control_api() {
    let server = start_control_server();
    let seeds = control_seeds();
    // Every seed body on every endpoint with every Authorization header.
    for (method, template) in ENDPOINTS {
        for auth in auth_headers() {
            run_seeds(&seeds, |body| {
                let path = template.replace("{id}", "savepoint-1");
                check_request(&server, method, &path, auth.as_deref(), body)
            });
        }
    }
    let mutator = Mutator::new(
        &seeds
            .iter()
            .filter(|(_, b)| !b.iter().all(u8::is_ascii_whitespace))
            .cloned()
            .collect::<Vec<_>>(),
        &["stop", "Stop", "STOP", "stop\u{0}"],
    );
    let budget = Budget::from_env();
    let server = AssertUnwindSafe(&server);
    bolero::check!()
        .with_type::<ControlCase>()
        .with_iterations(budget.iterations)
        .with_test_time(budget.time)
        .for_each(|case| fuzz_request(&server, case, &mutator));
}

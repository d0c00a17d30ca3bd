//! The durable store of checkpoint files.
//!
//! Checkpoints upload RocksDB files (SSTs, the MANIFEST, OPTIONS) and then a manifest that names
//! them with their [`FileMeta`]; restore downloads them and verifies every byte against that
//! meta. This module is the one place that talks to the storage medium, behind one API,
//! [`CheckpointStore`], over two backends:
//!
//! * a **local directory** (`file://`, the embedded default), written directly with `std::fs`
//!   so that every published file is durable (fsynced) before a call returns: object_store's
//!   `LocalFileSystem` does not fsync, which would let a power loss destroy a checkpoint that a
//!   committed manifest already points to;
//! * any **[`object_store::ObjectStore`]**: `s3://bucket/prefix` (AWS S3, MinIO, Ceph; settings
//!   from the environment, see [`S3Settings`] and docs/s3.md) and `memory://` for tests.
//!
//! Files are addressed by `/`-separated relative keys under the store root, e.g.
//! `tasks/task-0003/db-7f3a/sst/000123.sst`: no leading `/`, no empty, `.` or `..` segments,
//! ASCII letters, digits and `-_.=+,@~:` (anything else is [`StorageError::InvalidKey`]).
//! Writes are atomic: readers see a whole file or none.
//! Manifests are written last, with [`CheckpointStore::put_bytes`] (atomic overwrite) or
//! [`CheckpointStore::put_bytes_create_only`], whose refusal to replace an existing key fences
//! off a stale writer.

mod azure;
mod env;
mod error;
mod gcs;
mod hdfs;
mod key;
mod local;
mod object;
mod s3;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_contract::{ObjectService, StoreUrl};
use object_store::ObjectStore;

pub use azure::ENV_CREDENTIALS_DIR as ENV_AZURE_CREDENTIALS_DIR;
pub use env::StoreEnv;
pub use error::StorageError;
pub(crate) use key::{file_name as key_file_name, validate_key};
pub use s3::{
    S3Credentials, S3Settings, ENV_CONDITIONAL_PUT, ENV_CREDENTIALS_DIR, ENV_ENDPOINT,
    ENV_PATH_STYLE, ENV_REGION,
};

use local::LocalDir;
use object::ObjectBackend;

/// Size and CRC32C of a stored file; recorded in manifests and verified on download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// Length in bytes.
    pub size: u64,
    /// CRC32C (Castagnoli) of the whole content.
    pub crc32c: u32,
}

impl fmt::Display for FileMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes with CRC32C {:08x}", self.size, self.crc32c)
    }
}

/// One stored file, as returned by [`CheckpointStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The file's key.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
}

/// A handle on the checkpoint store: where checkpoint files and manifests live.
///
/// Cheap to clone (an `Arc` inside); clones share the same backend, which is how an in-memory
/// store is shared between the checkpoint writer and restore in tests.
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    backend: Backend,
}

/// What opening a `file://` store does with its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// Create it if missing (a job that writes).
    Create,
    /// Refuse a missing one (a command that reads).
    MustExist,
    /// Neither: a missing directory reads as empty.
    AsIs,
}

/// The storage medium behind a [`CheckpointStore`].
enum Backend {
    /// `file://`: a local or mounted directory, written with explicit fsyncs.
    Local(Arc<LocalDir>),
    /// Any object store (`s3://`, `memory://`).
    Object(ObjectBackend),
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("url", &self.url())
            .finish()
    }
}

/// The contract's store URL grammar; a URL it refuses is [`StorageError::UnsupportedUrl`],
/// whose message lists the accepted forms.
fn parse_url(url: &str) -> Result<StoreUrl, StorageError> {
    StoreUrl::parse(url).map_err(|_| StorageError::UnsupportedUrl {
        url: url.to_owned(),
    })
}

impl CheckpointStore {
    /// Opens the store a URL names (the job spec's `checkpoint.store`):
    ///
    /// * `file://./rel`, `file://rel` or `file:rel`: the directory `rel` relative to `base_dir`;
    /// * `file:///abs` (or `file:/abs`): the absolute directory `/abs`;
    /// * `memory://` or `memory://<name>`: a new, empty in-process store (each call makes a
    ///   distinct store whatever the name; share one by cloning the returned handle);
    /// * `s3://<bucket>[/<prefix>]`: that bucket, rooted at the prefix, with the connection
    ///   settings of [`S3Settings::from_env`] (endpoint, region, path style, credentials);
    ///
    /// anything else is [`StorageError::UnsupportedUrl`] naming the URL and these forms. The
    /// grammar is the contract's ([`cairn_contract::StoreUrl::parse`]), the one the spec's
    /// validation and the CRD use: everything after `file://` is a path (no host part, no
    /// percent-decoding). A
    /// `file://` directory is created if missing: this is the opening of a job that writes;
    /// commands that only read use [`Self::open_existing`].
    pub fn from_url(url: &str, base_dir: &Path) -> Result<Self, StorageError> {
        Self::open_url(url, base_dir, OpenMode::Create, &StoreEnv::from_process())
    }

    /// Opens a store like [`Self::from_url`], with the connection settings of `env` rather
    /// than this process's environment (tests and tools).
    pub fn from_url_with_env(
        url: &str,
        base_dir: &Path,
        env: &StoreEnv,
    ) -> Result<Self, StorageError> {
        Self::open_url(url, base_dir, OpenMode::Create, env)
    }

    /// Opens the store a URL names for reading, like [`Self::from_url`] but creating nothing: a
    /// `file://` directory that does not exist is [`StorageError::NoSuchStore`] naming the path
    /// (a mistyped `cairn-worker state dump --store file:///typo/…` must fail, not create
    /// `/typo/…`). Object stores are opened as usual (opening one creates nothing).
    pub fn open_existing(url: &str, base_dir: &Path) -> Result<Self, StorageError> {
        Self::open_url(
            url,
            base_dir,
            OpenMode::MustExist,
            &StoreEnv::from_process(),
        )
    }

    /// Opens the store a URL names without creating or checking anything: a `file://`
    /// directory that does not exist reads as empty (every read is
    /// [`StorageError::NotFound`]). For readers that may not need to read at all, such as a
    /// job whose spec names a savepoint it has already moved past.
    pub fn open_unchecked(url: &str, base_dir: &Path) -> Result<Self, StorageError> {
        Self::open_url(url, base_dir, OpenMode::AsIs, &StoreEnv::from_process())
    }

    fn open_url(
        url: &str,
        base_dir: &Path,
        mode: OpenMode,
        env: &StoreEnv,
    ) -> Result<Self, StorageError> {
        let backend = match parse_url(url)? {
            StoreUrl::File(path) => {
                let root = base_dir.join(path);
                let root = std::path::absolute(&root)
                    .map_err(|source| StorageError::io_path(&root, source))?;
                let dir = match mode {
                    OpenMode::Create => LocalDir::open(root)?,
                    OpenMode::MustExist => LocalDir::open_existing(root, url)?,
                    OpenMode::AsIs => LocalDir::unchecked(root),
                };
                Backend::Local(Arc::new(dir))
            }
            StoreUrl::Memory(_) => Backend::Object(ObjectBackend::new(Arc::new(
                object_store::memory::InMemory::new(),
            ))),
            StoreUrl::Object {
                service,
                bucket,
                prefix,
            } => {
                let backend = match service {
                    ObjectService::S3 => {
                        let settings = S3Settings::from_lookup(|name| env.get(name))?;
                        return Self::s3(url, &settings);
                    }
                    ObjectService::Gcs => ObjectBackend::new(gcs::build(&bucket, &prefix, env)?),
                    ObjectService::Azure { account, .. } => {
                        ObjectBackend::new(azure::build(&bucket, account.as_deref(), &prefix, env)?)
                    }
                    ObjectService::Hdfs => ObjectBackend::with_attempts(
                        hdfs::build(&bucket, &prefix, env)?,
                        object::HDFS_ATTEMPTS,
                    ),
                };
                return Ok(Self::with_backend(
                    url.trim_end_matches('/').to_owned(),
                    Backend::Object(backend),
                ));
            }
        };
        Ok(Self::with_backend(url.to_owned(), backend))
    }

    /// Opens `s3://<bucket>[/<prefix>]` with explicit settings (tests and tools inject them;
    /// [`Self::from_url`] reads them from the environment).
    pub fn s3(url: &str, settings: &S3Settings) -> Result<Self, StorageError> {
        let StoreUrl::Object {
            service: ObjectService::S3,
            bucket,
            prefix,
        } = parse_url(url)?
        else {
            return Err(StorageError::UnsupportedUrl {
                url: url.to_owned(),
            });
        };
        let store = s3::build(&bucket, &prefix, settings)?;
        Ok(Self::with_object_store(url.trim_end_matches('/'), store))
    }

    /// A new, empty in-process store (`memory://`), for tests.
    pub fn in_memory() -> Self {
        Self::with_object_store("memory://", Arc::new(object_store::memory::InMemory::new()))
    }

    /// A store over an already-built object store (injected rather than looked up, so tests can
    /// hand in their own `InMemory` or a wrapper that injects faults). `url` is only reported
    /// by [`url`](Self::url).
    pub fn with_object_store(url: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        Self::with_backend(url.into(), Backend::Object(ObjectBackend::new(store)))
    }

    fn with_backend(url: String, backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner { url, backend }),
        }
    }

    /// The URL the store was opened with, for logs and status.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Records the generation of the process writing through this handle and its clones (see
    /// `checkpoint::generation`). `file://` stores put it in the names of their temp files, so
    /// that [`Self::purge_abandoned_uploads`] of an older, fenced process never removes the
    /// in-progress uploads of a newer one. Object stores have no temp objects.
    pub fn set_writer_generation(&self, generation: u64) {
        if let Backend::Local(dir) = &self.inner.backend {
            dir.set_writer_generation(generation);
        }
    }

    /// Local root directory when the store is `file://`, for tools and tests.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Local(dir) => Some(dir.root()),
            Backend::Object(_) => None,
        }
    }

    /// Copies local files into the store under the given keys, durably; returns the meta of each
    /// file in input order.
    ///
    /// When the call returns `Ok`, every file is published under its key and survives a crash.
    /// A key that already holds identical content is accepted silently (an idempotent retry);
    /// one holding different content is [`StorageError::Conflict`], because published files are
    /// immutable: committed manifests record their meta. On error some files of the batch may
    /// be published and others not; nothing half-written is ever visible under a key.
    pub async fn upload_files(
        &self,
        files: &[(PathBuf, String)],
    ) -> Result<Vec<FileMeta>, StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, files) = (Arc::clone(dir), files.to_vec());
                blocking(move || dir.upload_files(&files)).await
            }
            Backend::Object(store) => store.upload_files(files).await,
        }
    }

    /// Copies a stored file to a local path (parent directories created), verifying its size and
    /// CRC32C against `expected` (the manifest's record).
    ///
    /// A mismatch is [`StorageError::Corrupt`] and a missing object [`StorageError::NotFound`],
    /// both naming the key. The content is staged in a temp file beside `local` and renamed into
    /// place only once verified, so a failed download leaves nothing new at `local`. The file is
    /// not fsynced: restored state needs no durability of its own (after a crash it is rebuilt
    /// from the store again).
    pub async fn download_file(
        &self,
        key: &str,
        local: &Path,
        expected: FileMeta,
    ) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key, local) = (Arc::clone(dir), key.to_owned(), local.to_owned());
                blocking(move || dir.download_file(&key, &local, expected)).await
            }
            Backend::Object(store) => store.download_file(key, local, expected).await,
        }
    }

    /// Stores `data` under `key`, atomically replacing any previous content, durably.
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.put_bytes(&key, &data, local::PutMode::Overwrite)).await
            }
            Backend::Object(store) => store.put_bytes(key, data).await,
        }
    }

    /// Stores `data` under `key` only if the key does not exist yet, atomically and durably;
    /// otherwise [`StorageError::AlreadyExists`] and the existing content is kept. Of several
    /// concurrent writers of one key exactly one succeeds, which fences off stale writers.
    pub async fn put_bytes_create_only(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.put_bytes(&key, &data, local::PutMode::CreateOnly)).await
            }
            Backend::Object(store) => store.put_bytes_create_only(key, data).await,
        }
    }

    /// The whole content stored under `key`; [`StorageError::NotFound`] if there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.get_bytes(&key)).await
            }
            Backend::Object(store) => store.get_bytes(key).await,
        }
    }

    /// Whether a file is stored under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.exists(&key)).await
            }
            Backend::Object(store) => store.exists(key).await,
        }
    }

    /// All stored files whose key starts with `prefix`, recursively, sorted by key.
    ///
    /// `prefix` is a plain string prefix, as in S3: `"tasks/t1"` also matches `"tasks/t10/x"`;
    /// end it with `/` to list one directory. `""` lists the whole store. In-progress temp files
    /// of writers are never listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, prefix) = (Arc::clone(dir), prefix.to_owned());
                blocking(move || dir.list(&prefix)).await
            }
            Backend::Object(store) => store.list(prefix).await,
        }
    }

    /// Copies stored files to new keys inside the same store (`(from, to)` pairs), durably.
    /// Used to make savepoints self-contained. On `file://` a copy is a hard link (stored files
    /// are immutable), on object stores a server-side copy.
    pub async fn copy_within(&self, pairs: &[(String, String)]) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, pairs) = (Arc::clone(dir), pairs.to_vec());
                blocking(move || dir.copy_within(&pairs)).await
            }
            Backend::Object(store) => store.copy_within(pairs).await,
        }
    }

    /// Like [`Self::download_file`], for files that are never modified in place (SSTs): on a
    /// `file://` store on the same filesystem the local file is a hard link to the stored one
    /// (still verified against `expected`), which saves writing a copy; elsewhere a download.
    pub async fn link_or_download(
        &self,
        key: &str,
        local: &Path,
        expected: FileMeta,
    ) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key, local) = (Arc::clone(dir), key.to_owned(), local.to_path_buf());
                blocking(move || dir.link_or_download(&key, &local, expected)).await
            }
            Backend::Object(_) => self.download_file(key, local, expected).await,
        }
    }

    /// Removes what writers of generation `up_to` or older that died mid-upload left behind
    /// under `prefix` (temp files of a `file://` store, including those that record no
    /// generation); returns how many. Temps of newer generations are never removed. Only safe
    /// while no upload of generation `up_to` or older under `prefix` is in progress — the
    /// coordinator calls it after a commit, when every task is idle. Object stores never expose
    /// partial objects; their incomplete multipart uploads are cleaned by the bucket's
    /// lifecycle rule (see docs/checkpoints.md).
    pub async fn purge_abandoned_uploads(
        &self,
        prefix: &str,
        up_to: u64,
    ) -> Result<u64, StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, prefix) = (Arc::clone(dir), prefix.to_owned());
                blocking(move || dir.purge_temps(&prefix, up_to)).await
            }
            Backend::Object(_) => Ok(0),
        }
    }

    /// Reads the file stored under `key` back and checks its size and CRC32C against
    /// `expected`, without writing anything: [`StorageError::Corrupt`] on a mismatch,
    /// [`StorageError::NotFound`] if it is missing. Costs one full read of the stored file.
    pub async fn verify(&self, key: &str, expected: FileMeta) -> Result<(), StorageError> {
        let actual = match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.stored_meta(&key)).await?
            }
            Backend::Object(store) => store.stored_meta_of(key).await?,
        };
        if actual == expected {
            Ok(())
        } else {
            Err(StorageError::Corrupt {
                key: key.to_owned(),
                expected,
                actual,
            })
        }
    }

    /// Deletes the file stored under `key`; a missing key is `Ok` (deletes are idempotent, so
    /// garbage collection can be retried). On `file://` the directories the delete left empty
    /// are removed too (below the top-level directories, never the root or above).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Local(dir) => {
                let (dir, key) = (Arc::clone(dir), key.to_owned());
                blocking(move || dir.delete(&key)).await
            }
            Backend::Object(store) => store.delete(key).await,
        }
    }

    /// Removes the directory `dir` (a key path such as `checkpoints` or `epoch-1`) of a
    /// `file://` store if it is empty; returns whether it did. A directory with entries, a
    /// symbolic link, a file or nothing at that path is left as it is. Object stores have no
    /// directories: `false`. For `cairn-worker store purge`, whose deletes leave the top-level
    /// directories of a job's layout behind (see [`Self::delete`]).
    pub async fn remove_dir_if_empty(&self, dir: &str) -> Result<bool, StorageError> {
        validate_key(dir)?;
        let Backend::Local(local) = &self.inner.backend else {
            return Ok(false);
        };
        let path = local.root().join(dir);
        blocking(move || {
            // `remove_dir` removes only an empty directory, and never follows a link.
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => Ok(std::fs::remove_dir(&path).is_ok()),
                _ => Ok(false),
            }
        })
        .await
    }
}

/// Size of the read buffer of [`file_crc32c`].
const CRC_BUFFER: usize = 1 << 20;

/// CRC32C and size of a local file, streamed through a 1 MiB buffer. Used by the uploader and by
/// restore to decide whether a local copy can be reused.
pub fn file_crc32c(path: &Path) -> io::Result<FileMeta> {
    let mut file = File::open(path)?;
    reader_crc32c(&mut file)
}

/// CRC32C and length of everything `reader` yields.
fn reader_crc32c(reader: &mut impl Read) -> io::Result<FileMeta> {
    let mut buf = vec![0u8; CRC_BUFFER];
    let mut meta = FileMeta { size: 0, crc32c: 0 };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(meta),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        meta.crc32c = crc32c::crc32c_append(meta.crc32c, &buf[..n]);
        meta.size += n as u64;
    }
}

/// CRC32C (Castagnoli) of a byte slice, as recorded in [`FileMeta`].
pub fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Runs blocking filesystem work on tokio's blocking pool. A panic in it is resumed here.
async fn blocking<T, F>(work: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StorageError::Io {
            key_or_path: "checkpoint store".to_owned(),
            source: io::Error::other(format!("blocking filesystem task was cancelled: {e}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_helpers_agree_with_known_values() {
        // RFC 3720 (iSCSI) test vector for CRC32C.
        assert_eq!(crc32c_of(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_of(b""), 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Larger than the buffer, not a multiple of it, so the streaming loop is exercised.
        let data: Vec<u8> = (0..(CRC_BUFFER * 2 + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let meta = file_crc32c(&path).unwrap();
        assert_eq!(
            meta,
            FileMeta {
                size: data.len() as u64,
                crc32c: crc32c_of(&data)
            }
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(file_crc32c(&path).unwrap(), FileMeta { size: 0, crc32c: 0 });
        assert_eq!(
            file_crc32c(&dir.path().join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn file_meta_is_serialised_as_size_and_crc() {
        let meta = FileMeta {
            size: 7,
            crc32c: 0xdead_beef,
        };
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(json, r#"{"size":7,"crc32c":3735928559}"#);
        assert_eq!(serde_json::from_str::<FileMeta>(&json).unwrap(), meta);
        assert_eq!(meta.to_string(), "7 bytes with CRC32C deadbeef");
    }

    #[test]
    fn urls_resolve_against_the_base_dir() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let abs = b.join("abs");
        let cases: Vec<(String, PathBuf)> = vec![
            ("file://./a/ckpt".into(), b.join("a/ckpt")),
            ("file://b".into(), b.join("b")),
            ("file:c/d".into(), b.join("c/d")),
            (format!("file://{}", abs.display()), abs.clone()),
        ];
        for (url, dir) in &cases {
            let store = CheckpointStore::from_url(url, b).unwrap();
            assert_eq!(store.local_root(), Some(dir.as_path()), "{url}");
            assert!(
                !store
                    .local_root()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .contains("/./"),
                "{url}"
            );
            assert!(dir.is_dir(), "{url}");
            assert_eq!(store.url(), url);
        }
        let mem = CheckpointStore::from_url("memory://t1", b).unwrap();
        assert_eq!(mem.local_root(), None);
        assert_eq!(mem.url(), "memory://t1");
        for bad in [
            "s3:///x",
            "file://",
            "file:",
            "memory:x",
            "./ckpt",
            "hdfs://nn/",
            "gs:b",
            "webhdfs://nn/x",
        ] {
            let err = CheckpointStore::from_url(bad, b).unwrap_err();
            assert!(
                matches!(err, StorageError::UnsupportedUrl { .. }),
                "{bad}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("file:///"), "{msg}");
        }
    }
}

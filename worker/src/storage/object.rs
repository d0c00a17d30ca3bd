//! The object store backend: any [`ObjectStore`] (S3, GCS, Azure Blob, HDFS, and `InMemory` for
//! `memory://`).
//!
//! Object stores make every put atomic, so there are no temp objects: uploads go straight to the
//! final key, small files in one `put`, large ones as a multipart upload that becomes visible
//! only when completed. Create-only writes use [`PutMode::Create`]. Each request is retried
//! a few times with exponential backoff when the store reports a transient failure; missing,
//! existing, conflicting and corrupt objects are answers, not failures, and are never retried.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use super::key::{prefix_dir, temp_name, validate_key, validate_prefix};
use super::local::parent_dir;
use super::{blocking, crc32c_of, file_crc32c, FileMeta, ObjectInfo, StorageError};

/// Files at least this large are uploaded as multipart uploads, smaller ones in a single put.
const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Part size of multipart uploads (S3 needs at least 5 MiB per part but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 4;
/// Files of one batch uploaded concurrently.
const FILES_IN_FLIGHT: usize = 4;
/// Downloaded bytes buffered before one blocking write to the local file.
const WRITE_BATCH: usize = 4 << 20;
/// Attempts of a request whose failures are transient (HDFS: [`HDFS_ATTEMPTS`]).
const ATTEMPTS: u32 = 3;
/// Attempts of an HDFS request: 100 ms to 1.6 s apart, 3.1 s in all. `hdfs-native` does not
/// leave a DataNode that refuses the connection out of its next block request (the Java client
/// does), so while the NameNode still counts a dead DataNode as live, each new file has a fair
/// chance of being placed on it again; and a NameNode restart takes seconds.
pub(crate) const HDFS_ATTEMPTS: u32 = 6;
/// Wait after the first failed attempt; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The retries of `object_store`'s HTTP clients (S3, GCS, Azure), before Cairn's own
/// [`ATTEMPTS`]: 5 with exponential backoff from 100 ms to 3 s, 30 s in all.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    }
}

/// Timeouts of those clients: 5 s to connect, 120 s per request (a 16 MiB part on a slow link).
pub(crate) fn client_options() -> ClientOptions {
    client_timeouts()
        .into_iter()
        .fold(ClientOptions::new(), |options, (key, value)| {
            options.with_config(key, value)
        })
}

/// [`client_options`] as configuration keys, for builders that take other client options
/// (allowing plain HTTP to an emulator, say) from the environment.
pub(crate) fn client_timeouts() -> [(ClientConfigKey, &'static str); 2] {
    [
        (ClientConfigKey::ConnectTimeout, "5s"),
        (ClientConfigKey::Timeout, "120s"),
    ]
}

/// A checkpoint store over an injected [`ObjectStore`].
#[derive(Debug, Clone)]
pub(crate) struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    /// Attempts of a request whose failures are transient.
    attempts: u32,
}

impl ObjectBackend {
    /// A backend whose requests are tried up to `attempts` times while they fail transiently
    /// (at least once).
    pub(crate) fn with_attempts(store: Arc<dyn ObjectStore>, attempts: u32) -> Self {
        ObjectBackend {
            store,
            attempts: attempts.max(1),
        }
    }

    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self::with_attempts(store, ATTEMPTS)
    }

    /// See [`super::CheckpointStore::upload_files`]: a few files at a time, results in order.
    pub(crate) async fn upload_files(
        &self,
        files: &[(PathBuf, String)],
    ) -> Result<Vec<FileMeta>, StorageError> {
        for (_, key) in files {
            validate_key(key)?;
        }
        // Let every started upload finish (rather than dropping in-flight multipart uploads at
        // the first error), then report the first error in input order.
        // The futures are built before the stream rather than by a `map` closure over
        // `&(PathBuf, String)`: a closure with a higher-ranked argument kept in the future's
        // state makes it unprovable as `Send` ("FnOnce is not general enough") for callers
        // that `tokio::spawn` an upload.
        let uploads: Vec<_> = files
            .iter()
            .map(|(src, key)| retry(self.attempts, move |_| self.upload_one(src, key)))
            .collect();
        let results: Vec<Result<FileMeta, StorageError>> = futures::stream::iter(uploads)
            .buffered(FILES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Uploads one file unless the key already holds identical content.
    async fn upload_one(&self, src: &Path, key: &str) -> Result<FileMeta, StorageError> {
        let location = object_path(key)?;
        let size = tokio::fs::metadata(src)
            .await
            .map_err(|e| StorageError::io_path(src, e))?
            .len();
        if size < MULTIPART_THRESHOLD {
            let data = Bytes::from(
                tokio::fs::read(src)
                    .await
                    .map_err(|e| StorageError::io_path(src, e))?,
            );
            let meta = FileMeta {
                size: data.len() as u64,
                crc32c: crc32c_of(&data),
            };
            let options = PutOptions::from(PutMode::Create);
            return match self
                .store
                .put_opts(&location, PutPayload::from(data), options)
                .await
            {
                Ok(_) => Ok(meta),
                Err(object_store::Error::AlreadyExists { .. }) => self
                    .check_identical(key, &location, meta)
                    .await
                    .map(|()| meta),
                Err(e) => Err(StorageError::object(key, e)),
            };
        }
        // Multipart uploads cannot be create-only, so look first; a retried upload of a large
        // file also saves re-sending it this way.
        match self.store.head(&location).await {
            Ok(_) => {
                let src = src.to_owned();
                let meta =
                    blocking(move || file_crc32c(&src).map_err(|e| StorageError::io_path(&src, e)))
                        .await?;
                return self
                    .check_identical(key, &location, meta)
                    .await
                    .map(|()| meta);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StorageError::object(key, e)),
        }
        self.upload_multipart(src, key, &location).await
    }

    /// Streams a large file as a multipart upload, [`PARTS_IN_FLIGHT`] parts at a time,
    /// computing its CRC32C on the way.
    async fn upload_multipart(
        &self,
        src: &Path,
        key: &str,
        location: &ObjectPath,
    ) -> Result<FileMeta, StorageError> {
        let file = std::fs::File::open(src).map_err(|e| StorageError::io_path(src, e))?;
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(|e| StorageError::object(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut reader = Some(file);
        let mut meta = FileMeta { size: 0, crc32c: 0 };
        let streamed: Result<(), StorageError> = async {
            loop {
                let (file, chunk) = read_chunk(reader.take().expect("reader"), src).await?;
                reader = Some(file);
                if chunk.is_empty() {
                    return Ok(());
                }
                meta.crc32c = crc32c::crc32c_append(meta.crc32c, &chunk);
                meta.size += chunk.len() as u64;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| StorageError::object(key, e))?;
                writer.put(chunk);
            }
        }
        .await;
        match streamed {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| StorageError::object(key, e))?;
                Ok(meta)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort multipart upload");
                }
                Err(e)
            }
        }
    }

    /// Accepts an existing object at `key` if it has exactly `meta`, else reports a conflict.
    async fn check_identical(
        &self,
        key: &str,
        location: &ObjectPath,
        meta: FileMeta,
    ) -> Result<(), StorageError> {
        let existing = self.stored_meta(key, location).await?;
        StorageError::same_or_conflict(key, existing, meta)
    }

    /// Size and CRC32C of a stored object, streamed.
    async fn stored_meta(
        &self,
        key: &str,
        location: &ObjectPath,
    ) -> Result<FileMeta, StorageError> {
        let result = self
            .store
            .get(location)
            .await
            .map_err(|e| StorageError::object(key, e))?;
        result
            .into_stream()
            .map_err(|e| StorageError::object(key, e))
            .try_fold(
                FileMeta { size: 0, crc32c: 0 },
                |mut meta, chunk| async move {
                    meta.crc32c = crc32c::crc32c_append(meta.crc32c, &chunk);
                    meta.size += chunk.len() as u64;
                    Ok(meta)
                },
            )
            .await
    }

    /// Size and CRC32C of the object stored under `key`, streamed (see
    /// [`super::CheckpointStore::verify`]).
    pub(crate) async fn stored_meta_of(&self, key: &str) -> Result<FileMeta, StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |_| self.stored_meta(key, &location)).await
    }

    /// See [`super::CheckpointStore::download_file`].
    pub(crate) async fn download_file(
        &self,
        key: &str,
        local: &Path,
        expected: FileMeta,
    ) -> Result<(), StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            StorageError::io_path(
                local,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "download target has no file name",
                ),
            )
        })?;
        let dir = parent_dir(local).to_path_buf();
        let name = name.to_owned();
        retry(self.attempts, |_| {
            self.download_once(key, &location, local, &dir, &name, expected)
        })
        .await
    }

    /// One download attempt: stream into a fresh temp file, verify, rename into place.
    async fn download_once(
        &self,
        key: &str,
        location: &ObjectPath,
        local: &Path,
        dir: &Path,
        name: &str,
        expected: FileMeta,
    ) -> Result<(), StorageError> {
        let result = self
            .store
            .get(location)
            .await
            .map_err(|e| StorageError::object(key, e))?;
        let temp = dir.join(temp_name(name, 0));
        let file = {
            let (dir, temp) = (dir.to_owned(), temp.clone());
            blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| StorageError::io_path(&dir, e))?;
                std::fs::File::create_new(&temp).map_err(|e| StorageError::io_path(&temp, e))
            })
            .await?
        };
        let guard = TempGuard(Some(temp.clone()));
        let mut file = Some(file);
        let mut actual = FileMeta { size: 0, crc32c: 0 };
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0;
        let mut stream = result.into_stream();
        loop {
            let chunk = stream
                .try_next()
                .await
                .map_err(|e| StorageError::object(key, e))?;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                actual.crc32c = crc32c::crc32c_append(actual.crc32c, &chunk);
                actual.size += chunk.len() as u64;
                pending_len += chunk.len();
                pending.push(chunk);
            }
            if pending_len >= WRITE_BATCH || (done && !pending.is_empty()) {
                let batch = std::mem::take(&mut pending);
                pending_len = 0;
                file = Some(write_all(file.take().expect("file"), batch, &temp).await?);
            }
            if done {
                break;
            }
        }
        drop(file);
        if actual != expected {
            return Err(StorageError::Corrupt {
                key: key.to_owned(),
                expected,
                actual,
            });
        }
        let local = local.to_owned();
        blocking(move || {
            std::fs::rename(&temp, &local).map_err(|e| StorageError::io_path(&local, e))
        })
        .await?;
        guard.disarm();
        Ok(())
    }

    /// See [`super::CheckpointStore::put_bytes`].
    pub(crate) async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |_| async {
            self.store
                .put(&location, PutPayload::from(data.clone()))
                .await
                .map(|_| ())
                .map_err(|e| StorageError::object(key, e))
        })
        .await
    }

    /// See [`super::CheckpointStore::put_bytes_create_only`]. If an attempt after a transient
    /// failure finds the key existing with exactly `data`, the failed attempt did land: success.
    pub(crate) async fn put_bytes_create_only(
        &self,
        key: &str,
        data: Bytes,
    ) -> Result<(), StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |attempt| {
            let (location, data) = (&location, data.clone());
            async move {
                let options = PutOptions::from(PutMode::Create);
                match self
                    .store
                    .put_opts(location, PutPayload::from(data.clone()), options)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(object_store::Error::AlreadyExists { .. }) if attempt > 1 => {
                        let stored = self.get_once(key, location).await?;
                        if stored == data {
                            Ok(())
                        } else {
                            Err(StorageError::AlreadyExists {
                                key: key.to_owned(),
                            })
                        }
                    }
                    Err(e) => Err(StorageError::object(key, e)),
                }
            }
        })
        .await
    }

    /// See [`super::CheckpointStore::get_bytes`].
    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |_| self.get_once(key, &location)).await
    }

    async fn get_once(&self, key: &str, location: &ObjectPath) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(location)
            .await
            .map_err(|e| StorageError::object(key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| StorageError::object(key, e))
    }

    /// See [`super::CheckpointStore::exists`].
    pub(crate) async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |_| async {
            match self.store.head(&location).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(StorageError::object(key, e)),
            }
        })
        .await
    }

    /// See [`super::CheckpointStore::list`]: list the prefix's directory, filter by the full
    /// string prefix, drop temp names and keys this module could not have written, sort.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        validate_prefix(prefix)?;
        let dir = prefix_dir(prefix).trim_end_matches('/');
        let dir = if dir.is_empty() {
            None
        } else {
            Some(object_path(dir)?)
        };
        let mut found: Vec<ObjectInfo> = retry(self.attempts, |_| async {
            self.store
                .list(dir.as_ref())
                .map_err(|e| StorageError::object(prefix, e))
                .try_filter_map(|meta| async move {
                    let key: &str = meta.location.as_ref();
                    // Like the local walk: no temp names (in any segment), no foreign keys.
                    let keep = key.starts_with(prefix) && validate_key(key).is_ok();
                    Ok(keep.then(|| ObjectInfo {
                        key: key.to_owned(),
                        size: meta.size,
                    }))
                })
                .try_collect()
                .await
        })
        .await?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// See [`super::CheckpointStore::copy_within`]: server-side copies.
    pub(crate) async fn copy_within(&self, pairs: &[(String, String)]) -> Result<(), StorageError> {
        for (from, to) in pairs {
            validate_key(from)?;
            validate_key(to)?;
            let (src, dst) = (object_path(from)?, object_path(to)?);
            retry(self.attempts, |_| async {
                self.store.copy(&src, &dst).await.map_err(|e| match e {
                    object_store::Error::NotFound { .. } => {
                        StorageError::NotFound { key: from.clone() }
                    }
                    e => StorageError::object(to, e),
                })
            })
            .await?;
        }
        Ok(())
    }

    /// See [`super::CheckpointStore::delete`].
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        let location = object_path(key)?;
        retry(self.attempts, |_| async {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StorageError::object(key, e)),
            }
        })
        .await
    }
}

/// The object path of a validated key.
fn object_path(key: &str) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(key).map_err(|e| StorageError::InvalidKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Runs `attempt` up to `attempts` times while it fails transiently, sleeping
/// [`FIRST_BACKOFF`], then twice that before each further attempt. The closure gets the attempt number
/// (from 1), so an operation can tell a first try from a retry.
async fn retry<T, F, Fut>(attempts: u32, mut attempt: F) -> Result<T, StorageError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut number = 1;
    loop {
        match attempt(number).await {
            Err(e) if e.is_transient() && number < attempts => {
                let wait = FIRST_BACKOFF * 2u32.pow(number - 1);
                tracing::warn!(error = %e, attempt = number, ?wait, "checkpoint store request failed; retrying");
                tokio::time::sleep(wait).await;
                number += 1;
            }
            result => return result,
        }
    }
}

/// Reads up to [`PART_SIZE`] bytes (fewer only at end of file) on the blocking pool.
async fn read_chunk(
    mut file: std::fs::File,
    src: &Path,
) -> Result<(std::fs::File, Bytes), StorageError> {
    let src = src.to_owned();
    blocking(move || {
        use std::io::Read;
        let mut buf = vec![0u8; PART_SIZE];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io_path(&src, e)),
            }
        }
        buf.truncate(filled);
        Ok((file, Bytes::from(buf)))
    })
    .await
}

/// Appends `batch` to `file` on the blocking pool.
async fn write_all(
    mut file: std::fs::File,
    batch: Vec<Bytes>,
    path: &Path,
) -> Result<std::fs::File, StorageError> {
    let path = path.to_owned();
    blocking(move || {
        use std::io::Write;
        for chunk in &batch {
            file.write_all(chunk)
                .map_err(|e| StorageError::io_path(&path, e))?;
        }
        Ok(file)
    })
    .await
}

/// Removes a download's temp file on drop unless disarmed (error, or the future was dropped).
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn transient() -> StorageError {
        StorageError::ObjectStore {
            key: "k".to_owned(),
            source: object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            },
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_with_backoff() {
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let result = retry(ATTEMPTS, |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(transient())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Backoff: FIRST_BACKOFF after the first failure, twice that after the second.
        assert!(
            started.elapsed() >= FIRST_BACKOFF * 3,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn gives_up_after_three_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(ATTEMPTS, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(transient()) }
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn answers_are_not_retried() {
        for error in [
            StorageError::NotFound { key: "k".into() },
            StorageError::AlreadyExists { key: "k".into() },
            StorageError::Corrupt {
                key: "k".into(),
                expected: FileMeta { size: 1, crc32c: 1 },
                actual: FileMeta { size: 1, crc32c: 2 },
            },
        ] {
            let calls = AtomicU32::new(0);
            let mut error = Some(error);
            let result: Result<(), _> = retry(ATTEMPTS, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = error.take().expect("called once");
                async move { Err(e) }
            })
            .await;
            assert!(result.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn large_files_go_multipart_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big");
        let data: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize + PART_SIZE + 17))
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let backend = ObjectBackend::new(Arc::new(object_store::memory::InMemory::new()));
        let files = vec![(src.clone(), "t/big".to_owned())];
        let metas = backend.upload_files(&files).await.unwrap();
        let expected = FileMeta {
            size: data.len() as u64,
            crc32c: crc32c_of(&data),
        };
        assert_eq!(metas, [expected]);
        // Idempotent retry of a large file: the head check finds identical content.
        assert_eq!(backend.upload_files(&files).await.unwrap(), [expected]);
        let out = dir.path().join("out/big");
        backend
            .download_file("t/big", &out, expected)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        // Different content under the same key is refused.
        std::fs::write(&src, &data[1..]).unwrap();
        let err = backend.upload_files(&files).await.unwrap_err();
        assert!(matches!(err, StorageError::Conflict { .. }), "{err:?}");
    }
}

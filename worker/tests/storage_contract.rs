//! Contract of `cairn_worker::storage::CheckpointStore`: one suite, run against every backend
//! (a `file://` directory, `memory://`, and `s3://` on a real MinIO server), so that the
//! checkpoint and restore code can rely on the same behaviour whatever the store URL says.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_worker::storage::{
    crc32c_of, file_crc32c, CheckpointStore, FileMeta, ObjectInfo, StorageError,
};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Raw access to a backend's medium, to plant files the API itself never writes (a writer's
/// in-progress temp file).
enum Raw {
    Dir(PathBuf),
    Object(Arc<dyn ObjectStore>),
}

impl Raw {
    async fn plant(&self, key: &str, data: &[u8]) {
        match self {
            Raw::Dir(root) => {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, data).unwrap();
            }
            Raw::Object(store) => {
                let location = object_store::path::Path::parse(key).unwrap();
                store
                    .put(&location, PutPayload::from(data.to_vec()))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Deterministic test content of `len` bytes, different for each `seed`.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed as usize * 13) % 251) as u8)
        .collect()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Names of all entries directly in `dir` (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn keys(infos: &[ObjectInfo]) -> Vec<&str> {
    infos.iter().map(|o| o.key.as_str()).collect()
}

/// The whole contract, against one store. `scratch` is a private local directory.
async fn contract_suite(store: CheckpointStore, raw: Raw, scratch: &Path) {
    upload_download_round_trip(&store, scratch).await;
    corrupt_download_is_refused_and_leaves_nothing(&store, scratch).await;
    missing_objects_are_not_found(&store, scratch).await;
    put_bytes_overwrites(&store).await;
    create_only_keeps_the_first_content(&store).await;
    concurrent_create_only_has_one_winner(&store).await;
    list_is_sorted_prefixed_and_skips_temps(&store, &raw).await;
    delete_is_idempotent(&store).await;
    bad_keys_are_rejected(&store).await;
    copies_are_independent_of_their_source(&store, scratch).await;
}

/// `copy_within` (savepoints): the copy survives deletion of the source, repeats are harmless,
/// a missing source is NotFound.
async fn copies_are_independent_of_their_source(store: &CheckpointStore, scratch: &Path) {
    let data = content(300_000, 9);
    let src = write_file(scratch, "copy-src", &data);
    let meta = store
        .upload_files(&[(src, "cp/a/1.sst".into())])
        .await
        .unwrap()[0];
    let pairs = vec![("cp/a/1.sst".to_owned(), "sp/x/task-0000/1.sst".to_owned())];
    store.copy_within(&pairs).await.unwrap();
    store.copy_within(&pairs).await.unwrap();
    store.delete("cp/a/1.sst").await.unwrap();
    let back = scratch.join("copy-back");
    store
        .download_file("sp/x/task-0000/1.sst", &back, meta)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let err = store
        .copy_within(&[("cp/none".into(), "sp/y".into())])
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

async fn upload_download_round_trip(store: &CheckpointStore, scratch: &Path) {
    let src = scratch.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let datas = [
        content(0, 1),
        content(100, 2),
        content(3 << 20, 3),
        content(17_000, 4),
    ];
    let files: Vec<(PathBuf, String)> = vec![
        (
            write_file(&src, "empty", &datas[0]),
            "rt/db-1/sst/000001.sst".to_owned(),
        ),
        (
            write_file(&src, "small", &datas[1]),
            "rt/db-1/MANIFEST-000005".to_owned(),
        ),
        (
            write_file(&src, "big", &datas[2]),
            "rt/db-1/sst/000123.sst".to_owned(),
        ),
        (
            write_file(&src, "other", &datas[3]),
            "rt/other/deep/er/x.sst".to_owned(),
        ),
    ];
    let metas = store.upload_files(&files).await.unwrap();
    assert_eq!(metas.len(), files.len());
    for ((path, key), (meta, data)) in files.iter().zip(metas.iter().zip(&datas)) {
        assert_eq!(
            *meta,
            FileMeta {
                size: data.len() as u64,
                crc32c: crc32c_of(data)
            },
            "{key}"
        );
        assert_eq!(*meta, file_crc32c(path).unwrap(), "{key}");
        assert!(store.exists(key).await.unwrap(), "{key}");
        let out = scratch.join("restore").join(key);
        store.download_file(key, &out, *meta).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), *data, "{key}");
        assert_eq!(
            store.get_bytes(key).await.unwrap(),
            Bytes::from(data.clone()),
            "{key}"
        );
    }
    // Downloading over an existing local file replaces it.
    let out = scratch.join("restore").join(&files[1].1);
    std::fs::write(&out, b"stale").unwrap();
    store
        .download_file(&files[1].1, &out, metas[1])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), datas[1]);

    // Uploading identical content again is an idempotent retry.
    assert_eq!(store.upload_files(&files).await.unwrap(), metas);
    // Different content under a published key is refused, and the stored file is kept.
    let changed = write_file(&src, "changed", b"not the same");
    let err = store
        .upload_files(&[(changed, files[1].1.clone())])
        .await
        .unwrap_err();
    match &err {
        StorageError::Conflict { key, existing, .. } => {
            assert_eq!(key, &files[1].1);
            assert_eq!(*existing, metas[1]);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_bytes(&files[1].1).await.unwrap(),
        Bytes::from(datas[1].clone())
    );
    // An empty batch is fine.
    assert!(store.upload_files(&[]).await.unwrap().is_empty());
    // A missing source names the source path.
    let err = store
        .upload_files(&[(src.join("absent"), "rt/absent".to_owned())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
    assert!(!store.exists("rt/absent").await.unwrap());
}

async fn corrupt_download_is_refused_and_leaves_nothing(store: &CheckpointStore, scratch: &Path) {
    let data = content(5000, 9);
    let src = write_file(scratch, "corrupt-src", &data);
    let key = "cr/db/000042.sst";
    let [meta] = store.upload_files(&[(src, key.to_owned())]).await.unwrap()[..] else {
        panic!("one meta");
    };
    let target_dir = scratch.join("cr-out");
    let target = target_dir.join("000042.sst");
    for wrong in [
        FileMeta {
            crc32c: meta.crc32c ^ 1,
            ..meta
        },
        FileMeta {
            size: meta.size + 1,
            ..meta
        },
    ] {
        let err = store.download_file(key, &target, wrong).await.unwrap_err();
        match &err {
            StorageError::Corrupt {
                key: k,
                expected,
                actual,
            } => {
                assert_eq!(k, key);
                assert_eq!(*expected, wrong);
                assert_eq!(*actual, meta);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains(&format!("{:08x}", wrong.crc32c)), "{msg}");
        assert!(msg.contains(&format!("{:08x}", meta.crc32c)), "{msg}");
        assert!(msg.contains("unusable"), "{msg}");
        assert!(!err.is_not_found());
        // Neither the target nor a partial temp file is left behind.
        assert!(!target.exists());
        assert_eq!(entries(&target_dir), Vec::<String>::new());
    }
}

async fn missing_objects_are_not_found(store: &CheckpointStore, scratch: &Path) {
    let target = scratch.join("missing-out/x.sst");
    let meta = FileMeta { size: 1, crc32c: 1 };
    let err = store
        .download_file("no/such/file.sst", &target, meta)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::NotFound { key } if key == "no/such/file.sst"),
        "{err:?}"
    );
    assert!(err.is_not_found());
    assert!(err.to_string().contains("no/such/file.sst"), "{err}");
    assert!(!target.exists());
    assert!(entries(target.parent().unwrap()).is_empty());

    let err = store.get_bytes("no/such/manifest.json").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!store.exists("no/such/manifest.json").await.unwrap());
    // A key below an existing file is missing too, not an I/O error.
    store
        .put_bytes("nf/file", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(!store.exists("nf/file/below").await.unwrap());
    assert!(store
        .get_bytes("nf/file/below")
        .await
        .unwrap_err()
        .is_not_found());
}

async fn put_bytes_overwrites(store: &CheckpointStore) {
    let key = "pb/manifests/latest.json";
    store
        .put_bytes(key, Bytes::from_static(b"v1"))
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(key).await.unwrap(),
        Bytes::from_static(b"v1")
    );
    store
        .put_bytes(key, Bytes::from_static(b"version 2, longer"))
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(key).await.unwrap(),
        Bytes::from_static(b"version 2, longer")
    );
    store.put_bytes(key, Bytes::new()).await.unwrap();
    assert_eq!(store.get_bytes(key).await.unwrap(), Bytes::new());
    assert_eq!(keys(&store.list("pb/").await.unwrap()), [key]);
}

async fn create_only_keeps_the_first_content(store: &CheckpointStore) {
    let key = "co/ckpt-000001.json";
    store
        .put_bytes_create_only(key, Bytes::from_static(b"first"))
        .await
        .unwrap();
    let err = store
        .put_bytes_create_only(key, Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::AlreadyExists { key: k } if k == key),
        "{err:?}"
    );
    assert!(err.to_string().contains(key), "{err}");
    assert_eq!(
        store.get_bytes(key).await.unwrap(),
        Bytes::from_static(b"first")
    );
    assert_eq!(keys(&store.list("co/").await.unwrap()), [key]);
}

async fn concurrent_create_only_has_one_winner(store: &CheckpointStore) {
    let key = "race/epoch-7.json";
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let data = Bytes::from(format!("writer {i}"));
                (data.clone(), store.put_bytes_create_only(key, data).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (data, result) = task.await.unwrap();
        match result {
            Ok(()) => winners.push(data),
            Err(StorageError::AlreadyExists { key: k }) => assert_eq!(k, key),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create-only writer must win");
    assert_eq!(store.get_bytes(key).await.unwrap(), winners[0]);
    assert_eq!(keys(&store.list("race/").await.unwrap()), [key]);
}

async fn list_is_sorted_prefixed_and_skips_temps(store: &CheckpointStore, raw: &Raw) {
    for (key, len) in [
        ("l/c", 3),
        ("l/a/2", 2),
        ("l/b", 1),
        ("l/a/10", 10),
        ("lx/z", 4),
        ("other/q", 5),
    ] {
        store
            .put_bytes(key, Bytes::from(vec![b'x'; len]))
            .await
            .unwrap();
    }
    // A writer's in-progress temp file, as a crashed writer would leave it.
    raw.plant("l/a/.000009.sst.tmp-1-00ff00ff00ff00ff", b"partial")
        .await;
    raw.plant("l/.d.tmp-1-0/inside", b"partial").await;

    let dir = store.list("l/").await.unwrap();
    assert_eq!(keys(&dir), ["l/a/10", "l/a/2", "l/b", "l/c"]);
    assert_eq!(
        dir.iter().map(|o| o.size).collect::<Vec<_>>(),
        [10, 2, 1, 3]
    );
    assert_eq!(
        keys(&store.list("l").await.unwrap()),
        ["l/a/10", "l/a/2", "l/b", "l/c", "lx/z"]
    );
    assert_eq!(keys(&store.list("l/a").await.unwrap()), ["l/a/10", "l/a/2"]);
    assert_eq!(keys(&store.list("l/a/1").await.unwrap()), ["l/a/10"]);
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
    let all = store.list("").await.unwrap();
    let all_keys = keys(&all);
    let mut sorted = all_keys.clone();
    sorted.sort();
    assert_eq!(all_keys, sorted);
    assert!(all_keys.contains(&"other/q") && all_keys.contains(&"l/b"));
    assert!(
        all_keys.iter().all(|k| !k.contains(".tmp-")),
        "{all_keys:?}"
    );
}

async fn delete_is_idempotent(store: &CheckpointStore) {
    let key = "del/a.sst";
    store
        .put_bytes(key, Bytes::from_static(b"a"))
        .await
        .unwrap();
    assert!(store.exists(key).await.unwrap());
    store.delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
    assert!(store.get_bytes(key).await.unwrap_err().is_not_found());
    assert!(store.list("del/").await.unwrap().is_empty());
    store.delete(key).await.unwrap();
    store.delete("del/never/existed").await.unwrap();
}

async fn bad_keys_are_rejected(store: &CheckpointStore) {
    for bad in ["../escape", "/abs/key", "a//b", "", "a/./b", "trailing/"] {
        let err = store
            .put_bytes(bad, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidKey { key, .. } if key == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        assert!(store.get_bytes(bad).await.is_err());
        assert!(store.delete(bad).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_meets_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CheckpointStore::from_url("file://./store", tmp.path()).unwrap();
    let root = store.local_root().unwrap().to_path_buf();
    assert_eq!(root, tmp.path().join("store"));
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    contract_suite(store.clone(), Raw::Dir(root.clone()), &scratch).await;

    // Every successful operation cleaned up after itself: the only temp-looking files on disk
    // are the two planted by the list test.
    let mut temps = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.contains(".tmp-") {
                temps.push(name.clone());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    temps.sort();
    assert_eq!(temps, [".000009.sst.tmp-1-00ff00ff00ff00ff", ".d.tmp-1-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_meets_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = CheckpointStore::with_object_store("memory://contract", Arc::clone(&inner));
    assert_eq!(store.local_root(), None);
    contract_suite(store, Raw::Object(inner), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_meets_the_contract() {
    let minio = tokio::task::spawn_blocking(common::minio::Minio::start)
        .await
        .unwrap();
    minio.create_bucket("contract");
    // Rooted at a prefix, as a job's store usually is; raw access sees the same root.
    let store = minio.store("s3://contract/jobs/wc/");
    assert_eq!(store.url(), "s3://contract/jobs/wc");
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
        minio.raw("contract"),
        "jobs/wc",
    ));
    remote_store_meets_the_contract(store, raw, minio.store("s3://contract")).await;
}

/// The contract on a prefix of a remote store whose raw access sees the same root, then a
/// multipart upload of 40 MiB (several parts in flight) byte for byte, and nothing outside the
/// prefix.
async fn remote_store_meets_the_contract(
    store: CheckpointStore,
    raw: Arc<dyn ObjectStore>,
    whole_bucket: CheckpointStore,
) {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(store.local_root(), None);
    contract_suite(store.clone(), Raw::Object(raw), tmp.path()).await;
    for info in whole_bucket.list("").await.unwrap() {
        assert!(info.key.starts_with("jobs/wc/"), "{}", info.key);
    }
    let big = content((40 << 20) + 123, 7);
    let src = write_file(tmp.path(), "big.sst", &big);
    let meta = store
        .upload_files(&[(src, "tasks/t/big.sst".into())])
        .await
        .unwrap()[0];
    assert_eq!(
        meta,
        FileMeta {
            size: big.len() as u64,
            crc32c: crc32c_of(&big)
        }
    );
    let back = tmp.path().join("big.back");
    store
        .download_file("tasks/t/big.sst", &back, meta)
        .await
        .unwrap();
    assert_eq!(file_crc32c(&back).unwrap(), meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_meets_the_contract() {
    let azurite = tokio::task::spawn_blocking(common::azurite::Azurite::start)
        .await
        .unwrap();
    azurite.create_container("contract");
    let store = azurite.store("az://contract/jobs/wc/");
    assert_eq!(store.url(), "az://contract/jobs/wc");
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
        azurite.raw("contract"),
        "jobs/wc",
    ));
    remote_store_meets_the_contract(store, raw, azurite.store("az://contract")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_meets_the_contract() {
    let gcs = tokio::task::spawn_blocking(common::gcs::FakeGcs::start)
        .await
        .unwrap();
    gcs.create_bucket("contract");
    let store = gcs.store("gs://contract/jobs/wc/");
    assert_eq!(store.url(), "gs://contract/jobs/wc");
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
        gcs.raw("contract"),
        "jobs/wc",
    ));
    remote_store_meets_the_contract(store, raw, gcs.store("gs://contract")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hdfs_store_meets_the_contract() {
    let hdfs = tokio::task::spawn_blocking(common::hdfs::Hdfs::start)
        .await
        .unwrap();
    let env = cairn_worker::storage::StoreEnv::default();
    let open = |url: &str| CheckpointStore::from_url_with_env(url, &hdfs.dir, &env).unwrap();
    let store = open(&format!("{}/contract/jobs/wc/", hdfs.url));
    assert_eq!(store.url(), format!("{}/contract/jobs/wc", hdfs.url));
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
        hdfs_native_object_store::HdfsObjectStore::new(hdfs.client()),
        "contract/jobs/wc",
    ));
    let whole = open(&format!("{}/contract", hdfs.url));
    remote_store_meets_the_contract(store, raw, whole).await;
    // A staging file of a writer killed mid-upload (the HDFS client's own form) is no key.
    let planted = "contract/jobs/wc/l/.000010.sst.tmp.1";
    let raw = hdfs_native_object_store::HdfsObjectStore::new(hdfs.client());
    raw.put(&planted.into(), PutPayload::from_static(b"partial"))
        .await
        .unwrap();
    let listed = open(&format!("{}/contract/jobs/wc", hdfs.url))
        .list("l/")
        .await
        .unwrap();
    assert_eq!(keys(&listed), ["l/a/10", "l/a/2", "l/b", "l/c"]);
}

#[tokio::test]
async fn s3_urls_need_a_bucket_and_say_which_setting_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CheckpointStore::s3(
        "s3:///x",
        &cairn_worker::storage::S3Settings::from_lookup(|_| None).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, StorageError::UnsupportedUrl { .. }),
        "{err:?}"
    );
    let err = CheckpointStore::s3(
        "s3://b/p",
        &cairn_worker::storage::S3Settings::from_lookup(|name| {
            (name == "CAIRN_S3_CREDENTIALS_DIR").then(|| tmp.path().display().to_string())
        })
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("CAIRN_S3_CREDENTIALS_DIR: ") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
}

#[tokio::test]
async fn memory_urls_give_working_stores() {
    let tmp = tempfile::tempdir().unwrap();
    for url in ["memory://", "memory://t1"] {
        let store = CheckpointStore::from_url(url, tmp.path()).unwrap();
        assert_eq!(store.url(), url);
        assert_eq!(store.local_root(), None);
        store
            .put_bytes("k", Bytes::from_static(b"v"))
            .await
            .unwrap();
        // Clones share the store.
        assert_eq!(
            store.clone().get_bytes("k").await.unwrap(),
            Bytes::from_static(b"v")
        );
    }
    let store = CheckpointStore::in_memory();
    assert_eq!(store.url(), "memory://");
    assert!(store.list("").await.unwrap().is_empty());
}

#[test]
fn file_urls_resolve_and_bad_schemes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();

    let rel = CheckpointStore::from_url("file://./.cairn/checkpoints", &base).unwrap();
    assert_eq!(
        rel.local_root(),
        Some(base.join(".cairn/checkpoints").as_path())
    );
    assert!(base.join(".cairn/checkpoints").is_dir());
    assert_eq!(rel.url(), "file://./.cairn/checkpoints");

    let bare = CheckpointStore::from_url("file:ckpt", &base).unwrap();
    assert_eq!(bare.local_root(), Some(base.join("ckpt").as_path()));

    let abs_dir = tmp.path().join("absolute/store");
    let abs_url = format!("file://{}", abs_dir.display());
    assert!(abs_url.starts_with("file:///"));
    let abs = CheckpointStore::from_url(&abs_url, Path::new("/nonexistent-base")).unwrap();
    assert_eq!(abs.local_root(), Some(abs_dir.as_path()));
    assert!(abs_dir.is_dir());

    // A NameNode host without a port opens (Hadoop's port 8020); nothing connects yet.
    let hdfs = CheckpointStore::from_url("hdfs://nn/ckpt", &base).unwrap();
    assert_eq!(hdfs.url(), "hdfs://nn/ckpt");
    for bad in [
        "s3:///prefix",
        "hdfs://nn",
        "ftp://nn/ckpt",
        "./ckpt",
        "file://",
        "memory:name",
    ] {
        let err = CheckpointStore::from_url(bad, &base).unwrap_err();
        assert!(
            matches!(&err, StorageError::UnsupportedUrl { url } if url == bad),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(bad), "{msg}");
        assert!(
            msg.contains("file://./") && msg.contains("file:///"),
            "{msg}"
        );
        assert!(msg.contains("memory://"), "{msg}");
    }
}

/// The `file://` store cannot rely on the medium: a byte flipped on disk after upload is caught
/// by the CRC check of `download_file`.
#[tokio::test]
async fn file_store_detects_on_disk_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CheckpointStore::from_url("file:store", tmp.path()).unwrap();
    let data = content(64 << 10, 5);
    let src = write_file(tmp.path(), "src.sst", &data);
    let key = "tasks/task-0003/db-7f3a/sst/000123.sst";
    let meta = store.upload_files(&[(src, key.to_owned())]).await.unwrap()[0];

    let stored = store.local_root().unwrap().join(key);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[40_000] ^= 0x20;
    std::fs::write(&stored, &bytes).unwrap();

    let target = tmp.path().join("restore/000123.sst");
    let err = store.download_file(key, &target, meta).await.unwrap_err();
    match &err {
        StorageError::Corrupt {
            key: k,
            expected,
            actual,
        } => {
            assert_eq!(k, key);
            assert_eq!(*expected, meta);
            assert_eq!(actual.size, meta.size);
            assert_ne!(actual.crc32c, meta.crc32c);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains(key), "{err}");
    assert!(!target.exists());
    assert!(entries(&tmp.path().join("restore")).is_empty());
}

/// Callers spawn store operations on tokio, so every future of the API must be `Send`.
#[allow(dead_code)]
fn futures_are_send(store: CheckpointStore) {
    fn send<T: Send + 'static>(_: T) {}
    let files = vec![(PathBuf::from("a"), "k".to_owned())];
    let meta = FileMeta { size: 0, crc32c: 0 };
    let s = store.clone();
    send(async move { s.upload_files(&files).await });
    let s = store.clone();
    send(async move { s.download_file("k", Path::new("x"), meta).await });
    let s = store.clone();
    send(async move { s.put_bytes("k", Bytes::new()).await });
    let s = store.clone();
    send(async move { s.put_bytes_create_only("k", Bytes::new()).await });
    let s = store.clone();
    send(async move { s.get_bytes("k").await });
    let s = store.clone();
    send(async move { s.exists("k").await });
    let s = store.clone();
    send(async move { s.list("").await });
    let s = store.clone();
    send(async move { s.copy_within(&[]).await });
    let s = store.clone();
    send(async move { s.link_or_download("k", Path::new("x"), meta).await });
    send(async move { store.delete("k").await });
}

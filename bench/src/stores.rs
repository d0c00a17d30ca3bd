//! `cairn-bench store --url URL`: checkpoint upload and restore through Cairn's store next to a
//! bare client moving the same bytes, in the same run against the same server — for every
//! remote store (S3, GCS, Azure Blob, HDFS). Connection settings come from the environment, as
//! for the worker (docs/stores.md); `tests/services/bench-stores.sh` starts a server of each
//! kind on loopback and runs this for each.
//!
//! The bare client is the service's own client with the same parallelism and part size and
//! none of Cairn's work (no CRC32C, no existence checks, no staging or verification): for the
//! object stores an `object_store` multipart upload and a plain get into a file, for HDFS
//! `hdfs-native` writing a file straight to its final path and reading it back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cairn_contract::{ObjectService, StoreUrl};
use cairn_worker::storage::{CheckpointStore, FileMeta};
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use super::connectors::write_incompressible;
use super::{block_on, drop_caches, mib};

/// Part size and parts in flight of the bare multipart uploads: Cairn's own.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// Files moved concurrently, by Cairn and the bare client alike.
const FILES_IN_FLIGHT: usize = 4;

/// Runs the benchmark on the store at `url` with `files` files of `file_mb` MiB.
pub fn store(scratch: &Path, url: &str, files: usize, file_mb: usize) {
    let location = StoreUrl::parse(url).unwrap_or_else(|e| panic!("--url: {e}"));
    let StoreUrl::Object {
        service,
        bucket,
        prefix,
    } = location
    else {
        panic!("--url names a remote store (s3://, gs://, az://, abfss://, hdfs://)");
    };
    let run = format!("bench-{}", std::process::id());
    let dir = scratch.join("store-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| {
            let path = dir.join(format!("{:06}.sst", i + 1));
            write_incompressible(&path, file_mb << 20, i as u64);
            path
        })
        .collect();
    let total = (files * (file_mb << 20)) as u64;

    // Cairn: the checkpoint upload path, then verified restore downloads.
    let store = CheckpointStore::from_url(&format!("{url}/{run}/cairn"), scratch).unwrap();
    let batch: Vec<(PathBuf, String)> = paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            (p.clone(), format!("tasks/task-0000/db-bench/{name}"))
        })
        .collect();
    drop_caches();
    let started = Instant::now();
    let metas: Vec<FileMeta> = block_on(store.upload_files(&batch)).unwrap();
    let cairn_up = started.elapsed().as_secs_f64();
    let restore_dir = scratch.join("store-restore");
    let started = Instant::now();
    block_on(async {
        let downloads = batch.iter().zip(&metas).map(|((p, key), meta)| {
            let local = restore_dir.join(p.file_name().unwrap());
            let store = store.clone();
            async move { store.download_file(key, &local, *meta).await }
        });
        let results: Vec<_> = futures::stream::iter(downloads)
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>().unwrap();
    });
    let cairn_down = started.elapsed().as_secs_f64();

    let bare_dir = scratch.join("store-bare-restore");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let (bare_up, bare_down, bare_what) = match service {
        ObjectService::Hdfs => {
            let base = format!("/{prefix}/{run}/bare");
            let (up, down) = bare_hdfs(&bucket, &base, &paths, &bare_dir);
            (
                up,
                down,
                "hdfs-native: create, write in 8 MiB pieces, close",
            )
        }
        _ => {
            let raw = raw_object_store(&service, &bucket);
            let base = format!("{prefix}/{run}/bare");
            let (up, down) = bare_object_store(raw, &base, &paths, &bare_dir);
            (
                up,
                down,
                "object_store multipart upload, same part size and parallelism",
            )
        }
    };

    let rate = |secs: f64| total as f64 / (1 << 20) as f64 / secs;
    println!(
        "\n### {url}: checkpoint upload and restore of {files} files x {file_mb} MiB ({} MiB)\n",
        mib(total)
    );
    println!("| what | MiB/s | time |");
    println!("|---|---|---|");
    println!(
        "| Cairn checkpoint upload (`upload_files`: CRC32C, create-only, {FILES_IN_FLIGHT} files in flight) | {:.0} | {cairn_up:.2} s |",
        rate(cairn_up)
    );
    println!(
        "| Cairn restore download (`download_file`: streamed, CRC32C verified, renamed into place) | {:.0} | {cairn_down:.2} s |",
        rate(cairn_down)
    );
    println!(
        "| bare upload ({bare_what}) | {:.0} | {bare_up:.2} s |",
        rate(bare_up)
    );
    println!(
        "| bare download into files (the same client's read/get, one write per file) | {:.0} | {bare_down:.2} s |",
        rate(bare_down)
    );
    for path in [dir, restore_dir, bare_dir] {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// The service's own `object_store` client from the environment, without Cairn's wrapper.
fn raw_object_store(service: &ObjectService, bucket: &str) -> Arc<dyn ObjectStore> {
    match service {
        ObjectService::S3 => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(false);
            if let Ok(endpoint) = std::env::var("CAIRN_S3_ENDPOINT") {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            Arc::new(builder.build().unwrap())
        }
        ObjectService::Gcs => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .unwrap(),
        ),
        ObjectService::Azure { account, .. } => {
            let mut builder =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(bucket);
            if let Some(account) = account {
                builder = builder.with_account(account);
            }
            Arc::new(builder.build().unwrap())
        }
        ObjectService::Hdfs => unreachable!("HDFS has its own bare client"),
    }
}

/// Bare multipart uploads of `paths` under `base`, then gets into `into`: (upload s, get s).
fn bare_object_store(
    raw: Arc<dyn ObjectStore>,
    base: &str,
    paths: &[PathBuf],
    into: &Path,
) -> (f64, f64) {
    drop_caches();
    let started = Instant::now();
    block_on(async {
        let uploads = paths.iter().map(|p| {
            let raw = raw.clone();
            let key = format!("{base}/{}", p.file_name().unwrap().to_string_lossy());
            let p = p.clone();
            async move {
                let upload = raw.put_multipart(&key.into()).await.unwrap();
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
                let data = tokio::fs::read(&p).await.unwrap();
                for chunk in data.chunks(PART) {
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await.unwrap();
                    writer.put(Bytes::copy_from_slice(chunk));
                }
                writer.finish().await.unwrap();
            }
        });
        futures::stream::iter(uploads)
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    });
    let up = started.elapsed().as_secs_f64();
    let started = Instant::now();
    block_on(async {
        let gets = paths.iter().map(|p| {
            let raw = raw.clone();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let local = into.join(&name);
            let key = format!("{base}/{name}");
            async move {
                let bytes = raw.get(&key.into()).await.unwrap().bytes().await.unwrap();
                tokio::fs::write(local, bytes).await.unwrap();
            }
        });
        futures::stream::iter(gets)
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    });
    (up, started.elapsed().as_secs_f64())
}

/// Bare `hdfs-native` writes of `paths` under `base` of the file system `authority` (the
/// default one of HADOOP_CONF_DIR when empty), then reads into `into`: (write s, read s).
fn bare_hdfs(authority: &str, base: &str, paths: &[PathBuf], into: &Path) -> (f64, f64) {
    block_on(async {
        let mut builder = hdfs_native::ClientBuilder::new();
        if !authority.is_empty() {
            builder = builder.with_url(format!("hdfs://{authority}"));
        }
        let client = builder.build().unwrap();
        drop_caches();
        let started = Instant::now();
        let writes = paths.iter().map(|p| {
            let client = client.clone();
            let path = format!("{base}/{}", p.file_name().unwrap().to_string_lossy());
            let p = p.clone();
            async move {
                let data = tokio::fs::read(&p).await.unwrap();
                let mut file = client
                    .create(&path, hdfs_native::WriteOptions::default())
                    .await
                    .unwrap();
                for chunk in data.chunks(PART) {
                    file.write_bytes(Bytes::copy_from_slice(chunk))
                        .await
                        .unwrap();
                }
                file.close().await.unwrap();
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        let up = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let reads = paths.iter().map(|p| {
            let client = client.clone();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let local = into.join(&name);
            let path = format!("{base}/{name}");
            async move {
                let reader = client.read(&path).await.unwrap();
                let bytes = reader.read_range(0, reader.file_length()).await.unwrap();
                tokio::fs::write(local, bytes).await.unwrap();
            }
        });
        futures::stream::iter(reads)
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        (up, started.elapsed().as_secs_f64())
    })
}

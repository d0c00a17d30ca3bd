//! The HDFS test server and its fault controls (tests/common/hdfs.rs), checked with the
//! hdfs-native client directly: files written survive a NameNode restart and stop/start, a
//! create without overwrite of an existing file fails, a file replicated twice reads with
//! either DataNode stopped but not with both, and a file whose block replicas were deleted
//! from disk fails to read (an error, not a hang).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::hdfs::Hdfs;
use hdfs_native::{Client, HdfsError, WriteOptions};

/// Longest a read of a broken file may take before the test calls it a hang.
const FAIL_WITHIN: Duration = Duration::from_secs(60);

/// 300 KiB that differ from offset to offset (a shifted or truncated read shows).
fn content() -> Bytes {
    (0..300 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 10) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn write(client: &Client, path: &str, data: Bytes) -> hdfs_native::Result<()> {
    let mut writer = client
        .create(path, WriteOptions::default().overwrite(false))
        .await?;
    writer.write_bytes(data).await?;
    writer.close().await
}

async fn read(client: &Client, path: &str) -> hdfs_native::Result<Bytes> {
    let reader = client.read(path).await?;
    reader.read_range(0, reader.file_length()).await
}

/// The read of `path`, which must fail within [`FAIL_WITHIN`]; its error.
async fn read_error(client: &Client, path: &str) -> HdfsError {
    match tokio::time::timeout(FAIL_WITHIN, read(client, path)).await {
        Ok(Ok(data)) => panic!("read {path} returned {} bytes", data.len()),
        Ok(Err(e)) => e,
        Err(_) => panic!("read {path} hung for {FAIL_WITHIN:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namenode_restart_and_stop_keep_files_and_deleted_blocks_fail_reads() {
    let hdfs = Hdfs::start();
    let client = hdfs.client();
    let data = content();
    write(&client, "/smoke/a", data.clone()).await.unwrap();
    assert_eq!(read(&client, "/smoke/a").await.unwrap(), data);

    let again = write(&client, "/smoke/a", Bytes::from_static(b"other")).await;
    assert!(
        matches!(again, Err(HdfsError::AlreadyExists(_))),
        "second create without overwrite: {again:?}"
    );
    assert_eq!(read(&client, "/smoke/a").await.unwrap(), data);

    // The same client carries on: it reconnects to the restarted NameNode.
    hdfs.restart_namenode();
    assert_eq!(read(&client, "/smoke/a").await.unwrap(), data);

    // A client that gives up on an unreachable NameNode after two quick retries (the default
    // retries for minutes).
    let impatient = hdfs
        .client_builder()
        .with_config([
            ("dfs.client.failover.max.attempts", "2"),
            ("dfs.client.failover.sleep.base.millis", "100"),
        ])
        .build()
        .unwrap();
    hdfs.stop_namenode();
    let down = tokio::time::timeout(FAIL_WITHIN, impatient.get_file_info("/smoke/a")).await;
    assert!(
        matches!(down, Ok(Err(HdfsError::IOError(_)))),
        "metadata read with the NameNode stopped: {down:?}"
    );
    hdfs.start_namenode();
    assert_eq!(read(&client, "/smoke/a").await.unwrap(), data);
    assert_eq!(read(&impatient, "/smoke/a").await.unwrap(), data);

    // A second file keeps its blocks: only the first one's replica goes.
    write(&client, "/smoke/b", data.clone()).await.unwrap();
    assert_eq!(hdfs.delete_blocks("/smoke/a"), 1);
    let e = read_error(&client, "/smoke/a").await;
    assert!(
        matches!(
            e,
            HdfsError::DataTransferError(_) | HdfsError::BlocksNotFound(_)
        ),
        "read of a file without block replicas: {e:?}"
    );
    assert_eq!(
        client.get_file_info("/smoke/a").await.unwrap().length,
        data.len(),
        "the NameNode still has the file"
    );
    assert_eq!(read(&client, "/smoke/b").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_replicated_file_reads_with_either_datanode_stopped() {
    let hdfs = Hdfs::start_with(2, 2);
    let client = hdfs.client();
    let data = content();
    write(&client, "/smoke/c", data.clone()).await.unwrap();
    assert_eq!(read(&client, "/smoke/c").await.unwrap(), data);

    hdfs.stop_datanode(0);
    assert_eq!(read(&client, "/smoke/c").await.unwrap(), data);
    hdfs.restart_datanode(0);
    hdfs.stop_datanode(1);
    assert_eq!(read(&client, "/smoke/c").await.unwrap(), data);

    // With both stopped no replica is left to read: the stops are real.
    hdfs.stop_datanode(0);
    let e = read_error(&client, "/smoke/c").await;
    assert!(
        matches!(e, HdfsError::DataTransferError(_)),
        "read with every DataNode stopped: {e:?}"
    );

    hdfs.restart_datanode(0);
    hdfs.restart_datanode(1);
    assert_eq!(read(&client, "/smoke/c").await.unwrap(), data);
}

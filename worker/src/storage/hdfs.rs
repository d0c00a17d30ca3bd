//! The HDFS backend (`hdfs://namenode:port/path`, `hdfs:///path`): a Hadoop file system through
//! `hdfs-native`, a client of the NameNode and DataNode protocols written in Rust (no JVM, no
//! libhdfs), and its `object_store` implementation, so HDFS is one more [`ObjectStore`] behind
//! the shared object backend. docs/stores.md says why this client and what it does not do.
//!
//! **Atomic, create-only commits.** The `object_store` implementation writes every file to a
//! hidden staging file `.<name>.tmp.<n>` beside its key and renames it into place when it is
//! closed. A create-only write (commit records, generation claims) renames *without*
//! `OVERWRITE`: the NameNode performs the rename under its namespace lock and refuses it with
//! `FileAlreadyExistsException` when the target exists, so of two writers exactly one commits,
//! and readers see a whole file or none. Staging files left by a killed writer keep their
//! hidden name; listings skip them (see `key::is_temp_name`).
//!
//! **Configuration** is Hadoop's: `HADOOP_CONF_DIR` (`core-site.xml`, `hdfs-site.xml`) gives
//! `fs.defaultFS` for `hdfs:///path`, HA nameservices and client settings such as
//! `dfs.replication`; `HADOOP_USER_NAME` the user (simple authentication).

use std::sync::{Arc, OnceLock};

use hdfs_native::ClientBuilder;
use hdfs_native_object_store::HdfsObjectStore;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use tokio::runtime::Handle;

use super::{StorageError, StoreEnv};

/// The directory of `core-site.xml` and `hdfs-site.xml`.
const HADOOP_CONF_DIR: &str = "HADOOP_CONF_DIR";
/// The user of simple authentication.
const HADOOP_USER_NAME: &str = "HADOOP_USER_NAME";

/// Threads of the runtime that drives HDFS connections.
const IO_THREADS: usize = 2;

/// The runtime on which HDFS connections and block writers run, one per process and never
/// shut down. The client would otherwise spawn them on whichever runtime opened the store, and
/// a store outlives the short-lived runtimes of some commands.
fn io_runtime() -> Result<Handle, StorageError> {
    static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(IO_THREADS)
                .thread_name("cairn-hdfs-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = runtime.handle().clone();
            // Kept for the life of the process (dropping a runtime inside an async context
            // would panic, and the handle needs it running).
            std::mem::forget(runtime);
            Ok(handle)
        })
        .clone()
        .map_err(|problem| StorageError::Config {
            setting: "hdfs://".to_owned(),
            problem: format!("cannot start the HDFS client's threads: {problem}"),
            fix: "check the process's thread limit".to_owned(),
        })
}

/// Builds the store rooted at `/<path>` of the file system `authority` names (the default file
/// system of the Hadoop configuration when it is empty).
pub(crate) fn build(
    authority: &str,
    path: &str,
    env: &StoreEnv,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let mut builder = ClientBuilder::new().with_io_runtime(io_runtime()?);
    if let Some(dir) = env.get(HADOOP_CONF_DIR) {
        builder = builder.with_config_dir(dir);
    }
    if let Some(user) = env.get(HADOOP_USER_NAME) {
        builder = builder.with_user(user);
    }
    if !authority.is_empty() {
        builder = builder.with_url(format!("hdfs://{authority}"));
    }
    let client = builder.build().map_err(|e| StorageError::Config {
        setting: if authority.is_empty() {
            HADOOP_CONF_DIR.to_owned()
        } else {
            format!("hdfs://{authority}")
        },
        problem: e.to_string(),
        fix: "name the NameNode in the URL (`hdfs://namenode:8020/path`), or point \
              HADOOP_CONF_DIR at a directory whose core-site.xml sets fs.defaultFS"
            .to_owned(),
    })?;
    Ok(Arc::new(PrefixStore::new(
        HdfsObjectStore::new(client),
        path,
    )))
}

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

use async_trait::async_trait;
use futures::stream::BoxStream;
use hdfs_native::{ClientBuilder, HdfsError};
use hdfs_native_object_store::HdfsObjectStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::runtime::Handle;

use super::{StorageError, StoreEnv};

/// The directory of `core-site.xml` and `hdfs-site.xml`.
const HADOOP_CONF_DIR: &str = "HADOOP_CONF_DIR";
/// How long the client retries an unreachable NameNode before it reports the failure: 4
/// attempts 0.2 to 1.6 s apart, about 3 s (its defaults, 15 attempts backing off to 15 s, take
/// minutes per request). Cairn's own retries ([`super::object::HDFS_ATTEMPTS`]) and checkpoint
/// aborts take over from there, so a NameNode that is gone for good fails checkpoints within
/// their timeout instead of hanging them. These override the Hadoop configuration files.
const CLIENT_RETRIES: [(&str, &str); 3] = [
    ("dfs.client.failover.max.attempts", "4"),
    ("dfs.client.failover.sleep.base.millis", "200"),
    ("dfs.client.failover.sleep.max.millis", "1600"),
];
/// The NameNode's RPC port when a URL names a host without one (Hadoop's default).
const DEFAULT_PORT: u16 = 8020;
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
    let runtime = io_runtime()?;
    let client_for = |url: Option<String>| {
        let mut builder = ClientBuilder::new()
            .with_io_runtime(runtime.clone())
            .with_config(CLIENT_RETRIES.iter().copied());
        if let Some(dir) = env.get(HADOOP_CONF_DIR) {
            builder = builder.with_config_dir(dir);
        }
        if let Some(user) = env.get(HADOOP_USER_NAME) {
            builder = builder.with_user(user);
        }
        if let Some(url) = url {
            builder = builder.with_url(url);
        }
        builder.build()
    };
    let client = match authority {
        "" => client_for(None),
        // A host without a port is an HA nameservice when the configuration defines one, and
        // otherwise a NameNode on Hadoop's default RPC port, as Hadoop reads it.
        _ if !authority.contains(':') => client_for(Some(format!("hdfs://{authority}")))
            .or_else(|_| client_for(Some(format!("hdfs://{authority}:{DEFAULT_PORT}")))),
        _ => client_for(Some(format!("hdfs://{authority}"))),
    };
    let client = client.map_err(|e| StorageError::Config {
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
    let store = HdfsStore(HdfsObjectStore::new(client));
    Ok(Arc::new(PrefixStore::new(store, path)))
}

/// The HDFS `object_store` with its errors told apart: the client reports a missing file or
/// an existing target from some calls (file status) as such, but from others (opening a file
/// to read or copy it, a rename) as the NameNode's `java.io.FileNotFoundException` or
/// `FileAlreadyExistsException` inside a generic RPC error. Cairn's store tells "missing" and
/// "exists" from a failure, so they are named here, from the exception's class.
#[derive(Debug)]
struct HdfsStore(HdfsObjectStore);

impl std::fmt::Display for HdfsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `error` about `path`, as [`object_store::Error::NotFound`] or
/// [`object_store::Error::AlreadyExists`] when the NameNode said so.
fn named(path: &Path, error: object_store::Error) -> object_store::Error {
    let object_store::Error::Generic { store, source } = error else {
        return error;
    };
    let class = match source.downcast_ref::<HdfsError>() {
        Some(HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _)) => class.as_str(),
        _ => "",
    };
    match class {
        "java.io.FileNotFoundException" => object_store::Error::NotFound {
            path: path.to_string(),
            source,
        },
        "org.apache.hadoop.fs.FileAlreadyExistsException" => object_store::Error::AlreadyExists {
            path: path.to_string(),
            source,
        },
        _ => object_store::Error::Generic { store, source },
    }
}

#[async_trait]
impl ObjectStore for HdfsStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        (self.0.put_opts(location, payload, opts).await).map_err(|e| named(location, e))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        (self.0.put_multipart_opts(location, opts).await).map_err(|e| named(location, e))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        (self.0.get_opts(location, options).await).map_err(|e| named(location, e))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        match self.0.copy_opts(from, to, options).await {
            // A missing file is the source; an existing one is the target.
            Err(e) => Err(match named(from, e) {
                object_store::Error::AlreadyExists { source, .. } => {
                    object_store::Error::AlreadyExists {
                        path: to.to_string(),
                        source,
                    }
                }
                e => e,
            }),
            ok => ok,
        }
    }
}

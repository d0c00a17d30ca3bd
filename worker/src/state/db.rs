//! Opening a task's RocksDB instance with the options Cairn relies on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteOptions, DB,
    DEFAULT_COLUMN_FAMILY_NAME,
};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB refused to open the task's database.
    #[error("cannot open the state database at {path}: {source}")]
    Open {
        /// Database directory.
        path: PathBuf,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// A read, write, flush or snapshot failed inside RocksDB.
    #[error("state database operation '{op}' failed: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// A file the state layer keeps next to the database (an SST it writes for ingestion)
    /// could not be removed.
    #[error("cannot remove the state file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A key longer than the 64 KiB the key layout allows.
    #[error("state key of {len} bytes is longer than the maximum of {max} bytes; use a shorter key or move data into the value")]
    KeyTooLong {
        /// Length of the rejected key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The database was opened without its timers column family (a bug: every task database
    /// is opened with [`open_task_db`]).
    #[error("the state database has no '{TIMERS_CF}' column family; it must be opened with open_task_db")]
    NoTimersFamily,
    /// The previous checkpoint's snapshot failed, and its writes could not be kept.
    #[error("the previous state snapshot failed; state is restored from the last checkpoint")]
    SnapshotFailed,
}

/// The column family of per-key timers ([`super::timer`]); state is in the default one.
pub const TIMERS_CF: &str = "timers";

/// Every column family of a task's database. A database from before timers existed has only
/// the default one; opening it creates the other (empty).
pub const COLUMN_FAMILIES: [&str; 2] = [DEFAULT_COLUMN_FAMILY_NAME, TIMERS_CF];

/// Opens (or creates) the RocksDB instance of one task.
///
/// The WAL is never written (every write uses [`no_wal`]): the checkpoint is the durability
/// boundary. After a crash the live directory is never reopened as-is; the task is always
/// rebuilt from the files of a committed checkpoint, so a lost memtable cannot lose state.
pub fn open_task_db(path: &Path, block_cache: &Cache) -> Result<Arc<DB>, StateError> {
    let mut table = table_options();
    table.set_block_cache(block_cache);
    let opts = task_options(&table);
    let families = COLUMN_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, opts.clone()));
    DB::open_cf_descriptors(&opts, path, families)
        .map(Arc::new)
        .map_err(|source| StateError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// The table format of every task SST: those RocksDB writes and those Cairn writes itself for
/// ingestion ([`super::ingest`]), which must read back the same way.
fn table_options() -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_block_size(16 * 1024);
    table
}

fn task_options(table: &BlockBasedOptions) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_block_based_table_factory(table);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_bottommost_compression_type(DBCompressionType::Lz4);
    opts.set_write_buffer_size(64 << 20);
    opts.set_max_write_buffer_number(3);
    opts.set_target_file_size_base(64 << 20);
    opts.set_max_bytes_for_level_base(256 << 20);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    // Keep the info LOG small: one per task, rotated.
    opts.set_max_log_file_size(4 << 20);
    opts.set_keep_log_file_num(2);
    opts.set_manual_wal_flush(true);
    opts.create_missing_column_families(true);
    opts
}

/// Options for writing an SST file to ingest into a task database (no block cache: the writer
/// reads nothing).
pub(crate) fn sst_writer_options() -> Options {
    task_options(&table_options())
}

/// Write options used for every state write: no WAL (see [`open_task_db`]).
pub fn no_wal() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

/// Opens a task database read-only with every column family it has (readers that go through
/// all of it: re-splitting, inspection).
pub fn open_read_only(path: &Path) -> Result<DB, rocksdb::Error> {
    let opts = Options::default();
    let families = DB::list_cf(&opts, path)?;
    DB::open_cf_for_read_only(&opts, path, families, false)
}

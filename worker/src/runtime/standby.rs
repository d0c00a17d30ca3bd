//! A warm standby (docs/recovery.md#warm-standbys): a process for container K admitted while K
//! runs elsewhere. Until K fails it follows every committed checkpoint, fetching only the files
//! of K's tasks that it does not hold yet ([`Prefetcher`]); then the coordinator sends it
//! `Restore`, as to any container that joins, and it restores by linking what it holds.
//!
//! Fetching and listening go on together: a takeover never waits for a fetch to end (what is
//! held so far is used, the rest is fetched by the restore), and a newer commit replaces the
//! one being followed (the files fetched for it stay held; most are in the newer one too).

use tokio::sync::watch;

use super::messages::{Command, Event};
use super::remote::{CoordinatorConnection, RelayEnd, RemoteError, Restore};
use crate::checkpoint::prefetch::{Prefetched, Prefetcher};
use crate::metrics::Metrics;

/// How standing by ended.
pub enum StandbyEnd {
    /// Promoted: restore from `restore`, linking what `prefetched` holds.
    TakeOver {
        /// What the coordinator said to restore.
        restore: Restore,
        /// The files held.
        prefetched: Prefetched,
    },
    /// The job stopped (`Stop`) or the coordinator shut down (`Shutdown`).
    Released(RelayEnd),
    /// A signal asked this process to terminate; a standby has nothing to finish.
    Signalled,
}

/// Stands by for `container` until promoted, released or signalled. An error: the connection
/// to the coordinator ended (the process exits and, restarted, joins again).
pub async fn stand_by(
    conn: &mut CoordinatorConnection,
    container: u32,
    mut prefetcher: Prefetcher,
    metrics: &Metrics,
    mut signalled: watch::Receiver<bool>,
) -> Result<StandbyEnd, RemoteError> {
    metrics.standby_checkpoint.set(-1);
    // The newest committed checkpoint announced and not yet held.
    let mut wanted: Option<u64> = None;
    loop {
        let following = async {
            match wanted {
                Some(id) => (id, prefetcher.follow(id).await),
                None => std::future::pending().await,
            }
        };
        let signal = async {
            if signalled.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            command = conn.next_command() => match command? {
                Command::Follow(id) => wanted = Some(id),
                Command::Restore { generation, checkpoint, savepoint } => {
                    let prefetched = prefetcher.prefetched();
                    metrics.standby_checkpoint.set(-1);
                    tracing::info!(container, ?checkpoint, held_files = prefetched.len(), "taking over container {container}");
                    return Ok(StandbyEnd::TakeOver {
                        restore: Restore { generation, checkpoint, savepoint },
                        prefetched,
                    });
                }
                Command::Stop => return Ok(StandbyEnd::Released(RelayEnd::JobStopped)),
                Command::Shutdown => return Ok(StandbyEnd::Released(RelayEnd::CoordinatorShutDown)),
                // For running tasks; a standby has none.
                Command::Checkpoint { .. } | Command::Committed(_) | Command::Aborted(_) | Command::Resume => {}
            },
            (id, result) = following => {
                wanted = None;
                match result {
                    Ok(followed) => {
                        metrics.standby_fetched_bytes.inc_by(followed.bytes);
                        metrics.standby_checkpoint.set(i64::try_from(id).unwrap_or(i64::MAX));
                        // A standby is alive while it keeps following commits.
                        metrics.liveness.committed();
                        tracing::debug!(container, checkpoint = id, ?followed, "following");
                        conn.send_event(&Event::Following { container, checkpoint: id }).await?;
                    }
                    // Tried again at the next commit; a takeover fetches what is missing.
                    Err(e) => tracing::warn!(container, checkpoint = id, error = %e, "a warm standby could not fetch a committed checkpoint's files; trying again at the next commit"),
                }
            }
            () = signal => return Ok(StandbyEnd::Signalled),
        }
    }
}

//! Generation fencing. Each process of a job claims the next generation number with a
//! create-only write before it restores. Before committing, the coordinator checks that no
//! newer generation exists; a zombie (a process that lost contact but still runs) therefore
//! stops instead of committing over its successor's work. The remaining window — a successor
//! claiming between the check and the create-only commit write — cannot produce a mixed
//! checkpoint: the commit record is create-only and lists only the zombie's own manifests.

use super::{paths, CheckpointError};
use crate::storage::CheckpointStore;

/// The highest claimed generation, 0 if none.
pub async fn latest(store: &CheckpointStore) -> Result<u64, CheckpointError> {
    Ok(store
        .list(paths::GENERATIONS)
        .await?
        .iter()
        .filter_map(|o| paths::generation_of(&o.key))
        .max()
        .unwrap_or(0))
}

/// Claims a new generation, higher than every existing one. A store whose generations have
/// reached `u64::MAX` (claims are create-only files anyone with write access can add) is refused
/// with [`CheckpointError::IdsExhausted`] rather than wrapping around to generation 0.
pub async fn claim(store: &CheckpointStore, who: &str) -> Result<u64, CheckpointError> {
    let mut g = next_after(latest(store).await?)?;
    loop {
        let body =
            serde_json::json!({ "generation": g, "claimedBy": who, "atMs": super::now_ms() });
        match store
            .put_bytes_create_only(&paths::generation_key(g), body.to_string().into())
            .await
        {
            Ok(()) => return Ok(g),
            Err(crate::storage::StorageError::AlreadyExists { .. }) => g = next_after(g)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The generation after `g`; an error naming `g`'s claim when there is none.
fn next_after(g: u64) -> Result<u64, CheckpointError> {
    g.checked_add(1).ok_or_else(|| CheckpointError::IdsExhausted {
        key: paths::generation_key(g),
        what: "generation",
        id: g,
        fix: "start the job in a new, empty checkpoint store from a savepoint of its latest checkpoint (`cairn-worker savepoint <store-url>`, then `cairn-worker run --from-savepoint <savepoint-url>` with checkpoint.store pointing at the new location)",
    })
}

/// Errors with [`CheckpointError::Fenced`] if a generation newer than `ours` exists.
pub async fn check_not_fenced(store: &CheckpointStore, ours: u64) -> Result<(), CheckpointError> {
    let newest = latest(store).await?;
    if newest > ours {
        return Err(CheckpointError::Fenced {
            ours,
            newer: newest,
        });
    }
    Ok(())
}

/// Errors with [`CheckpointError::Fenced`] if generation `ours + 1` has been claimed: a cheap
/// form of [`check_not_fenced`] (one existence check instead of a listing of every claim ever
/// made), used before each delete of a retention pass.
///
/// It is exact: a claim starts at one above the highest claim it lists and moves up one at a
/// time past claims that exist, and claims are never deleted, so the lowest claim above ours —
/// if there is any — is `ours + 1`. (Its claimer either listed ours or something lower, and then
/// tried `ours + 1` before anything higher; or it listed something above ours, which would be a
/// lower claim above ours.)
pub async fn check_successor_absent(
    store: &CheckpointStore,
    ours: u64,
) -> Result<(), CheckpointError> {
    let next = ours.saturating_add(1);
    if store.exists(&paths::generation_key(next)).await? {
        return Err(CheckpointError::Fenced { ours, newer: next });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_generation_fences_the_older_one() {
        let store = CheckpointStore::in_memory();
        let first = claim(&store, "a").await.unwrap();
        let second = claim(&store, "b").await.unwrap();
        assert_eq!((first, second), (1, 2));
        check_not_fenced(&store, second).await.unwrap();
        let err = check_not_fenced(&store, first).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::Fenced { ours: 1, newer: 2 }),
            "{err}"
        );
        check_successor_absent(&store, second).await.unwrap();
        let err = check_successor_absent(&store, first).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::Fenced { ours: 1, newer: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("without committing"));
    }

    #[tokio::test]
    async fn claims_skip_a_generation_taken_concurrently() {
        let store = CheckpointStore::in_memory();
        // Someone else wrote generation 1 between our listing and our claim.
        store
            .put_bytes_create_only(&paths::generation_key(1), "x".into())
            .await
            .unwrap();
        store
            .put_bytes_create_only(&paths::generation_key(2), "x".into())
            .await
            .unwrap();
        assert_eq!(claim(&store, "c").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_claim_at_the_largest_generation_is_refused_naming_it() {
        let store = CheckpointStore::in_memory();
        store
            .put_bytes_create_only(&paths::generation_key(u64::MAX), "x".into())
            .await
            .unwrap();
        let err = claim(&store, "d").await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::IdsExhausted { id: u64::MAX, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("generations/18446744073709551615 holds generation")
                && text.contains("--from-savepoint"),
            "{text}"
        );
    }
}

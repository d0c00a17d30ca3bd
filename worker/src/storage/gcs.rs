//! The Google Cloud Storage backend (`gs://bucket/prefix`), through `object_store`'s GCS
//! client, wrapped so the store root is the URL's prefix.
//!
//! Connection settings are the `GOOGLE_*` variables `object_store` reads (docs/stores.md has
//! the table): a service account key file (`GOOGLE_APPLICATION_CREDENTIALS` or
//! `GOOGLE_SERVICE_ACCOUNT`: a mounted Secret), its JSON in `GOOGLE_SERVICE_ACCOUNT_KEY`, or
//! the instance's metadata server (GKE workload identity). `GOOGLE_BASE_URL` points at another
//! server (an emulator). Create-only writes send `x-goog-if-generation-match: 0`, which GCS
//! checks atomically.

use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use super::{StorageError, StoreEnv};

/// Builds the store for `bucket` rooted at `prefix`.
pub(crate) fn build(
    bucket: &str,
    prefix: &str,
    env: &StoreEnv,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    // As `GoogleCloudStorageBuilder::from_env`, from `env`; a variable it does not know is
    // left for other parts of the process.
    let builder = env
        .with_prefix("GOOGLE_")
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase().parse().ok()?, value)))
        .fold(GoogleCloudStorageBuilder::new(), |builder, (key, value)| {
            builder.with_config(key, value)
        })
        .with_bucket_name(bucket)
        .with_retry(super::object::retry_config());
    let store = super::object::client_timeouts()
        .into_iter()
        .fold(builder, |builder, (key, value)| {
            builder.with_config(GoogleConfigKey::Client(key), value)
        })
        .build()
        .map_err(|e| StorageError::Config {
            setting: format!("gs://{bucket}"),
            problem: e.to_string(),
            fix: "point GOOGLE_APPLICATION_CREDENTIALS at a service account key file (a \
                  mounted Secret), set GOOGLE_SERVICE_ACCOUNT_KEY, or run where the metadata \
                  server grants an identity (docs/stores.md)"
                .to_owned(),
        })?;
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

//! The Azure Blob Storage backend (`az://container/prefix`, or
//! `abfs[s]://container@account.dfs.core.windows.net/prefix` with the account in the URL),
//! through `object_store`'s Azure client, wrapped so the store root is the URL's prefix.
//!
//! Connection settings are the `AZURE_*` variables `object_store` reads (docs/stores.md has
//! the table): the account (`AZURE_STORAGE_ACCOUNT_NAME`, unless the URL names it), then one
//! of an account key, a SAS token, a service principal or workload identity. A mounted Secret
//! is read from [`ENV_CREDENTIALS_DIR`] and re-read every minute, as for S3. Create-only writes
//! send `If-None-Match: *`, which Azure and Azurite both honour atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use object_store::azure::{
    split_sas, AzureAccessKey, AzureConfigKey, AzureCredential, MicrosoftAzureBuilder,
};
use object_store::prefix::PrefixStore;
use object_store::{CredentialProvider, ObjectStore};

use super::{StorageError, StoreEnv};

/// Directory holding a file `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_TOKEN` (a
/// mounted Secret), and optionally `AZURE_STORAGE_ACCOUNT_NAME`; re-read every minute.
pub const ENV_CREDENTIALS_DIR: &str = "CAIRN_AZURE_CREDENTIALS_DIR";
const ACCOUNT_NAME: &str = "AZURE_STORAGE_ACCOUNT_NAME";
const ACCOUNT_KEY: &str = "AZURE_STORAGE_ACCOUNT_KEY";
const SAS_TOKEN: &str = "AZURE_STORAGE_SAS_TOKEN";
/// How long credentials read from files are reused before the files are read again.
const CREDENTIAL_FILE_TTL: Duration = Duration::from_secs(60);

/// Builds the store for `container` (in `account`, when the URL names one) rooted at `prefix`.
pub(crate) fn build(
    container: &str,
    account: Option<&str>,
    prefix: &str,
    env: &StoreEnv,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    // As `MicrosoftAzureBuilder::from_env`, from `env`.
    let builder = env
        .with_prefix("AZURE_")
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase().parse().ok()?, value)))
        .fold(MicrosoftAzureBuilder::new(), |builder, (key, value)| {
            builder.with_config(key, value)
        })
        .with_container_name(container)
        .with_retry(super::object::retry_config());
    let mut builder = super::object::client_timeouts()
        .into_iter()
        .fold(builder, |builder, (key, value)| {
            builder.with_config(AzureConfigKey::Client(key), value)
        });
    if let Some(account) = account {
        builder = builder.with_account(account);
    }
    if let Some(dir) = env.get(ENV_CREDENTIALS_DIR) {
        let files = FileCredentials::new(PathBuf::from(dir));
        // Fail at open, naming the file, rather than at the first request.
        files.read()?;
        if account.is_none() {
            if let Some(name) = read_optional(&files.dir.join(ACCOUNT_NAME))? {
                builder = builder.with_account(name);
            }
        }
        builder = builder.with_credentials(Arc::new(files));
    }
    let store = builder.build().map_err(|e| StorageError::Config {
        setting: format!("az://{container}"),
        problem: e.to_string(),
        fix: format!(
            "set {ACCOUNT_NAME} (or write the account in an abfss:// URL) and a credential: \
             {ACCOUNT_KEY}, {SAS_TOKEN}, a service principal, workload identity, or \
             {ENV_CREDENTIALS_DIR} (docs/stores.md)"
        ),
    })?;
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// A file's trimmed content, `None` when it is missing or empty.
fn read_optional(path: &Path) -> Result<Option<String>, StorageError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io_path(path, e)),
    }
}

/// An account key or SAS token read from a mounted Secret, re-read after
/// [`CREDENTIAL_FILE_TTL`] so a rotated Secret takes effect without a restart.
#[derive(Debug)]
struct FileCredentials {
    dir: PathBuf,
    cached: Mutex<Option<(Instant, Arc<AzureCredential>)>>,
}

impl FileCredentials {
    fn new(dir: PathBuf) -> Self {
        FileCredentials {
            dir,
            cached: Mutex::new(None),
        }
    }

    fn read(&self) -> Result<Arc<AzureCredential>, StorageError> {
        let invalid = |problem: String| StorageError::Config {
            setting: ENV_CREDENTIALS_DIR.to_owned(),
            problem,
            fix: format!(
                "mount a Secret with the key {ACCOUNT_KEY} (base64, as the portal shows it) or \
                 {SAS_TOKEN}, and optionally {ACCOUNT_NAME}"
            ),
        };
        let key_path = self.dir.join(ACCOUNT_KEY);
        let sas_path = self.dir.join(SAS_TOKEN);
        let credential =
            match (read_optional(&key_path)?, read_optional(&sas_path)?) {
                (Some(key), _) => {
                    AzureCredential::AccessKey(AzureAccessKey::try_new(&key).map_err(|e| {
                        invalid(format!("{}: not an account key ({e})", key_path.display()))
                    })?)
                }
                (None, Some(sas)) => AzureCredential::SASToken(split_sas(&sas).map_err(|e| {
                    invalid(format!("{}: not a SAS token ({e})", sas_path.display()))
                })?),
                (None, None) => {
                    return Err(invalid(format!(
                        "{} holds neither {ACCOUNT_KEY} nor {SAS_TOKEN}",
                        self.dir.display()
                    )))
                }
            };
        let credential = Arc::new(credential);
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), Arc::clone(&credential)));
        Ok(credential)
    }
}

#[async_trait]
impl CredentialProvider for FileCredentials {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((read_at, credential)) = cached {
            if read_at.elapsed() < CREDENTIAL_FILE_TTL {
                return Ok(credential);
            }
        }
        self.read().map_err(|e| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: Box::new(e),
        })
    }
}

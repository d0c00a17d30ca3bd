//! The S3 backend (`s3://bucket/prefix`): AWS S3 or any S3-compatible server (MinIO, Ceph RGW),
//! through `object_store`'s `AmazonS3`, wrapped so the store root is the URL's prefix.
//!
//! Connection settings come from the environment, not from the URL: the same store is opened
//! from `checkpoint.store`, from savepoint URLs and from the `checkpoints`/`savepoints`/`state
//! dump` commands, and on Kubernetes the operator sets the variables from a Secret. They are
//! read once per store, here; see docs/s3.md for the table.
//!
//! Credentials are never logged: [`S3Credentials`] prints only where they come from, and
//! `object_store`'s own credential type masks the secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, S3ConditionalPut};
use object_store::prefix::PrefixStore;
use object_store::{CredentialProvider, ObjectStore};

use super::StorageError;

/// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000` (MinIO); unset for AWS.
pub const ENV_ENDPOINT: &str = "CAIRN_S3_ENDPOINT";
/// Region; default `us-east-1`.
pub const ENV_REGION: &str = "CAIRN_S3_REGION";
/// `true` for path-style requests (`endpoint/bucket/key`), `false` for virtual-hosted
/// (`bucket.endpoint/key`); default `true` with a custom endpoint, `false` for AWS.
pub const ENV_PATH_STYLE: &str = "CAIRN_S3_PATH_STYLE";
/// Directory holding the files `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
/// `AWS_SESSION_TOKEN` (a mounted Secret); re-read every minute so rotated keys are picked up.
pub const ENV_CREDENTIALS_DIR: &str = "CAIRN_S3_CREDENTIALS_DIR";
/// `etag` (default): create-only writes use `If-None-Match: *`. `disabled`: the server lacks
/// conditional writes; Cairn then refuses to commit (see docs/s3.md).
pub const ENV_CONDITIONAL_PUT: &str = "CAIRN_S3_CONDITIONAL_PUT";

/// Standard AWS variable names read when the Cairn ones are unset.
const AWS_ENDPOINTS: &[&str] = &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];
const AWS_REGIONS: &[&str] = &["AWS_REGION", "AWS_DEFAULT_REGION"];
const KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET: &str = "AWS_SECRET_ACCESS_KEY";
const TOKEN: &str = "AWS_SESSION_TOKEN";

/// The variables of the AWS default credential chain that `object_store` reads, passed to it
/// only when Cairn uses that chain ([`S3Credentials::Ambient`]). Everything else about the
/// connection comes from [`S3Settings`], so no other `AWS_*` variable (`AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, a stray `AWS_SESSION_TOKEN`, ...) reaches a store.
const CREDENTIAL_CHAIN: &[(&str, AmazonS3ConfigKey)] = &[
    // Web identity (EKS IRSA).
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        AmazonS3ConfigKey::WebIdentityTokenFile,
    ),
    ("AWS_ROLE_ARN", AmazonS3ConfigKey::RoleArn),
    ("AWS_ROLE_SESSION_NAME", AmazonS3ConfigKey::RoleSessionName),
    ("AWS_ENDPOINT_URL_STS", AmazonS3ConfigKey::StsEndpoint),
    // ECS task roles and EKS Pod Identity.
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        AmazonS3ConfigKey::ContainerCredentialsFullUri,
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
    ),
    // Instance metadata.
    ("AWS_METADATA_ENDPOINT", AmazonS3ConfigKey::MetadataEndpoint),
    ("AWS_IMDSV1_FALLBACK", AmazonS3ConfigKey::ImdsV1Fallback),
];

/// How long credentials read from files are reused before the files are read again.
const CREDENTIAL_FILE_TTL: Duration = Duration::from_secs(60);

/// Where an S3 store takes its credentials from.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN` from the
    /// environment.
    Static {
        /// Access key id.
        key_id: String,
        /// Secret access key.
        secret: String,
        /// Session token of temporary credentials.
        token: Option<String>,
    },
    /// Files of that name in a directory (`CAIRN_S3_CREDENTIALS_DIR`).
    Dir(PathBuf),
    /// The AWS default chain of `object_store`: web identity (IRSA), ECS or instance metadata.
    Ambient,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Credentials::Static { key_id, token, .. } => f
                .debug_struct("Static")
                .field("key_id", key_id)
                .field("secret", &"******")
                .field("token", &token.as_ref().map(|_| "******"))
                .finish(),
            S3Credentials::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
            S3Credentials::Ambient => f.write_str("Ambient"),
        }
    }
}

/// Connection settings of S3 stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Path-style requests.
    pub path_style: bool,
    /// Conditional (`If-None-Match`) puts are available.
    pub conditional_put: bool,
    /// Credentials.
    pub credentials: S3Credentials,
}

impl S3Settings {
    /// Settings from this process's environment.
    pub fn from_env() -> Result<Self, StorageError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Settings from a variable lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, StorageError> {
        let first = |names: &[&str]| names.iter().find_map(|name| get(name));
        let endpoint = get(ENV_ENDPOINT).or_else(|| first(AWS_ENDPOINTS));
        if let Some(url) = &endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(config_error(
                    ENV_ENDPOINT,
                    format!("{url:?} is not an http:// or https:// URL"),
                    "set the server's URL, e.g. `http://minio.storage:9000`",
                ));
            }
        }
        let region = get(ENV_REGION)
            .or_else(|| first(AWS_REGIONS))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let path_style = match get(ENV_PATH_STYLE) {
            None => endpoint.is_some(),
            Some(v) => parse_bool(&v).ok_or_else(|| {
                config_error(
                    ENV_PATH_STYLE,
                    format!("{v:?} is not `true` or `false`"),
                    "write `true` (path-style, MinIO and most S3-compatible servers) or `false` \
                     (virtual-hosted, AWS)",
                )
            })?,
        };
        let conditional_put = match get(ENV_CONDITIONAL_PUT).as_deref() {
            None | Some("etag") => true,
            Some("disabled") => false,
            Some(other) => {
                return Err(config_error(
                    ENV_CONDITIONAL_PUT,
                    format!("{other:?} is not `etag` or `disabled`"),
                    "leave it unset (the server supports `If-None-Match: *`), or write \
                     `disabled` for a server that does not",
                ))
            }
        };
        let credentials = match (get(ENV_CREDENTIALS_DIR), get(KEY_ID), get(SECRET)) {
            (Some(dir), _, _) => S3Credentials::Dir(PathBuf::from(dir)),
            (None, Some(key_id), Some(secret)) => S3Credentials::Static {
                key_id,
                secret,
                token: get(TOKEN),
            },
            (None, Some(_), None) => {
                return Err(config_error(
                    SECRET,
                    "is unset while AWS_ACCESS_KEY_ID is set".to_owned(),
                    "set both (on Kubernetes from the same Secret), or mount the Secret and \
                     point CAIRN_S3_CREDENTIALS_DIR at it",
                ))
            }
            (None, None, Some(_)) => {
                return Err(config_error(
                    KEY_ID,
                    "is unset while AWS_SECRET_ACCESS_KEY is set".to_owned(),
                    "set both, or neither to use the instance's role",
                ))
            }
            (None, None, None) => S3Credentials::Ambient,
        };
        Ok(S3Settings {
            endpoint,
            region,
            path_style,
            conditional_put,
            credentials,
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn config_error(setting: &str, problem: String, fix: &str) -> StorageError {
    StorageError::Config {
        setting: setting.to_owned(),
        problem,
        fix: fix.to_owned(),
    }
}

/// Builds the object store for `bucket` with its root at `prefix`.
pub(crate) fn build(
    bucket: &str,
    prefix: &str,
    settings: &S3Settings,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let s3 = builder(bucket, settings, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })?
    .build()
    .map_err(|e| StorageError::object(&format!("s3://{bucket}"), e))?;
    Ok(if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    })
}

/// The client builder for `bucket` from `settings` alone, plus, for the ambient credential
/// chain, the [`CREDENTIAL_CHAIN`] variables found by `env`.
fn builder(
    bucket: &str,
    settings: &S3Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AmazonS3Builder, StorageError> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_conditional_put(if settings.conditional_put {
            S3ConditionalPut::ETagMatch
        } else {
            S3ConditionalPut::Disabled
        })
        .with_retry(super::object::retry_config())
        .with_client_options(super::object::client_options());
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            // An http:// endpoint is an explicit choice (MinIO in a cluster or a test).
            .with_allow_http(endpoint.starts_with("http://"));
    }
    builder = match &settings.credentials {
        S3Credentials::Static {
            key_id,
            secret,
            token,
        } => {
            let b = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret);
            match token {
                Some(token) => b.with_token(token),
                None => b,
            }
        }
        S3Credentials::Dir(dir) => {
            let files = FileCredentials::new(dir.clone());
            // Fail at open, naming the file, rather than at the first request.
            files.read()?;
            builder.with_credentials(Arc::new(files))
        }
        S3Credentials::Ambient => CREDENTIAL_CHAIN
            .iter()
            .fold(builder, |builder, (name, key)| match env(name) {
                Some(value) => builder.with_config(*key, value),
                None => builder,
            }),
    };
    Ok(builder)
}

/// Credentials read from files named like the AWS variables, re-read after
/// [`CREDENTIAL_FILE_TTL`] so a rotated Secret takes effect without a restart.
#[derive(Debug)]
struct FileCredentials {
    dir: PathBuf,
    cached: Mutex<Option<(Instant, Arc<AwsCredential>)>>,
}

impl FileCredentials {
    fn new(dir: PathBuf) -> Self {
        FileCredentials {
            dir,
            cached: Mutex::new(None),
        }
    }

    fn read(&self) -> Result<Arc<AwsCredential>, StorageError> {
        let file = |name: &str, required: bool| -> Result<Option<String>, StorageError> {
            let path = self.dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
                Ok(_) if required => Err(missing(&path, "is empty")),
                Err(e) if required => Err(missing(&path, &e.to_string())),
                _ => Ok(None),
            }
        };
        let key_id = file(KEY_ID, true)?.unwrap_or_default();
        let secret_key = file(SECRET, true)?.unwrap_or_default();
        let token = file(TOKEN, false)?;
        Ok(Arc::new(AwsCredential {
            key_id,
            secret_key,
            token,
        }))
    }
}

fn missing(path: &Path, problem: &str) -> StorageError {
    config_error(
        ENV_CREDENTIALS_DIR,
        format!("{}: {problem}", path.display()),
        "mount a Secret with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
         optionally AWS_SESSION_TOKEN) at that directory",
    )
}

#[async_trait::async_trait]
impl CredentialProvider for FileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        {
            let cached = self.cached.lock().expect("credential cache lock");
            if let Some((at, credential)) = cached.as_ref() {
                if at.elapsed() < CREDENTIAL_FILE_TTL {
                    return Ok(Arc::clone(credential));
                }
            }
        }
        let credential = self.read().map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
        *self.cached.lock().expect("credential cache lock") =
            Some((Instant::now(), Arc::clone(&credential)));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<S3Settings, StorageError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        S3Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_aws_with_the_ambient_chain() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.region, "us-east-1");
        assert!(!s.path_style);
        assert!(s.conditional_put);
        assert_eq!(s.credentials, S3Credentials::Ambient);
    }

    #[test]
    fn cairn_names_win_over_aws_names_and_endpoints_imply_path_style() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "https://aws.example"),
            (ENV_ENDPOINT, "http://127.0.0.1:9000"),
            ("AWS_REGION", "eu-west-1"),
            (ENV_REGION, "minio"),
            (KEY_ID, "id"),
            (SECRET, "s3cr3t"),
            (TOKEN, "tok"),
        ])
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region, "minio");
        assert!(s.path_style);
        assert_eq!(
            s.credentials,
            S3Credentials::Static {
                key_id: "id".into(),
                secret: "s3cr3t".into(),
                token: Some("tok".into())
            }
        );
        // The secret never shows in Debug output (logs, panics).
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok\""),
            "{shown}"
        );
        let s = settings(&[(ENV_CREDENTIALS_DIR, "/var/run/secrets/s3"), (KEY_ID, "x")]).unwrap();
        assert_eq!(
            s.credentials,
            S3Credentials::Dir("/var/run/secrets/s3".into())
        );
        let s = settings(&[
            (ENV_ENDPOINT, "https://s3.local"),
            (ENV_PATH_STYLE, "false"),
        ])
        .unwrap();
        assert!(!s.path_style);
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_fix() {
        for (vars, setting, problem) in [
            (
                vec![(ENV_ENDPOINT, "minio:9000")],
                ENV_ENDPOINT,
                "\"minio:9000\" is not an http:// or https:// URL",
            ),
            (
                vec![(ENV_PATH_STYLE, "maybe")],
                ENV_PATH_STYLE,
                "\"maybe\" is not `true` or `false`",
            ),
            (
                vec![(KEY_ID, "id")],
                SECRET,
                "is unset while AWS_ACCESS_KEY_ID is set",
            ),
            (
                vec![(ENV_CONDITIONAL_PUT, "sometimes")],
                ENV_CONDITIONAL_PUT,
                "\"sometimes\" is not `etag` or `disabled`",
            ),
        ] {
            let err = settings(&vars).unwrap_err();
            match &err {
                StorageError::Config {
                    setting: s,
                    problem: p,
                    ..
                } => {
                    assert_eq!(s, setting);
                    assert_eq!(p, problem);
                }
                other => panic!("{other:?}"),
            }
            assert!(err
                .to_string()
                .starts_with(&format!("{setting}: {problem}; ")));
        }
    }

    #[test]
    fn only_settings_and_the_ambient_chain_reach_the_client() {
        let env: BTreeMap<&str, &str> = [
            ("AWS_ENDPOINT", "http://stray.example"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_SESSION_TOKEN", "stray-token"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/cairn"),
            ("AWS_ROLE_SESSION_NAME", "cairn"),
            ("AWS_ENDPOINT_URL_STS", "https://sts.example"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            ),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1",
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pod",
            ),
            ("AWS_METADATA_ENDPOINT", "http://169.254.169.254"),
            ("AWS_IMDSV1_FALLBACK", "true"),
        ]
        .into_iter()
        .collect();
        let lookup = |name: &str| env.get(name).map(|v| (*v).to_owned());
        let get = |b: &AmazonS3Builder, key| b.get_config_value(&key);
        use AmazonS3ConfigKey as K;

        // Ambient: the chain's variables pass, nothing else does.
        let ambient = settings(&[]).unwrap();
        let b = builder("b", &ambient, lookup).unwrap();
        for (name, key) in CREDENTIAL_CHAIN {
            assert_eq!(get(&b, *key).as_deref(), Some(env[name]), "{name}");
        }
        assert_eq!(get(&b, K::Endpoint), None);
        assert_eq!(get(&b, K::Token), None);
        assert_eq!(
            get(&b, K::VirtualHostedStyleRequest).as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&b, K::Client(object_store::ClientConfigKey::AllowHttp)).as_deref(),
            Some("false")
        );

        // Static keys and MinIO: the settings only, not even the chain.
        let minio = settings(&[
            (ENV_ENDPOINT, "http://127.0.0.1:9000"),
            (KEY_ID, "id"),
            (SECRET, "secret"),
        ])
        .unwrap();
        let b = builder("b", &minio, lookup).unwrap();
        assert_eq!(
            get(&b, K::Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            get(&b, K::VirtualHostedStyleRequest).as_deref(),
            Some("false")
        );
        assert_eq!(get(&b, K::AccessKeyId).as_deref(), Some("id"));
        assert_eq!(get(&b, K::Token), None);
        let untouched = AmazonS3Builder::new();
        for (name, key) in CREDENTIAL_CHAIN {
            assert_eq!(get(&b, *key), get(&untouched, *key), "{name}");
        }
    }

    #[test]
    fn credential_files_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileCredentials::new(dir.path().to_path_buf());
        let err = files.read().unwrap_err().to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(err.starts_with("CAIRN_S3_CREDENTIALS_DIR: "), "{err}");
        std::fs::write(dir.path().join(KEY_ID), "id\n").unwrap();
        std::fs::write(dir.path().join(SECRET), "secret\n").unwrap();
        let c = files.read().unwrap();
        assert_eq!((c.key_id.as_str(), c.secret_key.as_str()), ("id", "secret"));
        assert_eq!(c.token, None);
        std::fs::write(dir.path().join(TOKEN), "t").unwrap();
        assert_eq!(files.read().unwrap().token.as_deref(), Some("t"));
    }
}

//! Pod volumes as host directories under the pod directory, bind-mounted into containers:
//! `emptyDir` (a plain directory, also for `medium: Memory`), `hostPath`, and the payload
//! volumes `configMap`, `secret`, `downwardAPI` and `projected` (service-account token from the
//! TokenRequest API, ConfigMaps such as `kube-root-ca.crt`, Secrets, downward API) written with
//! the atomic writer and refreshed by calling [`PodVolumes::sync`] again. Persistent volume
//! claims and other volume types are refused with a message naming the volume: the test bed has
//! no storage provisioner.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume, VolumeProjection,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::atomic::{self, AtomicError, Payload};
use crate::downward::{self, Addresses, FieldError};
use crate::objects::{self, Kind};

/// Default file mode of payload volumes (kubelet's 0644).
const DEFAULT_MODE: u32 = 0o644;
/// Default lifetime of a projected service-account token.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// A volume could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A volume type the agent does not implement.
    #[error(
        "volume {volume:?}: {kind} volumes are not supported by the test bed's node agent ({hint})"
    )]
    Unsupported {
        /// Volume name.
        volume: String,
        /// Its type.
        kind: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// A referenced ConfigMap or Secret does not exist.
    #[error("volume {volume:?}: {kind} {namespace}/{name} not found (create it, or mark the volume optional)")]
    NotFound {
        /// Volume name.
        volume: String,
        /// Kind.
        kind: Kind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// An item names a key the object does not have.
    #[error("volume {volume:?}: {kind} {name} has no key {key:?}")]
    MissingKey {
        /// Volume name.
        volume: String,
        /// Kind.
        kind: Kind,
        /// Object name.
        name: String,
        /// Key.
        key: String,
    },
    /// An API request failed.
    #[error("volume {volume:?}: {what}: {source}")]
    Api {
        /// Volume name.
        volume: String,
        /// The request.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A hostPath does not match its declared type.
    #[error("volume {volume:?}: hostPath {path} {problem}")]
    HostPath {
        /// Volume name.
        volume: String,
        /// Path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A downward API item cannot be resolved.
    #[error("volume {volume:?}: {source}")]
    Field {
        /// Volume name.
        volume: String,
        /// Cause.
        #[source]
        source: FieldError,
    },
    /// Writing the files failed.
    #[error("volume {volume:?}: {source}")]
    Write {
        /// Volume name.
        volume: String,
        /// Cause.
        #[source]
        source: AtomicError,
    },
}

/// What [`PodVolumes::sync`] needs to know about the pod.
pub struct VolumeContext<'a> {
    /// API client.
    pub client: &'a Client,
    /// The pod.
    pub pod: &'a Pod,
    /// Its addresses (for downward API files).
    pub addrs: Addresses,
    /// `<root>/<ns>_<pod>/volumes`.
    pub volumes_dir: &'a Path,
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// The volumes of one pod.
#[derive(Debug, Default)]
pub struct PodVolumes {
    dirs: BTreeMap<String, PathBuf>,
    tokens: HashMap<(String, String, i64), CachedToken>,
}

impl PodVolumes {
    /// The host directory of a prepared volume.
    pub fn host_dir(&self, name: &str) -> Option<&Path> {
        self.dirs.get(name).map(PathBuf::as_path)
    }

    /// Prepares every volume of the pod, or brings payload volumes up to date. Idempotent.
    pub async fn sync(&mut self, ctx: &VolumeContext<'_>) -> Result<(), VolumeError> {
        let volumes = ctx
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for volume in &volumes {
            let dir = self.sync_one(ctx, volume).await?;
            self.dirs.insert(volume.name.clone(), dir);
        }
        Ok(())
    }

    async fn sync_one(
        &mut self,
        ctx: &VolumeContext<'_>,
        volume: &Volume,
    ) -> Result<PathBuf, VolumeError> {
        let name = volume.name.clone();
        let dir = ctx.volumes_dir.join(&name);
        let write = |payload: &Payload| {
            atomic::write(&dir, payload).map_err(|source| VolumeError::Write {
                volume: name.clone(),
                source,
            })
        };
        let namespace = ctx.pod.metadata.namespace.clone().unwrap_or_default();
        if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| VolumeError::Write {
                volume: name.clone(),
                source: AtomicError::Io {
                    path: dir.clone(),
                    source: e,
                },
            })?;
            return Ok(dir);
        }
        if let Some(host) = &volume.host_path {
            return host_path(&name, &host.path, host.type_.as_deref());
        }
        if let Some(keys) = KeysSource::volume(volume) {
            write(&keys_payload(ctx.client, &name, &namespace, keys).await?)?;
            return Ok(dir);
        }
        if let Some(d) = &volume.downward_api {
            let payload = downward_payload(
                &name,
                ctx,
                d.items.as_deref().unwrap_or_default(),
                mode(d.default_mode, DEFAULT_MODE),
            )?;
            write(&payload)?;
            return Ok(dir);
        }
        if let Some(projected) = &volume.projected {
            let default_mode = mode(projected.default_mode, DEFAULT_MODE);
            let mut payload = Payload::new();
            for source in projected.sources.as_deref().unwrap_or_default() {
                if let Some(sat) = &source.service_account_token {
                    let token = self
                        .token(ctx, &name, sat.audience.as_deref(), sat.expiration_seconds)
                        .await?;
                    payload.insert(sat.path.clone(), (token.into_bytes(), default_mode));
                } else if let Some(keys) = KeysSource::projected(source, default_mode) {
                    payload.extend(keys_payload(ctx.client, &name, &namespace, keys).await?);
                } else if let Some(d) = &source.downward_api {
                    payload.extend(downward_payload(
                        &name,
                        ctx,
                        d.items.as_deref().unwrap_or_default(),
                        default_mode,
                    )?);
                } else {
                    return Err(VolumeError::Unsupported {
                        volume: name.clone(),
                        kind: "projected clusterTrustBundle/podCertificate",
                        hint: "project serviceAccountToken, configMap, secret or downwardAPI",
                    });
                }
            }
            write(&payload)?;
            return Ok(dir);
        }
        let (kind, hint) = if volume.persistent_volume_claim.is_some() || volume.ephemeral.is_some()
        {
            (
                "persistentVolumeClaim/ephemeral",
                "there is no storage provisioner; use emptyDir, or hostPath for data shared between pods",
            )
        } else {
            (
                "this type of",
                "use emptyDir, hostPath, configMap, secret, downwardAPI or projected",
            )
        };
        Err(VolumeError::Unsupported {
            volume: name,
            kind,
            hint,
        })
    }

    /// A service-account token for the pod, from the cache while it is younger than 80% of its
    /// lifetime (kubelet's refresh rule), else from the TokenRequest API, bound to the pod.
    async fn token(
        &mut self,
        ctx: &VolumeContext<'_>,
        volume: &str,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<String, VolumeError> {
        let pod = ctx.pod;
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let seconds = expiration.unwrap_or(DEFAULT_TOKEN_SECONDS);
        let key = (
            sa.clone(),
            audience.unwrap_or_default().to_string(),
            seconds,
        );
        if let Some(cached) = self.tokens.get(&key) {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience
                    .filter(|a| !a.is_empty())
                    .map(|a| vec![a.to_string()])
                    .unwrap_or_default(),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
        let response: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|source| VolumeError::Api {
                volume: volume.to_string(),
                what: format!("requesting a token for service account {namespace}/{sa}"),
                source,
            })?;
        let token = response.status.map(|s| s.token).unwrap_or_default();
        let lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(600));
        self.tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                refresh_at: Instant::now() + lifetime.mul_f64(0.8),
            },
        );
        Ok(token)
    }
}

/// A file mode from the API (`defaultMode`, an item's `mode`): its permission bits, or
/// `default` when unset.
fn mode(value: Option<i32>, default: u32) -> u32 {
    value.map_or(default, |m| m as u32 & 0o7777)
}

fn host_path(volume: &str, path: &str, kind: Option<&str>) -> Result<PathBuf, VolumeError> {
    let p = PathBuf::from(path);
    let problem = |problem: &str| VolumeError::HostPath {
        volume: volume.to_string(),
        path: path.to_string(),
        problem: problem.to_string(),
    };
    if !p.is_absolute() {
        return Err(problem("must be an absolute path"));
    }
    match kind.unwrap_or("") {
        "DirectoryOrCreate" => {
            std::fs::create_dir_all(&p).map_err(|e| problem(&format!("cannot be created: {e}")))?
        }
        "Directory" if !p.is_dir() => return Err(problem("is not an existing directory")),
        "File" if !p.is_file() => return Err(problem("is not an existing file")),
        "FileOrCreate" if !p.exists() => {
            std::fs::write(&p, b"").map_err(|e| problem(&format!("cannot be created: {e}")))?
        }
        "" | "Directory" | "File" | "FileOrCreate" => {}
        other => {
            return Err(problem(&format!(
                "has type {other:?}, which the node agent does not support (use \"\", Directory, DirectoryOrCreate, File or FileOrCreate)"
            )))
        }
    }
    if !p.exists() {
        return Err(problem(
            "does not exist (set type: DirectoryOrCreate to create it)",
        ));
    }
    Ok(p)
}

/// A ConfigMap or Secret whose keys become the files of a volume or of one projection.
struct KeysSource<'a> {
    kind: Kind,
    name: &'a str,
    /// Which keys go to which paths; all keys under their own names when absent or empty.
    items: Option<&'a [KeyToPath]>,
    default_mode: u32,
    optional: bool,
}

impl<'a> KeysSource<'a> {
    /// The ConfigMap or Secret of a `configMap` or `secret` volume, if it is one of those.
    fn volume(volume: &'a Volume) -> Option<KeysSource<'a>> {
        if let Some(cm) = &volume.config_map {
            return Some(KeysSource {
                kind: Kind::ConfigMap,
                name: &cm.name,
                items: cm.items.as_deref(),
                default_mode: mode(cm.default_mode, DEFAULT_MODE),
                optional: cm.optional.unwrap_or(false),
            });
        }
        volume.secret.as_ref().map(|secret| KeysSource {
            kind: Kind::Secret,
            name: secret.secret_name.as_deref().unwrap_or_default(),
            items: secret.items.as_deref(),
            default_mode: mode(secret.default_mode, DEFAULT_MODE),
            optional: secret.optional.unwrap_or(false),
        })
    }

    /// The ConfigMap or Secret of a projected volume's source, if it is one of those.
    fn projected(source: &'a VolumeProjection, default_mode: u32) -> Option<KeysSource<'a>> {
        if let Some(cm) = &source.config_map {
            return Some(KeysSource {
                kind: Kind::ConfigMap,
                name: &cm.name,
                items: cm.items.as_deref(),
                default_mode,
                optional: cm.optional.unwrap_or(false),
            });
        }
        source.secret.as_ref().map(|secret| KeysSource {
            kind: Kind::Secret,
            name: &secret.name,
            items: secret.items.as_deref(),
            default_mode,
            optional: secret.optional.unwrap_or(false),
        })
    }
}

/// The files of a ConfigMap or Secret volume (or projection) of volume `volume`.
async fn keys_payload(
    client: &Client,
    volume: &str,
    namespace: &str,
    source: KeysSource<'_>,
) -> Result<Payload, VolumeError> {
    let KeysSource {
        kind,
        name,
        items,
        default_mode,
        optional,
    } = source;
    let data = objects::read(client, kind, namespace, name)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.to_string(),
            what: format!("reading {kind} {namespace}/{name}"),
            source,
        })?;
    let Some(data) = data else {
        if optional {
            return Ok(Payload::new());
        }
        return Err(VolumeError::NotFound {
            volume: volume.to_string(),
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    };
    let mut payload = Payload::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        let m = mode(item.mode, default_mode);
                        payload.insert(item.path.clone(), (bytes.clone(), m));
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            volume: volume.to_string(),
                            kind,
                            name: name.to_string(),
                            key: item.key.clone(),
                        })
                    }
                }
            }
        }
        _ => {
            for (key, bytes) in data {
                payload.insert(key, (bytes, default_mode));
            }
        }
    }
    Ok(payload)
}

fn downward_payload(
    volume: &str,
    ctx: &VolumeContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(VolumeError::Unsupported {
                volume: volume.to_string(),
                kind: "downwardAPI resourceFieldRef",
                hint: "use fieldRef items",
            });
        };
        let value = downward::field_value(ctx.pod, &field.field_path, ctx.addrs, true).map_err(
            |source| VolumeError::Field {
                volume: volume.to_string(),
                source,
            },
        )?;
        payload.insert(
            item.path.clone(),
            (value.into_bytes(), mode(item.mode, default_mode)),
        );
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_keep_the_permission_bits_or_take_the_default() {
        assert_eq!(mode(None, DEFAULT_MODE), 0o644);
        assert_eq!(mode(Some(0o400), DEFAULT_MODE), 0o400);
        // File-type bits above the permissions are dropped.
        assert_eq!(mode(Some(0o100_755), 0o644), 0o755);
        assert_eq!(mode(Some(0o4755), 0o644), 0o4755);
    }

    #[test]
    fn host_path_types() {
        let base = std::env::temp_dir().join(format!("cairn-hostpath-{}", std::process::id()));
        let dir = base.join("made");
        let got = host_path("data", dir.to_str().unwrap(), Some("DirectoryOrCreate")).unwrap();
        assert!(got.is_dir());
        let err = host_path("data", base.join("nope").to_str().unwrap(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "volume \"data\": hostPath {} does not exist (set type: DirectoryOrCreate to create it)",
                base.join("nope").display()
            )
        );
        assert!(host_path("data", "relative", None).is_err());
        assert!(host_path("data", dir.to_str().unwrap(), Some("Socket")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}

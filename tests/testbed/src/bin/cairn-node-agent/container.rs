//! From a container of the pod spec to the process to start: the image's binary (images map to
//! binaries built from this workspace), `command`/`args` with `$(VAR)` expansion, the
//! environment (literal values, `fieldRef`, ConfigMap and Secret keys, `envFrom`, the API
//! server's address) and the bind mounts of its volumes. A container that cannot start gets the
//! waiting reason kubelet would report, with a message that names the problem and the fix.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;

use crate::config::Config;
use crate::downward::{self, Addresses};
use crate::expand::expand;
use crate::objects::{self, Kind};
use crate::runtime::{BindMount, LaunchSpec};
use crate::volumes::PodVolumes;

/// Why a container cannot start: a kubelet waiting reason and a message for `kubectl describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// `ErrImagePull`, `CreateContainerError` or `CreateContainerConfigError`.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl StartFailure {
    fn config(message: String) -> StartFailure {
        StartFailure {
            reason: "CreateContainerConfigError",
            message,
        }
    }
}

/// The binary an image runs: its repository (no tag, no digest) looked up in the image map,
/// also without a leading registry host (`localhost:5000/cairn/worker` finds `cairn/worker`).
pub fn binary_for_image<'a>(
    images: &'a BTreeMap<String, PathBuf>,
    image: &str,
) -> Result<&'a Path, StartFailure> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repository = match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    if let Some(path) = images.get(repository) {
        return Ok(path);
    }
    if let Some((host, rest)) = repository.split_once('/') {
        if host.contains('.') || host.contains(':') || host == "localhost" {
            if let Some(path) = images.get(rest) {
                return Ok(path);
            }
        }
    }
    let known: Vec<&str> = images.keys().map(String::as_str).collect();
    Err(StartFailure {
        reason: "ErrImagePull",
        message: format!(
            "image {image:?} (repository {repository:?}) is not mapped to a binary; the node agent knows {}. Start it with --image {repository}=/path/to/binary or use one of those images",
            if known.is_empty() { "no images".to_string() } else { known.join(", ") }
        ),
    })
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// The program for `command[0]`: a mapped binary with that base name (the image's own first).
fn binary_for_command<'a>(
    images: &'a BTreeMap<String, PathBuf>,
    image_binary: &'a Path,
    command0: &str,
) -> Result<&'a Path, StartFailure> {
    let base = Path::new(command0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(command0);
    if file_name(image_binary) == Some(base) {
        return Ok(image_binary);
    }
    if let Some(path) = images.values().find(|p| file_name(p) == Some(base)) {
        return Ok(path);
    }
    let mut names: Vec<&str> = images.values().filter_map(|p| file_name(p)).collect();
    names.sort_unstable();
    names.dedup();
    Err(StartFailure {
        reason: "CreateContainerError",
        message: format!(
            "command {command0:?}: the node agent runs only the mapped binaries ({}); set command[0] to a path ending in one of them, or leave command empty to run the image's binary",
            names.join(", ")
        ),
    })
}

/// What resolving a container needs to know about its pod.
pub struct PodContext<'a> {
    /// API client (ConfigMap and Secret keys).
    pub client: &'a Client,
    /// Agent configuration.
    pub config: &'a Config,
    /// The pod.
    pub pod: &'a Pod,
    /// Its addresses.
    pub addrs: Addresses,
    /// Its prepared volumes.
    pub volumes: &'a PodVolumes,
    /// `<root>/<ns>_<pod>`.
    pub pod_dir: &'a Path,
    /// The pod's hosts file, mounted on `/etc/hosts`.
    pub hosts_file: &'a Path,
    /// The pod's network namespace file.
    pub netns_path: &'a Path,
    /// The pod's hostname.
    pub hostname: &'a str,
    /// `KUBERNETES_SERVICE_PORT`.
    pub api_port: u16,
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Variables in definition order; redefining one keeps its place and takes the new value.
#[derive(Default)]
struct EnvList {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        if self.values.insert(name.clone(), value).is_none() {
            self.order.push(name);
        }
    }

    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|k| {
                let v = self.values.remove(&k).unwrap_or_default();
                (k, v)
            })
            .collect()
    }
}

/// Reads one key of a ConfigMap or Secret for an env var.
async fn env_key(
    ctx: &PodContext<'_>,
    var: &str,
    kind: Kind,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, StartFailure> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or_default();
    let data = objects::read(ctx.client, kind, namespace, name)
        .await
        .map_err(|e| {
            StartFailure::config(format!("env {var}: reading {kind} {namespace}/{name}: {e}"))
        })?;
    match data.as_ref().and_then(|d| d.get(key)) {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        None if optional => Ok(None),
        None if data.is_none() => Err(StartFailure::config(format!(
            "env {var}: {kind} {namespace}/{name} not found (create it, or mark the reference optional)"
        ))),
        None => Err(StartFailure::config(format!(
            "env {var}: {kind} {namespace}/{name} has no key {key:?}"
        ))),
    }
}

/// The container's environment in kubelet's order: `envFrom`, then `env` (each value expanded
/// with the variables defined before it), over a base of PATH, HOME, HOSTNAME and the API
/// server's `KUBERNETES_SERVICE_*`.
async fn environment(
    ctx: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, StartFailure> {
    let host = &ctx.config.api_host;
    let port = ctx.api_port.to_string();
    let mut env = EnvList::default();
    for (k, v) in [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME", "/root".to_string()),
        ("HOSTNAME", ctx.hostname.to_string()),
        ("KUBERNETES_SERVICE_HOST", host.clone()),
        ("KUBERNETES_SERVICE_PORT", port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
        ("KUBERNETES_PORT", format!("tcp://{host}:{port}")),
    ] {
        env.set(k.to_string(), v);
    }
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or_default();
    // As in kubelet, `$(VAR)` may refer to the service variables and to earlier variables,
    // not to what the image sets (PATH, HOME).
    let mut defined: HashMap<String, String> = env
        .values
        .iter()
        .filter(|(k, _)| k.starts_with("KUBERNETES_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for from in container.env_from.as_deref().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(cm), _) => (
                Kind::ConfigMap,
                cm.name.clone(),
                cm.optional.unwrap_or(false),
            ),
            (None, Some(s)) => (Kind::Secret, s.name.clone(), s.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        let data = objects::read(ctx.client, kind, namespace, &name)
            .await
            .map_err(|e| {
                StartFailure::config(format!("envFrom: reading {kind} {namespace}/{name}: {e}"))
            })?;
        match data {
            Some(data) => {
                for (key, bytes) in data {
                    let var = format!("{prefix}{key}");
                    // Kubelet skips keys that are not valid variable names (with an event).
                    if valid_env_name(&var) {
                        let value = String::from_utf8_lossy(&bytes).into_owned();
                        defined.insert(var.clone(), value.clone());
                        env.set(var, value);
                    }
                }
            }
            None if optional => {}
            None => {
                return Err(StartFailure::config(format!(
                    "envFrom: {kind} {namespace}/{name} not found (create it, or mark it optional)"
                )))
            }
        }
    }
    for var in container.env.as_deref().unwrap_or_default() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                Some(
                    downward::field_value(ctx.pod, &field.field_path, ctx.addrs, false)
                        .map_err(|e| StartFailure::config(format!("env {}: {e}", var.name)))?,
                )
            } else {
                let (kind, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), _) => (Kind::ConfigMap, &r.name, &r.key, r.optional),
                    (None, Some(r)) => (Kind::Secret, &r.name, &r.key, r.optional),
                    (None, None) => {
                        return Err(StartFailure::config(format!(
                            "env {}: only fieldRef, configMapKeyRef and secretKeyRef are supported by the test bed's node agent (not resourceFieldRef or fileKeyRef)",
                            var.name
                        )))
                    }
                };
                env_key(ctx, &var.name, kind, name, key, optional.unwrap_or(false)).await?
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            Some(expand(&raw, |name| defined.get(name).cloned()))
        };
        if let Some(value) = value {
            defined.insert(var.name.clone(), value.clone());
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.into_vec())
}

fn relative_ok(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The container's bind mounts: its volume mounts (with `subPath`/`subPathExpr`), then the
/// pod's hosts file on `/etc/hosts` unless the container mounts something there itself.
fn mounts(
    ctx: &PodContext<'_>,
    container: &Container,
    env: &HashMap<String, String>,
) -> Result<Vec<BindMount>, StartFailure> {
    let mut out = Vec::new();
    for m in container.volume_mounts.as_deref().unwrap_or_default() {
        let dir = ctx.volumes.host_dir(&m.name).ok_or_else(|| {
            StartFailure::config(format!(
                "volumeMount {:?}: the pod has no volume named {:?}",
                m.mount_path, m.name
            ))
        })?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, |n| env.get(n).cloned())),
            _ => None,
        };
        let source = match sub {
            Some(sub) => {
                if !relative_ok(&sub) {
                    return Err(StartFailure::config(format!(
                        "volumeMount {:?}: subPath {sub:?} must be relative and must not contain '..'",
                        m.mount_path
                    )));
                }
                let source = dir.join(&sub);
                if !source.exists() {
                    // Kubelet creates a missing subPath as a directory.
                    std::fs::create_dir_all(&source).map_err(|e| {
                        StartFailure::config(format!("subPath {}: {e}", source.display()))
                    })?;
                }
                source
            }
            None => dir.to_path_buf(),
        };
        out.push(BindMount {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    if !out.iter().any(|m| m.target == Path::new("/etc/hosts")) {
        out.push(BindMount {
            source: ctx.hosts_file.to_path_buf(),
            target: PathBuf::from("/etc/hosts"),
            read_only: false,
        });
    }
    Ok(out)
}

/// Resolves everything needed to start `container` (its restart `restart`).
pub async fn launch_spec(
    ctx: &PodContext<'_>,
    container: &Container,
    restart: i32,
) -> Result<LaunchSpec, StartFailure> {
    let image = container.image.clone().unwrap_or_default();
    let image_binary = binary_for_image(&ctx.config.images, &image)?;
    let env = environment(ctx, container).await?;
    let env_map: HashMap<String, String> = env.iter().cloned().collect();
    let lookup = |name: &str| env_map.get(name).cloned();
    let command: Vec<String> = container
        .command
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| expand(c, lookup))
        .collect();
    let args = container
        .args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| expand(a, lookup));
    let (program, mut argv) = match command.split_first() {
        Some((first, rest)) => (
            binary_for_command(&ctx.config.images, image_binary, first)?,
            rest.to_vec(),
        ),
        None => (image_binary, Vec::new()),
    };
    argv.extend(args);
    let mounts = mounts(ctx, container, &env_map)?;
    let working_dir = match container.working_dir.as_deref() {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // No image file system: relative paths land in a per-container scratch directory.
        _ => ctx.pod_dir.join("cwd").join(&container.name),
    };
    let pod = ctx.pod;
    Ok(LaunchSpec {
        program: program.to_path_buf(),
        args: argv,
        env,
        working_dir,
        log_path: ctx.pod_dir.join(format!("{}.log", container.name)),
        netns_path: ctx.netns_path.to_path_buf(),
        hostname: ctx.hostname.to_string(),
        mounts,
        banner: format!(
            "{}{}: container {} of pod {}/{} (uid {}), restart {restart}, image {image} -> {} ===",
            crate::runtime::BANNER_PREFIX,
            k8s_openapi::jiff::Timestamp::now(),
            container.name,
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
            program.display(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> BTreeMap<String, PathBuf> {
        BTreeMap::from([
            (
                "cairn/worker".to_string(),
                PathBuf::from("/t/debug/cairn-worker"),
            ),
            (
                "cairn/operator".to_string(),
                PathBuf::from("/t/debug/cairn-operator"),
            ),
        ])
    }

    #[test]
    fn image_lookup_strips_tag_digest_and_registry() {
        let m = images();
        let worker = Path::new("/t/debug/cairn-worker");
        assert_eq!(binary_for_image(&m, "cairn/worker").unwrap(), worker);
        assert_eq!(binary_for_image(&m, "cairn/worker:0.1.0").unwrap(), worker);
        assert_eq!(
            binary_for_image(&m, "cairn/worker@sha256:abc").unwrap(),
            worker
        );
        assert_eq!(
            binary_for_image(&m, "localhost:5000/cairn/worker:dev").unwrap(),
            worker
        );
        let err = binary_for_image(&m, "nginx:1.27").unwrap_err();
        assert_eq!(err.reason, "ErrImagePull");
        assert_eq!(
            err.message,
            "image \"nginx:1.27\" (repository \"nginx\") is not mapped to a binary; the node agent knows cairn/operator, cairn/worker. Start it with --image nginx=/path/to/binary or use one of those images"
        );
    }

    #[test]
    fn command_must_name_a_mapped_binary() {
        let m = images();
        let worker = Path::new("/t/debug/cairn-worker");
        assert_eq!(
            binary_for_command(&m, worker, "/usr/local/bin/cairn-worker").unwrap(),
            worker
        );
        assert_eq!(
            binary_for_command(&m, worker, "cairn-operator").unwrap(),
            Path::new("/t/debug/cairn-operator")
        );
        let err = binary_for_command(&m, worker, "/bin/sh").unwrap_err();
        assert_eq!(err.reason, "CreateContainerError");
        assert!(
            err.message.contains("(cairn-operator, cairn-worker)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("CAIRN_X"));
        assert!(valid_env_name("a.b-c"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A B"));
    }
}

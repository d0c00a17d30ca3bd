//! The downward API: the value of a `fieldRef` path of a pod, for env vars and downwardAPI
//! volume files, with kubelet's formats (labels and annotations as sorted `key="value"` lines).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

/// A field path the agent cannot resolve.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// Not one of the supported paths.
    #[error("fieldRef {path:?} is not supported{}; use metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP or status.hostIPs", if *in_volume { " in a downwardAPI volume" } else { "" })]
    Unsupported {
        /// The path.
        path: String,
        /// Whether it was in a volume (fewer paths are allowed there).
        in_volume: bool,
    },
}

/// Addresses known to the agent before the pod's status says them.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
}

/// `key="value"` lines, sorted by key (kubelet's `FormatMap`).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// `metadata.labels['key']` -> `Some(("labels", "key"))`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.strip_prefix("metadata.")?.split_once('[')?;
    let key = rest.strip_suffix(']')?;
    let key = key
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
    Some((field, key))
}

/// Resolves `path` for `pod`. `in_volume` restricts it to the paths kubelet allows in
/// downwardAPI volumes (metadata only).
pub fn field_value(
    pod: &Pod,
    path: &str,
    addrs: Addresses,
    in_volume: bool,
) -> Result<String, FieldError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let unsupported = || FieldError::Unsupported {
        path: path.to_string(),
        in_volume,
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        _ if in_volume && !path.starts_with("metadata.") => return Err(unsupported()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => addrs.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => addrs.host_ip.to_string(),
        _ => match subscript(path) {
            Some(("labels", key)) => meta
                .labels
                .as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
            Some(("annotations", key)) => meta
                .annotations
                .as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
            _ => return Err(unsupported()),
        },
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "jobs", "uid": "u-1",
                          "labels": {"b": "2", "a": "x\"y"}, "annotations": {"note": "hi"}},
            "spec": {"nodeName": "node-a", "containers": []}
        }))
        .unwrap()
    }

    #[test]
    fn resolves_supported_paths() {
        let addrs = Addresses {
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            host_ip: Ipv4Addr::new(10, 244, 1, 1),
        };
        let p = pod();
        let get = |path| field_value(&p, path, addrs, false).unwrap();
        assert_eq!(get("metadata.name"), "web-0");
        assert_eq!(get("metadata.namespace"), "jobs");
        assert_eq!(get("metadata.uid"), "u-1");
        assert_eq!(get("metadata.labels"), "a=\"x\\\"y\"\nb=\"2\"");
        assert_eq!(get("metadata.labels['b']"), "2");
        assert_eq!(get("metadata.annotations['note']"), "hi");
        assert_eq!(get("metadata.annotations['missing']"), "");
        assert_eq!(get("spec.nodeName"), "node-a");
        assert_eq!(get("spec.serviceAccountName"), "default");
        assert_eq!(get("status.podIP"), "10.244.1.5");
        assert_eq!(get("status.hostIP"), "10.244.1.1");
        let err = field_value(&p, "spec.nodeName", addrs, true).unwrap_err();
        assert!(err.to_string().contains("in a downwardAPI volume"));
        assert!(field_value(&p, "metadata.generateName", addrs, false).is_err());
    }
}

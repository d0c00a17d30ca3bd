//! Kubeconfig files for the test cluster: self-contained (certificates embedded as base64, no
//! paths), so a copy keeps working wherever it is moved, e.g. into a pod's directory.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Renders a kubeconfig with one cluster, one user authenticating with a client certificate,
/// and one context that is current. `name` names all three.
pub fn render(
    name: &str,
    server: &str,
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": name,
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            },
        }],
        "users": [{
            "name": name,
            "user": {
                "client-certificate-data": STANDARD.encode(client_cert_pem),
                "client-key-data": STANDARD.encode(client_key_pem),
            },
        }],
        "contexts": [{
            "name": name,
            "context": { "cluster": name, "user": name, "namespace": "default" },
        }],
        "current-context": name,
        "preferences": {},
    });
    // Serialising a `serde_json::Value` of strings, arrays and maps cannot fail.
    serde_yaml::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_reads_what_we_write() {
        let text = render("t", "https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("t"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode("CA").as_str())
        );
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(STANDARD.encode("CERT").as_str())
        );
    }
}

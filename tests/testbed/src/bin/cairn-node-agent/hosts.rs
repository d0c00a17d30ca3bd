//! Name resolution without cluster DNS: each pod gets a hosts file, bind-mounted on its
//! `/etc/hosts`, naming itself, the API server (`kubernetes.default.svc`) and the Services of
//! the cluster. A headless Service resolves to its pods (and `<hostname>.<service>` to each
//! pod); a ClusterIP Service resolves to the IP of one ready endpoint pod, since there is no
//! kube-proxy — so a Service's ports must equal its targetPorts. Files are rewritten in place
//! (same inode) because a bind mount pins the inode: a renamed new file would never be seen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

/// What the hosts files need to know about one pod of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.hostname`, else the pod name.
    pub hostname: String,
    /// `spec.subdomain`.
    pub subdomain: Option<String>,
    /// Labels (Service selectors match them).
    pub labels: BTreeMap<String, String>,
    /// Its IP once it has one.
    pub ip: Option<Ipv4Addr>,
    /// Whether it is Ready (only ready pods are Service endpoints).
    pub ready: bool,
    /// Its hosts file, once it has one.
    pub hosts_file: Option<PathBuf>,
}

/// The part of a Service that name resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `clusterIP: None`.
    pub headless: bool,
    /// Pod selector; Services without one have no endpoints here.
    pub selector: Option<BTreeMap<String, String>>,
    /// `publishNotReadyAddresses`.
    pub publish_not_ready: bool,
}

impl ServiceView {
    /// From a Service object.
    pub fn from_service(svc: &Service) -> ServiceView {
        let spec = svc.spec.as_ref();
        ServiceView {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            headless: spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            selector: spec
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty()),
            publish_not_ready: spec
                .and_then(|s| s.publish_not_ready_addresses)
                .unwrap_or(false),
        }
    }
}

/// The names of `<name>` (in `namespace`) as seen from a pod in `from_ns`: fully qualified
/// forms always, the short name only from the same namespace (there are no search domains).
fn names(name: &str, namespace: &str, from_ns: &str) -> String {
    let mut out =
        format!("{name}.{namespace}.svc.cluster.local {name}.{namespace}.svc {name}.{namespace}");
    if namespace == from_ns {
        out.push(' ');
        out.push_str(name);
    }
    out
}

/// The hosts file of `pod`, given every pod of the node and every Service of the cluster.
pub fn render(
    pod: &PodEntry,
    pods: &[PodEntry],
    services: &[ServiceView],
    api_host: &str,
) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (cairn node agent): rewritten when pods or services change.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod.ip {
        match &pod.subdomain {
            Some(sub) => {
                let _ = writeln!(
                    out,
                    "{ip}\t{h}.{sub}.{ns}.svc.cluster.local\t{h}",
                    h = pod.hostname,
                    ns = pod.namespace
                );
            }
            None => {
                let _ = writeln!(out, "{ip}\t{}", pod.hostname);
            }
        }
    }
    out.push_str("# Services\n");
    if api_host.parse::<Ipv4Addr>().is_ok() {
        let _ = writeln!(
            out,
            "{api_host}\t{}",
            names("kubernetes", "default", &pod.namespace)
        );
    }
    let mut services: Vec<&ServiceView> = services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for svc in services {
        if svc.namespace == "default" && svc.name == "kubernetes" {
            continue;
        }
        let Some(selector) = &svc.selector else {
            continue;
        };
        let mut targets: Vec<&PodEntry> = pods
            .iter()
            .filter(|p| {
                p.namespace == svc.namespace
                    && p.ip.is_some()
                    && (p.ready || svc.publish_not_ready)
                    && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let svc_names = names(&svc.name, &svc.namespace, &pod.namespace);
        if svc.headless {
            for t in &targets {
                let ip = t.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                if t.subdomain.as_deref() == Some(svc.name.as_str()) {
                    let host = format!("{}.{}", t.hostname, svc.name);
                    let _ = writeln!(
                        out,
                        "{ip}\t{}",
                        names(&host, &svc.namespace, &pod.namespace)
                    );
                }
                let _ = writeln!(out, "{ip}\t{svc_names}");
            }
        } else if let Some(first) = targets.first() {
            let ip = first.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let _ = writeln!(out, "{ip}\t{svc_names}");
        }
    }
    out
}

/// Shared view of this node's pods, for the hosts files.
#[derive(Clone, Default)]
pub struct PodIndex {
    entries: Arc<Mutex<BTreeMap<String, PodEntry>>>,
    changed: Arc<Notify>,
}

impl PodIndex {
    /// Adds or replaces the entry of pod `uid` and schedules a rewrite.
    pub fn upsert(&self, uid: &str, entry: PodEntry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(uid) != Some(&entry) {
            entries.insert(uid.to_string(), entry);
            self.changed.notify_one();
        }
    }

    /// Removes pod `uid` and schedules a rewrite.
    pub fn remove(&self, uid: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.remove(uid).is_some() {
            self.changed.notify_one();
        }
    }

    /// Schedules a rewrite (a Service changed).
    pub fn touch(&self) {
        self.changed.notify_one();
    }

    /// Every pod's entry.
    pub fn snapshot(&self) -> Vec<PodEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().cloned().collect()
    }
}

/// Writes `content` into `path` in place, unless it is already there.
pub fn write_in_place(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    // O_TRUNC on the existing file keeps its inode, which the bind mounts point at.
    std::fs::write(path, content)
}

/// Rewrites every pod's hosts file whenever the index or a Service changes. Runs forever.
pub async fn keep_updated(index: PodIndex, services: Store<Service>, api_host: String) {
    loop {
        index.changed.notified().await;
        // Coalesce bursts (a StatefulSet starting, a watch relist).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pods = index.snapshot();
        let views: Vec<ServiceView> = services
            .state()
            .iter()
            .map(|s| ServiceView::from_service(s))
            .collect();
        for pod in &pods {
            let Some(path) = &pod.hosts_file else {
                continue;
            };
            let content = render(pod, &pods, &views, &api_host);
            if let Err(e) = write_in_place(path, &content) {
                tracing::warn!(pod = %pod.name, path = %path.display(), error = %e, "could not update hosts file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: u8, ready: bool) -> PodEntry {
        PodEntry {
            namespace: "jobs".into(),
            name: name.into(),
            hostname: name.into(),
            subdomain: Some("wc".into()),
            labels: BTreeMap::from([("app".into(), "wc".into())]),
            ip: Some(Ipv4Addr::new(10, 244, 3, ip)),
            ready,
            hosts_file: None,
        }
    }

    fn svc(name: &str, headless: bool) -> ServiceView {
        ServiceView {
            namespace: "jobs".into(),
            name: name.into(),
            headless,
            selector: Some(BTreeMap::from([("app".into(), "wc".into())])),
            publish_not_ready: false,
        }
    }

    #[test]
    fn renders_pods_headless_and_cluster_ip_services() {
        let pods = vec![pod("wc-0", 5, true), pod("wc-1", 6, false)];
        let services = vec![svc("wc", true), svc("wc-api", false)];
        let got = render(&pods[1], &pods, &services, "10.244.3.1");
        let want = "# Kubernetes-managed hosts file (cairn node agent): rewritten when pods or services change.\n\
            127.0.0.1\tlocalhost\n\
            ::1\tlocalhost ip6-localhost ip6-loopback\n\
            fe00::0\tip6-localnet\n\
            fe00::0\tip6-mcastprefix\n\
            fe00::1\tip6-allnodes\n\
            fe00::2\tip6-allrouters\n\
            10.244.3.6\twc-1.wc.jobs.svc.cluster.local\twc-1\n\
            # Services\n\
            10.244.3.1\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default\n\
            10.244.3.5\twc-0.wc.jobs.svc.cluster.local wc-0.wc.jobs.svc wc-0.wc.jobs wc-0.wc\n\
            10.244.3.5\twc.jobs.svc.cluster.local wc.jobs.svc wc.jobs wc\n\
            10.244.3.5\twc-api.jobs.svc.cluster.local wc-api.jobs.svc wc-api.jobs wc-api\n";
        assert_eq!(got, want);
    }

    #[test]
    fn publish_not_ready_and_other_namespaces() {
        let pods = vec![pod("wc-0", 5, false)];
        let mut headless = svc("wc", true);
        headless.publish_not_ready = true;
        let mut other = pod("client", 9, true);
        other.namespace = "tools".into();
        other.subdomain = None;
        let got = render(&other, &pods, &[headless], "10.244.3.1");
        assert!(got.contains("10.244.3.9\tclient\n"), "{got}");
        assert!(
            got.contains(
                "10.244.3.5\twc-0.wc.jobs.svc.cluster.local wc-0.wc.jobs.svc wc-0.wc.jobs\n"
            ),
            "{got}"
        );
        assert!(
            !got.contains(" wc-0.wc\n"),
            "short names only within the namespace: {got}"
        );
    }

    #[test]
    fn rewrite_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("cairn-hosts-{}", std::process::id()));
        std::fs::write(&path, "a\n").unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "b\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        std::fs::remove_file(&path).unwrap();
    }
}

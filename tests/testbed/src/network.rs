//! The pod network of one test cluster: a Linux bridge `cairnbr<N>` holding the gateway address
//! `10.244.N.1/24` in the root network namespace. The node agent plugs each pod's network
//! namespace (named with [`PodNetwork::netns_prefix`]) into it with a veth pair; pods then reach
//! the API server, which listens on the gateway address, directly over the bridge. Nothing else is
//! added to the host: no NAT, no routes, no forwarding (`net.ipv4.ip_forward` is left alone:
//! pod -> gateway traffic is local delivery, not forwarding).
//!
//! `N` is owned through an exclusive `flock` on `<lock dir>/net-<N>.lock`, so concurrent test
//! binaries never share a bridge. A lock file that nobody holds means its owner died: its
//! leftovers (bridge, namespaces) are deleted before `N` is reused.

use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The subnet indexes tried, in order (`10.244.N.0/24`).
const INDEXES: std::ops::RangeInclusive<u8> = 1..=250;

/// Errors of creating or deleting the pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The pod network needs root and iproute2.
    #[error(
        "the pod network needs root and the `ip` command (iproute2); run the tests as root \
         (e.g. `sudo -E cargo test`), install iproute2, or set \
         ClusterOptions::with_pod_network = false"
    )]
    Unavailable,
    /// The lock directory or a lock file could not be created.
    #[error("cannot create the pod-network lock {path}: {source}")]
    Lock {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Every subnet index is held by a live harness or used by the host.
    #[error(
        "no free pod subnet: every 10.244.N.0/24 (N in 1..=250) is in use by another test \
         cluster or by a host route; stop other test runs or free a subnet"
    )]
    Exhausted,
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {reason}")]
    Ip {
        /// The arguments.
        args: String,
        /// stderr, or why it could not run.
        reason: String,
    },
}

/// The pod network of one cluster. Deleted (bridge and every namespace with the prefix) by
/// [`PodNetwork::teardown`], which the cluster calls on drop.
#[derive(Debug)]
pub struct PodNetwork {
    /// The bridge in the root namespace, e.g. `cairnbr7`.
    pub bridge: String,
    /// The bridge's address, the pods' default gateway and the API server's address.
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod subnet (24).
    pub prefix_len: u8,
    /// The pod subnet, e.g. `10.244.7.0/24`.
    pub cidr: String,
    /// Every network namespace created for this cluster's pods must start with this, e.g.
    /// `cairn7-`, so teardown (and the cleanup after a crashed run) finds them.
    pub netns_prefix: String,
    index: u8,
    // Holding the open file holds the flock; it is released when the process dies, however.
    _lock: File,
}

impl PodNetwork {
    /// True when a pod network can be created here: running as root with `ip` on PATH.
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Takes the first free subnet index, removes what a dead harness left under it, and
    /// creates the bridge with the gateway address, up.
    pub fn create() -> Result<PodNetwork, NetworkError> {
        if !Self::available() {
            return Err(NetworkError::Unavailable);
        }
        let dir = lock_dir();
        fs::create_dir_all(&dir).map_err(|source| NetworkError::Lock {
            path: dir.clone(),
            source,
        })?;
        remove_stale(&dir);
        for index in INDEXES {
            let Some(lock) = try_lock(&dir.join(format!("net-{index}.lock")))? else {
                continue;
            };
            let net = PodNetwork::for_index(index, lock);
            // Whatever is left under this index belongs to a harness that died: we hold its lock.
            net.teardown()?;
            if subnet_in_use(&net)? {
                continue; // the host uses 10.244.N.0/24 for something else; drop the lock
            }
            net.create_bridge()?;
            return Ok(net);
        }
        Err(NetworkError::Exhausted)
    }

    /// The network of subnet index `index`, whose lock the caller holds; creates nothing.
    fn for_index(index: u8, lock: File) -> PodNetwork {
        PodNetwork {
            bridge: format!("cairnbr{index}"),
            gateway: Ipv4Addr::new(10, 244, index, 1),
            prefix_len: 24,
            cidr: format!("10.244.{index}.0/24"),
            netns_prefix: format!("cairn{index}-"),
            index,
            _lock: lock,
        }
    }

    /// The subnet index `N`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Names of the existing network namespaces that belong to this cluster.
    pub fn namespaces(&self) -> Result<Vec<String>, NetworkError> {
        let out = ip(&["netns", "list"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.netns_prefix))
            .map(str::to_string)
            .collect())
    }

    /// True when the bridge exists.
    pub fn bridge_exists(&self) -> bool {
        link_exists(&self.bridge)
    }

    /// Deletes every network namespace with the prefix (their veth ends on the bridge go with
    /// them) and the bridge. Idempotent; tries everything and reports the first failure.
    pub fn teardown(&self) -> Result<(), NetworkError> {
        let mut first_error = None;
        match self.namespaces() {
            Ok(names) => {
                for ns in names {
                    if let Err(e) = ip(&["netns", "delete", &ns]) {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        if self.bridge_exists() {
            if let Err(e) = ip(&["link", "delete", &self.bridge, "type", "bridge"]) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn create_bridge(&self) -> Result<(), NetworkError> {
        let address = format!("{}/{}", self.gateway, self.prefix_len);
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &address, "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        Ok(())
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("cairn-testbed: removing pod network {}: {e}", self.bridge);
        }
    }
}

/// Deletes the leftovers of every dead harness (an existing `net-<N>.lock` nobody holds), so a
/// killed run is cleaned up by the next start whatever index that start gets. Best effort.
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(index) = file_name.to_str().and_then(|n| {
            n.strip_prefix("net-")?
                .strip_suffix(".lock")?
                .parse::<u8>()
                .ok()
        }) else {
            continue;
        };
        if let Ok(Some(lock)) = try_lock(&entry.path()) {
            let net = PodNetwork::for_index(index, lock);
            if let Err(e) = net.teardown() {
                eprintln!(
                    "cairn-testbed: removing the leftovers of {}: {e}",
                    net.bridge
                );
            }
        }
    }
}

/// `/run/cairn-testbed` (tmpfs: cleared at boot like the bridges), else the temp dir.
fn lock_dir() -> PathBuf {
    let run = Path::new("/run");
    if run.is_dir() && fs::metadata(run).is_ok_and(|m| !m.permissions().readonly()) {
        run.join("cairn-testbed")
    } else {
        std::env::temp_dir().join("cairn-testbed")
    }
}

/// Opens and exclusively locks `path` without blocking; `None` if another process holds it.
fn try_lock(path: &Path) -> Result<Option<File>, NetworkError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| NetworkError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(NetworkError::Lock {
            path: path.to_path_buf(),
            source: err,
        })
    }
}

/// True when the host already has an address or a route in (or covering) this subnet.
fn subnet_in_use(net: &PodNetwork) -> Result<bool, NetworkError> {
    let gateway = net.gateway.to_string();
    let covering = ip(&["-4", "-o", "route", "show", "match", &gateway])?;
    let inside = ip(&["-4", "-o", "route", "show", "root", &net.cidr])?;
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let prefix = format!("10.244.{}.", net.index);
    Ok(covering
        .lines()
        .chain(inside.lines())
        .any(|l| !l.trim().is_empty() && !l.starts_with("default"))
        || addrs.contains(&format!("inet {prefix}")))
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `ip args...` and returns its stdout.
fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let failed = |reason: String| NetworkError::Ip {
        args: args.join(" "),
        reason,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_index_is_skipped_and_everything_is_removed_on_teardown() {
        if !PodNetwork::available() {
            // Not root: creating must fail with the explanation instead.
            let err = PodNetwork::create().unwrap_err();
            assert!(err.to_string().contains("needs root"), "{err}");
            return;
        }
        let a = PodNetwork::create().unwrap();
        let b = PodNetwork::create().unwrap();
        assert_ne!(a.index(), b.index());
        assert_eq!(a.bridge, format!("cairnbr{}", a.index()));
        assert_eq!(a.cidr, format!("10.244.{}.0/24", a.index()));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 244, a.index(), 1));
        assert!(a.bridge_exists());
        // A namespace like the node agent makes is deleted with the network.
        let ns = format!("{}test", a.netns_prefix);
        ip(&["netns", "add", &ns]).unwrap();
        assert_eq!(a.namespaces().unwrap(), vec![ns.clone()]);
        a.teardown().unwrap();
        assert!(!a.bridge_exists());
        assert_eq!(a.namespaces().unwrap(), Vec::<String>::new());
        b.teardown().unwrap();
        assert!(!b.bridge_exists());
    }
}

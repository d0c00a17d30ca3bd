//! Pod networking: one network namespace per pod with a veth pair (host end on the cluster's
//! bridge, pod end `eth0` with an address of the pod CIDR, default route via the gateway), made
//! with the `ip` tool. Every namespace made is recorded by a marker file under the root dir so a
//! restarted agent can remove what a dead one left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Cidr, Config};

/// A failure to set up or tear down pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No free address left.
    #[error("no free pod IP left in {cidr} ({used} in use); delete pods or use a larger --cidr")]
    Exhausted {
        /// The CIDR.
        cidr: Cidr,
        /// Addresses in use.
        used: usize,
    },
    /// `ip` failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
    /// `ip` could not be run.
    #[error("could not run `ip {args}` (is iproute2 installed?): {source}")]
    Spawn {
        /// Arguments.
        args: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A marker file could not be written or read.
    #[error("network namespace marker {}: {source}", path.display())]
    Marker {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Hands out pod IPs from the CIDR, skipping network, gateway and broadcast addresses. Addresses
/// are given round-robin rather than lowest-first so a just-released address is not reused at
/// once (other pods may still have it in their ARP caches).
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    gateway: Ipv4Addr,
    used: BTreeSet<Ipv4Addr>,
    next: u32,
}

impl Ipam {
    /// An allocator over `cidr` that never hands out `gateway`.
    pub fn new(cidr: Cidr, gateway: Ipv4Addr) -> Ipam {
        Ipam {
            cidr,
            gateway,
            used: BTreeSet::new(),
            next: 1,
        }
    }

    /// The next free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, NetworkError> {
        let size = self.cidr.size();
        let base = u32::from(self.cidr.network);
        for _ in 0..size {
            let offset = self.next;
            self.next = if self.next + 1 >= size - 1 {
                1
            } else {
                self.next + 1
            };
            if offset == 0 || offset >= size - 1 {
                continue;
            }
            let ip = Ipv4Addr::from(base + offset);
            if ip != self.gateway && !self.used.contains(&ip) {
                self.used.insert(ip);
                return Ok(ip);
            }
        }
        Err(NetworkError::Exhausted {
            cidr: self.cidr,
            used: self.used.len(),
        })
    }

    /// `preferred` when it is a free pod address of the CIDR (a pod keeps its IP across agent
    /// restarts), else the next free one.
    pub fn allocate_preferred(
        &mut self,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, NetworkError> {
        if let Some(ip) = preferred {
            let offset = u32::from(ip).wrapping_sub(u32::from(self.cidr.network));
            let usable = self.cidr.contains(ip) && offset != 0 && offset < self.cidr.size() - 1;
            if usable && ip != self.gateway && self.used.insert(ip) {
                return Ok(ip);
            }
        }
        self.allocate()
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

/// FNV-1a: a stable, dependency-free hash for short interface and namespace names.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

/// The network of one pod.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// Network namespace name (`/run/netns/<netns>`).
    pub netns: String,
    /// Host end of the veth pair (on the bridge).
    pub host_veth: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

impl PodNet {
    /// Names for the pod with this namespace/name/uid: the netns is `<prefix><hash>`, the host
    /// veth `cv<hash>` (interface names are limited to 15 bytes).
    pub fn names(prefix: &str, namespace: &str, name: &str, uid: &str, ip: Ipv4Addr) -> PodNet {
        let hash = format!("{:016x}", fnv1a(&format!("{namespace}/{name}/{uid}")));
        PodNet {
            netns: format!("{prefix}{}", &hash[..10]),
            host_veth: format!("cv{}", &hash[..12]),
            ip,
        }
    }

    /// Path of the namespace file, what `setns` opens.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

fn ip(args: &[&str]) -> Result<(), NetworkError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetworkError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Ip {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn marker_dir(root: &Path) -> PathBuf {
    root.join("netns")
}

/// Creates the namespace and the veth pair of `net` (blocking: runs `ip`). On failure whatever
/// was made is removed again.
pub fn create(config: &Config, net: &PodNet) -> Result<(), NetworkError> {
    let dir = marker_dir(&config.root_dir);
    let marker = dir.join(&net.netns);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&marker, &net.host_veth))
        .map_err(|source| NetworkError::Marker {
            path: marker.clone(),
            source,
        })?;
    let address = format!("{}/{}", net.ip, config.cidr.prefix_len);
    let gateway = config.gateway.to_string();
    let steps: [&[&str]; 7] = [
        &["netns", "add", &net.netns],
        &[
            "link",
            "add",
            &net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.netns,
        ],
        &[
            "link",
            "set",
            &net.host_veth,
            "master",
            &config.bridge,
            "up",
        ],
        &["-n", &net.netns, "addr", "add", &address, "dev", "eth0"],
        &["-n", &net.netns, "link", "set", "eth0", "up"],
        &["-n", &net.netns, "link", "set", "lo", "up"],
        &["-n", &net.netns, "route", "add", "default", "via", &gateway],
    ];
    for step in steps {
        if let Err(e) = ip(step) {
            delete(&config.root_dir, &net.netns, &net.host_veth);
            return Err(e);
        }
    }
    Ok(())
}

/// Removes the veth pair and the namespace, then the marker. Best effort (blocking): each step
/// is tried even when an earlier one fails, and what is already gone is fine.
pub fn delete(root: &Path, netns: &str, host_veth: &str) {
    // Deleting the host end destroys both ends at once, even if something still holds the
    // namespace open, so the address can never answer twice on the bridge.
    if let Err(e) = ip(&["link", "del", host_veth]) {
        tracing::debug!(error = %e, "veth already gone");
    }
    if let Err(e) = ip(&["netns", "del", netns]) {
        tracing::debug!(error = %e, "netns already gone");
    }
    let _ = std::fs::remove_file(marker_dir(root).join(netns));
}

/// Removes every namespace a previous agent with this root dir made (its processes died with
/// it, so none of them is in use). Returns how many were removed.
pub fn remove_leftovers(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(marker_dir(root)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let netns = entry.file_name().to_string_lossy().to_string();
        let veth = std::fs::read_to_string(entry.path()).unwrap_or_default();
        tracing::info!(%netns, "removing a network namespace left by a previous agent");
        delete(root, &netns, veth.trim());
        removed += 1;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_skips_reserved_and_goes_round_robin() {
        let cidr = Cidr::parse("10.1.2.0/29").unwrap();
        let gw = Ipv4Addr::new(10, 1, 2, 1);
        let mut ipam = Ipam::new(cidr, gw);
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        let want: Vec<_> = (2..=6).map(|i| Ipv4Addr::new(10, 1, 2, i)).collect();
        assert_eq!(got, want);
        assert!(matches!(
            ipam.allocate(),
            Err(NetworkError::Exhausted { used: 5, .. })
        ));
        ipam.release(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 1, 2, 3));
        ipam.release(Ipv4Addr::new(10, 1, 2, 5));
        // .4 is in use: the next free address instead.
        let in_use = Some(Ipv4Addr::new(10, 1, 2, 4));
        assert_eq!(
            ipam.allocate_preferred(in_use).unwrap(),
            Ipv4Addr::new(10, 1, 2, 5)
        );
        ipam.release(Ipv4Addr::new(10, 1, 2, 5));
        ipam.release(Ipv4Addr::new(10, 1, 2, 6));
        let free = Some(Ipv4Addr::new(10, 1, 2, 6));
        assert_eq!(
            ipam.allocate_preferred(free).unwrap(),
            Ipv4Addr::new(10, 1, 2, 6)
        );
        // The gateway, the broadcast address and foreign addresses are never handed out.
        for bad in [gw, Ipv4Addr::new(10, 1, 2, 7), Ipv4Addr::new(10, 9, 9, 9)] {
            let mut fresh = Ipam::new(cidr, gw);
            assert_eq!(
                fresh.allocate_preferred(Some(bad)).unwrap(),
                Ipv4Addr::new(10, 1, 2, 2)
            );
        }
    }

    #[test]
    fn names_fit_interface_limits() {
        let net = PodNet::names(
            "cairn7-",
            "default",
            "a-very-long-pod-name-0",
            "uid",
            Ipv4Addr::LOCALHOST,
        );
        assert!(net.host_veth.len() <= 15);
        assert!(net.netns.starts_with("cairn7-"));
        assert_eq!(net.netns.len(), "cairn7-".len() + 10);
        let other = PodNet::names(
            "cairn7-",
            "default",
            "a-very-long-pod-name-0",
            "uid2",
            Ipv4Addr::LOCALHOST,
        );
        assert_ne!(net.netns, other.netns);
    }
}

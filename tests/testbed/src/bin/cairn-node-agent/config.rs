//! The agent's validated configuration: command-line arguments checked once at start, so a
//! typo fails the agent immediately with the flag and the fix instead of failing pods later.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::Parser;

/// Command-line arguments of `cairn-node-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "cairn-node-agent",
    about = "Test-only kubelet: registers a Node and runs its pods as local processes in network namespaces"
)]
pub struct Args {
    /// Kubeconfig of the cluster (the agent needs to manage nodes, leases, pods and read
    /// services, config maps and secrets, and request service-account tokens).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Name of the Node object this agent registers and serves.
    #[arg(long)]
    pub node_name: String,
    /// Linux bridge the pods' veth host ends are attached to (it must exist).
    #[arg(long)]
    pub bridge: String,
    /// Gateway address on the bridge: the pods' default route and the Node's InternalIP.
    #[arg(long)]
    pub gateway: Ipv4Addr,
    /// Pod CIDR (e.g. 10.244.7.0/24); pod IPs are taken from it.
    #[arg(long)]
    pub cidr: String,
    /// Prefix of the network namespaces this agent creates (one per pod).
    #[arg(long)]
    pub netns_prefix: String,
    /// Directory of pod directories (`<ns>_<pod>/`: volumes, container logs).
    #[arg(long)]
    pub root_dir: PathBuf,
    /// `REPOSITORY=BINARY`, repeated: runs containers of that image repository (no tag or digest)
    /// as that binary.
    #[arg(long = "image", value_name = "NAME=PATH")]
    pub images: Vec<String>,
    /// `KUBERNETES_SERVICE_HOST` given to pods; default: the gateway.
    #[arg(long)]
    pub api_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT` given to pods; default: the port of the kubeconfig's server.
    #[arg(long)]
    pub api_port: Option<u16>,
}

/// A pod CIDR: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 8..=30.
    pub prefix_len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/len`.
    pub fn parse(text: &str) -> Result<Cidr, ConfigError> {
        let bad = || ConfigError::Cidr {
            value: text.to_string(),
        };
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix_len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// Number of addresses, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Everything the agent was started with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubeconfig path.
    pub kubeconfig: PathBuf,
    /// Node name.
    pub node_name: String,
    /// Bridge name.
    pub bridge: String,
    /// Gateway address.
    pub gateway: Ipv4Addr,
    /// Pod CIDR.
    pub cidr: Cidr,
    /// Network namespace name prefix.
    pub netns_prefix: String,
    /// Root of the pod directories.
    pub root_dir: PathBuf,
    /// Image repository -> binary.
    pub images: BTreeMap<String, PathBuf>,
    /// `KUBERNETES_SERVICE_HOST` for pods (also what `kubernetes.default.svc` resolves to).
    pub api_host: String,
    /// `KUBERNETES_SERVICE_PORT` for pods; `None` until read from the kubeconfig.
    pub api_port: Option<u16>,
    /// The port of the kubelet API (`kubelet_api.rs`) on the gateway; 0 until it is bound.
    pub kubelet_port: u16,
}

/// A bad command-line argument.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--image` without `=`.
    #[error(
        "--image {value:?}: expected REPOSITORY=BINARY, e.g. cairn/worker=/path/to/cairn-worker"
    )]
    ImageSyntax {
        /// The argument.
        value: String,
    },
    /// `--image` names a binary that is not there.
    #[error("--image {repository}={}: no such file; build it first (cargo build --bin <name>)", path.display())]
    ImageMissing {
        /// Image repository.
        repository: String,
        /// Binary path.
        path: PathBuf,
    },
    /// `--cidr` unparsable.
    #[error("--cidr {value:?}: expected an IPv4 network like 10.244.7.0/24 (prefix 8 to 30)")]
    Cidr {
        /// The argument.
        value: String,
    },
    /// Gateway outside the CIDR.
    #[error("--gateway {gateway} is not inside --cidr {cidr}; the pods route through it, so it must be on their network")]
    GatewayOutsideCidr {
        /// Gateway.
        gateway: Ipv4Addr,
        /// CIDR.
        cidr: Cidr,
    },
    /// Prefix unusable as a file name part.
    #[error("--netns-prefix {value:?}: use 1 to 20 characters of [a-zA-Z0-9_-]")]
    NetnsPrefix {
        /// The argument.
        value: String,
    },
    /// Empty node name.
    #[error(
        "--node-name {value:?}: must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
    )]
    NodeName {
        /// The argument.
        value: String,
    },
}

impl Config {
    /// Validates the arguments.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let cidr = Cidr::parse(&args.cidr)?;
        if !cidr.contains(args.gateway) {
            return Err(ConfigError::GatewayOutsideCidr {
                gateway: args.gateway,
                cidr,
            });
        }
        let prefix_ok = !args.netns_prefix.is_empty()
            && args.netns_prefix.len() <= 20
            && args
                .netns_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(ConfigError::NetnsPrefix {
                value: args.netns_prefix,
            });
        }
        let name_ok = !args.node_name.is_empty()
            && args.node_name.len() <= 253
            && args
                .node_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !name_ok {
            return Err(ConfigError::NodeName {
                value: args.node_name,
            });
        }
        let mut images = BTreeMap::new();
        for value in &args.images {
            let (repository, path) = value
                .split_once('=')
                .filter(|(r, p)| !r.is_empty() && !p.is_empty())
                .ok_or_else(|| ConfigError::ImageSyntax {
                    value: value.clone(),
                })?;
            let path = PathBuf::from(path);
            if !Path::new(&path).is_file() {
                return Err(ConfigError::ImageMissing {
                    repository: repository.to_string(),
                    path,
                });
            }
            images.insert(repository.to_string(), path);
        }
        Ok(Config {
            kubeconfig: args.kubeconfig,
            node_name: args.node_name,
            bridge: args.bridge,
            gateway: args.gateway,
            cidr,
            netns_prefix: args.netns_prefix,
            root_dir: args.root_dir,
            images,
            api_host: args.api_host.unwrap_or_else(|| args.gateway.to_string()),
            api_port: args.api_port,
            kubelet_port: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_masks() {
        let c = Cidr::parse("10.244.7.9/24").unwrap();
        assert_eq!(c.network, Ipv4Addr::new(10, 244, 7, 0));
        assert_eq!(c.prefix_len, 24);
        assert_eq!(c.size(), 256);
        assert!(c.contains(Ipv4Addr::new(10, 244, 7, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 8, 1)));
        assert!(Cidr::parse("10.244.7.0").is_err());
        assert!(Cidr::parse("10.244.7.0/31").is_err());
        assert!(Cidr::parse("x/24").is_err());
    }

    #[test]
    fn bad_image_argument_names_the_fix() {
        let args = Args::parse_from([
            "agent",
            "--kubeconfig",
            "k",
            "--node-name",
            "n",
            "--bridge",
            "b",
            "--gateway",
            "10.244.7.1",
            "--cidr",
            "10.244.7.0/24",
            "--netns-prefix",
            "c7-",
            "--root-dir",
            "/tmp/x",
            "--image",
            "cairn/worker",
        ]);
        let err = Config::from_args(args).unwrap_err().to_string();
        assert_eq!(
            err,
            "--image \"cairn/worker\": expected REPOSITORY=BINARY, e.g. cairn/worker=/path/to/cairn-worker"
        );
    }
}

//! The certificates and keys of one test cluster, generated fresh with `rcgen` (ECDSA P-256):
//! a CA, the API server's serving certificate, the admin client certificate and the
//! service-account signing key pair. Nothing is shared between clusters or runs.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The first address of `--service-cluster-ip-range`: the ClusterIP of the `kubernetes` Service,
/// which in-cluster clients dial, so the serving certificate must name it.
pub const KUBERNETES_SERVICE_IP: [u8; 4] = [10, 96, 0, 1];

/// DNS names of the `kubernetes` Service that in-cluster clients may use.
pub const KUBERNETES_SERVICE_NAMES: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// Errors of generating or writing the cluster's certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused to generate a key or certificate.
    #[error("cannot generate the {what}: {source}")]
    Generate {
        /// Which key or certificate.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file could not be written into the work directory.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    // Never print a private key, even in a test failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Every certificate and key a cluster needs, in memory.
#[derive(Debug, Clone)]
pub struct ClusterCerts {
    /// The cluster CA; its key also signs CSRs (`--cluster-signing-*-file`).
    pub ca: CertAndKey,
    /// The API server's serving certificate.
    pub apiserver: CertAndKey,
    /// The admin client certificate: CN `admin`, O `system:masters`.
    pub admin: CertAndKey,
    /// The client certificate the API server presents to kubelets: O `system:masters` too.
    pub apiserver_kubelet_client: CertAndKey,
    /// The service-account token signing key (private key PEM in `key_pem`, public key PEM in
    /// `cert_pem`: the API server takes a bare public key for `--service-account-key-file`).
    pub service_account: CertAndKey,
}

/// Where [`ClusterCerts::write_to`] put each file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// CA private key (0600).
    pub ca_key: PathBuf,
    /// API server serving certificate.
    pub apiserver_cert: PathBuf,
    /// API server serving key (0600).
    pub apiserver_key: PathBuf,
    /// Admin client certificate.
    pub admin_cert: PathBuf,
    /// Admin client key (0600).
    pub admin_key: PathBuf,
    /// API server -> kubelet client certificate.
    pub kubelet_client_cert: PathBuf,
    /// API server -> kubelet client key (0600).
    pub kubelet_client_key: PathBuf,
    /// Service-account public key.
    pub service_account_pub: PathBuf,
    /// Service-account signing key (0600).
    pub service_account_key: PathBuf,
}

fn generate_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate().map_err(|source| CertsError::Generate { what, source })
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn leaf(
    what: &'static str,
    mut params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertAndKey, CertsError> {
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = generate_key(what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CertsError::Generate { what, source })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn client_cert(
    what: &'static str,
    cn: &str,
    org: &str,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertAndKey, CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn, Some(org));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf(what, params, issuer)
}

impl ClusterCerts {
    /// Generates a new CA and every certificate signed by it. `serving_ips` are the addresses
    /// the API server is reached at (127.0.0.1 and, with a pod network, its gateway); the
    /// service IP and names are always added.
    pub fn generate(serving_ips: &[IpAddr]) -> Result<ClusterCerts, CertsError> {
        let ca_key = generate_key("CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("cairn-testbed-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|source| CertsError::Generate {
                what: "CA certificate",
                source,
            })?;
        let ca = CertAndKey {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let mut serving = CertificateParams::default();
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut ips: Vec<IpAddr> = serving_ips.to_vec();
        ips.push(IpAddr::from(KUBERNETES_SERVICE_IP));
        ips.sort();
        ips.dedup();
        serving.subject_alt_names = ips.into_iter().map(SanType::IpAddress).collect();
        for dns in KUBERNETES_SERVICE_NAMES {
            let dns = dns.try_into().map_err(|source| CertsError::Generate {
                what: "API server certificate",
                source,
            })?;
            serving.subject_alt_names.push(SanType::DnsName(dns));
        }
        let apiserver = leaf("API server certificate", serving, &issuer)?;

        let admin = client_cert("admin certificate", "admin", "system:masters", &issuer)?;
        let apiserver_kubelet_client = client_cert(
            "API server kubelet-client certificate",
            "kube-apiserver-kubelet-client",
            "system:masters",
            &issuer,
        )?;

        let sa_key = generate_key("service-account signing key")?;
        let service_account = CertAndKey {
            cert_pem: sa_key.public_key_pem(),
            key_pem: sa_key.serialize_pem(),
        };
        Ok(ClusterCerts {
            ca,
            apiserver,
            admin,
            apiserver_kubelet_client,
            service_account,
        })
    }

    /// Writes every PEM into `dir` (private keys with mode 0600) and returns the paths.
    pub fn write_to(&self, dir: &Path) -> Result<CertFiles, CertsError> {
        let files = CertFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            kubelet_client_cert: dir.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: dir.join("apiserver-kubelet-client.key"),
            service_account_pub: dir.join("sa.pub"),
            service_account_key: dir.join("sa.key"),
        };
        write_public(&files.ca_cert, &self.ca.cert_pem)?;
        write_private(&files.ca_key, &self.ca.key_pem)?;
        write_public(&files.apiserver_cert, &self.apiserver.cert_pem)?;
        write_private(&files.apiserver_key, &self.apiserver.key_pem)?;
        write_public(&files.admin_cert, &self.admin.cert_pem)?;
        write_private(&files.admin_key, &self.admin.key_pem)?;
        write_public(
            &files.kubelet_client_cert,
            &self.apiserver_kubelet_client.cert_pem,
        )?;
        write_private(
            &files.kubelet_client_key,
            &self.apiserver_kubelet_client.key_pem,
        )?;
        write_public(&files.service_account_pub, &self.service_account.cert_pem)?;
        write_private(&files.service_account_key, &self.service_account.key_pem)?;
        Ok(files)
    }
}

fn write_public(path: &Path, pem: &str) -> Result<(), CertsError> {
    fs::write(path, pem).map_err(|source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates the file with mode 0600 from the start, so a key is never readable by others even
/// for a moment.
pub(crate) fn write_private(path: &Path, pem: &str) -> Result<(), CertsError> {
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(pem.as_bytes())
    };
    write().map_err(|source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_from_debug_output() {
        let certs = ClusterCerts::generate(&[IpAddr::from([127, 0, 0, 1])]).unwrap();
        let debug = format!("{certs:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(debug.contains("BEGIN CERTIFICATE"));
        assert!(certs
            .admin
            .key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(certs
            .service_account
            .cert_pem
            .starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn private_keys_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cairn-testbed-certs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let certs = ClusterCerts::generate(&[IpAddr::from([127, 0, 0, 1])]).unwrap();
        let files = certs.write_to(&dir).unwrap();
        for key in [&files.ca_key, &files.admin_key, &files.service_account_key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert_eq!(
            fs::read_to_string(&files.ca_cert).unwrap(),
            certs.ca.cert_pem
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

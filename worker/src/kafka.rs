//! librdkafka client settings shared by the Kafka source ([`crate::source::kafka`]) and sink
//! ([`crate::sink::kafka`]): where the brokers are, how to authenticate, the user's extra
//! properties, and what every Cairn consumer needs.

use std::collections::BTreeMap;

use cairn_contract::{KafkaSecurity, SaslSpec};
use rdkafka::config::ClientConfig;

/// Builds the librdkafka configuration shared by consumers and producers: brokers, TLS, SASL
/// (password read now, from its file or variable), then the user's extra properties. The
/// result holds the password: never log it.
pub(crate) fn client_config(
    brokers: &str,
    security: &KafkaSecurity,
    properties: &BTreeMap<String, String>,
) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("security.protocol", security.protocol.client_value());
    if let Some(ca) = &security.ca_file {
        config.set("ssl.ca.location", ca.to_string_lossy());
    }
    if let Some(cert) = &security.cert_file {
        config.set("ssl.certificate.location", cert.to_string_lossy());
    }
    if let Some(key) = &security.key_file {
        config.set("ssl.key.location", key.to_string_lossy());
    }
    if let Some(sasl) = &security.sasl {
        config
            .set("sasl.mechanisms", sasl.mechanism.client_value())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", read_password(sasl)?);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    Ok(config)
}

/// [`client_config`] plus what every Cairn consumer needs: consumer group `group` (librdkafka
/// wants one even for an explicit assignment), nothing committed behind Cairn's back (offsets
/// live in checkpoints, the exactly-once marker in transactions), and `read_committed`, so
/// records of aborted or open transactions are never seen.
pub(crate) fn consumer_base(
    brokers: &str,
    security: &KafkaSecurity,
    properties: &BTreeMap<String, String>,
    group: &str,
) -> Result<ClientConfig, String> {
    let mut config = client_config(brokers, security, properties)?;
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    Ok(config)
}

/// The SASL password from `passwordFile` or `passwordEnv` (validation guarantees one of them).
fn read_password(sasl: &SaslSpec) -> Result<String, String> {
    match (&sasl.password_file, &sasl.password_env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| {
                format!(
                    "security.sasl.passwordFile {}: {e}; mount the Secret holding the password \
                     there",
                    path.display()
                )
            }),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!(
                "security.sasl.passwordEnv: the environment variable {var} is not set; set it \
                 (on Kubernetes from a Secret)"
            )
        }),
        (None, None) => Err("security.sasl has no password source".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_come_from_their_file_or_variable() {
        use cairn_contract::{KafkaProtocol, SaslMechanism};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut security = KafkaSecurity {
            protocol: KafkaProtocol::SaslSsl,
            sasl: Some(SaslSpec {
                mechanism: SaslMechanism::ScramSha512,
                username: "cairn".into(),
                password_file: Some(file),
                password_env: None,
            }),
            ..KafkaSecurity::default()
        };
        let config = client_config("b:9092", &security, &Default::default()).unwrap();
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        let sasl = security.sasl.as_mut().unwrap();
        sasl.password_file = Some(dir.path().join("missing"));
        let err = client_config("b:9092", &security, &Default::default()).unwrap_err();
        assert!(err.starts_with("security.sasl.passwordFile "), "{err}");
        assert!(!err.contains("s3cret"));
    }

    #[test]
    fn consumers_read_committed_and_commit_nothing_themselves() {
        let properties = BTreeMap::from([("fetch.min.bytes".to_owned(), "1024".to_owned())]);
        let config =
            consumer_base("b:9092", &KafkaSecurity::default(), &properties, "g-1").unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("fetch.min.bytes"), Some("1024"));
        assert_eq!(config.get("group.id"), Some("g-1"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
    }
}

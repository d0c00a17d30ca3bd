//! Kafka settings shared by `input: {type: kafka}` and `output: {type: kafka}`: which cluster,
//! how to authenticate, and extra client properties.
//!
//! Secrets never appear in the spec (it is stored in a Kubernetes resource and printed by
//! `cairn-worker validate`): a SASL password is named by a file (a mounted Secret) or an
//! environment variable, and read by the worker when it connects.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Client properties Cairn sets itself; `properties` may not override them, because the
/// guarantees (offsets only in checkpoints, explicit assignment, exactly-once output) depend on
/// their values. Refused with a message saying which spec field sets them instead.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "isolation.level",
    "statistics.interval.ms",
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanisms",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
];

/// librdkafka properties both `input.properties` and `output.properties` may set: connection,
/// metadata and message-size tuning. Only listed properties are passed to librdkafka; anything
/// else (TLS and SASL settings, plugins, interceptors, debugging, ...) is refused, so a spec
/// cannot load code, turn off certificate checks or weaken the delivery guarantees.
pub const KAFKA_CLIENT_PROPERTIES: &[&str] = &[
    "api.version.request.timeout.ms",
    "broker.address.family",
    "broker.address.ttl",
    "client.rack",
    "connections.max.idle.ms",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "message.copy.max.bytes",
    "message.max.bytes",
    "metadata.max.age.ms",
    "receive.message.max.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "retry.backoff.max.ms",
    "retry.backoff.ms",
    "socket.connection.setup.timeout.ms",
    "socket.keepalive.enable",
    "socket.max.fails",
    "socket.nagle.disable",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "socket.timeout.ms",
    "topic.metadata.propagation.max.ms",
    "topic.metadata.refresh.fast.interval.ms",
    "topic.metadata.refresh.interval.ms",
    "topic.metadata.refresh.sparse",
];

/// Fetch and queueing properties `input.properties` may set, besides
/// [`KAFKA_CLIENT_PROPERTIES`].
pub const KAFKA_CONSUMER_PROPERTIES: &[&str] = &[
    "check.crcs",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.max.messages.kbytes",
    "queued.min.messages",
];

/// Batching, queueing, compression and request-timeout properties `output.properties` may set,
/// besides [`KAFKA_CLIENT_PROPERTIES`].
pub const KAFKA_PRODUCER_PROPERTIES: &[&str] = &[
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "linger.ms",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "request.timeout.ms",
];

/// How to connect to the brokers (`security:`); the default is plaintext without
/// authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSecurity {
    /// Transport and authentication: `plaintext` (default), `ssl`, `saslPlaintext`, `saslSsl`.
    #[serde(default)]
    pub protocol: KafkaProtocol,
    /// PEM file of the CA certificates that sign the brokers' certificates (TLS); the system
    /// trust store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require mutual TLS (with `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// SASL credentials, required by `saslPlaintext` and `saslSsl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
}

impl KafkaSecurity {
    /// True when nothing is set (plaintext, no TLS files, no SASL), so the section is omitted
    /// when serialised.
    pub fn is_default(&self) -> bool {
        *self == KafkaSecurity::default()
    }
}

/// `security.protocol` of the Kafka client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KafkaProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS, no SASL (mutual TLS if `certFile`/`keyFile` are set).
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl KafkaProtocol {
    /// The librdkafka / Java client value (`SASL_SSL`, ...).
    pub fn client_value(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the protocol authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }

    /// Whether the protocol encrypts with TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }
}

/// SASL credentials (`security.sasl`). The password is read when the worker connects, from
/// `passwordFile` (e.g. a mounted Secret) or the environment variable `passwordEnv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslSpec {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// File holding the password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// A SASL mechanism librdkafka implements without extra system libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// Username and password in clear (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The client's `sasl.mechanisms` value.
    pub fn client_value(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Problems with the Kafka settings of `section` (`input` or `output`), as field errors.
pub(crate) fn problems(
    section: &str,
    topic: &str,
    brokers: &str,
    security: &KafkaSecurity,
    properties: &BTreeMap<String, String>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let field = |name: &str| format!("{section}.{name}");
    if let Some(problem) = topic_problem(topic) {
        errors.push(FieldError::new(
            field("topic"),
            problem,
            "name an existing topic: 1 to 249 ASCII letters, digits, '.', '_' or '-', e.g. \
             `topic: events`",
        ));
    }
    if let Some(problem) = brokers_problem(brokers) {
        errors.push(FieldError::new(
            field("brokers"),
            problem,
            "list bootstrap brokers as `host:port`, comma-separated, e.g. \
             `brokers: kafka-0.kafka:9092,kafka-1.kafka:9092`",
        ));
    }
    let protocol = security.protocol;
    match (&security.sasl, protocol.uses_sasl()) {
        (None, true) => errors.push(FieldError::new(
            field("security.sasl"),
            format!("is required by `protocol: {}`", serde_plain_name(protocol)),
            "add `sasl: {mechanism: SCRAM-SHA-512, username: <user>, passwordFile: \
             /var/run/secrets/kafka/password}`, or use `protocol: ssl` or `plaintext`",
        )),
        (Some(_), false) => errors.push(FieldError::new(
            field("security.sasl"),
            format!(
                "is set but `protocol: {}` does not use SASL",
                serde_plain_name(protocol)
            ),
            "use `protocol: saslSsl` (or `saslPlaintext`), or remove `sasl`",
        )),
        (Some(sasl), true) => {
            if sasl.username.trim().is_empty() {
                errors.push(FieldError::new(
                    field("security.sasl.username"),
                    "is empty",
                    "set the SASL user name",
                ));
            }
            match (&sasl.password_file, &sasl.password_env) {
                (None, None) => errors.push(FieldError::new(
                    field("security.sasl"),
                    "has no password source",
                    "set `passwordFile` (a file, e.g. a mounted Secret) or `passwordEnv` (an \
                     environment variable); the password itself never goes in the spec",
                )),
                (Some(_), Some(_)) => errors.push(FieldError::new(
                    field("security.sasl"),
                    "sets both `passwordFile` and `passwordEnv`",
                    "keep one of them",
                )),
                (Some(path), None) if path.as_os_str().is_empty() => errors.push(FieldError::new(
                    field("security.sasl.passwordFile"),
                    "is empty",
                    "name the file holding the password",
                )),
                (None, Some(var)) if var.trim().is_empty() => errors.push(FieldError::new(
                    field("security.sasl.passwordEnv"),
                    "is empty",
                    "name the environment variable holding the password",
                )),
                _ => {}
            }
        }
        (None, false) => {}
    }
    let tls_files = [
        ("caFile", &security.ca_file),
        ("certFile", &security.cert_file),
        ("keyFile", &security.key_file),
    ];
    for (name, file) in tls_files {
        if file.is_some() && !protocol.uses_tls() {
            errors.push(FieldError::new(
                field(&format!("security.{name}")),
                format!(
                    "is a TLS setting but `protocol: {}` does not use TLS",
                    serde_plain_name(protocol)
                ),
                "use `protocol: ssl` (or `saslSsl`), or remove it",
            ));
        }
    }
    if security.cert_file.is_some() != security.key_file.is_some() {
        errors.push(FieldError::new(
            field("security"),
            "sets only one of `certFile` and `keyFile`",
            "mutual TLS needs both the client certificate and its key",
        ));
    }
    for key in properties.keys() {
        if let Some((problem, fix)) = property_problem(section, key) {
            errors.push(FieldError::new(
                field(&format!("properties.{key}")),
                problem,
                fix,
            ));
        }
    }
    errors
}

/// Why `key` may not be set in `<section>.properties`, and what to do instead; `None` when it
/// is one of the tuning properties passed through to librdkafka.
fn property_problem(section: &str, key: &str) -> Option<(String, String)> {
    let (own, other, other_section, role) = if section == "input" {
        (
            KAFKA_CONSUMER_PROPERTIES,
            KAFKA_PRODUCER_PROPERTIES,
            "output",
            "producer",
        )
    } else {
        (
            KAFKA_PRODUCER_PROPERTIES,
            KAFKA_CONSUMER_PROPERTIES,
            "input",
            "consumer",
        )
    };
    if KAFKA_CLIENT_PROPERTIES.contains(&key) || own.contains(&key) {
        return None;
    }
    let refused = if RESERVED_KAFKA_PROPERTIES.contains(&key) {
        (
            "is set by Cairn itself".to_owned(),
            reserved_fix(key).to_owned(),
        )
    } else if is_security_property(key) {
        (
            "is a TLS or SASL setting".to_owned(),
            "configure TLS and SASL in the `security` section (protocol, caFile, certFile, \
             keyFile, sasl; docs/kafka.md); other TLS and SASL settings are not offered"
                .to_owned(),
        )
    } else if other.contains(&key) {
        (
            format!("is a {role} property"),
            format!("set it in {other_section}.properties"),
        )
    } else {
        (
            "is not one of the librdkafka tuning properties Cairn passes through".to_owned(),
            "remove it; the properties that may be set (fetching, batching, queueing, \
             compression, timeouts, connections) are listed in docs/kafka.md"
                .to_owned(),
        )
    };
    Some(refused)
}

/// Whether `key` configures TLS or SASL, which only the `security` section may do
/// (`ssl.*`, `ssl_*`, `sasl.*`, `security.*`, and settings such as
/// `enable.ssl.certificate.verification` that name them inside).
fn is_security_property(key: &str) -> bool {
    key.starts_with("security.")
        || key.contains("ssl.")
        || key.contains("ssl_")
        || key.contains("sasl")
}

/// What to do instead of setting a reserved client property.
fn reserved_fix(key: &str) -> &'static str {
    match key {
        "bootstrap.servers" | "metadata.broker.list" => "use `brokers`",
        k if k.starts_with("ssl.") || k.starts_with("sasl.") || k == "security.protocol" => {
            "use the `security` section"
        }
        "transactional.id" => "use `transactionalId` of a `type: kafka` output",
        "client.id" => "remove it: Cairn names every client after the topic and the task",
        "statistics.interval.ms" => "remove it: Cairn reads the lag from the statistics every 5s",
        "transaction.timeout.ms"
        | "enable.idempotence"
        | "acks"
        | "request.required.acks"
        | "message.timeout.ms"
        | "delivery.timeout.ms"
        | "partitioner" => {
            "remove it: Cairn's delivery guarantees and partitioning depend on its value \
             (docs/kafka.md)"
        }
        _ => {
            "remove it: Cairn assigns partitions itself and keeps offsets only in its \
             checkpoints (docs/kafka.md)"
        }
    }
}

/// The YAML spelling of a protocol, for messages.
fn serde_plain_name(protocol: KafkaProtocol) -> &'static str {
    match protocol {
        KafkaProtocol::Plaintext => "plaintext",
        KafkaProtocol::Ssl => "ssl",
        KafkaProtocol::SaslPlaintext => "saslPlaintext",
        KafkaProtocol::SaslSsl => "saslSsl",
    }
}

/// Why `topic` is not a legal Kafka topic name, or `None`.
fn topic_problem(topic: &str) -> Option<String> {
    name_problem(topic, 249, "Kafka does not allow", "a topic name")
}

/// Why `value` is not a name of 1 to `max_len` ASCII letters, digits, '.', '_' or '-' (Kafka's
/// topic alphabet, also required of transactional ids), or `None`. `what` says whose rule a
/// bad character breaks ("... contains characters {what}: ..."); `kind` names the value in the
/// refusal of `.` and `..`, which Kafka refuses as topics and which would name a directory or
/// its parent where Cairn uses the name as a path (the exactly-once spool).
pub(crate) fn name_problem(value: &str, max_len: usize, what: &str, kind: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_owned());
    }
    if value.len() > max_len {
        return Some(format!(
            "{value:?} is {} characters long, more than {max_len}",
            value.len()
        ));
    }
    let bad: String = value
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .collect();
    if !bad.is_empty() {
        return Some(format!("{value:?} contains characters {what}: {bad:?}"));
    }
    (value == "." || value == "..").then(|| format!("{value:?} is not allowed as {kind}"))
}

/// Why `brokers` is not a `host:port[,host:port...]` list, or `None`.
fn brokers_problem(brokers: &str) -> Option<String> {
    if brokers.trim().is_empty() {
        return Some("is empty".to_owned());
    }
    for broker in brokers.split(',').map(str::trim) {
        let port = broker
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(port))) if !host.is_empty() && port > 0 => {}
            _ => {
                return Some(format!(
                    "{broker:?} is not `host:port` (a broker address with a port from 1 to 65535)"
                ))
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert_eq!(topic_problem("events.v1_a-b"), None);
        assert_eq!(topic_problem(""), Some("is empty".to_owned()));
        assert_eq!(
            topic_problem("a b"),
            Some("\"a b\" contains characters Kafka does not allow: \" \"".to_owned())
        );
        assert!(topic_problem(&"x".repeat(250)).is_some());
        assert!(topic_problem("..").is_some());
        assert_eq!(
            topic_problem("."),
            Some("\".\" is not allowed as a topic name".to_owned())
        );
        assert_eq!(topic_problem(&"x".repeat(249)), None);
        assert_eq!(
            topic_problem(&"x".repeat(250)),
            Some(format!(
                "{:?} is 250 characters long, more than 249",
                "x".repeat(250)
            ))
        );
    }

    #[test]
    fn broker_lists_need_ports() {
        assert_eq!(brokers_problem("127.0.0.1:9092"), None);
        assert_eq!(brokers_problem("a:1, b:2"), None);
        assert_eq!(
            brokers_problem("kafka"),
            Some(
                "\"kafka\" is not `host:port` (a broker address with a port from 1 to 65535)"
                    .to_owned()
            )
        );
        assert!(brokers_problem("a:1,:2").is_some());
        assert!(brokers_problem("a:0").is_some());
        assert!(brokers_problem(" ").is_some());
    }
}

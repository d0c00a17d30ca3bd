//! The Kafka broker's configuration and command line, from the files the worker's Kafka tests
//! use too (`tests/services/kafka/`), so the broker of the end-to-end suite (a pod) and of the
//! worker's tests (a process) are configured alike. MinIO's test credentials.

use std::path::Path;

/// MinIO's root user in the tests.
pub const S3_ACCESS_KEY: &str = "cairn-e2e";
/// MinIO's root password in the tests (a throwaway credential of a throwaway server).
pub const S3_SECRET_KEY: &str = "cairn-e2e-secret";

/// A configuration template still has a `{name}` placeholder after filling it in.
#[derive(Debug, thiserror::Error)]
#[error("{template}: placeholder {placeholder} was not filled in (a new placeholder in the template needs a value here)")]
pub struct TemplateError {
    /// The template file.
    pub template: &'static str,
    /// The first unfilled placeholder.
    pub placeholder: String,
}

/// The broker configuration shared with the worker's Kafka tests, with `{name}` placeholders.
const BROKER_TEMPLATE_PATH: &str = "tests/services/kafka/broker.properties";
const BROKER_TEMPLATE: &str = include_str!("../../services/kafka/broker.properties");
/// JVM flags shared with the worker's Kafka tests (see the file).
const JVM_FLAGS: &str = include_str!("../../services/kafka/jvm.flags");

/// `broker.properties` with every `{name}` of `values` filled in; an error names a placeholder
/// left over, so the template and this code cannot drift apart silently.
pub fn broker_properties(values: &[(&str, String)]) -> Result<String, TemplateError> {
    let mut text = BROKER_TEMPLATE.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    let leftover = text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let start = l.find('{')?;
        let end = start + l[start..].find('}')?;
        Some(l[start..=end].to_owned())
    });
    match leftover {
        Some(placeholder) => Err(TemplateError {
            template: BROKER_TEMPLATE_PATH,
            placeholder,
        }),
        None => Ok(text),
    }
}

/// The command line of Kafka class `class` with the shared JVM flags, the jars in `libs`.
pub fn java_args(libs: &Path, class: &str) -> Vec<String> {
    let mut args: Vec<String> = JVM_FLAGS
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    args.extend(["-cp".into(), format!("{}/*", libs.display()), class.into()]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(&'static str, String)> {
        vec![
            ("controller", "10.0.0.1:9093".into()),
            (
                "listeners",
                "PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093".into(),
            ),
            ("advertised_listeners", "PLAINTEXT://10.0.0.1:9092".into()),
            (
                "protocol_map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("data_dir", "/tmp/kafka-data".into()),
            ("internal_topic_partitions", "2".into()),
        ]
    }

    #[test]
    fn the_broker_template_is_filled_in_completely() {
        let text = broker_properties(&values()).unwrap();
        let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            settings,
            [
                "process.roles=broker,controller",
                "node.id=1",
                "controller.quorum.voters=1@10.0.0.1:9093",
                "listeners=PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093",
                "advertised.listeners=PLAINTEXT://10.0.0.1:9092",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                "log.dirs=/tmp/kafka-data",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "num.network.threads=2",
                "num.io.threads=2",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=2",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=2",
                "group.initial.rebalance.delay.ms=0",
            ]
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_named() {
        let mut v = values();
        v.retain(|(name, _)| *name != "data_dir");
        let err = broker_properties(&v).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tests/services/kafka/broker.properties: placeholder {data_dir} was not filled in (a new placeholder in the template needs a value here)"
        );
    }

    #[test]
    fn java_args_carry_the_shared_jvm_flags() {
        assert_eq!(
            java_args(Path::new("/libs"), "kafka.Kafka"),
            [
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-cp",
                "/libs/*",
                "kafka.Kafka"
            ]
        );
    }
}

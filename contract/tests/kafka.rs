//! `type: kafka` input and output: defaults, round trip, and every rule naming the field and
//! the fix.

use std::time::Duration;

use cairn_contract::{
    InputSpec, JobSpec, KafkaDelivery, KafkaProtocol, OutputSpec, SaslMechanism, SpecError,
};

const FULL: &str = "\
name: clicks
input:
  type: kafka
  topic: clicks
  partitions: 8
  brokers: kafka-0:9092,kafka-1:9092
  security:
    protocol: saslSsl
    caFile: /etc/kafka/ca.pem
    sasl: {mechanism: SCRAM-SHA-512, username: cairn, passwordFile: /var/run/secrets/kafka/password}
  properties: {fetch.max.bytes: '10485760'}
task: {name: count}
output:
  type: kafka
  topic: click-counts
  brokers: kafka-0:9092
  delivery: exactlyOnce
  transactionalId: clicks
checkpoint: {store: 's3://bucket/clicks'}
";

fn problems(yaml: &str) -> Vec<String> {
    match JobSpec::from_yaml_str(yaml) {
        Err(SpecError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn parse_error(yaml: &str) -> String {
    match JobSpec::from_yaml_str(yaml) {
        Err(err @ SpecError::Parse { .. }) => err.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn a_full_kafka_job_parses_with_defaults_and_round_trips() {
    let spec = JobSpec::from_yaml_str(FULL).unwrap();
    let InputSpec::Kafka(input) = &spec.input else {
        panic!("kafka input")
    };
    assert_eq!(spec.input.partitions(), 8);
    assert_eq!(spec.input.type_name(), "kafka");
    assert_eq!(input.topic, "clicks");
    assert_eq!(input.brokers, "kafka-0:9092,kafka-1:9092");
    assert_eq!(input.partition_check_interval, Duration::from_secs(30));
    assert_eq!(input.security.protocol, KafkaProtocol::SaslSsl);
    let sasl = input.security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(input.properties["fetch.max.bytes"], "10485760");
    let OutputSpec::Kafka(output) = &spec.output else {
        panic!("kafka output")
    };
    assert_eq!(output.delivery, KafkaDelivery::ExactlyOnce);
    assert_eq!(output.transactional_id.as_deref(), Some("clicks"));
    assert_eq!(output.spool_dir.to_str(), Some("./.cairn/kafka-spool"));
    let yaml = spec.to_yaml();
    assert!(yaml.contains("type: kafka"), "{yaml}");
    assert!(yaml.contains("partitionCheckInterval: 30s"), "{yaml}");
    assert_eq!(JobSpec::from_yaml_str(&yaml).unwrap(), spec);
}

#[test]
fn kafka_settings_are_checked_with_their_fix() {
    let yaml = FULL
        .replace("brokers: kafka-0:9092,kafka-1:9092", "brokers: kafka-0")
        .replace(
            "passwordFile: /var/run/secrets/kafka/password",
            "passwordEnv: ''",
        )
        .replace("fetch.max.bytes: '10485760'", "group.id: mine")
        .replace("  transactionalId: clicks\n", "");
    assert_eq!(
        problems(&yaml),
        [
            "input.brokers: \"kafka-0\" is not `host:port` (a broker address with a port from 1 \
             to 65535); list bootstrap brokers as `host:port`, comma-separated, e.g. `brokers: \
             kafka-0.kafka:9092,kafka-1.kafka:9092`",
            "input.security.sasl.passwordEnv: is empty; name the environment variable holding \
             the password",
            "input.properties.group.id: is set by Cairn itself; remove it: Cairn assigns \
             partitions itself and keeps offsets only in its checkpoints (docs/kafka.md)",
            "output.transactionalId: is required by `delivery: exactlyOnce`; set a prefix that \
             is unique to this job and never changes, e.g. `transactionalId: clicks`",
        ]
    );
}

#[test]
fn security_must_match_its_protocol() {
    let base = "name: j\ntask: {name: count}\ninput: {type: kafka, topic: t, partitions: 1, \
                brokers: 'b:1', security: ";
    let errors = problems(&format!("{base}{{protocol: saslSsl}}}}\n"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("input.security.sasl: is required by `protocol: saslSsl`; "),
        "{errors:?}"
    );
    let errors = problems(&format!("{base}{{caFile: /ca.pem}}}}\n"));
    assert_eq!(
        errors,
        [
            "input.security.caFile: is a TLS setting but `protocol: plaintext` does not use TLS; \
          use `protocol: ssl` (or `saslSsl`), or remove it"
        ]
    );
    let errors = problems(
        &format!("{base}{{protocol: ssl, certFile: /c.pem}}, topic: 'bad topic'}}\n")
            .replace("topic: t, ", ""),
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("input.topic: \"bad topic\" contains characters"));
    assert!(errors[1].starts_with("input.security: sets only one of `certFile` and `keyFile`"));
}

#[test]
fn keys_of_another_type_and_missing_keys_are_named() {
    let err = parse_error(
        "name: j\ntask: {name: count}\ninput: {type: file, partitions: 1, path: x, topic: t}\n",
    );
    assert!(
        err.starts_with(
            "input.topic: `topic` is a setting of `type: kafka` input, not of `type: file`"
        ),
        "{err}"
    );
    let err = parse_error(
        "name: j\ntask: {name: count}\ninput: {type: kafka, partitions: 1, topic: t}\n",
    );
    assert!(err.contains("missing field `brokers`"), "{err}");
    let err = parse_error(
        "name: j\ntask: {name: count}\ninput: {type: generator, partitions: 1}\n\
         output: {type: file, path: out, delivery: exactlyOnce}\n",
    );
    assert!(
        err.contains(
            "`delivery` is a setting of `type: kafka` output, not of `type: file`; remove it or \
             write `type: kafka`"
        ),
        "{err}"
    );
    let err = parse_error(
        "name: j\ntask: {name: count}\ninput: {type: generator, partitions: 1}\n\
         output: {type: kafka, topic: t, brokers: 'b:1', delivery: twice}\n",
    );
    assert!(
        err.contains("unknown variant `twice`, expected `atLeastOnce` or `exactlyOnce`"),
        "{err}"
    );
}

#[test]
fn kafka_jobs_can_be_written_as_properties() {
    let spec = JobSpec::from_properties_str(
        "job.name=clicks\ntask.class=count\ncairn.input.type=kafka\ncairn.input.topic=clicks\n\
         cairn.input.partitions=4\ncairn.input.brokers=kafka:9092\n\
         cairn.input.security.protocol=ssl\ncairn.output.type=kafka\n\
         cairn.output.topic=counts\ncairn.output.brokers=kafka:9092\n",
    )
    .unwrap();
    assert_eq!(spec.input.partitions(), 4);
    let InputSpec::Kafka(input) = &spec.input else {
        panic!("kafka input")
    };
    assert_eq!(input.security.protocol, KafkaProtocol::Ssl);
    assert!(matches!(&spec.output, OutputSpec::Kafka(o) if o.topic == "counts"));
}

#[test]
fn the_kafka_s3_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kafka-s3.yaml");
    let spec = JobSpec::from_path(&path).unwrap();
    assert!(matches!(&spec.input, InputSpec::Kafka(k) if k.topic == "clicks"));
    assert!(
        matches!(&spec.output, OutputSpec::Kafka(o) if o.delivery == KafkaDelivery::ExactlyOnce)
    );
    assert_eq!(spec.checkpoint.store, "s3://cairn/kafka-count");
}

/// `properties` is an allow-list of librdkafka tuning settings; everything else is refused
/// naming the property, and where it goes instead if anywhere.
#[test]
fn only_tuning_properties_are_passed_to_librdkafka() {
    let input = |props: &str| {
        format!(
            "name: j\ntask: {{name: count}}\ninput: {{type: kafka, topic: t, partitions: 1, \
             brokers: 'b:1', properties: {{{props}}}}}\n"
        )
    };
    let output = |props: &str| {
        format!(
            "name: j\ntask: {{name: count}}\ninput: {{type: generator, partitions: 1}}\n\
             output: {{type: kafka, topic: t, brokers: 'b:1', properties: {{{props}}}}}\n"
        )
    };
    let spec = JobSpec::from_yaml_str(&input(
        "fetch.max.bytes: '1048576', socket.timeout.ms: '30000', client.rack: r1, \
         queued.min.messages: '1000'",
    ))
    .unwrap();
    let InputSpec::Kafka(kafka) = &spec.input else {
        panic!("kafka input")
    };
    assert_eq!(kafka.properties.len(), 4);
    JobSpec::from_yaml_str(&output(
        "compression.type: lz4, linger.ms: '20', batch.size: '1000000', message.max.bytes: \
         '2000000'",
    ))
    .unwrap();

    let tls = "configure TLS and SASL in the `security` section (protocol, caFile, certFile, \
               keyFile, sasl; docs/kafka.md); other TLS and SASL settings are not offered";
    let not_passed = "remove it; the properties that may be set (fetching, batching, queueing, \
                      compression, timeouts, connections) are listed in docs/kafka.md";
    for (key, problem, fix) in [
        (
            "metadata.broker.list",
            "is set by Cairn itself",
            "use `brokers`",
        ),
        (
            "bootstrap.servers",
            "is set by Cairn itself",
            "use `brokers`",
        ),
        (
            "enable.ssl.certificate.verification",
            "is a TLS or SASL setting",
            tls,
        ),
        ("ssl.key.password", "is a TLS or SASL setting", tls),
        (
            "ssl.endpoint.identification.algorithm",
            "is a TLS or SASL setting",
            tls,
        ),
        ("sasl.kerberos.kinit.cmd", "is a TLS or SASL setting", tls),
        (
            "ssl.ca.location",
            "is set by Cairn itself",
            "use the `security` section",
        ),
        (
            "plugin.library.paths",
            "is not one of the librdkafka tuning properties Cairn passes through",
            not_passed,
        ),
        (
            "debug",
            "is not one of the librdkafka tuning properties Cairn passes through",
            not_passed,
        ),
        (
            "client.id",
            "is set by Cairn itself",
            "remove it: Cairn names every client after the topic and the task",
        ),
        (
            "linger.ms",
            "is a producer property",
            "set it in output.properties",
        ),
    ] {
        assert_eq!(
            problems(&input(&format!("{key}: x"))),
            [format!("input.properties.{key}: {problem}; {fix}")],
            "{key}"
        );
    }
    for (key, problem, fix) in [
        (
            "fetch.max.bytes",
            "is a consumer property",
            "set it in input.properties",
        ),
        (
            "acks",
            "is set by Cairn itself",
            "remove it: Cairn's delivery guarantees and partitioning depend on its value \
             (docs/kafka.md)",
        ),
        (
            "transactional.id",
            "is set by Cairn itself",
            "use `transactionalId` of a `type: kafka` output",
        ),
        (
            "interceptors",
            "is not one of the librdkafka tuning properties Cairn passes through",
            not_passed,
        ),
    ] {
        assert_eq!(
            problems(&output(&format!("{key}: x"))),
            [format!("output.properties.{key}: {problem}; {fix}")],
            "{key}"
        );
    }
}

/// The exactly-once spool directory is named after the transactional id, so `.` and `..` (the
/// spool directory itself and its parent) are refused like other names outside Kafka's rules.
#[test]
fn a_transactional_id_follows_kafka_name_rules() {
    let spec = |id: &str| {
        format!(
            "name: j\ntask: {{name: count}}\ninput: {{type: generator, partitions: 1}}\n\
             output: {{type: kafka, topic: t, brokers: 'b:1', delivery: exactlyOnce, \
             transactionalId: '{id}'}}\n"
        )
    };
    let fix = "use 1 to 200 ASCII letters, digits, '.', '_' or '-' (but not `.` or `..`), e.g. \
               the job name";
    for (id, problem) in [
        (
            "..",
            "\"..\" is not allowed as a transactional id".to_owned(),
        ),
        (".", "\".\" is not allowed as a transactional id".to_owned()),
        (
            "../x",
            "\"../x\" contains characters not allowed: \"/\"".to_owned(),
        ),
    ] {
        assert_eq!(
            problems(&spec(id)),
            [format!("output.transactionalId: {problem}; {fix}")],
            "{id}"
        );
    }
    assert!(JobSpec::from_yaml_str(&spec("clicks.v2")).is_ok());
}

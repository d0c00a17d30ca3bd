//! The committed CRD (`crds/` and the chart's copy) is exactly what the code generates. Run
//! `make crds` after changing the types.

mod common;

use cairn_operator::crd::rules::definition_yaml;
use common::repo_file;

#[test]
fn committed_crds_match_the_generated_definition() {
    let generated = definition_yaml();
    for path in [
        "crds/streamjobs.cairn.dev.yaml",
        "charts/cairn/crds/streamjobs.cairn.dev.yaml",
    ] {
        let committed = std::fs::read_to_string(repo_file(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `make crds` and commit the result"
        );
    }
}

#[test]
fn job_schema_covers_every_spec_field() {
    // Every key of a fully populated job spec must be declared in the CRD's job schema, or the
    // API server would prune it (structural schemas drop unknown fields).
    let crd: serde_json::Value = serde_yaml::from_str(&definition_yaml()).unwrap();
    let job = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["job"];
    let full = cairn_contract::JobSpec::from_yaml_str(
        "name: j\ninput: {type: generator, partitions: 2, seed: 1, keys: 5, distribution: zipf, zipfExponent: 1.5, recordsPerPartition: 10, ratePerSecond: 3}\ntask: {name: count}\noutput: {type: file, path: /o}\nparallelism: 1\ncheckpoint: {interval: 10s, store: 'file:///s', retained: 2, timeout: 1m, targetRecoveryTime: 30s, minInterval: 2s, maxInterval: 5m}\nstate: {cacheSize: 8MiB}\n",
    )
    .unwrap();
    let mut value = serde_json::to_value(&full).unwrap();
    value["state"].as_object_mut().unwrap().remove("dir"); // set by the operator
    let file_input =
        serde_json::json!({"type": "file", "partitions": 1, "path": "/in", "follow": true});
    let kafka = cairn_contract::JobSpec::from_yaml_str(
        "name: j
input:
  type: kafka
  partitions: 2
  topic: in
  brokers: b:9092
  partitionCheckInterval: 10s
  properties: {fetch.max.bytes: '1048576'}
  security: {protocol: saslSsl, caFile: /ca, certFile: /c, keyFile: /k, sasl: {mechanism: SCRAM-SHA-512, username: u, passwordFile: /p}}
task: {name: count}
output:
  type: kafka
  topic: out
  brokers: b:9092
  delivery: exactlyOnce
  transactionalId: j
  spoolDir: /spool
  properties: {linger.ms: '20'}
  security: {protocol: saslPlaintext, sasl: {mechanism: PLAIN, username: u, passwordEnv: P}}
",
    )
    .unwrap();
    let mut kafka = serde_json::to_value(&kafka).unwrap();
    kafka["state"].as_object_mut().unwrap().remove("dir");
    for (doc, schema) in [
        (&value, job),
        (&file_input, &job["properties"]["input"]),
        (&kafka, job),
    ] {
        let mut missing = Vec::new();
        walk(doc, schema, "spec.job", &mut missing);
        assert!(
            missing.is_empty(),
            "fields missing from the CRD job schema: {missing:?}"
        );
    }
}

fn walk(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    missing: &mut Vec<String>,
) {
    let Some(map) = doc.as_object() else { return };
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::json!(true)) {
        return;
    }
    for (key, value) in map {
        // A map (`additionalProperties`) declares its values, not its keys.
        match schema["properties"]
            .get(key)
            .or_else(|| schema.get("additionalProperties"))
        {
            Some(sub) => walk(value, sub, &format!("{path}.{key}"), missing),
            None => missing.push(format!("{path}.{key}")),
        }
    }
}

//! Helpers shared by the operator's tests: fixtures, a config, and a job validated from YAML.
#![allow(dead_code)]

use std::path::PathBuf;

use cairn_operator::config::OperatorConfig;
use cairn_operator::crd::StreamJob;
use cairn_operator::validate::{validate, ValidatedJob};

/// Path of a file under the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Reads a StreamJob manifest (the first document of a YAML file).
pub fn manifest(rel: &str) -> StreamJob {
    let text = std::fs::read_to_string(repo_file(rel)).expect("fixture readable");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The config the tests run with.
pub fn config() -> OperatorConfig {
    OperatorConfig {
        worker_image: "cairn/worker:test".into(),
        ..OperatorConfig::default()
    }
}

/// A manifest validated.
pub fn validated(sj: &StreamJob) -> ValidatedJob {
    validate(sj.metadata.name.as_deref().unwrap(), &sj.spec, &config()).expect("valid")
}

//! What the end-to-end suite (`tests/e2e/main.rs`) shares with the rest of the repository: the
//! Kafka broker configuration and JVM flags of the worker's Kafka tests, filled in for the
//! broker the suite runs as a pod. The suite itself needs a cluster: `tests/e2e/kind.sh` builds
//! one (docs/testbed.md).

pub mod services;

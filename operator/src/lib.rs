//! The Cairn operator: runs `StreamJob`s (`cairn.dev/v1alpha1`) on Kubernetes.
//!
//! Reconcile is a pipeline of small modules: [`reconcile`] fetches, [`validate`] checks the spec
//! into a [`validate::ValidatedJob`], [`lifecycle`] decides the next step as a pure function of
//! spec, status and observation, [`build`] turns a validated job into child objects, and
//! `reconcile` applies them and writes the status (which doubles as the write-ahead log of
//! upgrades). The operator talks to a job only through its control API ([`control`]) and never
//! links RocksDB.

pub mod children;
pub mod conditions;
pub mod config;
pub mod control;
pub mod crd;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod reconcile;
pub mod run;
pub mod validate;

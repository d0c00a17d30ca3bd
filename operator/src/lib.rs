//! The Cairn operator: runs `StreamJob`s (`cairn.dev/v1alpha1`) on Kubernetes.
//!
//! Reconcile is a pipeline of small modules: [`reconcile`] fetches, [`validate`] checks the spec
//! into a [`validate::ValidatedJob`] whose [`pods::PodDocument`] is what a new deployment runs,
//! [`lifecycle`] decides the next status (conditions included) and effects as a pure function of
//! spec, status and observation, [`children`] turns a recorded deployment into child objects, and
//! `reconcile` writes the status once (it doubles as the write-ahead log of upgrades) and then
//! applies them. The operator talks to a job only through its control API ([`control`]) and
//! never links RocksDB.

pub mod children;
pub mod config;
pub mod control;
pub mod crd;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod pods;
pub mod policy;
pub mod reconcile;
pub mod run;
pub mod validate;

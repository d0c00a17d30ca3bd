//! The headless Service: gives every worker pod a stable DNS name. Not-ready pods are published
//! too, because containers must reach the coordinator (pod 0) before any of them is ready.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use cairn_contract::pod::{CONTROL_PORT, COORDINATOR_PORT, METRICS_PORT};

use super::{selector, Owner};

/// The headless Service named like the job.
pub fn service(owner: &Owner) -> Service {
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: owner.child_meta(owner.name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&owner.name)),
            ports: Some(vec![
                port("coordinator", COORDINATOR_PORT),
                port("control", CONTROL_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

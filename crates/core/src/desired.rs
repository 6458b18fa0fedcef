//! The desired-state document: everything one node must run, compiled by the
//! control plane and converged to by the node's agent. It is data, never orders:
//! the agent diffs it against what it observes.
//!
//! Its identity is the SHA-256 of its canonical serialization: compact JSON with
//! fields in declaration order, maps as sorted `BTreeMap`s, and every list sorted by
//! [`DesiredState::new`], so the same content always hashes the same whatever order
//! the control plane read it in. The version is outside the hash: the control plane
//! bumps it only when the hash changes.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::route::RouteOptions;
use crate::service::ServiceSpec;

/// Suffix of internal service names: `<service>.svc.internal`.
pub const INTERNAL_DOMAIN: &str = "svc.internal";

/// How exposed a node is (the firewall issue enforces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum SecurityMode {
    /// No firewall managed by NanoScale.
    A,
    /// Inbound only to the proxy's ports and SSH from configured networks.
    B,
    /// Nothing inbound; the proxy listens on loopback behind a tunnel.
    C,
}

/// One service this node runs, pinned to a release and an exact commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    pub service_id: Uuid,
    pub service: String,
    pub project: String,
    pub release_id: Uuid,
    pub release_number: i64,
    pub commit: String,
    /// The spec frozen in the release (secrets included in the document a node
    /// receives; redacted wherever a person reads it).
    pub spec: ServiceSpec,
    /// Instances of this release on this node.
    pub replicas: u32,
}

/// A published route: host and/or path prefix to a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct RouteEntry {
    pub host: Option<String>,
    pub path: Option<String>,
    pub strip_prefix: bool,
    pub service: String,
    /// The policy the spec sets for this route (absent when it sets none, so the
    /// documents of services without any keep their hash).
    #[serde(default, skip_serializing_if = "RouteOptions::is_default")]
    pub options: RouteOptions,
}

/// An internal name the node's resolver answers (with loopback).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct DnsEntry {
    pub name: String,
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DesiredState {
    pub cluster_id: Uuid,
    pub node: String,
    pub security_mode: SecurityMode,
    /// Networks SSH is open to in mode B (empty: from anywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_from: Vec<String>,
    pub workloads: Vec<Workload>,
    pub routes: Vec<RouteEntry>,
    pub dns: Vec<DnsEntry>,
}

/// The document as delivered: the state, its hash and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DesiredDocument {
    /// Increases by one each time the state's hash changes.
    pub version: i64,
    /// SHA-256 (hex) of the canonical serialization of `state`.
    pub sha256: String,
    pub state: DesiredState,
}

impl DesiredDocument {
    /// Checks the announced hash against the state's own, as an agent does
    /// before it uses a document.
    pub fn check_hash(&self) -> Result<(), String> {
        let actual = self.state.sha256();
        if actual == self.sha256 {
            Ok(())
        } else {
            Err(format!(
                "hash {actual} does not match the announced {}",
                self.sha256
            ))
        }
    }
}

impl DesiredState {
    /// Builds the state for `node` from its workloads, deriving routes and internal
    /// DNS names, with every list in canonical order.
    pub fn new(
        cluster_id: Uuid,
        node: &str,
        security_mode: SecurityMode,
        mut workloads: Vec<Workload>,
    ) -> DesiredState {
        workloads.sort_by(|a, b| a.service.cmp(&b.service));
        let mut routes: Vec<RouteEntry> = workloads
            .iter()
            .flat_map(|workload| {
                workload.spec.routes.iter().map(|route| RouteEntry {
                    host: route.host.clone(),
                    path: route.path.clone(),
                    strip_prefix: route.strip_prefix,
                    service: workload.service.clone(),
                    options: route.options(),
                })
            })
            .collect();
        routes.sort();
        routes.dedup();
        let mut dns: Vec<DnsEntry> = workloads
            .iter()
            .flat_map(|workload| {
                [
                    format!("{}.{INTERNAL_DOMAIN}", workload.service),
                    format!(
                        "{}.{}.{INTERNAL_DOMAIN}",
                        workload.service, workload.project
                    ),
                ]
                .into_iter()
                .map(|name| DnsEntry {
                    name,
                    service: workload.service.clone(),
                })
            })
            .collect();
        dns.sort();
        // The control plane keeps every node's state in memory (10,000 at scale):
        // the spare capacity that pushing and collecting leave (a one-service
        // node's list held room for four) is returned.
        workloads.shrink_to_fit();
        routes.shrink_to_fit();
        dns.shrink_to_fit();
        DesiredState {
            cluster_id,
            node: node.to_owned(),
            security_mode,
            ssh_from: Vec::new(),
            workloads,
            routes,
            dns,
        }
    }

    /// The canonical serialization the hash is taken over.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Plain data with string keys only: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }

    /// The same state with secret values replaced, for people to read.
    pub fn redacted(&self) -> DesiredState {
        let mut shown = self.clone();
        for workload in &mut shown.workloads {
            workload.spec = workload.spec.redacted();
        }
        shown
    }
}

/// Where a service's replicas go: replica `i` to the `i mod n`-th eligible node in
/// name order, so replicas spread over distinct nodes before any node gets two.
/// Returns node name → replica count (nodes that get none are absent).
pub fn place(replicas: u32, eligible_nodes: &[String]) -> BTreeMap<String, u32> {
    let mut nodes: Vec<&String> = eligible_nodes.iter().collect();
    nodes.sort();
    nodes.dedup();
    let mut placement = BTreeMap::new();
    if nodes.is_empty() {
        return placement;
    }
    for replica in 0..replicas as usize {
        *placement
            .entry(nodes[replica % nodes.len()].clone())
            .or_insert(0) += 1;
    }
    placement
}

/// Whether a node may run a service: named in `placement.nodes` (or none named),
/// and carrying every label in `placement.labels`.
pub fn eligible(spec: &ServiceSpec, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let named =
        spec.placement.nodes.is_empty() || spec.placement.nodes.iter().any(|name| name == node);
    named
        && spec
            .placement
            .labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(service: &str, secret: bool) -> Workload {
        let mut spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": service,
            "source": {"git": "https://example.com/app.git"},
            "routes": [{"host": format!("{service}.example.com")}, {"path": "/api"}],
            "env": {"TOKEN": "s3cret"},
        }))
        .expect("spec");
        if secret {
            spec.secrets.insert("TOKEN".into());
        }
        Workload {
            service_id: Uuid::nil(),
            service: service.into(),
            project: "shop".into(),
            release_id: Uuid::nil(),
            release_number: 1,
            commit: "a".repeat(40),
            spec,
            replicas: 1,
        }
    }

    #[test]
    fn a_state_keeps_no_spare_capacity() {
        // The control plane holds one state per node; a list pushed one by one
        // had room for four.
        let mut workloads = Vec::with_capacity(4);
        workloads.extend([workload("web", false)]);
        assert!(workloads.capacity() > 1);
        let state = DesiredState::new(Uuid::nil(), "n1", SecurityMode::A, workloads);
        assert_eq!(state.workloads.capacity(), 1);
        assert_eq!(state.routes.capacity(), state.routes.len());
        assert_eq!(state.dns.capacity(), state.dns.len());
    }

    #[test]
    fn the_hash_ignores_input_order_and_sees_every_change() {
        let a = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::A,
            vec![workload("web", true), workload("api", true)],
        );
        let b = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::A,
            vec![workload("api", true), workload("web", true)],
        );
        assert_eq!(a, b);
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(a.sha256().len(), 64);
        let mut changed = workload("web", true);
        changed.commit = "b".repeat(40);
        let c = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::A,
            vec![workload("api", true), changed],
        );
        assert_ne!(a.sha256(), c.sha256());
        let d = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::C,
            vec![workload("api", true), workload("web", true)],
        );
        assert_ne!(a.sha256(), d.sha256());
    }

    #[test]
    fn routes_and_dns_are_derived_and_sorted() {
        let state = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::A,
            vec![workload("web", false), workload("api", false)],
        );
        let names: Vec<&str> = state.dns.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api.shop.svc.internal",
                "api.svc.internal",
                "web.shop.svc.internal",
                "web.svc.internal"
            ]
        );
        assert_eq!(state.routes.len(), 4);
        assert_eq!(state.routes[0].host, None, "path-only routes sort first");
        let hosts: Vec<Option<&str>> = state.routes.iter().map(|r| r.host.as_deref()).collect();
        assert_eq!(
            hosts,
            [None, None, Some("api.example.com"), Some("web.example.com")]
        );
    }

    #[test]
    fn redaction_hides_secrets_only() {
        let state = DesiredState::new(
            Uuid::nil(),
            "n1",
            SecurityMode::A,
            vec![workload("web", true), workload("api", false)],
        );
        let shown = state.redacted();
        assert_eq!(
            shown.workloads[1].spec.env["TOKEN"],
            crate::service::REDACTED,
            "web's secret"
        );
        assert_eq!(
            shown.workloads[0].spec.env["TOKEN"], "s3cret",
            "api's plain value"
        );
    }

    #[test]
    fn replicas_spread_over_distinct_nodes_first() {
        let nodes = vec!["b".to_owned(), "a".to_owned(), "c".to_owned()];
        let placed = place(4, &nodes);
        assert_eq!(
            placed,
            BTreeMap::from([("a".into(), 2), ("b".into(), 1), ("c".into(), 1)])
        );
        assert!(place(3, &[]).is_empty());
        assert!(place(0, &nodes).is_empty());
    }

    #[test]
    fn eligibility_by_name_and_labels() {
        let mut spec = workload("web", false).spec;
        let labels = BTreeMap::from([("zone".to_owned(), "eu".to_owned())]);
        assert!(eligible(&spec, "n1", &labels));
        spec.placement.labels.insert("zone".into(), "us".into());
        assert!(!eligible(&spec, "n1", &labels));
        spec.placement.labels.insert("zone".into(), "eu".into());
        spec.placement.nodes.push("n2".into());
        assert!(!eligible(&spec, "n1", &labels));
        assert!(eligible(&spec, "n2", &labels));
    }
}

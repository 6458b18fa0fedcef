//! Compiles the desired-state document of a node from the store: every service
//! with a current release, placed by its spec, pinned to the release's commit.
use nanoscale_core::api::Node;
use nanoscale_core::desired::{eligible, place, DesiredDocument, DesiredState, SecurityMode};

use crate::store::{Store, StoreResult};

pub async fn compile(store: &Store, node: &Node) -> StoreResult<DesiredState> {
    let cluster_id = store.cluster_id().await?;
    let nodes = store.list_nodes().await?;
    let mut workloads = Vec::new();
    for mut workload in store.current_releases().await? {
        let candidates: Vec<String> = nodes
            .iter()
            .filter(|candidate| eligible(&workload.spec, &candidate.name, &candidate.labels))
            .map(|candidate| candidate.name.clone())
            .collect();
        let Some(&replicas) = place(workload.replicas, &candidates).get(&node.name) else {
            continue;
        };
        workload.replicas = replicas;
        workloads.push(workload);
    }
    Ok(DesiredState::new(
        cluster_id,
        &node.name,
        security_mode(&node.security_mode),
        workloads,
    ))
}

/// The node's document: compiled state, its hash, and a version that moves on only
/// when the hash changes.
pub async fn document(store: &Store, node: &Node) -> StoreResult<DesiredDocument> {
    let state = compile(store, node).await?;
    let sha256 = state.sha256();
    let version = store.record_desired(node.id, &sha256).await?;
    Ok(DesiredDocument {
        version,
        sha256,
        state,
    })
}

fn security_mode(value: &str) -> SecurityMode {
    match value {
        "B" => SecurityMode::B,
        "C" => SecurityMode::C,
        _ => SecurityMode::A,
    }
}

//! `plan(desired, observed) -> Vec<Action>`: what the agent must do next to make
//! the node match its desired-state document. Pure and level-triggered: the agent
//! observes, plans, executes in order (stopping at the first failure) and plans
//! again, so a killed process, a deleted release directory or a restarted agent all
//! converge the same way, and start-up is the same diff from an empty observation.
//!
//! Order within a plan follows the deploy pipeline: sync repositories → build →
//! start → stop what is replaced or removed. A release's instances replace the old
//! ones only once enough of them are healthy (zero-downtime switch); a release whose
//! build failed never starts, and the old release keeps serving.
use std::collections::{BTreeMap, BTreeSet};

use nanoscale_core::desired::{DesiredState, Workload};
use uuid::Uuid;

/// What the agent knows about the node right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// (service, commit) pairs whose source is present in the per-service cache.
    pub sources: BTreeSet<(String, String)>,
    /// Build outcome per release.
    pub builds: BTreeMap<Uuid, BuildState>,
    pub instances: Vec<Instance>,
    /// Services with files on this node (source cache, releases, logs).
    pub service_dirs: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    Building,
    Built,
    /// Built, and served as files by the proxy: no instances.
    Static,
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub release_id: Uuid,
    pub replica: u32,
    pub state: InstanceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Started, health not yet confirmed.
    Starting,
    Healthy,
    Unhealthy,
    /// The process is gone (crashed or killed); the record remains.
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Fetch {
        service: String,
        git: String,
        commit: String,
    },
    Build {
        service: String,
        release_id: Uuid,
    },
    Start {
        service: String,
        release_id: Uuid,
        replica: u32,
    },
    Stop {
        instance: String,
        reason: StopReason,
    },
    /// Delete the files of a service that left the document once nothing of it runs.
    Clean {
        service: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The service is no longer in the document for this node.
    Removed,
    /// A newer release of the service is healthy and serving.
    Replaced,
    /// Beyond the desired replica count.
    ScaledDown,
    /// The process is gone; its record is cleaned up before a restart.
    Exited,
    /// Its release failed (never healthy, or crashing on start); the previous
    /// release keeps serving.
    Failed,
}

/// Where the node stands against the document, for the report to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Convergence {
    /// Every workload runs its desired release with all replicas healthy.
    Applied,
    /// Work remains and nothing is known to be wrong.
    Applying,
    /// A workload cannot converge; the reasons name the services.
    Degraded(Vec<String>),
}

pub fn plan(desired: &DesiredState, observed: &Observed) -> Vec<Action> {
    let mut fetches = Vec::new();
    let mut builds = Vec::new();
    let mut starts = Vec::new();
    let mut stops = Vec::new();

    let wanted: BTreeMap<&str, &Workload> = desired
        .workloads
        .iter()
        .map(|w| (w.service.as_str(), w))
        .collect();
    for instance in &observed.instances {
        if !wanted.contains_key(instance.service.as_str()) {
            stops.push(Action::Stop {
                instance: instance.id.clone(),
                reason: StopReason::Removed,
            });
        } else if instance.state == InstanceState::Exited {
            stops.push(Action::Stop {
                instance: instance.id.clone(),
                reason: StopReason::Exited,
            });
        }
    }

    for workload in &desired.workloads {
        let release = workload.release_id;
        match observed.builds.get(&release) {
            Some(BuildState::Failed { .. }) => {
                for instance in observed
                    .instances
                    .iter()
                    .filter(|i| i.release_id == release && i.state != InstanceState::Exited)
                {
                    stops.push(Action::Stop {
                        instance: instance.id.clone(),
                        reason: StopReason::Failed,
                    });
                }
                continue;
            }
            Some(BuildState::Building) => continue,
            Some(BuildState::Static) => {
                // Served by the proxy from the moment it is built: whatever ran
                // before (an earlier release with processes) is replaced.
                for old in observed
                    .instances
                    .iter()
                    .filter(|i| i.service == workload.service && i.state != InstanceState::Exited)
                {
                    stops.push(Action::Stop {
                        instance: old.id.clone(),
                        reason: StopReason::Replaced,
                    });
                }
                continue;
            }
            Some(BuildState::Built) => {}
            None => {
                let source = (workload.service.clone(), workload.commit.clone());
                if !observed.sources.contains(&source) {
                    fetches.push(Action::Fetch {
                        service: workload.service.clone(),
                        git: workload.spec.source.git.clone(),
                        commit: workload.commit.clone(),
                    });
                }
                builds.push(Action::Build {
                    service: workload.service.clone(),
                    release_id: release,
                });
            }
        }
        let live = |instance: &&Instance| {
            instance.service == workload.service && instance.state != InstanceState::Exited
        };
        let current: Vec<&Instance> = observed
            .instances
            .iter()
            .filter(live)
            .filter(|i| i.release_id == release)
            .collect();
        let present: BTreeSet<u32> = current.iter().map(|i| i.replica).collect();
        for replica in (0..workload.replicas).filter(|r| !present.contains(r)) {
            starts.push(Action::Start {
                service: workload.service.clone(),
                release_id: release,
                replica,
            });
        }
        for extra in current.iter().filter(|i| i.replica >= workload.replicas) {
            stops.push(Action::Stop {
                instance: extra.id.clone(),
                reason: StopReason::ScaledDown,
            });
        }
        let healthy = current
            .iter()
            .filter(|i| i.state == InstanceState::Healthy && i.replica < workload.replicas)
            .count();
        if healthy as u32 >= workload.replicas {
            for old in observed
                .instances
                .iter()
                .filter(live)
                .filter(|i| i.release_id != release)
            {
                stops.push(Action::Stop {
                    instance: old.id.clone(),
                    reason: StopReason::Replaced,
                });
            }
        }
    }
    let cleans = observed
        .service_dirs
        .iter()
        .filter(|service| !wanted.contains_key(service.as_str()))
        .filter(|service| !observed.instances.iter().any(|i| &i.service == *service))
        .map(|service| Action::Clean {
            service: service.clone(),
        });
    fetches
        .into_iter()
        .chain(builds)
        .chain(starts)
        .chain(stops)
        .chain(cleans)
        .collect()
}

/// Where the node stands, given the document and what was observed after executing.
pub fn convergence(desired: &DesiredState, observed: &Observed) -> Convergence {
    let mut problems = Vec::new();
    for workload in &desired.workloads {
        if let Some(BuildState::Failed { reason }) = observed.builds.get(&workload.release_id) {
            problems.push(format!(
                "{}: release {} failed: {reason}",
                workload.service, workload.release_number
            ));
        }
        let unhealthy = observed.instances.iter().any(|i| {
            i.service == workload.service
                && i.release_id == workload.release_id
                && i.state == InstanceState::Unhealthy
        });
        if unhealthy {
            problems.push(format!(
                "{}: release {} is unhealthy",
                workload.service, workload.release_number
            ));
        }
    }
    if !problems.is_empty() {
        return Convergence::Degraded(problems);
    }
    let is_static = |workload: &Workload| {
        observed.builds.get(&workload.release_id) == Some(&BuildState::Static)
    };
    let wanted_replicas = |workload: &Workload| {
        if is_static(workload) {
            0
        } else {
            workload.replicas
        }
    };
    let all_healthy = desired.workloads.iter().all(|workload| {
        let healthy = observed
            .instances
            .iter()
            .filter(|i| i.service == workload.service && i.release_id == workload.release_id)
            .filter(|i| i.state == InstanceState::Healthy)
            .count();
        healthy as u32 == wanted_replicas(workload)
    });
    let total: u32 = desired.workloads.iter().map(wanted_replicas).sum();
    let nothing_else = observed.instances.len() as u32 == total;
    if all_healthy && nothing_else && plan(desired, observed).is_empty() {
        Convergence::Applied
    } else {
        Convergence::Applying
    }
}

#[cfg(test)]
mod tests;

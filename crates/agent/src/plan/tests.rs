//! Snapshot tests of the planner: each scenario prints the plan (and, where it
//! matters, the convergence) so a change of behaviour shows up as a readable diff.
//! Update with `UPDATE_EXPECT=1 cargo test -p nanoscale-agent`.
use expect_test::{expect, Expect};
use nanoscale_core::desired::{DesiredState, SecurityMode, Workload};
use nanoscale_core::service::ServiceSpec;

use super::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn workload(service: &str, release: u128, commit: &str, replicas: u32) -> Workload {
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": service,
        "source": {"git": format!("https://example.com/{service}.git")},
        "replicas": replicas,
    }))
    .expect("spec");
    Workload {
        service_id: id(1000 + release),
        service: service.into(),
        project: "shop".into(),
        release_id: id(release),
        release_number: release as i64,
        commit: commit.repeat(40),
        spec,
        replicas,
    }
}

fn desired(workloads: Vec<Workload>) -> DesiredState {
    DesiredState::new(Uuid::nil(), "node-1", SecurityMode::A, workloads)
}

fn instance(
    id: &str,
    service: &str,
    release: u128,
    replica: u32,
    state: InstanceState,
) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        release_id: super::Uuid::from_u128(release),
        replica,
        state,
    }
}

fn built(releases: &[u128]) -> BTreeMap<Uuid, BuildState> {
    releases
        .iter()
        .map(|r| (id(*r), BuildState::Built))
        .collect()
}

fn check(desired: &DesiredState, observed: &Observed, expected: Expect) {
    let plan = plan(desired, observed);
    let mut text: String = plan.iter().map(|action| format!("{action:?}\n")).collect();
    text.push_str(&format!("=> {:?}\n", convergence(desired, observed)));
    expected.assert_eq(&text);
}

#[test]
fn start_up_from_nothing_fetches_builds_and_starts_every_replica() {
    check(
        &desired(vec![workload("web", 1, "a", 2), workload("api", 2, "b", 1)]),
        &Observed::default(),
        expect![[r#"
            Fetch { service: "api", git: "https://example.com/api.git", commit: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" }
            Fetch { service: "web", git: "https://example.com/web.git", commit: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }
            Build { service: "api", release_id: 00000000-0000-0000-0000-000000000002 }
            Build { service: "web", release_id: 00000000-0000-0000-0000-000000000001 }
            Start { service: "api", release_id: 00000000-0000-0000-0000-000000000002, replica: 0 }
            Start { service: "web", release_id: 00000000-0000-0000-0000-000000000001, replica: 0 }
            Start { service: "web", release_id: 00000000-0000-0000-0000-000000000001, replica: 1 }
            => Applying
        "#]],
    );
}

#[test]
fn a_converged_node_has_nothing_to_do() {
    let observed = Observed {
        sources: BTreeSet::from([("web".into(), "a".repeat(40))]),
        builds: built(&[1]),
        instances: vec![instance("web-1-0", "web", 1, 0, InstanceState::Healthy)],
        service_dirs: BTreeSet::from(["web".into()]),
    };
    check(
        &desired(vec![workload("web", 1, "a", 1)]),
        &observed,
        expect![[r#"
        => Applied
    "#]],
    );
}

#[test]
fn a_new_release_starts_beside_the_old_one_which_stops_only_once_it_is_healthy() {
    let desired = desired(vec![workload("web", 2, "b", 1)]);
    let mut observed = Observed {
        sources: BTreeSet::from([("web".into(), "a".repeat(40))]),
        builds: built(&[1]),
        instances: vec![instance("web-1-0", "web", 1, 0, InstanceState::Healthy)],
        service_dirs: BTreeSet::from(["web".into()]),
    };
    check(
        &desired,
        &observed,
        expect![[r#"
        Fetch { service: "web", git: "https://example.com/web.git", commit: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" }
        Build { service: "web", release_id: 00000000-0000-0000-0000-000000000002 }
        Start { service: "web", release_id: 00000000-0000-0000-0000-000000000002, replica: 0 }
        => Applying
    "#]],
    );
    // Built and started but not yet healthy: the old release keeps serving.
    observed.builds = built(&[1, 2]);
    observed
        .instances
        .push(instance("web-2-0", "web", 2, 0, InstanceState::Starting));
    check(
        &desired,
        &observed,
        expect![[r#"
            => Applying
        "#]],
    );
    // Healthy: the old instance is stopped.
    observed.instances[1].state = InstanceState::Healthy;
    check(
        &desired,
        &observed,
        expect![[r#"
        Stop { instance: "web-1-0", reason: Replaced }
        => Applying
    "#]],
    );
    // Once the old instance is gone the node has converged.
    observed.instances.remove(0);
    check(
        &desired,
        &observed,
        expect![[r#"
        => Applied
    "#]],
    );
}

#[test]
fn a_failed_build_never_takes_traffic_and_degrades_the_node() {
    let mut observed = Observed {
        builds: built(&[1]),
        instances: vec![instance("web-1-0", "web", 1, 0, InstanceState::Healthy)],
        ..Observed::default()
    };
    observed.builds.insert(
        id(2),
        BuildState::Failed {
            reason: "npm ci exited with 1".into(),
        },
    );
    check(
        &desired(vec![workload("web", 2, "b", 1)]),
        &observed,
        expect![[r#"
            => Degraded(["web: release 2 failed: npm ci exited with 1"])
        "#]],
    );
}

#[test]
fn an_unhealthy_new_release_leaves_the_old_one_serving() {
    let observed = Observed {
        builds: built(&[1, 2]),
        instances: vec![
            instance("web-1-0", "web", 1, 0, InstanceState::Healthy),
            instance("web-2-0", "web", 2, 0, InstanceState::Unhealthy),
        ],
        ..Observed::default()
    };
    check(
        &desired(vec![workload("web", 2, "b", 1)]),
        &observed,
        expect![[r#"
        => Degraded(["web: release 2 is unhealthy"])
    "#]],
    );
}

#[test]
fn a_killed_process_is_cleaned_up_and_started_again() {
    let observed = Observed {
        builds: built(&[1]),
        instances: vec![
            instance("web-1-0", "web", 1, 0, InstanceState::Exited),
            instance("web-1-1", "web", 1, 1, InstanceState::Healthy),
        ],
        ..Observed::default()
    };
    check(
        &desired(vec![workload("web", 1, "a", 2)]),
        &observed,
        expect![[r#"
        Start { service: "web", release_id: 00000000-0000-0000-0000-000000000001, replica: 0 }
        Stop { instance: "web-1-0", reason: Exited }
        => Applying
    "#]],
    );
}

#[test]
fn a_deleted_build_is_rebuilt_without_a_new_deploy() {
    // The release directory vanished: no build is observed, so it is fetched and
    // built again while the running instance keeps serving.
    let observed = Observed {
        instances: vec![instance("web-1-0", "web", 1, 0, InstanceState::Healthy)],
        ..Observed::default()
    };
    check(
        &desired(vec![workload("web", 1, "a", 1)]),
        &observed,
        expect![[r#"
        Fetch { service: "web", git: "https://example.com/web.git", commit: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }
        Build { service: "web", release_id: 00000000-0000-0000-0000-000000000001 }
        => Applying
    "#]],
    );
}

#[test]
fn removed_services_stop_and_scaled_down_replicas_go() {
    let observed = Observed {
        builds: built(&[1, 9]),
        instances: vec![
            instance("web-1-0", "web", 1, 0, InstanceState::Healthy),
            instance("web-1-1", "web", 1, 1, InstanceState::Healthy),
            instance("old-9-0", "old", 9, 0, InstanceState::Healthy),
        ],
        ..Observed::default()
    };
    check(
        &desired(vec![workload("web", 1, "a", 1)]),
        &observed,
        expect![[r#"
        Stop { instance: "old-9-0", reason: Removed }
        Stop { instance: "web-1-1", reason: ScaledDown }
        => Applying
    "#]],
    );
}

#[test]
fn an_empty_document_stops_everything() {
    let observed = Observed {
        builds: built(&[1]),
        instances: vec![instance("web-1-0", "web", 1, 0, InstanceState::Starting)],
        ..Observed::default()
    };
    check(
        &desired(vec![]),
        &observed,
        expect![[r#"
        Stop { instance: "web-1-0", reason: Removed }
        => Applying
    "#]],
    );
}

#[test]
fn a_release_that_fails_after_starting_is_stopped_and_the_old_one_keeps_serving() {
    let mut observed = Observed {
        builds: built(&[1]),
        instances: vec![
            instance("web-1-0", "web", 1, 0, InstanceState::Healthy),
            instance("web-2-0", "web", 2, 0, InstanceState::Starting),
        ],
        ..Observed::default()
    };
    observed.builds.insert(
        id(2),
        BuildState::Failed {
            reason: "never became healthy".into(),
        },
    );
    check(
        &desired(vec![workload("web", 2, "b", 1)]),
        &observed,
        expect![[r#"
        Stop { instance: "web-2-0", reason: Failed }
        => Degraded(["web: release 2 failed: never became healthy"])
    "#]],
    );
}

#[test]
fn a_removed_service_is_cleaned_only_once_nothing_of_it_runs() {
    let running = Observed {
        instances: vec![instance("old-9-0", "old", 9, 0, InstanceState::Healthy)],
        service_dirs: BTreeSet::from(["old".into()]),
        ..Observed::default()
    };
    check(
        &desired(vec![]),
        &running,
        expect![[r#"
        Stop { instance: "old-9-0", reason: Removed }
        => Applying
    "#]],
    );
    let stopped = Observed {
        service_dirs: BTreeSet::from(["old".into()]),
        ..Observed::default()
    };
    check(
        &desired(vec![]),
        &stopped,
        expect![[r#"
        Clean { service: "old" }
        => Applying
    "#]],
    );
}

#[test]
fn a_static_release_runs_nothing_replaces_processes_and_converges_with_no_instance() {
    let doc = desired(vec![workload("site", 2, "b", 1)]);
    let mut builds = built(&[1]);
    builds.insert(id(2), BuildState::Static);
    check(
        &doc,
        &Observed {
            builds: builds.clone(),
            instances: vec![instance("site-r1-0", "site", 1, 0, InstanceState::Healthy)],
            ..Observed::default()
        },
        expect![[r#"
            Stop { instance: "site-r1-0", reason: Replaced }
            => Applying
        "#]],
    );
    check(
        &doc,
        &Observed {
            builds,
            ..Observed::default()
        },
        expect![[r#"
            => Applied
        "#]],
    );
}

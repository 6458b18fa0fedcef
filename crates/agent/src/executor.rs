//! One reconciliation round: observe the node (store + shims + health), plan
//! against the document, execute the actions, then move release lifecycles and
//! record whether the document is applied. The deciding is `plan`'s; this layer
//! only looks and acts.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nanoscale_core::agent::{Convergence as Reported, InstanceStatus};
use nanoscale_core::desired::{DesiredDocument, Workload};
use uuid::Uuid;

use crate::builder::with_log;
use crate::context::{about, Context, NodeStatus};
use crate::plan::{
    self, Action, BuildState, Convergence, Instance, InstanceState, Observed, StopReason,
};
use crate::runtime::{ExitInfo, ShimStatus};
use crate::store::{event, now_ms, InstanceRecord, ReleaseRecord, ReleaseState, StoreResult};
use crate::supervise;

/// A release that crashes this many times before it was ever healthy has failed.
const CRASHES_BEFORE_FAILED: u32 = 3;
/// Restarts in a row after which a crash loop is reported.
const CRASH_LOOP: u32 = 5;
const MAX_BACKOFF_MS: i64 = 60_000;

pub async fn reconcile(context: &Arc<Context>) -> StoreResult<()> {
    let Some(document) = context.document() else {
        return Ok(());
    };
    let releases: HashMap<Uuid, ReleaseRecord> = context
        .store
        .releases()
        .await?
        .into_iter()
        .map(|release| (release.id, release))
        .collect();
    check_processes(context, &releases).await?;
    check_trees(context, &releases).await?;
    fail_releases_that_cannot_start(context, &document, &releases).await?;
    let releases: HashMap<Uuid, ReleaseRecord> = context
        .store
        .releases()
        .await?
        .into_iter()
        .map(|release| (release.id, release))
        .collect();
    let instances = context.store.instances().await?;
    let observed = observe(context, &releases, &instances);
    let actions = plan::plan(&document.state, &observed);
    for action in actions {
        execute(context, &document, &releases, &instances, action).await?;
    }
    promote(context, &document, &releases).await?;
    // Before the round ends: the next round may stop what this table no longer
    // routes to.
    crate::traffic::publish(context).await;
    crate::firewall::check(context, &document.state);
    record_convergence(context, &document, &observed).await
}

/// Notices instances whose process is gone, and restarts live instances that
/// turned unhealthy.
async fn check_processes(
    context: &Arc<Context>,
    releases: &HashMap<Uuid, ReleaseRecord>,
) -> StoreResult<()> {
    let instances = context.store.instances().await?;
    let watched: Vec<&InstanceRecord> = instances
        .iter()
        .filter(|instance| {
            instance.status != InstanceStatus::Exited
                && !context.is_busy(&format!("stop:{}", instance.id))
        })
        .collect();
    // One question to systemd for all the instances that run as units.
    let mut units =
        crate::runtime::unit::inspect_all(watched.iter().map(|i| i.dir.as_path())).await;
    for instance in watched {
        let log = instance.dir.join("log");
        let status = match units.remove(&instance.dir) {
            Some(status) => status,
            None => crate::sandbox::inspect(&instance.dir).await,
        };
        let exit = match status {
            ShimStatus::Running(_) | ShimStatus::Starting { .. } => {
                let live = releases
                    .get(&instance.release_id)
                    .is_some_and(|release| release.state == ReleaseState::Live);
                if !(live && instance.status == InstanceStatus::Unhealthy) {
                    continue;
                }
                let reason = context
                    .last_health_error(&instance.id)
                    .unwrap_or_else(|| "health check failing".into());
                let _ =
                    crate::sandbox::stop(&context.config, &instance.dir, context.config.stop_grace)
                        .await;
                format!("restarted because it was unhealthy: {reason}")
            }
            ShimStatus::Exited(exit) => with_log(&describe(&exit), &log),
            ShimStatus::Orphaned { .. } => {
                let _ =
                    crate::sandbox::stop(&context.config, &instance.dir, Duration::from_secs(2))
                        .await;
                "its shim died; the app was stopped to be started again".into()
            }
            ShimStatus::Gone => "its processes vanished".into(),
        };
        let mut message = format!("{} exited: {exit}", instance.id);
        if instance.restarts + 1 == CRASH_LOOP {
            message = format!(
                "{} is crash-looping ({CRASH_LOOP} exits in a row): {exit}",
                instance.id
            );
        }
        let kind = if instance.restarts + 1 == CRASH_LOOP {
            "instance.crash_loop"
        } else {
            "instance.crashed"
        };
        let crashed = about(
            event(kind, "warning", message),
            instance.service_id,
            Some(instance.release_id),
        );
        context
            .store
            .set_instance_status(&instance.id, InstanceStatus::Exited, Some(crashed))
            .await?;
        context.report_now.notify_one();
    }
    Ok(())
}

/// How an app or build ended, for events and failure reasons.
pub(crate) fn describe(exit: &ExitInfo) -> String {
    let how = if exit.oom_killed {
        "killed for using more memory than its limit".into()
    } else if let Some(code) = exit.code {
        format!("exit code {code}")
    } else {
        format!("killed by signal {}", exit.signal.unwrap_or(0))
    };
    match exit.forks_refused {
        0 => how,
        refused => format!("{how}; its process limit refused {refused} forks"),
    }
}

/// A built tree that was deleted is forgotten, so the plan builds it again.
async fn check_trees(
    context: &Arc<Context>,
    releases: &HashMap<Uuid, ReleaseRecord>,
) -> StoreResult<()> {
    for release in releases.values() {
        let built = matches!(
            release.state,
            ReleaseState::Built | ReleaseState::Live | ReleaseState::Retired
        );
        let missing = release.dir.as_ref().is_none_or(|dir| !dir.is_dir());
        if built && missing {
            tracing::warn!(release = %release.id, "release tree missing; rebuilding");
            context.store.forget_build(release.id).await?;
        }
    }
    Ok(())
}

/// A release that never became healthy, or keeps crashing before it ever was,
/// fails with the reason and the last log lines; the previous release keeps serving.
async fn fail_releases_that_cannot_start(
    context: &Arc<Context>,
    document: &DesiredDocument,
    releases: &HashMap<Uuid, ReleaseRecord>,
) -> StoreResult<()> {
    let instances = context.store.instances().await?;
    for workload in &document.state.workloads {
        let Some(release) = releases.get(&workload.release_id) else {
            continue;
        };
        if release.state != ReleaseState::Built {
            continue;
        }
        let mine = instances.iter().filter(|i| i.release_id == release.id);
        let mut reason = None;
        for instance in mine {
            let log = instance.dir.join("log");
            if instance.status == InstanceStatus::Unhealthy {
                let error = context
                    .last_health_error(&instance.id)
                    .unwrap_or_else(|| "health check failing".into());
                reason = Some(with_log(&format!("never became healthy: {error}"), &log));
            } else if instance.status == InstanceStatus::Exited
                && instance.restarts + 1 >= CRASHES_BEFORE_FAILED
            {
                let exit = match crate::sandbox::inspect(&instance.dir).await {
                    ShimStatus::Exited(exit) => describe(&exit),
                    _ => "exited".into(),
                };
                reason = Some(with_log(
                    &format!(
                        "crashed {} times before becoming healthy ({exit})",
                        instance.restarts + 1
                    ),
                    &log,
                ));
            }
        }
        if let Some(reason) = reason {
            let failed = about(
                event(
                    "release.failed",
                    "error",
                    format!(
                        "{} release {} failed: {reason}",
                        workload.service, workload.release_number
                    ),
                ),
                workload.service_id,
                Some(workload.release_id),
            );
            context
                .store
                .set_release_state(
                    release.id,
                    ReleaseState::Failed,
                    Some(&reason),
                    Some(failed),
                )
                .await?;
        }
    }
    Ok(())
}

fn observe(
    context: &Context,
    releases: &HashMap<Uuid, ReleaseRecord>,
    instances: &[InstanceRecord],
) -> Observed {
    let builds: BTreeMap<Uuid, BuildState> = releases
        .values()
        // A release recorded as building with no build task running (the task
        // could not record its outcome) is left out, so the planner builds it
        // again instead of waiting on it forever; `builder::start` checks the
        // record once more before it does.
        .filter(|release| {
            release.state != ReleaseState::Building
                || context.is_busy(&crate::builder::build_key(release.id))
        })
        .map(|release| {
            let state = match release.state {
                ReleaseState::Building => BuildState::Building,
                ReleaseState::Failed => BuildState::Failed {
                    reason: release.reason.clone().unwrap_or_default(),
                },
                ReleaseState::Built | ReleaseState::Live | ReleaseState::Retired => {
                    let is_static = release
                        .run_plan
                        .as_deref()
                        .and_then(crate::builder::static_root_of)
                        .is_some();
                    if is_static {
                        BuildState::Static
                    } else {
                        BuildState::Built
                    }
                }
            };
            (release.id, state)
        })
        .collect();
    let now = now_ms();
    let all = instances;
    let instances = all
        .iter()
        // Instances being stopped are already on their way out.
        .filter(|i| !context.is_busy(&format!("stop:{}", i.id)))
        .map(|i| Instance {
            id: i.id.clone(),
            service: i.service.clone(),
            release_id: i.release_id,
            replica: i.replica,
            state: match i.status {
                InstanceStatus::Starting => InstanceState::Starting,
                InstanceStatus::Healthy => InstanceState::Healthy,
                InstanceStatus::Unhealthy => InstanceState::Unhealthy,
                // Waiting out its restart backoff: not yet to be replaced.
                InstanceStatus::Exited if in_backoff(i, now) => InstanceState::Starting,
                InstanceStatus::Exited => InstanceState::Exited,
            },
        })
        .collect();
    // A service whose instances are still stopping is not ready to be cleaned:
    // hiding its files from the planner until they are gone keeps `Clean` from
    // deleting a directory under a running shim.
    let stopping: BTreeSet<&str> = all
        .iter()
        .filter(|i| context.is_busy(&format!("stop:{}", i.id)))
        .map(|i| i.service.as_str())
        .collect();
    let service_dirs: BTreeSet<String> = std::fs::read_dir(&context.config.apps_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|service| !stopping.contains(service.as_str()))
                .collect()
        })
        .unwrap_or_default();
    Observed {
        // The build step fetches what it needs; the source cache is not consulted.
        sources: BTreeSet::new(),
        builds,
        instances,
        service_dirs,
    }
}

/// Exponential restart backoff: 0.5 s, 1 s, 2 s … capped at a minute.
fn in_backoff(instance: &InstanceRecord, now: i64) -> bool {
    let delay = (500i64 << instance.restarts.min(10)).min(MAX_BACKOFF_MS);
    instance
        .exited_at
        .is_some_and(|exited| now < exited + delay)
}

async fn execute(
    context: &Arc<Context>,
    document: &DesiredDocument,
    releases: &HashMap<Uuid, ReleaseRecord>,
    instances: &[InstanceRecord],
    action: Action,
) -> StoreResult<()> {
    let workload = |service: &str| -> Option<&Workload> {
        document
            .state
            .workloads
            .iter()
            .find(|w| w.service == service)
    };
    match action {
        // The build fetches what it needs.
        Action::Fetch { .. } => {}
        Action::Build { service, .. } => {
            if let Some(workload) = workload(&service) {
                crate::builder::start(context, workload).await?;
            }
        }
        Action::Start {
            service,
            release_id,
            replica,
        } => {
            let (Some(workload), Some(release)) = (workload(&service), releases.get(&release_id))
            else {
                return Ok(());
            };
            let previous = instances.iter().find(|i| {
                i.release_id == release_id
                    && i.replica == replica
                    && i.status == InstanceStatus::Exited
            });
            let restarts = previous.map_or(0, |p| p.restarts + 1);
            if let Err(reason) =
                supervise::start(context, workload, release, replica, restarts).await
            {
                let failed = about(
                    event(
                        "instance.start_failed",
                        "error",
                        format!(
                            "{service} release {} replica {replica} did not start: {reason}",
                            release.number
                        ),
                    ),
                    workload.service_id,
                    Some(release_id),
                );
                if release.state == ReleaseState::Built {
                    context
                        .store
                        .set_release_state(
                            release_id,
                            ReleaseState::Failed,
                            Some(&reason),
                            Some(failed),
                        )
                        .await?;
                } else {
                    context.store.record_event(failed).await?;
                }
            }
        }
        Action::Stop { instance, reason } => {
            let Some(record) = instances.iter().find(|i| i.id == instance) else {
                return Ok(());
            };
            match reason {
                // Already recorded as exited; its replacement was started above.
                StopReason::Exited => {
                    let _ =
                        crate::sandbox::stop(&context.config, &record.dir, Duration::from_secs(1))
                            .await;
                    supervise::keep_log(&context.config, &record.dir).await;
                    context.store.delete_instance(&record.id, None).await?;
                    let _ = crate::sandbox::remove(&context.config, &record.dir).await;
                }
                StopReason::Removed => supervise::stop(context, record, "service removed"),
                StopReason::Replaced => {
                    supervise::stop(context, record, "replaced by a newer release")
                }
                StopReason::ScaledDown => supervise::stop(context, record, "scaled down"),
                StopReason::Failed => supervise::stop(context, record, "its release failed"),
            }
        }
        Action::Clean { service } => {
            // The account first: while a process still runs as it (an instance
            // of this service still stopping, or the same service on another
            // node of this host), everything is kept and the next round, which
            // plans this again, tries again.
            if context.config.sandbox {
                let removed = match crate::helper::Helper::for_agent(&context.config) {
                    Ok(helper) => {
                        helper
                            .run(&crate::helper::Operation::RemoveAppUser {
                                service: service.clone(),
                            })
                            .await
                    }
                    Err(error) => Err(error),
                };
                match removed {
                    Ok(crate::helper::Answer::InUse { pid }) => {
                        tracing::debug!(%service, pid, "the service's user is still in use");
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, %service, "removing a service's user"),
                }
            }
            let dir = context.service_dir(&service);
            if let Err(error) = crate::sandbox::remove(&context.config, &dir).await {
                tracing::warn!(%error, "removing a service's files");
            }
            context.store.forget_service(&service).await?;
            context
                .store
                .record_event(event(
                    "service.cleaned",
                    "info",
                    format!("{service} removed from this node and its files deleted"),
                ))
                .await?;
        }
    }
    Ok(())
}

/// Whether a release the document wants may be built from `old`'s tree (the
/// builder's `reusable`: a built release of the same service, commit and
/// commands; never a failed one). Such a tree stays
/// until that build has recorded it as its own: deleting it between the builder's
/// choice and its record would leave the new release with no tree.
fn reusable_by(document: &DesiredDocument, old: &ReleaseRecord) -> bool {
    old.state != ReleaseState::Failed
        && document.state.workloads.iter().any(|wanted| {
            wanted.service == old.service
                && wanted.commit == old.commit
                && wanted.spec.build == old.spec.build
                && wanted.spec.run == old.spec.run
        })
}

/// Keeps the built trees and build logs of the newest `keep_releases` retired and
/// as many failed releases of each service, besides those the document wants;
/// older ones (that no instance runs)
/// are deleted and forgotten, so a small server's disk does not fill with old
/// builds. A rollback to a forgotten release builds it again. A tree a kept
/// release shares (a reused build) stays.
async fn prune_old_releases(
    context: &Arc<Context>,
    document: &DesiredDocument,
    instances: &[InstanceRecord],
) -> StoreResult<()> {
    // Read again: promotion may just have retired some.
    let releases = context.store.releases().await?;
    let wanted: HashSet<Uuid> = document
        .state
        .workloads
        .iter()
        .map(|w| w.release_id)
        .collect();
    // Retired and failed ones are counted apart: failing deploys do not push out
    // the last good releases a rollback wants.
    let mut by_service: BTreeMap<(&str, &str), Vec<&ReleaseRecord>> = BTreeMap::new();
    // Failed releases go the same way (a service that fails again and again must
    // not fill the disk either); the document's own target never does, or it
    // would be built again.
    for release in releases.iter().filter(|r| {
        matches!(r.state, ReleaseState::Retired | ReleaseState::Failed) && !wanted.contains(&r.id)
    }) {
        by_service
            .entry((&release.service, release.state.as_str()))
            .or_default()
            .push(release);
    }
    let mut doomed: Vec<&ReleaseRecord> = Vec::new();
    for retired in by_service.values_mut() {
        retired.sort_by_key(|release| std::cmp::Reverse(release.number));
        doomed.extend(
            retired
                .iter()
                .skip(context.config.keep_releases)
                .filter(|old| !instances.iter().any(|i| i.release_id == old.id))
                .filter(|old| !reusable_by(document, old)),
        );
    }
    let doomed_ids: HashSet<Uuid> = doomed.iter().map(|r| r.id).collect();
    for old in doomed {
        // A failed build recorded no tree, but may have left its own.
        let tree = old.dir.clone().or_else(|| {
            (old.state == ReleaseState::Failed)
                .then(|| crate::builder::release_dir(context, &old.service, old.number))
        });
        let shared = tree.as_ref().is_some_and(|tree| {
            releases
                .iter()
                .any(|other| !doomed_ids.contains(&other.id) && other.dir.as_ref() == Some(tree))
        });
        if let Some(dir) = tree.as_ref().filter(|_| !shared) {
            if let Err(error) = crate::sandbox::remove(&context.config, dir).await {
                tracing::warn!(%error, "removing an old release tree");
                continue;
            }
        }
        // Its build log goes with it.
        let log = crate::builder::build_dir(context, &old.service, old.number);
        if let Err(error) = crate::sandbox::remove(&context.config, &log).await {
            tracing::warn!(%error, "removing an old build log");
        }
        context.store.forget_build(old.id).await?;
        tracing::info!(service = %old.service, release = old.number, "removed an old release tree");
    }
    Ok(())
}

/// A built release whose replicas are all healthy becomes live (the service's
/// current release on this node); the one it replaces retires.
async fn promote(
    context: &Arc<Context>,
    document: &DesiredDocument,
    releases: &HashMap<Uuid, ReleaseRecord>,
) -> StoreResult<()> {
    let instances = context.store.instances().await?;
    for workload in &document.state.workloads {
        let Some(release) = releases.get(&workload.release_id) else {
            continue;
        };
        if release.state != ReleaseState::Built {
            continue;
        }
        let healthy = instances
            .iter()
            .filter(|i| i.release_id == release.id && i.status == InstanceStatus::Healthy)
            .count();
        let is_static = release
            .run_plan
            .as_deref()
            .and_then(crate::builder::static_root_of)
            .is_some();
        if (healthy as u32) < workload.replicas && !is_static {
            continue;
        }
        for old in releases.values().filter(|r| {
            r.service == release.service && r.id != release.id && r.state == ReleaseState::Live
        }) {
            context
                .store
                .set_release_state(old.id, ReleaseState::Retired, None, None)
                .await?;
        }
        let live = about(
            event(
                "release.live",
                "info",
                format!(
                    "{} release {} is live ({} healthy)",
                    workload.service, workload.release_number, healthy
                ),
            ),
            workload.service_id,
            Some(workload.release_id),
        );
        context
            .store
            .set_release_state(release.id, ReleaseState::Live, None, Some(live))
            .await?;
        context.nudge();
    }
    // Every round, not only at a promotion: the instances of a release just
    // retired are still stopping then, and its tree must wait for them.
    prune_old_releases(context, document, &instances).await
}

async fn record_convergence(
    context: &Arc<Context>,
    document: &DesiredDocument,
    observed: &Observed,
) -> StoreResult<()> {
    let (reported, problems) = match plan::convergence(&document.state, observed) {
        Convergence::Applied => (Reported::Applied, Vec::new()),
        Convergence::Applying => (Reported::Applying, Vec::new()),
        Convergence::Degraded(problems) => (Reported::Degraded, problems),
    };
    let previous = context
        .status
        .lock()
        .map(|status| status.clone())
        .unwrap_or(NodeStatus {
            convergence: Reported::Unknown,
            problems: Vec::new(),
        });
    let (_, applied) = context.store.versions().await?;
    if reported == Reported::Applied && applied != document.version {
        let done = event(
            "document.applied",
            "info",
            format!("desired state version {} applied", document.version),
        );
        context
            .store
            .set_applied(document.version, Some(done))
            .await?;
    }
    if reported == Reported::Degraded
        && (previous.convergence != Reported::Degraded || previous.problems != problems)
    {
        let degraded = event(
            "document.degraded",
            "warning",
            format!(
                "desired state version {} cannot be fully applied: {}",
                document.version,
                problems.join("; ")
            ),
        );
        context.store.record_event(degraded).await?;
    }
    if previous.convergence != reported || previous.problems != problems {
        context.report_now.notify_one();
    }
    if let Ok(mut status) = context.status.lock() {
        *status = NodeStatus {
            convergence: reported,
            problems,
        };
    }
    Ok(())
}

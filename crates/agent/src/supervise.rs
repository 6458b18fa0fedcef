//! Instances: start one under its shim with a fresh port, stop one (SIGTERM, grace,
//! SIGKILL of its process group), and watch its health.
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoscale_core::agent::InstanceStatus;
use nanoscale_core::desired::Workload;
use rand::Rng;

use crate::builder::{create_shim_parent, environment, home_dir};
use crate::context::{about, Context, HealthState};
use crate::health::{CommandPlace, ShimPlace};
use crate::runtime::{self, Limits, ShimSpec};
use crate::store::{event, now_ms, InstanceRecord, ReleaseRecord};

/// How often a starting instance is checked until it first passes: fast, so a
/// deploy goes live as soon as the app answers.
const START_POLL: Duration = Duration::from_millis(100);

/// Starts replica `replica` of `release`. `restarts` carries over from the instance
/// it replaces.
pub async fn start(
    context: &Arc<Context>,
    workload: &Workload,
    release: &ReleaseRecord,
    replica: u32,
    restarts: u32,
) -> Result<(), String> {
    let (Some(dir), Some(run)) = (&release.dir, &release.run_plan) else {
        return Err("release is not built".into());
    };
    let port = free_port(context).await?;
    let suffix: u16 = rand::rng().random();
    let id = format!(
        "{}-r{}-{}-{:04x}",
        workload.service, release.number, replica, suffix
    );
    let instance_dir = instances_dir(context, &workload.service).join(&id);
    create_shim_parent(&instance_dir)?;
    let env = environment(context, workload, dir, Some(port));
    let home = home_dir(context, &workload.service);
    let volumes = &release.spec.volumes;
    let confinement =
        crate::sandbox::confine(&context.config, &workload.service, dir, &home, volumes)
            .await
            .map_err(|error| format!("preparing the sandbox: {error}"))?;
    let resources = &release.spec.resources;
    let spec = ShimSpec {
        id: id.clone(),
        argv: vec!["/bin/sh".into(), "-c".into(), run.clone()],
        env,
        cwd: dir.clone(),
        log_dir: instance_dir.join("log"),
        log_max_bytes: context.config.log_max_bytes,
        log_keep: context.config.log_keep,
        limits: Limits {
            memory_bytes: resources.memory_mb.map(|mb| u64::from(mb) << 20),
            swap_bytes: None,
            cpu_millis: resources.cpu_millis,
            pids: context.config.pids_limit(resources.pids),
        },
        stop_grace_secs: u32::try_from(context.config.stop_grace.as_secs()).unwrap_or(10),
        uid: confinement.uid,
        gid: confinement.gid,
        sandbox: confinement.sandbox,
    };
    let launched =
        crate::sandbox::launch(&context.config, &workload.service, &instance_dir, &spec).await?;
    let record = InstanceRecord {
        id: id.clone(),
        service: workload.service.clone(),
        service_id: workload.service_id,
        release_id: release.id,
        replica,
        port,
        dir: instance_dir.clone(),
        status: InstanceStatus::Starting,
        restarts,
        pid: Some(launched.app.pid),
        started_at: now_ms(),
        exited_at: None,
    };
    let started = about(
        event(
            "instance.started",
            "info",
            format!(
                "{id} started (release {}, port {port}, pid {})",
                release.number, launched.app.pid
            ),
        ),
        workload.service_id,
        Some(release.id),
    );
    if let Err(error) = context.store.insert_instance(&record, started).await {
        // Never leave a process the store does not know about.
        let _ = crate::sandbox::stop(&context.config, &instance_dir, Duration::from_secs(1)).await;
        return Err(error.to_string());
    }
    for warning in runtime::warnings(&instance_dir) {
        let warned = about(
            event("instance.limits", "warning", format!("{id}: {warning}")),
            workload.service_id,
            Some(release.id),
        );
        let _ = context.store.record_event(warned).await;
    }
    watch_health(context, &record, release);
    Ok(())
}

/// `<apps>/<service>/instances`.
pub fn instances_dir(context: &Context, service: &str) -> PathBuf {
    context.service_dir(service).join("instances")
}

/// A port of the range that no instance holds and that binds right now, looked
/// for from a random place in the range: two agents on one host (nodes made
/// with `--data-dir`, as the tests make them) would otherwise both take the
/// lowest free port at the same moment, and one app would fail to bind.
async fn free_port(context: &Context) -> Result<u16, String> {
    let used = context
        .store
        .used_ports()
        .await
        .map_err(|error| error.to_string())?;
    let range = context.config.ports.clone();
    let size = usize::from(range.end().saturating_sub(*range.start())) + 1;
    let start = rand::rng().random_range(0..size);
    range
        .cycle()
        .skip(start)
        .take(size)
        .filter(|port| !used.contains(port))
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .ok_or_else(|| "no free port left in the instance port range".to_owned())
}

/// Stops an instance in the background (SIGTERM, grace, SIGKILL), then forgets it.
pub fn stop(context: &Arc<Context>, instance: &InstanceRecord, why: &str) {
    let key = format!("stop:{}", instance.id);
    if !context.claim(key.clone()) {
        return;
    }
    let context = Arc::clone(context);
    let instance = instance.clone();
    let why = why.to_owned();
    tokio::spawn(async move {
        // Out of the route table first (the claim above makes `publish` leave it
        // out), then time for requests already sent to it to finish.
        if context.config.proxy.is_some() && instance.status == InstanceStatus::Healthy {
            crate::traffic::publish(&context).await;
            tokio::time::sleep(context.config.drain).await;
        }
        let grace = context.config.stop_grace;
        if let Err(error) = crate::sandbox::stop(&context.config, &instance.dir, grace).await {
            tracing::warn!(%error, instance = %instance.id, "stopping an instance");
        }
        let stopped = about(
            event(
                "instance.stopped",
                "info",
                format!("{} stopped ({why})", instance.id),
            ),
            instance.service_id,
            Some(instance.release_id),
        );
        // Its log is kept before it leaves the store, so a reader never misses it.
        keep_log(&context.config, &instance.dir).await;
        if let Err(error) = context
            .store
            .delete_instance(&instance.id, Some(stopped))
            .await
        {
            tracing::error!(%error, instance = %instance.id, "could not record a stop");
        }
        let _ = crate::sandbox::remove(&context.config, &instance.dir).await;
        if let Ok(mut health) = context.health.lock() {
            health.remove(&instance.id);
        }
        context.release(&key);
        context.nudge();
    });
}

/// Keeps the log of a stopped instance among its service's
/// (`runtime::logs::keep_stopped`); through the privileged helper (`keep_log`) on a
/// node that sandboxes apps, whose instance directories are the helper's.
pub async fn keep_log(config: &crate::context::AgentConfig, instance_dir: &std::path::Path) {
    let kept = if config.sandbox {
        crate::sandbox::keep_log(config, instance_dir).await
    } else {
        let dir = instance_dir.to_path_buf();
        tokio::task::spawn_blocking(move || crate::runtime::logs::keep_stopped(&dir))
            .await
            .unwrap_or_else(|error| Err(error.to_string()))
    };
    if let Err(error) = kept {
        tracing::warn!(%error, dir = %instance_dir.display(), "keeping a stopped instance's log");
    }
}

/// Checks an instance until it is gone: quickly until it first passes (within the
/// start period failures do not count), then every interval; `retries` failures in
/// a row make it unhealthy. Transitions are stored with their events.
pub fn watch_health(context: &Arc<Context>, instance: &InstanceRecord, release: &ReleaseRecord) {
    let key = format!("health:{}", instance.id);
    if !context.claim(key.clone()) {
        return;
    }
    let context = Arc::clone(context);
    let instance = instance.clone();
    let release = release.clone();
    let spec = release.spec.health.clone();
    let cwd = release.dir.clone().unwrap_or_else(|| instance.dir.clone());
    let env: Vec<(String, String)> = release
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let service = instance.service.clone();
    tokio::spawn(async move {
        // A health command is the user's code: it runs confined like the app, or
        // not at all (a sandbox that cannot be made fails the check).
        let confinement = match (&spec.command, &release.dir) {
            (Some(_), Some(dir)) if context.config.sandbox => Some(
                crate::sandbox::confine(
                    &context.config,
                    &service,
                    dir,
                    &home_dir(&context, &service),
                    &release.spec.volumes,
                )
                .await
                .map_err(|error| format!("health command sandbox: {error}")),
            ),
            _ => None,
        };
        let begun = Instant::now();
        let start_period = Duration::from_secs(spec.start_period_secs.into());
        let interval = Duration::from_secs(spec.interval_secs.max(1).into());
        let mut status = instance.status;
        let mut failures = 0u32;
        loop {
            let current = context.store.instance(&instance.id).await.ok().flatten();
            let Some(current) = current else { break };
            if current.status == InstanceStatus::Exited
                || context.is_busy(&format!("stop:{}", instance.id))
            {
                break;
            }
            let result = match &confinement {
                Some(Err(error)) => Err(error.clone()),
                confined => {
                    let shim = confined
                        .as_ref()
                        .and_then(|c| c.as_ref().ok())
                        .map(|confinement| ShimPlace {
                            config: &context.config,
                            service: &service,
                            dir: instance.dir.join("health"),
                            id: format!("{}-health", instance.id),
                            confinement,
                            pids: context.config.default_pids,
                        });
                    let place = CommandPlace {
                        cwd: &cwd,
                        env: &env,
                        shim,
                    };
                    crate::health::check(&spec, instance.port, &place).await
                }
            };
            let in_start_period = begun.elapsed() < start_period;
            let next = match &result {
                Ok(()) => {
                    failures = 0;
                    InstanceStatus::Healthy
                }
                Err(_) if in_start_period && status == InstanceStatus::Starting => {
                    InstanceStatus::Starting
                }
                Err(_) => {
                    failures += 1;
                    if failures >= spec.retries.max(1) {
                        InstanceStatus::Unhealthy
                    } else {
                        status
                    }
                }
            };
            if let Ok(mut health) = context.health.lock() {
                health.insert(
                    instance.id.clone(),
                    HealthState {
                        last_error: result.clone().err(),
                    },
                );
            }
            if next != status {
                let (kind, severity, message) = match next {
                    InstanceStatus::Healthy => (
                        "instance.healthy",
                        "info",
                        format!("{} is healthy", instance.id),
                    ),
                    _ => (
                        "instance.unhealthy",
                        "warning",
                        format!(
                            "{} is unhealthy: {}",
                            instance.id,
                            result.clone().err().unwrap_or_default()
                        ),
                    ),
                };
                let changed = about(
                    event(kind, severity, message),
                    instance.service_id,
                    Some(instance.release_id),
                );
                if context
                    .store
                    .set_instance_status(&instance.id, next, Some(changed))
                    .await
                    .is_ok()
                {
                    status = next;
                    context.nudge();
                }
            }
            let pause = if status == InstanceStatus::Starting {
                START_POLL
            } else {
                interval
            };
            tokio::time::sleep(pause).await;
        }
        context.release(&key);
    });
}

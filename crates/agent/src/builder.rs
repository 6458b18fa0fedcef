//! Building a release: fetch its exact commit into the service's source cache,
//! export it into a fresh release directory, decide how to build and run it, and
//! run the build under a shim (so it has a log, a memory limit, a time limit, and
//! survives nothing it should not). A release with the same commit and the same
//! build and run commands as one already built reuses that tree: a rollback or a
//! redeploy of the same commit does not build again.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nanoscale_core::desired::Workload;
use uuid::Uuid;

use crate::build::{detect, RunPlan};
use crate::context::{about, Context};
use crate::runtime::{self, Limits, ShimSpec};
use crate::store::{event, ReleaseState, StoreResult};

/// Lines of build output quoted in a failure reason.
const REASON_LINES: usize = 12;
/// Longest line of output quoted in a reason, in bytes.
const REASON_LINE: usize = 240;

/// `<apps>/<service>/releases/<number>`.
pub fn release_dir(context: &Context, service: &str, number: i64) -> PathBuf {
    context
        .service_dir(service)
        .join("releases")
        .join(number.to_string())
}

/// The build's shim directory; its `log/` holds the build output.
pub fn build_dir(context: &Context, service: &str, number: i64) -> PathBuf {
    context
        .service_dir(service)
        .join("builds")
        .join(number.to_string())
}

/// Starts building `workload`'s release in the background, unless it already is.
pub async fn start(context: &Arc<Context>, workload: &Workload) -> StoreResult<()> {
    let key = build_key(workload.release_id);
    if !context.claim(key.clone()) {
        return Ok(());
    }
    // The planner's view may predate a build that just finished: a recorded
    // outcome stands. Only a record still `building` with no task (an outcome
    // that could not be written) is built again.
    match context.store.release(workload.release_id).await {
        Ok(Some(record)) if record.state != ReleaseState::Building => {
            context.release(&key);
            return Ok(());
        }
        Ok(Some(_)) => tracing::warn!(
            service = %workload.service,
            release = workload.release_number,
            "a build left no outcome; building it again"
        ),
        Ok(None) => {}
        Err(error) => {
            context.release(&key);
            return Err(error);
        }
    }
    let started = about(
        event(
            "build.started",
            "info",
            format!(
                "building {} release {} (commit {})",
                workload.service,
                workload.release_number,
                &workload.commit[..12.min(workload.commit.len())]
            ),
        ),
        workload.service_id,
        Some(workload.release_id),
    );
    if let Err(error) = context.store.begin_build(workload, started).await {
        context.release(&key);
        return Err(error);
    }
    context.report_now.notify_one();
    let context = Arc::clone(context);
    let workload = workload.clone();
    tokio::spawn(async move {
        // Released however the task ends, a panic included.
        let _claim = Claim {
            context: Arc::clone(&context),
            key,
        };
        let outcome = build(&context, &workload).await;
        let store = &context.store;
        let recorded = match outcome {
            Ok((dir, run, how)) => {
                let done = about(
                    event(
                        "build.succeeded",
                        "info",
                        format!(
                            "built {} release {} ({how})",
                            workload.service, workload.release_number
                        ),
                    ),
                    workload.service_id,
                    Some(workload.release_id),
                );
                store
                    .finish_build(workload.release_id, &dir, &run, done)
                    .await
            }
            Err(reason) => {
                let failed = about(
                    event(
                        "build.failed",
                        "error",
                        format!(
                            "{} release {} failed to build: {reason}",
                            workload.service, workload.release_number
                        ),
                    ),
                    workload.service_id,
                    Some(workload.release_id),
                );
                store
                    .set_release_state(
                        workload.release_id,
                        ReleaseState::Failed,
                        Some(&format!("build failed: {reason}")),
                        Some(failed),
                    )
                    .await
            }
        };
        match recorded {
            Ok(()) => tracing::debug!(
                service = %workload.service,
                release = workload.release_number,
                "build outcome recorded"
            ),
            Err(error) => {
                tracing::error!(%error, release = %workload.release_id, "could not record a build outcome")
            }
        }
    });
    Ok(())
}

/// The claim a build task holds on its release while it runs.
pub fn build_key(release: Uuid) -> String {
    format!("build:{release}")
}

/// A claim released when dropped, and the loop nudged to look again.
struct Claim {
    context: Arc<Context>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.context.release(&self.key);
        self.context.nudge();
    }
}

/// Returns the built tree, the run command and how it was decided.
async fn build(
    context: &Context,
    workload: &Workload,
) -> Result<(PathBuf, String, String), String> {
    if let Some(reused) = reusable(context, workload).await {
        return Ok(reused);
    }
    context
        .sources
        .ensure(
            &workload.service,
            &workload.spec.source.git,
            &workload.commit,
        )
        .await
        .map_err(|error| error.to_string())?;
    let dir = release_dir(context, &workload.service, workload.release_number);
    if dir.exists() {
        // A tree left by an interrupted build: start clean.
        crate::sandbox::remove(&context.config, &dir)
            .await
            .map_err(|error| format!("removing the old tree: {error}"))?;
    }
    if let Some(parent) = dir.parent() {
        create_private_dir(parent)?;
    }
    context
        .sources
        .export(&workload.service, &workload.commit, &dir)
        .await
        .map_err(|error| error.to_string())?;
    let spec = &workload.spec;
    let tools = |program: &str| nanoscale_process::which(program).is_some();
    let plan = detect(&dir, spec.build.as_deref(), spec.run.as_deref(), &tools)
        .map_err(|error| error.to_string())?;
    tracing::debug!(service = %workload.service, release = workload.release_number, ?plan, "build planned");
    if let Some(command) = &plan.build {
        crate::low_memory::ensure(context).await;
        run_build(context, workload, &dir, command).await?;
    }
    let run = match plan.run {
        RunPlan::Command(command) => command,
        RunPlan::Static { root } => {
            if context.config.proxy.is_none() {
                return Err(
                    "this is a static site, served by the traffic layer, which this \
                            node does not run; give the service a run command to serve it"
                        .into(),
                );
            }
            // The build made the tree the app's (0700): the proxy, the agent's
            // user, reads it through the agent's group.
            if context.config.sandbox && plan.build.is_some() {
                crate::sandbox::share_release(&context.config, &dir).await?;
            }
            // Checked again after the build, which may have made (or swapped) it.
            let root = crate::build::static_root(&dir, &root).map_err(|e| e.to_string())?;
            static_run_plan(&root)
        }
    };
    Ok((dir, run, plan.detected_by))
}

/// How a static release is recorded in place of a run command: the JSON of
/// [`RunPlan::Static`] with the absolute root (no shell command looks like it).
pub fn static_run_plan(root: &Path) -> String {
    serde_json::to_string(&RunPlan::Static {
        root: root.to_path_buf(),
    })
    .unwrap_or_default()
}

/// The files a static release serves, when `run_plan` is one.
pub fn static_root_of(run_plan: &str) -> Option<PathBuf> {
    match serde_json::from_str::<RunPlan>(run_plan) {
        Ok(RunPlan::Static { root }) if root.is_absolute() => Some(root),
        _ => None,
    }
}

/// A built tree of the same service with the same commit and commands.
async fn reusable(context: &Context, workload: &Workload) -> Option<(PathBuf, String, String)> {
    let releases = context.store.releases().await.ok()?;
    releases
        .into_iter()
        .filter(|release| {
            release.service == workload.service
                && release.id != workload.release_id
                && release.commit == workload.commit
                && release.spec.build == workload.spec.build
                && release.spec.run == workload.spec.run
                && matches!(
                    release.state,
                    ReleaseState::Built | ReleaseState::Live | ReleaseState::Retired
                )
        })
        .find_map(|release| {
            let dir = release.dir?;
            let run = release.run_plan?;
            dir.is_dir().then(|| {
                (
                    dir,
                    run,
                    format!("reused the build of release {}", release.number),
                )
            })
        })
}

/// A build's limits: its memory limit in RAM, and as much again in swap, so that
/// on a low-memory host the swap file (`low_memory.rs`) can carry it past its RAM.
pub fn build_limits(memory_bytes: Option<u64>, pids: Option<u32>) -> Limits {
    Limits {
        memory_bytes,
        swap_bytes: memory_bytes,
        cpu_millis: None,
        pids,
    }
}

async fn run_build(
    context: &Context,
    workload: &Workload,
    release: &Path,
    command: &str,
) -> Result<(), String> {
    let dir = build_dir(context, &workload.service, workload.release_number);
    if dir.exists() {
        // Stop a build left running by a previous agent before reusing its place.
        let _ = crate::sandbox::stop(&context.config, &dir, Duration::from_secs(1)).await;
        crate::sandbox::remove(&context.config, &dir).await?;
    }
    create_shim_parent(&dir)?;
    let env = environment(context, workload, release, None);
    let home = home_dir(context, &workload.service);
    let confinement =
        crate::sandbox::confine(&context.config, &workload.service, release, &home, &[])
            .await
            .map_err(|error| format!("preparing the build's sandbox: {error}"))?;
    let spec = ShimSpec {
        id: format!("build-{}-{}", workload.service, workload.release_number),
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_owned()],
        env,
        cwd: release.to_path_buf(),
        log_dir: dir.join("log"),
        log_max_bytes: context.config.log_max_bytes,
        log_keep: context.config.log_keep,
        limits: build_limits(
            context.config.build_memory_bytes,
            context.config.pids_limit(None),
        ),
        stop_grace_secs: 5,
        uid: confinement.uid,
        gid: confinement.gid,
        sandbox: confinement.sandbox,
    };
    crate::sandbox::launch(&context.config, &workload.service, &dir, &spec).await?;
    tracing::debug!(service = %workload.service, release = workload.release_number, "build launched");
    let log = dir.join("log");
    let ended = runtime::wait_for_exit(
        &dir,
        context.config.build_timeout,
        Duration::from_millis(100),
    )
    .await;
    tracing::debug!(service = %workload.service, release = workload.release_number, ?ended, "build's shim ended");
    match ended {
        runtime::Ended::Exited(exit) if exit.code == Some(0) => Ok(()),
        runtime::Ended::Exited(exit) => {
            let how = crate::executor::describe(&exit);
            Err(with_log(&format!("`{command}` failed: {how}"), &log))
        }
        runtime::Ended::Died => {
            let _ = crate::sandbox::stop(&context.config, &dir, Duration::from_secs(1)).await;
            Err(with_log("the build's supervisor died", &log))
        }
        runtime::Ended::TimedOut => {
            let _ = crate::sandbox::stop(&context.config, &dir, Duration::from_secs(2)).await;
            let secs = context.config.build_timeout.as_secs();
            Err(with_log(&format!("timed out after {secs} s"), &log))
        }
    }
}

/// A reason followed by the last lines of a log, each cut to [`REASON_LINE`]
/// bytes so that one long line cannot push the others out of the report's limit.
pub fn with_log(reason: &str, log_dir: &Path) -> String {
    let lines: Vec<_> = runtime::tail_exit_reason(log_dir, REASON_LINES)
        .iter()
        .map(|line| nanoscale_core::agent::clip(line, REASON_LINE).into_owned())
        .collect();
    if lines.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}; last output:\n{}", lines.join("\n"))
    }
}

/// The environment of builds and instances: the service's env, then what NanoScale
/// sets (which the service cannot override).
pub fn environment(
    context: &Context,
    workload: &Workload,
    release: &Path,
    port: Option<u16>,
) -> Vec<(String, String)> {
    let home = home_dir(context, &workload.service);
    let _ = create_private_dir(&home);
    let mut env: Vec<(String, String)> = workload
        .spec
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let ours = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("HOME", home.display().to_string()),
        ("LANG", "C.UTF-8".to_owned()),
        ("NANOSCALE_SERVICE", workload.service.clone()),
        ("NANOSCALE_RELEASE", workload.release_number.to_string()),
        ("NANOSCALE_COMMIT", workload.commit.clone()),
        ("NANOSCALE_RELEASE_DIR", release.display().to_string()),
    ];
    env.retain(|(name, _)| name != "PORT" && !ours.iter().any(|(ours, _)| ours == name));
    env.extend(
        ours.into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
    );
    if let Some(port) = port {
        env.push(("PORT".into(), port.to_string()));
    }
    // SERVICE_<NAME>_URL for every service of the project (the internal proxy
    // routes by that host), unless the service's own env sets it.
    if let (Some(proxy), Some(document)) = (&context.config.proxy, context.document()) {
        for other in document
            .state
            .workloads
            .iter()
            .filter(|w| w.project == workload.project)
        {
            let name = format!(
                "SERVICE_{}_URL",
                other.service.to_ascii_uppercase().replace('-', "_")
            );
            if let Some(url) = proxy.internal_url(&other.service) {
                if !env.iter().any(|(existing, _)| *existing == name) {
                    env.push((name, url));
                }
            }
        }
    }
    env
}

/// `<apps>/<service>/home`, the app's `$HOME`.
pub fn home_dir(context: &Context, service: &str) -> PathBuf {
    context.service_dir(service).join("home")
}

/// Creates the parents of a shim's directory `dir`: the directory itself is made
/// by whoever starts the shim (the privileged helper, for a sandboxed app, makes
/// it its own; one the agent made would be refused).
pub fn create_shim_parent(dir: &Path) -> Result<(), String> {
    match dir.parent() {
        Some(parent) => create_private_dir(parent),
        None => Ok(()),
    }
}

/// Creates `dir` (and parents) readable by the agent's user only.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("creating {}: {error}", dir.display()))
}

//! The agent's side: launch a shim, find out what became of it, stop it.
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cgroup::Layout;
use super::proc::{group_alive, signal_app_group, signal_process};
use super::{
    files, logs, valid_id, write_atomic, ExitInfo, ExitRecord, Launched, ProcRef, RuntimeError,
    ShimSpec, ShimStatus,
};

/// How long `launch` waits for the shim to report the app started (or failed to).
const LAUNCH_WAIT: Duration = Duration::from_secs(5);
/// What `stop` allows the shim beyond the grace period (draining logs, cgroup
/// removal) before it takes over and kills everything itself.
const SHIM_MARGIN: Duration = Duration::from_secs(5);
/// After SIGKILL, how long processes get to disappear before `stop` reports failure.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// Writes `<dir>/shim.json` (0600: it holds env secrets), starts
/// `shim_exe shim_args... <dir>` detached in its own process group, and waits until
/// the shim has started the app, or recorded why it could not.
///
/// The shim is this process's child until it exits: the `tokio::process::Child` is
/// dropped without `kill_on_drop`, which hands it to tokio's orphan queue, reaped by
/// the runtime when it exits, so a long-running agent accumulates no zombies. If the
/// agent exits first, the shim is re-parented and keeps running.
pub async fn launch(
    shim_exe: &Path,
    shim_args: &[&str],
    dir: &Path,
    spec: &ShimSpec,
) -> Result<Launched, RuntimeError> {
    let dir = prepare(dir, spec).await?;
    start_prepared(shim_exe, shim_args, &dir).await
}

/// The first half of [`launch`]: checks `spec`, makes `dir` (0700) and writes
/// `<dir>/shim.json` (0600) once no shim runs there; returns the directory as an
/// absolute path. The privileged helper does the second half for a confined app.
pub async fn prepare(dir: &Path, spec: &ShimSpec) -> Result<PathBuf, RuntimeError> {
    validate(spec)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| RuntimeError::io("creating", dir, error))?;
    // The shim runs in `/`, so it must be given an absolute directory.
    let dir =
        std::fs::canonicalize(dir).map_err(|error| RuntimeError::io("resolving", dir, error))?;
    match inspect(&dir) {
        ShimStatus::Running(Launched { shim, .. }) | ShimStatus::Starting { shim } => {
            return Err(RuntimeError::AlreadyRunning { dir, pid: shim.pid })
        }
        ShimStatus::Orphaned { app } => {
            return Err(RuntimeError::AlreadyRunning { dir, pid: app.pid })
        }
        ShimStatus::Exited(_) | ShimStatus::Gone => {}
    }
    // A shim that recorded its exit may still be removing the cgroup named after
    // this id; a new shim joining it now would be killed with the leftovers.
    if let Some(old_shim) = ProcRef::read(&dir.join(files::SHIM_PID)) {
        let deadline = Instant::now() + LAUNCH_WAIT;
        while old_shim.alive() {
            if Instant::now() >= deadline {
                return Err(RuntimeError::AlreadyRunning {
                    dir,
                    pid: old_shim.pid,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    for stale in [
        files::SHIM_PID,
        files::APP_PID,
        files::EXIT,
        files::WARNINGS,
        files::STOP_GRACE,
    ] {
        let path = dir.join(stale);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::io("removing", &path, error))
            }
            _ => {}
        }
    }
    let spec_path = dir.join(files::SPEC);
    let spec_json = serde_json::to_vec(spec)
        .map_err(|error| RuntimeError::InvalidSpec(format!("cannot encode: {error}")))?;
    write_atomic(&spec_path, &spec_json, 0o600)
        .map_err(|error| RuntimeError::io("writing", &spec_path, error))?;
    Ok(dir)
}

/// Whether `spec` is one a shim can run (the checks [`prepare`] makes first).
pub fn check_spec(spec: &ShimSpec) -> Result<(), RuntimeError> {
    validate(spec)
}

/// The second half of [`launch`]: starts the shim on the prepared `dir` (absolute)
/// and waits until it has started the app, or recorded why it could not.
pub async fn start_prepared(
    shim_exe: &Path,
    shim_args: &[&str],
    dir: &Path,
) -> Result<Launched, RuntimeError> {
    let dir = dir.to_path_buf();
    let dir_text = dir
        .to_str()
        .ok_or_else(|| RuntimeError::InvalidSpec(format!("{} is not valid UTF-8", dir.display())))?
        .to_owned();
    let mut args: Vec<String> = shim_args.iter().map(|arg| (*arg).to_owned()).collect();
    args.push(dir_text);
    let mut child = nanoscale_process::spawn_detached(&nanoscale_process::DetachedSpec {
        program: shim_exe.to_path_buf(),
        args,
        env: Vec::new(),
        cwd: PathBuf::from("/"),
        inherit_stderr: false,
    })?;

    let deadline = Instant::now() + LAUNCH_WAIT;
    loop {
        // Checked before the files so that a shim that exits right after writing
        // them is still judged by the files.
        let shim_exit = child.try_wait().ok().flatten();
        if let Some(record) = read_exit(&dir) {
            if let Some(reason) = record.start_error {
                return Err(RuntimeError::AppStart { reason });
            }
        }
        if let (Some(shim), Some(app)) = (
            ProcRef::read(&dir.join(files::SHIM_PID)),
            ProcRef::read(&dir.join(files::APP_PID)),
        ) {
            return Ok(Launched { shim, app });
        }
        if let Some(status) = shim_exit {
            return Err(RuntimeError::ShimExited {
                dir,
                status: status.to_string(),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.start_kill();
            return Err(RuntimeError::LaunchTimeout {
                dir,
                seconds: LAUNCH_WAIT.as_secs(),
            });
        }
        tokio::time::sleep(POLL / 2).await;
    }
}

/// What became of the instance in `dir`, from its pid and exit files and /proc.
pub fn inspect(dir: &Path) -> ShimStatus {
    if let Some(record) = read_exit(dir) {
        return ShimStatus::Exited(record.info);
    }
    let shim = ProcRef::read(&dir.join(files::SHIM_PID)).filter(ProcRef::alive);
    let app = ProcRef::read(&dir.join(files::APP_PID));
    match (shim, app) {
        (Some(shim), Some(app)) => return ShimStatus::Running(Launched { shim, app }),
        (Some(shim), None) => return ShimStatus::Starting { shim },
        // A group outliving its leader counts: stop() must still clean it up.
        (None, Some(app)) if app.alive() || group_alive(app.pid) => {
            return ShimStatus::Orphaned { app }
        }
        _ => {}
    }
    // The shim may have recorded the exit and gone between the reads above.
    match read_exit(dir) {
        Some(record) => ShimStatus::Exited(record.info),
        None => ShimStatus::Gone,
    }
}

/// Stops the instance in `dir`: SIGTERM to the shim, which forwards it to the app's
/// process group and SIGKILLs the group after `grace` (handed over in
/// `<dir>/stop-grace`). Waits until shim and app are gone; if the shim is gone or
/// stuck, signals the app's group itself (TERM, then KILL after `grace`).
/// Idempotent. Returns the exit record if the shim wrote one (an orphaned app's
/// status is unknowable: its parent was not us).
pub async fn stop(dir: &Path, grace: Duration) -> Result<Option<ExitInfo>, RuntimeError> {
    let shim = ProcRef::read(&dir.join(files::SHIM_PID)).filter(ProcRef::alive);
    if let Some(shim) = &shim {
        let grace_path = dir.join(files::STOP_GRACE);
        write_atomic(&grace_path, grace.as_millis().to_string().as_bytes(), 0o644)
            .map_err(|error| RuntimeError::io("writing", &grace_path, error))?;
        signal_process(shim, Signal::SIGTERM).map_err(|source| RuntimeError::Signal {
            pid: shim.pid,
            source,
        })?;
    }
    let started = Instant::now();
    let shim_deadline = started + grace + SHIM_MARGIN;
    let mut group_terminated_at: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    loop {
        let shim_alive = shim.as_ref().is_some_and(ProcRef::alive);
        let app = ProcRef::read(&dir.join(files::APP_PID));
        let now = Instant::now();
        if !shim_alive {
            let Some(app) = app.filter(|app| app.alive() || group_alive(app.pid)) else {
                break;
            };
            // The shim is gone (or was never there): stop the group ourselves.
            match group_terminated_at {
                None => {
                    let _ = signal_app_group(&app, Signal::SIGTERM);
                    group_terminated_at = Some(now);
                }
                Some(at) if now >= at + grace && killed_at.is_none() => {
                    let _ = signal_app_group(&app, Signal::SIGKILL);
                    killed_at = Some(now);
                }
                _ => {}
            }
        } else if now >= shim_deadline && killed_at.is_none() {
            if let Some(app) = &app {
                let _ = signal_app_group(app, Signal::SIGKILL);
            }
            if let Some(shim) = &shim {
                let _ = signal_process(shim, Signal::SIGKILL);
            }
            killed_at = Some(now);
        }
        if let Some(at) = killed_at {
            if now >= at + KILL_WAIT {
                let pid = app.map_or_else(|| shim.map_or(0, |shim| shim.pid), |app| app.pid);
                return Err(RuntimeError::StopTimeout {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
        }
        tokio::time::sleep(POLL).await;
    }
    remove_leftover_cgroups(dir).await;
    Ok(read_exit(dir).map(|record| record.info))
}

/// The last `lines` log lines' text, for "crashed: <last lines>" messages.
pub fn tail_exit_reason(log_dir: &Path, lines: usize) -> Vec<String> {
    logs::tail(log_dir, lines)
        .0
        .into_iter()
        .map(|line| line.text)
        .collect()
}

/// Limits the shim could not enforce (`<dir>/warnings.json`), for an event.
pub fn warnings(dir: &Path) -> Vec<String> {
    std::fs::read(dir.join(files::WARNINGS))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// How a run under a shim ended, as [`wait_for_exit`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitInfo),
    /// The shim is gone (or the app orphaned) without recording an exit.
    Died,
    TimedOut,
}

/// Waits, checking every `poll`, until the run in `dir` has ended or `timeout`
/// has passed. Stops nothing: on `Died` or `TimedOut` the caller decides.
pub async fn wait_for_exit(dir: &Path, timeout: Duration, poll: Duration) -> Ended {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match inspect(dir) {
            ShimStatus::Exited(exit) => return Ended::Exited(exit),
            ShimStatus::Gone | ShimStatus::Orphaned { .. } => return Ended::Died,
            ShimStatus::Running(_) | ShimStatus::Starting { .. } => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ended::TimedOut;
        }
        tokio::time::sleep(poll).await;
    }
}

fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(dir.join(files::EXIT)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A shim killed with -9 never removed its cgroups.
async fn remove_leftover_cgroups(dir: &Path) {
    let Some(spec) = std::fs::read(dir.join(files::SPEC))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ShimSpec>(&bytes).ok())
    else {
        return;
    };
    if spec.limits.is_empty() || !valid_id(&spec.id) {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let leftovers = Layout::detect().existing(&spec.id);
        if !leftovers.is_empty() {
            for problem in leftovers.kill_and_remove(Duration::from_secs(2)) {
                tracing::warn!(instance = %spec.id, %problem, "could not remove cgroup");
            }
        }
    })
    .await;
}

fn validate(spec: &ShimSpec) -> Result<(), RuntimeError> {
    let invalid = |reason: String| Err(RuntimeError::InvalidSpec(reason));
    if !valid_id(&spec.id) {
        return invalid(format!(
            "id {:?} must be 1-128 characters of [a-z0-9-]",
            spec.id
        ));
    }
    match spec.argv.first() {
        None => return invalid("argv is empty".to_owned()),
        Some(program) if !program.starts_with('/') => {
            return invalid(format!("argv[0] {program:?} must be an absolute path"))
        }
        Some(_) => {}
    }
    for (name, path) in [("cwd", &spec.cwd), ("log_dir", &spec.log_dir)] {
        if !path.is_absolute() {
            return invalid(format!(
                "{name} {} must be an absolute path",
                path.display()
            ));
        }
    }
    if let Some((name, _)) = spec
        .env
        .iter()
        .find(|(name, value)| name.is_empty() || name.contains(['=', '\0']) || value.contains('\0'))
    {
        return invalid(format!(
            "environment variable {name:?} has an invalid name or value"
        ));
    }
    if spec.argv.iter().any(|arg| arg.contains('\0')) {
        return invalid("argv contains a NUL byte".to_owned());
    }
    if let Some(sandbox) = &spec.sandbox {
        sandbox.validate().map_err(RuntimeError::InvalidSpec)?;
    }
    Ok(())
}

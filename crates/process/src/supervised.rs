//! Long-lived processes: the per-instance shim (detached from the agent so the agent
//! can restart without taking apps down) and the app the shim runs. Both get an
//! explicit environment and their own process group, so a signal meant for one never
//! reaches the other, and neither is killed when the spawner goes away.
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;

use crate::ProcessError;

#[cfg(feature = "async")]
/// A process started in the background: stdio to /dev/null, its own process group,
/// nothing inherited from the environment.
#[derive(Debug, Clone, Default)]
pub struct DetachedSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Keep the spawner's stderr (the agent started by `up` logs there); otherwise
    /// /dev/null.
    pub inherit_stderr: bool,
}

#[cfg(feature = "async")]
/// Starts a detached process. The returned child is not killed on drop: dropping it
/// hands it to tokio's orphan queue, which reaps it when it exits, so the caller
/// never accumulates zombies while its runtime runs.
#[allow(clippy::disallowed_methods)] // the wrapper itself
pub fn spawn_detached(spec: &DetachedSpec) -> Result<tokio::process::Child, ProcessError> {
    let program = spec.program.display().to_string();
    if !spec.program.is_absolute() {
        return Err(ProcessError::NotAbsolute { program });
    }
    tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if spec.inherit_stderr {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ProcessError::Spawn { program, source })
}

/// An app run by the shim: the complete argv and environment, its own process group
/// (so the whole tree can be signalled at once), optionally another user.
#[derive(Debug, Clone, Default)]
pub struct AppSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Starts the app with stdin closed and stdout/stderr piped to the caller. Blocking
/// (std) on purpose: the shim has no async runtime. std's spawn resets the signal
/// mask and SIGPIPE in the child, so the shim may block signals for its own use; when
/// `uid` is set from root, std also drops supplementary groups.
#[allow(clippy::disallowed_methods)] // the wrapper itself
pub fn spawn_app(spec: &AppSpec) -> Result<std::process::Child, ProcessError> {
    let Some(program) = spec.argv.first() else {
        return Err(ProcessError::EmptyArgv);
    };
    if !program.starts_with('/') {
        return Err(ProcessError::NotAbsolute {
            program: program.clone(),
        });
    }
    let mut command = std::process::Command::new(program);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // gid before uid is std's order too; setting only one leaves the other as is.
    if let Some(gid) = spec.gid {
        command.gid(gid);
    }
    if let Some(uid) = spec.uid {
        command.uid(uid);
    }
    command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })
}

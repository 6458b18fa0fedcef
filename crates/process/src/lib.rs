//! The one place NanoScale (control plane and agent) spawns processes: absolute program path, an
//! explicit environment (nothing inherited but a fixed PATH and HOME), no shell,
//! stdin closed, a timeout, and the child killed if the caller goes away (`run`).
//! Long-lived processes (the per-instance shim and the app it runs) are started by
//! `spawn_detached` and `spawn_app`: not killed with their spawner, inheriting nothing.
#![forbid(unsafe_code)]

pub mod git;
mod supervised;

pub use supervised::{spawn_app, AppSpec};
#[cfg(feature = "async")]
pub use supervised::{spawn_detached, DetachedSpec};

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    /// Written to the program's stdin, which is then closed; none: /dev/null.
    pub stdin: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{program} must be an absolute path")]
    NotAbsolute { program: String },
    #[error("no program given (empty argv)")]
    EmptyArgv,
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {seconds} s")]
    Timeout { program: String, seconds: u64 },
}

#[cfg(feature = "async")]
const MAX_OUTPUT: usize = 1024 * 1024;

#[cfg(feature = "async")]
#[allow(clippy::disallowed_methods)] // the wrapper itself
pub async fn run(spec: CommandSpec) -> Result<CommandOutput, ProcessError> {
    let program = spec.program.display().to_string();
    if !spec.program.is_absolute() {
        return Err(ProcessError::NotAbsolute { program });
    }
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/nonexistent".into()),
        )
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    if let (Some(bytes), Some(mut stdin)) = (spec.stdin, child.stdin.take()) {
        // Written beside the wait, so that a program that answers before it has
        // read everything cannot block on a full stdout pipe meanwhile.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let output = tokio::time::timeout(spec.timeout, child.wait_with_output())
        .await
        .map_err(|_| ProcessError::Timeout {
            program: program.clone(),
            seconds: spec.timeout.as_secs(),
        })?
        .map_err(|source| ProcessError::Spawn { program, source })?;
    let text =
        |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned();
    Ok(CommandOutput {
        success: output.status.success(),
        stdout: text(&output.stdout),
        stderr: text(&output.stderr),
    })
}

/// Absolute path of a program in the standard system directories (never the
/// caller's PATH).
pub fn which(program: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

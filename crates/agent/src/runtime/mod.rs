//! Running processes under the per-instance shim (the conmon / containerd-shim
//! pattern): spawn, observe, stop, cgroup limits and rotated logs.
//!
//! Each app instance (and each build) runs under a small detached shim process, the
//! `nanoscale` binary re-executed as `nanoscale shim <dir>`. The shim is the app's
//! parent: it owns the log pipes, forwards stop signals and records the exit status,
//! so the agent can crash, restart or be upgraded without restarting or orphaning
//! apps. Everything the agent needs to find an instance again lives in its directory:
//!
//! | file | written by | what |
//! |---|---|---|
//! | `shim.json` | agent (`launch`), 0600 | the `ShimSpec`, env secrets included |
//! | `shim.pid` | shim | `<pid> <start_time>` of the shim |
//! | `app.pid` | shim | `<pid> <start_time>` of the app (also its process group id) |
//! | `exit.json` | shim | `ExitInfo` once the app has exited (or failed to start) |
//! | `warnings.json` | shim | limits that could not be enforced, for an event |
//! | `stop-grace` | agent (`stop`) | the grace period of the stop in progress, in ms |
//!
//! Architecture invariant: the shim runs no async runtime, no threads and only fixed
//! buffers (about 200 KiB private per instance; the rest of its RSS is libc and binary
//! pages shared with every other process); it never decides anything but "forward,
//! wait, kill, record".
//! Architecture invariant: every file the agent reads from a shim directory is written
//! atomically (temporary file + rename), so a reader never sees half a record.
//!
//! Deliberately absent: PR_SET_PDEATHSIG (the app must survive a shim killed with -9;
//! `inspect` reports it `Orphaned` and `stop` cleans it up), restarts (the agent's
//! supervisor decides those).

pub mod cgroup;
mod control;
pub mod logs;
mod logwriter;
mod proc;
pub mod sandbox;
pub mod shim;
pub mod systemd;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use control::{
    inspect, launch, prepare, read_spec, start_prepared, stop, tail_exit_reason, wait_for_exit,
    warnings, Ended,
};
pub use logs::{LogCursor, LogLine, Stream};
pub use sandbox::SandboxSpec;

/// Everything the shim needs to run one app; written by `launch` to `<dir>/shim.json`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimSpec {
    /// Instance or build id, `[a-z0-9-]`; names the cgroup.
    pub id: String,
    /// `argv[0]` is an absolute path; there is no PATH lookup.
    pub argv: Vec<String>,
    /// The complete environment; nothing is inherited.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub limits: Limits,
    pub stop_grace_secs: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The app's private view of the host (`sandbox.rs`); none runs it unconfined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}

/// Env values may be secrets: Debug shows only their names.
impl fmt::Debug for ShimSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        formatter
            .debug_struct("ShimSpec")
            .field("id", &self.id)
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("log_dir", &self.log_dir)
            .field("log_max_bytes", &self.log_max_bytes)
            .field("log_keep", &self.log_keep)
            .field("limits", &self.limits)
            .field("stop_grace_secs", &self.stop_grace_secs)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

/// Resource limits, enforced with cgroups where a controller is available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RAM the group may use.
    pub memory_bytes: Option<u64>,
    /// Swap it may use beyond `memory_bytes`. None: none at all, so the memory
    /// limit is a hard one (apps); builds get some, so that the swap file of a
    /// low-memory host can carry a build past its RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    /// Thousandths of a CPU: 500 = half a core, 2000 = two cores.
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.cpu_millis.is_none() && self.pids.is_none()
    }
}

/// A process identified by pid and start time (field 22 of `/proc/<pid>/stat`, clock
/// ticks since boot), so a pid reused by another process is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    pub shim: ProcRef,
    pub app: ProcRef,
}

/// How the app ended. `code` is set for a normal exit, `signal` when it was killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The instance's cgroup recorded an OOM kill while it ran.
    pub oom_killed: bool,
    /// Forks the instance's pids limit refused while it ran (a fork bomb shows here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forks_refused: u64,
    /// UTC milliseconds.
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimStatus {
    Running(Launched),
    /// The shim is up but has not written `app.pid` yet (a launch in progress).
    Starting {
        shim: ProcRef,
    },
    Exited(ExitInfo),
    /// The shim is gone (killed -9) but the app is alive; `stop` cleans it up.
    Orphaned {
        app: ProcRef,
    },
    /// No shim, no app, no exit record.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid shim spec: {0}")]
    InvalidSpec(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start the shim: {0}")]
    ShimSpawn(#[from] nanoscale_process::ProcessError),
    #[error("app did not start: {reason}")]
    AppStart { reason: String },
    #[error("shim for {dir} exited ({status}) before starting the app")]
    ShimExited { dir: PathBuf, status: String },
    #[error("shim for {dir} did not start the app within {seconds} s")]
    LaunchTimeout { dir: PathBuf, seconds: u64 },
    #[error("an instance is already running in {dir} (shim pid {pid})")]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("could not signal pid {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
    #[error("processes of {dir} still alive after stop (pid {pid})")]
    StopTimeout { dir: PathBuf, pid: i32 },
}

impl RuntimeError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// File names inside a shim directory.
pub(crate) mod files {
    pub const SPEC: &str = "shim.json";
    pub const SHIM_PID: &str = "shim.pid";
    pub const APP_PID: &str = "app.pid";
    pub const EXIT: &str = "exit.json";
    pub const WARNINGS: &str = "warnings.json";
    /// Written by `stop` before it signals the shim: the grace period in
    /// milliseconds, overriding `stop_grace_secs` for that stop.
    pub const STOP_GRACE: &str = "stop-grace";
}

/// What the shim writes to `exit.json`: the `ExitInfo` fields, plus why the app never
/// started when it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    #[serde(flatten)]
    pub info: ExitInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a
/// rename, so readers see the old content or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover from a crash would keep its old mode: start from a fresh file.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// `[a-z0-9-]`, 1 to 128 characters, not starting with `-`: safe as a cgroup
/// directory name and in messages.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

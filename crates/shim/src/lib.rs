//! The per-instance shim (the conmon / containerd-shim pattern) and the records it
//! shares with the agent: the spec it runs, the files it writes, its sandbox, its
//! cgroup and its rotating log.
//!
//! This crate is small on purpose. The agent's build script builds its binary
//! (`src/main.rs`) as a statically linked executable and embeds it, and the agent
//! writes it out and runs one per instance. A shim then costs well under 2 MiB of
//! RSS, not the pages of the whole `nanoscale` binary. Nothing here may pull in an
//! async runtime or a network stack: see the invariant in `shim.rs`.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod logwriter;
pub mod proc;
pub mod sandbox;
pub mod shim;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// File names inside a shim directory.
pub mod files {
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
pub struct ExitRecord {
    #[serde(flatten)]
    pub info: ExitInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a
/// rename, so readers see the old content or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
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

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

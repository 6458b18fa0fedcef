//! Running processes under the per-instance shim (the conmon / containerd-shim
//! pattern): spawn, observe, stop, cgroup limits and rotated logs.
//!
//! Each app instance (and each build) runs under a small detached shim process: the
//! static `nanoscale-shim` executable embedded in the agent and written out at start
//! (`embedded.rs`; `nanoscale shim <dir>` runs the same code where it cannot be
//! written). The shim's code is the `nanoscale-shim` crate. The shim is the app's
//! parent: it owns the log pipes, forwards stop signals and records the exit status,
//! so the agent can crash, restart or be upgraded without restarting or orphaning
//! apps. Everything the agent needs to find an instance again lives in its directory:
//!
//! | file | written by | what |
//! |---|---|---|
//! | `shim.json` | agent (`launch`), or the helper's `start_shim` for a sandboxed app, 0600 | the `ShimSpec`, env secrets included (the shim blanks them once read) |
//! | `shim.pid` | shim | `<pid> <start_time>` of the shim |
//! | `app.pid` | shim | `<pid> <start_time>` of the app (also its process group id) |
//! | `exit.json` | shim | `ExitInfo` once the app has exited (or failed to start) |
//! | `warnings.json` | shim | limits that could not be enforced, for an event |
//! | `stop-grace` | agent (`stop`) | the grace period of the stop in progress, in ms |
//!
//! Architecture invariant: the shim runs no async runtime, no threads and only fixed
//! buffers (about 200 KiB private per instance; its whole RSS stays under 2 MiB, see
//! `bench/README.md`); it never decides anything but "forward,
//! wait, kill, record".
//! Architecture invariant: every file the agent reads from a shim directory is written
//! atomically (temporary file + rename), so a reader never sees half a record.
//! Architecture invariant: the shim opens its directory once (no link followed; as
//! root, only one of root's alone) and reaches all of its files through that
//! descriptor (`/proc/self/fd/N`), never through the path again.
//!
//! Where the operator chose systemd as the backend (`--supervisor systemd`),
//! instances run as units instead (`systemd.rs` renders them, `unit.rs` observes
//! them, `journal.rs` copies their output into the same log files); builds and
//! command health checks stay under shims.
//!
//! Deliberately absent: PR_SET_PDEATHSIG (the app must survive a shim killed with -9;
//! `inspect` reports it `Orphaned` and `stop` cleans it up), restarts (the agent's
//! supervisor decides those).

mod control;
pub mod embedded;
pub mod journal;
pub mod logs;
pub mod systemd;
pub mod unit;

use std::path::{Path, PathBuf};

// The shim and its records live in their own small crate, which the build script
// also turns into the static executable the agent embeds (`embedded.rs`).
pub use nanoscale_shim::{
    cgroup, files, logwriter, now_ms, proc, sandbox, shim, valid_id, write_atomic, ExitInfo,
    ExitRecord, Launched, Limits, ProcRef, ShimSpec,
};

pub use control::{
    check_spec, inspect, launch, prepare, start_prepared, stop, tail_exit_reason, wait_for_exit,
    warnings, Ended,
};
pub use logs::{LogCursor, LogLine, Stream};
pub use sandbox::SandboxSpec;

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

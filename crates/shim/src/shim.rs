//! The shim process: the static `nanoscale-shim <dir>` the agent embeds (or, where
//! that cannot be written out, `nanoscale shim <dir>`, which runs this same code).
//!
//! One single-threaded loop polls the app's two pipes and a self-pipe woken by signal
//! handlers: no async runtime and no threads, and fixed buffers, so what one shim
//! costs of its own stays around 100 KiB for the whole life of the app, and its
//! whole RSS around 1.3 MiB (linked statically, it maps no shared libraries).
//!
//! Signals are caught with handlers, not blocked for a signalfd: std's spawn does not
//! reset the signal mask in the child, so a blocked SIGTERM would stay blocked in the
//! app. Caught signals are reset to their default action by exec, which also undoes
//! an inherited "ignore" (e.g. SIGHUP under nohup) for the app.
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use super::cgroup::{Cgroup, Layout};
use super::logwriter::{LineSplitter, RotatingLog, MAX_LINE};
use super::proc::signal_app_group;
use super::{files, now_ms, write_atomic, ExitInfo, ExitRecord, ProcRef, ShimSpec};

/// After the app exits, how long processes that inherited its pipes may keep them
/// open before the shim stops reading and records the exit anyway.
const DRAIN: Duration = Duration::from_secs(2);
/// Wake-up interval even without events: a lost SIGCHLD costs at most this much.
const TICK: Duration = Duration::from_secs(1);

/// Runs the app described by `<dir>/shim.json` to completion. Returns the shim's exit
/// code: 0 once the outcome (exit or failure to start) is recorded in `exit.json`.
pub fn main(dir: &Path) -> i32 {
    // The sandbox changes the working directory; every path must stand on its own.
    let Ok(given) = std::path::absolute(dir) else {
        return 1;
    };
    // Every file of the shim is reached through its directory as opened here, so
    // nothing done to the path afterwards (a parent renamed, a link swapped in by
    // whoever owns a parent) can redirect a root shim; nor is a shim directory
    // anyone else could have filled trusted by a root shim.
    let pinned = match pin(&given) {
        Ok(pinned) => pinned,
        Err(reason) => {
            eprintln!("nanoscale shim: {reason}");
            return 1;
        }
    };
    let dir_path = std::path::PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
    let dir = dir_path.as_path();
    let never_ran = |reason| ExitRecord {
        info: ExitInfo {
            code: None,
            signal: None,
            oom_killed: false,
            forks_refused: 0,
            at_ms: now_ms(),
        },
        start_error: Some(reason),
    };
    match run(dir, &given).or_else(|reason| {
        record(dir, &never_ran(reason.clone())).map_err(|error| format!("{reason}; {error}"))
    }) {
        Ok(()) => 0,
        Err(reason) => {
            // Only a shim started by hand has somewhere to show this.
            eprintln!("nanoscale shim: {reason}");
            1
        }
    }
}

/// The shim's directory, opened without following a link. A root shim runs only
/// in a directory of root's that nobody else may write.
fn pin(dir: &Path) -> Result<OwnedFd, String> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::{fstat, Mode};
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let fd = open(dir, flags, Mode::empty())
        .map_err(|error| format!("opening {}: {error}", dir.display()))?;
    let stat = fstat(&fd).map_err(|error| format!("reading {}: {error}", dir.display()))?;
    if nix::unistd::geteuid().is_root() && (stat.st_uid != 0 || stat.st_mode & 0o022 != 0) {
        return Err(format!(
            "{} is not root's alone (uid {}, mode {:o}); a root shim runs only in a \
             directory the privileged helper made",
            dir.display(),
            stat.st_uid,
            stat.st_mode & 0o7777
        ));
    }
    Ok(fd)
}

/// Runs the app; `dir` is the pinned directory (`/proc/self/fd/N`), `given` the
/// path it was given as (the spec's paths are written in those terms).
fn run(dir: &Path, given: &Path) -> Result<(), String> {
    // The records get exactly the modes they are written with (the agent's group
    // reads them), and the app makes its files readable (0644) unless it says
    // otherwise, whatever umask the shim got (sudo's is 077 for a caller with
    // 077): an app's tree is closed to others at its top, and a static site's
    // files must be readable by the proxy through the agent's group.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let signals =
        Signals::install().map_err(|error| format!("installing signal handlers: {error}"))?;

    let spec_path = dir.join(files::SPEC);
    let spec_text = std::fs::read(&spec_path)
        .map_err(|error| format!("reading {}: {error}", spec_path.display()))?;
    let spec: ShimSpec = serde_json::from_slice(&spec_text)
        .map_err(|error| format!("parsing {}: {error}", spec_path.display()))?;
    drop(spec_text);
    // The env (secrets included) lives on only in the app's memory: the file keeps
    // what `stop` needs (the id and limits of the cgroup), not the values.
    let scrubbed = ShimSpec {
        env: spec
            .env
            .iter()
            .map(|(name, _)| (name.clone(), String::new()))
            .collect(),
        ..spec.clone()
    };
    let scrubbed = serde_json::to_vec(&scrubbed)
        .map_err(|error| format!("encoding {}: {error}", spec_path.display()))?;
    write_atomic(&spec_path, &scrubbed, 0o600)
        .map_err(|error| format!("rewriting {}: {error}", spec_path.display()))?;

    let me = ProcRef::current().ok_or("reading the shim's own /proc entry")?;
    write_pid(dir, files::SHIM_PID, me)?;

    // Both are inherited by the app: no core dumps full of secrets, no setuid gains.
    let mut warnings = Vec::new();
    if let Err(error) =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
    {
        warnings.push(format!("could not disable core dumps: {error}"));
    }
    if let Err(error) = nix::sys::prctl::set_no_new_privs() {
        warnings.push(format!("could not set no_new_privs: {error}"));
    }

    let mut cgroup = Cgroup::default();
    if !spec.limits.is_empty() {
        let (created, create_warnings) = Layout::detect().create(&spec.id, &spec.limits);
        cgroup = created;
        warnings.extend(create_warnings);
        warnings.extend(cgroup.join(std::process::id(), &spec.limits));
    }
    // A log in the shim's own directory is reached through the pinned one too, and
    // then needs no place in the app's view (the shim never uses the path).
    let in_dir = spec.log_dir == given.join("log");
    let log_dir = if in_dir {
        dir.join("log")
    } else {
        spec.log_dir.clone()
    };
    if let Some(sandbox) = &spec.sandbox {
        let keep: Vec<&Path> = if in_dir { Vec::new() } else { vec![&log_dir] };
        let entered = std::fs::create_dir_all(&log_dir)
            .map_err(|error| format!("creating {}: {error}", spec.log_dir.display()))
            .and_then(|()| super::sandbox::enter(sandbox, &keep));
        match entered {
            Ok(sandbox_warnings) => warnings.extend(sandbox_warnings),
            Err(reason) => {
                cleanup(&cgroup);
                return Err(format!("sandbox: {reason}"));
            }
        }
    }
    if !warnings.is_empty() {
        let text = serde_json::to_vec(&warnings).unwrap_or_default();
        let _ = write_atomic(&dir.join(files::WARNINGS), &text, 0o644);
    }

    let log = RotatingLog::open(&log_dir, spec.log_max_bytes, spec.log_keep)
        .map_err(|error| format!("opening the log in {}: {error}", spec.log_dir.display()));
    let started = log.and_then(|log| {
        let app = nanoscale_process::spawn_app(&nanoscale_process::AppSpec {
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            uid: spec.uid,
            gid: spec.gid,
        })
        .map_err(|error| error.to_string())?;
        Ok((log, app))
    });
    let (log, mut app) = match started {
        Ok(started) => started,
        Err(reason) => {
            cleanup(&cgroup);
            return Err(reason);
        }
    };
    drop(spec.env);
    // Not reaped yet, so even an app that exited at once is still in /proc.
    let app_pid = i32::try_from(app.id()).unwrap_or(0);
    let identified = ProcRef::of_any(app_pid)
        .ok_or_else(|| format!("reading /proc/{app_pid}/stat"))
        .and_then(|app_ref| write_pid(dir, files::APP_PID, app_ref).map(|()| app_ref));
    let app_ref = match identified {
        Ok(app_ref) => app_ref,
        Err(reason) => {
            // Nobody could find or stop an app without app.pid: do not leave it behind.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(app_pid), Signal::SIGKILL);
            let _ = app.kill();
            let _ = app.wait();
            cleanup(&cgroup);
            return Err(reason);
        }
    };
    // Protect the shim (not the app, already forked) from the OOM killer in its own
    // memory cgroup; only root may lower this, and losing it is not fatal.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");

    let (status, at_ms) = supervise(
        &mut app,
        app_ref,
        &signals,
        log,
        &cgroup,
        dir,
        spec.stop_grace_secs,
    );
    let counts = Counts {
        oom_killed: cgroup.oom_kills() > 0,
        forks_refused: cgroup.forks_refused(),
    };
    let recorded = record_exit(dir, status, at_ms, counts);
    cleanup(&cgroup);
    recorded
}

/// SIGTERM/SIGINT set `stop`; every handled signal (SIGCHLD included) writes a byte
/// to `wake` so the poll loop runs. SIGHUP only wakes: the shim must outlive its
/// terminal, or the app would be orphaned.
struct Signals {
    stop: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, wake_writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_writer.set_nonblocking(true)?;
        // The flag first: handlers run in registration order, so the loop woken by
        // the byte always sees the flag.
        for signal in [SIGTERM, SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
        for signal in [SIGTERM, SIGINT, SIGCHLD, SIGHUP] {
            signal_hook::low_level::pipe::register(signal, wake_writer.try_clone()?)?;
        }
        Ok(Signals { stop, wake })
    }

    /// Empties the self-pipe (before looking at the flag, so no signal is missed)
    /// and tells whether a stop was requested.
    fn take_stop(&self) -> bool {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(count) if count > 0) {}
        self.stop.swap(false, Ordering::SeqCst)
    }
}

struct Pipe {
    file: Option<File>,
    splitter: LineSplitter,
    stream: u8,
}

/// Pumps the logs and handles signals until the app has exited and its pipes are
/// drained. Returns the exit status and when it was observed.
fn supervise(
    app: &mut Child,
    app_ref: ProcRef,
    signals: &Signals,
    mut log: RotatingLog,
    cgroup: &Cgroup,
    dir: &Path,
    grace_secs: u32,
) -> (Option<ExitStatus>, i64) {
    let mut pipes = [
        Pipe {
            file: app.stdout.take().map(|out| File::from(OwnedFd::from(out))),
            splitter: LineSplitter::default(),
            stream: b'o',
        },
        Pipe {
            file: app.stderr.take().map(|err| File::from(OwnedFd::from(err))),
            splitter: LineSplitter::default(),
            stream: b'e',
        },
    ];
    let mut buffer = vec![0u8; MAX_LINE];
    let mut exit: Option<(ExitStatus, i64)> = None;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if exit.is_none() {
            if let Ok(Some(status)) = app.try_wait() {
                exit = Some((status, now_ms()));
                // Whatever the app left behind in its group or cgroup goes with it,
                // which also closes the pipe ends those processes inherited.
                let _ = signal_app_group(&app_ref, Signal::SIGKILL);
                cgroup.leave(std::process::id());
                cgroup.kill_members();
                drain_until = Some(Instant::now() + DRAIN);
                kill_at = None;
            }
        }
        let open = pipes.iter().any(|pipe| pipe.file.is_some());
        let now = Instant::now();
        if exit.is_some() && (!open || drain_until.is_some_and(|until| now >= until)) {
            break;
        }
        if kill_at.is_some_and(|at| now >= at) {
            let _ = signal_app_group(&app_ref, Signal::SIGKILL);
            kill_at = None;
        }
        let wake = [kill_at, drain_until].into_iter().flatten().min();
        let timeout = wake.map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        let timeout = PollTimeout::try_from(timeout.max(Duration::from_millis(1)))
            .unwrap_or(PollTimeout::NONE);

        let mut ready = [false; 3];
        // ready[0] (the self-pipe) only has to end the poll; it is drained below.
        {
            let mut fds = vec![PollFd::new(signals.wake.as_fd(), PollFlags::POLLIN)];
            let mut slots = Vec::with_capacity(2);
            for (index, pipe) in pipes.iter().enumerate() {
                if let Some(file) = &pipe.file {
                    fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
                    slots.push(index + 1);
                }
            }
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            let mut slot_of = std::iter::once(0).chain(slots);
            for fd in &fds {
                let slot = slot_of.next().unwrap_or(0);
                ready[slot] = fd.revents().is_some_and(|revents| !revents.is_empty());
            }
        }

        // Checked on every turn, not only when the self-pipe is readable: a signal
        // that came before the app was started has already set the flag.
        if signals.take_stop() && exit.is_none() && kill_at.is_none() {
            let _ = signal_app_group(&app_ref, Signal::SIGTERM);
            kill_at = Some(Instant::now() + stop_grace(dir, grace_secs));
        }
        for (index, pipe) in pipes.iter_mut().enumerate() {
            if !ready[index + 1] {
                continue;
            }
            let Some(file) = &mut pipe.file else {
                continue;
            };
            match file.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    pipe.file = None;
                    pipe.splitter
                        .finish(|line| log.write_line(pipe.stream, line));
                }
                Ok(count) => {
                    let stream = pipe.stream;
                    pipe.splitter
                        .push(&buffer[..count], |line| log.write_line(stream, line));
                }
            }
        }
    }
    for pipe in &mut pipes {
        pipe.splitter
            .finish(|line| log.write_line(pipe.stream, line));
    }
    match exit {
        Some((status, at)) => (Some(status), at),
        None => (None, now_ms()),
    }
}

/// The grace period `stop` asked for, else the spec's.
fn stop_grace(dir: &Path, default_secs: u32) -> Duration {
    std::fs::read_to_string(dir.join(files::STOP_GRACE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map_or(
            Duration::from_secs(u64::from(default_secs)),
            Duration::from_millis,
        )
}

fn write_pid(dir: &Path, name: &str, process: ProcRef) -> Result<(), String> {
    let path = dir.join(name);
    write_atomic(&path, process.to_file_text().as_bytes(), 0o644)
        .map_err(|error| format!("writing {}: {error}", path.display()))
}

/// What the instance's cgroup counted while the app ran.
struct Counts {
    oom_killed: bool,
    forks_refused: u64,
}

fn record_exit(
    dir: &Path,
    status: Option<ExitStatus>,
    at_ms: i64,
    counts: Counts,
) -> Result<(), String> {
    let info = ExitInfo {
        code: status.and_then(|status| status.code()),
        signal: status.and_then(|status| status.signal()),
        oom_killed: counts.oom_killed,
        forks_refused: counts.forks_refused,
        at_ms,
    };
    record(
        dir,
        &ExitRecord {
            info,
            start_error: None,
        },
    )
}

fn record(dir: &Path, record: &ExitRecord) -> Result<(), String> {
    let path = dir.join(files::EXIT);
    let text = serde_json::to_vec(record)
        .map_err(|error| format!("encoding {}: {error}", path.display()))?;
    write_atomic(&path, &text, 0o644)
        .map_err(|error| format!("writing {}: {error}", path.display()))
}

fn cleanup(cgroup: &Cgroup) {
    if cgroup.is_empty() {
        return;
    }
    cgroup.leave(std::process::id());
    let _ = cgroup.kill_and_remove(Duration::from_secs(2));
}

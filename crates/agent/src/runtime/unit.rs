//! The systemd backend at run time: an instance whose unit the privileged helper
//! wrote and started (`start_unit`) is observed by asking systemd
//! (`systemctl show`), never through files the instance could write.
//!
//! An instance directory holding [`MARKER`] (written by the helper, root's) is a
//! unit; the unit's name comes from the directory's name (the instance id), so
//! the marker only says which backend runs it.
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ExitInfo, Launched, ProcRef, ShimStatus};

/// In an instance directory: the instance runs as a systemd unit.
pub const MARKER: &str = "systemd.unit";
/// In an instance directory: the unit's environment file (0600, root's: systemd
/// reads it before it drops to the app's user).
pub const ENVIRONMENT_FILE: &str = "unit.env";
/// Where the helper writes instance units: runtime units, gone at reboot like the
/// instances of the built-in supervisor (the agent starts them again).
pub const UNIT_DIR: &str = "/run/systemd/system";
/// The properties [`parse_show`] reads.
pub const SHOW_PROPERTIES: &str =
    "--property=LoadState,ActiveState,SubState,MainPID,ExecMainCode,ExecMainStatus,Result";
/// How long one `systemctl` call may take (a stop waits for the app's grace).
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether systemd runs this host (as `sd_booted()` tells it).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `systemctl`, by absolute path.
pub fn systemctl() -> Option<PathBuf> {
    nanoscale_process::which("systemctl")
}

/// Whether the instance in `dir` runs as a unit.
pub fn is_unit(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// What `systemctl show` says of a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub main_pid: i32,
    /// `si_code` of the main process's end: 1 exited, 2 killed, 3 dumped core.
    pub exec_code: i32,
    pub exec_status: i32,
    /// `success`, `exit-code`, `signal`, `oom-kill`, `timeout`, …
    pub result: String,
}

/// `Key=value` lines of `systemctl show`.
pub fn parse_show(text: &str) -> UnitState {
    let mut state = UnitState::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let number = || value.trim().parse().unwrap_or(0);
        match key {
            "LoadState" => state.load = value.to_owned(),
            "ActiveState" => state.active = value.to_owned(),
            "SubState" => state.sub = value.to_owned(),
            "MainPID" => state.main_pid = number(),
            "ExecMainCode" => state.exec_code = number(),
            "ExecMainStatus" => state.exec_status = number(),
            "Result" => state.result = value.to_owned(),
            _ => {}
        }
    }
    state
}

/// The unit's state as the built-in supervisor's: systemd's main process stands
/// for both the shim and the app.
pub fn status_of(state: &UnitState, now_ms: i64) -> ShimStatus {
    if state.load != "loaded" {
        return ShimStatus::Gone;
    }
    let process = || {
        ProcRef::of(state.main_pid).unwrap_or(ProcRef {
            pid: state.main_pid,
            start_time: 0,
        })
    };
    match state.active.as_str() {
        "activating" if state.main_pid > 0 => ShimStatus::Starting { shim: process() },
        "active" | "reloading" | "deactivating" | "activating" if state.main_pid > 0 => {
            let process = process();
            ShimStatus::Running(Launched {
                shim: process,
                app: process,
            })
        }
        _ if state.exec_code == 0 => ShimStatus::Gone,
        _ => ShimStatus::Exited(exit_of(state, now_ms)),
    }
}

/// How the unit's main process ended.
pub fn exit_of(state: &UnitState, now_ms: i64) -> ExitInfo {
    let (code, signal) = match state.exec_code {
        1 => (Some(state.exec_status), None),
        _ => (None, Some(state.exec_status)),
    };
    ExitInfo {
        code,
        signal,
        oom_killed: state.result == "oom-kill",
        forks_refused: 0,
        at_ms: now_ms,
    }
}

/// Asks systemd about `unit`.
pub async fn show(unit: &str) -> Result<UnitState, String> {
    let output = systemctl_run(&["show", SHOW_PROPERTIES, unit]).await?;
    Ok(parse_show(&output))
}

/// The unit of the instance in `dir` (named after the directory, the instance id).
fn unit_of(dir: &Path) -> Option<String> {
    let id = dir.file_name()?.to_str()?;
    Some(super::systemd::unit_name(id))
}

/// What became of the instance in `dir`, which runs as a unit.
pub async fn inspect(dir: &Path) -> ShimStatus {
    let Some(unit) = unit_of(dir) else {
        return ShimStatus::Gone;
    };
    match show(&unit).await {
        Ok(state) => status_of(&state, super::now_ms()),
        // systemd could not be asked: nothing is known to have ended, and a
        // `Gone` would have the agent start a second copy.
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), "asking systemd about an instance");
            ShimStatus::Starting {
                shim: ProcRef {
                    pid: 0,
                    start_time: 0,
                },
            }
        }
    }
}

/// What became of each instance in `dirs` that runs as a unit, with one
/// `systemctl show` for all of them (the agent's every round asks about every
/// instance). Missing from the answer: not a unit, or systemd could not be asked
/// (then [`inspect`] asks again, one by one, and says so).
pub async fn inspect_all<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
) -> std::collections::HashMap<PathBuf, ShimStatus> {
    let units: Vec<(PathBuf, String)> = dirs
        .into_iter()
        .filter(|dir| is_unit(dir))
        .filter_map(|dir| Some((dir.to_path_buf(), unit_of(dir)?)))
        .collect();
    if units.is_empty() {
        return Default::default();
    }
    let mut args = vec!["show", SHOW_PROPERTIES];
    args.extend(units.iter().map(|(_, unit)| unit.as_str()));
    let Ok(output) = systemctl_run(&args).await else {
        return Default::default();
    };
    let Some(states) = parse_show_all(&output, units.len()) else {
        return Default::default();
    };
    let now = super::now_ms();
    units
        .into_iter()
        .zip(states)
        .map(|((dir, _), state)| (dir, status_of(&state, now)))
        .collect()
}

/// `systemctl show` of several units: one block each, in the order asked,
/// separated by an empty line; `None` unless there are exactly `count`.
pub fn parse_show_all(text: &str, count: usize) -> Option<Vec<UnitState>> {
    let blocks: Vec<UnitState> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(parse_show)
        .collect();
    (blocks.len() == count).then_some(blocks)
}

/// Runs `systemctl args…`; its stdout, or what it said when it failed.
pub async fn systemctl_run(args: &[&str]) -> Result<String, String> {
    let program = systemctl().ok_or("systemctl is not installed")?;
    let output = nanoscale_process::run(nanoscale_process::CommandSpec {
        program,
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        timeout: SYSTEMCTL_TIMEOUT,
        ..Default::default()
    })
    .await
    .map_err(|error| error.to_string())?;
    if !output.success {
        let said = output.stderr.trim();
        return Err(format!(
            "systemctl {}: {}",
            args.join(" "),
            if said.is_empty() { "failed" } else { said }
        ));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(text: &str) -> UnitState {
        parse_show(text)
    }

    #[test]
    fn a_running_unit_is_running_and_an_unknown_one_gone() {
        let running = state(
            "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n\
             ExecMainCode=0\nExecMainStatus=0\nResult=success\n",
        );
        assert_eq!(running.main_pid, 4242);
        assert!(matches!(
            status_of(&running, 1),
            ShimStatus::Running(Launched { app, .. }) if app.pid == 4242
        ));
        let unknown = state(
            "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n\
             ExecMainCode=0\nExecMainStatus=0\nResult=success\n",
        );
        assert_eq!(status_of(&unknown, 1), ShimStatus::Gone);
        let never_ran =
            state("LoadState=loaded\nActiveState=inactive\nMainPID=0\nExecMainCode=0\n");
        assert_eq!(status_of(&never_ran, 1), ShimStatus::Gone);
    }

    #[test]
    fn one_show_of_several_units_is_split_in_order() {
        let text = "LoadState=loaded\nActiveState=active\nMainPID=10\n\n\
                    LoadState=not-found\nActiveState=inactive\nMainPID=0\n\n\
                    LoadState=loaded\nActiveState=active\nMainPID=30\n";
        let states = parse_show_all(text, 3).expect("three blocks");
        let pids: Vec<i32> = states.iter().map(|state| state.main_pid).collect();
        assert_eq!(pids, [10, 0, 30]);
        assert_eq!(status_of(&states[1], 1), ShimStatus::Gone);
        // An answer that does not match what was asked is not guessed at.
        assert_eq!(parse_show_all(text, 2), None);
        assert_eq!(parse_show_all("", 1), None);
    }

    #[test]
    fn how_a_unit_ended_becomes_the_exit_record() {
        let exited = state(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nMainPID=0\n\
             ExecMainCode=1\nExecMainStatus=3\nResult=exit-code\n",
        );
        let ShimStatus::Exited(exit) = status_of(&exited, 7) else {
            panic!("exited");
        };
        assert_eq!(
            (exit.code, exit.signal, exit.oom_killed),
            (Some(3), None, false)
        );
        assert_eq!(exit.at_ms, 7);
        let killed = state(
            "LoadState=loaded\nActiveState=failed\nMainPID=0\nExecMainCode=2\n\
             ExecMainStatus=9\nResult=oom-kill\n",
        );
        let ShimStatus::Exited(exit) = status_of(&killed, 7) else {
            panic!("exited");
        };
        assert_eq!(
            (exit.code, exit.signal, exit.oom_killed),
            (None, Some(9), true)
        );
    }
}

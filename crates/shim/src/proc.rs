//! Processes as seen through /proc: identity (pid + start time), liveness, process
//! group membership, and the `<pid> <start_time>` files the shim writes.
use std::path::Path;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::ProcRef;

/// The fields of `/proc/<pid>/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub process_group: i32,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        process_group: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn running(stat: &Stat) -> bool {
    // Z: exited, not yet reaped; X: dead. Neither will run again.
    !matches!(stat.state, 'Z' | 'X')
}

impl ProcRef {
    /// The process `pid` as it is now, if it exists and is not a zombie.
    pub fn of(pid: i32) -> Option<ProcRef> {
        let stat = stat(pid)?;
        running(&stat).then_some(ProcRef {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Like `of`, but also for a zombie: the shim's own just-exited child must still
    /// be identified (its group may have members left).
    pub fn of_any(pid: i32) -> Option<ProcRef> {
        stat(pid).map(|stat| ProcRef {
            pid,
            start_time: stat.start_time,
        })
    }

    pub fn current() -> Option<ProcRef> {
        ProcRef::of(i32::try_from(std::process::id()).ok()?)
    }

    /// False if the process is gone, a zombie, or its pid now belongs to another
    /// process (the start time differs).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|stat| running(&stat) && stat.start_time == self.start_time)
    }

    pub fn to_file_text(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    pub fn parse_file_text(text: &str) -> Option<ProcRef> {
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        Some(ProcRef { pid, start_time })
    }

    pub fn read(path: &Path) -> Option<ProcRef> {
        ProcRef::parse_file_text(&std::fs::read_to_string(path).ok()?)
    }
}

/// Whether any running (non-zombie) process is in process group `group`.
pub fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|stat| stat.process_group == group && running(&stat))
}

/// Signals the app's process group, unless its leader's pid now belongs to another
/// process. A pid cannot be reused while a group with that id still has members, so
/// when the leader is merely gone the group (if any) is still the app's.
pub fn signal_app_group(app: &ProcRef, signal: Signal) -> nix::Result<()> {
    if let Some(now) = stat(app.pid) {
        if now.start_time != app.start_time {
            return Ok(());
        }
    }
    match killpg(Pid::from_raw(app.pid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Signals one process if it is still the one `process` names.
pub fn signal_process(process: &ProcRef, signal: Signal) -> nix::Result<()> {
    if !process.alive() {
        return Ok(());
    }
    match kill(Pid::from_raw(process.pid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                process_group: 4242,
                start_time: 987654,
            })
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn the_current_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcRef::current().expect("own stat");
        assert!(me.alive());
        let reused = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.alive());
        assert!(!ProcRef {
            pid: 0,
            start_time: 0
        }
        .alive());
    }

    #[test]
    fn pid_files_round_trip() {
        let process = ProcRef {
            pid: 31,
            start_time: 77,
        };
        assert_eq!(
            ProcRef::parse_file_text(&process.to_file_text()),
            Some(process)
        );
        assert_eq!(ProcRef::parse_file_text("31"), None);
    }
}

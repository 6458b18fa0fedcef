//! Resource limits with cgroups, v2 (unified) and v1 / hybrid alike.
//!
//! Each controller is used where the host mounts it: on its own v1 hierarchy if there
//! is one (`/sys/fs/cgroup/memory`, ...), otherwise on the unified hierarchy if that
//! lists it in `cgroup.controllers`. An instance's group is `nanoscale/<id>` in every
//! hierarchy it needs. Failing to enforce a limit never fails a start: it becomes a
//! warning the agent reports as an event. The hierarchy roots are parameters
//! (`Layout`), so the v2 logic is tested against a fake tree in a temporary directory.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Limits;

/// The directory under each hierarchy root that holds NanoScale's groups.
pub const PARENT: &str = "nanoscale";
const CPU_PERIOD_MICROS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Controllers mounted on a v1 hierarchy, with its mount point.
    pub v1: BTreeMap<Controller, PathBuf>,
    /// The cgroup2 mount point.
    pub unified: Option<PathBuf>,
}

/// One instance's groups, one per hierarchy it uses.
#[derive(Debug, Clone, Default)]
pub struct Cgroup {
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    version: Version,
    root: PathBuf,
    dir: PathBuf,
    controllers: Vec<Controller>,
    /// OOM kills already counted when the group was opened (a reused directory).
    oom_baseline: u64,
}

impl Layout {
    /// The layout of this process's mount namespace; empty when unreadable.
    pub fn detect() -> Layout {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| Layout::from_mountinfo(&text))
            .unwrap_or_default()
    }

    /// A pure v2 host whose unified hierarchy is at `root`.
    pub fn unified(root: impl Into<PathBuf>) -> Layout {
        Layout {
            v1: BTreeMap::new(),
            unified: Some(root.into()),
        }
    }

    pub fn from_mountinfo(text: &str) -> Layout {
        let mut layout = Layout::default();
        for line in text.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = before.split(' ').nth(4) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mount_field(mount_point));
            let mut after = after.split(' ');
            let (Some(fs_type), Some(_source), Some(options)) =
                (after.next(), after.next(), after.next())
            else {
                continue;
            };
            match fs_type {
                "cgroup2" => {
                    layout.unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for controller in Controller::ALL {
                        if options.split(',').any(|option| option == controller.name()) {
                            layout
                                .v1
                                .entry(controller)
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// The hierarchy that can enforce `controller`, if any.
    pub fn hierarchy(&self, controller: Controller) -> Option<(Version, PathBuf)> {
        if let Some(mount_point) = self.v1.get(&controller) {
            return Some((Version::V1, mount_point.clone()));
        }
        let root = self.unified.as_ref()?;
        let available = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
        available
            .split_whitespace()
            .any(|name| name == controller.name())
            .then(|| (Version::V2, root.clone()))
    }

    /// Creates `nanoscale/<id>` where each requested limit can be enforced and writes
    /// the limits. Returns the groups (empty when no limit is requested) and one
    /// warning per limit that is not enforced.
    pub fn create(&self, id: &str, limits: &Limits) -> (Cgroup, Vec<String>) {
        let mut warnings = Vec::new();
        let mut by_root: BTreeMap<PathBuf, (Version, Vec<Controller>)> = BTreeMap::new();
        for controller in wanted(limits) {
            match self.hierarchy(controller) {
                Some((version, root)) => by_root
                    .entry(root)
                    .or_insert((version, Vec::new()))
                    .1
                    .push(controller),
                None => warnings.push(not_enforced(
                    controller,
                    limits,
                    "no cgroup controller for it on this host",
                )),
            }
        }
        let mut cgroup = Cgroup::default();
        for (root, (version, controllers)) in by_root {
            let dir = root.join(PARENT).join(id);
            let created = prepare(version, &root, &dir, &controllers)
                .and_then(|()| write_limits(version, &dir, &controllers, limits));
            match created {
                Ok(()) => {
                    let mut group = Group {
                        version,
                        root,
                        dir,
                        controllers,
                        oom_baseline: 0,
                    };
                    group.oom_baseline = group.oom_kills();
                    cgroup.groups.push(group);
                }
                Err(error) => {
                    let _ = std::fs::remove_dir(&dir);
                    for controller in controllers {
                        warnings.push(not_enforced(controller, limits, &error));
                    }
                }
            }
        }
        (cgroup, warnings)
    }

    /// The instance's groups that exist now (to clean up after a shim that died).
    pub fn existing(&self, id: &str) -> Cgroup {
        let mut by_root: BTreeMap<PathBuf, (Version, Vec<Controller>)> = BTreeMap::new();
        for controller in Controller::ALL {
            if let Some((version, root)) = self.hierarchy(controller) {
                by_root
                    .entry(root)
                    .or_insert((version, Vec::new()))
                    .1
                    .push(controller);
            }
        }
        let groups = by_root
            .into_iter()
            .map(|(root, (version, controllers))| Group {
                version,
                dir: root.join(PARENT).join(id),
                root,
                controllers,
                oom_baseline: 0,
            })
            .filter(|group| group.dir.is_dir())
            .collect();
        Cgroup { groups }
    }
}

impl Cgroup {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The group directory that holds `controller`, if this cgroup uses it.
    pub fn dir_for(&self, controller: Controller) -> Option<&Path> {
        self.groups
            .iter()
            .find(|group| group.controllers.contains(&controller))
            .map(|group| group.dir.as_path())
    }

    /// Moves `pid` into every group; children it starts afterwards are born inside.
    /// Groups that refuse it are dropped, with a warning for their limits.
    pub fn join(&mut self, pid: u32, limits: &Limits) -> Vec<String> {
        let mut warnings = Vec::new();
        self.groups.retain(|group| {
            let path = group.dir.join("cgroup.procs");
            match std::fs::write(&path, pid.to_string()) {
                Ok(()) => true,
                Err(error) => {
                    let reason = format!("joining {}: {error}", path.display());
                    for controller in &group.controllers {
                        warnings.push(not_enforced(*controller, limits, &reason));
                    }
                    false
                }
            }
        });
        warnings
    }

    /// Moves `pid` back to each hierarchy's root, so the groups can be removed.
    pub fn leave(&self, pid: u32) {
        for group in &self.groups {
            let _ = std::fs::write(group.root.join("cgroup.procs"), pid.to_string());
        }
    }

    /// OOM kills in the memory group since it was opened.
    pub fn oom_kills(&self) -> u64 {
        self.groups
            .iter()
            .filter(|group| group.controllers.contains(&Controller::Memory))
            .map(|group| group.oom_kills().saturating_sub(group.oom_baseline))
            .sum()
    }

    /// Forks refused at the pids limit (the group is the instance's own, so it
    /// starts at zero).
    pub fn forks_refused(&self) -> u64 {
        self.groups
            .iter()
            .filter(|group| group.controllers.contains(&Controller::Pids))
            .map(|group| {
                std::fs::read_to_string(group.dir.join("pids.events"))
                    .map(|text| counter(&text, "max"))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// SIGKILLs every process in the groups except the caller, including ones that
    /// escaped the app's process group with setsid.
    pub fn kill_members(&self) {
        let me = std::process::id();
        for group in &self.groups {
            for pid in members(&group.dir) {
                if pid == me {
                    continue;
                }
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// Kills what is left and removes the groups, waiting up to `patience` for the
    /// killed processes to leave. Returns what could not be removed.
    pub fn kill_and_remove(&self, patience: Duration) -> Vec<String> {
        let deadline = Instant::now() + patience;
        let mut problems = Vec::new();
        for group in &self.groups {
            loop {
                self.kill_members();
                match std::fs::remove_dir(&group.dir) {
                    Ok(()) => break,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                    Err(error) if Instant::now() >= deadline => {
                        problems.push(format!("removing {}: {error}", group.dir.display()));
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        problems
    }
}

impl Group {
    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(self.dir.join(file))
            .map(|text| oom_kill_count(&text))
            .unwrap_or(0)
    }
}

/// The `oom_kill N` line of v1 `memory.oom_control` or v2 `memory.events`.
pub fn oom_kill_count(text: &str) -> u64 {
    counter(text, "oom_kill")
}

/// The `<name> N` line of a cgroup events file.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

fn members(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|line| line.parse().ok()).collect())
        .unwrap_or_default()
}

fn wanted(limits: &Limits) -> Vec<Controller> {
    let mut controllers = Vec::new();
    if limits.memory_bytes.is_some() {
        controllers.push(Controller::Memory);
    }
    if limits.cpu_millis.is_some() {
        controllers.push(Controller::Cpu);
    }
    if limits.pids.is_some() {
        controllers.push(Controller::Pids);
    }
    controllers
}

fn not_enforced(controller: Controller, limits: &Limits, reason: &str) -> String {
    let what = match controller {
        Controller::Memory => format!("memory limit of {} bytes", limits.memory_bytes.unwrap_or(0)),
        Controller::Cpu => format!("cpu limit of {} millicpus", limits.cpu_millis.unwrap_or(0)),
        Controller::Pids => format!("process limit of {}", limits.pids.unwrap_or(0)),
    };
    format!("{what} not enforced: {reason}")
}

/// Creates the group directory; on v2 first enables the controllers for the
/// children of the root and of `nanoscale/` (a v2 controller only reaches a group
/// through its parent's `cgroup.subtree_control`).
fn prepare(
    version: Version,
    root: &Path,
    dir: &Path,
    controllers: &[Controller],
) -> Result<(), String> {
    let parent = root.join(PARENT);
    std::fs::create_dir_all(&parent)
        .map_err(|error| format!("creating {}: {error}", parent.display()))?;
    if version == Version::V2 {
        let enable: Vec<String> = controllers
            .iter()
            .map(|controller| format!("+{}", controller.name()))
            .collect();
        let enable = enable.join(" ");
        for level in [root, parent.as_path()] {
            let path = level.join("cgroup.subtree_control");
            write(&path, &enable)?;
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(format!("creating {}: {error}", dir.display())),
    }
}

fn write_limits(
    version: Version,
    dir: &Path,
    controllers: &[Controller],
    limits: &Limits,
) -> Result<(), String> {
    for controller in controllers {
        match (controller, version) {
            (Controller::Memory, Version::V2) => {
                let bytes = limits.memory_bytes.unwrap_or(u64::MAX);
                write(&dir.join("memory.max"), &bytes.to_string())?;
                // Unless granted, swapping would let the app exceed its limit; the
                // file is absent when the kernel does no swap accounting, and then
                // there is nothing to stop.
                let swap = limits.swap_bytes.unwrap_or(0);
                let _ = write(&dir.join("memory.swap.max"), &swap.to_string());
            }
            (Controller::Memory, Version::V1) => {
                let memory_bytes = limits.memory_bytes.unwrap_or(u64::MAX);
                let bytes = memory_bytes.to_string();
                let with_swap = memory_bytes
                    .saturating_add(limits.swap_bytes.unwrap_or(0))
                    .to_string();
                // memsw (memory + swap) must stay >= the memory limit, so in a
                // reused group one of them has to move first: a lower memsw after,
                // a higher one before. Absent without swap accounting.
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &with_swap);
                let memory = write(&dir.join("memory.limit_in_bytes"), &bytes);
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &with_swap);
                if memory.is_err() {
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                }
            }
            (Controller::Cpu, version) => {
                let quota = cpu_quota_micros(limits.cpu_millis.unwrap_or(0));
                if version == Version::V2 {
                    write(
                        &dir.join("cpu.max"),
                        &format!("{quota} {CPU_PERIOD_MICROS}"),
                    )?;
                } else {
                    write(
                        &dir.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_MICROS.to_string(),
                    )?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            (Controller::Pids, _) => {
                // The shim lives in the group too, so the app gets the number asked for.
                let pids = u64::from(limits.pids.unwrap_or(0)) + 1;
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
        }
    }
    Ok(())
}

/// Quota per 100 ms period for `millis` thousandths of a CPU; the kernel refuses
/// quotas under 1 ms.
pub fn cpu_quota_micros(millis: u32) -> u64 {
    (u64::from(millis) * CPU_PERIOD_MICROS / 1000).max(1000)
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|error| format!("writing {}: {error}", path.display()))
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
pub fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;

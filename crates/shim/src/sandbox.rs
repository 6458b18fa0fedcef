//! The app's view of the host, set up by the shim (still root) on itself before it
//! spawns the app, so the app inherits it and the shim keeps supervising from inside.
//!
//! In a private mount namespace:
//! 1. every mount is remounted read-only (keeping its nosuid/nodev/noexec flags),
//!    except the kernel's API trees `/proc`, `/dev` and `/sys/fs/cgroup`;
//! 2. an empty tmpfs covers each hidden directory (`/home`, `/root`, the data dir;
//!    `/tmp` and `/var/tmp` get a private, writable one);
//! 3. the writable directories (the app's release and home) and the shim's own
//!    directory are bound back at their own paths, read-write, nosuid, nodev.
//!
//! Then the capability bounding, inheritable and ambient sets are cleared, so the
//! app (which std switches to its own uid/gid, dropping supplementary groups and the
//! permitted/effective sets) can never regain a capability, not even through a
//! setuid binary, which `no_new_privs` already neuters.
//!
//! The shim's own directory is root's (0700): the app sees that it exists, not what
//! is in it. Mount propagation is private, so nothing done here reaches the host.
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};
use serde::{Deserialize, Serialize};

use super::cgroup::unescape_mount_field;

/// What the app may see and write. Paths are absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Covered with an empty, root-owned tmpfs the app cannot write.
    pub hidden: Vec<PathBuf>,
    /// Covered with an empty, private tmpfs anyone may write (sticky, like /tmp).
    pub private_tmp: Vec<PathBuf>,
    /// Bound back read-write at the same path (they must exist).
    pub writable: Vec<PathBuf>,
}

/// Mount points left as they are: the kernel's API file systems, which apps need
/// (`/dev/null`, `/proc/self`) and the shim needs writable (its cgroup).
const API_TREES: [&str; 3] = ["/proc", "/dev", "/sys/fs/cgroup"];

impl SandboxSpec {
    pub fn validate(&self) -> Result<(), String> {
        for path in self
            .hidden
            .iter()
            .chain(&self.private_tmp)
            .chain(&self.writable)
        {
            let normal = path.is_absolute()
                && path
                    .components()
                    .all(|part| !matches!(part, std::path::Component::ParentDir));
            if !normal || path == Path::new("/") {
                return Err(format!(
                    "sandbox path {} must be absolute, not / and without '..'",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// Enters the sandbox. `shim_dirs` (its state and log directories) are bound back
/// for the shim itself. Returns
/// warnings for mounts that could not be made read-only (other than `/`, which is
/// fatal, as is every other step).
pub fn enter(spec: &SandboxSpec, shim_dirs: &[&Path]) -> Result<Vec<String>, String> {
    spec.validate()?;
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|error| format!("creating a mount namespace: {error}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|error| format!("making mounts private: {error}"))?;

    let mut keep: Vec<(PathBuf, OwnedFd)> = Vec::new();
    let paths = spec
        .writable
        .iter()
        .map(PathBuf::as_path)
        .chain(shim_dirs.iter().copied());
    for path in paths {
        // O_PATH: a handle to the directory itself, usable as a bind source after
        // the path is covered; NOFOLLOW so the last component is not a symlink.
        // Opened inside the new namespace: a bind source must be one of its mounts.
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|error| format!("opening {}: {error}", path.display()))?;
        keep.push((path.to_path_buf(), fd));
    }

    let mut warnings = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| format!("reading /proc/self/mountinfo: {error}"))?;
    for point in read_only_targets(&mountinfo) {
        if let Err(error) = remount(&point, MsFlags::MS_RDONLY) {
            if point == Path::new("/") {
                return Err(format!("making / read-only: {error}"));
            }
            warnings.push(format!(
                "sandbox: {} stays writable: {error}",
                point.display()
            ));
        }
    }

    for (paths, options, extra) in [
        (&spec.private_tmp, "mode=1777", MsFlags::empty()),
        (&spec.hidden, "mode=0755,size=1m", MsFlags::MS_NOEXEC),
    ] {
        for path in paths {
            // Covering a path that does not exist would need a mount point made on
            // the read-only root; there is nothing to hide there anyway.
            if !path.is_dir() {
                continue;
            }
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra,
                Some(options),
            )
            .map_err(|error| format!("covering {}: {error}", path.display()))?;
        }
    }

    for (path, fd) in &keep {
        // Inside a tmpfs now (or still on the read-only root, where it exists).
        // 0755 whatever the agent's umask (the installed one runs with 077): the
        // app's user must be able to walk down to its directories.
        let umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
        let made = std::fs::create_dir_all(path);
        nix::sys::stat::umask(umask);
        made.map_err(|error| format!("making the mount point {}: {error}", path.display()))?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|error| format!("binding {}: {error}", path.display()))?;
        // The bind inherits the read-only flag of the mount it came from.
        remount(path, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
            .map_err(|error| format!("making {} writable: {error}", path.display()))?;
    }
    drop(keep);

    // A fresh /proc where the app sees only its own processes (root, the shim,
    // still sees all of them). Before Linux 5.8 every proc mount of a pid namespace
    // shared its options, so this would change the host's /proc too.
    if !kernel_at_least(5, 8) {
        warnings.push("sandbox: other processes stay visible in /proc (Linux < 5.8)".into());
    } else if let Err(error) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=2"),
    ) {
        warnings.push(format!(
            "sandbox: other processes stay visible in /proc: {error}"
        ));
    }
    // The shim's working directory still points into the host's tree.
    std::env::set_current_dir("/").map_err(|error| format!("chdir /: {error}"))?;

    for set in [
        caps::CapSet::Bounding,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        caps::clear(None, set).map_err(|error| format!("clearing capabilities: {error}"))?;
    }
    Ok(warnings)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Every mount point outside the API trees, parents first.
fn read_only_targets(mountinfo: &str) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|point| !API_TREES.iter().any(|tree| point.starts_with(tree)))
        .collect();
    points.sort_by_key(|point| point.components().count());
    points.dedup();
    points
}

/// Remounts the mount at `path` with `flags` plus the flags it already had that
/// must survive (a remount replaces them all). Read-only is not kept: a bind made
/// writable drops the flag it inherited.
fn remount(path: &Path, flags: MsFlags) -> Result<(), nix::Error> {
    let current = statvfs(path)?.flags();
    let mut kept = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.contains(fs) {
            kept |= ms;
        }
    }
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | kept | flags,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_trees_are_left_alone_and_parents_come_first() {
        let mountinfo = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
25 22 0:24 / /sys/fs/cgroup ro - tmpfs tmpfs ro
26 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
30 1 8:1 / /var/lib/my\\040data rw - ext4 /dev/sda2 rw
1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw
23 1 0:5 / /dev rw,nosuid - devtmpfs udev rw
24 1 0:22 / /proc rw - proc proc rw
27 24 0:26 / /proc/sys/fs/binfmt_misc rw - autofs systemd-1 rw
";
        assert_eq!(
            read_only_targets(mountinfo),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/sys"),
                PathBuf::from("/var/lib/my data"),
            ]
        );
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        for bad in ["relative", "/", "/srv/../etc"] {
            let spec = SandboxSpec {
                hidden: vec![PathBuf::from(bad)],
                ..SandboxSpec::default()
            };
            assert!(spec.validate().is_err(), "{bad}");
        }
        let good = SandboxSpec {
            hidden: vec!["/home".into()],
            private_tmp: vec!["/tmp".into()],
            writable: vec!["/var/lib/nanoscale/apps/web/releases/1".into()],
        };
        assert_eq!(good.validate(), Ok(()));
    }
}

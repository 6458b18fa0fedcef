//! Volumes: directories of a service that outlive its releases. Each is
//! `<apps>/<service>/volumes/<name>` (the app's, 0700), and each release gets a
//! link to it at the volume's `path` before an instance starts, so the app finds
//! the same files at `./<path>` after every deploy or rollback. In the sandbox a
//! volume is, with the release and `$HOME`, one of the only places the app may
//! write (`sandbox::confine`). Builds see no volumes. A volume removed from the
//! spec keeps its files until the service is deleted.
//!
//! The release belongs to the app, and instances of the app may be running while
//! another is started: a link is made relative to a directory descriptor opened
//! without following links at each step, so an app that swaps a part of the path
//! for a link cannot make the agent (root) write anywhere else.
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nanoscale_core::service::VolumeSpec;
use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Where the volume `name` of `service` keeps its files.
pub fn dir(apps_dir: &Path, service: &str, name: &str) -> PathBuf {
    apps_dir.join(service).join("volumes").join(name)
}

/// The directories of `volumes`, made (0700) where they do not exist yet.
pub fn ensure(
    apps_dir: &Path,
    service: &str,
    volumes: &[VolumeSpec],
) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::fs::DirBuilderExt;
    volumes
        .iter()
        .map(|volume| {
            let path = dir(apps_dir, service, &volume.name);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(|error| {
                    format!(
                        "volume {}: creating {}: {error}",
                        volume.name,
                        path.display()
                    )
                })?;
            Ok(path)
        })
        .collect()
}

/// Links each volume at its path in `release` (`dirs` as [`ensure`] gave them);
/// directories made on the way, and the links, go to `owner`. A link that is
/// there already is kept; an empty directory in its place (a `data/` kept in git
/// with nothing in it) is replaced; anything else there is an error naming it.
pub fn link(
    release: &Path,
    volumes: &[VolumeSpec],
    dirs: &[PathBuf],
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let walk = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let release_fd: OwnedFd = open(release, walk, Mode::empty())
        .map_err(|errno| format!("opening {}: {errno}", release.display()))?;
    link_at(&release_fd, volumes, dirs, owner)
}

/// [`link`] into the release open as `release` (the privileged helper's
/// `own_app_dir` walks to it by descriptor first).
pub fn link_at(
    release: &OwnedFd,
    volumes: &[VolumeSpec],
    dirs: &[PathBuf],
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    for (volume, target) in volumes.iter().zip(dirs) {
        link_one(release, &volume.path, target, owner)
            .map_err(|why| format!("volume {} at {}: {why}", volume.name, volume.path))?;
    }
    Ok(())
}

fn link_one(
    release: &OwnedFd,
    path: &str,
    target: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    // The spec's validation made `path` plain relative parts; checked again here,
    // as this runs as root.
    nanoscale_core::service::validate_volume_path("path", path).map_err(|error| error.message)?;
    let walk = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let mut dir: OwnedFd = release
        .try_clone()
        .map_err(|error| format!("duplicating the release's descriptor: {error}"))?;
    let chown = |dir: &OwnedFd, name: &str| -> Result<(), String> {
        match owner {
            Some((uid, gid)) => fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|errno| format!("giving {name} to the app: {errno}")),
            None => Ok(()),
        }
    };
    let parts: Vec<&str> = path.split('/').collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err("an empty path".into());
    };
    for part in parents {
        match mkdirat(&dir, *part, Mode::from_bits_truncate(0o700)) {
            Ok(()) => chown(&dir, part)?,
            Err(Errno::EEXIST) => {}
            Err(errno) => return Err(format!("making {part}: {errno}")),
        }
        dir = openat(&dir, *part, walk, Mode::empty()).map_err(|errno| match errno {
            Errno::ELOOP | Errno::ENOTDIR => {
                format!("{part} in the release is a link or a file, not a directory")
            }
            other => format!("opening {part}: {other}"),
        })?;
    }
    match readlinkat(&dir, *last) {
        Ok(existing) if Path::new(&existing) == target => return Ok(()),
        // A link elsewhere (the app's own, or a stale one): replaced.
        Ok(_) => unlinkat(&dir, *last, UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| format!("replacing the link: {errno}"))?,
        Err(Errno::ENOENT) => {}
        // Not a link: only an empty directory may make way.
        Err(Errno::EINVAL) => unlinkat(&dir, *last, UnlinkatFlags::RemoveDir).map_err(|_| {
            "the release has it already (from the repository or its build) and it is not an \
             empty directory; remove it there or choose another path"
                .to_owned()
        })?,
        Err(errno) => return Err(format!("reading it: {errno}")),
    }
    symlinkat(target, &dir, *last).map_err(|errno| format!("linking it: {errno}"))?;
    chown(&dir, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, path: &str) -> VolumeSpec {
        VolumeSpec {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn volumes_are_linked_into_a_release_and_nothing_leads_out() {
        let temp = tempfile::tempdir().expect("tempdir");
        let apps = temp.path().join("apps");
        let release = apps.join("web/releases/1");
        std::fs::create_dir_all(release.join("kept")).expect("mkdir");
        std::fs::write(release.join("file"), b"x").expect("file");
        std::fs::create_dir_all(release.join("full")).expect("mkdir");
        std::fs::write(release.join("full/a"), b"x").expect("file");
        let volumes = [volume("data", "kept"), volume("up", "storage/app")];
        let dirs = ensure(&apps, "web", &volumes).expect("ensure");
        assert_eq!(dirs[0], apps.join("web/volumes/data"));
        link(&release, &volumes, &dirs, None).expect("link");
        std::fs::write(release.join("storage/app/f"), b"kept").expect("write through");
        assert_eq!(
            std::fs::read(apps.join("web/volumes/up/f")).expect("read"),
            b"kept"
        );
        // Again (a second instance, a rollback): nothing changes.
        link(&release, &volumes, &dirs, None).expect("again");
        assert_eq!(
            std::fs::read_link(release.join("kept")).expect("link"),
            dirs[0]
        );

        for (volumes, what) in [
            (vec![volume("f", "file")], "a file in the way"),
            (vec![volume("f", "full")], "a directory with files"),
            (vec![volume("f", "file/x")], "a file as a parent"),
        ] {
            let dirs = ensure(&apps, "web", &volumes).expect("ensure");
            let error = link(&release, &volumes, &dirs, None).expect_err(what);
            assert!(error.contains("volume f"), "{what}: {error}");
        }
        // A parent swapped for a link out of the release is not followed.
        let outside = temp.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, release.join("evil")).expect("symlink");
        let volumes = [volume("e", "evil/data")];
        let dirs = ensure(&apps, "web", &volumes).expect("ensure");
        let error = link(&release, &volumes, &dirs, None).expect_err("through a link");
        assert!(error.contains("is a link"), "{error}");
        assert!(std::fs::read_dir(&outside).expect("read").next().is_none());
    }
}

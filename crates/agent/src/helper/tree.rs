//! Trees under the apps directory, handled by descriptor: every part is opened
//! from its parent without following links, and every change is made on what was
//! opened, never on a path looked up again. An agent that is not root owns most of
//! these trees and can rename or swap any part at any moment; done by path, a root
//! helper could be led out of the tree between a check and the change (a
//! directory swapped for a link to `/etc` while its entries are being given away).
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

const WALK: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// `root/<parts...>` opened one part at a time, none of them a link.
pub fn open_dir(root: &Path, parts: &[&str]) -> Result<OwnedFd, String> {
    let dir = open(root, WALK, Mode::empty())
        .map_err(|errno| format!("opening {}: {errno}", root.display()))?;
    open_at(&dir, parts).map_err(|why| format!("{}/{why}", root.display()))
}

/// `<dir>/<parts...>` opened one part at a time, none of them a link.
pub fn open_at(dir: &OwnedFd, parts: &[&str]) -> Result<OwnedFd, String> {
    let mut walked = String::new();
    let mut current: Option<OwnedFd> = None;
    for part in parts {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        let parent = current.as_ref().unwrap_or(dir);
        let next = openat(parent, *part, WALK, Mode::empty()).map_err(|errno| match errno {
            Errno::ELOOP | Errno::ENOTDIR => {
                format!("{walked} is a link or a file, not a directory")
            }
            other => format!("opening {walked}: {other}"),
        })?;
        current = Some(next);
    }
    match current {
        Some(opened) => Ok(opened),
        None => dir
            .try_clone()
            .map_err(|error| format!("duplicating: {error}")),
    }
}

/// Gives the directory `dir` and everything in it to `uid:gid` (0700 on `dir`),
/// links included as links (never their targets). Only entries that already
/// belong to one of `owners` (the agent's user and the app's) are given: a hard
/// link to a file of someone else's (root's `/etc/shadow`, say) is refused, not
/// handed to the app.
pub fn own(dir: OwnedFd, uid: u32, gid: u32, owners: &[u32]) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    give(&dir, ".", uid, gid, owners)?;
    fchmod(&dir, Mode::from_bits_truncate(0o700)).map_err(|errno| format!("chmod: {errno}"))?;
    own_entries(dir, uid, gid, owners, 0)
}

/// Deeper than this is refused rather than walked (each level holds a descriptor).
const MAX_DEPTH: usize = 256;

fn own_entries(
    dir: OwnedFd,
    uid: Uid,
    gid: Gid,
    owners: &[u32],
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the tree is deeper than {MAX_DEPTH} directories"));
    }
    let mut listing = Dir::from_fd(dir).map_err(|errno| format!("listing: {errno}"))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|errno| format!("listing: {errno}"))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    let mut subdirs = Vec::new();
    for name in names {
        if give_entry(listing.as_fd(), &name, uid, gid, owners)? {
            subdirs.push(name);
        }
    }
    for name in subdirs {
        // Opened as a directory only if it still is one (not swapped for a link).
        let child = match openat(listing.as_fd(), name.as_c_str(), WALK, Mode::empty()) {
            Ok(child) => child,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => continue,
            Err(errno) => return Err(format!("opening {}: {errno}", name.to_string_lossy())),
        };
        own_entries(child, uid, gid, owners, depth + 1)?;
    }
    Ok(())
}

/// One entry of `dir`, opened as itself (`O_PATH`, a link as the link), checked
/// and given by that descriptor: what is checked is what is changed. True when it
/// is a directory (read from the entry itself: not every file system fills in
/// the listing's type).
fn give_entry(
    dir: impl AsFd,
    name: &CStr,
    uid: Uid,
    gid: Gid,
    owners: &[u32],
) -> Result<bool, String> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let entry = match openat(dir, name, flags, Mode::empty()) {
        Ok(entry) => entry,
        // Gone since it was listed: nothing to give.
        Err(Errno::ENOENT) => return Ok(false),
        Err(errno) => return Err(format!("opening {}: {errno}", name.to_string_lossy())),
    };
    give(&entry, &name.to_string_lossy(), uid, gid, owners)
}

/// Gives the file `entry` is open on; true when it is a directory.
fn give(entry: &OwnedFd, name: &str, uid: Uid, gid: Gid, owners: &[u32]) -> Result<bool, String> {
    let stat = fstat(entry).map_err(|errno| format!("reading {name}: {errno}"))?;
    if stat.st_uid != uid.as_raw() && !owners.contains(&stat.st_uid) {
        return Err(format!(
            "{name} belongs to uid {}, neither the agent's nor the app's; refusing to give it away",
            stat.st_uid
        ));
    }
    fchownat(entry, "", Some(uid), Some(gid), AtFlags::AT_EMPTY_PATH)
        .map_err(|errno| format!("giving {name} away: {errno}"))?;
    Ok(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Deletes `name` in the directory `parent` and everything under it; nothing when
/// it is not there. The parent is pinned by its descriptor (`/proc/self/fd/N`),
/// and the standard library's removal opens every level without following links.
pub fn remove(parent: &OwnedFd, name: &str) -> Result<(), String> {
    let path = format!("/proc/self/fd/{}/{name}", parent.as_raw_fd());
    match std::fs::remove_dir_all(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {name}: {error}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn owner(path: &Path) -> (u32, u32) {
        let meta = std::fs::symlink_metadata(path).expect("stat");
        (meta.uid(), meta.gid())
    }

    #[test]
    fn a_tree_is_given_away_with_its_links_as_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: giving files away needs root");
            return;
        }
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path();
        let outside = root.join("outside");
        std::fs::write(&outside, "not the app's").expect("write");
        let tree = root.join("apps/web/releases/1");
        std::fs::create_dir_all(tree.join("a/b/c")).expect("mkdir");
        std::fs::write(tree.join("a/b/c/file"), "x").expect("write");
        symlink(&outside, tree.join("a/link")).expect("symlink");
        symlink(root, tree.join("a/b/up")).expect("symlink");
        let dir = open_dir(root, &["apps", "web", "releases", "1"]).expect("open");
        own(dir, 4242, 4343, &[0]).expect("own");
        for path in ["", "a", "a/b", "a/b/c", "a/b/c/file", "a/link", "a/b/up"] {
            assert_eq!(owner(&tree.join(path)), (4242, 4343), "{path}");
        }
        // The links' targets stay as they were.
        assert_eq!(owner(&outside), (0, 0));
        assert_eq!(owner(root).0, 0);
        let mode = std::fs::symlink_metadata(&tree).expect("stat").mode();
        assert_eq!(mode & 0o7777, 0o700);

        // An entry of a third user (a hard link to someone else's file, say) is
        // refused, not handed to the app.
        std::fs::write(tree.join("theirs"), "x").expect("write");
        std::os::unix::fs::lchown(tree.join("theirs"), Some(5555), Some(5555)).expect("chown");
        let dir = open_dir(root, &["apps", "web", "releases", "1"]).expect("open");
        let refused = own(dir, 4242, 4343, &[0]).expect_err("a stranger's file");
        assert!(refused.contains("belongs to uid 5555"), "{refused}");
        assert_eq!(owner(&tree.join("theirs")), (5555, 5555));
    }

    #[test]
    fn a_link_on_the_way_is_not_followed() {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path();
        std::fs::create_dir_all(root.join("apps/web")).expect("mkdir");
        std::fs::create_dir_all(root.join("elsewhere/releases/1")).expect("mkdir");
        symlink(
            root.join("elsewhere/releases"),
            root.join("apps/web/releases"),
        )
        .expect("link");
        let refused = open_dir(root, &["apps", "web", "releases", "1"]).expect_err("a link");
        assert!(refused.contains("is a link"), "{refused}");

        // Removing: the parent is pinned, and a link in the name's place goes
        // as a link; what it pointed at stays.
        let parent = open_dir(root, &["apps", "web"]).expect("open");
        remove(&parent, "releases").expect("remove the link");
        assert!(root.join("elsewhere/releases/1").is_dir());
        assert!(!root.join("apps/web/releases").exists());
        std::fs::create_dir_all(root.join("apps/web/instances/x/log")).expect("mkdir");
        remove(&parent, "instances").expect("remove a tree");
        assert!(!root.join("apps/web/instances").exists());
        remove(&parent, "instances").expect("gone already is done");
    }
}

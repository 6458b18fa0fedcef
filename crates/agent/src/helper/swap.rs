//! The node's swap file: `<data>/helper/swapfile`, made and switched on for a low-memory
//! host (`create_swap`), switched off and deleted again (`remove_swap`). The path
//! is fixed by the helper; only the size crosses the boundary.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::tool;

/// Smallest and largest swap file the helper makes, in MiB.
pub const MIN_MIB: u64 = 16;
pub const MAX_MIB: u64 = 64 * 1024;

/// Disk that must stay free beside the swap file, in MiB.
const DISK_HEADROOM_MIB: u64 = 512;

pub fn path(own_dir: &Path) -> PathBuf {
    own_dir.join("swapfile")
}

pub fn check_size(size_mib: u64) -> Result<(), String> {
    if (MIN_MIB..=MAX_MIB).contains(&size_mib) {
        Ok(())
    } else {
        Err(format!(
            "size_mib {size_mib}: a swap file is {MIN_MIB} to {MAX_MIB} MiB"
        ))
    }
}

/// Whether `file` is in use as swap (`/proc/swaps` names it). Not knowing is an
/// error: deleting a swap file that is on would pin its space until reboot.
pub fn active(file: &Path) -> Result<bool, String> {
    let swaps = std::fs::read_to_string("/proc/swaps")
        .map_err(|error| format!("reading /proc/swaps: {error}"))?;
    let wanted = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    Ok(swaps
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| Path::new(&unescape(name)) == wanted))
}

/// The kernel writes space, tab, newline and backslash in `/proc/swaps` as
/// `\NNN` (octal).
fn unescape(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| u8::from_str_radix(text, 8).ok())
        });
        match (bytes[index], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes the file and switches it on; `Ok(false)` when it already was on.
pub async fn create(own_dir: &Path, size_mib: u64) -> Result<bool, String> {
    check_size(size_mib)?;
    let file = path(own_dir);
    if active(&file)? {
        return Ok(false);
    }
    remove_stale(&file)?;
    let stat = nix::sys::statvfs::statvfs(own_dir)
        .map_err(|error| format!("reading the free space of {}: {error}", own_dir.display()))?;
    let free_mib =
        (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64) >> 20;
    if free_mib < size_mib + DISK_HEADROOM_MIB {
        return Err(format!(
            "{} has {free_mib} MiB free: not enough for a {size_mib} MiB swap file and \
             {DISK_HEADROOM_MIB} MiB to spare",
            own_dir.display()
        ));
    }
    let made = fill(&file, size_mib).await;
    let made = match made {
        Ok(()) => switch_on(&file).await,
        Err(error) => Err(error),
    };
    if let Err(error) = made {
        let _ = std::fs::remove_file(&file);
        return Err(error);
    }
    Ok(true)
}

/// Switches the file off and deletes it; nothing to do when there is none.
pub async fn remove(own_dir: &Path) -> Result<(), String> {
    let file = path(own_dir);
    if active(&file)? {
        let swapoff = sbin("swapoff")?;
        tool(&swapoff, &[&file.display().to_string()], Vec::new()).await?;
    }
    remove_stale(&file)
}

/// A file at the path that is not on as swap: deleted, unless it is not a plain
/// file (then something else put it there, and the helper leaves it alone).
fn remove_stale(file: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_file() => std::fs::remove_file(file)
            .map_err(|error| format!("removing {}: {error}", file.display())),
        Ok(_) => Err(format!(
            "{} is not a plain file; remove it by hand",
            file.display()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("reading {}: {error}", file.display())),
    }
}

/// Writes `size_mib` MiB of zeros to a new 0600 file. Zeros rather than
/// fallocate: swapon refuses files with holes or unwritten extents on some file
/// systems.
async fn fill(file: &Path, size_mib: u64) -> Result<(), String> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let describe = |error: std::io::Error| format!("writing {}: {error}", file.display());
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&file)
            .map_err(describe)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            out.write_all(&chunk).map_err(describe)?;
        }
        out.sync_all().map_err(describe)
    })
    .await
    .map_err(|error| format!("writing the swap file: {error}"))?
}

async fn switch_on(file: &Path) -> Result<(), String> {
    let path = file.display().to_string();
    tool(&sbin("mkswap")?, &[&path], Vec::new()).await?;
    tool(&sbin("swapon")?, &[&path], Vec::new()).await?;
    Ok(())
}

/// util-linux's tools, by absolute path.
fn sbin(name: &str) -> Result<PathBuf, String> {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or_else(|| format!("{name} is not installed (util-linux)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_swaps_escapes_are_undone() {
        assert_eq!(super::unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(super::unescape("/plain/swapfile"), "/plain/swapfile");
        assert_eq!(super::unescape("/odd\\9"), "/odd\\9");
    }
}

//! The shim executable embedded in the agent (built static by `build.rs` from the
//! `nanoscale-shim` crate) and where it is written out to run.
//!
//! It is written to `<state>/bin/nanoscale-shim-<first 16 hex of its SHA-256>`,
//! mode 0755, in the agent's private state directory. Naming it by content means
//! an upgraded agent writes its shim beside the one its running instances still
//! execute, never over a running file; older ones are deleted once a new one is in
//! place (a running executable's file can go: its process keeps the inode).
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The static shim executable.
pub static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nanoscale-shim"));

/// Its SHA-256 in hex, computed by the build script: checking a written-out file
/// against it does not read [`SHIM`], whose pages would then stay in the agent's
/// RSS (about 1.3 MiB) for the rest of its life.
const DIGEST: &str = env!("NANOSCALE_SHIM_SHA256");

const PREFIX: &str = "nanoscale-shim-";

/// The name the embedded shim gets in `<state>/bin`.
pub fn file_name() -> String {
    format!("{PREFIX}{}", &DIGEST[..16])
}

/// Writes the embedded shim into `bin_dir` unless an identical file is there, and
/// returns its path. A file of that name with other content (a torn write, or
/// tampering) is replaced.
pub fn install(bin_dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(bin_dir)?;
    let name = file_name();
    let path = bin_dir.join(&name);
    let intact = std::fs::read(&path)
        .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == DIGEST)
        && std::fs::symlink_metadata(&path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o7777 == 0o755);
    if !intact {
        // Unique, so that two writers (two agents, parallel tests) never meet.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let temporary = bin_dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&temporary)?;
        file.write_all(SHIM)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &path)?;
    }
    for entry in std::fs::read_dir(bin_dir)?.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if other.starts_with(PREFIX) && other != name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

/// The shim to run for a node whose agent state is in `state_dir`: the embedded
/// one, written out, with no arguments before the directory; or, where it cannot
/// be written, `fallback` (this program) with its `shim` verb, which runs the same
/// code at a larger memory cost.
pub fn command(state_dir: &Path, fallback: &Path) -> (PathBuf, Vec<String>) {
    match install(&state_dir.join("bin")) {
        Ok(path) => (path, Vec::new()),
        Err(error) => {
            tracing::warn!(
                "cannot write the shim into {}: {error}; running `{} shim` instead",
                state_dir.join("bin").display(),
                fallback.display()
            );
            (fallback.to_path_buf(), vec!["shim".to_owned()])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_written_once_repaired_and_older_ones_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        std::fs::write(bin.join("nanoscale-shim-0123456789abcdef"), b"old").expect("old");
        std::fs::write(bin.join("keep-me"), b"other").expect("other");
        let path = install(&bin).expect("install");
        assert_eq!(std::fs::read(&path).expect("read"), SHIM);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777,
            0o755
        );
        assert!(!bin.join("nanoscale-shim-0123456789abcdef").exists());
        assert!(bin.join("keep-me").exists());
        // A static executable, not a stub: an ELF file of some size.
        assert!(SHIM.len() > 100_000 && SHIM.starts_with(b"\x7fELF"));
        assert_eq!(hex::encode(Sha256::digest(SHIM)), DIGEST);

        std::fs::write(&path, b"torn").expect("tear");
        assert_eq!(install(&bin).expect("again"), path);
        assert_eq!(std::fs::read(&path).expect("read"), SHIM);
    }
}

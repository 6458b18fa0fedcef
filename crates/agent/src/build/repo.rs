//! A release tree, read defensively: only files that resolve to regular files
//! inside it, never more than [`MAX_FILE_BYTES`], and only as UTF-8 text.
//!
//! Symlinks are resolved, not refused: a link from `Procfile` to `deploy/Procfile`
//! is fine, a link to `/etc/passwd` is not. The tree is an export the agent just
//! wrote and nothing runs in it during detection, so resolving first and opening
//! after cannot race with the repository's code.
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::DetectError;

/// Largest file detection reads (package.json, Procfile, nanoscale.toml, Cargo.toml).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most directory entries looked at when listing (`src/bin`).
const MAX_ENTRIES: usize = 1000;

pub(crate) struct Repo {
    /// Canonical, so that "inside" is a prefix check on canonical paths.
    root: PathBuf,
}

impl Repo {
    pub fn open(release_dir: &Path) -> Result<Self, DetectError> {
        let failed = |reason: String| DetectError::ReleaseDir {
            path: release_dir.to_path_buf(),
            reason,
        };
        let root = release_dir
            .canonicalize()
            .map_err(|error| failed(error.to_string()))?;
        if !root.is_dir() {
            return Err(failed("not a directory".into()));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether anything is at `relative` (a dangling symlink counts). Rules match
    /// on this; what they then read is checked by [`Repo::read`].
    pub fn has(&self, relative: &str) -> bool {
        self.root.join(relative).symlink_metadata().is_ok()
    }

    /// Whether `relative` resolves to a regular file inside the tree.
    pub fn is_file(&self, relative: &str) -> bool {
        matches!(self.file(relative), Ok(Some(_)))
    }

    /// The resolved path of the regular file at `relative`, `None` when nothing is
    /// there; an error when it leads outside the tree or is not a regular file.
    pub fn file(&self, relative: &str) -> Result<Option<PathBuf>, DetectError> {
        let path = self.root.join(relative);
        if path.symlink_metadata().is_err() {
            return Ok(None);
        }
        let problem = |problem: &str| DetectError::File {
            file: relative.to_owned(),
            problem: problem.to_owned(),
        };
        let resolved = path
            .canonicalize()
            .map_err(|_| problem("is a symlink to nothing"))?;
        if !resolved.starts_with(&self.root) {
            return Err(problem(
                "leads outside the repository through a symlink; only files inside it are read",
            ));
        }
        if !resolved.is_file() {
            return Err(problem("is not a regular file"));
        }
        Ok(Some(resolved))
    }

    /// The text of the file at `relative`, `None` when nothing is there.
    pub fn read(&self, relative: &str) -> Result<Option<String>, DetectError> {
        let Some(path) = self.file(relative)? else {
            return Ok(None);
        };
        let problem = |problem: String| DetectError::File {
            file: relative.to_owned(),
            problem,
        };
        let too_large = || problem(format!("is larger than {} KiB", MAX_FILE_BYTES / 1024));
        let file = std::fs::File::open(&path)
            .map_err(|error| problem(format!("cannot be read: {error}")))?;
        // Checked on the open file too: the length check must be about what is read.
        match file.metadata() {
            Ok(metadata) if !metadata.is_file() => {
                return Err(problem("is not a regular file".into()))
            }
            Ok(metadata) if metadata.len() > MAX_FILE_BYTES => return Err(too_large()),
            Ok(_) => {}
            Err(error) => return Err(problem(format!("cannot be read: {error}"))),
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| problem(format!("cannot be read: {error}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|_| problem("is not UTF-8 text".into()))?;
        // Editors on some systems start files with a byte order mark.
        Ok(Some(text.trim_start_matches('\u{feff}').to_owned()))
    }

    /// `value`, a path a repository file names, normalized, after checking it stays
    /// inside the tree: relative, no `..`, and no symlink on the way out. The path
    /// need not exist yet (a build may create `dist/`); the part that exists is
    /// resolved and checked. `Err` is the problem, for the caller to attach to the
    /// file and key.
    pub fn relative_inside(&self, value: &str) -> Result<PathBuf, String> {
        if value.trim().is_empty() {
            return Err("must not be empty".into());
        }
        let mut normalized = PathBuf::new();
        for component in Path::new(value).components() {
            match component {
                Component::Normal(part) => normalized.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!(
                        "must stay inside the repository, but {value:?} contains `..`"
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "must be relative to the repository root, not the absolute path {value:?}"
                    ))
                }
            }
        }
        let full = self.root.join(&normalized);
        if let Some(existing) = full
            .ancestors()
            .find(|ancestor| ancestor.symlink_metadata().is_ok())
        {
            let resolved = existing
                .canonicalize()
                .map_err(|_| format!("leads through a symlink to nothing ({value:?})"))?;
            if !resolved.starts_with(&self.root) {
                return Err(format!(
                    "must stay inside the repository, but {value:?} leads outside it through a symlink"
                ));
            }
        }
        if normalized.as_os_str().is_empty() {
            normalized.push(".");
        }
        Ok(normalized)
    }

    /// Names of the entries of the directory at `relative` that are regular files
    /// with the extension `rs` (as stems) or directories holding a `main.rs`, for
    /// Cargo's automatic binaries. Empty when it is not a directory inside the tree.
    pub fn rust_binaries_in(&self, relative: &str) -> Vec<String> {
        let dir = self.root.join(relative);
        let inside = dir
            .canonicalize()
            .is_ok_and(|resolved| resolved.starts_with(&self.root) && resolved.is_dir());
        if !inside {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .take(MAX_ENTRIES)
            .filter_map(|entry| {
                let path = entry.path();
                let name = entry.file_name().into_string().ok()?;
                if let Some(stem) = name.strip_suffix(".rs") {
                    return path.is_file().then(|| stem.to_owned());
                }
                path.join("main.rs").is_file().then_some(name)
            })
            .collect();
        names.sort();
        names
    }
}

/// `word` as one `sh` word: bare when it is plainly safe, single-quoted otherwise.
/// Names from package.json or Cargo.toml end up in a shell command.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._/-+@:,".contains(&byte));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

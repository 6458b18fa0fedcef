//! Resolves a service's git ref to an exact commit on the control plane, so every
//! node builds the same code. Runs `git ls-remote` through the process wrapper with a
//! fixed, minimal environment and no shell.
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_core::service::is_commit_sha;

use nanoscale_process::git::{confine, first_line, git_command};
use nanoscale_process::run;

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("file:// repositories must be under one of: {0}")]
    PathNotAllowed(String),
    #[error("git could not read the repository: {0}")]
    Remote(String),
    #[error("the repository has no branch or tag named {0:?}")]
    RefNotFound(String),
    #[error("git is not installed on the control plane")]
    GitMissing,
}

#[derive(Debug, Clone)]
pub struct GitResolver {
    allowed_file_roots: Vec<PathBuf>,
}

impl GitResolver {
    pub fn new(allowed_file_roots: Vec<PathBuf>) -> Self {
        Self { allowed_file_roots }
    }

    /// The commit `git_ref` names in `url`. A full commit id is returned as is.
    pub async fn resolve(&self, url: &str, git_ref: &str) -> Result<String, GitError> {
        // file:// is confined to the allowed roots whatever the ref, and git gets the
        // canonical path (no `..`, no symlink, no percent-encoding left to decode).
        let url = match url.strip_prefix("file://") {
            Some(path) => format!(
                "file://{}",
                self.check_file_path(Path::new(path))?.display()
            ),
            None => url.to_owned(),
        };
        if is_commit_sha(git_ref) {
            return Ok(git_ref.to_ascii_lowercase());
        }
        let spec = git_command(&["ls-remote", "--", &url], Vec::new(), RESOLVE_TIMEOUT)
            .ok_or(GitError::GitMissing)?;
        let output = run(spec)
            .await
            .map_err(|error| GitError::Remote(error.to_string()))?;
        if !output.success {
            return Err(GitError::Remote(first_line(&output.stderr)));
        }
        pick_ref(&output.stdout, git_ref).ok_or_else(|| GitError::RefNotFound(git_ref.to_owned()))
    }

    /// Refuses a `file://` source outside the allowed roots when a service is
    /// saved, not only when it is deployed. A path that does not exist yet must
    /// be under a root as written (it is absolute and free of `..`: the URL
    /// passed validation); one that exists is resolved first, symlinks included.
    pub fn check_source(&self, url: &str) -> Result<(), GitError> {
        let Some(path) = url.strip_prefix("file://").map(Path::new) else {
            return Ok(());
        };
        if path.symlink_metadata().is_ok() {
            return self.check_file_path(path).map(|_| ());
        }
        let under_a_root = self
            .allowed_file_roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| path.starts_with(root));
        if under_a_root {
            Ok(())
        } else {
            Err(self.not_allowed())
        }
    }

    fn not_allowed(&self) -> GitError {
        let roots: Vec<String> = self
            .allowed_file_roots
            .iter()
            .map(|root| root.display().to_string())
            .collect();
        GitError::PathNotAllowed(roots.join(", "))
    }

    fn check_file_path(&self, path: &Path) -> Result<PathBuf, GitError> {
        confine(path, &self.allowed_file_roots).ok_or_else(|| self.not_allowed())
    }
}

/// Picks the commit for `wanted` from `git ls-remote` output: a branch first, then a
/// tag (peeled to its commit), then an exact full ref name.
pub fn pick_ref(listing: &str, wanted: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    let find = |name: &str| {
        entries
            .iter()
            .find(|(_, refname)| *refname == name)
            .map(|(sha, _)| (*sha).to_owned())
    };
    find(&format!("refs/heads/{wanted}"))
        .or_else(|| find(&format!("refs/tags/{wanted}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{wanted}")))
        .or_else(|| find(wanted))
        .filter(|sha| is_commit_sha(sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "1111111111111111111111111111111111111111\tHEAD\n\
        2222222222222222222222222222222222222222\trefs/heads/main\n\
        3333333333333333333333333333333333333333\trefs/tags/v1\n\
        4444444444444444444444444444444444444444\trefs/tags/v1^{}\n\
        5555555555555555555555555555555555555555\trefs/heads/v1\n";

    #[test]
    fn picks_branches_then_peeled_tags() {
        assert_eq!(
            pick_ref(LISTING, "main").as_deref(),
            Some("2222222222222222222222222222222222222222")
        );
        assert_eq!(
            pick_ref(LISTING, "v1").as_deref(),
            Some("5555555555555555555555555555555555555555")
        );
        assert_eq!(
            pick_ref(LISTING, "HEAD").as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert_eq!(pick_ref(LISTING, "nope"), None);
        let tags_only = "3333333333333333333333333333333333333333\trefs/tags/v2\n\
            4444444444444444444444444444444444444444\trefs/tags/v2^{}\n";
        assert_eq!(
            pick_ref(tags_only, "v2").as_deref(),
            Some("4444444444444444444444444444444444444444")
        );
    }
}

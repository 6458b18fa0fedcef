//! The per-service source cache: a bare repository per service that holds exactly
//! the commits deployed, fetched by id (shallow where the server allows), and
//! exported into release directories. Every git call goes through the process
//! wrapper with a transport allow-list and no shell; every input is validated
//! again here, because the agent trusts no document blindly.
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_core::names::is_dns_label;
use nanoscale_core::service::{is_commit_sha, validate_git_url};
use nanoscale_process::{run, which, CommandOutput, CommandSpec};

const GIT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("file:// repositories must be under one of the allowed roots")]
    PathNotAllowed,
    #[error("the repository does not contain commit {0}")]
    CommitNotFound(String),
    #[error("git failed: {0}")]
    Git(String),
    #[error("git is not installed")]
    GitMissing,
    #[error("{0} already exists and is not empty")]
    DestinationNotEmpty(PathBuf),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct SourceCache {
    /// `<data>/apps`: each service's cache is `<apps>/<service>/source.git`.
    apps_dir: PathBuf,
    allowed_file_roots: Vec<PathBuf>,
}

impl SourceCache {
    pub fn new(apps_dir: PathBuf, allowed_file_roots: Vec<PathBuf>) -> Self {
        Self {
            apps_dir,
            allowed_file_roots,
        }
    }

    /// The cache repository of a service.
    pub fn repository(&self, service: &str) -> Result<PathBuf, SourceError> {
        if !is_dns_label(service) {
            return Err(SourceError::Invalid {
                what: "service name",
                reason: "not a DNS label".into(),
            });
        }
        Ok(self.apps_dir.join(service).join("source.git"))
    }

    /// True when `commit` is already in the service's cache.
    pub async fn contains(&self, service: &str, commit: &str) -> Result<bool, SourceError> {
        check_commit(commit)?;
        let repository = self.repository(service)?;
        if !repository.join("HEAD").is_file() {
            return Ok(false);
        }
        let output = git(
            &repository,
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
        )
        .await?;
        Ok(output.success)
    }

    /// Makes sure the cache holds `commit` from `url`, fetching only that commit
    /// when the server allows it, else the branches and tags that contain it.
    pub async fn ensure(
        &self,
        service: &str,
        url: &str,
        commit: &str,
    ) -> Result<PathBuf, SourceError> {
        check_commit(commit)?;
        validate_git_url("source.git", url).map_err(|error| SourceError::Invalid {
            what: "repository url",
            reason: error.message,
        })?;
        if let Some(path) = url.strip_prefix("file://") {
            self.check_file_path(Path::new(path))?;
        }
        let repository = self.repository(service)?;
        if self.contains(service, commit).await? {
            return Ok(repository);
        }
        if !repository.join("HEAD").is_file() {
            std::fs::create_dir_all(&repository).map_err(|source| SourceError::Io {
                path: repository.clone(),
                source,
            })?;
            let init = git(&repository, &["init", "--bare", "--quiet"]).await?;
            if !init.success {
                return Err(SourceError::Git(first_line(&init.stderr)));
            }
        }
        let exact = git(
            &repository,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--depth=1",
                "--",
                url,
                commit,
            ],
        )
        .await?;
        if !exact.success || !self.contains(service, commit).await? {
            let all = git(
                &repository,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--",
                    url,
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .await?;
            if !all.success {
                return Err(SourceError::Git(first_line(&all.stderr)));
            }
        }
        if !self.contains(service, commit).await? {
            return Err(SourceError::CommitNotFound(commit.to_owned()));
        }
        Ok(repository)
    }

    /// Writes the files of `commit` into `destination` (created; must be empty).
    /// Uses a private index file so exports of one service never share state.
    pub async fn export(
        &self,
        service: &str,
        commit: &str,
        destination: &Path,
    ) -> Result<(), SourceError> {
        check_commit(commit)?;
        let repository = self.repository(service)?;
        let occupied = std::fs::read_dir(destination)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if occupied {
            return Err(SourceError::DestinationNotEmpty(destination.to_path_buf()));
        }
        std::fs::create_dir_all(destination).map_err(|source| SourceError::Io {
            path: destination.to_path_buf(),
            source,
        })?;
        let index = destination.with_extension("index");
        let work_tree = format!("--work-tree={}", destination.display());
        let output = run(CommandSpec {
            program: which("git").ok_or(SourceError::GitMissing)?,
            args: git_args(
                &repository,
                &[&work_tree, "checkout", "--quiet", "-f", commit, "--", "."],
            ),
            env: git_env(Some(&index)),
            timeout: GIT_TIMEOUT,
            ..CommandSpec::default()
        })
        .await
        .map_err(|error| SourceError::Git(error.to_string()))?;
        let _ = std::fs::remove_file(&index);
        if !output.success {
            return Err(SourceError::Git(first_line(&output.stderr)));
        }
        Ok(())
    }

    fn check_file_path(&self, path: &Path) -> Result<(), SourceError> {
        // Canonicalize so `..` and symlinks cannot step outside a root.
        let real = path
            .canonicalize()
            .map_err(|_| SourceError::PathNotAllowed)?;
        let allowed = self
            .allowed_file_roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(root));
        if allowed {
            Ok(())
        } else {
            Err(SourceError::PathNotAllowed)
        }
    }
}

fn check_commit(commit: &str) -> Result<(), SourceError> {
    if is_commit_sha(commit) {
        return Ok(());
    }
    Err(SourceError::Invalid {
        what: "commit",
        reason: "not a full hexadecimal commit id".into(),
    })
}

/// Every transport off but the ones the URL validation accepts; `ext::` and `fd::`
/// (which run commands) stay off whatever the host's git config says.
fn git_args(repository: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["-c".to_owned(), "protocol.allow=never".to_owned()];
    for protocol in ["https", "http", "ssh", "git", "file"] {
        all.push("-c".to_owned());
        all.push(format!("protocol.{protocol}.allow=always"));
    }
    all.push(format!("--git-dir={}", repository.display()));
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    all
}

fn git_env(index: Option<&Path>) -> Vec<(String, String)> {
    let mut env = vec![
        ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
        ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
        ("GIT_CONFIG_GLOBAL".to_owned(), "/dev/null".to_owned()),
        (
            "GIT_SSH_COMMAND".to_owned(),
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new".to_owned(),
        ),
    ];
    if let Some(index) = index {
        env.push(("GIT_INDEX_FILE".to_owned(), index.display().to_string()));
    }
    env
}

async fn git(repository: &Path, args: &[&str]) -> Result<CommandOutput, SourceError> {
    run(CommandSpec {
        program: which("git").ok_or(SourceError::GitMissing)?,
        args: git_args(repository, args),
        env: git_env(None),
        timeout: GIT_TIMEOUT,
        ..CommandSpec::default()
    })
    .await
    .map_err(|error| SourceError::Git(error.to_string()))
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("failed")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests;

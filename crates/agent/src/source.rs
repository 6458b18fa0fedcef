//! The per-service source cache: a bare repository per service that holds exactly
//! the commits deployed, fetched by id (shallow where the server allows), and
//! exported into release directories. Every git call goes through the process
//! wrapper with a transport allow-list and no shell; every input is validated
//! again here, because the agent trusts no document blindly.
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_core::agent::CommitInfo;
use nanoscale_core::names::is_dns_label;
use nanoscale_core::service::{is_commit_sha, validate_git_url};
use nanoscale_process::git::{confine, first_line, git_command};
use nanoscale_process::{run, CommandOutput};

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

    /// The author and subject line of a commit already in the cache. Control
    /// characters are dropped and both are cut to 200 characters: they come from
    /// whoever wrote the repository and are shown to every dashboard user.
    pub async fn describe(&self, service: &str, commit: &str) -> Result<CommitInfo, SourceError> {
        check_commit(commit)?;
        let repository = self.repository(service)?;
        let output = git(
            &repository,
            &[
                "log",
                "-1",
                "--no-show-signature",
                "--format=%an%x00%s",
                commit,
                "--",
            ],
        )
        .await?;
        if !output.success {
            return Err(SourceError::Git(first_line(&output.stderr)));
        }
        let text = output.stdout.as_str();
        let (author, message) = text
            .trim_end_matches('\n')
            .split_once('\0')
            .unwrap_or((text, ""));
        let clean = |value: &str| nanoscale_core::validation::plain_text(value, 200);
        Ok(CommitInfo {
            author: clean(author),
            message: clean(message),
        })
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
        // git gets the canonical path of a confined file:// repository.
        let url = match url.strip_prefix("file://") {
            Some(path) => {
                let real = confine(Path::new(path), &self.allowed_file_roots)
                    .ok_or(SourceError::PathNotAllowed)?;
                format!("file://{}", real.display())
            }
            None => url.to_owned(),
        };
        let url = url.as_str();
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
        let git_dir = format!("--git-dir={}", repository.display());
        let env = vec![("GIT_INDEX_FILE".to_owned(), index.display().to_string())];
        let args = [
            git_dir.as_str(),
            &work_tree,
            "checkout",
            "--quiet",
            "-f",
            commit,
            "--",
            ".",
        ];
        let spec = git_command(&args, env, GIT_TIMEOUT).ok_or(SourceError::GitMissing)?;
        let output = run(spec)
            .await
            .map_err(|error| SourceError::Git(error.to_string()))?;
        let _ = std::fs::remove_file(&index);
        if !output.success {
            return Err(SourceError::Git(first_line(&output.stderr)));
        }
        Ok(())
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

async fn git(repository: &Path, args: &[&str]) -> Result<CommandOutput, SourceError> {
    let git_dir = format!("--git-dir={}", repository.display());
    let all: Vec<&str> = std::iter::once(git_dir.as_str())
        .chain(args.iter().copied())
        .collect();
    let spec = git_command(&all, Vec::new(), GIT_TIMEOUT).ok_or(SourceError::GitMissing)?;
    run(spec)
        .await
        .map_err(|error| SourceError::Git(error.to_string()))
}

#[cfg(test)]
mod tests;

//! Deciding how to build and run a release when the spec does not say (the rules
//! and their messages are documented for users in `docs/build-detection.md`).
//!
//! Each of build and run comes from the first source that gives it: the spec,
//! then `nanoscale.toml`, then the `Procfile` (run only), then the first language
//! rule of [`rules::RULES`] that matches the tree. A spec with only `run` still gets
//! a detected build (`npm ci`), and a rule's failure to find a start command
//! matters only when nothing before it gave one.
//!
//! A repository is hostile input: files are read only when they resolve to regular
//! files inside the release directory, with a size cap, and every path a file names
//! (`static = "dist"`, package.json's `main`) must stay inside the tree.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod repo;
mod rules;
mod sources;
#[cfg(test)]
mod tests;

pub use repo::MAX_FILE_BYTES;

use repo::Repo;
use rules::{Tools, RULES};

/// How to build and run one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// Shell command run with `/bin/sh -c` in the release directory; `None` when
    /// there is nothing to build.
    pub build: Option<String>,
    pub run: RunPlan,
    /// Where build and run came from, for events and the release page: "spec",
    /// "nanoscale.toml", "Procfile", "node (package.json)", or
    /// "build: node (package.json), run: Procfile" when they differ.
    pub detected_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPlan {
    /// Shell command run in the release directory; the app must listen on `$PORT`.
    Command(String),
    /// A static site served by the traffic layer from `root`, relative to the
    /// release directory and checked to stay inside it when detected. Check it
    /// again with [`static_root`] after the build, which may have created it.
    Static { root: PathBuf },
}

/// Why no plan could be made. Every message names the file (and key) at fault and
/// says how to fix it; they reach users through the release's failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("the release directory {path} cannot be read: {reason}")]
    ReleaseDir { path: PathBuf, reason: String },
    /// A file that cannot be used at all (outside the tree, too large, malformed).
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
    /// One key of a file has a bad value.
    #[error("{file}: `{key}` {problem}")]
    Key {
        file: String,
        key: String,
        problem: String,
    },
    #[error("{rule} needs `{tool}`, which is not installed on this node; install it, or give the service both a build and a run command")]
    MissingTool {
        rule: &'static str,
        tool: &'static str,
    },
    #[error("{rule}: cannot tell how to start the app: {fix}")]
    NoStartCommand { rule: &'static str, fix: String },
    #[error("cannot tell how to run this repository: found no nanoscale.toml, Procfile, package.json, requirements.txt, pyproject.toml, go.mod, Cargo.toml or index.html; give the service a run command, or add a Procfile with a `web:` line or a nanoscale.toml with `run`")]
    NothingDetected,
}

/// Decides the build and run of the release in `release_dir`. `tools` says whether
/// a program (`npm`, `python3`…) is installed on this node.
pub fn detect(
    release_dir: &Path,
    spec_build: Option<&str>,
    spec_run: Option<&str>,
    tools: &dyn Fn(&str) -> bool,
) -> Result<BuildPlan, DetectError> {
    let mut decided = Decided {
        build: spec_build.map(|command| (Some(command.to_owned()), SPEC)),
        run: spec_run.map(|command| (RunPlan::Command(command.to_owned()), SPEC)),
    };
    // A spec that gives both needs nothing from the repository, not even tools.
    if !decided.complete() {
        let repo = Repo::open(release_dir)?;
        from_repository(&repo, &Tools(tools), &mut decided)?;
    }
    decided.finish()
}

/// `relative` (a [`RunPlan::Static`] root) resolved inside `release_dir`, after
/// the build: a build may have created it, or replaced it with a symlink.
pub fn static_root(release_dir: &Path, relative: &Path) -> Result<PathBuf, DetectError> {
    let repo = Repo::open(release_dir)?;
    let text = relative.to_str().ok_or_else(|| DetectError::Key {
        file: "the run plan".into(),
        key: "static".into(),
        problem: "is not valid UTF-8".into(),
    })?;
    let normalized = repo
        .relative_inside(text)
        .map_err(|problem| DetectError::Key {
            file: "the run plan".into(),
            key: "static".into(),
            problem,
        })?;
    let resolved = repo.root().join(normalized);
    if !resolved.is_dir() {
        return Err(DetectError::Key {
            file: "the run plan".into(),
            key: "static".into(),
            problem: format!(
                "names {}, which is not a directory after the build",
                relative.display()
            ),
        });
    }
    Ok(resolved)
}

const SPEC: &str = "spec";
const NANOSCALE_TOML: &str = "nanoscale.toml";
const PROCFILE: &str = "Procfile";

/// Build and run as decided so far, each with the source that decided it.
/// `build: Some((None, _))` means a source decided there is nothing to build.
struct Decided {
    build: Option<(Option<String>, &'static str)>,
    run: Option<(RunPlan, &'static str)>,
}

impl Decided {
    fn complete(&self) -> bool {
        self.build.is_some() && self.run.is_some()
    }

    fn finish(self) -> Result<BuildPlan, DetectError> {
        let Some((run, run_source)) = self.run else {
            return Err(DetectError::NothingDetected);
        };
        let (build, build_source) = match self.build {
            Some((build, source)) => (build, Some(source)),
            None => (None, None),
        };
        let detected_by = match build_source {
            Some(source) if source != run_source && build.is_some() => {
                format!("build: {source}, run: {run_source}")
            }
            _ => run_source.to_owned(),
        };
        Ok(BuildPlan {
            build,
            run,
            detected_by,
        })
    }
}

fn from_repository(repo: &Repo, tools: &Tools, decided: &mut Decided) -> Result<(), DetectError> {
    if let Some(config) = sources::nanoscale_toml(repo)? {
        if decided.build.is_none() {
            decided.build = config.build.map(|build| (build, NANOSCALE_TOML));
        }
        if decided.run.is_none() {
            decided.run = config.run.map(|run| (run, NANOSCALE_TOML));
        }
    }
    if decided.run.is_none() {
        decided.run =
            sources::procfile_web(repo)?.map(|command| (RunPlan::Command(command), PROCFILE));
    }
    if decided.complete() {
        return Ok(());
    }
    let Some(rule) = RULES.iter().find(|rule| (rule.matches)(repo)) else {
        return Ok(());
    };
    let detected = (rule.plan)(repo, tools)?;
    if decided.build.is_none() {
        let build = match detected.build {
            Some(step) => {
                installed(step.needs, rule.name, tools)?;
                Some(step.command)
            }
            None => None,
        };
        decided.build = Some((build, rule.name));
    }
    if decided.run.is_none() {
        let run = detected.run?;
        installed(run.needs, rule.name, tools)?;
        decided.run = Some((run.plan, rule.name));
    }
    Ok(())
}

/// Only what is used needs its tool: a Go binary runs without `go`, and a spec
/// that gives the build does not need cargo installed to run the result.
fn installed(
    needs: Option<&'static str>,
    rule: &'static str,
    tools: &Tools,
) -> Result<(), DetectError> {
    match needs {
        Some(tool) if !tools.has(tool) => Err(DetectError::MissingTool { rule, tool }),
        _ => Ok(()),
    }
}

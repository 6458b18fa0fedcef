//! Deciding how to build and run a release when the spec does not say: a table of
//! small rules, first match wins (see `docs/build-detection.md`). The spec's own
//! `build` and `run` always win, each on its own.
//!
//! A repository is hostile input: files are read only when they are regular files
//! inside the release directory (no symlinks), with a size cap, and a path a file
//! names (`static = "dist"`) must stay inside the tree.
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[cfg(test)]
mod tests;

/// Largest manifest (package.json, Procfile, nanoscale.toml…) read.
const MAX_MANIFEST: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Shell command run in the release directory; `None` when nothing is built.
    pub build: Option<String>,
    pub run: RunPlan,
    /// Which rule decided, for events: "spec", "nanoscale.toml", "Procfile", …
    pub detected_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunPlan {
    /// Shell command; the app listens on `$PORT`.
    Command(String),
    /// Serve this directory (relative to the release) as a static site.
    Static { root: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{what} was found but {tool} is not installed on this node; install it or give the service build and run commands")]
    MissingTool { what: String, tool: &'static str },
    #[error("cannot tell how to run this repository: {0}")]
    Undecided(String),
}

/// The `nanoscale.toml` a repository may carry at its root.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoConfig {
    build: Option<String>,
    run: Option<String>,
    #[serde(rename = "static")]
    static_root: Option<String>,
}

/// What a rule decides: build and run, each optional (the spec or a later source
/// may fill the other).
#[derive(Debug, Default)]
struct Partial {
    build: Option<String>,
    run: Option<RunPlan>,
}

/// Whether a program is installed on this node.
type Tools<'a> = &'a dyn Fn(&str) -> bool;

struct Rule {
    name: &'static str,
    applies: fn(&Repo) -> bool,
    decide: fn(&Repo, Tools) -> Result<Partial, DetectError>,
}

/// Language and framework rules, in priority order. `nanoscale.toml` and `Procfile`
/// are read before these and may leave build or run to them.
const RULES: &[Rule] = &[
    Rule {
        name: "node (package.json)",
        applies: |r| r.has("package.json"),
        decide: node,
    },
    Rule {
        name: "python (requirements.txt)",
        applies: |r| r.has("requirements.txt"),
        decide: |r, tools| python(r, tools, "-r requirements.txt"),
    },
    Rule {
        name: "python (pyproject.toml)",
        applies: |r| r.has("pyproject.toml"),
        decide: |r, tools| python(r, tools, "."),
    },
    Rule {
        name: "go (go.mod)",
        applies: |r| r.has("go.mod"),
        decide: go,
    },
    Rule {
        name: "rust (Cargo.toml)",
        applies: |r| r.has("Cargo.toml"),
        decide: rust,
    },
    Rule {
        name: "static site (index.html)",
        applies: |r| r.has("index.html") || r.has("public/index.html"),
        decide: |r, _| {
            let root = if r.has("index.html") { "." } else { "public" };
            Ok(Partial {
                build: None,
                run: Some(RunPlan::Static { root: root.into() }),
            })
        },
    },
];

pub fn detect(
    release_dir: &Path,
    spec_build: Option<&str>,
    spec_run: Option<&str>,
    tools: &dyn Fn(&str) -> bool,
) -> Result<BuildPlan, DetectError> {
    let repo = Repo {
        root: release_dir.to_path_buf(),
    };
    let mut build = spec_build.map(str::to_owned);
    let mut run = spec_run.map(|command| RunPlan::Command(command.to_owned()));
    let mut sources = Vec::new();
    if spec_build.is_some() || spec_run.is_some() {
        sources.push("spec");
    }
    // A spec that says both needs nothing from the repository.
    if build.is_some() && run.is_some() {
        return Ok(finish(build, run, &sources));
    }
    if let Some(text) = repo.read("nanoscale.toml")? {
        let config: RepoConfig = toml::from_str(&text).map_err(|error| DetectError::Invalid {
            file: "nanoscale.toml".into(),
            message: error.message().to_owned(),
        })?;
        if config.run.is_some() && config.static_root.is_some() {
            return Err(invalid(
                "nanoscale.toml",
                "give either `run` or `static`, not both",
            ));
        }
        let from_file = build.is_none() && config.build.is_some()
            || run.is_none() && (config.run.is_some() || config.static_root.is_some());
        build = build.or(config.build);
        if run.is_none() {
            run = match (config.run, config.static_root) {
                (Some(command), _) => Some(RunPlan::Command(command)),
                (None, Some(root)) => Some(RunPlan::Static {
                    root: repo.inside("nanoscale.toml", "static", &root)?,
                }),
                (None, None) => None,
            };
        }
        if from_file {
            sources.push("nanoscale.toml");
        }
    }
    if run.is_none() {
        if let Some(text) = repo.read("Procfile")? {
            let web = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("web:").map(str::trim));
            match web {
                Some(command) if !command.is_empty() => {
                    run = Some(RunPlan::Command(command.to_owned()));
                    sources.push("Procfile");
                }
                _ => {
                    return Err(invalid(
                        "Procfile",
                        "has no `web:` line; add `web: <command that listens on $PORT>`",
                    ))
                }
            }
        }
    }
    if build.is_none() || run.is_none() {
        if let Some(rule) = RULES.iter().find(|rule| (rule.applies)(&repo)) {
            // A rule's missing tool only matters for what it would decide.
            let decided = (rule.decide)(&repo, tools);
            match decided {
                Ok(partial) => {
                    let used = build.is_none() && partial.build.is_some()
                        || run.is_none() && partial.run.is_some();
                    build = build.or(partial.build);
                    run = run.or(partial.run);
                    if used {
                        sources.push(rule.name);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
    if run.is_none() {
        return Err(DetectError::Undecided(
            "no run command in the service, no nanoscale.toml, no Procfile `web:` line, and no \
             package.json, requirements.txt, pyproject.toml, go.mod, Cargo.toml or index.html; \
             give the service a run command or add a Procfile"
                .into(),
        ));
    }
    Ok(finish(build, run, &sources))
}

fn finish(build: Option<String>, run: Option<RunPlan>, sources: &[&str]) -> BuildPlan {
    BuildPlan {
        build,
        run: run.unwrap_or(RunPlan::Command(String::new())),
        detected_by: if sources.is_empty() {
            "defaults".into()
        } else {
            sources.join(" + ")
        },
    }
}

fn invalid(file: &str, message: &str) -> DetectError {
    DetectError::Invalid {
        file: file.into(),
        message: message.into(),
    }
}

fn need(tools: &dyn Fn(&str) -> bool, tool: &'static str, what: &str) -> Result<(), DetectError> {
    if tools(tool) {
        Ok(())
    } else {
        Err(DetectError::MissingTool {
            what: what.into(),
            tool,
        })
    }
}

#[derive(Debug, Deserialize)]
struct PackageJson {
    main: Option<String>,
    #[serde(default)]
    scripts: std::collections::BTreeMap<String, serde_json::Value>,
}

fn node(repo: &Repo, tools: &dyn Fn(&str) -> bool) -> Result<Partial, DetectError> {
    let text = repo.read("package.json")?.unwrap_or_default();
    let package: PackageJson = serde_json::from_str(&text)
        .map_err(|error| invalid("package.json", &format!("not valid JSON: {error}")))?;
    let bun = (repo.has("bun.lockb") || repo.has("bun.lock")) && tools("bun");
    let (install, runner) = if bun {
        ("bun install", "bun run")
    } else {
        need(tools, "npm", "package.json")?;
        (
            if repo.has("package-lock.json") {
                "npm ci"
            } else {
                "npm install"
            },
            "npm run",
        )
    };
    let mut build = install.to_owned();
    if package.scripts.contains_key("build") {
        build.push_str(&format!(" && {runner} build"));
    }
    let run = if package.scripts.contains_key("start") {
        format!("{runner} start")
    } else {
        let main = package
            .main
            .filter(|main| repo.has(main))
            .or_else(|| {
                ["server.js", "index.js"]
                    .iter()
                    .find(|f| repo.has(f))
                    .map(|f| (*f).to_owned())
            })
            .ok_or_else(|| {
                invalid(
                    "package.json",
                    "has no `start` script and no main, server.js or index.js; add a start script",
                )
            })?;
        format!("node {}", shell_word(&main))
    };
    Ok(Partial {
        build: Some(build),
        run: Some(RunPlan::Command(run)),
    })
}

fn python(
    repo: &Repo,
    tools: &dyn Fn(&str) -> bool,
    install: &str,
) -> Result<Partial, DetectError> {
    need(tools, "python3", "a Python project")?;
    let build = format!("python3 -m venv .venv && .venv/bin/pip install --no-cache-dir {install}");
    let run = ["app.py", "main.py"]
        .iter()
        .find(|file| repo.has(file))
        .map(|file| RunPlan::Command(format!(".venv/bin/python {file}")));
    Ok(Partial {
        build: Some(build),
        run,
    })
}

fn go(_: &Repo, tools: &dyn Fn(&str) -> bool) -> Result<Partial, DetectError> {
    need(tools, "go", "go.mod")?;
    Ok(Partial {
        build: Some("go build -o .nanoscale/app .".into()),
        run: Some(RunPlan::Command("./.nanoscale/app".into())),
    })
}

#[derive(Debug, Deserialize)]
struct CargoToml {
    package: Option<CargoPackage>,
    #[serde(default)]
    bin: Vec<CargoPackage>,
}

#[derive(Debug, Deserialize)]
struct CargoPackage {
    name: Option<String>,
}

fn rust(repo: &Repo, tools: &dyn Fn(&str) -> bool) -> Result<Partial, DetectError> {
    need(tools, "cargo", "Cargo.toml")?;
    let text = repo.read("Cargo.toml")?.unwrap_or_default();
    let manifest: CargoToml =
        toml::from_str(&text).map_err(|error| invalid("Cargo.toml", error.message()))?;
    let names: Vec<String> = manifest
        .bin
        .into_iter()
        .filter_map(|bin| bin.name)
        .collect();
    let name = match names.as_slice() {
        [one] => one.clone(),
        [] => manifest
            .package
            .and_then(|package| package.name)
            .ok_or_else(|| invalid("Cargo.toml", "has no [package] name"))?,
        _ => {
            return Err(invalid(
                "Cargo.toml",
                "has several [[bin]] targets; give the service a run command",
            ))
        }
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "Cargo.toml",
            "the binary name has unexpected characters",
        ));
    }
    let locked = if repo.has("Cargo.lock") {
        " --locked"
    } else {
        ""
    };
    Ok(Partial {
        build: Some(format!("cargo build --release{locked}")),
        run: Some(RunPlan::Command(format!("./target/release/{name}"))),
    })
}

/// Quotes a file name for `sh -c` when it needs it.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A release tree, read defensively.
struct Repo {
    root: PathBuf,
}

impl Repo {
    /// A regular file (not a symlink) at `relative`.
    fn has(&self, relative: &str) -> bool {
        std::fs::symlink_metadata(self.root.join(relative)).is_ok_and(|m| m.file_type().is_file())
    }

    /// The file's text, `None` when absent; an error when it is a symlink, not a
    /// regular file, too large or not UTF-8.
    fn read(&self, relative: &str) -> Result<Option<String>, DetectError> {
        let path = self.root.join(relative);
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            return Ok(None);
        };
        if !metadata.file_type().is_file() {
            return Err(invalid(
                relative,
                "must be a regular file in the repository (symlinks are not followed)",
            ));
        }
        if metadata.len() > MAX_MANIFEST {
            return Err(invalid(
                relative,
                &format!("is larger than {} KiB", MAX_MANIFEST / 1024),
            ));
        }
        std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|error| invalid(relative, &format!("cannot be read as UTF-8 text: {error}")))
    }

    /// `value` (from `key` in `file`) as a directory inside the tree.
    fn inside(&self, file: &str, key: &str, value: &str) -> Result<PathBuf, DetectError> {
        let relative = Path::new(value);
        let plain = relative.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !plain {
            return Err(invalid(
                file,
                &format!("`{key}` must be a relative path inside the repository"),
            ));
        }
        let root = self
            .root
            .canonicalize()
            .map_err(|e| invalid(file, &e.to_string()))?;
        let resolved = self
            .root
            .join(relative)
            .canonicalize()
            .map_err(|_| invalid(file, &format!("`{key}` = {value:?} does not exist")))?;
        if !resolved.starts_with(&root) || !resolved.is_dir() {
            return Err(invalid(
                file,
                &format!("`{key}` must name a directory inside the repository"),
            ));
        }
        Ok(relative.to_path_buf())
    }
}

//! The language rules: which file gives a repository away, and what that means
//! for its build and start commands. First match wins.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::repo::{shell_word, Repo};
use super::sources::toml_problem;
use super::{DetectError, RunPlan};

pub(super) struct Rule {
    /// Shown in `detected_by` and in errors: "node (package.json)".
    pub name: &'static str,
    /// Cheap: looks at names only. What the plan reads is checked there.
    pub matches: fn(&Repo) -> bool,
    pub plan: fn(&Repo, &Tools) -> Result<Detected, DetectError>,
}

/// In priority order: a Node app with an `index.html` at its root is a Node app.
pub(super) const RULES: &[Rule] = &[
    Rule {
        name: NODE,
        matches: |repo| repo.has("package.json"),
        plan: node,
    },
    Rule {
        name: PYTHON_REQUIREMENTS,
        matches: |repo| repo.has("requirements.txt"),
        plan: |repo, _| python(repo, PYTHON_REQUIREMENTS, "requirements.txt"),
    },
    Rule {
        name: PYTHON_PYPROJECT,
        matches: |repo| repo.has("pyproject.toml"),
        plan: |repo, _| python(repo, PYTHON_PYPROJECT, "pyproject.toml"),
    },
    Rule {
        name: "go (go.mod)",
        matches: |repo| repo.has("go.mod"),
        plan: go,
    },
    Rule {
        name: RUST,
        matches: |repo| repo.has("Cargo.toml"),
        plan: rust,
    },
    Rule {
        name: "static site (index.html)",
        matches: |repo| repo.has("index.html") || repo.has("public/index.html"),
        plan: static_site,
    },
];

const NODE: &str = "node (package.json)";
const PYTHON_REQUIREMENTS: &str = "python (requirements.txt)";
const PYTHON_PYPROJECT: &str = "python (pyproject.toml)";
const RUST: &str = "rust (Cargo.toml)";

/// Whether a program is installed on this node.
pub(super) struct Tools<'a>(pub &'a dyn Fn(&str) -> bool);

impl Tools<'_> {
    pub fn has(&self, program: &str) -> bool {
        (self.0)(program)
    }
}

/// What a rule would do. The start command is a `Result` because failing to find
/// one matters only when no earlier source gave it.
pub(super) struct Detected {
    pub build: Option<Step>,
    pub run: Result<Run, DetectError>,
}

/// A build command and the program it needs.
pub(super) struct Step {
    pub command: String,
    pub needs: Option<&'static str>,
}

pub(super) struct Run {
    pub plan: RunPlan,
    pub needs: Option<&'static str>,
}

fn step(command: impl Into<String>, needs: &'static str) -> Option<Step> {
    Some(Step {
        command: command.into(),
        needs: Some(needs),
    })
}

fn run(command: impl Into<String>, needs: Option<&'static str>) -> Result<Run, DetectError> {
    Ok(Run {
        plan: RunPlan::Command(command.into()),
        needs,
    })
}

#[derive(Deserialize)]
struct PackageJson {
    main: Option<String>,
    #[serde(default)]
    scripts: BTreeMap<String, String>,
}

fn node(repo: &Repo, tools: &Tools) -> Result<Detected, DetectError> {
    let text = repo.read("package.json")?.unwrap_or_default();
    let package: PackageJson = serde_json::from_str(&text).map_err(|error| DetectError::File {
        file: "package.json".into(),
        problem: format!("is not valid JSON for a package.json: {error}"),
    })?;
    let has_script = |name: &str| {
        package
            .scripts
            .get(name)
            .is_some_and(|script| !script.trim().is_empty())
    };
    // Bun only when the repository chose it and this node has it; npm reads
    // package.json just as well.
    let bun = (repo.has("bun.lockb") || repo.has("bun.lock")) && tools.has("bun");
    let (manager, install) = if bun {
        ("bun", "bun install --frozen-lockfile")
    } else if repo.has("package-lock.json") || repo.has("npm-shrinkwrap.json") {
        ("npm", "npm ci")
    } else {
        ("npm", "npm install")
    };
    let mut build = install.to_owned();
    if has_script("build") {
        build.push_str(&format!(" && {manager} run build"));
    }
    let runtime = if bun { "bun" } else { "node" };
    let start = if has_script("start") {
        let start = if bun { "bun run start" } else { "npm start" };
        run(start, Some(manager))
    } else if let Some(main) = &package.main {
        // `main` may name a file the build creates (dist/server.js), so it need not
        // exist yet; it must stay inside the tree.
        match repo.relative_inside(main) {
            Ok(path) => run(
                format!("{runtime} {}", shell_word(&path.to_string_lossy())),
                Some(runtime),
            ),
            Err(problem) => Err(DetectError::Key {
                file: "package.json".into(),
                key: "main".into(),
                problem,
            }),
        }
    } else if let Some(file) = ["server.js", "index.js"]
        .into_iter()
        .find(|file| repo.is_file(file))
    {
        run(format!("{runtime} {file}"), Some(runtime))
    } else {
        Err(DetectError::NoStartCommand {
            rule: NODE,
            fix: "add a \"start\" script or a \"main\" to package.json (or a server.js), \
                  or give the service a run command"
                .into(),
        })
    };
    Ok(Detected {
        build: step(build, manager),
        run: start,
    })
}

fn python(repo: &Repo, rule: &'static str, manifest: &str) -> Result<Detected, DetectError> {
    // pip will read it; refuse one that leads outside the tree all the same.
    repo.file(manifest)?;
    let install = if manifest == "requirements.txt" {
        "-r requirements.txt"
    } else {
        "."
    };
    let build = format!("python3 -m venv .venv && .venv/bin/pip install --no-cache-dir {install}");
    let start = match ["app.py", "main.py"]
        .into_iter()
        .find(|file| repo.is_file(file))
    {
        Some(file) => run(format!(".venv/bin/python {file}"), Some("python3")),
        None => Err(DetectError::NoStartCommand {
            rule,
            fix: "add an app.py or main.py, a Procfile with `web: <command>` \
                  (for example `web: .venv/bin/gunicorn app:app`), or give the service a run command"
                .into(),
        }),
    };
    Ok(Detected {
        build: step(build, "python3"),
        run: start,
    })
}

fn go(_: &Repo, _: &Tools) -> Result<Detected, DetectError> {
    Ok(Detected {
        build: step("go build -o .nanoscale/app .", "go"),
        run: run("./.nanoscale/app", None),
    })
}

#[derive(Deserialize)]
struct CargoManifest {
    package: Option<CargoPackage>,
    #[serde(default)]
    bin: Vec<CargoTarget>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: Option<String>,
    #[serde(rename = "default-run")]
    default_run: Option<String>,
}

#[derive(Deserialize)]
struct CargoTarget {
    name: Option<String>,
}

fn rust(repo: &Repo, _: &Tools) -> Result<Detected, DetectError> {
    let text = repo.read("Cargo.toml")?.unwrap_or_default();
    let manifest: CargoManifest = toml::from_str(&text).map_err(|error| DetectError::File {
        file: "Cargo.toml".into(),
        problem: format!(
            "is not a valid Cargo manifest: {}",
            toml_problem(&text, &error)
        ),
    })?;
    let build = if repo.has("Cargo.lock") {
        "cargo build --release --locked"
    } else {
        "cargo build --release"
    };
    let start = rust_binary(repo, &manifest)
        .map(|name| format!("./target/release/{name}"))
        .and_then(|command| run(command, None));
    Ok(Detected {
        build: step(build, "cargo"),
        run: start,
    })
}

/// The one binary Cargo builds: `default-run`, the single `[[bin]]`, or the
/// automatic one (`src/main.rs` under the package name, `src/bin/*`).
fn rust_binary(repo: &Repo, manifest: &CargoManifest) -> Result<String, DetectError> {
    let package = manifest.package.as_ref();
    let package_name = package.and_then(|package| package.name.clone());
    let (key, candidates) = if let Some(default) = package.and_then(|p| p.default_run.clone()) {
        ("package.default-run", vec![default])
    } else if !manifest.bin.is_empty() {
        let names = manifest.bin.iter().filter_map(|bin| bin.name.clone());
        ("bin.name", names.collect())
    } else {
        let mut names = Vec::new();
        if let Some(name) = package_name.clone().filter(|_| repo.has("src/main.rs")) {
            names.push(name);
        }
        names.extend(repo.rust_binaries_in("src/bin"));
        if names.is_empty() {
            // Let cargo say what is wrong with a package that has no src/main.rs.
            names.extend(package_name);
        }
        ("package.name", names)
    };
    let name = match candidates.as_slice() {
        [] => {
            return Err(DetectError::NoStartCommand {
                rule: RUST,
                fix: "Cargo.toml has no [package] name (is it a workspace root?); \
                      give the service a run command such as ./target/release/<binary>"
                    .into(),
            })
        }
        [one] => one.clone(),
        several => {
            return Err(DetectError::NoStartCommand {
                rule: RUST,
                fix: format!(
                    "it builds several binaries ({}); set `default-run` in Cargo.toml's \
                     [package], or give the service a run command",
                    several.join(", ")
                ),
            })
        }
    };
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !plain {
        return Err(DetectError::Key {
            file: "Cargo.toml".into(),
            key: key.into(),
            problem: format!("{name:?} is not a binary name (letters, digits, - and _)"),
        });
    }
    Ok(name)
}

fn static_site(repo: &Repo, _: &Tools) -> Result<Detected, DetectError> {
    let root = if repo.has("index.html") {
        "."
    } else {
        "public"
    };
    let index = if root == "." {
        "index.html"
    } else {
        "public/index.html"
    };
    // The traffic layer serves what is under the root; make sure the page itself
    // is a file of this repository before promising a site.
    repo.file(index)?;
    Ok(Detected {
        build: None,
        run: Ok(Run {
            plan: RunPlan::Static {
                root: PathBuf::from(root),
            },
            needs: None,
        }),
    })
}

//! The two files in which a repository says how it builds and runs:
//! `nanoscale.toml` (build, run or static) and `Procfile` (its `web:` line).
use super::repo::Repo;
use super::{DetectError, RunPlan};

const NANOSCALE_TOML: &str = "nanoscale.toml";
const PROCFILE: &str = "Procfile";
const KNOWN_KEYS: &str = "build, run, static";

/// What `nanoscale.toml` decides; `None` leaves the decision to the next source.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RepoConfig {
    /// `Some(None)` for `build = ""`: nothing to build, even where a language
    /// rule would build something.
    pub build: Option<Option<String>>,
    pub run: Option<RunPlan>,
}

/// Reads `nanoscale.toml` at the root, if there is one.
///
/// Parsed key by key from a TOML table rather than through a serde struct with
/// `deny_unknown_fields`: serde's messages point at a line and column but do not
/// always name the key, and every message here names the key and the file.
pub(super) fn nanoscale_toml(repo: &Repo) -> Result<Option<RepoConfig>, DetectError> {
    let Some(text) = repo.read(NANOSCALE_TOML)? else {
        return Ok(None);
    };
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| DetectError::File {
            file: NANOSCALE_TOML.into(),
            problem: format!("is not valid TOML: {}", toml_problem(&text, &error)),
        })?;
    let mut config = RepoConfig::default();
    let mut static_root = None;
    for (key, value) in &table {
        let bad = |problem: String| DetectError::Key {
            file: NANOSCALE_TOML.into(),
            key: key.clone(),
            problem,
        };
        if !["build", "run", "static"].contains(&key.as_str()) {
            return Err(bad(format!(
                "is not a known key (known keys: {KNOWN_KEYS})"
            )));
        }
        let Some(text) = value.as_str() else {
            return Err(bad(format!("must be a string, not {}", value.type_str())));
        };
        match key.as_str() {
            "build" if text.trim().is_empty() => config.build = Some(None),
            "build" => config.build = Some(Some(command(text).map_err(bad)?)),
            "run" if text.trim().is_empty() => {
                return Err(bad(
                    "must not be empty; remove it to detect the run command".into(),
                ))
            }
            "run" => config.run = Some(RunPlan::Command(command(text).map_err(bad)?)),
            // `static`, the one known key left.
            _ => static_root = Some(repo.relative_inside(text).map_err(bad)?),
        }
    }
    if let Some(root) = static_root {
        if config.run.is_some() {
            return Err(DetectError::Key {
                file: NANOSCALE_TOML.into(),
                key: "static".into(),
                problem: "cannot be set together with `run`: a service either runs a process \
                          or is a static site; remove one of them"
                    .into(),
            });
        }
        config.run = Some(RunPlan::Static { root });
    }
    Ok(Some(config))
}

/// The command of the `Procfile`'s `web:` line, if there is a Procfile. Other
/// process types are ignored: a service runs one kind of process.
pub(super) fn procfile_web(repo: &Repo) -> Result<Option<String>, DetectError> {
    let Some(text) = repo.read(PROCFILE)? else {
        return Ok(None);
    };
    let problem = |problem: String| DetectError::File {
        file: PROCFILE.into(),
        problem,
    };
    let mut web = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((kind, process)) = line.split_once(':') else {
            return Err(problem(format!(
                "line {number} is not `<type>: <command>` (for example `web: npm start`)"
            )));
        };
        if kind.trim() != "web" {
            continue;
        }
        if web.is_some() {
            return Err(problem(format!(
                "line {number} is a second `web:` line; keep one"
            )));
        }
        let process = process.trim();
        if process.is_empty() {
            return Err(problem(format!(
                "the `web:` line (line {number}) has no command"
            )));
        }
        web = Some(
            command(process)
                .map_err(|why| problem(format!("the `web:` line (line {number}) {why}")))?,
        );
    }
    web.map(Some).ok_or_else(|| {
        problem(
            "has no `web:` line; add `web: <command that listens on $PORT>`, \
             or give the service a run command"
                .into(),
        )
    })
}

/// A command from a repository file: control characters other than tab and
/// newline would garble logs and events, and NUL cannot be passed to a process.
fn command(text: &str) -> Result<String, String> {
    if text
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        return Err("contains a control character".into());
    }
    Ok(text.trim().to_owned())
}

/// A TOML error on one line: "line 2: invalid string…", without the source excerpt
/// the default rendering adds (the message may end up in a one-line event).
pub(super) fn toml_problem(text: &str, error: &toml::de::Error) -> String {
    let message: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let message = message.join("; ");
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|byte| **byte == b'\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    }
}

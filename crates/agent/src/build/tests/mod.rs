//! Build detection: which source wins (here), each rule (`rules.rs`), hostile
//! repositories (`hostile.rs`) and the fixture apps (`fixtures.rs`).
use std::path::Path;

use super::*;

mod fixtures;
mod hostile;
mod rules;

/// A tree with these files (parents created).
pub(super) fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

pub(super) fn all_tools(_: &str) -> bool {
    true
}

pub(super) fn no_tools(_: &str) -> bool {
    false
}

/// The plan with nothing from the spec and every tool installed.
pub(super) fn plan(dir: &Path) -> BuildPlan {
    detect(dir, None, None, &all_tools).expect("a plan")
}

/// The error with nothing from the spec and every tool installed, as users see it.
pub(super) fn error(dir: &Path) -> String {
    detect(dir, None, None, &all_tools)
        .expect_err("no plan")
        .to_string()
}

pub(super) fn plan_of(dir: &tempfile::TempDir) -> BuildPlan {
    plan(dir.path())
}

pub(super) fn command(text: &str) -> RunPlan {
    RunPlan::Command(text.into())
}

#[test]
fn a_spec_with_both_commands_reads_nothing_and_needs_no_tools() {
    let dir = repo(&[
        ("nanoscale.toml", "this is not toml"),
        ("package.json", "{"),
    ]);
    let plan = detect(dir.path(), Some("make"), Some("./server"), &no_tools).expect("plan");
    assert_eq!(
        plan,
        BuildPlan {
            build: Some("make".into()),
            run: command("./server"),
            detected_by: "spec".into(),
        }
    );
    let missing = detect(
        Path::new("/nonexistent/release"),
        Some("make"),
        Some("./s"),
        &no_tools,
    );
    assert!(missing.is_ok(), "the tree is not even looked at");
}

#[test]
fn a_spec_run_still_gets_a_detected_build_and_the_reverse() {
    let dir = repo(&[("package.json", r#"{"scripts": {"start": "node a.js"}}"#)]);
    let plan = detect(dir.path(), None, Some("node a.js --fast"), &all_tools).expect("plan");
    assert_eq!(plan.build.as_deref(), Some("npm install"));
    assert_eq!(plan.run, command("node a.js --fast"));
    assert_eq!(plan.detected_by, "build: node (package.json), run: spec");

    let plan = detect(dir.path(), Some("npm ci --omit=dev"), None, &all_tools).expect("plan");
    assert_eq!(plan.build.as_deref(), Some("npm ci --omit=dev"));
    assert_eq!(plan.run, command("npm start"));
    assert_eq!(plan.detected_by, "build: spec, run: node (package.json)");
}

#[test]
fn a_rule_that_cannot_find_a_start_command_is_fine_when_something_else_gives_one() {
    let dir = repo(&[("requirements.txt", "flask\n")]);
    assert!(error(dir.path()).contains("app.py or main.py"));
    let plan = detect(dir.path(), None, Some(".venv/bin/flask run"), &all_tools).expect("plan");
    assert!(plan
        .build
        .expect("build")
        .starts_with("python3 -m venv .venv"));
    let dir = repo(&[
        ("requirements.txt", "flask\n"),
        ("Procfile", "web: .venv/bin/gunicorn app:app\n"),
    ]);
    assert_eq!(plan_of(&dir).run, command(".venv/bin/gunicorn app:app"));
}

#[test]
fn spec_beats_nanoscale_toml_beats_procfile_beats_language_rules() {
    let files = [
        ("nanoscale.toml", "build = \"make\"\nrun = \"./bin/app\"\n"),
        ("Procfile", "web: python3 app.py\n"),
        ("requirements.txt", "flask\n"),
        ("app.py", ""),
    ];
    let dir = repo(&files);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("make"));
    assert_eq!(plan.run, command("./bin/app"));
    assert_eq!(plan.detected_by, "nanoscale.toml");

    let spec = detect(dir.path(), Some("true"), Some("./other"), &all_tools).expect("plan");
    assert_eq!(spec.run, command("./other"));
    assert_eq!(spec.detected_by, "spec");

    let dir = repo(&files[1..]);
    let procfile = plan_of(&dir);
    assert_eq!(procfile.run, command("python3 app.py"));
    assert_eq!(
        procfile.build.as_deref(),
        Some("python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt")
    );
    assert_eq!(
        procfile.detected_by,
        "build: python (requirements.txt), run: Procfile"
    );

    let dir = repo(&files[2..]);
    assert_eq!(plan_of(&dir).run, command(".venv/bin/python app.py"));
}

#[test]
fn nanoscale_toml_keys_fill_what_they_give_and_leave_the_rest() {
    let dir = repo(&[
        ("nanoscale.toml", "run = \"node dist/main.js\"\n"),
        ("package.json", r#"{"scripts": {"build": "tsc"}}"#),
        ("package-lock.json", "{}"),
    ]);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("npm ci && npm run build"));
    assert_eq!(plan.run, command("node dist/main.js"));
    assert_eq!(
        plan.detected_by,
        "build: node (package.json), run: nanoscale.toml"
    );
    // `build = ""` turns a detected build off.
    let dir = repo(&[
        ("nanoscale.toml", "build = \"\"\n"),
        ("package.json", r#"{"main": "server.js"}"#),
    ]);
    let plan = plan_of(&dir);
    assert_eq!(plan.build, None);
    assert_eq!(plan.run, command("node server.js"));
    assert_eq!(plan.detected_by, "node (package.json)");
}

#[test]
fn nanoscale_toml_can_make_a_static_site_out_of_a_build() {
    let dir = repo(&[(
        "nanoscale.toml",
        "build = \"npm ci && npm run build\"\nstatic = \"./dist/\"\n",
    )]);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("npm ci && npm run build"));
    assert_eq!(
        plan.run,
        RunPlan::Static {
            root: "dist".into()
        }
    );
    assert_eq!(plan.detected_by, "nanoscale.toml");
    // Not there yet: the build creates it; checked again afterwards.
    assert!(static_root(dir.path(), Path::new("dist"))
        .expect_err("missing")
        .to_string()
        .contains("not a directory after the build"));
    std::fs::create_dir(dir.path().join("dist")).expect("mkdir");
    let resolved = static_root(dir.path(), Path::new("dist")).expect("inside");
    assert!(resolved.ends_with("dist") && resolved.is_absolute());
}

#[test]
fn nanoscale_toml_mistakes_name_the_file_and_the_key() {
    let cases = [
        (
            "biuld = \"make\"\n",
            "nanoscale.toml: `biuld` is not a known key (known keys: build, run, static)",
        ),
        (
            "build = 1\n",
            "nanoscale.toml: `build` must be a string, not integer",
        ),
        (
            "[run]\ncommand = \"x\"\n",
            "nanoscale.toml: `run` must be a string, not table",
        ),
        (
            "run = \"  \"\n",
            "nanoscale.toml: `run` must not be empty; remove it to detect the run command",
        ),
        (
            "run = \"a\\u0000b\"\n",
            "nanoscale.toml: `run` contains a control character",
        ),
        (
            "run = \"x\"\nstatic = \".\"\n",
            "nanoscale.toml: `static` cannot be set together with `run`",
        ),
        (
            "build = \"make\"\nrun = \n",
            "nanoscale.toml: is not valid TOML: line 2: ",
        ),
    ];
    for (text, expected) in cases {
        let dir = repo(&[("nanoscale.toml", text)]);
        let message = error(dir.path());
        assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn procfile_web_line_gives_run_and_other_types_are_ignored() {
    let dir = repo(&[(
        "Procfile",
        "\u{feff}# processes\r\nworker: python3 worker.py\r\n\r\nweb:   python3 app.py --port $PORT  \r\n",
    )]);
    let plan = plan(dir.path());
    assert_eq!(plan.run, command("python3 app.py --port $PORT"));
    assert_eq!(plan.build, None);
    assert_eq!(plan.detected_by, "Procfile");
    let cases = [
        (
            "worker: x\n",
            "Procfile: has no `web:` line; add `web: <command that listens on $PORT>`",
        ),
        (
            "web: a\nweb: b\n",
            "Procfile: line 2 is a second `web:` line",
        ),
        (
            "web:\n",
            "Procfile: the `web:` line (line 1) has no command",
        ),
        (
            "just a command\n",
            "Procfile: line 1 is not `<type>: <command>`",
        ),
    ];
    for (text, expected) in cases {
        let dir = repo(&[("Procfile", text)]);
        let message = error(dir.path());
        assert!(message.starts_with(expected), "{text:?} gave {message:?}");
    }
    // A Procfile without `web:` does not matter when the run comes from elsewhere.
    let dir = repo(&[("Procfile", "worker: x\n")]);
    assert!(detect(dir.path(), None, Some("./web"), &all_tools).is_ok());
}

#[test]
fn nothing_recognizable_says_what_was_looked_for_and_how_to_fix_it() {
    let dir = repo(&[("README.md", "hello"), ("main.c", "int main;")]);
    let message = error(dir.path());
    assert!(message.contains("found no nanoscale.toml, Procfile, package.json"));
    assert!(message.contains("give the service a run command"));
    assert!(message.contains("Procfile with a `web:` line"));
    // A build alone does not make a plan.
    let dir = repo(&[("nanoscale.toml", "build = \"make\"\n")]);
    assert_eq!(
        detect(dir.path(), None, None, &all_tools),
        Err(DetectError::NothingDetected)
    );
}

#[test]
fn a_missing_release_directory_is_an_error_not_a_panic() {
    let error = detect(
        Path::new("/nonexistent/release"),
        None,
        Some("./s"),
        &all_tools,
    )
    .expect_err("no tree");
    assert!(matches!(error, DetectError::ReleaseDir { .. }), "{error}");
}

#[test]
fn plans_serialize_for_the_agent_store() {
    let plan = BuildPlan {
        build: None,
        run: RunPlan::Static {
            root: "public".into(),
        },
        detected_by: "static site (index.html)".into(),
    };
    let json = serde_json::to_string(&plan).expect("json");
    assert_eq!(
        json,
        r#"{"build":null,"run":{"static":{"root":"public"}},"detected_by":"static site (index.html)"}"#
    );
    assert_eq!(
        serde_json::from_str::<BuildPlan>(&json).expect("back"),
        plan
    );
}

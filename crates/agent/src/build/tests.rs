use std::path::Path;

use super::*;

fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn all_tools(_: &str) -> bool {
    true
}

fn no_tools(_: &str) -> bool {
    false
}

fn plan(dir: &Path) -> BuildPlan {
    detect(dir, None, None, &all_tools).expect("detected")
}

fn command(text: &str) -> RunPlan {
    RunPlan::Command(text.into())
}

#[test]
fn the_spec_wins_and_needs_nothing_from_the_repository() {
    let dir = repo(&[("nanoscale.toml", "this is not toml")]);
    let plan = detect(dir.path(), Some("make"), Some("./server"), &no_tools).expect("plan");
    assert_eq!(plan.build.as_deref(), Some("make"));
    assert_eq!(plan.run, command("./server"));
    assert_eq!(plan.detected_by, "spec");
}

#[test]
fn a_spec_run_still_gets_a_detected_build() {
    let dir = repo(&[("package.json", r#"{"scripts": {"start": "node a.js"}}"#)]);
    let plan = detect(dir.path(), None, Some("node a.js --fast"), &all_tools).expect("plan");
    assert_eq!(plan.build.as_deref(), Some("npm install"));
    assert_eq!(plan.run, command("node a.js --fast"));
    assert_eq!(plan.detected_by, "spec + node (package.json)");
}

#[test]
fn nanoscale_toml_beats_procfile_which_beats_language_rules() {
    let dir = repo(&[
        ("nanoscale.toml", "build = \"make\"\nrun = \"./bin/app\"\n"),
        ("Procfile", "web: python3 app.py\n"),
        ("requirements.txt", "flask\n"),
    ]);
    assert_eq!(plan(dir.path()).run, command("./bin/app"));
    let dir = repo(&[
        ("Procfile", "worker: x\nweb: gunicorn app:app\n"),
        ("requirements.txt", "flask\n"),
    ]);
    let plan = plan(dir.path());
    assert_eq!(plan.run, command("gunicorn app:app"));
    assert!(plan
        .build
        .expect("build")
        .contains("pip install --no-cache-dir -r requirements.txt"));
    assert_eq!(plan.detected_by, "Procfile + python (requirements.txt)");
}

#[test]
fn node_rules_pick_the_installer_the_build_script_and_the_start() {
    let dir = repo(&[
        (
            "package.json",
            r#"{"scripts": {"build": "vite build", "start": "node dist/server.js"}}"#,
        ),
        ("package-lock.json", "{}"),
    ]);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("npm ci && npm run build"));
    assert_eq!(plan.run, command("npm run start"));
    let dir = repo(&[("package.json", r#"{"main": "srv.js"}"#), ("srv.js", "")]);
    assert_eq!(super::tests::plan(dir.path()).run, command("node srv.js"));
    let dir = repo(&[("package.json", "{}"), ("bun.lock", "")]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("no entry point");
    assert!(error.to_string().contains("start script"), "{error}");
    let dir = repo(&[("package.json", "{nope")]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("bad json");
    assert!(
        error
            .to_string()
            .starts_with("package.json: not valid JSON"),
        "{error}"
    );
}

#[test]
fn go_rust_python_and_static_rules() {
    let dir = repo(&[("go.mod", "module x\n")]);
    assert_eq!(plan(dir.path()).run, command("./.nanoscale/app"));
    let dir = repo(&[
        ("Cargo.toml", "[package]\nname = \"hello-web\"\n"),
        ("Cargo.lock", ""),
    ]);
    let plan_rust = plan(dir.path());
    assert_eq!(
        plan_rust.build.as_deref(),
        Some("cargo build --release --locked")
    );
    assert_eq!(plan_rust.run, command("./target/release/hello-web"));
    let dir = repo(&[("pyproject.toml", "[project]\nname='x'\n"), ("main.py", "")]);
    let plan_python = plan(dir.path());
    assert!(plan_python
        .build
        .expect("build")
        .ends_with("pip install --no-cache-dir ."));
    assert_eq!(plan_python.run, command(".venv/bin/python main.py"));
    let dir = repo(&[("public/index.html", "<h1>hi</h1>")]);
    assert_eq!(
        plan(dir.path()).run,
        RunPlan::Static {
            root: "public".into()
        }
    );
}

#[test]
fn missing_tools_and_undecidable_repositories_say_how_to_fix_it() {
    let dir = repo(&[("go.mod", "module x\n")]);
    let error = detect(dir.path(), None, None, &no_tools).expect_err("no go");
    assert!(error.to_string().contains("go is not installed"), "{error}");
    let dir = repo(&[("README.md", "hello")]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("nothing");
    assert!(
        error.to_string().contains("give the service a run command"),
        "{error}"
    );
    let dir = repo(&[("Procfile", "worker: x\n")]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("no web");
    assert!(error.to_string().contains("web:"), "{error}");
}

#[test]
fn hostile_repositories_are_refused() {
    // A manifest that is a symlink to a system file is never read.
    let dir = repo(&[]);
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("package.json")).expect("symlink");
    assert!(!plan_ok(dir.path()));
    let dir = repo(&[]);
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("Procfile")).expect("symlink");
    let error = detect(dir.path(), None, None, &all_tools).expect_err("symlink");
    assert!(
        error.to_string().contains("symlinks are not followed"),
        "{error}"
    );
    // `static` may not leave the tree, by `..` or through a symlink.
    let dir = repo(&[("nanoscale.toml", "static = \"../..\"\n")]);
    assert!(!plan_ok(dir.path()));
    let dir = repo(&[("nanoscale.toml", "static = \"out\"\n")]);
    std::os::unix::fs::symlink("/etc", dir.path().join("out")).expect("symlink");
    let error = detect(dir.path(), None, None, &all_tools).expect_err("escape");
    assert!(
        error.to_string().contains("inside the repository"),
        "{error}"
    );
    // Unknown keys, both run and static, and huge files are clear errors.
    let dir = repo(&[("nanoscale.toml", "biuld = \"make\"\n")]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("typo");
    assert!(error.to_string().contains("biuld"), "{error}");
    let dir = repo(&[("nanoscale.toml", "run = \"x\"\nstatic = \".\"\n")]);
    assert!(!plan_ok(dir.path()));
    let dir = repo(&[("Procfile", &"x".repeat(2 * 1024 * 1024))]);
    let error = detect(dir.path(), None, None, &all_tools).expect_err("huge");
    assert!(error.to_string().contains("larger than"), "{error}");
}

fn plan_ok(dir: &Path) -> bool {
    detect(dir, None, None, &all_tools).is_ok()
}

#[test]
fn every_fixture_app_gets_the_plan_its_readme_describes() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nanoscale/tests/fixtures/apps");
    let expected = [
        ("python-http", None, "python3 app.py"),
        ("node-http", Some("npm install"), "npm run start"),
        ("crash-at-start", None, "python3 app.py"),
        ("never-healthy", None, "python3 app.py"),
        (
            "fail-build",
            Some("echo building; echo 'error: intentional build failure' >&2; exit 1"),
            "python3 app.py",
        ),
    ];
    for (fixture, build, run) in expected {
        let plan = plan(&fixtures.join(fixture));
        assert_eq!(plan.build.as_deref(), build, "{fixture}");
        assert_eq!(plan.run, command(run), "{fixture}");
    }
}

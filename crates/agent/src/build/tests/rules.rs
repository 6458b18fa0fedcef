//! One rule at a time.
use super::*;

#[test]
fn node_installs_with_npm_ci_when_locked_and_builds_only_with_a_build_script() {
    let dir = repo(&[
        (
            "package.json",
            r#"{"scripts": {"build": "vite build", "start": "node dist/server.js"}}"#,
        ),
        ("package-lock.json", "{}"),
    ]);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("npm ci && npm run build"));
    assert_eq!(plan.run, command("npm start"));
    assert_eq!(plan.detected_by, "node (package.json)");

    let dir = repo(&[(
        "package.json",
        r#"{"scripts": {"start": "node s.js", "build": " "}}"#,
    )]);
    assert_eq!(plan_of(&dir).build.as_deref(), Some("npm install"));
}

#[test]
fn node_starts_main_then_server_js_then_index_js() {
    let dir = repo(&[("package.json", r#"{"main": "./dist/srv.js"}"#)]);
    assert_eq!(
        plan_of(&dir).run,
        command("node dist/srv.js"),
        "main may not exist before the build"
    );
    let dir = repo(&[("package.json", r#"{"main": "my server.js"}"#)]);
    assert_eq!(plan_of(&dir).run, command("node 'my server.js'"));
    let dir = repo(&[("package.json", "{}"), ("index.js", ""), ("server.js", "")]);
    assert_eq!(plan_of(&dir).run, command("node server.js"));
    let dir = repo(&[("package.json", "{}"), ("index.js", "")]);
    assert_eq!(plan_of(&dir).run, command("node index.js"));
    let dir = repo(&[("package.json", r#"{"name": "x"}"#)]);
    assert_eq!(
        error(dir.path()),
        "node (package.json): cannot tell how to start the app: add a \"start\" script or a \
         \"main\" to package.json (or a server.js), or give the service a run command"
    );
}

#[test]
fn node_uses_bun_only_when_locked_with_bun_and_bun_is_installed() {
    let files = [
        (
            "package.json",
            r#"{"scripts": {"build": "b", "start": "s"}}"#,
        ),
        ("bun.lockb", "\0binary"),
    ];
    let dir = repo(&files);
    let plan = plan(dir.path());
    assert_eq!(
        plan.build.as_deref(),
        Some("bun install --frozen-lockfile && bun run build")
    );
    assert_eq!(plan.run, command("bun run start"));
    let npm_only = |tool: &str| tool == "npm";
    let plan = detect(dir.path(), None, None, &npm_only).expect("falls back to npm");
    assert_eq!(plan.build.as_deref(), Some("npm install && npm run build"));
    let dir = repo(&[("package.json", r#"{"main": "a.js"}"#), ("bun.lock", "{}")]);
    assert_eq!(plan_of(&dir).run, command("bun a.js"));
}

#[test]
fn python_builds_a_virtualenv_from_requirements_or_pyproject() {
    let dir = repo(&[("requirements.txt", "flask\n"), ("app.py", "")]);
    let plan = plan(dir.path());
    assert_eq!(
        plan.build.as_deref(),
        Some("python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt")
    );
    assert_eq!(plan.run, command(".venv/bin/python app.py"));
    assert_eq!(plan.detected_by, "python (requirements.txt)");

    let dir = repo(&[
        ("pyproject.toml", "[project]\nname = 'x'\n"),
        ("main.py", ""),
    ]);
    let plan = plan_of(&dir);
    assert_eq!(
        plan.build.as_deref(),
        Some("python3 -m venv .venv && .venv/bin/pip install --no-cache-dir .")
    );
    assert_eq!(plan.run, command(".venv/bin/python main.py"));
    assert_eq!(plan.detected_by, "python (pyproject.toml)");

    let dir = repo(&[("pyproject.toml", ""), ("src/app.py", "")]);
    assert!(error(dir.path()).starts_with(
        "python (pyproject.toml): cannot tell how to start the app: add an app.py or main.py, a Procfile"
    ));
}

#[test]
fn go_builds_into_the_release_and_runs_the_binary() {
    let dir = repo(&[
        ("go.mod", "module example.com/x\n"),
        ("main.go", "package main"),
    ]);
    let plan = plan(dir.path());
    assert_eq!(plan.build.as_deref(), Some("go build -o .nanoscale/app ."));
    assert_eq!(plan.run, command("./.nanoscale/app"));
    assert_eq!(plan.detected_by, "go (go.mod)");
}

#[test]
fn rust_runs_the_one_binary_it_builds() {
    let dir = repo(&[
        ("Cargo.toml", "[package]\nname = \"hello-web\"\n"),
        ("Cargo.lock", ""),
        ("src/main.rs", ""),
    ]);
    let plan = plan(dir.path());
    assert_eq!(
        plan.build.as_deref(),
        Some("cargo build --release --locked")
    );
    assert_eq!(plan.run, command("./target/release/hello-web"));
    assert_eq!(plan.detected_by, "rust (Cargo.toml)");

    let dir = repo(&[(
        "Cargo.toml",
        "[package]\nname = \"lib\"\n[[bin]]\nname = \"server\"\npath = \"src/server.rs\"\n",
    )]);
    let plan = plan_of(&dir);
    assert_eq!(plan.build.as_deref(), Some("cargo build --release"));
    assert_eq!(plan.run, command("./target/release/server"));

    let dir = repo(&[
        ("Cargo.toml", "[package]\nname = \"x\"\n"),
        ("src/bin/api.rs", ""),
    ]);
    assert_eq!(plan_of(&dir).run, command("./target/release/api"));
    let dir = repo(&[(
        "Cargo.toml",
        "[package]\nname = \"x\"\ndefault-run = \"web\"\n[[bin]]\nname = \"web\"\n[[bin]]\nname = \"cli\"\n",
    )]);
    assert_eq!(plan_of(&dir).run, command("./target/release/web"));
}

#[test]
fn rust_with_several_binaries_or_no_package_asks_for_a_run_command() {
    let dir = repo(&[
        ("Cargo.toml", "[package]\nname = \"x\"\n"),
        ("src/main.rs", ""),
        ("src/bin/migrate.rs", ""),
        ("src/bin/worker/main.rs", ""),
    ]);
    assert_eq!(
        error(dir.path()),
        "rust (Cargo.toml): cannot tell how to start the app: it builds several binaries \
         (x, migrate, worker); set `default-run` in Cargo.toml's [package], or give the service a run command"
    );
    let dir = repo(&[("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n")]);
    assert!(error(dir.path()).contains("has no [package] name (is it a workspace root?)"));
    // The build alone is still detected for a spec that gives the run.
    let plan = detect(dir.path(), None, Some("./target/release/a"), &all_tools).expect("plan");
    assert_eq!(plan.build.as_deref(), Some("cargo build --release"));
    let dir = repo(&[("Cargo.toml", "[package]\nname = \"x; rm -rf ~\"\n")]);
    assert!(error(dir.path())
        .starts_with("Cargo.toml: `package.name` \"x; rm -rf ~\" is not a binary name"));
    let dir = repo(&[("Cargo.toml", "[package\n")]);
    assert!(error(dir.path()).starts_with("Cargo.toml: is not a valid Cargo manifest: line 1: "));
}

#[test]
fn static_sites_are_served_from_the_root_or_public() {
    let dir = repo(&[("index.html", "<h1>hi</h1>"), ("style.css", "")]);
    let plan = plan(dir.path());
    assert_eq!(plan.run, RunPlan::Static { root: ".".into() });
    assert_eq!(plan.build, None);
    assert_eq!(plan.detected_by, "static site (index.html)");
    let dir = repo(&[("public/index.html", "<h1>hi</h1>")]);
    assert_eq!(
        plan_of(&dir).run,
        RunPlan::Static {
            root: "public".into()
        }
    );
    // A language rule comes first: a Vite app has an index.html at its root.
    let dir = repo(&[
        ("index.html", ""),
        ("package.json", r#"{"scripts":{"start":"vite"}}"#),
    ]);
    assert_eq!(plan_of(&dir).run, command("npm start"));
}

#[test]
fn missing_tools_are_named_unless_the_spec_gives_both_commands() {
    let cases = [
        (vec![("package.json", r#"{"main": "a.js"}"#)], "npm"),
        (vec![("requirements.txt", ""), ("app.py", "")], "python3"),
        (vec![("pyproject.toml", ""), ("app.py", "")], "python3"),
        (vec![("go.mod", "module x\n")], "go"),
        (vec![("Cargo.toml", "[package]\nname = \"x\"\n")], "cargo"),
    ];
    for (files, tool) in cases {
        let dir = repo(&files);
        let message = detect(dir.path(), None, None, &no_tools)
            .expect_err("missing tool")
            .to_string();
        assert!(
            message.contains(&format!(
                "needs `{tool}`, which is not installed on this node"
            )) && message.ends_with("give the service both a build and a run command"),
            "{message}"
        );
        assert!(detect(dir.path(), Some("make"), Some("./app"), &no_tools).is_ok());
    }
    // Only what is used needs a tool: a Go binary runs without `go`.
    let dir = repo(&[("go.mod", "module x\n")]);
    let plan = detect(dir.path(), Some("make app"), None, &no_tools).expect("plan");
    assert_eq!(plan.run, command("./.nanoscale/app"));
    // `node server.js` needs node, not npm.
    let dir = repo(&[("package.json", r#"{"main": "server.js"}"#)]);
    let node_only = |tool: &str| tool == "node";
    let plan = detect(dir.path(), Some("true"), None, &node_only).expect("plan");
    assert_eq!(plan.run, command("node server.js"));
    // A static site needs nothing.
    let dir = repo(&[("index.html", "")]);
    assert!(detect(dir.path(), None, None, &no_tools).is_ok());
}

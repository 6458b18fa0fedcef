//! The fixture apps the whole-system tests deploy get the plan their README says.
use std::path::PathBuf;

use super::*;

const VENV_REQUIREMENTS: &str =
    "python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt";

/// Build command, run plan, `detected_by`.
type Expected = (Option<&'static str>, RunPlan, &'static str);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nanoscale/tests/fixtures/apps")
}

#[test]
fn every_fixture_app_gets_its_intended_plan() {
    let procfile = || (None, command("python3 app.py"), "Procfile");
    let expected: Vec<(&str, Expected)> = vec![
        ("python-http", procfile()),
        (
            "node-http",
            (
                Some("npm install"),
                command("npm start"),
                "node (package.json)",
            ),
        ),
        (
            "node-deps",
            (Some("npm ci"), command("npm start"), "node (package.json)"),
        ),
        (
            "python-deps",
            (
                Some(VENV_REQUIREMENTS),
                command(".venv/bin/python app.py"),
                "python (requirements.txt)",
            ),
        ),
        (
            "static-site",
            (
                None,
                RunPlan::Static { root: ".".into() },
                "static site (index.html)",
            ),
        ),
        ("crash-at-start", procfile()),
        ("crash-later", procfile()),
        ("never-healthy", procfile()),
        ("ignore-sigterm", procfile()),
        ("leak-memory", procfile()),
        ("escape-attempts", procfile()),
        ("ticker", procfile()),
        ("volume-counter", procfile()),
        ("fork-bomb", (None, command("sh bomb.sh"), "Procfile")),
        (
            "fail-build",
            (
                Some(
                    "echo building; head -c 20000 /dev/zero | tr '\\0' x; echo; \
                     echo 'error: intentional build failure' >&2; exit 1",
                ),
                command("python3 app.py"),
                "nanoscale.toml",
            ),
        ),
    ];
    for (fixture, (build, run, detected_by)) in &expected {
        let plan = plan(&fixtures().join(fixture));
        assert_eq!(plan.build.as_deref(), *build, "{fixture}");
        assert_eq!(&plan.run, run, "{fixture}");
        assert_eq!(plan.detected_by, *detected_by, "{fixture}");
    }
    // A new fixture gets a line here.
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

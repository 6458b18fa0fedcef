//! The CLI end to end: the real binary's verbs against a real control plane, with
//! its config file in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // runs the binary under test
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{GitRepo, TestServer};
use serde_json::{json, Value};

struct Cli<'a> {
    config: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .args(args)
            .env("NANOSCALE_CLI_CONFIG", self.config)
            .env_remove("NANOSCALE_TOKEN")
            .env_remove("NANOSCALE_URL")
            .envs(env.iter().copied())
            .output()
            .expect("run nanoscale")
    }

    /// Runs with `--output json`, asserts success and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "{args:?}: not JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

#[tokio::test]
async fn a_user_drives_the_control_plane_from_the_cli() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cli").join("config.toml");
    let cli = Cli { config: &config };

    let output = cli.run(&["whoami"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "not logged in yet is a usage error"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("nanoscale login"));

    let output = cli.run_with(
        &["setup", &server.url],
        &[("NANOSCALE_PASSWORD", "correct-horse-battery")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = std::fs::metadata(&config)
        .expect("config written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    assert_eq!(cli.json(&["whoami"])["user"]["username"], "admin");

    let repo = GitRepo::new();
    cli.json(&["project", "create", "shop"]);
    let service = cli.json(&[
        "service",
        "create",
        "web",
        "--project",
        "shop",
        "--git",
        &repo.file_url(),
        "--route",
        "shop.example.com/api",
        "--volume",
        "uploads:storage/app",
        "--volume",
        "data",
    ]);
    assert_eq!(service["routes"][0]["host"], "shop.example.com");
    assert_eq!(
        service["volumes"],
        json!([{"name": "uploads", "path": "storage/app"}, {"name": "data", "path": "data"}])
    );
    assert_eq!(service["routes"][0]["path"], "/api");
    cli.json(&["env", "set", "web", "MODE=production", "LEVEL=3"]);
    let env = cli.json(&["env", "ls", "web"]);
    assert_eq!(env.as_array().map(Vec::len), Some(2), "{env}");
    cli.json(&["env", "set", "web", "TOKEN=s3cret-value", "--secret"]);
    let env = cli.json(&["env", "ls", "web"]);
    assert!(!env.to_string().contains("s3cret-value"), "{env}");
    let revealed = cli.run(&["env", "reveal", "web", "TOKEN"]);
    assert_eq!(String::from_utf8_lossy(&revealed.stdout), "s3cret-value\n");
    let missing = cli.run(&["env", "reveal", "web", "NOPE"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nanoscale env ls web"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    cli.run(&["env", "unset", "web", "TOKEN"]);

    let first = cli.json(&["deploy", "web"]);
    assert_eq!(first["commit"].as_str(), Some(repo.second.as_str()));
    let tagged = cli.json(&["deploy", "web", "--ref", "v1"]);
    assert_eq!(tagged["commit"].as_str(), Some(repo.first.as_str()));
    let back = cli.json(&["rollback", "web", "1"]);
    assert_eq!(back["number"], 3);
    let releases = cli.json(&["releases", "web"]);
    assert_eq!(releases.as_array().map(Vec::len), Some(3));

    let table = cli.run(&["releases", "web"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().count() >= 4 && text.contains("queued"),
        "a table with a header: {text}"
    );

    let events = cli.json(&["events", "--kind", "release."]);
    assert_eq!(events.as_array().map(Vec::len), Some(3));
    let nodes = cli.json(&["node", "ls"]);
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    let node_name = nodes[0]["name"].as_str().expect("name").to_owned();
    for bad in [&["--mode", "D"][..], &["--ssh-from", "10.0.0.0/99"], &[]] {
        let mut args = vec!["node", "security", node_name.as_str()];
        args.extend_from_slice(bad);
        let output = cli.run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let updated = cli.json(&["node", "security", &node_name, "--ssh-from", "10.0.0.0/8"]);
    assert_eq!(updated["ssh_from"], json!(["10.0.0.0/8"]), "{updated}");
    assert_eq!(updated["security_mode"], "A", "{updated}");

    // Errors name the problem and exit non-zero.
    let output = cli.run(&["project", "create", "Not_A_Label"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("name"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = cli.run(&["deploy", "no-such-service"]);
    assert_ne!(output.status.code(), Some(0));

    // A token made by the CLI works for automation, and revoking it locks it out.
    let output = cli.run(&["token", "create", "ci", "--role", "viewer"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        secret.starts_with("nsk_"),
        "the secret alone on stdout: {secret}"
    );
    let other = Cli {
        config: &dir.path().join("other.toml"),
    };
    let as_ci = other.run_with(
        &["--url", &server.url, "--output", "json", "whoami"],
        &[("NANOSCALE_TOKEN", &secret)],
    );
    assert!(
        as_ci.status.success(),
        "{}",
        String::from_utf8_lossy(&as_ci.stderr)
    );
    let denied = other.run_with(
        &["--url", &server.url, "project", "create", "nope"],
        &[("NANOSCALE_TOKEN", &secret)],
    );
    assert_eq!(
        denied.status.code(),
        Some(1),
        "a viewer token cannot create projects"
    );

    let output = cli.run(&["logout"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(cli.run(&["whoami"]).status.code(), Some(2));
}

#[test]
fn a_world_readable_token_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "url = \"http://127.0.0.1:9\"\ntoken = \"nsk_x\"\n").expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = Cli { config: &config }.run(&["whoami"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

/// What `child` printed once it ended by itself within `secs`; killed and a
/// failure with `failure` if it did not.
async fn exits_within(child: std::process::Child, secs: u64, failure: &str) -> Output {
    let pid = child.id();
    tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap_or_else(|_| {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("{failure}")
    })
    .expect("waiting task")
    .expect("wait for the command")
}

/// `nanoscale logs -f` and `logs --build N -f` against a real agent: each line
/// once, in order, as it comes; the build's follow ends with the build.
#[tokio::test]
async fn logs_follow_a_running_app_and_a_build() {
    use std::io::{BufRead, BufReader};
    let (_keep, repo, commits) = common::fixture_repo(&[("ticker", "v1")]);
    let server = TestServer::start_with_agent();
    let token = server.bootstrap().await;
    let project = server
        .post(
            "/api/v1/projects",
            &token,
            serde_json::json!({"name": "follow"}),
        )
        .await;
    let project = project["id"].as_str().unwrap().to_owned();
    let service = server
        .post(
            &format!("/api/v1/projects/{project}/services"),
            &token,
            serde_json::json!({
                "name": "ticker",
                "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
                // A build that takes a while, so its log is followed while it grows.
                "build": "for i in 1 2 3 4 5 6; do echo build line $i; sleep 0.4; done; seq -f 'burst %g' 1 3000; echo build line 7",
            }),
        )
        .await;
    let service = service["id"].as_str().unwrap().to_owned();
    server
        .post(
            &format!("/api/v1/services/{service}/deploy"),
            &token,
            serde_json::json!({}),
        )
        .await;
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .args(args)
            .env("NANOSCALE_URL", &server.url)
            .env("NANOSCALE_TOKEN", &token)
            .env("NANOSCALE_CLI_CONFIG", "/nonexistent/config.toml")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nanoscale")
    };
    // The build's log, followed from its start: every line, in order, and the
    // command ends by itself when the build does.
    let build = cli(&["logs", "ticker", "--build", "1", "-f"]);
    let output = exits_within(build, 120, "logs --build 1 -f did not end with the build").await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once("build line ").map(|(_, n)| n))
        .collect();
    assert_eq!(lines, ["1", "2", "3", "4", "5", "6", "7"], "{text}");
    // A burst is streamed whole, not sampled: every line once, in order.
    let burst: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            line.split_once("burst ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect();
    assert!(
        burst.iter().copied().eq(1..=3000),
        "{} burst lines, first {:?}",
        burst.len(),
        burst.first()
    );

    // The app's log: new ticks keep coming, each once, in order.
    common::wait_for("the ticker running", async || {
        let instances = server
            .get(&format!("/api/v1/services/{service}/instances"), &token)
            .await;
        instances
            .as_array()?
            .iter()
            .any(|i| i["status"] == "healthy")
            .then_some(())
    })
    .await;
    let mut follow = cli(&["logs", "ticker", "-f", "--tail", "1"]);
    let stdout = follow.stdout.take().unwrap();
    // Lines are read to the end (the command must not meet a closed pipe); the
    // first 15 ticks are handed over as soon as they are there.
    let (first, got_first) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut ticks = Vec::new();
        let mut first = Some(first);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, n)) = line.split_once("tick ") {
                ticks.push(n.trim().parse::<u64>().expect("a tick number"));
            }
            if ticks.len() == 15 {
                if let Some(first) = first.take() {
                    let _ = first.send(ticks.clone());
                }
            }
        }
    });
    let ticks = tokio::time::timeout(std::time::Duration::from_secs(30), got_first)
        .await
        .unwrap_or_else(|_| {
            let _ = follow.kill();
            panic!("15 ticks within 30 s")
        })
        .unwrap();
    assert!(
        ticks.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "each tick once and in order: {ticks:?}"
    );
    // Removing the service ends the stream, and the command with it.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/services/{service}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let output = exits_within(follow, 15, "logs -f went on after its service was removed").await;
    let _ = reader.join();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("the service was removed"), "{stderr}");
}

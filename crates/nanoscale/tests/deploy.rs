//! Whole-system tests of the deploy engine: the real `nanoscale up` (control plane +
//! agent + shims), real git repositories served by `git daemon` and `file://`, real
//! app processes from `tests/fixtures/apps`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
#![allow(clippy::disallowed_methods)] // tests signal processes directly

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fixture_repo, wait_for, GitDaemon, SwapOff, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

struct App<'a> {
    server: &'a TestServer,
    token: String,
    service: String,
}

impl App<'_> {
    async fn releases(&self) -> Vec<Value> {
        let body = self
            .server
            .get(
                &format!("/api/v1/services/{}/releases", self.service),
                &self.token,
            )
            .await;
        body.as_array().cloned().unwrap_or_default()
    }

    async fn release(&self, number: i64) -> Value {
        self.releases()
            .await
            .into_iter()
            .find(|r| r["number"] == number)
            .expect("release exists")
    }

    async fn instances(&self) -> Vec<Value> {
        let body = self
            .server
            .get(
                &format!("/api/v1/services/{}/instances", self.service),
                &self.token,
            )
            .await;
        body.as_array().cloned().unwrap_or_default()
    }

    async fn deploy(&self, git_ref: &str) -> i64 {
        let release = self
            .server
            .post(
                &format!("/api/v1/services/{}/deploy", self.service),
                &self.token,
                json!({"ref": git_ref}),
            )
            .await;
        release["number"].as_i64().expect("number")
    }

    /// Waits until release `number` is `status`; returns it.
    async fn wait_release(&self, number: i64, status: &str) -> Value {
        wait_for(&format!("release {number} {status}"), async || {
            let release = self.release(number).await;
            (release["status"] == status).then_some(release)
        })
        .await
    }

    /// The single healthy instance of release `number`.
    async fn healthy_instance(&self, number: i64) -> Value {
        wait_for(
            &format!("a healthy instance of release {number}"),
            async || {
                let instances = self.instances().await;
                instances
                    .into_iter()
                    .find(|i| i["release_number"] == number && i["status"] == "healthy")
            },
        )
        .await
    }
}

async fn get_text(port: u64, path: &str) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

fn kill9(pid: i64) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 {pid}");
}

fn pid_file(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .expect("pid file")
        .split_whitespace()
        .next()
        .expect("pid")
        .parse()
        .expect("numeric pid")
}

/// A project `shop` with the service `spec`, ready to deploy.
async fn deployable<'a>(server: &'a TestServer, token: &str, spec: Value) -> App<'a> {
    App {
        server,
        token: token.to_owned(),
        service: create_service(server, token, spec).await,
    }
}

/// The `volume-counter` fixture as service `name`, its count in a volume.
async fn counter_app<'a>(
    server: &'a TestServer,
    token: &str,
    name: &str,
    repo: &Path,
    commit: &str,
) -> App<'a> {
    let spec = json!({
        "name": name,
        "source": {"git": format!("file://{}", repo.display()), "ref": commit},
        "volumes": [{"name": "data", "path": "state/data"}],
        "health": {"path": "/healthz", "start_period_secs": 20, "interval_secs": 1},
    });
    deployable(server, token, spec).await
}

/// `up` with its agent on `data`, the agent's environment given, and an admin token.
async fn node_with_env(data: &Path, env: &[(&str, &str)]) -> (TestServer, String) {
    let server = TestServer::start_with_agent_logging(data, env, std::process::Stdio::inherit());
    let token = server.bootstrap().await;
    (server, token)
}

async fn create_service(server: &TestServer, token: &str, spec: Value) -> String {
    let project = server
        .post("/api/v1/projects", token, json!({"name": "shop"}))
        .await;
    let service = server
        .post(
            &format!(
                "/api/v1/projects/{}/services",
                project["id"].as_str().expect("id")
            ),
            token,
            spec,
        )
        .await;
    service["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn python_app_over_git_daemon_deploys_heals_redeploys_rolls_back_and_is_removed() {
    let (_keep, repo, commits) = fixture_repo(&[("python-http", "v1"), ("python-http", "v2")]);
    let daemon = GitDaemon::serve(repo.parent().expect("parent"));
    let server = TestServer::start_with_agent();
    let token = server.bootstrap().await;
    let app = deployable(&server, &token, json!({
            "name": "web",
            "source": {"git": format!("git://127.0.0.1:{}/app.git", daemon.port), "ref": commits[0]},
            "env": {"GREETING": "hi $(touch /tmp/nanoscale-pwned) `id`; echo"},
            "health": {"path": "/healthz", "start_period_secs": 20, "interval_secs": 1},
        })).await;
    let service = app.service.clone();

    // Deploy: built, started, healthy, live; it answers with its version.
    let first = app.deploy(&commits[0]).await;
    app.wait_release(first, "live").await;
    let instance = app.healthy_instance(first).await;
    let port = instance["port"].as_u64().expect("port");
    let body = get_text(port, "/").await.expect("app answers");
    assert!(body.contains("v1"), "{body}");
    // Env values reach the app verbatim, never through a shell.
    assert!(
        body.contains("hi $(touch /tmp/nanoscale-pwned) `id`; echo"),
        "{body}"
    );
    assert!(!Path::new("/tmp/nanoscale-pwned").exists());
    // Its output is in the logs API, with the instance and a timestamp.
    let logs = wait_for("the app's first log line", async || {
        let logs = server
            .get(&format!("/api/v1/services/{service}/logs?tail=10"), &token)
            .await;
        logs.to_string()
            .contains("listening on 127.0.0.1")
            .then_some(logs)
    })
    .await;
    assert_eq!(logs[0]["source"], instance["id"], "{logs}");
    assert!(
        logs[0]["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{logs}"
    );
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/api/v1/services/{service}/logs?tail=0"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["field"].as_str()),
        (400, Some("tail")),
        "{body}"
    );
    // The stream refuses the same bad inputs before it starts, naming the field
    // (a release that does not exist is a 404 naming the release).
    for (query, status, field) in [
        ("tail=0", 400, Some("tail")),
        ("tail=10001", 400, Some("tail")),
        ("build=0", 400, Some("build")),
        ("build=999", 404, None),
        ("follow=1", 400, Some("follow")),
    ] {
        let (got, body) = server
            .call(
                Method::GET,
                &format!("/api/v1/services/{service}/logs/stream?{query}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(
            (got.as_u16(), body["error"]["field"].as_str()),
            (status, field),
            "{query}: {body}"
        );
        assert!(
            field.is_some() || body["error"]["message"] == "release not found",
            "{body}"
        );
    }
    assert!(instance["node"]
        .as_str()
        .is_some_and(|node| !node.is_empty()));

    // kill -9 of the app: a new process takes over.
    let pid = instance["pid"].as_i64().expect("pid");
    kill9(pid);
    let healed = wait_for("the killed app to be replaced", async || {
        let instances = app.instances().await;
        instances
            .into_iter()
            .find(|i| i["status"] == "healthy" && i["pid"].as_i64() != Some(pid))
    })
    .await;
    assert!(
        healed["restarts"].as_u64().expect("restarts") >= 1,
        "{healed}"
    );

    // kill -9 of the shim: the orphaned app is stopped and the instance restarted.
    let instance_dir = server
        .data_dir
        .join("apps/web/instances")
        .join(healed["id"].as_str().expect("id"));
    let shim = pid_file(&instance_dir.join("shim.pid"));
    // The shim is the small static executable the agent embeds, written out by
    // the privileged helper into its own directory (never one the agent could
    // write), not the whole binary re-executed.
    let exe = std::fs::read_link(format!("/proc/{shim}/exe")).expect("the shim's exe");
    assert_eq!(
        exe.parent(),
        Some(server.data_dir.join("helper/bin").as_path())
    );
    assert!(
        exe.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("nanoscale-shim-")),
        "{}",
        exe.display()
    );
    let app_pid = healed["pid"].as_i64().expect("pid");
    kill9(shim);
    let after_shim = wait_for("an instance after the shim was killed", async || {
        let instances = app.instances().await;
        instances
            .into_iter()
            .find(|i| i["status"] == "healthy" && i["pid"].as_i64() != Some(app_pid))
    })
    .await;
    assert!(
        !Path::new(&format!("/proc/{app_pid}")).exists() || {
            // A zombie reparented to a non-reaping init still has a /proc entry.
            std::fs::read_to_string(format!("/proc/{app_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
        }
    );

    // kill -9 of the agent: `up` restarts it; it re-adopts the app (same pid).
    let agent = pid_file(&server.data_dir.join("agent/agent.lock"));
    kill9(agent);
    let steady_pid = after_shim["pid"].as_i64().expect("pid");
    wait_for("a new agent", async || {
        let now = std::fs::read_to_string(server.data_dir.join("agent/agent.lock")).ok()?;
        (now.trim() != agent.to_string() && !now.trim().is_empty()).then_some(())
    })
    .await;
    let events = wait_for("the re-adoption event", async || {
        let events = server
            .get("/api/v1/events?kind=agent.restarted", &token)
            .await;
        (!events.as_array()?.is_empty()).then_some(events)
    })
    .await;
    assert!(events.to_string().contains("re-adopted 1"), "{events}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let instances = app.instances().await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(
        instances[0]["pid"].as_i64(),
        Some(steady_pid),
        "the agent restart restarted the app"
    );
    assert_eq!(instances[0]["status"], "healthy");

    // A second commit: the new release goes live, the old one retires.
    let second = app.deploy(&commits[1]).await;
    app.wait_release(second, "live").await;
    app.wait_release(first, "retired").await;
    let instance = app.healthy_instance(second).await;
    let body = get_text(instance["port"].as_u64().expect("port"), "/")
        .await
        .expect("answers");
    assert!(body.contains("v2"), "{body}");
    wait_for("only the new release running", async || {
        let instances = app.instances().await;
        (instances.len() == 1).then_some(())
    })
    .await;
    // What the replaced instance printed is still in the logs, under its id, and
    // so is what the ones killed above printed.
    let replaced = after_shim["id"].as_str().expect("id");
    let logs = server
        .get(&format!("/api/v1/services/{service}/logs?tail=100"), &token)
        .await;
    for gone in [replaced, healed["id"].as_str().expect("id")] {
        assert!(
            logs.as_array()
                .expect("lines")
                .iter()
                .any(|line| line["source"] == gone
                    && line["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("listening on"))),
            "no lines of the stopped instance {gone}: {logs}"
        );
    }
    assert!(server
        .data_dir
        .join("apps/web/logs")
        .join(replaced)
        .is_dir());

    // Rollback to release 1: a new release with its commit, not rebuilt.
    let rolled = server
        .post(
            &format!("/api/v1/services/{service}/rollback"),
            &token,
            json!({"release": first}),
        )
        .await;
    let third = rolled["number"].as_i64().expect("number");
    app.wait_release(third, "live").await;
    let instance = app.healthy_instance(third).await;
    let body = get_text(instance["port"].as_u64().expect("port"), "/")
        .await
        .expect("answers");
    assert!(body.contains("v1"), "{body}");
    let builds = server
        .get("/api/v1/events?kind=build.succeeded", &token)
        .await;
    assert!(
        builds.to_string().contains("reused the build of release 1"),
        "{builds}"
    );

    // Every transition arrived once.
    let all = server
        .get(
            &format!("/api/v1/events?service_id={service}&limit=1000"),
            &token,
        )
        .await;
    let live_events = all
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "release.live")
        .count();
    assert_eq!(live_events, 3, "{all}");

    // The node reports what it applied.
    let nodes = server.get("/api/v1/nodes", &token).await;
    let node = &nodes[0];
    wait_for("the node to be applied", async || {
        let nodes = server.get("/api/v1/nodes", &token).await;
        (nodes[0]["convergence"] == "applied"
            && nodes[0]["applied_version"] == nodes[0]["desired_version"])
            .then_some(())
    })
    .await;
    assert_eq!(node["status"], "ready");

    // Removing the service stops it and deletes its files.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/services/{service}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success());
    let gone_port = instance["port"].as_u64().expect("port");
    wait_for("the service's files to be cleaned", async || {
        (!server.data_dir.join("apps/web").exists()).then_some(())
    })
    .await;
    assert!(
        get_text(gone_port, "/").await.is_none(),
        "the removed app still answers"
    );
}

#[tokio::test]
async fn releases_that_fail_to_build_start_or_become_healthy_never_replace_the_live_one() {
    let (_keep, repo, commits) = fixture_repo(&[
        ("node-http", "good"),
        ("fail-build", "bad-build"),
        ("never-healthy", "bad-health"),
        ("crash-at-start", "bad-start"),
    ]);
    let server = TestServer::start_with_agent();
    let token = server.bootstrap().await;
    let app = deployable(&server, &token, json!({
            "name": "api",
            "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
            "health": {"path": "/healthz", "start_period_secs": 3, "interval_secs": 1, "retries": 2},
        })).await;
    let good = app.deploy(&commits[0]).await;
    app.wait_release(good, "live").await;
    let serving = app.healthy_instance(good).await;
    let port = serving["port"].as_u64().expect("port");
    assert!(get_text(port, "/").await.expect("answers").contains("good"));

    let cases = [
        (1, "intentional build failure"),
        (2, "never became healthy"),
        (3, "crashed"),
    ];
    for (index, expected) in cases {
        let number = app.deploy(&commits[index]).await;
        let failed = app.wait_release(number, "failed").await;
        let reason = failed["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(expected), "release {number}: {reason}");
        assert!(
            reason.len() <= nanoscale_core::agent::MAX_PROBLEM,
            "release {number}: {} bytes",
            reason.len()
        );
        if index == 1 {
            let build = server
                .get(
                    &format!("/api/v1/services/{}/logs?build={number}", app.service),
                    &token,
                )
                .await;
            let text = build.to_string();
            assert!(
                text.contains("building") && text.contains("intentional build failure"),
                "{text}"
            );
            assert!(text.contains(&format!("build-{number}")), "{text}");
        }
        // The good release still serves, untouched.
        assert_eq!(app.release(good).await["status"], "live");
        assert!(get_text(port, "/")
            .await
            .expect("still answers")
            .contains("good"));
        wait_for("the failed release's instances to go", async || {
            let instances = app.instances().await;
            instances
                .iter()
                .all(|i| i["release_number"] == good)
                .then_some(())
        })
        .await;
    }
    let nodes = server.get("/api/v1/nodes", &token).await;
    assert_eq!(nodes[0]["convergence"], "degraded", "{nodes}");
    assert!(nodes[0]["problems"].to_string().contains("api"), "{nodes}");
}

#[tokio::test]
async fn hostile_sources_and_names_are_refused_with_the_field_named() {
    let server = TestServer::start();
    let token = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "evil"}))
        .await;
    let path = format!(
        "/api/v1/projects/{}/services",
        project["id"].as_str().expect("id")
    );
    let cases = [
        (
            json!({"name": "a", "source": {"git": "ext::sh -c touch% /tmp/pwned"}}),
            "source.git",
        ),
        (
            json!({"name": "a", "source": {"git": "--upload-pack=touch /tmp/pwned"}}),
            "source.git",
        ),
        (
            json!({"name": "a", "source": {"git": "file:///etc/../root/repo"}}),
            "source.git",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git", "ref": "--output=/tmp/x"}}),
            "source.ref",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git", "ref": "main\nevil"}}),
            "source.ref",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git", "ref": "../../etc"}}),
            "source.ref",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git"}, "volumes": [{"name": "d", "path": "../../etc"}]}),
            "volumes[0].path",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git"}, "volumes": [{"name": "d", "path": "/etc"}]}),
            "volumes[0].path",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git"}, "volumes": [{"name": "d", "path": "$(touch /tmp/pwned)"}]}),
            "volumes[0].path",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git"}, "volumes": [{"name": "../d", "path": "d"}]}),
            "volumes[0].name",
        ),
        (
            json!({"name": "../etc", "source": {"git": "https://x/y.git"}}),
            "name",
        ),
        (
            json!({"name": "a;b", "source": {"git": "https://x/y.git"}}),
            "name",
        ),
        (
            json!({"name": "a", "source": {"git": "https://x/y.git"}, "run": "a\u{0}b"}),
            "run",
        ),
    ];
    for (spec, field) in cases {
        let (status, body) = server
            .call(Method::POST, &path, Some(&token), Some(spec.clone()))
            .await;
        assert_eq!(status.as_u16(), 422, "{spec} -> {body}");
        assert_eq!(body["error"]["field"], field, "{spec} -> {body}");
    }
    // Nothing was created and nothing ran.
    let services = server.get("/api/v1/services", &token).await;
    assert_eq!(services.as_array().map(Vec::len), Some(0));
    assert!(!Path::new("/tmp/pwned").exists());
    // The agent protocol refuses users, and forged node credentials.
    for credential in [token.as_str(), "nsn_forged"] {
        let status = server
            .status_of(Method::GET, "/api/v1/agent/desired-state", Some(credential))
            .await;
        assert_eq!(status.as_u16(), 401);
    }
}

/// Whether this kernel gives us a memory cgroup controller (v1 or v2).
fn memory_controller() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"))
}

#[tokio::test]
async fn a_memory_limit_from_the_spec_is_enforced_and_the_event_says_so() {
    if !memory_controller() {
        eprintln!("skipped: this kernel has no memory cgroup controller to enforce limits with");
        return;
    }
    let (_keep, repo, commits) = fixture_repo(&[("leak-memory", "greedy")]);
    let server = TestServer::start_with_agent();
    let token = server.bootstrap().await;
    let app = deployable(
        &server,
        &token,
        json!({
            "name": "greedy",
            "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
            "resources": {"memory_mb": 64},
            "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
        }),
    )
    .await;
    let service = app.service.clone();
    app.deploy(&commits[0]).await;
    let crashed = wait_for("an out-of-memory kill", async || {
        let events = server
            .get(
                &format!("/api/v1/events?service_id={service}&kind=instance."),
                &token,
            )
            .await;
        let text = events.to_string();
        text.contains("more memory than its limit").then_some(text)
    })
    .await;
    assert!(crashed.contains("greedy-r1-0"), "{crashed}");
    // It was healthy before the leak reached the limit, so it went live; now it
    // keeps dying, is restarted with backoff, and the crash loop is reported with
    // the app's last output.
    let looping = wait_for("a crash-loop event", async || {
        let events = server
            .get(
                &format!("/api/v1/events?service_id={service}&kind=instance.crash_loop"),
                &token,
            )
            .await;
        let first = events.as_array()?.first()?.clone();
        Some(first)
    })
    .await;
    let message = looping["message"].as_str().unwrap_or_default();
    assert!(message.contains("5 exits in a row"), "{message}");
    assert!(
        message.contains("listening on 127.0.0.1"),
        "no log lines: {message}"
    );
    let instances = app.instances().await;
    assert!(
        instances.iter().any(|i| i["restarts"].as_u64() >= Some(4)),
        "{instances:?}"
    );
}

/// Old release trees go (here all but the newest retired one, with
/// `NANOSCALE_KEEP_RELEASES=1`), so a small server's disk does not fill with
/// builds; a rollback to a release whose tree went builds it again.
#[tokio::test]
async fn old_release_trees_are_removed_and_a_rollback_to_one_builds_it_again() {
    let (_keep, repo, commits) = fixture_repo(&[
        ("python-http", "v1"),
        ("python-http", "v2"),
        ("python-http", "v3"),
        ("python-http", "v4"),
        ("fail-build", "bad"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (server, token) = node_with_env(&data, &[("NANOSCALE_KEEP_RELEASES", "1")]).await;
    let app = deployable(
        &server,
        &token,
        json!({
            "name": "keeper",
            "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
            "health": {"path": "/healthz", "start_period_secs": 20, "interval_secs": 1},
        }),
    )
    .await;
    let mut numbers = Vec::new();
    for commit in &commits[..4] {
        let number = app.deploy(commit).await;
        app.wait_release(number, "live").await;
        numbers.push(number);
    }
    let releases_dir = data.join("apps/keeper/releases");
    let trees = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&releases_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // The live one and the newest retired one stay.
    let kept = wait_for("the old trees removed", async || {
        let names = trees();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(kept, [numbers[2].to_string(), numbers[3].to_string()]);

    // Back to release 1: its tree went, so it is built again, and serves v1.
    let rolled = server
        .post(
            &format!("/api/v1/services/{}/rollback", app.service),
            &token,
            json!({"release": numbers[0]}),
        )
        .await;
    let number = rolled["number"].as_i64().expect("number");
    app.wait_release(number, "live").await;
    let instance = app.healthy_instance(number).await;
    let body = get_text(instance["port"].as_u64().expect("port"), "/")
        .await
        .expect("answers");
    assert!(body.contains("v1"), "{body}");
    assert!(trees().contains(&number.to_string()), "{:?}", trees());

    // Failed releases are pruned too, counted apart from the retired ones, and
    // their build logs go with them; the failing target itself stays.
    let builds_dir = data.join("apps/keeper/builds");
    let mut failed = Vec::new();
    for _ in 0..3 {
        let number = app.deploy(&commits[4]).await;
        app.wait_release(number, "failed").await;
        failed.push(number);
    }
    let gone = |number: i64| {
        !releases_dir.join(number.to_string()).exists()
            && !builds_dir.join(number.to_string()).exists()
    };
    wait_for("the oldest failed release's files removed", async || {
        gone(failed[0]).then_some(())
    })
    .await;
    assert!(
        builds_dir.join(failed[2].to_string()).exists(),
        "the target's build log stays"
    );
    assert!(
        builds_dir.join(failed[1].to_string()).exists(),
        "the newest other failure stays"
    );
    // The live rollback and the release it retired are untouched.
    assert!(trees().contains(&number.to_string()), "{:?}", trees());
    assert!(trees().contains(&numbers[3].to_string()), "{:?}", trees());
    assert_eq!(app.release(number).await["status"], "live");
}

#[tokio::test]
async fn a_low_memory_host_is_warned_or_given_a_swap_file_before_it_builds() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("meminfo field")
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("swap: skipped: making a swap file needs root");
        return;
    }
    if kib("SwapTotal:") > 0 {
        eprintln!("swap: skipped: this host already swaps, so it never counts as low on memory");
        return;
    }
    // This host has plenty of RAM: the threshold is put above it, so the agent
    // sees it as a small server (the one knob an operator has for this).
    let below = (kib("MemTotal:") / 1024 + 1).to_string();
    let (_keep, repo, commits) = fixture_repo(&[("fail-build", "bad")]);

    // Without a swap size: a warning naming the setting.
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = node_with_env(
        &dir.path().join("data"),
        &[("NANOSCALE_SWAP_BELOW_MIB", &below)],
    )
    .await;
    let events = wait_for("the low-memory warning", async || {
        let events = server
            .get("/api/v1/events?kind=node.low_memory", &token)
            .await;
        (!events.as_array()?.is_empty()).then_some(events)
    })
    .await;
    assert!(
        events.to_string().contains("NANOSCALE_SWAP_FILE_MIB"),
        "{events}"
    );
    assert!(!dir.path().join("data/helper/swapfile").exists());
    drop(server);

    // With one: the swap file is on before the first build starts.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let swapfile = data.join("helper/swapfile");
    let _off = SwapOff(swapfile.clone());
    let (server, token) = node_with_env(
        &data,
        &[
            ("NANOSCALE_SWAP_BELOW_MIB", &below),
            ("NANOSCALE_SWAP_FILE_MIB", "16"),
        ],
    )
    .await;
    let app = deployable(
        &server,
        &token,
        json!({
            "name": "small",
            "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
        }),
    )
    .await;
    let number = app.deploy(&commits[0]).await;
    app.wait_release(number, "failed").await;
    let made = server
        .get("/api/v1/events?kind=node.swap_created", &token)
        .await;
    let made = made.as_array().expect("events").clone();
    assert_eq!(made.len(), 1, "once per agent run: {made:?}");
    let started = server
        .get("/api/v1/events?kind=build.started", &token)
        .await;
    let at = |event: &Value| {
        chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap_or_default())
            .expect("an event time")
    };
    assert!(
        at(&made[0]) <= at(&started[0]),
        "made before the build: {made:?} {started}"
    );
    let swaps = std::fs::read_to_string("/proc/swaps").expect("swaps");
    assert!(
        swaps.contains(
            &swapfile
                .canonicalize()
                .expect("swapfile")
                .display()
                .to_string()
        ),
        "{swaps}"
    );
    eprintln!("swap: warned without a size; made a 16 MiB swap file before building with one");
}

/// A volume outlives releases: a count the app keeps in it goes on across a
/// deploy of a new commit, in the sandbox too (where it is one of the few places
/// the app may write), and its directory belongs to the app.
#[tokio::test]
async fn a_volume_keeps_its_files_across_releases() {
    let (_keep, repo, commits) =
        fixture_repo(&[("volume-counter", "v1"), ("volume-counter", "v2")]);
    // This node reaches its privileged helper as a command, as an agent that is
    // not root does (there through sudo): every operation crosses as JSON on the
    // helper's stdin. A wrapper notes each operation's name on the way.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let calls = dir.path().join("helper-calls");
    let wrapper = dir.path().join("helper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "operation=$(cat)\n\
             printf '%s\\n' \"$operation\" | sed -n 's/^{{\"op\":\"\\([a-z_]*\\)\".*/\\1/p' >> {calls}\n\
             printf '%s' \"$operation\" | exec {bin} helper --data-dir {data} -\n",
            calls = calls.display(),
            bin = env!("CARGO_BIN_EXE_nanoscale"),
            data = data.display(),
        ),
    )
    .expect("write the wrapper");
    let command = format!("/bin/sh {}", wrapper.display());
    let (server, token) = node_with_env(&data, &[("NANOSCALE_HELPER_COMMAND", &command)]).await;
    let app = counter_app(&server, &token, "counter", &repo, &commits[0]).await;
    let count = async |release: i64| {
        let instance = app.healthy_instance(release).await;
        get_text(instance["port"].as_u64().expect("port"), "/")
            .await
            .expect("answers")
    };
    let first = app.deploy(&commits[0]).await;
    app.wait_release(first, "live").await;
    assert_eq!(count(first).await.trim(), "count 1 v1");
    assert_eq!(count(first).await.trim(), "count 2 v1");

    let second = app.deploy(&commits[1]).await;
    app.wait_release(second, "live").await;
    assert_eq!(count(second).await.trim(), "count 3 v2");
    let volume = server.data_dir.join("apps/counter/volumes/data");
    assert_eq!(
        std::fs::read_to_string(volume.join("count")).expect("count"),
        "3"
    );
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&volume).expect("stat");
        let user = nix::unistd::User::from_name("ns-counter")
            .expect("getpwnam")
            .expect("the app's user");
        assert_eq!(meta.uid(), user.uid.as_raw(), "the volume is the app's");
        assert_eq!(meta.mode() & 0o777, 0o700);
        // Built, started, replaced and cleaned up through the helper command (the
        // replaced instance stops after its drain).
        let wanted = [
            "create_app_user",
            "own_app_dir",
            "start_shim",
            "stop_shim",
            "remove_app_dir",
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let called = std::fs::read_to_string(&calls).unwrap_or_default();
            let missing: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|op| !called.lines().any(|line| line == *op))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never through the helper command: {missing:?}; it was called for:\n{called}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A sudo rule in /etc/sudoers.d for the life of a test, checked by visudo first.
struct SudoRule(std::path::PathBuf);

impl SudoRule {
    fn write(name: &str, rule: &str) -> SudoRule {
        let path = Path::new("/etc/sudoers.d").join(name);
        let staged = std::env::temp_dir().join(format!("{name}.sudoers"));
        std::fs::write(&staged, rule).expect("write the rule");
        let checked = Command::new("/usr/sbin/visudo")
            .arg("-cf")
            .arg(&staged)
            .output()
            .expect("visudo (scripts/test installs sudo)");
        assert!(
            checked.status.success(),
            "visudo refused {rule:?}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o440)).expect("chmod");
        std::fs::copy(&staged, &path).expect("install the rule");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).expect("chmod");
        let _ = std::fs::remove_file(&staged);
        SudoRule(path)
    }
}

impl Drop for SudoRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The system user `name` (made when missing): (uid, gid).
fn system_user(name: &str) -> (u32, u32) {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let made = Command::new("/usr/sbin/useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args([
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("useradd");
        assert!(
            made.status.success() || nix::unistd::User::from_name(name).ok().flatten().is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let user = nix::unistd::User::from_name(name)
        .expect("getpwnam")
        .expect("the user");
    (user.uid.as_raw(), user.gid.as_raw())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

/// The whole node as an installed one runs it: `nanoscale up` (control plane,
/// agent, proxy) as an unprivileged user, which reaches the privileged helper
/// only through sudo and one exact rule for `nanoscale helper --data-dir DATA -`.
/// It builds, starts, replaces and removes an app that runs as its own user in
/// its sandbox, with a volume; the shims' directories are root's, readable by the
/// agent's group, and nothing of the agent's user can change them.
#[tokio::test]
async fn an_agent_that_is_not_root_deploys_through_sudo_and_its_helper() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("unprivileged agent: skipped: making its user and sudo rule needs root");
        return;
    }
    let (uid, gid) = system_user("nanoscale-test");
    let (keep, repo, commits) = fixture_repo(&[("volume-counter", "v1"), ("volume-counter", "v2")]);
    chown_tree(keep.path(), uid, gid);
    let dir = tempfile::Builder::new()
        .prefix("nanoscale-unprivileged-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    chown_tree(dir.path(), uid, gid);
    let bin = env!("CARGO_BIN_EXE_nanoscale");
    let helper = format!("{bin} helper --data-dir {} -", data.display());
    let _rule = SudoRule::write(
        &format!("nanoscale-test-{}", std::process::id()),
        // As install.sh writes it: one command, these arguments, nothing logged
        // for each call.
        &format!(
            "Defaults:nanoscale-test !log_allowed, !pam_session\n\
             nanoscale-test ALL=(root) NOPASSWD: {helper}\n"
        ),
    );
    let command = format!("/usr/bin/sudo -n {helper}");
    let proxy = format!("127.0.0.1:{}", common::free_port());
    let server = TestServer::spawn_as(
        &data,
        "127.0.0.1:0",
        &common::agent_args(&proxy),
        &[
            ("NANOSCALE_HELPER_COMMAND", command.as_str()),
            ("HOME", data.to_str().expect("utf-8")),
        ],
        std::process::Stdio::inherit(),
        Some((uid, gid)),
    );
    let token = server.bootstrap().await;
    let app = counter_app(&server, &token, "lowpriv", &repo, &commits[0]).await;
    let first = app.deploy(&commits[0]).await;
    app.wait_release(first, "live").await;
    let instance = app.healthy_instance(first).await;
    let port = instance["port"].as_u64().expect("port");
    assert_eq!(
        get_text(port, "/").await.expect("answers").trim(),
        "count 1 v1"
    );

    use std::os::unix::fs::MetadataExt;
    let stat = |path: &Path| std::fs::symlink_metadata(path).expect("stat");
    // The agent runs as the unprivileged user; the app as its own.
    let app_user = nix::unistd::User::from_name("ns-lowpriv")
        .expect("getpwnam")
        .expect("the app's user");
    let agent_pid = std::fs::read_to_string(data.join("agent/agent.lock")).expect("agent.lock");
    let agent_pid = agent_pid.trim();
    assert_eq!(stat(Path::new(&format!("/proc/{agent_pid}"))).uid(), uid);
    let app_pid = instance["pid"].as_i64().expect("pid");
    assert_eq!(
        stat(Path::new(&format!("/proc/{app_pid}"))).uid(),
        app_user.uid.as_raw()
    );
    // The shim's directory is the helper's; the agent's group reads its log.
    let service_dir = data.join("apps/lowpriv");
    let instance_dir = service_dir
        .join("instances")
        .join(instance["id"].as_str().expect("id"));
    let meta = stat(&instance_dir);
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, gid, 0o2750)
    );
    assert_eq!(stat(&instance_dir.join("shim.json")).mode() & 0o777, 0o600);
    assert_eq!(stat(&instance_dir.join("log/current")).gid(), gid);
    assert_eq!(
        stat(&data.join("helper")).uid(),
        0,
        "the helper's own directory"
    );
    let release = stat(&service_dir.join("releases").join(first.to_string()));
    assert_eq!(release.uid(), app_user.uid.as_raw());

    // A new release replaces the old one; the volume carries the count over, and
    // the replaced instance's log is kept where the agent can read it.
    let second = app.deploy(&commits[1]).await;
    app.wait_release(second, "live").await;
    let port = app.healthy_instance(second).await["port"]
        .as_u64()
        .expect("port");
    assert_eq!(
        get_text(port, "/").await.expect("answers").trim(),
        "count 2 v2"
    );
    let kept = service_dir
        .join("logs")
        .join(instance["id"].as_str().expect("id"));
    wait_for("the replaced instance's log kept", async || {
        kept.join("current").exists().then_some(())
    })
    .await;
    let logs = server
        .get(
            &format!("/api/v1/services/{}/logs?tail=100", app.service),
            &token,
        )
        .await;
    assert!(logs.to_string().contains("listening on"), "{logs}");

    // A static site whose build (as its own user) made a file: the proxy, as the
    // agent's user, serves it through the agent's group.
    let (keep_site, site_repo, site_commits) = fixture_repo(&[("static-site", "v1")]);
    chown_tree(keep_site.path(), uid, gid);
    let projects = server.get("/api/v1/projects", &token).await;
    let project = projects[0]["id"].as_str().expect("the project");
    let created = server
        .post(
            &format!("/api/v1/projects/{project}/services"),
            &token,
            json!({
                "name": "lowsite",
                "source": {"git": format!("file://{}", site_repo.display()), "ref": site_commits[0]},
                "build": "echo built by the app > built.txt",
                "routes": [{"host": "lowsite.test"}],
            }),
        )
        .await;
    let site = App {
        server: &server,
        token: token.clone(),
        service: created["id"].as_str().expect("id").to_owned(),
    };
    let built = site.deploy(&site_commits[0]).await;
    site.wait_release(built, "live").await;
    let page = wait_for("the built static file through the proxy", async || {
        let response = reqwest::Client::new()
            .get(format!("http://{proxy}/built.txt"))
            .header("host", "lowsite.test")
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(response.text().await.ok()?)
    })
    .await;
    assert_eq!(page.trim(), "built by the app");

    // Removing the service removes its files (the app's and the helper's) and its user.
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/services/{}", app.service),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for("the service's files removed", async || {
        (!service_dir.exists()).then_some(())
    })
    .await;
    wait_for("the app's user removed", async || {
        nix::unistd::User::from_name("ns-lowpriv")
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    drop(server);
}

/// Where the channel cannot be held, the long-poll and report routes carry
/// everything. An agent told so (`NANOSCALE_AGENT_NO_CHANNEL`) deploys, redeploys
/// and reports; and an agent whose control plane sits behind a real nginx that
/// drops `Upgrade` (as a reverse proxy does unless configured for it) finds that
/// out by itself and follows its document over the long-poll through nginx.
#[tokio::test]
async fn without_the_channel_the_long_poll_carries_deploys_and_reports() {
    use nanoscale_agent::protocol::{ControlPlane, Credential};

    let (_keep, repo, commits) =
        fixture_repo(&[("volume-counter", "v1"), ("volume-counter", "v2")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (server, token) = node_with_env(&data, &[("NANOSCALE_AGENT_NO_CHANNEL", "1")]).await;
    let app = counter_app(&server, &token, "counter", &repo, &commits[0]).await;
    let first = app.deploy(&commits[0]).await;
    app.wait_release(first, "live").await;
    let second = app.deploy(&commits[1]).await;
    app.wait_release(second, "live").await;
    assert_eq!(server.metric("nanoscale_agent_channels").await, None);

    // The control plane behind nginx, which drops `Upgrade` and `Connection`.
    let nginx = Nginx::start(dir.path(), &server.url);
    let credential = std::fs::read_to_string(data.join("agent/credential")).expect("credential");
    let control_plane =
        ControlPlane::new(&nginx.url, Credential::Bearer(credential.trim().to_owned()))
            .expect("client");
    let connected = std::sync::Arc::new(tokio::sync::Notify::new());
    let holder = tokio::spawn({
        let (control_plane, connected) = (control_plane.clone(), connected.clone());
        async move { control_plane.hold_channel(&connected).await }
    });
    let current = tokio::time::timeout(Duration::from_secs(20), control_plane.desired_state(None))
        .await
        .expect("the first document without the channel")
        .expect("document");
    assert!(!control_plane.channel_up());
    let third = app.deploy(&commits[0]).await;
    let next = tokio::time::timeout(
        Duration::from_secs(30),
        control_plane.desired_state(Some(current.version)),
    )
    .await
    .expect("the change over the long-poll, through nginx")
    .expect("document");
    assert!(next.version > current.version);
    assert!(!control_plane.channel_up());
    app.wait_release(third, "live").await;
    holder.abort();
}

/// Debian's nginx as a plain HTTP/1.1 reverse proxy on a free loopback port.
struct Nginx {
    child: std::process::Child,
    url: String,
}

impl Nginx {
    fn start(dir: &Path, upstream: &str) -> Nginx {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("mkdir");
        let port = common::free_port();
        let config = prefix.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
                 events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  \
                 proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
                 scgi_temp_path {p}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      \
                 proxy_pass {upstream};\n      proxy_http_version 1.1;\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
                p = prefix.display(),
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .spawn()
            .expect("nginx (scripts/test installs nginx-light)");
        let address = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            url: format!("http://{address}"),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

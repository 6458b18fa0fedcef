//! Whole-system tests of "secure by default" (issue 7): the real `nanoscale up`
//! deploys fixture apps that misbehave on purpose (`tests/fixtures/apps`) from real
//! git repositories, and the test checks from outside what the sandbox let through.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose

mod common;

use common::{fixture_repo, wait_for, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// The tests here run one at a time: each starts its own `nanoscale up`, and two
/// agents on one host pick instance ports from the same range, so one's health
/// check could reach the other's app on a port both took.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn healthy_instance(server: &TestServer, token: &str, service: &str) -> Value {
    server.healthy_instance(token, service, "").await
}

/// The uid a process runs as, from `/proc/<pid>/status`.
fn uid_of(pid: i64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("Uid line")
}

#[tokio::test]
async fn deployed_apps_run_as_their_own_users_and_cannot_escape_their_sandbox() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if !is_root() {
        eprintln!("skipping: sandboxing apps needs the agent to run as root");
        return;
    }
    let (_keep, repo, commits) = fixture_repo(&[
        ("python-http", "vault"),
        ("escape-attempts", "snoop"),
        ("fork-bomb", "bomb"),
    ]);
    let server = TestServer::start_with_agent();
    let token = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "sandboxed"}))
        .await;
    let project = project["id"].as_str().expect("id").to_owned();
    let git = format!("file://{}", repo.display());
    let data = server.data_dir.display().to_string();
    let create = async |name: &str, commit: &str, extra: Value| -> String {
        let mut spec = json!({
            "name": name,
            "source": {"git": git, "ref": commit},
            "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
        });
        for (key, value) in extra.as_object().cloned().unwrap_or_default() {
            spec[key] = value;
        }
        server
            .create_and_deploy(&token, &project, spec, commit)
            .await
    };

    // Its health command is the user's code too: it passes only when it runs as the
    // app's user, in the app's directory, without sight of /etc/shadow.
    let vault = create(
        "sbx-vault",
        &commits[0],
        json!({"health": {
            "command": "test \"$(id -u)\" != 0 && test -r app.py && ! test -r /etc/shadow",
            "start_period_secs": 30,
            "interval_secs": 1,
        }}),
    )
    .await;
    healthy_instance(&server, &token, &vault).await;
    let snoop = create(
        "sbx-snoop",
        &commits[1],
        json!({"env": {
            "OTHER_APP_DIR": format!("{data}/apps/sbx-vault/releases/1"),
            "AGENT_DIR": format!("{data}/agent"),
        }}),
    )
    .await;
    let instance = healthy_instance(&server, &token, &snoop).await;

    // Its own user, not the agent's.
    let user = nix::unistd::User::from_name("ns-sbx-snoop")
        .expect("getpwnam")
        .expect("the app's user exists");
    let pid = instance["pid"].as_i64().expect("pid");
    assert_eq!(uid_of(pid), user.uid.as_raw());
    let port = instance["port"].as_u64().expect("port");
    let report: Value = reqwest::get(format!("http://127.0.0.1:{port}/report"))
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    common::escape::check_escape_report(&report);
    assert_eq!(report["uid"], user.uid.as_raw(), "{report}");
    // Its /tmp was its own.
    let leaked: Vec<_> = std::fs::read_dir("/tmp")
        .expect("/tmp")
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("ns-escape-probe-")
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // A fork bomb hits its process limit, and the event says so.
    let bomb = create(
        "sbx-bomb",
        &commits[2],
        json!({"resources": {"pids": 64}, "health": {"path": "/", "start_period_secs": 30, "interval_secs": 1}}),
    )
    .await;
    let bomb_events = async || {
        server
            .get(&format!("/api/v1/events?service_id={bomb}"), &token)
            .await
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let crashed = loop {
        let events = bomb_events().await;
        let found = events.as_array().and_then(|events| {
            events
                .iter()
                .filter_map(|event| event["message"].as_str())
                .find(|message| message.contains("process limit refused"))
                .map(str::to_owned)
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event of the fork bomb's process limit: {events:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(crashed.contains("sbx-bomb-r1-0"), "{crashed}");

    // Removing a service removes its user too.
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/services/{snoop}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for("ns-sbx-snoop to be deleted", async || {
        nix::unistd::User::from_name("ns-sbx-snoop")
            .expect("getpwnam")
            .is_none()
            .then_some(())
    })
    .await;
}

/// Every file under `dir` (recursively, symlinks not followed) that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|window| window == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn a_planted_secret_is_nowhere_in_clear_but_in_the_app_and_an_audited_reveal() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().join("data");
    let log_path = temp.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The most verbose log there is: if anything prints a secret, it is here.
    let server =
        TestServer::start_with_agent_logging(&data_dir, &[("NANOSCALE_LOG", "debug")], log.into());
    let token = server.bootstrap().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let planted = format!("planted-secret-{nanos:x}");
    let greeting = format!("planted-greeting-{nanos:x}");
    let (_keep, repo, commits) = fixture_repo(&[("python-http", "v1")]);
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "secretive"}))
        .await;
    let project = project["id"].as_str().expect("id").to_owned();
    let service = server
        .post(
            &format!("/api/v1/projects/{project}/services"),
            &token,
            json!({
                "name": "sec-web",
                "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
                "env": {"API_KEY": planted, "PUBLIC": "visible"},
                "secrets": ["API_KEY"],
                "health": {"path": "/healthz", "interval_secs": 1},
            }),
        )
        .await;
    let id = service["id"].as_str().expect("id").to_owned();
    assert_eq!(service["env"]["API_KEY"], "********", "{service}");
    // A second secret through the env route, which the app prints on GET /.
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/api/v1/services/{id}/env/GREETING"),
            Some(&token),
            Some(json!({"value": greeting, "secret": true})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    server
        .post(
            &format!("/api/v1/services/{id}/deploy"),
            &token,
            json!({"ref": commits[0]}),
        )
        .await;
    let instance = healthy_instance(&server, &token, &id).await;

    // The app got it (the one place it must be in clear).
    let port = instance["port"].as_u64().expect("port");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("body");
    assert!(page.contains(&greeting), "{page}");

    // Masked everywhere the API shows it...
    let env = server
        .get(&format!("/api/v1/services/{id}/env"), &token)
        .await;
    let env = env.to_string();
    assert!(env.contains("visible") && !env.contains(&planted), "{env}");
    // ...unless someone with rights asks, which the audit log records by name.
    let revealed = server
        .post(
            &format!("/api/v1/services/{id}/env/API_KEY/reveal"),
            &token,
            json!(null),
        )
        .await;
    assert_eq!(revealed["value"], planted.as_str(), "{revealed}");
    assert_eq!(revealed["secret"], true);
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{id}/env/NOPE/reveal"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    let audit = server
        .get("/api/v1/audit?action=service.env.reveal", &token)
        .await;
    let reveals = audit.as_array().expect("audit entries");
    assert_eq!(reveals.len(), 1, "{audit}");
    assert_eq!(reveals[0]["summary"]["name"], "API_KEY", "{audit}");

    // Nowhere else in clear: not in what the API says, not in the log, not in any
    // file of the data dir (both SQLite files with their WAL, the shims' files,
    // the app's and the proxy's logs).
    let nodes = server.get("/api/v1/nodes", &token).await;
    let node = nodes[0]["id"].as_str().expect("node id").to_owned();
    let said = [
        server.get("/api/v1/events?limit=1000", &token).await,
        server.get("/api/v1/audit?limit=1000", &token).await,
        server.get(&format!("/api/v1/services/{id}"), &token).await,
        server
            .get(&format!("/api/v1/services/{id}/releases"), &token)
            .await,
        server
            .get(&format!("/api/v1/nodes/{node}/desired-state"), &token)
            .await,
        server
            .get(&format!("/api/v1/services/{id}/logs?tail=1000"), &token)
            .await,
    ];
    for secret in [&planted, &greeting] {
        for answer in &said {
            assert!(!answer.to_string().contains(secret.as_str()), "{answer}");
        }
        let log = std::fs::read_to_string(&log_path).expect("log");
        assert!(!log.is_empty());
        assert!(
            !log.contains(secret.as_str()),
            "the server log holds a secret"
        );
        let files = files_holding(&data_dir, secret.as_bytes());
        assert!(files.is_empty(), "{secret} in clear in {files:?}");
    }
    // The key files that seal them are private.
    use std::os::unix::fs::PermissionsExt;
    for key in ["secret.key", "agent/secret.key"] {
        let mode = std::fs::metadata(data_dir.join(key))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

//! API tests against a real `nanoscale up` process on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
mod common;

use std::time::Duration;

use common::{error_field, GitDaemon, GitRepo, TestServer, ADMIN_PASSWORD};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn setup_login_csrf_and_logout() {
    let server = TestServer::start();
    let (_, status) = server.call(Method::GET, "/api/v1/setup", None, None).await;
    assert_eq!(status, json!({"needed": true}));
    // Weak passwords and bad names are refused before anything is created.
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/setup",
            None,
            Some(json!({"username": "admin", "password": "short"})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("password"))
    );
    server.bootstrap().await;
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/setup",
            None,
            Some(json!({"username": "x", "password": "another-long-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "wrong-password!"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = server.login("admin", ADMIN_PASSWORD).await;
    let attributes: Vec<&str> = session.set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{attributes:?}");
    assert!(attributes.contains(&"SameSite=Strict"), "{attributes:?}");
    assert!(
        !attributes.contains(&"Secure"),
        "plain http on loopback: no Secure flag"
    );

    let with_cookie = |method: Method, path: &str| {
        server
            .http
            .request(method, server.endpoint(path))
            .header("cookie", &session.cookie)
    };
    // Reads need no CSRF token; mutations do.
    let me: Value = with_cookie(Method::GET, "/api/v1/me")
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["auth"], "session");
    assert_eq!(me["csrf_token"], session.csrf.as_str());
    let response = with_cookie(Method::POST, "/api/v1/projects")
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = with_cookie(Method::POST, "/api/v1/projects")
        .header("x-csrf-token", "0".repeat(64))
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a wrong CSRF token is refused"
    );
    let response = with_cookie(Method::POST, "/api/v1/projects")
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);

    let response = with_cookie(Method::POST, "/api/v1/auth/logout")
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .contains("Max-Age=0"));
    let response = with_cookie(Method::GET, "/api/v1/me")
        .send()
        .await
        .expect("me");
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "the session is gone after logout"
    );
}

#[tokio::test]
async fn tokens_are_shown_once_capped_and_revocable() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let (_, viewer) = server.user(&admin, "vera", "viewer").await;

    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&viewer),
            Some(json!({"name": "up", "role": "admin"})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("role")),
        "no escalation"
    );
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": "ci", "role": "deployer", "expires_in": 5})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("expires_in"))
    );
    let created = server
        .post(
            "/api/v1/tokens",
            &admin,
            json!({"name": "ci", "role": "deployer", "expires_in": 3600}),
        )
        .await;
    let secret = created["token"].as_str().expect("token").to_owned();
    assert!(secret.starts_with("nsk_"));
    let me = server.get("/api/v1/me", &secret).await;
    assert_eq!(
        (me["role"].as_str(), me["auth"].as_str()),
        (Some("deployer"), Some("token"))
    );

    let listed = server.get("/api/v1/tokens", &admin).await;
    let entry = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == created["id"])
        .expect("listed")
        .clone();
    assert!(entry.get("token").is_none(), "the secret is never listed");
    assert!(
        entry["last_used_at"].is_string(),
        "last use is recorded: {entry}"
    );
    assert!(!listed.to_string().contains(&secret));

    // A viewer sees only their own tokens and cannot revoke others'.
    let theirs = server.get("/api/v1/tokens", &viewer).await;
    assert!(theirs
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["id"] != created["id"]));
    let id = created["id"].as_str().expect("id");
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(Method::GET, "/api/v1/me", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revocation is immediate");
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_and_never_5xx() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "shop"}))
        .await;
    let services = format!(
        "/api/v1/projects/{}/services",
        project["id"].as_str().expect("id")
    );
    let valid = json!({"name": "web", "source": {"git": "https://example.com/web.git"}});
    let with = |patch: Value| {
        let mut spec = valid.clone();
        for (key, value) in patch.as_object().expect("object") {
            spec[key] = value.clone();
        }
        spec
    };
    // (content type, body bytes, expected status, expected field)
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("application/json", b"{\"name\": ".to_vec(), 400, None),
        (
            "application/json",
            b"{\"name\": \"web\",".to_vec(),
            400,
            None,
        ),
        (
            "application/json",
            b"{\"name\": \"caf\xff\"}".to_vec(),
            400,
            None,
        ),
        ("text/plain", valid.to_string().into_bytes(), 415, None),
        (
            "application/json",
            json!({"name": 5, "source": {"git": "x"}})
                .to_string()
                .into_bytes(),
            422,
            Some("name"),
        ),
        (
            "application/json",
            with(json!({"replica": 2})).to_string().into_bytes(),
            422,
            Some("replica"),
        ),
        (
            "application/json",
            with(json!({"name": "Web App"})).to_string().into_bytes(),
            422,
            Some("name"),
        ),
        (
            "application/json",
            with(json!({"name": "../../etc"})).to_string().into_bytes(),
            422,
            Some("name"),
        ),
        (
            "application/json",
            with(json!({"replicas": 100000})).to_string().into_bytes(),
            422,
            Some("replicas"),
        ),
        (
            "application/json",
            with(json!({"replicas": -1})).to_string().into_bytes(),
            422,
            Some("replicas"),
        ),
        (
            "application/json",
            with(json!({"replicas": 1e300})).to_string().into_bytes(),
            422,
            Some("replicas"),
        ),
        (
            "application/json",
            with(json!({"env": {"BAD-NAME": "x"}}))
                .to_string()
                .into_bytes(),
            422,
            Some("env.BAD-NAME"),
        ),
        (
            "application/json",
            with(json!({"secrets": ["NOPE"]})).to_string().into_bytes(),
            422,
            Some("secrets"),
        ),
        (
            "application/json",
            with(json!({"source": {"git": "ext::sh -c id"}}))
                .to_string()
                .into_bytes(),
            422,
            Some("source.git"),
        ),
        (
            "application/json",
            with(json!({"source": {"git": "--upload-pack=id"}}))
                .to_string()
                .into_bytes(),
            422,
            Some("source.git"),
        ),
        (
            "application/json",
            with(json!({"source": {"git": "https://h/r", "ref": "-x"}}))
                .to_string()
                .into_bytes(),
            422,
            Some("source.ref"),
        ),
        (
            "application/json",
            with(json!({"source": {"git": "https://h/r", "ref": "a..b"}}))
                .to_string()
                .into_bytes(),
            422,
            Some("source.ref"),
        ),
        (
            "application/json",
            with(json!({"run": "node app.js\nrm -rf /"}))
                .to_string()
                .into_bytes(),
            422,
            Some("run"),
        ),
        (
            "application/json",
            with(json!({"routes": [{"path": "/a/../b"}]}))
                .to_string()
                .into_bytes(),
            422,
            Some("routes[0].path"),
        ),
        (
            "application/json",
            with(json!({"routes": [{"host": "EXAMPLE..com"}]}))
                .to_string()
                .into_bytes(),
            422,
            Some("routes[0].host"),
        ),
        (
            "application/json",
            with(json!({"health": {"interval_secs": 0}}))
                .to_string()
                .into_bytes(),
            422,
            Some("health.interval_secs"),
        ),
    ];
    for (content_type, body, expected, field) in cases {
        let response = server
            .http
            .post(server.endpoint(&services))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let reply: Value = response.json().await.expect("every error is JSON");
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        assert_eq!(status, expected, "{shown}: {reply}");
        let got = error_field(&reply);
        if expected != 400 {
            assert_eq!(got.as_deref(), field, "{shown}: {reply}");
        }
    }
    // An oversized body is refused from its declared length, before it is read.
    let path = services.clone();
    let url = server.url.clone();
    let token = admin.clone();
    let (reply, _) =
        tokio::task::spawn_blocking(move || oversized_request(&url, &path, &token, 64 * 1024))
            .await
            .expect("task");
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"payload_too_large\""), "{reply}");
    // Sent whole, again and again: never a reset instead of the 413, and the
    // connection stays usable.
    let (path, url, token) = (services.clone(), server.url.clone(), admin.clone());
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        for round in 0..10 {
            let (reply, mut stream) = oversized_request(&url, &path, &token, 2 * 1024 * 1024);
            assert!(reply.starts_with("HTTP/1.1 413"), "round {round}: {reply}");
            stream
                .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("second request");
            let mut next = String::new();
            stream.read_to_string(&mut next).expect("second answer");
            assert!(next.starts_with("HTTP/1.1 200"), "round {round}: {next}");
        }
        // A client that waits for `100 Continue` is not invited to send a body
        // that is refused anyway: it gets the 413 straight away.
        let (reply, _) = oversized_request_with(&url, &path, &token, 0, "Expect: 100-continue\r\n");
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        // A body that stops arriving (a slow-loris) gets a 408 naming the wait,
        // not a task held open for as long as the client likes.
        let address = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(40)))
            .expect("timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
        );
        stream.write_all(head.as_bytes()).expect("head");
        let began = std::time::Instant::now();
        let mut reply = vec![0u8; 4096];
        let read = stream.read(&mut reply).expect("an answer, not silence");
        let reply = String::from_utf8_lossy(&reply[..read]);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"request_timeout\""), "{reply}");
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{:?}",
            began.elapsed()
        );
    })
    .await
    .expect("task");

    // Nothing above was created.
    let listed = server.get(&services, &admin).await;
    assert_eq!(listed, json!([]));

    // Paths, queries, routes and methods.
    for (method, path, expected) in [
        (Method::GET, "/api/v1/projects/not-a-uuid", 400),
        (
            Method::GET,
            "/api/v1/projects/00000000-0000-0000-0000-000000000000",
            404,
        ),
        (Method::GET, "/api/v1/events?limit=0", 400),
        (Method::GET, "/api/v1/events?limit=abc", 400),
        (Method::GET, "/api/v1/events?colour=red", 400),
        (Method::GET, "/api/v1/nothing-here", 404),
        (Method::PUT, "/api/v1/projects", 405),
    ] {
        let (status, body) = server.call(method.clone(), path, Some(&admin), None).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {body}");
        error_field(&body);
    }
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&admin),
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::CONFLICT, Some("name"))
    );
}

#[tokio::test]
async fn login_is_rate_limited_per_client() {
    let server = TestServer::start();
    server.bootstrap().await; // one login
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = server
            .http
            .post(server.endpoint("/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": "not-the-password"}))
            .send()
            .await
            .expect("login");
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("header")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
    }
    assert_eq!(
        statuses[..9],
        [401; 9],
        "the first 10 attempts of the minute are answered"
    );
    assert_eq!(statuses[9], 429, "the 11th is rate limited");
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let server = TestServer::start();
    let response = server
        .http
        .get(server.endpoint("/health/live"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["x-request-id"], "trace-abc.123");
    let response = server
        .http
        .get(server.endpoint("/health/live"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        response.headers()["x-request-id"].len(),
        36,
        "a UUID is made"
    );
    let hostile = "a".repeat(500);
    let response = server
        .http
        .get(server.endpoint("/health/live"))
        .header("x-request-id", &hostile)
        .send()
        .await
        .expect("get");
    assert_ne!(
        response.headers()["x-request-id"],
        hostile.as_str(),
        "oversized ids are replaced"
    );
}

#[tokio::test]
async fn deploy_resolves_commits_from_real_git_and_rolls_back() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let repo = GitRepo::new();
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "shop"}))
        .await;
    let pid = project["id"].as_str().expect("id");
    let service = server
        .post(
            &format!("/api/v1/projects/{pid}/services"),
            &admin,
            json!({"name": "web", "source": {"git": repo.file_url()}}),
        )
        .await;
    let sid = service["id"].as_str().expect("id");

    let first = server
        .post(&format!("/api/v1/services/{sid}/deploy"), &admin, json!({}))
        .await;
    assert_eq!(
        (first["number"].as_i64(), first["commit"].as_str()),
        (Some(1), Some(repo.second.as_str()))
    );
    assert_eq!(first["status"], "queued");
    let tagged = server
        .post(
            &format!("/api/v1/services/{sid}/deploy"),
            &admin,
            json!({"ref": "v1"}),
        )
        .await;
    assert_eq!(
        tagged["commit"].as_str(),
        Some(repo.first.as_str()),
        "annotated tags are peeled to their commit"
    );

    // A deploy without a body uses the service's ref.
    let response = server
        .http
        .post(server.endpoint(&format!("/api/v1/services/{sid}/deploy")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("deploy");
    assert_eq!(response.status(), StatusCode::CREATED);

    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{sid}/deploy"),
            Some(&admin),
            Some(json!({"ref": "nope"})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ref")),
        "{body}"
    );

    let back = server
        .post(
            &format!("/api/v1/services/{sid}/rollback"),
            &admin,
            json!({"release": 1}),
        )
        .await;
    assert_eq!(
        (back["number"].as_i64(), back["commit"].as_str()),
        (Some(4), Some(repo.second.as_str()))
    );
    assert_eq!(back["rollback_of"], first["id"]);
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{sid}/rollback"),
            Some(&admin),
            Some(json!({"release": 99})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("release"))
    );

    let releases = server
        .get(&format!("/api/v1/services/{sid}/releases"), &admin)
        .await;
    let numbers: Vec<i64> = releases
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["number"].as_i64())
        .collect();
    assert_eq!(numbers, vec![4, 3, 2, 1]);
    let current = server.get(&format!("/api/v1/services/{sid}"), &admin).await;
    assert_eq!(current["current_release"], back["id"]);

    // The same repository over git:// from a daemon on loopback.
    let daemon = GitDaemon::serve(repo.path.parent().expect("parent"));
    let git_url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": git_url, "ref": "main"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let over_daemon = server
        .post(&format!("/api/v1/services/{sid}/deploy"), &admin, json!({}))
        .await;
    assert_eq!(over_daemon["commit"].as_str(), Some(repo.second.as_str()));
}

#[tokio::test]
async fn hostile_repository_urls_are_contained() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "p"}))
        .await;
    let pid = project["id"].as_str().expect("id");
    // file:// outside the allowed roots (data dir, $HOME, /tmp) is refused when
    // saved, whether the path exists or not.
    for outside in ["file:///etc", "file:///srv/not-there.git"] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/api/v1/projects/{pid}/services"),
                Some(&admin),
                Some(json!({"name": "etc", "source": {"git": outside}})),
            )
            .await;
        assert_eq!(
            (status, error_field(&body).as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git")),
            "{outside}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("/tmp"),
            "the message names the allowed roots: {body}"
        );
    }
    let repo = tempfile::tempdir_in("/tmp").expect("tempdir");
    let service = server
        .post(
            &format!("/api/v1/projects/{pid}/services"),
            &admin,
            json!({"name": "etc", "source": {"git": format!("file://{}", repo.path().display())}}),
        )
        .await;
    let sid = service["id"].as_str().expect("id");
    // A symlink under /tmp pointing outside is resolved before the check.
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let link = dir.path().join("escape");
    std::os::unix::fs::symlink("/etc", &link).expect("symlink");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": format!("file://{}", link.display())}})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git")),
        "{body}"
    );
    // A path that was inside when saved and leads outside by deploy time (a
    // symlink swapped in) is caught by the deploy's own check.
    let swapped = dir.path().join("swapped");
    std::fs::create_dir(&swapped).expect("mkdir");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": format!("file://{}", swapped.display())}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    std::fs::remove_dir(&swapped).expect("rmdir");
    std::os::unix::fs::symlink("/etc", &swapped).expect("symlink");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{sid}/deploy"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("must be under"),
        "{body}"
    );
    // Shell metacharacters in a ref are only ever an argument: git finds no such ref.
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{sid}/deploy"),
            Some(&admin),
            Some(json!({"ref": "$(touch /tmp/pwned)"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[tokio::test]
async fn events_stream_live_and_audit_records_without_secrets() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let response = server
        .http
        .get(server.endpoint("/api/v1/events/stream?kind=project."))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    // Wait for the `ready` message so the subscription exists before we act.
    while !seen.contains("event: ready") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("ready in time")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "live"}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("project.created") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("event in time")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(project["id"].as_str().expect("id")));

    let pid = project["id"].as_str().expect("id");
    let service = server
        .post(
            &format!("/api/v1/projects/{pid}/services"),
            &admin,
            json!({"name": "api", "source": {"git": "https://example.com/a.git"}, "env": {"API_KEY": "s3cr3t-value", "MODE": "x"}, "secrets": ["API_KEY"]}),
        )
        .await;
    assert_eq!(service["env"]["API_KEY"], "********");
    let sid = service["id"].as_str().expect("id");
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/v1/services/{sid}/env/DB_PASSWORD"),
            Some(&admin),
            Some(json!({"value": "hunter2-hunter2", "secret": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Sending the redacted value back keeps the secret.
    let (status, patched) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"env": service["env"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["env"]["API_KEY"], "********");
    assert!(
        patched["env"].get("DB_PASSWORD").is_none(),
        "env was replaced as sent"
    );
    assert_eq!(
        patched["secrets"],
        json!(["API_KEY"]),
        "a removed variable is no longer secret"
    );
    let env = server
        .get(&format!("/api/v1/services/{sid}/env"), &admin)
        .await;
    assert!(!env.to_string().contains("s3cr3t-value"));

    let audit = server.get("/api/v1/audit?limit=100", &admin).await;
    let text = audit.to_string();
    assert!(
        !text.contains("s3cr3t-value") && !text.contains("hunter2"),
        "no secret in the audit log"
    );
    let actions: Vec<&str> = audit
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "setup",
        "auth.login",
        "token.create",
        "project.create",
        "service.create",
        "service.env.set",
        "service.update",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let entry = audit
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["action"] == "project.create")
        .expect("entry");
    assert_eq!(entry["actor_name"], "admin");
    assert!(entry["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let filtered = server
        .get("/api/v1/audit?action=service.create", &admin)
        .await;
    assert_eq!(filtered.as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn probes_and_metrics() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    for path in ["/health/live", "/health/ready", "/health/startup"] {
        let (status, body) = server.call(Method::GET, path, None, None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ok")),
            "{path}"
        );
    }
    server.get("/api/v1/projects", &admin).await;
    let text = server
        .http
        .get(server.endpoint("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "nanoscale_http_requests_total{method=\"GET\",route=\"/api/v1/projects\",status=\"200\"}",
        "nanoscale_http_request_duration_seconds_bucket",
        "nanoscale_store_ping_duration_seconds_bucket",
        "nanoscale_projects 0",
        "nanoscale_nodes 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }
    let nodes = server.get("/api/v1/nodes", &admin).await;
    assert_eq!(nodes[0]["labels"]["role"], "control-plane");
    assert!(nodes[0]["capacity"]["cpus"].as_i64().unwrap_or(0) >= 1);
}

#[tokio::test]
async fn postgres_backend_serves_the_same_api() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let server = TestServer::start_with(&["--no-agent"], &[("NANOSCALE_DATABASE_URL", &url)]);
    let admin = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "pg"}))
        .await;
    let pid = project["id"].as_str().expect("id");
    let service = server
        .post(&format!("/api/v1/projects/{pid}/services"), &admin, json!({"name": "web", "source": {"git": "https://example.com/w.git", "ref": "a".repeat(40)}}))
        .await;
    let release = server
        .post(
            &format!(
                "/api/v1/services/{}/deploy",
                service["id"].as_str().expect("id")
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(release["number"], 1);
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&admin),
            Some(json!({"name": "pg"})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::CONFLICT, Some("name"))
    );
    let ready = server.get("/health/ready", &admin).await;
    assert_eq!(ready["checks"]["migrations"], "done");
}

#[tokio::test]
async fn data_survives_a_restart_and_sigterm_is_graceful() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::spawn(&data, &["--no-agent"], &[]);
    let admin = server.bootstrap().await;
    server
        .post("/api/v1/projects", &admin, json!({"name": "kept"}))
        .await;
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the data dir is private");

    let server = TestServer::spawn(&data, &["--no-agent"], &[]);
    let projects = server.get("/api/v1/projects", &admin).await;
    assert_eq!(projects[0]["name"], "kept");
    let (_, setup) = server.call(Method::GET, "/api/v1/setup", None, None).await;
    assert_eq!(setup["needed"], false);
}

#[test]
#[allow(clippy::disallowed_methods)] // runs the binary under test
fn bad_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nanoscale.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nlisten_adress = \"oops\"\n",
    )
    .expect("write");
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--listen".into(), "localhost:80".into()],
            vec![],
            "listen",
        ),
        (
            vec!["--log-format".into(), "xml".into()],
            vec![],
            "log_format",
        ),
        (
            vec!["--proxy-listen".into(), "port 80".into()],
            vec![],
            "proxy_listen",
        ),
        (
            vec!["--internal-listen".into(), "0.0.0.0:80".into()],
            vec![],
            "internal_listen",
        ),
        (
            vec![
                "--proxy-listen".into(),
                "127.0.0.1:8080".into(),
                "--internal-listen".into(),
                "127.0.0.1:8080".into(),
            ],
            vec![],
            "internal_listen",
        ),
        (
            vec!["--dns-listen".into(), "53".into()],
            vec![],
            "dns_listen",
        ),
        (
            vec!["--hosts-file".into(), "etc/hosts".into()],
            vec![],
            "hosts_file",
        ),
        (
            vec![],
            vec![("NANOSCALE_DATABASE_URL", "mysql://x")],
            "database_url",
        ),
        (
            vec!["--config".into(), config.display().to_string()],
            vec![],
            "listen_adress",
        ),
        (
            vec!["--node-name".into(), "Not A Label".into()],
            vec![],
            "node_name",
        ),
    ];
    for (args, env, key) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(&args)
            .envs(env)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{args:?}: message should name {key}: {stderr}"
        );
    }
}

#[tokio::test]
async fn event_stream_resumes_from_last_event_id() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let first = server
        .post("/api/v1/projects", &admin, json!({"name": "one"}))
        .await;
    let events = server
        .get("/api/v1/events?kind=project.created", &admin)
        .await;
    let first_event = events[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(events[0]["project_id"], first["id"]);
    // Missed while disconnected:
    server
        .post("/api/v1/projects", &admin, json!({"name": "two"}))
        .await;
    server
        .post("/api/v1/projects", &admin, json!({"name": "three"}))
        .await;
    let response = server
        .http
        .get(server.endpoint("/api/v1/events/stream?kind=project.created"))
        .bearer_auth(&admin)
        .header("last-event-id", &first_event)
        .send()
        .await
        .expect("stream");
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("project three created") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("replay in time")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("project two created"));
    assert!(
        !seen.contains("project one created"),
        "nothing before Last-Event-ID is replayed"
    );
    // And it continues live without repeating the replay.
    server
        .post("/api/v1/projects", &admin, json!({"name": "four"}))
        .await;
    while !seen.contains("project four created") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("live in time")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen.matches("project three created").count(), 1);
}

#[tokio::test]
async fn me_names_the_token_and_login_failures_say_why() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let tokens = server.get("/api/v1/tokens", &admin).await;
    let me = server.get("/api/v1/me", &admin).await;
    assert_eq!(me["token_id"], tokens[0]["id"]);
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "nobody", "password": "whatever-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_credentials");
    let (_, body) = server.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(body["error"]["code"], "unauthorized");
}

/// Declares a 2 MiB JSON body, sends `sent` bytes of it, and returns the raw
/// answer and the connection.
fn oversized_request(
    url: &str,
    path: &str,
    token: &str,
    sent: usize,
) -> (String, std::net::TcpStream) {
    oversized_request_with(url, path, token, sent, "")
}

/// [`oversized_request`] with `headers` (each ending in CRLF) added.
fn oversized_request_with(
    url: &str,
    path: &str,
    token: &str,
    sent: usize,
    headers: &str,
) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).expect("head");
    // A client that writes its whole body before reading (most do) must still get
    // the answer, not a reset: the server reads on after refusing.
    stream
        .write_all(&vec![b' '; sent])
        .expect("the server reads the refused body");
    let mut reply = vec![0u8; 4096];
    let read = stream.read(&mut reply).expect("read reply");
    (String::from_utf8_lossy(&reply[..read]).into_owned(), stream)
}

#[test]
#[allow(clippy::disallowed_methods)] // runs the binary under test
fn json_logs_are_one_object_per_line_with_the_request_id() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr.log");
    let port = common::free_port();
    let proxy = format!("127.0.0.1:{}", common::free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .args([
            "up",
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            // The agent and its proxy log too: their lines must be JSON as well.
            "--proxy-listen",
            &proxy,
            "--internal-listen",
            "off",
            "--dns-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("NANOSCALE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                use std::io::{Read, Write};
                stream
                    .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Request-Id: json-log-test\r\nConnection: close\r\n\r\n")
                    .expect("write");
                let mut reply = String::new();
                stream.read_to_string(&mut reply).expect("read");
                break reply;
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(error) => panic!("server did not start: {error}"),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success());
    common::kill_node_processes(&dir.path().join("data"));
    let lines: Vec<String> = BufReader::new(std::fs::File::open(&log).expect("open"))
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(!lines.is_empty());
    let mut found = false;
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if line.contains("json-log-test") && value["status"] == 200 {
            found = true;
        }
    }
    assert!(
        found,
        "the request line names its request id and status: {lines:?}"
    );
}

#[tokio::test]
async fn deploys_reach_the_node_desired_state_pinned_to_commits() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let repo = GitRepo::new();
    let node = server.get("/api/v1/nodes", &admin).await[0]["id"]
        .as_str()
        .expect("node")
        .to_owned();
    let desired = format!("/api/v1/nodes/{node}/desired-state");
    let empty = server.get(&desired, &admin).await;
    assert_eq!(empty["state"]["workloads"], json!([]));
    let base_version = empty["version"].as_i64().expect("version");

    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "shop"}))
        .await;
    let pid = project["id"].as_str().expect("id");
    let service = server
        .post(
            &format!("/api/v1/projects/{pid}/services"),
            &admin,
            json!({"name": "web", "source": {"git": repo.file_url()}, "replicas": 2,
                   "env": {"API_KEY": "s3cr3t-value"}, "secrets": ["API_KEY"],
                   "routes": [{"host": "shop.example.com"}, {"path": "/api", "strip_prefix": true}]}),
        )
        .await;
    let sid = service["id"].as_str().expect("id");
    // Elsewhere-only services never land on this node.
    server
        .post(&format!("/api/v1/projects/{pid}/services"), &admin, json!({"name": "away", "source": {"git": repo.file_url()}, "placement": {"nodes": ["elsewhere"]}}))
        .await;
    let away = server.get("/api/v1/services", &admin).await;
    let away_id = away
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "away")
        .expect("away")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server
        .post(
            &format!("/api/v1/services/{away_id}/deploy"),
            &admin,
            json!({}),
        )
        .await;
    let unchanged = server.get(&desired, &admin).await;
    assert_eq!(
        unchanged["version"].as_i64(),
        Some(base_version),
        "nothing for this node changed"
    );

    let release = server
        .post(&format!("/api/v1/services/{sid}/deploy"), &admin, json!({}))
        .await;
    let first = server.get(&desired, &admin).await;
    assert_eq!(first["version"].as_i64(), Some(base_version + 1));
    assert_eq!(first["sha256"].as_str().map(str::len), Some(64));
    let workloads = first["state"]["workloads"].as_array().expect("workloads");
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0]["commit"].as_str(), Some(repo.second.as_str()));
    assert_eq!(workloads[0]["release_id"], release["id"]);
    assert_eq!(
        workloads[0]["replicas"], 2,
        "both replicas on the only eligible node"
    );
    assert_eq!(
        workloads[0]["spec"]["env"]["API_KEY"], "********",
        "secrets never shown"
    );
    let names: Vec<&str> = first["state"]["dns"]
        .as_array()
        .expect("dns")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["web.shop.svc.internal", "web.svc.internal"]);
    assert_eq!(first["state"]["routes"].as_array().map(Vec::len), Some(2));

    // Reading again changes nothing; an env change waits for the next deploy.
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/v1/services/{sid}/env/MODE"),
            Some(&admin),
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let again = server.get(&desired, &admin).await;
    assert_eq!(
        (again["version"].clone(), again["sha256"].clone()),
        (first["version"].clone(), first["sha256"].clone())
    );

    server
        .post(
            &format!("/api/v1/services/{sid}/rollback"),
            &admin,
            json!({"release": 1}),
        )
        .await;
    let tagged = server
        .post(
            &format!("/api/v1/services/{sid}/deploy"),
            &admin,
            json!({"ref": "v1"}),
        )
        .await;
    let second = server.get(&desired, &admin).await;
    assert_eq!(second["version"].as_i64(), Some(base_version + 2));
    assert_eq!(
        second["state"]["workloads"][0]["commit"].as_str(),
        Some(repo.first.as_str())
    );
    assert_eq!(second["state"]["workloads"][0]["release_id"], tagged["id"]);
    assert!(
        second["state"]["workloads"][0]["spec"]["env"]
            .get("MODE")
            .is_some(),
        "the new release carries the env change"
    );
}

/// Regressions for the security review of 2026-11-23 (docs/security-review.md).
#[tokio::test]
async fn review_findings_stay_fixed() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let me = server.get("/api/v1/me", &admin).await;
    let admin_id = me["user"]["id"].as_str().expect("id").to_owned();

    // 1. A token (even the admin's own) cannot change its owner's password, and a
    //    session must prove the current one.
    let viewer_token = server
        .post(
            "/api/v1/tokens",
            &admin,
            json!({"name": "ro", "role": "viewer", "expires_in": 120}),
        )
        .await;
    let viewer_token = viewer_token["token"].as_str().expect("token");
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{admin_id}"),
            Some(viewer_token),
            Some(json!({"password": "attacker-chosen-pw"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let session = server.login("admin", ADMIN_PASSWORD).await;
    let patch = |body: Value| {
        server
            .http
            .patch(server.endpoint(&format!("/api/v1/users/{admin_id}")))
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .json(&body)
            .send()
    };
    let response = patch(json!({"password": "a-brand-new-password"}))
        .await
        .expect("patch");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_field(&body).as_deref(), Some("current_password"));
    let response =
        patch(json!({"password": "a-brand-new-password", "current_password": ADMIN_PASSWORD}))
            .await
            .expect("patch");
    assert_eq!(response.status(), StatusCode::OK);

    // 2. Dropping the secret flag does not reveal the value.
    let project = server
        .post("/api/v1/projects", &admin, json!({"name": "p"}))
        .await;
    let pid = project["id"].as_str().expect("id");
    let service = server
        .post(&format!("/api/v1/projects/{pid}/services"), &admin, json!({"name": "web", "source": {"git": "https://example.com/w.git"}, "env": {"KEY": "sk_live_x"}, "secrets": ["KEY"]}))
        .await;
    let sid = service["id"].as_str().expect("id");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"secrets": []})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("secrets"))
    );
    assert!(!server
        .get(&format!("/api/v1/services/{sid}/env"), &admin)
        .await
        .to_string()
        .contains("sk_live_x"));

    // 3. Concurrent env writes all land.
    let writes = (0..20).map(|i| {
        let path = format!("/api/v1/services/{sid}/env/VAR_{i}");
        let server = &server;
        let admin = &admin;
        async move {
            server
                .call(
                    Method::PUT,
                    &path,
                    Some(admin),
                    Some(json!({"value": format!("{i}")})),
                )
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(writes).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::NO_CONTENT),
        "{statuses:?}"
    );
    let env = server
        .get(&format!("/api/v1/services/{sid}/env"), &admin)
        .await;
    assert_eq!(
        env.as_array().map(Vec::len),
        Some(21),
        "KEY plus all 20: {env}"
    );

    // 4. file:// escapes: percent-encoding, and commit ids skipping the root check.
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": "file:///tmp/a/%2e%2e/%2e%2e/etc"}})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git"))
    );
    // A commit id skips `git ls-remote`, never the root check: not when saved…
    let sha = "a".repeat(40);
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": "file:///etc", "ref": sha}})),
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git")),
        "{body}"
    );
    // …and not at deploy, for a path that was inside when saved and is a link
    // out by then.
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let swapped = dir.path().join("repo");
    std::fs::create_dir(&swapped).expect("mkdir");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/services/{sid}"),
            Some(&admin),
            Some(json!({"source": {"git": format!("file://{}", swapped.display()), "ref": sha}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    std::fs::remove_dir(&swapped).expect("rmdir");
    std::os::unix::fs::symlink("/etc", &swapped).expect("symlink");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/services/{sid}/deploy"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, error_field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source.git")),
        "a commit id does not skip the deploy's root check: {body}"
    );
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // runs the served install script with sh
async fn join_tokens_and_the_install_script() {
    // Without a cluster listener no server can join, and the API says how to fix it.
    let closed = TestServer::start();
    let admin = closed.bootstrap().await;
    let (status, body) = closed
        .call(
            Method::POST,
            "/api/v1/nodes/join-tokens",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--cluster-listen"),
        "{body}"
    );
    let script = text_of(&closed, "/install.sh").await;
    assert!(
        script.contains("CLUSTER_ADDR=''"),
        "the script knows the listener is off"
    );
    // Bad options are refused with a message naming the fix, before anything is done.
    for (args, says) in [
        (
            &["--swap-file-mib", "8"][..],
            "--swap-file-mib must be a number of MiB, 16 to 65536",
        ),
        (
            &["--swap-file-mib", "1e3"][..],
            "--swap-file-mib must be a number of MiB",
        ),
        (&["--swap-file-mib"][..], "--swap-file-mib needs a value"),
        (
            &["--data-dir", "relative/dir"][..],
            "--data-dir must be an absolute path",
        ),
        // It goes into the agent's sudo rule: nothing that rule's syntax reads.
        (
            &["--data-dir", "/srv/node 1,ALL"][..],
            "--data-dir may hold only letters, digits and / . _ -",
        ),
        (&["--frobnicate"][..], "unknown option --frobnicate"),
        (
            &["--supervisor", "docker"][..],
            "--supervisor must be builtin or systemd (got 'docker')",
        ),
        (&["--supervisor"][..], "--supervisor needs a value"),
        // Units are named after instances, which nodes of one host could share.
        (
            &["--supervisor", "systemd", "--data-dir", "/srv/node1"][..],
            "--supervisor systemd needs systemd running this host, and the node's own data dir",
        ),
    ] {
        let run = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("install.sh")
            .args(args)
            .output()
            .expect("run sh");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let server = TestServer::start_with(&["--no-agent", "--cluster-listen", "127.0.0.1:0"], &[]);
    let admin = server.bootstrap().await;
    for (body, field) in [
        (json!({"ttl_secs": 0}), "ttl_secs"),
        (json!({"ttl_secs": 604_801}), "ttl_secs"),
        (json!({"ttl_secs": "soon"}), "ttl_secs"),
        (json!({"ttl": 60}), "ttl"),
    ] {
        let (status, answer) = server
            .call(
                Method::POST,
                "/api/v1/nodes/join-tokens",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(
            common::error_field(&answer).as_deref(),
            Some(field),
            "{answer}"
        );
    }
    let created = server
        .post("/api/v1/nodes/join-tokens", &admin, json!({"ttl_secs": 60}))
        .await;
    let token = created["token"].as_str().unwrap();
    let (hash, secret) = token
        .strip_prefix("K10")
        .and_then(|rest| rest.split_once("::"))
        .unwrap();
    assert_eq!(hash.len(), 64);
    assert!(secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::seconds(50) && left <= chrono::Duration::seconds(60));
    let command = created["command"].as_str().unwrap();
    assert_eq!(
        command,
        format!(
            "curl -fsSL {}/install.sh | sh -s -- --join {token}",
            server.url
        )
    );
    // The secret is stored only as a hash, and the audit entry does not hold it.
    let audit = server
        .get("/api/v1/audit?action=node.join_token.create", &admin)
        .await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    assert!(!audit.to_string().contains(secret));
    for file in ["nanoscale.db", "nanoscale.db-wal"] {
        let bytes = std::fs::read(server.data_dir.join(file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{file}");
    }

    // The script carries this control plane's addresses, nothing of the request's
    // beyond a plain host.
    let script = server
        .http
        .get(server.endpoint("/install.sh"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/x-shellscript; charset=utf-8"
    );
    let script = script.text().await.unwrap();
    assert!(script.starts_with("#!/bin/sh"));
    assert!(
        script.contains(&format!("SERVER_URL='{}'", server.url)),
        "{script}"
    );
    let (status, _) = server.call(Method::GET, "/install.sh", None, None).await;
    assert_eq!(status, 200);
    let hostile = server
        .http
        .get(server.endpoint("/install.sh"))
        .header("host", "x';rm -rf /;'")
        .send()
        .await
        .unwrap();
    assert_eq!(
        hostile.status(),
        400,
        "a hostile Host never reaches the script"
    );

    // The binary goes only to a holder of a valid join token.
    let binary = server.endpoint("/api/v1/cluster/binary");
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(server.http.get(&binary)).await, 401);
    assert_eq!(
        status(server.http.get(&binary).bearer_auth(&admin)).await,
        401
    );
    let forged = format!("K10{hash}::{}", "b".repeat(64));
    assert_eq!(
        status(server.http.get(&binary).bearer_auth(&forged)).await,
        401
    );
    let download = server
        .http
        .get(&binary)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let digest = download.headers()["x-nanoscale-sha256"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = download.bytes().await.unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), digest);
    let listed = text_of(&server, "/api/v1/cluster/binary/sha256").await;
    assert_eq!(listed, format!("{digest} {}\n", std::env::consts::ARCH));
}

/// The body of an anonymous GET, as text.
async fn text_of(server: &TestServer, path: &str) -> String {
    server
        .http
        .get(server.endpoint(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The agent channel (`GET /api/v1/agent/channel`, upgraded) on the cluster
/// listener, with the agent's own protocol code: documents pushed as they change,
/// reports acknowledged or refused naming the field, bad frames answered, and a
/// removed node's channel ended at once.
#[tokio::test]
async fn the_agent_channel_pushes_documents_takes_reports_and_ends_on_removal() {
    use nanoscale_agent::channel::{open, read_frame, write_frame};
    use nanoscale_agent::protocol::{ControlPlane, Credential, ProtocolError};
    use nanoscale_core::agent::{AgentEvent, AgentReport, Convergence};
    use nanoscale_core::channel::{encode, ToAgent, ToControlPlane};
    use tokio::io::AsyncWriteExt;
    use tokio::time::timeout;

    let port = common::free_port();
    let cluster = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(&["--no-agent", "--cluster-listen", &cluster], &[]);
    let admin = server.bootstrap().await;
    let token = server
        .post("/api/v1/nodes/join-tokens", &admin, json!({"ttl_secs": 60}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let work = tempfile::tempdir().unwrap();
    nanoscale_agent::cluster::join(nanoscale_agent::cluster::JoinOptions {
        cluster: cluster.clone(),
        token,
        name: "c1".into(),
        labels: Default::default(),
        data_dir: work.path().to_owned(),
    })
    .await
    .unwrap();
    let identity = nanoscale_agent::cluster::identity_dir(work.path());
    let credential = Credential::Certificate(identity.clone());
    let control_plane = ControlPlane::new("", credential.clone()).unwrap();
    let connected = std::sync::Arc::new(tokio::sync::Notify::new());
    // Holds the channel as the agent does; returns the holding task once the
    // channel is up (a task handle, awaited later for how the channel ended).
    #[allow(clippy::async_yields_async)]
    let hold = async || {
        let holder = tokio::spawn({
            let (control_plane, connected) = (control_plane.clone(), connected.clone());
            async move { control_plane.hold_channel(&connected).await }
        });
        timeout(Duration::from_secs(10), connected.notified())
            .await
            .expect("the channel comes up");
        holder
    };
    let holder = hold().await;
    assert!(control_plane.channel_up());
    common::wait_for("the channel counted in /metrics", async || {
        let open = server.metric("nanoscale_agent_channels").await?;
        (open == 1.0).then_some(())
    })
    .await;
    let first = timeout(Duration::from_secs(5), control_plane.desired_state(None))
        .await
        .unwrap()
        .unwrap();

    // A deploy placed on every node reaches the agent over the channel.
    let repo = GitRepo::new();
    let project = common::id(
        &server
            .post("/api/v1/projects", &admin, json!({"name": "chan"}))
            .await,
    );
    let service = common::id(
        &server
            .post(
                &format!("/api/v1/projects/{project}/services"),
                &admin,
                json!({"name": "web", "source": {"git": repo.file_url(), "ref": "main"},
                       "placement": {"every_node": true}}),
            )
            .await,
    );
    let asked = std::time::Instant::now();
    server
        .post(
            &format!("/api/v1/services/{service}/deploy"),
            &admin,
            json!({}),
        )
        .await;
    let next = timeout(
        Duration::from_secs(10),
        control_plane.desired_state(Some(first.version)),
    )
    .await
    .expect("the change is pushed")
    .unwrap();
    assert!(next.version > first.version);
    assert_eq!(next.state.workloads.len(), 1, "{:?}", next.state);
    assert!(control_plane.channel_up(), "it came over the channel");
    println!("deploy → document on the channel: {:?}", asked.elapsed());

    // A report is acknowledged event by event, and the node shows it.
    let event = AgentEvent {
        id: uuid::Uuid::now_v7(),
        time: chrono::Utc::now(),
        kind: "document.applied".into(),
        severity: "info".into(),
        message: "applied over the channel".into(),
        service_id: None,
        release_id: None,
    };
    let mut report = AgentReport {
        target_version: next.version,
        applied_version: next.version,
        convergence: Convergence::Applied,
        problems: Vec::new(),
        instances: Vec::new(),
        releases: Vec::new(),
        events: vec![event.clone()],
        usage: None,
        traffic: Vec::new(),
        firewall: None,
    };
    let ack = control_plane.report(&report).await.unwrap();
    assert_eq!(ack.acknowledged, vec![event.id]);
    let nodes = server.get("/api/v1/nodes", &admin).await;
    let c1 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "c1")
        .unwrap()
        .clone();
    assert_eq!(c1["applied_version"], next.version, "{c1}");

    // A user's log stream of the service follows the node over its channel:
    // the agent is asked for the newest lines, then told to follow, and the
    // lines it sends appear in the stream; closing the stream stops the follow.
    let instance = "web-r1-0-abcd";
    report.events = Vec::new();
    report.instances = vec![nanoscale_core::agent::InstanceReport {
        id: instance.into(),
        service_id: service.parse().unwrap(),
        release_id: next.state.workloads[0].release_id,
        replica: 0,
        port: 5000,
        pid: Some(1),
        status: nanoscale_core::agent::InstanceStatus::Healthy,
        restarts: 0,
        started_at: chrono::Utc::now(),
        memory_bytes: None,
    }];
    control_plane.report(&report).await.unwrap();
    let line = |text: &str| nanoscale_core::api::LogEntry {
        at: chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
        stream: "stdout".into(),
        source: instance.into(),
        text: text.into(),
    };
    let before = line("written before the stream");
    let (follows_tx, mut follows) = tokio::sync::mpsc::unbounded_channel();
    let agent_logs = tokio::spawn({
        let control_plane = control_plane.clone();
        async move {
            loop {
                control_plane.logs_waiting().await;
                for follow in control_plane.take_follows() {
                    let _ = follows_tx.send(follow);
                }
                for request in control_plane.log_requests().await.unwrap() {
                    let answer = nanoscale_core::agent::LogAnswer {
                        entries: vec![before.clone()],
                    };
                    control_plane
                        .answer_log_request(request.id, answer)
                        .await
                        .unwrap();
                }
            }
        }
    });
    let mut stream = server
        .http
        .get(server.endpoint(&format!("/api/v1/services/{service}/logs/stream?tail=10")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut streamed = String::new();
    let mut read_until = async |needle: &str, stream: &mut reqwest::Response| {
        timeout(Duration::from_secs(5), async {
            while !streamed.contains(needle) {
                let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
                streamed.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{needle:?} not in the stream: {streamed}"));
    };
    read_until("written before the stream", &mut stream).await;
    let follow = timeout(Duration::from_secs(5), follows.recv())
        .await
        .expect("the stream follows the node")
        .unwrap();
    let nanoscale_agent::channel::Follow::Start { id, request, .. } = follow else {
        panic!("{follow:?}");
    };
    assert_eq!(request.instances, [instance]);
    assert_eq!(request.service, "web");
    let pushed = std::time::Instant::now();
    assert!(
        control_plane
            .send_log_lines(id, vec![line("pushed as written")])
            .await
    );
    read_until("pushed as written", &mut stream).await;
    println!("followed line → stream: {:?}", pushed.elapsed());
    assert_eq!(
        streamed.matches("written before the stream").count(),
        1,
        "each line once: {streamed}"
    );
    drop(stream);
    let stop = timeout(Duration::from_secs(5), follows.recv())
        .await
        .expect("closing the stream stops the follow")
        .unwrap();
    assert!(
        matches!(stop, nanoscale_agent::channel::Follow::Stop { id: stopped } if stopped == id),
        "{stop:?}"
    );
    agent_logs.abort();

    // A bad report is refused with the field, and the channel stays up.
    report.events = vec![event.clone(); nanoscale_core::agent::MAX_EVENTS_PER_REPORT + 1];
    match control_plane.report(&report).await {
        Err(ProtocolError::Status { status: 422, body }) => {
            assert!(body.starts_with("events:"), "{body}");
        }
        other => panic!("a report with too many events: {other:?}"),
    }
    assert!(control_plane.channel_up());

    // A node holds one channel: a newer one replaces the held one, which is
    // closed (the holder, stopped here, would otherwise take it back).
    holder.abort();
    let base = format!("https://{cluster}");
    let limit = nanoscale_core::channel::MAX_TO_AGENT;
    let older = hyper_util::rt::TokioIo::new(open(&base, &credential).await.unwrap());
    let (older, _older_writer) = tokio::io::split(older);
    let (older, first) = read_frame(older, limit).await;
    assert!(first.unwrap().is_some(), "its document");

    // Frames spoken by hand: an unknown message is refused and the channel goes
    // on; an oversized frame is refused and the channel closes.
    let raw = hyper_util::rt::TokioIo::new(open(&base, &credential).await.unwrap());
    let (reader, mut writer) = tokio::io::split(raw);
    let (_, end) = timeout(Duration::from_secs(5), read_frame(older, limit))
        .await
        .expect("the older channel is closed");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let (reader, frame) = read_frame(reader, limit).await;
    let message: ToAgent = serde_json::from_slice(&frame.unwrap().unwrap()).unwrap();
    assert!(matches!(message, ToAgent::Document { .. }), "{message:?}");
    let unknown = br#"{"type":"reboot","seq":9}"#;
    let mut frame = (unknown.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(unknown);
    write_frame(&mut writer, &frame).await.unwrap();
    let (reader, frame) = read_frame(reader, limit).await;
    match serde_json::from_slice::<ToAgent>(&frame.unwrap().unwrap()).unwrap() {
        ToAgent::Refused {
            seq: Some(9),
            status: 400,
            error,
        } => assert!(error.message.contains("unknown variant"), "{error:?}"),
        other => panic!("an unknown message: {other:?}"),
    }
    write_frame(&mut writer, &encode(&ToControlPlane::Ping))
        .await
        .unwrap();
    let (reader, frame) = read_frame(reader, limit).await;
    let pong: ToAgent = serde_json::from_slice(&frame.unwrap().unwrap()).unwrap();
    assert!(matches!(pong, ToAgent::Pong), "{pong:?}");
    writer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    writer.flush().await.unwrap();
    let (reader, frame) = read_frame(reader, limit).await;
    match serde_json::from_slice::<ToAgent>(&frame.unwrap().unwrap()).unwrap() {
        ToAgent::Refused {
            status: 400, error, ..
        } => {
            assert!(error.message.contains("over the limit"), "{error:?}");
        }
        other => panic!("an oversized frame: {other:?}"),
    }
    let (_, end) = read_frame(reader, limit).await;
    assert!(matches!(end, Ok(None)), "then the channel closes: {end:?}");

    // Without the upgrade, 400 naming it; without a certificate, 401.
    let endpoint = format!("{base}{}", nanoscale_core::channel::PATH);
    let mtls = nanoscale_agent::cluster::client(
        nanoscale_agent::cluster::client_config(&identity).unwrap(),
    )
    .unwrap();
    let response = mtls.get(&endpoint).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_field(&body).as_deref(), Some("upgrade"), "{body}");
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = anonymous
        .get(&endpoint)
        .header("connection", "upgrade")
        .header("upgrade", nanoscale_core::channel::PROTOCOL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Removing the node ends its channel at once; the holder hears 401.
    let holder = hold().await;
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/nodes/{}", c1["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let ended = timeout(Duration::from_secs(5), holder)
        .await
        .expect("the channel ends within 5 s")
        .unwrap();
    assert!(matches!(ended, ProtocolError::Unauthorized), "{ended:?}");
    assert!(!control_plane.channel_up());
}

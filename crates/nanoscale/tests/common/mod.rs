//! Harness for whole-process tests: runs the real `nanoscale` binary on a loopback
//! port with a private data dir, and talks to it over HTTP.
#![allow(dead_code, clippy::disallowed_methods)] // tests spawn the binary under test directly

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod container;
pub mod escape;
pub mod netns;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

pub struct TestServer {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// The node proxy's external listener, when the test chose it.
    pub proxy_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts `nanoscale up --no-agent` on a free loopback port (SQLite in a temp
    /// dir). No agent: these tests create services with made-up remote git URLs,
    /// which an agent would try to fetch from the internet.
    pub fn start() -> TestServer {
        Self::start_with(&["--no-agent"], &[])
    }

    /// `nanoscale up` with this host's agent, for deploy-engine tests (local
    /// repositories only). Its proxy listens on a free loopback port
    /// ([`TestServer::proxy_url`]); no internal network or DNS (tests that need
    /// them pass their own addresses to [`TestServer::start_with`]).
    pub fn start_with_agent() -> TestServer {
        let proxy = format!("127.0.0.1:{}", free_port());
        let mut server = Self::start_with(&agent_args(&proxy), &[]);
        server.proxy_url = Some(format!("http://{proxy}"));
        server
    }

    /// As [`TestServer::start_with_agent`], in `data_dir`, with `env` and its log
    /// (stderr) going to `stderr`.
    pub fn start_with_agent_logging(
        data_dir: &Path,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> TestServer {
        let proxy = format!("127.0.0.1:{}", free_port());
        let mut server =
            Self::spawn_logging(data_dir, "127.0.0.1:0", &agent_args(&proxy), env, stderr);
        server.proxy_url = Some(format!("http://{proxy}"));
        server
    }

    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut server = Self::spawn(&data_dir, args, env);
        server._dir = Some(dir);
        server
    }

    pub fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::spawn_listening(data_dir, "127.0.0.1:0", args, env)
    }

    /// `nanoscale up` on `listen` (tests inside a network namespace listen on
    /// the namespace's own address).
    pub fn spawn_listening(
        data_dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        Self::spawn_logging(data_dir, listen, args, env, Stdio::inherit())
    }

    /// `nanoscale up` with its log (stderr) going to `stderr`.
    pub fn spawn_logging(
        data_dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> TestServer {
        Self::spawn_as(data_dir, listen, args, env, stderr, None)
    }

    /// As [`TestServer::spawn_logging`]; with `user` (uid, gid), the whole of
    /// `nanoscale up` runs as that user, with no other groups.
    pub fn spawn_as(
        data_dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
        user: Option<(u32, u32)>,
    ) -> TestServer {
        Self::spawn_wrapped(
            Command::new(env!("CARGO_BIN_EXE_nanoscale")),
            data_dir,
            listen,
            args,
            env,
            stderr,
            user,
        )
    }

    /// `nanoscale up` run by `command`: the binary itself, or a program that
    /// runs it given it as its last words (`nsenter … --`, into a container).
    pub fn spawn_wrapped(
        mut command: Command,
        data_dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
        user: Option<(u32, u32)>,
    ) -> TestServer {
        if command.get_program() != env!("CARGO_BIN_EXE_nanoscale") {
            command.arg(env!("CARGO_BIN_EXE_nanoscale"));
        }
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            // From root, std drops the supplementary groups along with the uid.
            command.uid(uid).gid(gid);
        }
        command
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(args)
            .env("NANOSCALE_LOG", "warn")
            .env_remove("NANOSCALE_DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("spawn nanoscale up");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("API:") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches("/api/v1")
                        .to_owned();
                    let _ = sender.send(url);
                }
            }
        });
        let url = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its URL within 30 s");
        TestServer {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            proxy_url: None,
            _dir: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and
    /// the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.endpoint(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a request and returns only the status, without reading the body (for
    /// streams that never end).
    pub async fn status_of(&self, method: Method, path: &str, token: Option<&str>) -> StatusCode {
        let mut request = self.http.request(method, self.endpoint(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request").status()
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, Some(token), None).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, body) = self.call(Method::POST, path, Some(token), Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// Creates the service `spec` in `project`, deploys `commit`; its id.
    pub async fn create_and_deploy(
        &self,
        token: &str,
        project: &str,
        spec: Value,
        commit: &str,
    ) -> String {
        let service = self
            .post(&format!("/api/v1/projects/{project}/services"), token, spec)
            .await;
        let id = service["id"].as_str().expect("id").to_owned();
        self.post(
            &format!("/api/v1/services/{id}/deploy"),
            token,
            json!({"ref": commit}),
        )
        .await;
        id
    }

    /// Waits for a healthy instance of `service` other than `not` (an id, or "").
    pub async fn healthy_instance(&self, token: &str, service: &str, not: &str) -> Value {
        wait_for(&format!("a healthy instance of {service}"), async || {
            let instances = self
                .get(&format!("/api/v1/services/{service}/instances"), token)
                .await;
            instances
                .as_array()?
                .iter()
                .find(|instance| instance["status"] == "healthy" && instance["id"] != not)
                .cloned()
        })
        .await
    }

    /// Creates the first admin and returns an admin API token.
    /// The value of one unlabelled series of the control plane's `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(self.endpoint("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    pub async fn bootstrap(&self) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/setup",
                None,
                Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.token_for("admin", ADMIN_PASSWORD, "admin").await
    }

    /// Logs in with a password and mints an API token of `role` through the session.
    pub async fn token_for(&self, username: &str, password: &str, role: &str) -> String {
        let session = self.login(username, password).await;
        let response = self
            .http
            .post(self.endpoint("/api/v1/tokens"))
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .json(&json!({"name": format!("{username}-test"), "role": role}))
            .send()
            .await
            .expect("create token");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    pub async fn login(&self, username: &str, password: &str) -> Session {
        let response = self
            .http
            .post(self.endpoint("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK, "login {username}");
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_owned();
        let cookie = set_cookie
            .split(';')
            .next()
            .expect("cookie pair")
            .to_owned();
        let body: Value = response.json().await.expect("json");
        Session {
            cookie,
            set_cookie,
            csrf: body["csrf_token"].as_str().expect("csrf").to_owned(),
        }
    }

    /// Creates a user with `role` and returns (id, API token).
    pub async fn user(&self, admin: &str, username: &str, role: &str) -> (String, String) {
        let password = format!("{username}-password-long");
        let created = self
            .post(
                "/api/v1/users",
                admin,
                json!({"username": username, "password": password, "role": role}),
            )
            .await;
        let token = self.token_for(username, &password, role).await;
        (created["id"].as_str().expect("id").to_owned(), token)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_node_processes(&self.data_dir);
    }
}

pub struct Session {
    pub cookie: String,
    pub set_cookie: String,
    pub csrf: String,
}

/// A real git repository with two commits on `main` and a tag `v1` on the first.
pub struct GitRepo {
    pub path: PathBuf,
    pub first: String,
    pub second: String,
    _dir: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl GitRepo {
    pub fn new() -> GitRepo {
        // Under /tmp, which `nanoscale up` allows for file:// repositories.
        let dir = tempfile::Builder::new()
            .prefix("nanoscale-repo-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let path = dir.path().join("app.git");
        std::fs::create_dir(&path).expect("mkdir");
        git(&path, &["init", "-q", "-b", "main"]);
        std::fs::write(path.join("app.py"), "print('v1')\n").expect("write");
        git(&path, &["add", "."]);
        git(&path, &["commit", "-q", "-m", "first"]);
        let first = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["tag", "-a", "v1", "-m", "v1"]);
        std::fs::write(path.join("app.py"), "print('v2')\n").expect("write");
        git(&path, &["commit", "-q", "-am", "second"]);
        let second = git(&path, &["rev-parse", "HEAD"]);
        GitRepo {
            path,
            first,
            second,
            _dir: dir,
        }
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// `git daemon` serving one directory on a free loopback port; killed on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> GitDaemon {
        Self::serve_on(base, "127.0.0.1", free_port())
    }

    /// On `address:port` (inside a test's network namespace).
    pub fn serve_on(base: &Path, address: &str, port: u16) -> GitDaemon {
        let child = Command::new(git_daemon_program())
            .args([
                "--reuseaddr",
                "--export-all",
                &format!("--listen={address}"),
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address, port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `id` of an API answer.
pub fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// How long whole-system tests wait for a state (builds included).
pub const WAIT: Duration = Duration::from_secs(90);

/// Polls `probe` every 200 ms until it returns a value, failing after [`WAIT`].
pub async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// As [`wait_for`], for a probe that says what it saw when it is not there yet
/// (`Err`): a timeout then shows the last of it, not only that it timed out.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub async fn wait_showing<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `up`'s flags for a node with an agent and a proxy on `proxy`, and no internal
/// network or DNS.
pub fn agent_args(proxy: &str) -> [&str; 6] {
    [
        "--proxy-listen",
        proxy,
        "--internal-listen",
        "off",
        "--dns-listen",
        "off",
    ]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Asserts the one error shape and returns `error.field`.
pub fn error_field(body: &Value) -> Option<String> {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(error["code"].is_string(), "{body}");
    assert!(error["message"].is_string(), "{body}");
    error
        .get("field")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A fresh PostgreSQL database URL, or None (printing why) when none is configured.
pub async fn postgres_database() -> Option<String> {
    use sqlx::Connection;
    let Ok(base) = std::env::var("NANOSCALE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("NANOSCALE_TEST_REQUIRE_POSTGRES").is_err(),
            "NANOSCALE_TEST_REQUIRE_POSTGRES is set but NANOSCALE_TEST_POSTGRES_URL is not"
        );
        eprintln!("skipping: NANOSCALE_TEST_POSTGRES_URL is not set (scripts/test sets it)");
        return None;
    };
    let name = format!("nanoscale_api_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("url path");
    Some(format!("{prefix}/{name}"))
}

/// The `git-daemon` program itself: killing a `git daemon` wrapper would leave the
/// daemon running.
fn git_daemon_program() -> std::path::PathBuf {
    let output = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git --exec-path");
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("git-daemon")
}

/// Kills what a test's node left running: the agent (its pid is in its lock file)
/// and every shim and app under the data dir, so no test leaks processes.
pub fn kill_node_processes(data_dir: &Path) {
    let kill = |args: &[&str]| {
        let _ = Command::new("kill")
            .args(args)
            .stderr(Stdio::null())
            .status();
    };
    let kill_group = |pid: &str| {
        kill(&["-KILL", "--", &format!("-{pid}")]);
        kill(&["-KILL", pid]);
    };
    for lock in ["agent/agent.lock", "proxy/proxy.lock"] {
        if let Ok(text) = std::fs::read_to_string(data_dir.join(lock)) {
            if let Some(pid) = text.split_whitespace().next() {
                kill(&["-KILL", pid]);
            }
        }
    }
    // A node's marked block in /etc/hosts (tests that turn it on), even when the
    // test failed before its services were removed.
    let marker = format!("nanoscale {}", data_dir.join("proxy").display());
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        if hosts.contains(&marker) {
            let mut inside = false;
            let kept: String = hosts
                .lines()
                .filter(|line| {
                    if line.ends_with(&marker) {
                        inside = line.starts_with("# BEGIN");
                        return false;
                    }
                    !inside
                })
                .map(|line| format!("{line}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
    let Ok(services) = std::fs::read_dir(data_dir.join("apps")) else {
        return;
    };
    for service in services.flatten() {
        for kind in ["instances", "builds"] {
            let Ok(entries) = std::fs::read_dir(service.path().join(kind)) else {
                continue;
            };
            for entry in entries.flatten() {
                for file in ["shim.pid", "app.pid"] {
                    if let Ok(text) = std::fs::read_to_string(entry.path().join(file)) {
                        if let Some(pid) = text.split_whitespace().next() {
                            kill_group(pid);
                        }
                    }
                }
            }
        }
    }
}

/// A git repository whose commits are fixture apps from `tests/fixtures/apps`:
/// each `(fixture, version)` becomes one commit replacing the whole tree, with a
/// `VERSION` file. Returns the repository and the commit ids in order.
pub fn fixture_repo(commits: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::Builder::new()
        .prefix("nanoscale-fixture-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let path = dir.path().join("app.git");
    std::fs::create_dir(&path).expect("mkdir");
    git(&path, &["init", "-q", "-b", "main"]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps");
    let mut ids = Vec::new();
    for (fixture, version) in commits {
        for entry in std::fs::read_dir(&path).expect("read repo").flatten() {
            if entry.file_name() != ".git" {
                let target = entry.path();
                if target.is_dir() {
                    std::fs::remove_dir_all(target).expect("clear");
                } else {
                    std::fs::remove_file(target).expect("clear");
                }
            }
        }
        copy_tree(&fixtures.join(fixture), &path);
        std::fs::write(path.join("VERSION"), version).expect("write VERSION");
        git(&path, &["add", "-A"]);
        git(
            &path,
            &["commit", "-q", "-m", &format!("{fixture} {version}")],
        );
        ids.push(git(&path, &["rev-parse", "HEAD"]));
    }
    (dir, path, ids)
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("fixture exists").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Switches a swap file off and deletes it however a test ends: a failed
/// assertion must not leave the host swapping to a file in a temp dir.
pub struct SwapOff(pub PathBuf);

impl Drop for SwapOff {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/swapoff").arg(&self.0).output();
        let _ = std::fs::remove_file(&self.0);
    }
}

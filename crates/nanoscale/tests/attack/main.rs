//! The attack suite (issue 7): hostile input at every text field of every API
//! route, every path and query parameter, every CLI argument, and hostile git
//! repositories, against the real `nanoscale up`. Each payload must be refused
//! with a 4xx and the JSON error shape (naming the field when it is a field's
//! fault), or stored as plain text; none may run (canary files), escape or cause
//! a 5xx.
//!
//! The routes and their body schemas come from the served OpenAPI document, so a
//! new route or field is attacked without anyone remembering to add it; a route
//! without a recipe here fails the suite.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    dead_code
)] // test code; runs the binary under test

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod payloads;
mod repos;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{id, GitRepo, TestServer, ADMIN_PASSWORD};
use payloads::Payload;
use reqwest::{Method, StatusCode};
use schema::TextField;
use serde_json::{json, Value};

/// What the suite saw; failures are collected so one run lists all of them.
#[derive(Default)]
pub struct Tally {
    pub requests: usize,
    pub refused: usize,
    pub accepted: usize,
    pub fields: BTreeSet<String>,
    pub statuses: BTreeMap<u16, usize>,
    pub failures: Vec<String>,
}

impl Tally {
    /// Checks one answer. `field` is the body field that carried the payload.
    fn check(&mut self, what: &str, status: StatusCode, body: &Value, field: Option<&TextField>) {
        let shown = body.to_string();
        let shown = clip(&shown, 400);
        self.requests += 1;
        *self.statuses.entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            self.failures.push(format!("{what}: {status} {shown}"));
            return;
        }
        if !status.is_client_error() {
            self.accepted += 1;
            if std::env::var_os("ATTACK_VERBOSE").is_some() {
                eprintln!("accepted: {what}");
            }
            return;
        }
        self.refused += 1;
        let error = &body["error"];
        let shaped = error["code"].as_str().is_some_and(|c| !c.is_empty())
            && error["message"].as_str().is_some_and(|m| !m.is_empty());
        if !shaped {
            self.failures.push(format!(
                "{what}: {status} without the JSON error shape: {shown}"
            ));
            return;
        }
        // A field's own fault must name it: the dashboard shows the message there.
        if let Some(field) = field {
            if error["code"] == "validation_failed" {
                let named = error["field"].as_str().unwrap_or_default();
                if !named.starts_with(&field.top()) {
                    self.failures.push(format!(
                        "{what}: the error names {named:?}, not {}: {shown}",
                        field.label()
                    ));
                }
            }
        }
    }

    fn report(&self, title: &str) {
        eprintln!(
            "{title}: {} requests, {} refused (4xx), {} accepted; by status {:?}",
            self.requests, self.refused, self.accepted, self.statuses
        );
    }

    fn assert_clean(&self) {
        let canaries = payloads::canaries_found();
        assert!(canaries.is_empty(), "a payload ran: {canaries:?}");
        assert!(
            self.failures.is_empty(),
            "{} failures, the first ones:\n{}",
            self.failures.len(),
            self.failures
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Percent-encodes everything but unreserved characters, `/` included, so a
/// payload arrives as one path segment or query value, exactly as sent.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Real targets for every route, so that a payload in one place meets valid
/// values everywhere else and reaches the check it is aimed at.
struct Targets {
    server: TestServer,
    /// Fresh, not yet set up: the target of `POST /api/v1/setup`.
    fresh: TestServer,
    admin: String,
    node_credential: String,
    repo: GitRepo,
    project: String,
    service: String,
    service_name: String,
    release: String,
    node: String,
    team: String,
    user: String,
    grant: String,
    token: String,
    counter: AtomicUsize,
}

impl Targets {
    async fn new() -> Targets {
        // With this host's agent: its node credential lets the suite reach the
        // agent routes as a node would. Services created here are never deployed.
        let server = TestServer::start_with_agent();
        let fresh = TestServer::start();
        let admin = server.bootstrap().await;
        let node_credential = std::fs::read_to_string(server.data_dir.join("agent/credential"))
            .expect("the agent's credential");
        let repo = GitRepo::new();
        let project = id(&server
            .post("/api/v1/projects", &admin, json!({"name": "attacked"}))
            .await);
        let service_name = "target".to_owned();
        let service = id(&server
            .post(
                &format!("/api/v1/projects/{project}/services"),
                &admin,
                // No replicas: the release exists but nothing of it runs.
                json!({"name": service_name, "replicas": 0,
                       "source": {"git": repo.file_url(), "ref": repo.first}}),
            )
            .await);
        let release = id(&server
            .post(
                &format!("/api/v1/services/{service}/deploy"),
                &admin,
                json!({}),
            )
            .await);
        let (status, body) = server
            .call(
                Method::PUT,
                &format!("/api/v1/services/{service}/env/FOO"),
                Some(&admin),
                Some(json!({"value": "bar", "secret": true})),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let node = id(&server.get("/api/v1/nodes", &admin).await[0]);
        let team = id(&server
            .post("/api/v1/teams", &admin, json!({"name": "red-team"}))
            .await);
        let (user, _) = server.user(&admin, "victim", "deployer").await;
        let grant = id(&server
            .post(
                &format!("/api/v1/projects/{project}/grants"),
                &admin,
                json!({"team_id": team}),
            )
            .await);
        let token = id(&server
            .post(
                "/api/v1/tokens",
                &admin,
                json!({"name": "kept", "role": "viewer"}),
            )
            .await);
        Targets {
            server,
            fresh,
            admin,
            node_credential,
            repo,
            project,
            service,
            service_name,
            release,
            node,
            team,
            user,
            grant,
            token,
            counter: AtomicUsize::new(0),
        }
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A valid value for path parameter `name` of `template`.
    fn param(&self, template: &str, name: &str) -> String {
        let id_of = |collection: &str| -> Option<String> {
            let value = match collection {
                "projects" => &self.project,
                "services" => &self.service,
                "releases" => &self.release,
                "nodes" => &self.node,
                "teams" => &self.team,
                "users" => &self.user,
                "tokens" => &self.token,
                // A log request nobody made: the route answers 404 for it.
                "log-requests" => return Some("0190a0b0-0000-7000-8000-0000000000aa".into()),
                _ => return None,
            };
            Some(value.clone())
        };
        match name {
            "project_id" => self.project.clone(),
            "grant_id" => self.grant.clone(),
            "user_id" => self.user.clone(),
            "name" => "FOO".into(),
            "id" => {
                let collection = template
                    .split('/')
                    .take_while(|segment| *segment != "{id}")
                    .last()
                    .unwrap_or_default();
                id_of(collection).unwrap_or_else(|| panic!("no target for {{id}} in {template}"))
            }
            other => panic!("no target for path parameter {other} of {template}"),
        }
    }

    /// A valid body for the operation, with every optional text field filled in
    /// so that the payload lands next to realistic values. `None`: the route
    /// takes no body.
    fn body(&self, operation: &str) -> Option<Value> {
        let spec = || {
            json!({
                "name": self.unique("svc"),
                "source": {"git": self.repo.file_url(), "ref": "main"},
                "build": "true",
                "run": "python3 app.py",
                "env": {"A": "1"},
                "secrets": ["A"],
                "routes": [{"host": "app.example.com", "path": "/app"}],
                "health": {"path": "/healthz"},
                "placement": {"nodes": ["local"], "labels": {"zone": "a"}},
                "replicas": 0,
            })
        };
        let body = match operation {
            "POST /api/v1/setup" => json!({"username": "admin", "password": ADMIN_PASSWORD}),
            "POST /api/v1/auth/login" => {
                json!({"username": "admin", "password": "not-the-password"})
            }
            "POST /api/v1/tokens" => json!({"name": self.unique("t"), "role": "viewer"}),
            "POST /api/v1/users" => json!({
                "username": self.unique("u"), "password": "a-long-password!", "role": "viewer"
            }),
            "PATCH /api/v1/users/{id}" => json!({
                "role": "deployer", "password": "another-long-password", "current_password": "x"
            }),
            "POST /api/v1/teams" => json!({"name": self.unique("team")}),
            "POST /api/v1/projects" => json!({"name": self.unique("p"), "env": {"A": "1"}}),
            "PATCH /api/v1/projects/{id}" => json!({"name": "attacked", "env": {"A": "1"}}),
            "POST /api/v1/projects/{id}/grants" => json!({"team_id": self.team}),
            "POST /api/v1/projects/{project_id}/services" => spec(),
            "PATCH /api/v1/services/{id}" => {
                let mut patch = spec();
                patch["name"] = json!(self.service_name);
                patch["source"]["ref"] = json!(self.repo.first);
                patch
            }
            "POST /api/v1/services/{id}/deploy" => json!({"ref": "main"}),
            "PUT /api/v1/services/{id}/env/{name}" => json!({"value": "bar", "secret": true}),
            "POST /api/v1/services/{id}/rollback" => json!({"release": 1}),
            "POST /api/v1/nodes/join-tokens" => json!({"ttl_secs": 60}),
            "PATCH /api/v1/nodes/{id}" => json!({"security_mode": "A", "ssh_from": ["10.0.0.0/8"]}),
            "PATCH /api/v1/settings" => {
                json!({"product_name": "Acme", "logo_url": "https://example.com/logo.png"})
            }
            "POST /api/v1/agent/report" => json!({
                "target_version": 0,
                "applied_version": 0,
                "convergence": "applying",
                "problems": ["disk is filling up"],
                "events": [{
                    "id": uuid::Uuid::now_v7().to_string(),
                    "time": "2026-12-01T00:00:00Z",
                    "kind": "instance.crashed",
                    "severity": "warning",
                    "message": "it crashed",
                    "service_id": self.service,
                    "release_id": self.release,
                }],
                "instances": [{
                    "id": "target-r1-0-abcd", "service_id": self.service,
                    "release_id": self.release, "replica": 0, "port": 20001,
                    "status": "starting", "restarts": 0, "started_at": "2026-12-01T00:00:00Z",
                }],
                "releases": [{
                    "release_id": self.release, "status": "building", "reason": "building",
                    "commit_info": {"author": "Mallory", "message": "first"},
                }],
                "firewall": {"mode": "A", "status": "applied", "message": "ok", "ssh_from": ["any"]},
            }),
            "POST /api/v1/agent/log-requests/{id}" => json!({
                "entries": [{"source": "build-1", "text": "a line"}]
            }),
            _ => return None,
        };
        Some(body)
    }

    /// Who calls: the node credential on agent routes, the admin elsewhere.
    fn caller(&self, template: &str) -> &str {
        if template.starts_with("/api/v1/agent/") {
            &self.node_credential
        } else {
            &self.admin
        }
    }

    fn target(&self, template: &str) -> &TestServer {
        if template == "/api/v1/setup" {
            &self.fresh
        } else {
            &self.server
        }
    }

    fn fill(&self, template: &str, replace: Option<(&str, &str)>) -> String {
        let mut path = template.to_owned();
        for name in path_params(template) {
            let value = match replace {
                Some((param, payload)) if param == name => encode(payload),
                _ => self.param(template, &name),
            };
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        path
    }

    async fn send(
        &self,
        method: &Method,
        template: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        self.send_with(&self.target(template).http, method, template, path, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    async fn send_with(
        &self,
        client: &reqwest::Client,
        method: &Method,
        template: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let server = self.target(template);
        let mut request = client
            .request(method.clone(), server.endpoint(path))
            .bearer_auth(self.caller(template));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

fn path_params(template: &str) -> Vec<String> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// Routes whose answer never ends (a stream) or is a large download.
fn skipped(operation: &str) -> bool {
    matches!(
        operation,
        "GET /api/v1/events/stream" | "GET /api/v1/cluster/binary"
    )
}

#[tokio::test]
async fn every_text_field_of_every_route_refuses_payloads_or_keeps_them_inert() {
    let targets = Targets::new().await;
    let document: Value = targets
        .server
        .http
        .get(targets.server.endpoint("/api/v1/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    let payloads = payloads::all();
    let mut tally = Tally::default();
    let mut operations = 0;
    let mut body_fields = 0;
    let mut params = 0;
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let name = format!("{method} {template}");
            if skipped(&name) {
                continue;
            }
            operations += 1;
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            if !schema.is_null() {
                let fields = schema::text_fields(&document, schema);
                assert!(targets.body(&name).is_some(), "no body recipe for {name}");
                body_fields += fields.len();
                attack_body(
                    &targets, &method, template, &name, &fields, &payloads, &mut tally,
                )
                .await;
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let param = parameter["name"].as_str().expect("name");
                params += 1;
                tally.fields.insert(format!("{name} {param}"));
                for payload in &payloads {
                    // A URI has room for 64 KiB at most: oversize here is 8 KiB.
                    let value = clip(&payload.value, 8 * 1024);
                    let (path, what) = match parameter["in"].as_str() {
                        Some("path") => (
                            targets.fill(template, Some((param, value))),
                            format!("{name} path {param} ← {}", payload.name),
                        ),
                        Some("query") => (
                            format!("{}?{param}={}", targets.fill(template, None), encode(value)),
                            format!("{name} query {param} ← {}", payload.name),
                        ),
                        other => panic!("{name}: parameter {param} in {other:?}"),
                    };
                    let body = targets
                        .body(&name)
                        .map(|body| serde_json::to_vec(&body).expect("json"));
                    let (status, answer) = targets.send(&method, template, &path, body).await;
                    tally.check(&what, status, &answer, None);
                }
            }
        }
    }
    tally.report(&format!(
        "API attack: {} payloads × ({body_fields} body fields + {params} parameters) of {operations} operations",
        payloads.len() + 1
    ));
    let (status, _) = targets
        .server
        .call(Method::GET, "/health/live", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "the control plane survived");
    tally.assert_clean();
}

/// Every payload, then invalid UTF-8, into each text field of one route's body,
/// and a body past the size limit.
async fn attack_body(
    targets: &Targets,
    method: &Method,
    template: &str,
    name: &str,
    fields: &[TextField],
    payloads: &[Payload],
    tally: &mut Tally,
) {
    let path = targets.fill(template, None);
    for field in fields {
        tally.fields.insert(format!("{name} {}", field.label()));
        for payload in payloads {
            let mut body = targets.body(name).expect("recipe");
            schema::inject(&mut body, &field.steps, &payload.value);
            let bytes = serde_json::to_vec(&body).expect("json");
            let (status, answer) = targets.send(method, template, &path, Some(bytes)).await;
            let what = format!(
                "{name} {} ← {}/{}",
                field.label(),
                payload.kind,
                payload.name
            );
            tally.check(&what, status, &answer, Some(field));
            if status.is_success() && must_refuse(name, &field.label(), payload) {
                tally
                    .failures
                    .push(format!("{what}: accepted by a field that must refuse it"));
            }
        }
        let mut body = targets.body(name).expect("recipe");
        schema::inject(&mut body, &field.steps, payloads::INVALID_UTF8_MARKER);
        let text = serde_json::to_vec(&body).expect("json");
        let bytes = replace_bytes(
            &text,
            payloads::INVALID_UTF8_MARKER.as_bytes(),
            payloads::INVALID_UTF8,
        );
        let (status, answer) = targets.send(method, template, &path, Some(bytes)).await;
        let what = format!("{name} {} ← invalid UTF-8", field.label());
        if status != StatusCode::BAD_REQUEST {
            tally
                .failures
                .push(format!("{what}: {status} instead of 400: {answer}"));
        }
        tally.check(&what, status, &answer, None);
    }
    // 2 MiB, twice the API's body limit.
    let mut body = targets.body(name).expect("recipe");
    body["padding"] = json!("P".repeat(2 * 1024 * 1024));
    let bytes = serde_json::to_vec(&body).expect("json");
    // On a connection of its own. The server answers from the declared length at
    // once and reads the rest away, so the client, still writing, gets the 413
    // and not a reset (the flake this once was).
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (status, answer) = targets
        .send_with(&once, method, template, &path, Some(bytes))
        .await
        .unwrap_or_else(|error| panic!("{name} with a 2 MiB body: {error}"));
    let what = format!("{name} ← 2 MiB body");
    if status != StatusCode::PAYLOAD_TOO_LARGE {
        tally
            .failures
            .push(format!("{what}: {status} instead of 413: {answer}"));
    }
    tally.check(&what, status, &answer, None);
}

/// `value` cut to at most `max` bytes, on a character boundary.
fn clip(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Fields whose values are names, identifiers or enumerations: no payload is
/// one, so each must be refused (free text, commands, env values, passwords
/// and filters may store a payload, as plain text). Git references and URLs
/// refuse every git-option payload, though `$(...)` is a legal branch name.
fn must_refuse(operation: &str, label: &str, payload: &Payload) -> bool {
    const STRICT: [&str; 17] = [
        "name",
        "username",
        "role",
        "source.git",
        "routes[0].host",
        "secrets[0]",
        "placement.nodes[0]",
        "env{key}",
        "team_id",
        "user_id",
        "security_mode",
        "ssh_from[0]",
        "events[0].severity",
        "events[0].kind",
        "firewall.status",
        "firewall.ssh_from[0]",
        "instances[0].id",
    ];
    // A token's name is a free label; "fd::17" is a real IPv6 address; "." and
    // ".." have the form of a dotted event kind.
    let free_label = operation == "POST /api/v1/tokens" && label == "name";
    let real_address = label.ends_with("ssh_from[0]") && payload.name == "fd-helper";
    let dotted_kind = label == "events[0].kind" && matches!(payload.value.as_str(), "." | "..");
    if STRICT.contains(&label) && !free_label && !real_address && !dotted_kind {
        return true;
    }
    matches!(label, "source.ref" | "ref") && payload.kind == "git"
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(index) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..index]);
        out.extend_from_slice(with);
        rest = &rest[index + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Sends `request` as raw bytes (no client normalizes its path) and returns the
/// status code and the whole answer; `None` when the server closed without one.
pub async fn raw_http(address: &str, request: &[u8]) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        stream.read_to_end(&mut answer),
    )
    .await;
    if read.is_err() && answer.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// Whether `text` holds any file of the host that must never be served.
pub fn leaks_host_file(text: &str) -> bool {
    [
        "root:x:0:0",
        "root:*:",
        "root:!",
        "[workspace]",
        "daemon:x:",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

#[tokio::test]
async fn raw_paths_and_malformed_http_reach_no_file_and_no_5xx() {
    let server = TestServer::start();
    let admin = server.bootstrap().await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let targets = [
        "/api/v1/../../../../etc/passwd",
        "/assets/../../../../../etc/passwd",
        "/assets/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%5c..%5c..%5c..%5cetc%5cpasswd",
        "/..;/..;/..;/etc/passwd",
        "//etc/passwd",
        "/assets/%00../../../../etc/passwd",
        "/assets/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/install.sh/../../../../etc/shadow",
        "/api/v1/projects/..%2f..%2fusers",
        "/api/v1/services/%2e%2e%2f%2e%2e%2fsetup",
        "/../../../../../../Cargo.toml",
        "/assets/../../Cargo.toml",
        "/index.html/../../../etc/passwd",
    ];
    let mut tried = 0;
    for target in targets {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n"
        );
        let (code, text) = raw_http(&address, request.as_bytes())
            .await
            .unwrap_or_else(|| panic!("GET {target}: no answer"));
        assert!(code < 500, "GET {target}: {code}\n{text}");
        assert!(
            !leaks_host_file(&text),
            "GET {target} served a host file:\n{text}"
        );
        tried += 1;
    }
    // Malformed HTTP: refused with a 4xx (or the connection closed), never a 5xx.
    let huge_header = format!(
        "GET /api/v1/me HTTP/1.1\r\nHost: {address}\r\nX-Big: {}\r\n\r\n",
        "h".repeat(200 * 1024)
    );
    let smuggled = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\nGET /api/v1/users HTTP/1.1\r\nHost: {address}\r\n\r\n"
    );
    let malformed: [(&str, Vec<u8>); 6] = [
        ("a 200 KiB header", huge_header.into_bytes()),
        (
            "Content-Length with Transfer-Encoding",
            smuggled.into_bytes(),
        ),
        (
            "a NUL in the method",
            b"GE\x00T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("a bare LF request line", b"GET /\nHost: x\n\n".to_vec()),
        (
            "a negative Content-Length",
            format!(
                "POST /api/v1/auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Length: -1\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "invalid UTF-8 in the path",
            b"GET /api/v1/projects/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
    ];
    for (what, request) in malformed {
        if let Some((code, text)) = raw_http(&address, &request).await {
            assert!(code < 500, "{what}: {code}\n{text}");
            // The smuggled second request must not have been answered as one.
            assert!(
                !text.contains("\"username\""),
                "{what}: a smuggled request was answered:\n{text}"
            );
        }
        tried += 1;
    }
    let (status, _) = server.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(status, StatusCode::OK, "the control plane survived");
    eprintln!("raw HTTP attack: {tried} requests, none reached a file or caused a 5xx");
}

/// Commands the CLI suite leaves out: they start servers or agents (`up`,
/// `join`, `node run`), talk to a URL given as an argument (`setup`, `login`:
/// a payload there would be a host to connect to), or end the session the suite
/// runs with (`logout`).
const CLI_SKIPPED: [&str; 7] = ["up", "join", "node run", "setup", "login", "logout", "help"];

#[test]
fn every_cli_command_refuses_payloads_cleanly() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = TestServer::start();
    let repo = GitRepo::new();
    let (admin, token_id, node_name) = runtime.block_on(async {
        let admin = server.bootstrap().await;
        let project = id(&server
            .post("/api/v1/projects", &admin, json!({"name": "attacked"}))
            .await);
        server
            .post(
                &format!("/api/v1/projects/{project}/services"),
                &admin,
                json!({"name": "target", "source": {"git": repo.file_url(), "ref": repo.first}}),
            )
            .await;
        let token = id(&server
            .post(
                "/api/v1/tokens",
                &admin,
                json!({"name": "kept", "role": "viewer"}),
            )
            .await);
        let node = server.get("/api/v1/nodes", &admin).await[0]["name"]
            .as_str()
            .expect("node name")
            .to_owned();
        (admin, token, node)
    });
    let bin = Path::new(env!("CARGO_BIN_EXE_nanoscale"));
    let leaves = cli::leaves(bin, &[], &CLI_SKIPPED);
    let counter = AtomicUsize::new(0);
    let valid = |leaf: &cli::Leaf, arg: &cli::Arg| -> String {
        let unique = || format!("x{}", counter.fetch_add(1, Ordering::Relaxed));
        match (leaf.name().as_str(), arg.value_name.as_str()) {
            ("env reveal", "NAME") => "FOO".into(),
            (_, "NAME") => unique(),
            (_, "PROJECT") => "attacked".into(),
            (_, "SERVICE") => "target".into(),
            (_, "URL") => repo.file_url(),
            (_, "REF") => "main".into(),
            (_, "CMD") => "true".into(),
            (_, "HOST_OR_PATH") => "/x".into(),
            (_, "REPLICAS") => "0".into(),
            (_, "PATH") => "/healthz".into(),
            (_, "NAME=VALUE") => "A=1".into(),
            (_, "NAMES") => "ZZZ".into(),
            (_, "RELEASE") => "1".into(),
            (_, "TAIL") => "10".into(),
            (_, "ROLE") => "viewer".into(),
            (_, "SECONDS") => "3600".into(),
            (_, "NODE") => node_name.clone(),
            (_, "A|B|C") => "A".into(),
            (_, "NETWORK") => "10.0.0.0/8".into(),
            (_, "ID") => token_id.clone(),
            (_, "LIMIT") => "10".into(),
            _ => "x".into(),
        }
    };
    // NUL cannot be in an argument (the kernel ends the string there).
    let payloads: Vec<Payload> = payloads::all()
        .into_iter()
        .filter(|payload| !payload.value.contains('\0'))
        .collect();
    let config = tempfile::tempdir().expect("tempdir");
    let config_file = config.path().join("config.toml");
    let env = [
        ("NANOSCALE_URL", server.url.as_str()),
        ("NANOSCALE_TOKEN", admin.as_str()),
        ("NANOSCALE_PASSWORD", "a-long-password!"),
        ("NANOSCALE_CLI_CONFIG", config_file.to_str().expect("utf-8")),
    ];
    let mut jobs = Vec::new();
    let mut arguments = 0;
    for leaf in &leaves {
        for (target, arg) in leaf.args.iter().enumerate() {
            arguments += 1;
            for payload in &payloads {
                let mut args = leaf.words.clone();
                for (index, other) in leaf.args.iter().enumerate() {
                    let value = if index == target {
                        payload.value.clone()
                    } else if other.required {
                        valid(leaf, other)
                    } else {
                        continue;
                    };
                    if !other.flag.is_empty() {
                        args.push(other.flag.clone());
                    }
                    // `--` keeps a payload that starts with '-' an argument.
                    if other.flag.is_empty() && value.starts_with('-') {
                        args.push("--".into());
                    }
                    args.push(value);
                }
                let what = format!(
                    "nanoscale {} {} ← {}/{}",
                    leaf.name(),
                    if arg.flag.is_empty() {
                        &arg.value_name
                    } else {
                        &arg.flag
                    },
                    payload.kind,
                    payload.name
                );
                jobs.push((what, args, payload.name == "terminal-escape"));
            }
        }
    }
    let runs = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((what, args, escape)) = jobs.get(index) else {
                    break;
                };
                let run = cli::run(bin, args, &env, std::time::Duration::from_secs(20));
                runs.fetch_add(1, Ordering::Relaxed);
                let stderr = String::from_utf8_lossy(&run.stderr);
                let problem = match run.code {
                    None => Some("was killed or hung".to_owned()),
                    Some(101) => Some(format!("panicked: {}", clip(&stderr, 300))),
                    Some(0) => None,
                    Some(_) if stderr.trim().is_empty() => {
                        Some("failed without saying why".to_owned())
                    }
                    Some(_) => None,
                };
                let printed_escape =
                    *escape && (run.stdout.contains(&0x1b) || run.stderr.contains(&0x1b));
                let problem = problem.or_else(|| {
                    printed_escape.then(|| "printed a terminal escape sequence".to_owned())
                });
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("{what}: {problem}"));
                }
            });
        }
    });
    eprintln!(
        "CLI attack: {} payloads × {arguments} arguments of {} commands: {} runs",
        payloads.len(),
        leaves.len(),
        runs.load(Ordering::Relaxed)
    );
    // Nothing a payload named was lost: the session and the targets are intact.
    runtime.block_on(async {
        let services = server.get("/api/v1/services", &admin).await;
        assert!(
            services
                .as_array()
                .expect("list")
                .iter()
                .any(|s| s["name"] == "target"),
            "the target service is gone: {services}"
        );
        let tokens = server.get("/api/v1/tokens", &admin).await;
        assert!(
            tokens
                .as_array()
                .expect("list")
                .iter()
                .any(|t| t["id"] == token_id.as_str()),
            "the kept token was revoked: {tokens}"
        );
    });
    let failures = failures.into_inner().expect("lock");
    let canaries = payloads::canaries_found();
    assert!(canaries.is_empty(), "a payload ran: {canaries:?}");
    assert!(
        failures.is_empty(),
        "{} failures, the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn hostile_repositories_neither_run_commands_nor_leak_host_files() {
    let server = TestServer::start_with_agent();
    let admin = server.bootstrap().await;
    let proxy = server.proxy_url.clone().expect("proxy");
    let project = id(&server
        .post("/api/v1/projects", &admin, json!({"name": "hostile"}))
        .await);
    let create = async |spec: Value| -> String {
        id(&server
            .post(
                &format!("/api/v1/projects/{project}/services"),
                &admin,
                spec,
            )
            .await)
    };
    let release_status = async |service: &str, wanted: &[&str]| -> Value {
        common::wait_for(&format!("a release of {service} to settle"), async || {
            let releases = server
                .get(&format!("/api/v1/services/{service}/releases"), &admin)
                .await;
            let release = releases.as_array()?.first()?.clone();
            wanted
                .contains(&release["status"].as_str()?)
                .then_some(release)
        })
        .await
    };
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps/python-http");
    let canary = format!("/tmp/{}repo", payloads::canary_prefix());

    // 1. Branch names that are shell commands: deployed as names, never run.
    let (branchy, branches) = repos::app_on_branches_named_like_commands(&app, &canary);
    let mut deployed = 0;
    for (index, branch) in branches.iter().enumerate() {
        let service = create(json!({
            "name": format!("branch{index}"),
            "source": {"git": branchy.url(), "ref": branch},
            "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
        }))
        .await;
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/api/v1/services/{service}/deploy"),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "deploy {branch:?}: {body}");
        let release = release_status(&service, &["live", "failed"]).await;
        assert_eq!(release["status"], "live", "{branch:?}: {release}");
        deployed += 1;
    }

    // 2. A static site that links to /etc/shadow, /etc and the directories
    // above it: the proxy serves the page and none of the links.
    let site = static_site_with_symlinks_service(&server, &admin, &project).await;
    release_status(&site, &["live"]).await;
    let http = reqwest::Client::new();
    let through = async |path: &str| -> (u16, String) {
        let response = http
            .get(format!("{proxy}{path}"))
            .header("host", "hostile.test")
            .send()
            .await
            .expect("proxy answers");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    };
    let page = common::wait_for("the hostile site", async || {
        let (status, body) = through("/").await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(page.contains("hostile site"), "{page}");
    let escapes = [
        "/leak",
        "/passwd.html",
        "/etc/passwd",
        "/etc/shadow",
        "/up/etc/passwd",
        "/up/etc/shadow",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    ];
    for path in escapes {
        let (status, body) = through(path).await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(!leaks_host_file(&body), "{path} leaked a host file: {body}");
    }
    let raw_address = proxy.trim_start_matches("http://");
    for target in [
        "/../../../../etc/passwd",
        "/up/../../../etc/shadow",
        "/./etc/./passwd",
    ] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: hostile.test\r\nConnection: close\r\n\r\n");
        let (code, text) = raw_http(raw_address, request.as_bytes())
            .await
            .unwrap_or_else(|| panic!("{target}: no answer"));
        assert!(code < 500, "{target}: {code} {text}");
        assert!(
            !leaks_host_file(&text),
            "{target} leaked a host file: {text}"
        );
    }

    // 3. nanoscale.toml is a link to /etc/shadow: the release fails naming the
    // file, and no line of the shadow file reaches a reason, an event or a log.
    let linked = repos::config_linked_to_shadow(&app);
    let config =
        create(json!({"name": "linked", "source": {"git": linked.url(), "ref": "main"}})).await;
    server
        .post(
            &format!("/api/v1/services/{config}/deploy"),
            &admin,
            json!({}),
        )
        .await;
    let failed = release_status(&config, &["failed", "live"]).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("nanoscale.toml"),
        "the reason names the file: {failed}"
    );
    let events = server
        .get(&format!("/api/v1/events?service_id={config}"), &admin)
        .await;
    let build_log = server
        .get(&format!("/api/v1/services/{config}/logs?build=1"), &admin)
        .await;
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    for line in shadow.lines().filter(|line| line.len() > 8) {
        for (what, text) in [
            ("reason", reason.to_owned()),
            ("events", events.to_string()),
            ("build log", build_log.to_string()),
        ] {
            assert!(
                !text.contains(line),
                "the {what} quotes /etc/shadow: {text}"
            );
        }
    }

    let canaries = payloads::canaries_found();
    assert!(
        canaries.is_empty(),
        "a branch name ran as a command: {canaries:?}"
    );
    eprintln!(
        "hostile repositories: {deployed} branches named like commands deployed inert; \
         {} symlink escapes through the proxy refused; a config linked to /etc/shadow refused",
        escapes.len() + 3
    );
}

async fn static_site_with_symlinks_service(
    server: &TestServer,
    admin: &str,
    project: &str,
) -> String {
    // The repository must outlive the deploy: leak it to the end of the test
    // process (it is a few files under /tmp).
    let repo = Box::leak(Box::new(repos::static_site_with_symlinks()));
    let service = id(&server
        .post(
            &format!("/api/v1/projects/{project}/services"),
            admin,
            json!({"name": "site", "source": {"git": repo.url(), "ref": "main"},
                   "routes": [{"host": "hostile.test"}]}),
        )
        .await);
    server
        .post(
            &format!("/api/v1/services/{service}/deploy"),
            admin,
            json!({}),
        )
        .await;
    service
}

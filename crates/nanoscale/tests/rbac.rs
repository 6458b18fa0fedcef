//! The role matrix: every operation of the served OpenAPI document, called as each
//! identity, must answer exactly the expected class (2xx, 401, 403, 409). A route
//! added without a row here fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{id, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Viewer,
    /// A deployer who created the fixture project.
    Owner,
    /// A deployer with no grant on it.
    Stranger,
    Admin,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Viewer,
    Who::Owner,
    Who::Stranger,
    Who::Admin,
];

#[derive(Debug, Clone, Copy)]
enum Policy {
    Public,
    /// Public, but the request is refused by state (setup done, bad password).
    PublicStatus(u16),
    Authenticated,
    Admin,
    /// Deployers and admins.
    Deployer,
    /// The project's owner (or a grantee) and admins.
    Project,
    /// Node credentials only (the agent protocol).
    NodeOnly,
    /// A valid join token only (the binary a joining server downloads).
    JoinTokenOnly,
    /// Admins, but the request is refused by state (the control plane's own node
    /// cannot be removed).
    AdminStatus(u16),
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Success,
    Status(u16),
}

fn expected(policy: Policy, who: Who) -> Expect {
    use Expect::{Status, Success};
    match (policy, who) {
        (Policy::Public, _) => Success,
        (Policy::PublicStatus(code), _) => Status(code),
        // No user, however privileged, speaks the agent protocol.
        (Policy::NodeOnly | Policy::JoinTokenOnly, _) => Status(401),
        (Policy::AdminStatus(code), Who::Admin) => Status(code),
        (Policy::AdminStatus(_), Who::Anonymous) => Status(401),
        (Policy::AdminStatus(_), _) => Status(403),
        (_, Who::Anonymous) => Status(401),
        (Policy::Authenticated, _) => Success,
        (Policy::Admin, Who::Admin) => Success,
        (Policy::Admin, _) => Status(403),
        (Policy::Deployer, Who::Viewer) => Status(403),
        (Policy::Deployer, _) => Success,
        (Policy::Project, Who::Owner | Who::Admin) => Success,
        (Policy::Project, _) => Status(403),
    }
}

/// Every operation and who may call it. Keys are `METHOD path-template` as in the
/// OpenAPI document.
const MATRIX: &[(&str, Policy)] = &[
    ("GET /api/v1/setup", Policy::Public),
    ("POST /api/v1/setup", Policy::PublicStatus(409)),
    ("POST /api/v1/auth/login", Policy::PublicStatus(401)),
    ("POST /api/v1/auth/logout", Policy::Authenticated),
    ("GET /api/v1/me", Policy::Authenticated),
    ("GET /api/v1/tokens", Policy::Authenticated),
    ("POST /api/v1/tokens", Policy::Authenticated),
    ("DELETE /api/v1/tokens/{id}", Policy::Authenticated),
    ("GET /api/v1/users", Policy::Admin),
    ("POST /api/v1/users", Policy::Admin),
    ("GET /api/v1/users/{id}", Policy::Admin),
    ("PATCH /api/v1/users/{id}", Policy::Admin),
    ("DELETE /api/v1/users/{id}", Policy::Admin),
    ("GET /api/v1/teams", Policy::Authenticated),
    ("POST /api/v1/teams", Policy::Admin),
    ("DELETE /api/v1/teams/{id}", Policy::Admin),
    ("PUT /api/v1/teams/{id}/members/{user_id}", Policy::Admin),
    ("DELETE /api/v1/teams/{id}/members/{user_id}", Policy::Admin),
    ("GET /api/v1/projects", Policy::Authenticated),
    ("POST /api/v1/projects", Policy::Deployer),
    ("GET /api/v1/projects/{id}", Policy::Authenticated),
    ("PATCH /api/v1/projects/{id}", Policy::Project),
    ("DELETE /api/v1/projects/{id}", Policy::Project),
    ("GET /api/v1/projects/{id}/grants", Policy::Authenticated),
    ("POST /api/v1/projects/{id}/grants", Policy::Project),
    (
        "DELETE /api/v1/projects/{id}/grants/{grant_id}",
        Policy::Project,
    ),
    (
        "GET /api/v1/projects/{project_id}/services",
        Policy::Authenticated,
    ),
    (
        "POST /api/v1/projects/{project_id}/services",
        Policy::Project,
    ),
    ("GET /api/v1/services", Policy::Authenticated),
    ("GET /api/v1/services/{id}", Policy::Authenticated),
    ("PATCH /api/v1/services/{id}", Policy::Project),
    ("DELETE /api/v1/services/{id}", Policy::Project),
    ("GET /api/v1/services/{id}/env", Policy::Authenticated),
    ("PUT /api/v1/services/{id}/env/{name}", Policy::Project),
    ("DELETE /api/v1/services/{id}/env/{name}", Policy::Project),
    (
        "POST /api/v1/services/{id}/env/{name}/reveal",
        Policy::Project,
    ),
    ("POST /api/v1/services/{id}/deploy", Policy::Project),
    ("POST /api/v1/services/{id}/rollback", Policy::Project),
    ("GET /api/v1/services/{id}/releases", Policy::Authenticated),
    ("GET /api/v1/services/{id}/instances", Policy::Authenticated),
    ("GET /api/v1/services/{id}/metrics", Policy::Authenticated),
    ("GET /api/v1/services/{id}/logs", Policy::Project),
    ("GET /api/v1/services/{id}/logs/stream", Policy::Project),
    ("GET /api/v1/releases/{id}", Policy::Authenticated),
    ("GET /api/v1/nodes", Policy::Authenticated),
    ("GET /api/v1/nodes/{id}", Policy::Authenticated),
    ("DELETE /api/v1/nodes/{id}", Policy::AdminStatus(409)),
    ("PATCH /api/v1/nodes/{id}", Policy::Admin),
    ("POST /api/v1/nodes/join-tokens", Policy::Admin),
    ("GET /install.sh", Policy::Public),
    ("GET /api/v1/cluster/binary", Policy::JoinTokenOnly),
    ("GET /api/v1/cluster/binary/sha256", Policy::Public),
    ("GET /api/v1/nodes/{id}/desired-state", Policy::Admin),
    ("GET /api/v1/agent/channel", Policy::NodeOnly),
    ("GET /api/v1/agent/desired-state", Policy::NodeOnly),
    ("POST /api/v1/agent/report", Policy::NodeOnly),
    ("GET /api/v1/agent/log-requests", Policy::NodeOnly),
    ("POST /api/v1/agent/log-requests/{id}", Policy::NodeOnly),
    ("GET /api/v1/events", Policy::Authenticated),
    ("GET /api/v1/events/stream", Policy::Authenticated),
    ("GET /api/v1/audit", Policy::Admin),
    ("GET /api/v1/settings", Policy::Public),
    ("PATCH /api/v1/settings", Policy::Admin),
    ("GET /api/v1/openapi.json", Policy::Public),
    ("GET /health/live", Policy::Public),
    ("GET /health/ready", Policy::Public),
    ("GET /health/startup", Policy::Public),
    ("GET /metrics", Policy::Public),
];

struct Fixture {
    server: TestServer,
    admin: String,
    viewer: String,
    owner: String,
    stranger: String,
    project: String,
    service: String,
    release: String,
    node: String,
    counter: AtomicUsize,
}

impl Fixture {
    async fn new() -> Fixture {
        let server =
            TestServer::start_with(&["--no-agent", "--cluster-listen", "127.0.0.1:0"], &[]);
        let admin = server.bootstrap().await;
        let (_, viewer) = server.user(&admin, "viewer", "viewer").await;
        let (_, owner) = server.user(&admin, "owner", "deployer").await;
        let (_, stranger) = server.user(&admin, "stranger", "deployer").await;
        let project = id(&server
            .post("/api/v1/projects", &owner, json!({"name": "owned"}))
            .await);
        let sha = "c".repeat(40);
        let service = id(&server
            .post(
                &format!("/api/v1/projects/{project}/services"),
                &owner,
                json!({"name": "svc", "source": {"git": "https://example.com/s.git", "ref": sha}}),
            )
            .await);
        let release = id(&server
            .post(
                &format!("/api/v1/services/{service}/deploy"),
                &owner,
                json!({}),
            )
            .await);
        let node = id(&server.get("/api/v1/nodes", &admin).await[0]);
        Fixture {
            server,
            admin,
            viewer,
            owner,
            stranger,
            project,
            service,
            release,
            node,
            counter: AtomicUsize::new(0),
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Viewer => Some(&self.viewer),
            Who::Owner => Some(&self.owner),
            Who::Stranger => Some(&self.stranger),
            Who::Admin => Some(&self.admin),
        }
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// The concrete request for an operation as `who`, creating fresh targets for
    /// destructive operations so the order of calls does not matter.
    async fn request(&self, operation: &str, who: Who) -> (Method, String, Option<Value>) {
        let (method, template) = operation.split_once(' ').expect("METHOD path");
        let method: Method = method.parse().expect("method");
        let s = &self.server;
        let (p, svc) = (&self.project, &self.service);
        let (path, body) = match operation {
            "POST /api/v1/setup" => (
                template.to_owned(),
                Some(json!({"username": "late", "password": "late-password-long"})),
            ),
            "POST /api/v1/auth/login" => (
                template.to_owned(),
                Some(json!({"username": "admin", "password": "wrong-password-x"})),
            ),
            "POST /api/v1/tokens" => (
                template.to_owned(),
                Some(json!({"name": self.unique("t"), "role": "viewer"})),
            ),
            "DELETE /api/v1/tokens/{id}" => {
                let owner_token = self.token(who).unwrap_or(&self.admin);
                let token = s
                    .post(
                        "/api/v1/tokens",
                        owner_token,
                        json!({"name": self.unique("t"), "role": "viewer"}),
                    )
                    .await;
                (format!("/api/v1/tokens/{}", id(&token)), None)
            }
            "POST /api/v1/users" => (
                template.to_owned(),
                Some(
                    json!({"username": self.unique("u"), "password": "a-long-password!", "role": "viewer"}),
                ),
            ),
            "GET /api/v1/users/{id}" | "PATCH /api/v1/users/{id}" | "DELETE /api/v1/users/{id}" => {
                let user = s.post("/api/v1/users", &self.admin, json!({"username": self.unique("u"), "password": "a-long-password!", "role": "viewer"})).await;
                let body = (method == Method::PATCH).then(|| json!({"role": "deployer"}));
                (format!("/api/v1/users/{}", id(&user)), body)
            }
            "POST /api/v1/teams" => (
                template.to_owned(),
                Some(json!({"name": self.unique("team")})),
            ),
            "DELETE /api/v1/teams/{id}"
            | "PUT /api/v1/teams/{id}/members/{user_id}"
            | "DELETE /api/v1/teams/{id}/members/{user_id}" => {
                let team = s
                    .post(
                        "/api/v1/teams",
                        &self.admin,
                        json!({"name": self.unique("team")}),
                    )
                    .await;
                let me = s.get("/api/v1/me", &self.admin).await;
                let path = template
                    .replace("{id}", &id(&team))
                    .replace("{user_id}", me["user"]["id"].as_str().expect("id"));
                (path, None)
            }
            "POST /api/v1/projects" => {
                (template.to_owned(), Some(json!({"name": self.unique("p")})))
            }
            "PATCH /api/v1/projects/{id}" => (
                format!("/api/v1/projects/{p}"),
                Some(json!({"env": {"A": "1"}})),
            ),
            "DELETE /api/v1/projects/{id}" => {
                let project = s
                    .post(
                        "/api/v1/projects",
                        &self.owner,
                        json!({"name": self.unique("p")}),
                    )
                    .await;
                (format!("/api/v1/projects/{}", id(&project)), None)
            }
            "POST /api/v1/projects/{id}/grants" => {
                let team = s
                    .post(
                        "/api/v1/teams",
                        &self.admin,
                        json!({"name": self.unique("team")}),
                    )
                    .await;
                (
                    format!("/api/v1/projects/{p}/grants"),
                    Some(json!({"team_id": id(&team)})),
                )
            }
            "DELETE /api/v1/projects/{id}/grants/{grant_id}" => {
                let team = s
                    .post(
                        "/api/v1/teams",
                        &self.admin,
                        json!({"name": self.unique("team")}),
                    )
                    .await;
                let grant = s
                    .post(
                        &format!("/api/v1/projects/{p}/grants"),
                        &self.owner,
                        json!({"team_id": id(&team)}),
                    )
                    .await;
                (format!("/api/v1/projects/{p}/grants/{}", id(&grant)), None)
            }
            "POST /api/v1/projects/{project_id}/services" => (
                format!("/api/v1/projects/{p}/services"),
                Some(
                    json!({"name": self.unique("s"), "source": {"git": "https://example.com/x.git"}}),
                ),
            ),
            "PATCH /api/v1/services/{id}" => (
                format!("/api/v1/services/{svc}"),
                Some(json!({"replicas": 2})),
            ),
            "DELETE /api/v1/services/{id}" => {
                let service = s
                    .post(&format!("/api/v1/projects/{p}/services"), &self.owner, json!({"name": self.unique("s"), "source": {"git": "https://example.com/x.git"}}))
                    .await;
                (format!("/api/v1/services/{}", id(&service)), None)
            }
            "PUT /api/v1/services/{id}/env/{name}" => (
                format!("/api/v1/services/{svc}/env/FOO"),
                Some(json!({"value": "bar"})),
            ),
            "DELETE /api/v1/services/{id}/env/{name}" => {
                let name = self.unique("VAR_");
                let (status, _) = s
                    .call(
                        Method::PUT,
                        &format!("/api/v1/services/{svc}/env/{name}"),
                        Some(&self.owner),
                        Some(json!({"value": "x"})),
                    )
                    .await;
                assert!(status.is_success());
                (format!("/api/v1/services/{svc}/env/{name}"), None)
            }
            "POST /api/v1/services/{id}/env/{name}/reveal" => {
                let name = self.unique("SECRET_");
                let (status, _) = s
                    .call(
                        Method::PUT,
                        &format!("/api/v1/services/{svc}/env/{name}"),
                        Some(&self.owner),
                        Some(json!({"value": "x", "secret": true})),
                    )
                    .await;
                assert!(status.is_success());
                (format!("/api/v1/services/{svc}/env/{name}/reveal"), None)
            }
            "POST /api/v1/services/{id}/deploy" => {
                (format!("/api/v1/services/{svc}/deploy"), Some(json!({})))
            }
            "POST /api/v1/services/{id}/rollback" => (
                format!("/api/v1/services/{svc}/rollback"),
                Some(json!({"release": 1})),
            ),
            "POST /api/v1/nodes/join-tokens" => (template.to_owned(), Some(json!({}))),
            "POST /api/v1/agent/log-requests/{id}" => (
                "/api/v1/agent/log-requests/0190a0b0-0000-7000-8000-0000000000aa".to_owned(),
                Some(json!({"entries": []})),
            ),
            "PATCH /api/v1/nodes/{id}" => (
                format!("/api/v1/nodes/{}", self.node),
                // A change that keeps the mode: the matrix is about who may.
                Some(json!({"ssh_from": []})),
            ),
            "PATCH /api/v1/settings" => {
                (template.to_owned(), Some(json!({"product_name": "Acme"})))
            }
            _ => {
                let path = template
                    .replace("{project_id}", p)
                    .replace("/projects/{id}", &format!("/projects/{p}"))
                    .replace("/services/{id}", &format!("/services/{svc}"))
                    .replace("/releases/{id}", &format!("/releases/{}", self.release))
                    .replace("/nodes/{id}", &format!("/nodes/{}", self.node));
                assert!(!path.contains('{'), "no request recipe for {operation}");
                (path, None)
            }
        };
        (method, path, body)
    }
}

/// The (method, path) pairs of the served document.
async fn documented_operations(server: &TestServer) -> BTreeSet<String> {
    let document: Value = server
        .http
        .get(server.endpoint("/api/v1/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert_eq!(
        document["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            operations.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations
}

#[tokio::test]
async fn every_route_answers_every_role_as_specified() {
    let fixture = Fixture::new().await;
    let documented = documented_operations(&fixture.server).await;
    let covered: BTreeSet<String> = MATRIX
        .iter()
        .map(|(operation, _)| (*operation).to_owned())
        .collect();
    assert_eq!(
        documented, covered,
        "the matrix must list exactly the documented operations"
    );

    let mut mismatches = Vec::new();
    for (operation, policy) in MATRIX {
        for who in EVERYONE {
            let (method, path, body) = fixture.request(operation, who).await;
            let (status, reply) = if operation.ends_with("/stream") {
                (
                    fixture
                        .server
                        .status_of(method, &path, fixture.token(who))
                        .await,
                    Value::Null,
                )
            } else {
                fixture
                    .server
                    .call(method, &path, fixture.token(who), body)
                    .await
            };
            let ok = match expected(*policy, who) {
                Expect::Success => status.is_success(),
                Expect::Status(code) => status.as_u16() == code,
            };
            if !ok {
                mismatches.push(format!(
                    "{operation} as {who:?}: expected {:?}, got {status} {reply}",
                    expected(*policy, who)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn grants_let_a_deployer_manage_a_project() {
    let fixture = Fixture::new().await;
    let s = &fixture.server;
    let path = format!("/api/v1/projects/{}", fixture.project);
    let (status, _) = s
        .call(
            Method::PATCH,
            &path,
            Some(&fixture.stranger),
            Some(json!({"env": {}})),
        )
        .await;
    assert_eq!(status, 403);
    let team = s
        .post("/api/v1/teams", &fixture.admin, json!({"name": "helpers"}))
        .await;
    let stranger_me = s.get("/api/v1/me", &fixture.stranger).await;
    let stranger_id = stranger_me["user"]["id"].as_str().expect("id");
    let (status, _) = s
        .call(
            Method::PUT,
            &format!("/api/v1/teams/{}/members/{stranger_id}", id(&team)),
            Some(&fixture.admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.post(
        &format!("{path}/grants"),
        &fixture.owner,
        json!({"team_id": id(&team)}),
    )
    .await;
    let (status, _) = s
        .call(
            Method::PATCH,
            &path,
            Some(&fixture.stranger),
            Some(json!({"env": {}})),
        )
        .await;
    assert_eq!(status, 200, "a team grant lets the deployer manage it");
    // A viewer stays read-only even when granted.
    let viewer_me = s.get("/api/v1/me", &fixture.viewer).await;
    s.post(
        &format!("{path}/grants"),
        &fixture.owner,
        json!({"user_id": viewer_me["user"]["id"]}),
    )
    .await;
    let (status, _) = s
        .call(
            Method::PATCH,
            &path,
            Some(&fixture.viewer),
            Some(json!({"env": {}})),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn demoting_a_user_caps_their_tokens() {
    let fixture = Fixture::new().await;
    let s = &fixture.server;
    let me = s.get("/api/v1/me", &fixture.owner).await;
    let owner_id = me["user"]["id"].as_str().expect("id");
    let (status, _) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{owner_id}"),
            Some(&fixture.admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&fixture.owner),
            Some(json!({"name": "after-demotion"})),
        )
        .await;
    assert_eq!(status, 403, "the old deployer token now acts as a viewer");
    let admin_me = s.get("/api/v1/me", &fixture.admin).await;
    let admin_id = admin_me["user"]["id"].as_str().expect("id");
    let (status, body) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{admin_id}"),
            Some(&fixture.admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 409, "the last admin cannot be demoted: {body}");
    // The audit entry says what changed; the refused demotion left none.
    let audit = s
        .get("/api/v1/audit?action=user.update", &fixture.admin)
        .await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(audit[0]["summary"]["before"]["role"], "deployer");
    assert_eq!(audit[0]["summary"]["after"]["role"], "viewer");
    assert_eq!(audit[0]["resource_id"], owner_id);
}

//! One store test suite, run against SQLite and PostgreSQL by the same functions.
//! PostgreSQL comes from `NANOSCALE_TEST_POSTGRES_URL` (scripts/test starts a
//! throwaway cluster); each run gets its own fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
use std::collections::BTreeMap;

use nanoscale_core::api::{AuditFilter, EventFilter, ReleaseStatus};
use nanoscale_core::service::ServiceSpec;
use nanoscale_core::Role;
use nanoscale_server::store::{
    Backend, Change, NewAudit, NewEvent, NewNode, NewRelease, Store, StoreError,
};
use uuid::Uuid;

fn change(action: &str) -> Change {
    Change {
        audit: NewAudit {
            actor_id: None,
            actor_name: "test".into(),
            action: action.into(),
            resource_type: "test".into(),
            resource_id: None,
            summary: serde_json::json!({"action": action}),
            request_id: "req-1".into(),
        },
        events: vec![],
    }
}

fn spec(name: &str) -> ServiceSpec {
    serde_json::from_value(
        serde_json::json!({"name": name, "source": {"git": "https://example.com/r.git"}}),
    )
    .expect("spec")
}

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    (
        Store::connect(&url, test_sealer())
            .await
            .expect("sqlite store"),
        dir,
    )
}

/// A fresh PostgreSQL database, or `None` (with the reason printed) when none is
/// configured and the run does not require one.
async fn postgres_store() -> Option<Store> {
    let Ok(base) = std::env::var("NANOSCALE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("NANOSCALE_TEST_REQUIRE_POSTGRES").is_err(),
            "NANOSCALE_TEST_REQUIRE_POSTGRES is set but NANOSCALE_TEST_POSTGRES_URL is not"
        );
        eprintln!("skipping the PostgreSQL half: NANOSCALE_TEST_POSTGRES_URL is not set (scripts/test sets it)");
        return None;
    };
    Some(
        Store::connect(&fresh_database(&base).await, test_sealer())
            .await
            .expect("postgres store"),
    )
}

async fn fresh_database(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("nanoscale_store_{}", Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{prefix}/{name}")
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite_store().await;
                    assert_eq!(store.backend(), super::Backend::Sqlite);
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(store) = super::postgres_store().await {
                        assert_eq!(store.backend(), super::Backend::Postgres);
                        super::$name(store).await;
                    }
                }
            )*
        }
    };
}

store_tests!(
    users_and_last_admin,
    first_admin_exactly_once,
    sessions_and_tokens,
    projects_services_and_grants,
    releases_are_numbered,
    events_filter_and_page,
    audit_is_written_with_changes,
    settings_and_nodes,
    migrations_are_recorded,
    project_list_sees_every_write,
    agent_reports_apply_once_and_move_releases_forward,
    desired_versions_move_once_per_hash,
);

async fn users_and_last_admin(store: Store) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    assert_eq!(admin.role, Role::Admin);
    let bob = store
        .create_user("bob", "h2", Role::Viewer, admin.id, |_| {
            change("user.create")
        })
        .await
        .expect("bob");
    let duplicate = store
        .create_user("bob", "h3", Role::Viewer, admin.id, |_| {
            change("user.create")
        })
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(
        store
            .find_user_by_name("bob")
            .await
            .expect("find")
            .expect("bob")
            .user
            .id,
        bob.id
    );
    assert!(store
        .find_user_by_name("nobody")
        .await
        .expect("find")
        .is_none());
    // The only admin can be neither demoted nor deleted.
    let demote = store
        .update_user(admin.id, Some(Role::Viewer), None, change("user.update"))
        .await;
    assert!(matches!(demote, Err(StoreError::Conflict(_))), "{demote:?}");
    let delete = store.delete_user(admin.id, change("user.delete")).await;
    assert!(matches!(delete, Err(StoreError::Conflict(_))), "{delete:?}");
    // With a second admin, the first can go.
    store
        .update_user(bob.id, Some(Role::Admin), None, change("user.update"))
        .await
        .expect("promote");
    store
        .delete_user(admin.id, change("user.delete"))
        .await
        .expect("delete first admin");
    assert_eq!(store.count_users().await.expect("count"), 1);
    assert!(matches!(
        store.get_user(admin.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn first_admin_exactly_once(store: Store) {
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_first_admin(&format!("admin{i}"), "h", |_| change("setup"))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let created = results
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count();
    assert_eq!(created, 1);
    assert_eq!(store.count_users().await.expect("count"), 1);
}

async fn sessions_and_tokens(store: Store) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    store
        .create_session(
            admin.id,
            "session-hash",
            "csrf",
            "127.0.0.1",
            change("auth.login"),
        )
        .await
        .expect("session");
    let session = store
        .find_session("session-hash")
        .await
        .expect("find")
        .expect("present");
    assert_eq!(session.user.user.id, admin.id);
    assert_eq!(session.csrf_token, "csrf");
    assert!(store.find_session("other").await.expect("find").is_none());
    store
        .delete_session(session.id, change("auth.logout"))
        .await
        .expect("delete");
    assert!(store
        .find_session("session-hash")
        .await
        .expect("find")
        .is_none());

    let token = store
        .create_token(admin.id, "ci", Role::Deployer, "token-hash", None, |_| {
            change("token.create")
        })
        .await
        .expect("token");
    let found = store
        .find_token("token-hash")
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.token.id, token.id);
    assert_eq!(found.token.role, Role::Deployer);
    store
        .touch_token("token-hash", &found.token)
        .await
        .expect("touch");
    let listed = store.list_tokens(Some(admin.id)).await.expect("list");
    assert!(listed[0].last_used_at.is_some());
    let expired = chrono::Utc::now() - chrono::Duration::seconds(1);
    store
        .create_token(
            admin.id,
            "old",
            Role::Viewer,
            "old-hash",
            Some(expired),
            |_| change("token.create"),
        )
        .await
        .expect("old");
    assert!(
        store.find_token("old-hash").await.expect("find").is_none(),
        "expired tokens do not authenticate"
    );
    store
        .delete_token(token.id, change("token.revoke"))
        .await
        .expect("revoke");
    assert!(store
        .find_token("token-hash")
        .await
        .expect("find")
        .is_none());
    assert!(matches!(
        store.delete_token(token.id, change("token.revoke")).await,
        Err(StoreError::NotFound)
    ));
}

async fn projects_services_and_grants(store: Store) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    let dev = store
        .create_user("dev", "h", Role::Deployer, admin.id, |_| change("c"))
        .await
        .expect("dev");
    let env = BTreeMap::from([("MODE".to_owned(), "prod".to_owned())]);
    let project = store
        .create_project("shop", &env, admin.id, |_| change("project.create"))
        .await
        .expect("project");
    assert!(matches!(
        store
            .create_project("shop", &env, admin.id, |_| change("p"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(!store
        .user_can_manage_project(dev.id, project.id)
        .await
        .expect("check"));
    let team = store
        .create_team("web", |_| change("team.create"))
        .await
        .expect("team");
    store
        .set_team_member(team.id, dev.id, true, change("team.add"))
        .await
        .expect("member");
    store
        .create_grant(project.id, None, Some(team.id), |_| change("grant"))
        .await
        .expect("grant");
    assert!(
        store
            .user_can_manage_project(dev.id, project.id)
            .await
            .expect("check"),
        "granted through the team"
    );
    assert!(matches!(
        store
            .create_grant(project.id, None, Some(team.id), |_| change("grant"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    let web = store
        .create_service(project.id, &spec("web"), dev.id, |_| {
            change("service.create")
        })
        .await
        .expect("service");
    assert!(
        matches!(
            store
                .create_service(project.id, &spec("web"), dev.id, |_| change("s"))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "service names are unique in the cluster"
    );
    let mut next = web.spec.clone();
    next.replicas = 3;
    let updated = store
        .update_service(web.id, &web.spec, &next, change("service.update"))
        .await
        .expect("update");
    assert_eq!(updated.spec.replicas, 3);
    assert_eq!(
        store
            .get_project(project.id)
            .await
            .expect("project")
            .service_count,
        1
    );
    assert_eq!(
        store
            .list_services(Some(project.id))
            .await
            .expect("list")
            .len(),
        1
    );

    store
        .delete_project(project.id, change("project.delete"))
        .await
        .expect("delete");
    assert!(
        matches!(store.get_service(web.id).await, Err(StoreError::NotFound)),
        "services go with their project"
    );
    assert!(store
        .list_grants(project.id)
        .await
        .expect("grants")
        .is_empty());
}

/// An admin, a project `p` and a service in it.
async fn admin_project_service(
    store: &Store,
    service: &str,
) -> (
    nanoscale_core::api::User,
    nanoscale_core::api::Project,
    nanoscale_core::api::Service,
) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    let project = store
        .create_project("p", &BTreeMap::new(), admin.id, |_| change("c"))
        .await
        .expect("project");
    let service = store
        .create_service(project.id, &spec(service), admin.id, |_| change("c"))
        .await
        .expect("service");
    (admin, project, service)
}

async fn releases_are_numbered(store: Store) {
    let (admin, _, service) = admin_project_service(&store, "api").await;
    let new = |commit: &str, rollback_of: Option<Uuid>| NewRelease {
        service_id: service.id,
        commit: commit.into(),
        git_ref: "main".into(),
        spec: spec("api"),
        rollback_of,
        created_by: admin.id,
    };
    let first = store
        .create_release(new(&"a".repeat(40), None), |_| change("deploy"))
        .await
        .expect("r1");
    let second = store
        .create_release(new(&"b".repeat(40), None), |_| change("deploy"))
        .await
        .expect("r2");
    let third = store
        .create_release(new(&"a".repeat(40), Some(first.id)), |_| change("rollback"))
        .await
        .expect("r3");
    assert_eq!((first.number, second.number, third.number), (1, 2, 3));
    assert_eq!(first.status, ReleaseStatus::Queued);
    assert_eq!(third.rollback_of, Some(first.id));
    let listed = store.list_releases(service.id).await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(
        store
            .get_service(service.id)
            .await
            .expect("service")
            .current_release,
        Some(third.id)
    );
    assert_eq!(
        store
            .find_release_by_number(service.id, 2)
            .await
            .expect("by number")
            .id,
        second.id
    );
    assert_eq!(
        store.release_spec(first.id).await.expect("spec").name,
        "api"
    );
}

async fn events_filter_and_page(store: Store) {
    let service = Uuid::now_v7();
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(NewEvent {
            service_id: Some(service),
            ..NewEvent::info("release.queued", format!("r{i}"))
        });
    }
    events.push(NewEvent::info("node.registered", "n"));
    events.push(NewEvent::info("release_x", "not a release.* kind"));
    store.record_events(events).await.expect("record");

    let by_service = store
        .list_events(&EventFilter {
            service_id: Some(service),
            ..EventFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(by_service.len(), 5);
    assert_eq!(by_service[0].message, "r4", "newest first");
    let prefix = store
        .list_events(&EventFilter {
            kind: Some("release.".into()),
            ..EventFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        prefix.len(),
        5,
        "prefix match is literal: release_x does not match release."
    );
    let page = store
        .list_events(&EventFilter {
            service_id: Some(service),
            limit: Some(2),
            before: Some(by_service[1].id),
            ..EventFilter::default()
        })
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        vec!["r2", "r1"]
    );
    let wildcard = store
        .list_events(&EventFilter {
            kind: Some("%".into()),
            ..EventFilter::default()
        })
        .await
        .expect("list");
    assert!(wildcard.is_empty(), "SQL wildcards are literal");
}

async fn audit_is_written_with_changes(store: Store) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    let mut with_event = change("project.create");
    with_event
        .events
        .push(NewEvent::info("project.created", "p"));
    store
        .create_project("audited", &BTreeMap::new(), admin.id, |_| with_event)
        .await
        .expect("project");
    // A failed mutation writes nothing: its audit entry rolls back with it.
    let _ = store
        .create_project("audited", &BTreeMap::new(), admin.id, |_| {
            change("project.create")
        })
        .await;
    let entries = store
        .list_audit(&AuditFilter {
            action: Some("project.create".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].request_id, "req-1");
    assert_eq!(entries[0].summary["action"], "project.create");
    let events = store
        .list_events(&EventFilter {
            kind: Some("project.created".into()),
            ..EventFilter::default()
        })
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
}

async fn settings_and_nodes(store: Store) {
    assert_eq!(
        store.settings().await.expect("settings").product_name,
        "NanoScale"
    );
    let set = store
        .put_settings(
            &[
                ("product_name", Some("Acme Cloud".into())),
                ("logo_url", Some("https://x/logo.png".into())),
            ],
            change("settings"),
        )
        .await
        .expect("put");
    assert_eq!(set.product_name, "Acme Cloud");
    let cleared = store
        .put_settings(&[("logo_url", None)], change("settings"))
        .await
        .expect("clear");
    assert_eq!(cleared.logo_url, None);

    let node = |cpus| NewNode {
        name: "n1".into(),
        address: "10.0.0.1".into(),
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        security_mode: "A".into(),
        cpus,
        memory_bytes: 1 << 30,
    };
    let (first, created) = store.upsert_node(node(2)).await.expect("node");
    assert!(created);
    assert_eq!(first.status, "pending");
    let (again, created) = store.upsert_node(node(4)).await.expect("node");
    assert!(!created);
    assert_eq!((again.id, again.capacity.cpus), (first.id, 4));
    assert_eq!(store.list_nodes().await.expect("nodes").len(), 1);
}

async fn migrations_are_recorded(store: Store) {
    assert!(store.migrations_done().await.expect("migrations"));
    store.ping().await.expect("ping");
}

async fn project_list_sees_every_write(store: Store) {
    let admin = store
        .create_first_admin("root", "hash", |_| change("setup"))
        .await
        .expect("admin");
    let project = store
        .create_project("listed", &BTreeMap::new(), admin.id, |_| change("c"))
        .await
        .expect("project");
    let first = store.list_projects().await.expect("list");
    assert_eq!((first.len(), first[0].service_count), (1, 0));
    // A second read with nothing changed may come from the cache and is identical.
    assert_eq!(store.list_projects().await.expect("list")[0].id, project.id);
    store
        .create_service(project.id, &spec("svc"), admin.id, |_| change("s"))
        .await
        .expect("service");
    assert_eq!(
        store.list_projects().await.expect("list")[0].service_count,
        1,
        "a service write refreshes the list"
    );
    store
        .update_project(project.id, Some("renamed"), None, change("u"))
        .await
        .expect("rename");
    assert_eq!(
        store.list_projects().await.expect("list")[0].name,
        "renamed"
    );
    store
        .delete_project(project.id, change("d"))
        .await
        .expect("delete");
    assert!(store.list_projects().await.expect("list").is_empty());
}

async fn agent_reports_apply_once_and_move_releases_forward(store: Store) {
    use nanoscale_core::agent::{
        AgentEvent, AgentReport, CommitInfo, Convergence, InstanceReport, InstanceStatus,
        ReleaseReport,
    };
    let (admin, project, service) = admin_project_service(&store, "web").await;
    let release = |commit: char| NewRelease {
        service_id: service.id,
        commit: commit.to_string().repeat(40),
        git_ref: "main".into(),
        spec: spec("web"),
        rollback_of: None,
        created_by: admin.id,
    };
    let first = store
        .create_release(release('a'), |_| change("d"))
        .await
        .expect("r1");
    let second = store
        .create_release(release('b'), |_| change("d"))
        .await
        .expect("r2");
    let (node, _) = store
        .upsert_node(NewNode {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            security_mode: "A".into(),
            cpus: 1,
            memory_bytes: 1 << 30,
        })
        .await
        .expect("node");
    store
        .set_node_credential(node.id, "hash-of-credential")
        .await
        .expect("credential");
    assert_eq!(
        store
            .node_by_credential("hash-of-credential")
            .await
            .expect("lookup")
            .map(|n| n.id),
        Some(node.id)
    );
    assert!(store
        .node_by_credential("other")
        .await
        .expect("lookup")
        .is_none());

    let event = AgentEvent {
        id: Uuid::now_v7(),
        time: chrono::Utc::now(),
        kind: "release.live".into(),
        severity: "info".into(),
        message: "web release 1 is live".into(),
        service_id: Some(service.id),
        release_id: Some(first.id),
    };
    let report = |status_first: ReleaseStatus, events: Vec<AgentEvent>| AgentReport {
        target_version: 3,
        applied_version: 3,
        convergence: Convergence::Applied,
        problems: vec![],
        instances: vec![InstanceReport {
            id: "web-r1-0-abcd".into(),
            service_id: service.id,
            release_id: first.id,
            replica: 0,
            port: 20000,
            pid: Some(4242),
            status: InstanceStatus::Healthy,
            restarts: 1,
            started_at: chrono::Utc::now(),
            memory_bytes: None,
        }],
        releases: vec![
            ReleaseReport {
                release_id: first.id,
                status: status_first,
                reason: None,
                commit_info: Some(CommitInfo {
                    author: "Ada".into(),
                    message: "first <b>commit</b>".into(),
                }),
            },
            ReleaseReport {
                release_id: Uuid::now_v7(),
                status: ReleaseStatus::Live,
                reason: None,
                commit_info: None,
            },
        ],
        events,
        usage: None,
        traffic: Vec::new(),
        firewall: None,
    };
    let node = store.get_node(node.id).await.expect("node");
    // The same report twice (a lost acknowledgement): the event is stored once.
    for _ in 0..2 {
        let acknowledged = store
            .apply_report(&node, &report(ReleaseStatus::Live, vec![event.clone()]))
            .await
            .expect("report");
        assert_eq!(acknowledged, vec![event.id]);
    }
    let stored = store
        .list_events(&EventFilter {
            kind: Some("release.live".into()),
            ..EventFilter::default()
        })
        .await
        .expect("events");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].node_id, Some(node.id));
    assert_eq!(stored[0].project_id, Some(project.id));
    let reported = store.get_node(node.id).await.expect("node");
    assert_eq!(
        (reported.status.as_str(), reported.applied_version),
        ("ready", 3)
    );
    assert_eq!(reported.convergence, Convergence::Applied);
    let instances = store.list_instances(service.id).await.expect("instances");
    assert_eq!(instances.len(), 1);
    assert_eq!(
        (instances[0].pid, instances[0].release_number),
        (Some(4242), 1)
    );
    assert_eq!(instances[0].node, "n1");
    let status = |id| {
        let store = store.clone();
        async move { store.get_release(id).await.expect("release").status }
    };
    assert_eq!(status(first.id).await, ReleaseStatus::Live);

    // Releases never move backwards; a new live one retires the old.
    store
        .apply_report(&node, &report(ReleaseStatus::Building, vec![]))
        .await
        .expect("report");
    assert_eq!(status(first.id).await, ReleaseStatus::Live);
    let mut newer = report(ReleaseStatus::Live, vec![]);
    newer.releases = vec![
        ReleaseReport {
            release_id: second.id,
            status: ReleaseStatus::Live,
            reason: None,
            commit_info: None,
        },
        // Another node's word on the first release's commit does not replace it.
        ReleaseReport {
            release_id: first.id,
            status: ReleaseStatus::Live,
            reason: None,
            commit_info: Some(CommitInfo {
                author: "Mallory".into(),
                message: "rewritten".into(),
            }),
        },
    ];
    newer.instances.clear();
    store.apply_report(&node, &newer).await.expect("report");
    assert_eq!(status(second.id).await, ReleaseStatus::Live);
    assert_eq!(status(first.id).await, ReleaseStatus::Retired);
    let described = store.get_release(first.id).await.expect("release");
    assert_eq!(
        (
            described.commit_author.as_deref(),
            described.commit_message.as_deref()
        ),
        (Some("Ada"), Some("first <b>commit</b>"))
    );
    assert_eq!(
        store
            .get_release(second.id)
            .await
            .expect("release")
            .commit_author,
        None
    );
    assert!(store
        .list_instances(service.id)
        .await
        .expect("instances")
        .is_empty());
}

/// Document versions move on only when a node's hash changes, in batches larger
/// than one statement's chunk, and the same hash twice moves nothing.
async fn desired_versions_move_once_per_hash(store: Store) {
    let mut ids = Vec::new();
    for index in 0..1_200 {
        let (node, _) = store
            .upsert_node(NewNode {
                name: format!("n{index:04}"),
                address: "10.0.0.1".into(),
                labels: BTreeMap::new(),
                security_mode: "A".into(),
                cpus: 1,
                memory_bytes: 1,
            })
            .await
            .expect("node");
        ids.push(node.id);
    }
    let hashes = |tag: &str| -> Vec<(Uuid, String)> {
        ids.iter().map(|id| (*id, format!("{tag}-{id}"))).collect()
    };
    let first = store
        .record_desired_many(&hashes("a"))
        .await
        .expect("record");
    assert_eq!(first.len(), ids.len());
    assert!(first.values().all(|version| *version == 1), "{first:?}");
    // The same hashes again (another replica's compilation): nothing moves.
    let again = store
        .record_desired_many(&hashes("a"))
        .await
        .expect("record");
    assert!(again.values().all(|version| *version == 1));
    let second = store
        .record_desired_many(&hashes("b"))
        .await
        .expect("record");
    assert!(second.values().all(|version| *version == 2));
    let nodes = store.nodes_with_desired().await.expect("nodes");
    assert_eq!(nodes.len(), ids.len());
    assert!(nodes
        .iter()
        .all(|(node, sha)| node.desired_version == 2 && sha.starts_with("b-")));
}

/// A fixed key: these tests read what they wrote, nothing more.
fn test_sealer() -> nanoscale_sealed::Sealer {
    nanoscale_sealed::Sealer::from_key(&[42u8; 32])
}

/// SQLite only: it reads the rows behind the store's back.
#[tokio::test]
async fn secret_env_values_are_sealed_in_rows_and_old_plain_rows_get_sealed() {
    use sqlx::{Connection, Row};
    let (store, dir) = sqlite_store().await;
    let (admin, _, service) = admin_project_service(&store, "vault").await;
    let mut secret_spec = service.spec.clone();
    secret_spec
        .env
        .insert("TOKEN".into(), "hunter2-in-clear".into());
    secret_spec.secrets.insert("TOKEN".into());
    let updated = store
        .update_service(service.id, &service.spec, &secret_spec, change("u"))
        .await
        .expect("update");
    assert_eq!(updated.spec.env["TOKEN"], "hunter2-in-clear");
    store
        .create_release(
            NewRelease {
                service_id: service.id,
                commit: "a".repeat(40),
                git_ref: "main".into(),
                spec: secret_spec.clone(),
                rollback_of: None,
                created_by: admin.id,
            },
            |_| change("deploy"),
        )
        .await
        .expect("release");

    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut raw = sqlx::SqliteConnection::connect(&url).await.expect("raw");
    let rows = |table: &'static str| format!("SELECT id, spec_json FROM {table}");
    for table in ["services", "releases"] {
        for row in sqlx::query(&rows(table)).fetch_all(&mut raw).await.unwrap() {
            let text: String = row.get("spec_json");
            assert!(!text.contains("hunter2"), "{table}: {text}");
            assert!(text.contains("nsenc1:"), "{table}: {text}");
        }
    }
    // A row from before sealing (plain text) is sealed at the next start...
    let plain = serde_json::to_string(&secret_spec).unwrap();
    sqlx::query("UPDATE services SET spec_json = $1")
        .bind(&plain)
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(store.seal_plain_secrets().await.expect("seal"), 1);
    assert_eq!(store.seal_plain_secrets().await.expect("again"), 0);
    let text: String = sqlx::query_scalar("SELECT spec_json FROM services")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    // ...and still reads (and updates: the comparison is of opened specs) as before.
    let read = store.get_service(service.id).await.expect("read");
    assert_eq!(read.spec, secret_spec);
    let mut next = read.spec.clone();
    next.replicas = 2;
    store
        .update_service(service.id, &read.spec, &next, change("u2"))
        .await
        .expect("a sealed row is not stale");
    assert!(matches!(
        store
            .update_service(service.id, &read.spec, &next, change("u3"))
            .await,
        Err(StoreError::Stale)
    ));

    // Another key does not open it, and says so.
    let other = Store::connect(
        &format!("{url}?mode=rwc"),
        nanoscale_sealed::Sealer::from_key(&[1u8; 32]),
    )
    .await
    .expect("store");
    let error = other.get_service(service.id).await.unwrap_err().to_string();
    assert!(error.contains("secret.key"), "{error}");
}

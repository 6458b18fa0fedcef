//! Whole-system tests of the traffic layer: the real `nanoscale up` (control plane,
//! agent, proxy, shims), real apps from `tests/fixtures/apps`, real clients (curl,
//! dig, a load loop) on loopback addresses only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
#![allow(clippy::disallowed_methods)] // tests run clients and signal processes directly

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fixture_repo, wait_for, TestServer};
use serde_json::{json, Value};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A loopback address of its own for this test run (127.x.y.z), so the internal
/// listener can take port 80 and the DNS responder port 53 without meeting
/// another test or a resolver of the host.
fn private_loopback() -> String {
    let n = std::process::id();
    format!("127.{}.{}.{}", 100 + (n % 100), (n / 100) % 250 + 1, 10)
}

/// Requests through the proxy until stopped; returns (ok, failures).
fn hammer(
    url: String,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (mut ok, mut failures, mut bodies) = (0u64, Vec::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match client.get(&url).header("host", host).send().await {
                Ok(response) if response.status() == 200 => {
                    let body = response.text().await.unwrap_or_default();
                    if !bodies.contains(&body) {
                        bodies.push(body);
                    }
                    ok += 1;
                }
                Ok(response) => {
                    let status = response.status();
                    failures.push(format!(
                        "{status}: {}",
                        response.text().await.unwrap_or_default()
                    ));
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        (ok, failures, bodies)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_routed_switched_without_failed_requests_and_reach_each_other_by_name() {
    if !is_root() {
        eprintln!("skipping: binding the internal network to port 80 and editing /etc/hosts need root (CI runs as root)");
        return;
    }
    let ip = private_loopback();
    let proxy = format!("127.0.0.1:{}", common::free_port());
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = TestServer::start_with(
        &[
            "--proxy-metrics-listen",
            &metrics,
            "--proxy-listen",
            &proxy,
            "--internal-listen",
            &format!("{ip}:80"),
            "--dns-listen",
            &format!("{ip}:53"),
            "--hosts-file",
            "/etc/hosts",
        ],
        &[],
    );
    let proxy_url = format!("http://{proxy}");
    let token = server.bootstrap().await;
    let (_keep, repo, commits) = fixture_repo(&[("python-http", "v1"), ("python-http", "v2")]);
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "shop"}))
        .await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let service = |name: &str, routes: Value, greeting: &str| {
        json!({
            "name": name,
            "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
            "routes": routes,
            "env": {"GREETING": greeting},
            "health": {"path": "/healthz", "start_period_secs": 20, "interval_secs": 1},
        })
    };
    let api = server
        .post(
            &format!("/api/v1/projects/{project_id}/services"),
            &token,
            service("api", json!([]), "api says"),
        )
        .await;
    let web = server
        .post(
            &format!("/api/v1/projects/{project_id}/services"),
            &token,
            service(
                "web",
                json!([
                    {"host": "web.test"},
                    {"path": "/web", "strip_prefix": true},
                    // A route's own policy, from the spec to the proxy.
                    {"host": "upload.test", "max_body_mb": 1, "balance": "least_connections",
                     "response_timeout_secs": 30, "retries": 0},
                ]),
                "web says",
            ),
        )
        .await;
    let (api_id, web_id) = (api["id"].as_str().unwrap(), web["id"].as_str().unwrap());
    let deploy = async |id: &str, commit: &str| {
        let release = server
            .post(
                &format!("/api/v1/services/{id}/deploy"),
                &token,
                json!({"ref": commit}),
            )
            .await;
        let number = release["number"].as_i64().unwrap();
        wait_for(&format!("release {number} of {id} live"), async || {
            let releases = server
                .get(&format!("/api/v1/services/{id}/releases"), &token)
                .await;
            releases
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["number"] == number && r["status"] == "live")
                .then_some(())
        })
        .await;
    };
    deploy(api_id, &commits[0]).await;
    deploy(web_id, &commits[0]).await;

    // Routed by host and by stripped path prefix.
    let http = reqwest::Client::new();
    let through = async |host: &str, path: &str| {
        let response = http
            .get(format!("{proxy_url}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = wait_for("web through the proxy", async || {
        let (status, body) = through("web.test", "/").await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!((status, body.as_str()), (200, "web says v1\n"));
    assert_eq!(
        through("anything.test", "/web/").await,
        (200, "web says v1\n".to_owned())
    );
    let (status, body) = through("api.test", "/").await;
    assert_eq!(status, 404, "api has no external route: {body}");
    // upload.test allows bodies up to 1 MiB; web.test keeps the default 64 MiB.
    let post = async |host: &str, bytes: usize| {
        let response = http
            .post(format!("{proxy_url}/"))
            .header("host", host)
            .body(vec![b'x'; bytes])
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = post("upload.test", 2 << 20).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("web:upload.test/"),
        "the page names the route: {body}"
    );
    // Under the limit the proxy forwards the body. The app answers POST with 501
    // without reading it and closes, so the proxy may also meet a reset while still
    // sending (502): either way it is the app's answer, not the route's refusal.
    for (host, bytes) in [("upload.test", 512 << 10), ("web.test", 2 << 20)] {
        let (status, body) = post(host, bytes).await;
        assert!(
            matches!(status, 501 | 502) && !body.contains("body_too_large"),
            "{host} with {bytes} bytes: {status} {body}"
        );
    }

    // One service calls another by http://api.svc.internal (the agent put the
    // names in /etc/hosts; the internal listener routes by Host).
    let (status, body) = through("web.test", "/peer/api").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "http://api.svc.internal says: api says v1\n");
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        hosts.contains(&format!("{ip} api.svc.internal\n")),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("{ip} web.shop.svc.internal\n")),
        "{hosts}"
    );
    // The internal listener answers only internal names.
    let internal = reqwest::Client::new()
        .get(format!("http://{ip}/"))
        .header("host", "web.test")
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 404);

    // The DNS responder: internal names at the internal address, nothing else.
    if std::path::Path::new("/usr/bin/dig").exists() {
        let dig = |name: &str| {
            let output = Command::new("dig")
                .args([
                    &format!("@{ip}"),
                    "-p",
                    "53",
                    name,
                    "A",
                    "+time=2",
                    "+tries=1",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let answer = dig("api.svc.internal");
        assert!(answer.contains("status: NOERROR"), "{answer}");
        assert!(answer.contains(&format!("IN\tA\t{ip}")), "{answer}");
        let answer = dig("example.com");
        assert!(answer.contains("status: REFUSED"), "{answer}");
    } else {
        panic!("dig is missing: scripts/test installs bind9-dnsutils");
    }

    // A static site: built, served as files by the proxy, no process for it.
    let (_keep_site, site_repo, site_commits) = fixture_repo(&[("static-site", "v1")]);
    let site = server
        .post(
            &format!("/api/v1/projects/{project_id}/services"),
            &token,
            json!({
                "name": "site",
                "source": {"git": format!("file://{}", site_repo.display()), "ref": site_commits[0]},
                "routes": [{"host": "site.test"}],
            }),
        )
        .await;
    let site_id = site["id"].as_str().unwrap().to_owned();
    deploy(&site_id, &site_commits[0]).await;
    let page = wait_for("the static site through the proxy", async || {
        let response = http
            .get(format!("{proxy_url}/"))
            .header("host", "site.test")
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("hello from a static site"));
    let again = http
        .get(format!("{proxy_url}/"))
        .header("host", "site.test")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let part = http
        .get(format!("{proxy_url}/style.css"))
        .header("host", "site.test")
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(part.text().await.unwrap(), "body");
    let (status, _) = through("site.test", "/.git/config").await;
    assert_eq!(status, 404);
    let instances = server
        .get(&format!("/api/v1/services/{site_id}/instances"), &token)
        .await;
    assert_eq!(
        instances.as_array().unwrap().len(),
        0,
        "no process for a static site: {instances}"
    );

    // Hammer web while it is redeployed and while its agent is killed: no request
    // may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| hammer(format!("{proxy_url}/"), "web.test", stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    deploy(web_id, &commits[1]).await;
    wait_for("v2 through the proxy", async || {
        (through("web.test", "/").await.1 == "web says v2\n").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the old instance drains and stops
    let agent_pid = std::fs::read_to_string(server.data_dir.join("agent/agent.lock")).unwrap();
    let agent_pid = agent_pid.trim().to_owned();
    assert!(Command::new("kill")
        .args(["-KILL", &agent_pid])
        .status()
        .unwrap()
        .success());
    wait_for("a new agent", async || {
        let now = std::fs::read_to_string(server.data_dir.join("agent/agent.lock")).ok()?;
        (!now.trim().is_empty() && now.trim() != agent_pid).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the new agent reconciles and republishes
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut seen) = (0, Vec::new());
    for task in load {
        let (ok, failures, bodies) = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        total += ok;
        seen.extend(bodies);
    }
    assert!(total > 100, "the load ran: {total}");
    assert!(
        seen.contains(&"web says v1\n".to_owned()) && seen.contains(&"web says v2\n".to_owned()),
        "{seen:?}"
    );
    eprintln!("{total} requests through a redeploy and an agent kill -9, none failed");
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: u64 = text
        .lines()
        .find(|l| {
            l.starts_with(
                "nanoscale_proxy_requests_total{listener=\"external\",route=\"web:web.test/\",class=\"2xx\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no 2xx count for web in\n{text}"));
    assert!(
        served >= total,
        "metrics count {served} < {total} requests made"
    );

    // Removing the services removes their routes and their /etc/hosts lines.
    for id in [web_id, api_id, site_id.as_str()] {
        let (status, _) = server
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/services/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert!(status.is_success());
    }
    wait_for("the routes to go", async || {
        (through("web.test", "/").await.0 == 404).then_some(())
    })
    .await;
    wait_for("the hosts block to go", async || {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        (!hosts.contains(&server.data_dir.join("proxy").display().to_string())).then_some(())
    })
    .await;
    common::kill_node_processes(&server.data_dir);
}

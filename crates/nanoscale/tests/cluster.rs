//! The whole cluster on real hosts made of network namespaces: a control plane on
//! one host and three workers on others, each joined by running the one-liner
//! `nanoscale node add` prints; a three-replica service from a real git
//! repository; a worker's link cut and restored; the control plane killed and
//! restarted; and every way a join or a node certificate must be refused.
//!
//! The test thread lives in the control plane's namespace (so its HTTP client and
//! what it spawns are on that host); workers are reached only through the bridge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::netns::Hosts;
use common::{fixture_repo, wait_for, wait_showing, GitDaemon, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const API_PORT: u16 = 7070;
const CLUSTER_PORT: u16 = 7443;

#[test]
fn a_cluster_of_namespaces_joins_deploys_heals_and_refuses_intruders() {
    let hosts = match Hosts::create(&["cp", "w1", "w2", "w3"]) {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!("skipping the whole-cluster test: {reason}");
            return;
        }
    };
    let work = tempfile::Builder::new()
        .prefix("nanoscale-cluster-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    // The nodes' agents run as the unprivileged `nanoscale` user, which must be
    // able to reach its data dir (as under /var/lib).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    hosts.run_on("cp", || cluster(&hosts, work.path()));
}

async fn cluster(hosts: &Hosts, work: &Path) {
    let cp = hosts.address("cp");
    let cp_data = work.join("cp");
    let start_control_plane = || {
        TestServer::spawn_listening(
            &cp_data,
            &format!("{cp}:{API_PORT}"),
            &[
                "--cluster-listen",
                &format!("{cp}:{CLUSTER_PORT}"),
                "--proxy-listen",
                &format!("{cp}:80"),
                "--internal-listen",
                "off",
                "--dns-listen",
                "off",
            ],
            &[],
        )
    };
    let mut server = start_control_plane();
    let token = server.bootstrap().await;

    // The app, served by git daemon on the control plane's host.
    let (_keep, repo, commits) = fixture_repo(&[("python-http", "v1")]);
    let _daemon = GitDaemon::serve_on(repo.parent().unwrap(), &cp, 9418);

    // Each worker joins by running the one-liner from `node add`, with the
    // options a shared test machine needs (its own data dir, name and label).
    for name in WORKERS {
        let command = join_command(&server, &token, 600).await;
        let output = hosts.exec(
            name,
            &[
                "sh",
                "-c",
                &format!(
                    "{command} --data-dir {} --name {name} --label role=worker",
                    data_dir(work, name).display()
                ),
            ],
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name} install failed: {said}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(said.contains("installed"), "{said}");
        assert!(
            said.contains("this server is a node of the cluster"),
            "{said}"
        );
    }
    let nodes = wait_for("three workers ready", async || {
        let nodes = node_map(&server, &token).await;
        WORKERS
            .iter()
            .all(|name| nodes.get(*name).is_some_and(|n| n["status"] == "ready"))
            .then_some(nodes)
    })
    .await;
    for name in WORKERS {
        let node = &nodes[name];
        assert_eq!(node["address"], hosts.address(name), "{node}");
        assert_eq!(node["labels"]["role"], "worker", "{node}");
        assert!(
            node["usage"]["memory_total_bytes"].as_i64().unwrap() > 0,
            "{node}"
        );
    }
    // Every worker's agent holds its channel (none is on the long-poll fallback).
    wait_for("a channel from every agent", async || {
        let open = server.metric("nanoscale_agent_channels").await?;
        (open >= WORKERS.len() as f64).then_some(())
    })
    .await;
    // The identity is private to the node.
    let identity = data_dir(work, "w1").join("agent/cluster");
    assert_eq!(mode(&identity), 0o700);
    assert_eq!(mode(&identity.join("node.key")), 0o600);
    // The agent is not root: its state is its user's, the data dir (and the
    // binary in it, which sudo runs as root) root's, its one sudo rule exact.
    let agent_user = nix::unistd::User::from_name("nanoscale")
        .unwrap()
        .expect("install.sh made the nanoscale user");
    let w1 = data_dir(work, "w1");
    {
        use std::os::unix::fs::MetadataExt;
        let owner = |path: &Path| std::fs::metadata(path).unwrap().uid();
        assert_eq!(mode(&w1.join("apps")), 0o750);
        assert_eq!(owner(&w1.join("apps")), agent_user.uid.as_raw());
        assert_eq!(owner(&identity.join("node.key")), agent_user.uid.as_raw());
        assert_eq!((owner(&w1), mode(&w1)), (0, 0o750));
        assert_eq!(owner(&w1.join("bin/nanoscale")), 0);
        let agent = std::fs::read_to_string(w1.join("agent/agent.lock")).unwrap();
        let agent = Path::new("/proc").join(agent.trim());
        assert_eq!(owner(&agent), agent_user.uid.as_raw(), "the agent's user");
        let status = std::fs::read_to_string(agent.join("status")).unwrap();
        let ambient = status
            .lines()
            .find_map(|line| line.strip_prefix("CapAmb:"))
            .map(|caps| u64::from_str_radix(caps.trim(), 16).unwrap());
        assert_eq!(
            ambient,
            Some(1 << 10),
            "CAP_NET_BIND_SERVICE only: {status}"
        );
        let rules: Vec<String> = std::fs::read_dir("/etc/sudoers.d")
            .unwrap()
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .filter(|text| text.contains(&format!("--data-dir {} -", w1.display())))
            .collect();
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert!(
            rules[0].contains(&format!(
                "nanoscale ALL=(root) NOPASSWD: {} helper --data-dir {} -\n",
                w1.join("bin/nanoscale").display(),
                w1.display()
            )),
            "{}",
            rules[0]
        );
        let checked = std::process::Command::new("/usr/sbin/visudo")
            .arg("-c")
            .output()
            .unwrap();
        assert!(checked.status.success(), "{checked:?}");
    }

    // Running the install again changes nothing (no token needed).
    let again = hosts.exec(
        "w1",
        &[
            "sh",
            "-c",
            &format!(
                "curl -fsSL http://{cp}:{API_PORT}/install.sh | sh -s -- --data-dir {}",
                data_dir(work, "w1").display()
            ),
        ],
    );
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        said.contains("already the control plane's binary"),
        "{said}"
    );
    assert!(said.contains("already joined"), "{said}");
    assert!(said.contains("already running"), "{said}");
    assert_eq!(node_map(&server, &token).await.len(), 4);

    // Three replicas, one on each worker (placement by label), from git.
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "fleet"}))
        .await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let (service_id, release) = create_and_deploy(
        &server,
        &token,
        &project_id,
        json!({
            "name": "web",
            "source": {"git": format!("git://{cp}/app.git"), "ref": "main"},
            "replicas": 3,
            "placement": {"labels": {"role": "worker"}},
            "routes": [{"path": "/"}],
            "health": {"path": "/healthz", "interval_secs": 1},
        }),
    )
    .await;
    assert_eq!(release["commit"], commits[0].as_str(), "{release}");
    let instances = wait_showing("three healthy replicas", async || {
        let instances = server
            .get(&format!("/api/v1/services/{service_id}/instances"), &token)
            .await;
        let healthy: BTreeMap<String, Value> = instances
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "healthy")
            .map(|i| (i["node"].as_str().unwrap().to_owned(), i.clone()))
            .collect();
        if healthy.len() == 3 {
            return Ok(healthy);
        }
        // What a slow run was waiting on: each instance, each node's convergence.
        let nodes = server.get("/api/v1/nodes", &token).await;
        let nodes: Vec<String> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                format!(
                    "{} {} {} {}",
                    n["name"], n["status"], n["convergence"], n["problems"]
                )
            })
            .collect();
        Err(format!("instances {instances}; nodes {nodes:?}"))
    })
    .await;
    assert_eq!(
        instances.keys().map(String::as_str).collect::<Vec<_>>(),
        WORKERS.to_vec(),
        "one replica on each worker, none on the control plane"
    );
    // A service that opted in to rescheduling, one replica on w2 and one on w3.
    let (batch_id, _) = create_and_deploy(
        &server,
        &token,
        &project_id,
        json!({
            "name": "batch",
            "source": {"git": format!("git://{cp}/app.git"), "ref": "main"},
            "replicas": 2,
            "placement": {"nodes": ["w2", "w3"], "reschedule": true},
            "health": {"path": "/healthz", "interval_secs": 1},
        }),
    )
    .await;
    let batch_on = async |placement: &[(&str, usize)]| {
        let wanted: BTreeMap<String, usize> = placement
            .iter()
            .map(|(node, n)| ((*node).to_owned(), *n))
            .collect();
        wait_for(&format!("batch on {wanted:?}"), async || {
            let instances = server
                .get(&format!("/api/v1/services/{batch_id}/instances"), &token)
                .await;
            let mut healthy = BTreeMap::new();
            for instance in instances.as_array().unwrap() {
                if instance["status"] == "healthy" {
                    *healthy
                        .entry(instance["node"].as_str().unwrap().to_owned())
                        .or_insert(0) += 1;
                }
            }
            (healthy == wanted).then_some(())
        })
        .await
    };
    batch_on(&[("w2", 1), ("w3", 1)]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for name in WORKERS {
        let url = format!("http://{}/", hosts.address(name));
        let body = wait_for(&format!("web on {name}"), async || {
            let response = http.get(&url).send().await.ok()?;
            (response.status() == 200).then_some(response.text().await.ok()?)
        })
        .await;
        assert_eq!(body, "hello v1\n", "{name}");
    }
    // Logs of instances on other nodes come through the control plane, asked of
    // each worker over its own connection.
    let logs = wait_for("every worker's log lines", async || {
        let logs = server
            .get(
                &format!("/api/v1/services/{service_id}/logs?tail=50"),
                &token,
            )
            .await;
        let sources: std::collections::BTreeSet<String> = logs
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line["source"].as_str().unwrap().to_owned())
            .collect();
        let wanted: std::collections::BTreeSet<String> = instances
            .values()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        (sources == wanted).then_some(logs)
    })
    .await;
    assert!(
        logs.as_array().unwrap().iter().all(|line| line["text"]
            .as_str()
            .unwrap()
            .starts_with("listening on 127.0.0.1:")),
        "{logs}"
    );
    // The live stream carries them too: every instance's lines, as SSE.
    let mut stream = reqwest::Client::new()
        .get(server.endpoint(&format!(
            "/api/v1/services/{service_id}/logs/stream?tail=50"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    let streamed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if instances
                .values()
                .all(|i| text.contains(&format!("\"source\":\"{}\"", i["id"].as_str().unwrap())))
            {
                return;
            }
        }
    })
    .await;
    assert!(streamed.is_ok(), "not every instance in the stream: {text}");
    // Then the workers are followed over their channels (not asked every
    // second): a line written to w1's instance log after the stream opened (as
    // its app would) comes down the stream as w1's agent sends it.
    wait_for("the stream following every worker", async || {
        let follows = server.metric("nanoscale_log_follows").await?;
        (follows >= WORKERS.len() as f64).then_some(())
    })
    .await;
    let w1_log = data_dir(work, "w1").join(format!(
        "apps/web/instances/{}/log/current",
        instances["w1"]["id"].as_str().unwrap()
    ));
    {
        use std::io::Write;
        let at = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&w1_log)
            .unwrap_or_else(|e| panic!("{}: {e}", w1_log.display()));
        writeln!(file, "{at} o written after the stream opened").unwrap();
    }
    let written = Instant::now();
    let followed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !text.contains("written after the stream opened") {
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(followed.is_ok(), "w1's new line not in the stream: {text}");
    println!(
        "a line written on w1 → in the stream: {:.2} s",
        written.elapsed().as_secs_f64()
    );
    drop(stream);
    let applied = wait_for("every worker applied", async || {
        let nodes = node_map(&server, &token).await;
        WORKERS
            .iter()
            .all(|name| {
                let node = &nodes[*name];
                node["convergence"] == "applied"
                    && node["applied_version"] == node["desired_version"]
            })
            .then_some(nodes)
    })
    .await;
    assert!(applied["w1"]["desired_version"].as_i64().unwrap() >= 1);

    // w3's link is cut: it is marked unreachable, its app keeps answering on the
    // host itself, and what happens there meanwhile (a crash) reaches the control
    // plane exactly once when the link is back.
    let w3_id = nodes["w3"]["id"].as_str().unwrap().to_owned();
    let last_seen = seen_at(&node_map(&server, &token).await["w3"]);
    hosts.link("w3", false);
    let cut = Instant::now();
    let app_pid = instances["w3"]["pid"].as_i64().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &app_pid.to_string()])
        .status();
    let local = || {
        let output = hosts.exec(
            "w3",
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "-H",
                "Host: web.svc.internal",
                "http://127.0.0.1:80/",
            ],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    wait_for("w3's app restarted locally", async || {
        (local() == "hello v1\n").then_some(())
    })
    .await;
    wait_for("w3 marked unreachable", async || {
        (node_map(&server, &token).await["w3"]["status"] == "unreachable").then_some(())
    })
    .await;
    let silent = Utc::now() - last_seen;
    println!(
        "w3 marked unreachable {:.1} s after its link was cut, {:.1} s after its last heartbeat",
        cut.elapsed().as_secs_f64(),
        silent.num_milliseconds() as f64 / 1000.0
    );
    // The rule is 30 s without a heartbeat (checked every 250 ms); heartbeats
    // come every 10 s, so from the cut itself it takes 20 to 30 s.
    assert!(
        silent <= chrono::Duration::milliseconds(31_000),
        "unreachable after {silent} of silence"
    );
    assert!(
        cut.elapsed() <= Duration::from_secs(31),
        "{:?} after the cut",
        cut.elapsed()
    );
    assert_eq!(local(), "hello v1\n", "w3 keeps serving while cut off");
    // Its instances are not shown as known-healthy while nothing is heard from it.
    let instances = server
        .get(&format!("/api/v1/services/{service_id}/instances"), &token)
        .await;
    for instance in instances.as_array().unwrap() {
        assert_eq!(
            instance["node_reachable"].as_bool(),
            Some(instance["node"] != "w3"),
            "{instance}"
        );
    }
    // The service that opted in moves to w2 (w3's own copy keeps running there,
    // unseen, until w3 is back); the others stay where they are.
    batch_on(&[("w2", 2), ("w3", 1)]).await;
    hosts.link("w3", true);
    wait_for("w3 reachable again", async || {
        (node_map(&server, &token).await["w3"]["status"] == "ready").then_some(())
    })
    .await;
    let instances = server
        .get(&format!("/api/v1/services/{service_id}/instances"), &token)
        .await;
    assert!(
        instances
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["node_reachable"] == true),
        "{instances}"
    );
    wait_for("w3's restart reported", async || {
        let instances = server
            .get(&format!("/api/v1/services/{service_id}/instances"), &token)
            .await;
        instances
            .as_array()
            .unwrap()
            .iter()
            .any(|i| {
                i["node"] == "w3" && i["status"] == "healthy" && i["restarts"].as_u64() >= Some(1)
            })
            .then_some(())
    })
    .await;
    batch_on(&[("w2", 1), ("w3", 1)]).await;
    let count = async |kind: &str| {
        server
            .get(
                &format!("/api/v1/events?node_id={w3_id}&kind={kind}&limit=1000"),
                &token,
            )
            .await
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        count("instance.crashed").await,
        1,
        "the crash during the cut, once"
    );
    assert_eq!(count("node.unreachable").await, 1);
    assert_eq!(count("node.reachable").await, 1);

    // The control plane dies: every app keeps answering; restarted, every agent
    // is back within 5 s.
    server.kill();
    for name in WORKERS {
        let response = http
            .get(format!("http://{}/", hosts.address(name)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name} without a control plane");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_at = Utc::now();
    let mut server = start_control_plane();
    let up = Instant::now();
    wait_for("every agent reconnected", async || {
        let nodes = node_map(&server, &token).await;
        WORKERS
            .iter()
            .all(|name| seen_at(&nodes[*name]) > restarted_at)
            .then_some(())
    })
    .await;
    let reconnect = up.elapsed();
    println!("every agent reported to the restarted control plane within {reconnect:?}");
    assert!(reconnect <= Duration::from_secs(5), "{reconnect:?}");

    refusals(hosts, work, &mut server, &token, &w3_id).await;

    // --uninstall removes a node's processes, files and firewall table, and
    // leaves other tables alone.
    for table in ["nanoscale", "someone-else"] {
        let added = hosts.exec("w2", &["nft", "add", "table", "inet", table]);
        assert!(
            added.status.success(),
            "nft add table inet {table}: {}",
            String::from_utf8_lossy(&added.stderr)
        );
    }
    let w2 = data_dir(work, "w2");
    let output = hosts.exec(
        "w2",
        &[
            "sh",
            "-c",
            &format!(
                "curl -fsSL http://{cp}:{API_PORT}/install.sh | sh -s -- --uninstall --data-dir {}",
                w2.display()
            ),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!w2.exists(), "uninstall removes {}", w2.display());
    let rule_left = std::fs::read_dir("/etc/sudoers.d")
        .unwrap()
        .flatten()
        .any(|entry| {
            std::fs::read_to_string(entry.path())
                .is_ok_and(|text| text.contains(&format!("--data-dir {} -", w2.display())))
        });
    assert!(!rule_left, "uninstall removes the node's sudo rule");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("removed NanoScale's firewall table"),
        "{said}"
    );
    let tables = hosts.exec("w2", &["nft", "list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains("inet nanoscale"), "{tables}");
    assert!(tables.contains("inet someone-else"), "{tables}");
    wait_for("w2's processes gone", async || {
        hosts.pids("w2").is_empty().then_some(())
    })
    .await;
}

/// Every join and certificate that must be refused is, and leaves nothing behind.
async fn refusals(hosts: &Hosts, work: &Path, server: &mut TestServer, token: &str, w3_id: &str) {
    let cp = hosts.address("cp");
    let join = |name: &str, join_token: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .args([
                "join",
                "--cluster",
                &format!("{cp}:{CLUSTER_PORT}"),
                "--data-dir",
                &work.join(name).display().to_string(),
                "--name",
                name,
            ])
            .env("NANOSCALE_JOIN_TOKEN", join_token)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // A used token.
    let used = join_token(server, token, 600).await;
    assert_eq!(join("x1", &used).0, Some(0));
    let (code, said) = join("x2", &used);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("already used"), "{said}");
    // An expired one.
    let expired = join_token(server, token, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, said) = join("x3", &expired);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("expired"), "{said}");
    // A token carrying another cluster's CA fingerprint: refused before the
    // secret is sent, so the real token still works afterwards.
    let real = join_token(server, token, 600).await;
    let (hash, secret) = real.trim_start_matches("K10").split_once("::").unwrap();
    let other_hash: String = hash.chars().rev().collect();
    let (code, said) = join("x4", &format!("K10{other_hash}::{secret}"));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("not the control plane this token was made for"),
        "{said}"
    );
    assert!(!work.join("x4/agent/cluster/node.json").exists());
    // A made-up secret with the right fingerprint.
    let (code, said) = join("x5", &format!("K10{hash}::{}", "f".repeat(64)));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not known"), "{said}");
    // Malformed input never reaches the control plane.
    let (code, said) = join("x6", "nsk_not_a_join_token");
    assert_eq!(code, Some(64), "{said}");
    assert_eq!(
        join("x7", &real).0,
        Some(0),
        "the real token was not consumed"
    );
    let names: Vec<String> = node_map(server, token).await.into_keys().collect();
    assert!(names.contains(&"x1".to_owned()) && names.contains(&"x7".to_owned()));
    for refused in ["x2", "x3", "x4", "x5", "x6"] {
        assert!(
            !names.contains(&refused.to_owned()),
            "{refused} half-registered: {names:?}"
        );
    }

    // Bad join requests are refused with the field named, before any token is
    // looked at or consumed.
    let as_x1 = mtls(&work.join("x1/agent/cluster"));
    let join_url = format!("https://{cp}:{CLUSTER_PORT}/cluster/v1/join");
    let probe = format!("K10{hash}::{}", "a".repeat(64));
    let csr = {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    };
    let good = json!({"token": probe, "name": "bad1", "csr": csr, "arch": "x86_64", "cpus": 2, "memory_bytes": 1});
    for (change, field) in [
        (json!({"name": "Not_A_Label"}), "name"),
        (
            json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnope\n"}),
            "csr",
        ),
        (json!({"labels": {"role": "a b;rm"}}), "labels.role"),
        (json!({"cpus": 0}), "cpus"),
        (json!({"token": "K10short::x"}), "token"),
        (json!({"surprise": true}), "surprise"),
    ] {
        let mut body = good.clone();
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = as_x1.post(&join_url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert!(
            (400..500).contains(&status) && common::error_field(&answer).as_deref() == Some(field),
            "{change}: {status} {answer}"
        );
    }
    assert!(!node_map(server, token).await.contains_key("bad1"));

    // A removed node's certificate stops working at once, and its agent stops.
    let w3_cert = mtls(&data_dir(work, "w3").join("agent/cluster"));
    let desired = format!("https://{cp}:{CLUSTER_PORT}/api/v1/agent/desired-state");
    let before = w3_cert.get(&desired).send().await.unwrap();
    assert_eq!(before.status(), 200);
    assert_eq!(
        before.version(),
        reqwest::Version::HTTP_2,
        "agents share one HTTP/2 connection"
    );
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/nodes/{w3_id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(w3_cert.get(&desired).send().await.unwrap().status(), 401);
    let node_run = std::fs::read_to_string(data_dir(work, "w3").join("node.pid")).unwrap();
    wait_for("w3's node run to give up", async || {
        (!Path::new(&format!("/proc/{}", node_run.trim())).exists()).then_some(())
    })
    .await;
    // The control plane's own node cannot be removed.
    let own = node_map(server, token).await;
    let own_id = own
        .iter()
        .find(|(name, _)| !["w1", "w2", "x1", "x7"].contains(&name.as_str()))
        .unwrap_or_else(|| panic!("no control-plane node in {own:?}"))
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/nodes/{own_id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 409);

    // A client certificate from another CA is refused in the handshake.
    let foreign = work.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(
        data_dir(work, "w1").join("agent/cluster/ca.pem"),
        foreign.join("ca.pem"),
    )
    .unwrap();
    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = ca_params.self_signed(&other_ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, other_ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params =
        rcgen::CertificateParams::new(vec![format!("{w3_id}.node.nanoscale.internal")]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    drop(other_ca);
    std::fs::write(foreign.join("node.pem"), client_cert.pem()).unwrap();
    std::fs::write(foreign.join("node.key"), client_key.serialize_pem()).unwrap();
    let refused = mtls(&foreign).get(&desired).send().await;
    assert!(
        refused.as_ref().map_or(true, |r| r.status() == 401),
        "a certificate from another CA got {refused:?}"
    );
}

/// Creates a service in the project and deploys it: its id and the release.
async fn create_and_deploy(
    server: &TestServer,
    token: &str,
    project_id: &str,
    spec: Value,
) -> (String, Value) {
    let service = server
        .post(
            &format!("/api/v1/projects/{project_id}/services"),
            token,
            spec,
        )
        .await;
    let id = service["id"].as_str().unwrap().to_owned();
    let release = server
        .post(&format!("/api/v1/services/{id}/deploy"), token, json!({}))
        .await;
    (id, release)
}

async fn join_command(server: &TestServer, token: &str, ttl: u64) -> String {
    let created = server
        .post("/api/v1/nodes/join-tokens", token, json!({"ttl_secs": ttl}))
        .await;
    let command = created["command"].as_str().unwrap().to_owned();
    assert!(
        command.starts_with("curl -fsSL http://")
            && command.contains("/install.sh | sh -s -- --join K10"),
        "{command}"
    );
    command
}

async fn join_token(server: &TestServer, token: &str, ttl: u64) -> String {
    let command = join_command(server, token, ttl).await;
    command.rsplit_once("--join ").unwrap().1.to_owned()
}

fn data_dir(work: &Path, name: &str) -> PathBuf {
    work.join(name)
}

async fn node_map(server: &TestServer, token: &str) -> BTreeMap<String, Value> {
    server
        .get("/api/v1/nodes", token)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["name"].as_str().unwrap().to_owned(), node.clone()))
        .collect()
}

fn seen_at(node: &Value) -> DateTime<Utc> {
    node["last_seen_at"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map_or(DateTime::<Utc>::MIN_UTC, |time| time.with_timezone(&Utc))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A client with the node identity in `dir`, as the agent makes it.
fn mtls(dir: &Path) -> reqwest::Client {
    let tls = nanoscale_agent::cluster::client_config(dir).unwrap();
    nanoscale_agent::cluster::client(tls).unwrap()
}

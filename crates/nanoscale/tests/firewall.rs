//! Security modes on a real host made of a network namespace: `nanoscale up` runs in
//! host `node` with real nftables; an admin switches the node through modes A, B, C
//! and back to A over the API, and nmap scans the node from two other hosts after
//! each change (`admin`, whose address may reach SSH in mode B, and `outside`).
//! Besides NanoScale's own listeners (API 7070, proxy 8080), the node runs two
//! listeners NanoScale knows nothing of, on 22 (standing in for sshd) and 9999 (a
//! forgotten dev server), bound to every address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use common::netns::Hosts;
use common::{wait_for, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const API_PORT: u16 = 7070;
const PROXY_PORT: u16 = 8080;
const SCANNED: &str = "1-1024,7070,8080,9999";

#[test]
fn each_security_mode_exposes_exactly_its_ports() {
    if !std::path::Path::new("/usr/sbin/nft").exists()
        || !std::path::Path::new("/usr/bin/nmap").exists()
    {
        // The test command installs both (scripts/lib/apt.sh); only a bare
        // `cargo test` gets here.
        eprintln!("skipping: nft and nmap are needed (installed by scripts/test)");
        return;
    }
    let hosts = match Hosts::create(&["node", "outside", "admin"]) {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!("skipping the firewall test: {reason}");
            return;
        }
    };
    let work = tempfile::Builder::new()
        .prefix("nanoscale-firewall-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    hosts.run_on("node", || modes(&hosts, work.path()));
}

/// A listener NanoScale does not know about, on every address of the node.
struct Stray(Child);

impl Stray {
    fn listen(port: u16) -> Stray {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "0.0.0.0", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        Stray(child)
    }
}

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The TCP ports of `target` that nmap, run on host `from`, finds open.
fn scan(hosts: &Hosts, from: &str, target: &str) -> BTreeSet<u16> {
    let begun = std::time::Instant::now();
    let output = hosts.exec(
        from,
        &[
            "nmap",
            "-Pn",
            "-n",
            "-sT",
            "-T5",
            "--max-retries",
            "1",
            // The namespaces' round trip is microseconds: a dropped SYN counts as
            // filtered after 50 ms instead of nmap's default second.
            "--max-rtt-timeout",
            "50ms",
            "--initial-rtt-timeout",
            "20ms",
            "--min-rate",
            "5000",
            "--host-timeout",
            "60s",
            "-p",
            SCANNED,
            "-oG",
            "-",
            target,
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "nmap: {text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("nmap from {from}: {} ms", begun.elapsed().as_millis());
    text.lines()
        .filter_map(|line| line.split_once("Ports: ").map(|(_, ports)| ports))
        .flat_map(|ports| ports.split(", "))
        .filter(|entry| entry.contains("/open/"))
        .filter_map(|entry| entry.split('/').next()?.trim().parse().ok())
        .collect()
}

fn ports(list: &[u16]) -> BTreeSet<u16> {
    list.iter().copied().collect()
}

async fn set_mode(server: &TestServer, token: &str, node: &str, body: Value) -> Value {
    let (status, answer) = server
        .call(
            Method::PATCH,
            &format!("/api/v1/nodes/{node}"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mode = answer["security_mode"].as_str().expect("mode").to_owned();
    wait_for(&format!("mode {mode} in force"), async || {
        let node = server.get(&format!("/api/v1/nodes/{node}"), token).await;
        (node["firewall"]["mode"] == mode.as_str() && node["firewall"]["status"] == "applied")
            .then_some(node)
    })
    .await
}

async fn modes(hosts: &Hosts, work: &std::path::Path) {
    let address = hosts.address("node");
    let server = TestServer::spawn_listening(
        &work.join("data"),
        &format!("{address}:{API_PORT}"),
        &[
            "--proxy-listen",
            &format!("{address}:{PROXY_PORT}"),
            "--internal-listen",
            "off",
            "--dns-listen",
            "off",
        ],
        &[],
    );
    let _ssh = Stray::listen(22);
    let _forgotten = Stray::listen(9999);
    for port in [22, 9999] {
        let target = format!("{address}:{port}");
        wait_for(&format!("a listener on {target}"), async || {
            tokio::net::TcpStream::connect(&target)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
    let token = server.bootstrap().await;
    let nodes = server.get("/api/v1/nodes", &token).await;
    let node = nodes[0]["id"].as_str().expect("node id").to_owned();
    let everything = ports(&[22, API_PORT, PROXY_PORT, 9999]);

    // A: NanoScale manages nothing; everything listening is reachable.
    wait_for("the node's first firewall report", async || {
        let node = server.get(&format!("/api/v1/nodes/{node}"), &token).await;
        (node["firewall"]["status"] == "applied").then_some(())
    })
    .await;
    assert_eq!(scan(hosts, "outside", &address), everything);

    // Bad input is refused with the field named, and changes nothing.
    for (body, field) in [
        (json!({"security_mode": "D"}), "security_mode"),
        (json!({"ssh_from": ["10.0.0.0/40"]}), "ssh_from"),
        (json!({"ssh_from": ["10.0.0.1; flush ruleset"]}), "ssh_from"),
        (json!({"mode": "B"}), "mode"),
    ] {
        let (status, answer) = server
            .call(
                Method::PATCH,
                &format!("/api/v1/nodes/{node}"),
                Some(&token),
                Some(body),
            )
            .await;
        assert!(status.is_client_error(), "{status} {answer}");
        let named = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(
            named == field
                || answer["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
            "{answer}"
        );
    }

    // Someone else's table, which NanoScale must leave exactly as it is.
    for command in [
        &["nft", "add", "table", "inet", "theirs"][..],
        &["nft", "add", "chain", "inet", "theirs", "mine"],
        &[
            "nft", "add", "rule", "inet", "theirs", "mine", "tcp", "dport", "4242", "counter",
        ],
    ] {
        let output = hosts.exec("node", command);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let theirs = || {
        let output = hosts.exec("node", &["nft", "list", "table", "inet", "theirs"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let before = theirs();
    assert!(before.contains("tcp dport 4242"), "{before}");

    // B: the proxy, the control plane's API, and SSH from the admin's address only.
    let admin = hosts.address("admin");
    let shown = set_mode(
        &server,
        &token,
        &node,
        json!({"security_mode": "B", "ssh_from": [format!("{admin}/32")]}),
    )
    .await;
    assert_eq!(
        shown["firewall"]["open_tcp_ports"],
        json!([22, API_PORT, PROXY_PORT]),
        "{shown}"
    );
    assert_eq!(
        scan(hosts, "outside", &address),
        ports(&[API_PORT, PROXY_PORT])
    );
    assert_eq!(
        scan(hosts, "admin", &address),
        ports(&[22, API_PORT, PROXY_PORT])
    );
    // Loopback and the node's own traffic keep working (this client is on the node).
    server.get("/api/v1/nodes", &token).await;

    // C: nothing inbound (the proxy moves to loopback; the API is for the tunnel).
    let shown = set_mode(&server, &token, &node, json!({"security_mode": "C"})).await;
    assert_eq!(shown["firewall"]["open_tcp_ports"], json!([]), "{shown}");
    assert_eq!(scan(hosts, "outside", &address), BTreeSet::new());
    assert_eq!(scan(hosts, "admin", &address), BTreeSet::new());
    server.get("/api/v1/nodes", &token).await;

    // Back to A: NanoScale's table is gone, and every other rule was never touched.
    set_mode(&server, &token, &node, json!({"security_mode": "A"})).await;
    // The proxy leaves loopback for the node's address again, a moment later.
    let proxy = format!("{address}:{PROXY_PORT}");
    wait_for("the proxy back on the node's address", async || {
        tokio::net::TcpStream::connect(&proxy)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert_eq!(scan(hosts, "outside", &address), everything);
    let tables = hosts.exec("node", &["nft", "list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains("nanoscale"), "{tables}");
    assert_eq!(theirs(), before, "another table was touched");

    let events = server.get("/api/v1/events?kind=firewall.", &token).await;
    let said: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["message"].as_str())
        .collect();
    assert!(
        said.iter()
            .any(|message| message.contains("security mode C in force: nothing open inbound")),
        "{said:?}"
    );
}

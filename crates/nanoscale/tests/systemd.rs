//! The systemd backend end to end: `nanoscale up` with `NANOSCALE_SUPERVISOR=systemd`
//! on a host where systemd is PID 1 (booted in a container by `systemd-nspawn`,
//! sharing this host's loopback so the test talks to it as to any node), deploying
//! real apps from real git repositories. Each instance must be a hardened unit
//! that systemd runs (not a shim), show its output in the logs API, be replaced
//! when killed, keep its sandbox against the escape-attempts fixture, and leave
//! nothing of its unit behind when its service goes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

mod common;

use std::path::Path;
use std::process::Stdio;

use common::container::{self, Boot, Container};
use common::{agent_args, fixture_repo, free_port, wait_for, TestServer};
use serde_json::{json, Value};

/// One container at a time: two nodes on one loopback pick instance ports
/// from the same range, and two booting systemds share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn instances(server: &TestServer, token: &str, service: &str) -> Vec<Value> {
    server
        .get(&format!("/api/v1/services/{service}/instances"), token)
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn with_the_systemd_supervisor_instances_are_hardened_units_that_log_heal_and_go() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if let Some(why) = container::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let (_keep, repo, commits) = fixture_repo(&[
        ("python-http", "v1"),
        ("escape-attempts", "snoop"),
        ("ticker", "v1"),
        ("leak-memory", "greedy"),
    ]);
    let base = tempfile::Builder::new()
        .prefix("nanoscale-systemd-up-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data = base.path().join("data");
    let binary = Path::new(env!("CARGO_BIN_EXE_nanoscale"));
    let container = Container::boot(&Boot {
        name: format!("ns-up-{}", std::process::id()),
        binds: vec![
            (base.path(), false),
            (repo.parent().expect("parent"), true),
            (binary, true),
        ],
        private_network: false,
    });
    let proxy = format!("127.0.0.1:{}", free_port());
    let server = TestServer::spawn_wrapped(
        container.enter(),
        &data,
        "127.0.0.1:0",
        &agent_args(&proxy),
        &[("NANOSCALE_SUPERVISOR", "systemd")],
        Stdio::inherit(),
        None,
    );
    let token = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "units"}))
        .await;
    let project = project["id"].as_str().expect("id").to_owned();
    let git = format!("file://{}", repo.display());
    let create = async |spec: Value, commit: &str| -> String {
        server
            .create_and_deploy(&token, &project, spec, commit)
            .await
    };
    let web = create(
        json!({
            "name": "web",
            "source": {"git": git, "ref": commits[0]},
            "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
            "resources": {"memory_mb": 128, "cpu_millis": 500, "pids": 64},
            "routes": [{"path": "/"}],
        }),
        &commits[0],
    )
    .await;
    let instance = server.healthy_instance(&token, &web, "").await;
    let id = instance["id"].as_str().expect("id").to_owned();
    let pid = instance["pid"].as_i64().expect("pid").to_string();
    let unit = format!("nanoscale-{id}.service");

    // systemd runs it, as the hardened unit, with the service's limits.
    let shown = container.must(&[
        "systemctl",
        "show",
        "--property=ActiveState,MainPID,User,ProtectSystem,ProtectHome,PrivateTmp,\
         NoNewPrivileges,MemoryMax,CPUQuotaPerSecUSec,TasksMax,ReadWritePaths",
        &unit,
    ]);
    let release = data.join("apps/web/releases/1");
    for expected in [
        "ActiveState=active".to_owned(),
        format!("MainPID={pid}"),
        "User=ns-web".to_owned(),
        "ProtectSystem=strict".to_owned(),
        "ProtectHome=yes".to_owned(),
        "PrivateTmp=yes".to_owned(),
        "NoNewPrivileges=yes".to_owned(),
        "MemoryMax=134217728".to_owned(),
        "CPUQuotaPerSecUSec=500ms".to_owned(),
        "TasksMax=64".to_owned(),
        release.display().to_string(),
    ] {
        assert!(shown.contains(&expected), "{expected} in:\n{shown}");
    }
    // Its parent is systemd, not a shim; no shim records exist for it.
    let status = container.must(&["cat", &format!("/proc/{pid}/status")]);
    let parent = status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .map(str::trim);
    assert_eq!(parent, Some("1"), "the app's parent: {status}");
    let instance_dir = data.join("apps/web/instances").join(&id);
    assert!(instance_dir.join("systemd.unit").is_file());
    assert!(!instance_dir.join("shim.pid").exists());
    // The environment file holds the env, and only root may read it.
    let env_meta = std::fs::metadata(instance_dir.join("unit.env")).expect("unit.env");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&env_meta.permissions()) & 0o777,
        0o600
    );
    // It answers through the proxy.
    let body = wait_for("web through the proxy", async || {
        let response = reqwest::get(format!("http://{proxy}/")).await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    })
    .await;
    assert!(body.contains("v1"), "{body}");

    // Its output reaches the logs API from the journal, stamped and attributed.
    let logs = wait_for("the app's first log line", async || {
        let logs = server
            .get(&format!("/api/v1/services/{web}/logs?tail=20"), &token)
            .await;
        logs.to_string()
            .contains("listening on 127.0.0.1")
            .then_some(logs)
    })
    .await;
    let line = logs
        .as_array()
        .and_then(|lines| {
            lines
                .iter()
                .find(|l| l["text"].as_str().is_some_and(|t| t.contains("listening")))
        })
        .cloned()
        .expect("the line");
    assert_eq!(line["source"], id.as_str(), "{logs}");

    // Killed, it is replaced by a new unit, and the old one is forgotten.
    container.must(&["kill", "-KILL", &pid]);
    let healed = server.healthy_instance(&token, &web, &id).await;
    assert!(healed["restarts"].as_u64().unwrap_or(0) >= 1, "{healed}");
    wait_for("the killed instance's unit to be removed", async || {
        let load = container.must(&["systemctl", "show", "--property=LoadState", &unit]);
        load.contains("LoadState=not-found").then_some(())
    })
    .await;
    // systemd's own words about a unit reach its log too.
    let started = format!(
        "systemd: Started nanoscale-{}.service",
        healed["id"].as_str().expect("id")
    );
    wait_for("systemd's line about the new unit", async || {
        let logs = server
            .get(&format!("/api/v1/services/{web}/logs?tail=200"), &token)
            .await;
        logs.to_string().contains(&started).then_some(())
    })
    .await;
    let events = server
        .get(
            &format!("/api/v1/events?service_id={web}&limit=200"),
            &token,
        )
        .await;
    assert!(
        events.to_string().contains("killed by signal 9"),
        "the crash and how: {events}"
    );

    // The unit's sandbox holds against the escape attempts, as the shim's does.
    let data_text = data.display().to_string();
    let snoop = create(
        json!({
            "name": "snoop",
            "source": {"git": git, "ref": commits[1]},
            "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
            "env": {
                "OTHER_APP_DIR": format!("{data_text}/apps/web/releases/1"),
                "AGENT_DIR": format!("{data_text}/agent"),
            },
        }),
        &commits[1],
    )
    .await;
    let snooping = server.healthy_instance(&token, &snoop, "").await;
    let port = snooping["port"].as_u64().expect("port");
    let report: Value = reqwest::get(format!("http://127.0.0.1:{port}/report"))
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    let blocked = common::escape::check_escape_report(&report);

    // The agent killed: the units run on, the new agent adopts them, and what
    // an app wrote meanwhile reaches its log from the journal, nothing lost.
    let ticker = create(
        json!({
            "name": "ticker",
            "source": {"git": git, "ref": commits[2]},
            "health": {"path": "/", "start_period_secs": 30, "interval_secs": 1},
        }),
        &commits[2],
    )
    .await;
    let ticking = server.healthy_instance(&token, &ticker, "").await;
    let ticks = async || -> Vec<u64> {
        let logs = server
            .get(
                &format!("/api/v1/services/{ticker}/logs?tail=10000"),
                &token,
            )
            .await;
        logs.as_array()
            .into_iter()
            .flatten()
            .filter_map(|line| line["text"].as_str()?.strip_prefix("tick ")?.parse().ok())
            .collect()
    };
    wait_for("the first ticks", async || {
        (ticks().await.len() >= 3).then_some(())
    })
    .await;
    let lock = std::fs::read_to_string(data.join("agent/agent.lock")).expect("agent.lock");
    container.must(&["kill", "-KILL", lock.trim()]);
    let ticks_before = ticks().await.len();
    std::thread::sleep(std::time::Duration::from_secs(3));
    wait_for("a new agent", async || {
        let now = std::fs::read_to_string(data.join("agent/agent.lock")).ok()?;
        (now.trim() != lock.trim() && !now.trim().is_empty()).then_some(())
    })
    .await;
    let seen = wait_for("the ticks written while the agent was down", async || {
        let seen = ticks().await;
        (seen.len() >= ticks_before + 20).then_some(seen)
    })
    .await;
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
    assert_eq!(
        sorted.len() as u64,
        last - first + 1,
        "a tick is missing between {first} and {last}: {seen:?}"
    );
    let still = instances(&server, &token, &ticker).await;
    assert!(
        still
            .iter()
            .any(|i| i["id"] == ticking["id"] && i["pid"] == ticking["pid"]),
        "the same instance runs on: {still:?}"
    );

    // Past its MemoryMax the kernel kills it in its unit's cgroup, and the
    // event says why, as with the built-in supervisor. A container on a cgroup
    // v1 host (this CI machine) gets the v1 controllers read-only: its systemd
    // sets the limit but cannot enforce it, as a host's own systemd would.
    let controllers = container.run(&["cat", "/sys/fs/cgroup/cgroup.controllers"]);
    let enforced = String::from_utf8_lossy(&controllers.stdout)
        .split_whitespace()
        .any(|controller| controller == "memory");
    if enforced {
        let greedy = create(
            json!({
                "name": "greedy",
                "source": {"git": git, "ref": commits[3]},
                "resources": {"memory_mb": 64},
                "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
            }),
            &commits[3],
        )
        .await;
        common::wait_showing("an out-of-memory kill", async || {
            let events = server
                .get(
                    &format!("/api/v1/events?service_id={greedy}&kind=instance."),
                    &token,
                )
                .await;
            let text = events.to_string();
            if text.contains("more memory than its limit") {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    } else {
        eprintln!(
            "memory limit under systemd: not checked here: the container's memory \
             controller is cgroup v1, mounted read-only by systemd-nspawn"
        );
    }

    // A removed service leaves no unit behind.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/services/{web}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for("web's units to be gone", async || {
        let left = container.must(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "nanoscale-web-*",
        ]);
        let files = container.must(&["ls", "/run/systemd/system"]);
        (left.trim().is_empty() && !files.contains("nanoscale-web-")).then_some(())
    })
    .await;
    eprintln!("systemd ran web and snoop as units: {blocked} escape attempts blocked");
}

/// As an installed node runs it (`install.sh --supervisor systemd`): the agent
/// (here the whole `up`) is a unit of its own, as an unprivileged user in the
/// `systemd-journal` group, reaching the privileged helper only through sudo and
/// one exact rule. It starts and stops the apps' units through the helper and
/// reads their output from the journal; it may change none of their files.
#[tokio::test]
async fn an_unprivileged_agent_runs_units_through_sudo_and_reads_their_journal() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if let Some(why) = container::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let (keep, repo, commits) = fixture_repo(&[("python-http", "v1")]);
    let base = tempfile::Builder::new()
        .prefix("nanoscale-systemd-lowpriv-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data = base.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let binary = Path::new(env!("CARGO_BIN_EXE_nanoscale"));
    let container = Container::boot(&Boot {
        name: format!("ns-lowpriv-{}", std::process::id()),
        binds: vec![
            (base.path(), false),
            (repo.parent().expect("parent"), true),
            (binary, true),
        ],
        private_network: false,
    });
    // The agent's user, its sudo rule (as install.sh writes it) and the PAM
    // and sudo files the container's empty /etc lacks.
    container.must(&[
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "nanoscale-test",
    ]);
    let id = |flag: &str| -> u32 {
        container
            .must(&["id", flag, "nanoscale-test"])
            .trim()
            .parse()
            .expect("an id")
    };
    let (uid, gid) = (id("-u"), id("-g"));
    for path in [base.path(), keep.path()] {
        let chowned = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(path)
            .status()
            .expect("chown");
        assert!(chowned.success());
    }
    let helper = format!(
        "{} helper --data-dir {} -",
        binary.display(),
        data.display()
    );
    let sudoers = format!(
        "root ALL=(ALL:ALL) ALL\n\
         Defaults:nanoscale-test !log_allowed, !pam_session\n\
         nanoscale-test ALL=(root) NOPASSWD: {helper}\n"
    );
    let pam = "auth sufficient pam_permit.so\naccount sufficient pam_permit.so\n\
               session optional pam_permit.so\n";
    let setup = format!(
        "mkdir -p /etc/pam.d && printf '%s' '{pam}' > /etc/pam.d/sudo && \
         printf '%s' '{sudoers}' > /etc/sudoers.tmp && chmod 440 /etc/sudoers.tmp && \
         visudo -cf /etc/sudoers.tmp && mv /etc/sudoers.tmp /etc/sudoers"
    );
    container.must(&["sh", "-c", &setup]);

    let proxy = format!("127.0.0.1:{}", free_port());
    let mut command = container.enter();
    command.args([
        "systemd-run",
        "--quiet",
        "--pipe",
        "--wait",
        "--collect",
        "--unit=nanoscale-test-agent",
        "--property=User=nanoscale-test",
        "--property=Group=nanoscale-test",
        "--property=SupplementaryGroups=systemd-journal",
        "--property=KillMode=process",
        &format!("--working-directory={}", data.display()),
        &format!("--setenv=HOME={}", data.display()),
        // Its agent's complaints while the container shuts down say nothing.
        "--setenv=NANOSCALE_LOG=error",
        &format!("--setenv=NANOSCALE_HELPER_COMMAND=/usr/bin/sudo -n {helper}"),
        "--setenv=NANOSCALE_SUPERVISOR=systemd",
    ]);
    let server = TestServer::spawn_wrapped(
        command,
        &data,
        "127.0.0.1:0",
        &agent_args(&proxy),
        &[],
        Stdio::inherit(),
        None,
    );
    let token = server.bootstrap().await;
    let project = server
        .post("/api/v1/projects", &token, json!({"name": "lowpriv"}))
        .await;
    let project = project["id"].as_str().expect("id").to_owned();
    let web = server
        .create_and_deploy(
            &token,
            &project,
            json!({
                "name": "web",
                "source": {"git": format!("file://{}", repo.display()), "ref": commits[0]},
                "health": {"path": "/healthz", "start_period_secs": 30, "interval_secs": 1},
            }),
            &commits[0],
        )
        .await;
    let instance = server.healthy_instance(&token, &web, "").await;
    let id = instance["id"].as_str().expect("id").to_owned();
    let unit = format!("nanoscale-{id}.service");

    // The agent is the unprivileged user; the app, a unit, is its own.
    let agent_pid = std::fs::read_to_string(data.join("agent/agent.lock")).expect("agent.lock");
    let owner = |pid: &str| container.must(&["stat", "-c", "%u", &format!("/proc/{pid}")]);
    assert_eq!(owner(agent_pid.trim()).trim(), uid.to_string());
    let shown = container.must(&["systemctl", "show", "--property=User,ActiveState", &unit]);
    assert!(
        shown.contains("User=ns-web") && shown.contains("ActiveState=active"),
        "{shown}"
    );
    // The instance's directory and environment file are root's; only the log
    // directory, which it fills from the journal, is the agent's.
    use std::os::unix::fs::MetadataExt;
    let dir = data.join("apps/web/instances").join(&id);
    let stat = |path: &Path| std::fs::symlink_metadata(path).expect("stat");
    assert_eq!((stat(&dir).uid(), stat(&dir).mode() & 0o7777), (0, 0o2750));
    let env_file = dir.join("unit.env");
    assert_eq!(
        (stat(&env_file).uid(), stat(&env_file).mode() & 0o777),
        (0, 0o600)
    );
    assert_eq!(stat(&dir.join("systemd.unit")).uid(), 0);
    assert_eq!(stat(&dir.join("log")).uid(), uid);
    wait_for("the app's output, read from the journal", async || {
        let logs = server
            .get(&format!("/api/v1/services/{web}/logs?tail=20"), &token)
            .await;
        logs.to_string()
            .contains("listening on 127.0.0.1")
            .then_some(())
    })
    .await;

    // Removed, the service leaves no unit: stopped through the helper too.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/services/{web}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for("web's unit to be gone", async || {
        let load = container.must(&["systemctl", "show", "--property=LoadState", &unit]);
        load.contains("LoadState=not-found").then_some(())
    })
    .await;
}

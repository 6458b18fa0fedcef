//! The generated systemd unit, run by a real systemd: `systemd-nspawn` boots
//! systemd as PID 1 in a container whose root is an empty tmpfs with this host's
//! `/usr` (`--volatile=yes`, private network), the test starts the escape-attempts
//! fixture app through the unit the agent renders, and checks from outside what
//! the unit's sandbox let through. This machine has systemd installed but not as
//! PID 1, as many CI hosts do; the container gives the units a real one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code; runs nspawn

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use container::{Boot, Container};

#[path = "../../nanoscale/tests/common/container.rs"]
mod container;
#[path = "../../nanoscale/tests/common/escape.rs"]
mod escape;

use escape::check_escape_report;
use nanoscale_agent::runtime::systemd::render;
use nanoscale_agent::runtime::{Limits, ShimSpec};
use serde_json::Value;

/// The app's account, made in the container as the agent makes it on a node.
const APP_UID: u32 = 61_234;
const APP_USER: &str = "ns-snoop";

fn private_dir(path: &Path, uid: u32) {
    std::fs::create_dir_all(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

#[test]
fn a_real_systemd_runs_the_generated_unit_and_its_sandbox_holds() {
    if let Some(why) = container::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nanoscale/tests/fixtures/apps/escape-attempts/app.py");
    let base = tempfile::Builder::new()
        .prefix("nanoscale-systemd-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data: PathBuf = base.path().join("data");
    let release = data.join("apps/snoop/releases/1");
    let home = data.join("apps/snoop/home");
    let other = data.join("apps/vault/releases/1");
    let agent = data.join("agent");
    private_dir(&release, APP_UID);
    private_dir(&home, APP_UID);
    private_dir(&other, APP_UID + 1);
    private_dir(&agent, 0);
    std::fs::copy(&fixture, release.join("app.py")).expect("copy app");
    std::os::unix::fs::chown(release.join("app.py"), Some(APP_UID), Some(APP_UID)).expect("chown");
    std::fs::write(other.join("app.py"), "secret of another app\n").expect("write");
    std::fs::write(agent.join("state.db"), "agent state\n").expect("write");
    let port = 18_080;
    let spec = ShimSpec {
        id: "snoop-r1-0-test".into(),
        argv: vec!["/usr/bin/python3".into(), "app.py".into()],
        env: vec![
            ("PORT".into(), port.to_string()),
            ("OTHER_APP_DIR".into(), other.display().to_string()),
            ("AGENT_DIR".into(), agent.display().to_string()),
            ("HOME".into(), home.display().to_string()),
        ],
        cwd: release.clone(),
        log_dir: data.join("apps/snoop/instances/snoop-r1-0-test/log"),
        log_max_bytes: 1 << 20,
        log_keep: 1,
        limits: Limits {
            memory_bytes: Some(128 << 20),
            swap_bytes: None,
            cpu_millis: Some(500),
            pids: Some(64),
        },
        stop_grace_secs: 5,
        uid: Some(APP_UID),
        gid: Some(APP_UID),
        sandbox: Some(nanoscale_agent::sandbox::spec(
            std::slice::from_ref(&data),
            vec![release.clone(), home.clone()],
        )),
    };
    let env_file = base.path().join("snoop.env");
    let unit = render(&spec, APP_USER, &env_file).expect("renders");
    std::fs::write(&env_file, &unit.environment).expect("env");
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let unit_file = base.path().join(&unit.name);
    std::fs::write(&unit_file, &unit.unit).expect("unit");

    let container = Container::boot(&Boot {
        name: format!("ns-test-{}", std::process::id()),
        binds: vec![(base.path(), false)],
        private_network: true,
    });
    let uid = APP_UID.to_string();
    container.must(&[
        "useradd",
        "--system",
        "--no-create-home",
        "--uid",
        &uid,
        "--user-group",
        APP_USER,
    ]);
    container.must(&["systemctl", "link", &unit_file.display().to_string()]);
    let started = container.run(&["systemctl", "start", &unit.name]);
    if !started.status.success() {
        let journal = container.run(&["journalctl", "--no-pager", "-n", "40", "-u", &unit.name]);
        panic!(
            "systemd could not start the unit:\n{}\n{}",
            String::from_utf8_lossy(&started.stderr),
            String::from_utf8_lossy(&journal.stdout)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let report: Value = loop {
        let fetched = container.run(&["curl", "-fsS", &format!("http://127.0.0.1:{port}/report")]);
        if fetched.status.success() {
            break serde_json::from_slice(&fetched.stdout).expect("report is JSON");
        }
        if Instant::now() > deadline {
            let status = container.run(&["systemctl", "status", "--no-pager", "-l", &unit.name]);
            panic!(
                "the app did not answer under systemd:\n{}",
                String::from_utf8_lossy(&status.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let blocked = check_escape_report(&report);
    assert_eq!(report["uid"], APP_UID, "{report}");
    // The limits are systemd's now.
    let shown = container.must(&[
        "systemctl",
        "show",
        "--property=MemoryMax,TasksMax,CPUQuotaPerSecUSec,User",
        &unit.name,
    ]);
    for expected in [
        "MemoryMax=134217728",
        "TasksMax=64",
        "CPUQuotaPerSecUSec=500ms",
        "User=ns-snoop",
    ] {
        assert!(shown.contains(expected), "{expected} in:\n{shown}");
    }
    container.must(&["systemctl", "stop", &unit.name]);
    eprintln!(
        "systemd in a container ran {} as uid {APP_UID}: {} escapes blocked",
        unit.name, blocked
    );
}

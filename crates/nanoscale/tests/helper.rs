//! The privileged helper as a command (`nanoscale helper --data-dir DIR OP`): the
//! operations on its list work, and everything else — other operations, extra
//! fields, paths outside the node's app directories, through `..` or symlinks —
//! is refused with exit 2 and changes nothing. The agent runs the same code in
//! process when it is root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // runs the binary under test

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

mod common;
use common::SwapOff;

fn helper(data: &Path, operation: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .args(["helper", "--data-dir"])
        .arg(data)
        .arg(operation)
        .output()
        .expect("run nanoscale helper")
}

/// `nanoscale helper --data-dir DATA -`, the operation on stdin, as an
/// unprivileged agent sends one that carries secrets.
fn helper_stdin(data: &Path, operation: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .args(["helper", "--data-dir"])
        .arg(data)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nanoscale helper");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(operation.as_bytes())
        .expect("write the operation");
    child.wait_with_output().expect("wait for nanoscale helper")
}

fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("stat").uid()
}

#[test]
fn the_helper_does_its_list_and_refuses_everything_else() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path();
    let apps = data.join("apps");
    let service = format!("hlp{}", std::process::id());
    for dir in [
        format!("{service}/releases/1"),
        format!("{service}/home"),
        "other/home".to_owned(),
        format!("{service}/instances/web-1"),
        format!("{service}/instances/web-2"),
    ] {
        std::fs::create_dir_all(apps.join(dir)).expect("mkdir");
    }
    std::fs::create_dir_all(data.join("agent")).expect("mkdir");
    // A release whose tree links out: lchown must not follow.
    std::os::unix::fs::symlink(
        "/etc/passwd",
        apps.join(format!("{service}/releases/1/passwd")),
    )
    .expect("symlink");
    // A "release" that is a link to /etc.
    std::os::unix::fs::symlink("/etc", apps.join(format!("{service}/releases/2")))
        .expect("symlink");
    let etc_owner = owner(Path::new("/etc"));
    let passwd_owner = owner(Path::new("/etc/passwd"));

    let own =
        |dir: String| json!({"op": "own_app_dir", "service": service, "dir": dir}).to_string();
    let apps_text = apps.display().to_string();
    let refused = [
        ("an operation off the list", json!({"op": "run_command", "argv": ["/bin/id"]}).to_string()),
        ("an extra field", json!({"op": "create_app_user", "service": service, "uid": 0}).to_string()),
        ("a script instead of a plan", json!({"op": "apply_firewall", "script": "flush ruleset"}).to_string()),
        ("an array", json!(["create_app_user", service]).to_string()),
        ("not JSON", "create_app_user web".to_owned()),
        ("a name that is no service's", json!({"op": "create_app_user", "service": "Root"}).to_string()),
        ("a name with '..'", json!({"op": "remove_app_user", "service": "../x"}).to_string()),
        ("an option as a name", json!({"op": "create_app_user", "service": "-o"}).to_string()),
        ("a path outside", own("/etc".into())),
        ("a path through '..'", own(format!("{apps_text}/{service}/home/../../../../etc"))),
        ("a path through '.'", own(format!("{apps_text}/{service}/./home"))),
        ("another app's home", own(format!("{apps_text}/other/home"))),
        ("the agent's records", own(format!("{apps_text}/{service}/instances"))),
        ("the service directory", own(format!("{apps_text}/{service}"))),
        ("a release that is a symlink", own(format!("{apps_text}/{service}/releases/2"))),
        ("below a release", own(format!("{apps_text}/{service}/releases/1/passwd"))),
        ("a relative path", own(format!("{service}/home"))),
        ("stopping outside the apps", json!({"op": "stop_shim", "service": service, "dir": "/proc/1", "grace_ms": 0}).to_string()),
        ("stopping another app's run", json!({"op": "stop_shim", "service": service, "dir": format!("{apps_text}/other/instances/x"), "grace_ms": 0}).to_string()),
        ("stopping the agent's records", json!({"op": "stop_shim", "service": service, "dir": format!("{apps_text}/{service}/instances"), "grace_ms": 0}).to_string()),
        ("stopping with a day's grace", json!({"op": "stop_shim", "service": service, "dir": format!("{apps_text}/{service}/instances/web-1"), "grace_ms": 86_400_000}).to_string()),
        ("stopping a pid given by the caller", json!({"op": "stop_shim", "service": service, "dir": format!("{apps_text}/{service}/instances/web-1"), "grace_ms": 0, "pid": 1}).to_string()),
        (
            "a firewall plan with an injected network",
            json!({"op": "apply_firewall", "plan": {"mode": "B", "open_tcp_ports": [80], "ssh_from": ["10.0.0.0/8; flush ruleset"]}}).to_string(),
        ),
    ];
    for (what, operation) in &refused {
        let output = helper(data, operation);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains("refused"), "{what}: {stderr}");
    }
    assert_eq!(owner(Path::new("/etc")), etc_owner, "/etc is untouched");

    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "helper: {} refusals checked; skipping the operations themselves: they need root",
            refused.len()
        );
        return;
    }
    let created = helper(
        data,
        &json!({"op": "create_app_user", "service": service}).to_string(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let answer: Value = serde_json::from_slice(&created.stdout).expect("JSON answer");
    let uid = answer["user"]["uid"].as_u64().expect("uid") as u32;
    assert_eq!(answer["user"]["name"], format!("ns-{service}"));
    for dir in [format!("{service}/releases/1"), format!("{service}/home")] {
        let output = helper(data, &own(format!("{apps_text}/{dir}")));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let meta = std::fs::metadata(apps.join(&dir)).expect("stat");
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (uid, 0o700),
            "{dir}"
        );
    }
    assert_eq!(
        owner(&apps.join(format!("{service}/releases/1/passwd"))),
        uid,
        "the link itself"
    );
    assert_eq!(
        owner(Path::new("/etc/passwd")),
        passwd_owner,
        "not what it points to"
    );
    // stop_shim signals the shim its directory records, by pid and start time:
    // one that is running stops; a recorded pid whose start time is another
    // process's (a reused pid) is left alone.
    let start_time = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = stat.rsplit_once(") ").expect("comm").1;
        after
            .split(' ')
            .nth(19)
            .expect("starttime")
            .parse()
            .expect("number")
    };
    let sleeper = || {
        use std::os::unix::process::CommandExt;
        Command::new("/bin/sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .expect("sleep")
    };
    let (mut running, mut bystander) = (sleeper(), sleeper());
    let record = |dir: &str, pid: u32, start: u64| {
        std::fs::write(
            apps.join(format!("{service}/instances/{dir}/shim.pid")),
            format!("{pid} {start}\n"),
        )
        .expect("shim.pid");
    };
    record("web-1", running.id(), start_time(running.id()));
    record("web-2", bystander.id(), start_time(bystander.id()) + 1);
    for dir in ["web-1", "web-2"] {
        let stop = json!({"op": "stop_shim", "service": service, "grace_ms": 500,
            "dir": format!("{apps_text}/{service}/instances/{dir}")});
        let output = helper(data, &stop.to_string());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
        assert!(answer["stopped"]["exit"].is_null(), "{answer}");
    }
    let ended = running.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&ended),
        Some(15)
    );
    assert!(
        bystander.try_wait().expect("try_wait").is_none(),
        "a reused pid was signalled"
    );
    // Records in a directory that is not the helper's alone (one an agent that
    // is not root could have filled) are not trusted: nothing is signalled.
    if nix::unistd::geteuid().is_root() {
        let forged = apps.join(format!("{service}/instances/web-2"));
        record("web-2", bystander.id(), start_time(bystander.id()));
        std::os::unix::fs::lchown(&forged, Some(65534), Some(65534)).expect("chown");
        let stop = json!({"op": "stop_shim", "service": service, "grace_ms": 0,
            "dir": forged});
        let output = helper(data, &stop.to_string());
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && said.contains("not the helper's alone"),
            "{said}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            bystander.try_wait().expect("try_wait").is_none(),
            "a forged record was trusted"
        );
        // Nor does a root shim run in such a directory.
        std::fs::write(forged.join("shim.json"), "{}").expect("spec");
        let shim = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .arg("shim")
            .arg(&forged)
            .output()
            .expect("nanoscale shim");
        let said = String::from_utf8_lossy(&shim.stderr);
        assert!(
            !shim.status.success() && said.contains("is not root's alone"),
            "{said}"
        );
        assert!(!forged.join("exit.json").exists());
    }
    bystander.kill().expect("kill");
    let _ = bystander.wait();

    // An account a process still runs as is kept, and the answer names it.
    let mut user_process = Command::new("/usr/bin/setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "/bin/sleep",
            "30",
        ])
        .spawn()
        .expect("setpriv sleep");
    let remove = json!({"op": "remove_app_user", "service": service}).to_string();
    // setpriv takes the uid just after it starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{}/status", user_process.id()))
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.contains(&format!("\t{uid}\t")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "setpriv never took uid {uid}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kept = helper(data, &remove);
    let kept: Value = serde_json::from_slice(&kept.stdout).expect("JSON answer");
    assert_eq!(kept["in_use"]["pid"], user_process.id(), "{kept}");
    assert!(nix::unistd::User::from_name(&format!("ns-{service}"))
        .expect("getpwnam")
        .is_some());
    user_process.kill().expect("kill");
    let _ = user_process.wait();

    let removed = helper(data, &remove);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&removed.stdout).expect("JSON answer"),
        json!("done")
    );
    assert!(nix::unistd::User::from_name(&format!("ns-{service}"))
        .expect("getpwnam")
        .is_none());
    eprintln!("helper: {} refusals, 6 operations done", refused.len());
}

/// Runs `args` in network namespace `ns` (where `ip netns exec` also shows
/// `/etc/netns/<ns>/*` over `/etc/*`: that namespace's own ufw configuration).
fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

/// Where ufw is active, the firewall goes into ufw: NanoScale's rules (marked by
/// their comment) are added, changed and removed with the mode, the operator's
/// own rules stay, and ufw's default for incoming traffic comes back in mode A.
/// ufw runs in a network namespace of its own, with a copy of its configuration,
/// so this host's ufw and firewall are never touched.
#[test]
fn where_ufw_is_active_the_firewall_goes_into_ufw_and_leaves_the_operators_rules() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: ufw and network namespaces need root");
        return;
    }
    assert!(
        Path::new("/usr/sbin/ufw").exists(),
        "ufw is missing: scripts/test installs it"
    );
    let ns = format!("ns-ufw-{}", std::process::id());
    let etc = Path::new("/etc/netns").join(&ns);
    struct Cleanup(String, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(ns.clone(), etc.clone());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(&etc).unwrap();
    for dir in ["/etc/ufw", "/etc/default"] {
        let copied = Command::new("cp")
            .args(["-a", dir])
            .arg(&etc)
            .status()
            .unwrap();
        assert!(copied.success(), "copy {dir}");
    }
    let ufw = |args: &[&str]| {
        let mut all = vec!["/usr/sbin/ufw"];
        all.extend_from_slice(args);
        let output = in_ns(&ns, &all);
        assert!(
            output.status.success(),
            "ufw {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let host_before = ufw_host_status();
    ufw(&["--force", "enable"]);
    ufw(&["default", "allow", "incoming"]); // the operator's choice, to be given back
    ufw(&["allow", "5000/tcp", "comment", "operator rule"]);

    let temp = tempfile::tempdir().expect("tempdir");
    for dir in ["apps", "agent"] {
        std::fs::create_dir_all(temp.path().join(dir)).unwrap();
    }
    let data = temp.path().display().to_string();
    let apply = |mode: &str, ports: &[u16], ssh_from: &[&str]| {
        let operation = json!({"op": "apply_firewall", "plan": {"mode": mode, "open_tcp_ports": ports, "ssh_from": ssh_from}});
        let output = in_ns(
            &ns,
            &[
                env!("CARGO_BIN_EXE_nanoscale"),
                "helper",
                "--data-dir",
                &data,
                &operation.to_string(),
            ],
        );
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("answer");
        assert_eq!(answer["firewall"]["backend"], "ufw", "{answer}");
    };
    let marked = |status: &str| -> Vec<String> {
        status
            .lines()
            .filter_map(|line| line.split_once(" # ").map(|(_, c)| c.trim().to_owned()))
            .filter(|comment| comment.starts_with("nanoscale "))
            .collect()
    };

    apply("B", &[8080], &["10.0.0.0/8"]);
    let status = ufw(&["status", "verbose"]);
    assert!(status.contains("Default: deny (incoming)"), "{status}");
    let mine = marked(&status);
    assert!(mine.contains(&"nanoscale tcp/8080".to_owned()), "{status}");
    assert!(
        mine.contains(&"nanoscale ssh 10.0.0.0/8".to_owned()),
        "{status}"
    );
    assert!(status.contains("operator rule"), "{status}");
    let tables =
        String::from_utf8_lossy(&in_ns(&ns, &["nft", "list", "tables"]).stdout).into_owned();
    assert!(
        !tables.contains("inet nanoscale"),
        "no table of NanoScale's beside ufw: {tables}"
    );

    apply("B", &[9090], &[]);
    let mine = marked(&ufw(&["status"]));
    assert!(mine.contains(&"nanoscale tcp/9090".to_owned()), "{mine:?}");
    assert!(mine.contains(&"nanoscale ssh any".to_owned()), "{mine:?}");
    assert!(
        !mine
            .iter()
            .any(|c| c.contains("8080") || c.contains("10.0.0.0/8")),
        "{mine:?}"
    );

    apply("C", &[9090], &[]);
    let status = ufw(&["status", "verbose"]);
    assert!(marked(&status).is_empty(), "{status}");
    assert!(status.contains("Default: deny (incoming)"), "{status}");
    assert!(status.contains("operator rule"), "{status}");

    apply("A", &[], &[]);
    let status = ufw(&["status", "verbose"]);
    assert!(marked(&status).is_empty(), "{status}");
    assert!(
        status.contains("Default: allow (incoming)"),
        "the operator's default is back: {status}"
    );
    assert!(status.contains("operator rule"), "{status}");
    assert_eq!(
        ufw_host_status(),
        host_before,
        "this host's own ufw was not touched"
    );
}

fn ufw_host_status() -> String {
    let output = Command::new("/usr/sbin/ufw")
        .args(["status", "verbose"])
        .output()
        .expect("ufw");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn swaps_list(file: &Path) -> bool {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(&file.display().to_string()))
}

#[test]
fn the_swap_file_is_made_switched_on_off_and_removed_in_its_own_place() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().canonicalize().expect("canonical");
    let state = data.join("agent");
    std::fs::create_dir_all(data.join("apps")).expect("mkdir");
    std::fs::create_dir_all(&state).expect("mkdir");
    let file = data.join("helper/swapfile");
    for (what, operation) in [
        ("too small", json!({"op": "create_swap", "size_mib": 1})),
        (
            "too large",
            json!({"op": "create_swap", "size_mib": 1u64 << 40}),
        ),
        (
            "a path of the caller's",
            json!({"op": "create_swap", "size_mib": 16, "path": "/etc/shadow"}),
        ),
    ] {
        let output = helper(&data, &operation.to_string());
        assert_eq!(output.status.code(), Some(2), "{what}");
    }
    assert!(!file.exists(), "nothing made by a refusal");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("swap: refusals checked; skipping swapon/swapoff: they need root");
        return;
    }
    // The helper's own directory must be its own and closed to others: one the
    // agent could write is refused, and nothing is made in it.
    let own = data.join("helper");
    std::fs::create_dir(&own).expect("mkdir");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let create = json!({"op": "create_swap", "size_mib": 16}).to_string();
    let output = helper(&data, &create);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("may be written by others"),
        "{said}"
    );
    assert!(!file.exists());
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // A link planted where the swap file goes is neither followed nor removed.
    let target = data.join("precious");
    std::fs::write(&target, "keep me").expect("write");
    std::os::unix::fs::symlink(&target, &file).expect("symlink");
    let output = helper(&data, &create);
    assert!(!output.status.success(), "a link in its place is refused");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a plain file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me");
    std::fs::remove_file(&file).expect("unlink");
    // A stale file (not on as swap) is replaced.
    std::fs::write(&file, "stale").expect("write");

    let _off = SwapOff(file.clone());
    let output = helper(&data, &create);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
    assert_eq!(answer["swap"]["created"], true, "{answer}");
    assert_eq!(answer["swap"]["path"], file.display().to_string());
    assert!(
        swaps_list(&file),
        "on: {}",
        std::fs::read_to_string("/proc/swaps").unwrap_or_default()
    );
    let meta = std::fs::metadata(&file).expect("stat");
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o600));
    assert_eq!(meta.len(), 16 << 20);
    // Again: already on, nothing done.
    let again: Value = serde_json::from_slice(&helper(&data, &create).stdout).expect("JSON answer");
    assert_eq!(again["swap"]["created"], false, "{again}");

    let output = helper(&data, &json!({"op": "remove_swap"}).to_string());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!swaps_list(&file), "off");
    assert!(!file.exists(), "deleted");
    eprintln!("swap: a 16 MiB swap file made, switched on, off and removed");
}

#[test]
fn a_shim_starts_only_confined_to_its_app_and_in_its_place() {
    use nanoscale_agent::runtime::{Limits, ShimSpec};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("start_shim: skipped: it needs root (an app user, a sandbox)");
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().canonicalize().expect("canonical");
    let apps = data.join("apps");
    let service = format!("shm{}", std::process::id());
    for dir in [
        "releases/1",
        "home",
        "instances/i1",
        "instances/i2",
        "builds/1",
    ] {
        std::fs::create_dir_all(apps.join(&service).join(dir)).expect("mkdir");
    }
    std::fs::create_dir_all(data.join("agent")).expect("mkdir");
    std::os::unix::fs::symlink("/tmp", apps.join(&service).join("instances/link"))
        .expect("symlink");
    let user = helper(
        &data,
        &json!({"op": "create_app_user", "service": service}).to_string(),
    );
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let answer: Value = serde_json::from_slice(&user.stdout).expect("JSON");
    let uid = answer["user"]["uid"].as_u64().expect("uid") as u32;
    let gid = answer["user"]["gid"].as_u64().expect("gid") as u32;
    let release = apps.join(&service).join("releases/1");
    let home = apps.join(&service).join("home");
    for dir in [&release, &home] {
        let own = json!({"op": "own_app_dir", "service": service, "dir": dir}).to_string();
        assert!(helper(&data, &own).status.success());
    }
    let private = vec![data.clone(), data.join("agent"), data.join("proxy")];
    let good = |dir: &Path| ShimSpec {
        id: dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned(),
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "id -u; ls -A /home | wc -l".into(),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: release.clone(),
        log_dir: dir.join("log"),
        log_max_bytes: 1 << 20,
        log_keep: 1,
        limits: Limits {
            pids: Some(64),
            ..Limits::default()
        },
        stop_grace_secs: 1,
        uid: Some(uid),
        gid: Some(gid),
        sandbox: Some(nanoscale_agent::sandbox::spec(
            &private,
            vec![release.clone(), home.clone()],
        )),
    };
    let start = |dir: &Path, spec: &ShimSpec| {
        let operation = json!({"op": "start_shim", "service": service, "dir": dir, "spec": spec});
        helper_stdin(&data, &operation.to_string())
    };
    let instance = apps.join(&service).join("instances/i2");
    let refused: Vec<(&str, std::path::PathBuf, ShimSpec, &str)> = vec![
        (
            "as root",
            instance.clone(),
            ShimSpec {
                uid: Some(0),
                gid: Some(0),
                ..good(&instance)
            },
            "must run as",
        ),
        (
            "unconfined",
            instance.clone(),
            ShimSpec {
                sandbox: None,
                ..good(&instance)
            },
            "sandbox",
        ),
        (
            "with the data dir writable",
            instance.clone(),
            ShimSpec {
                sandbox: Some(nanoscale_agent::sandbox::spec(&private, vec![data.clone()])),
                ..good(&instance)
            },
            "sandbox",
        ),
        (
            "outside a release",
            instance.clone(),
            ShimSpec {
                cwd: "/etc".into(),
                ..good(&instance)
            },
            "release",
        ),
        (
            "logging elsewhere",
            instance.clone(),
            ShimSpec {
                log_dir: "/etc/log".into(),
                ..good(&instance)
            },
            "log",
        ),
        (
            "in a release directory",
            release.clone(),
            good(&release),
            "is not",
        ),
        (
            "through a symlink",
            apps.join(&service).join("instances/link"),
            good(&instance),
            "symbolic link",
        ),
        (
            "under another app's cgroup id",
            instance.clone(),
            ShimSpec {
                id: "web-r3-0-1a2b".into(),
                ..good(&instance)
            },
            "its id must be",
        ),
        (
            "without a pids limit",
            instance.clone(),
            ShimSpec {
                limits: Limits::default(),
                ..good(&instance)
            },
            "pids limit",
        ),
        (
            "with an endless log",
            instance.clone(),
            ShimSpec {
                log_max_bytes: u64::MAX,
                ..good(&instance)
            },
            "log may keep",
        ),
        (
            "outside the apps",
            data.join("agent"),
            good(&data.join("agent")),
            "is not under",
        ),
    ];
    for (what, dir, spec, reason) in &refused {
        let output = start(dir, spec);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(reason), "{what}: {stderr}");
        assert!(!dir.join("shim.pid").exists(), "{what}: no shim started");
    }
    assert!(!Path::new("/tmp/shim.pid").exists());
    // `start_unit` (where systemd runs the apps) makes the same checks before it
    // writes a unit, and takes an instance's directory only.
    let start_unit = |dir: &Path, spec: &ShimSpec| {
        let operation = json!({"op": "start_unit", "service": service, "dir": dir, "spec": spec});
        helper_stdin(&data, &operation.to_string())
    };
    let build = apps.join(&service).join("builds/1");
    let health = apps.join(&service).join("instances/i1/health");
    let not_instances = [
        ("a build", build.clone(), good(&build)),
        ("a health check", health.clone(), good(&health)),
    ];
    for (what, dir, spec, reason) in refused
        .iter()
        .map(|(what, dir, spec, reason)| (*what, dir.clone(), spec.clone(), *reason))
        .chain(
            not_instances
                .iter()
                .map(|(what, dir, spec)| (*what, dir.clone(), spec.clone(), "only instances")),
        )
    {
        let output = start_unit(&dir, &spec);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "unit {what}: {stderr}");
        assert!(stderr.contains(reason), "unit {what}: {stderr}");
        assert!(
            !dir.join("unit.env").exists(),
            "unit {what}: nothing written"
        );
    }
    let stop_unit = json!({"op": "stop_unit", "service": service, "dir": release});
    let output = helper(&data, &stop_unit.to_string());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not"),
        "stop_unit takes an instance only"
    );
    // A directory the helper did not make (here: another user's) is not used: it
    // could hold links that the root shim would follow.
    let foreign = apps.join(&service).join("instances/i2");
    std::os::unix::fs::lchown(&foreign, Some(65534), Some(65534)).expect("chown");
    let output = start(&foreign, &good(&foreign));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("belongs to uid 65534"),
        "{stderr}"
    );
    assert!(!foreign.join("shim.json").exists());

    // The one it takes runs as the app's user, with /home hidden.
    let dir = apps.join(&service).join("instances/i1");
    let output = start(&dir, &good(&dir));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        answer["shim"]["launched"]["app"]["pid"].as_i64().is_some(),
        "{answer}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.join("exit.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the app did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The directory is the helper's; the agent's group may read what the shim
    // wrote (the log), not the spec, which held the env.
    let mode = |path: &Path| std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777;
    assert_eq!((owner(&dir), mode(&dir)), (0, 0o2750));
    assert_eq!(mode(&dir.join("shim.json")), 0o600);
    assert_eq!(mode(&dir.join("log")) & 0o777, 0o750);
    assert_eq!(mode(&dir.join("log/current")), 0o640);
    let log: String = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    // Lines are `<time> <stream> <text>`.
    let said: Vec<&str> = log
        .lines()
        .filter_map(|line| line.splitn(3, ' ').nth(2))
        .collect();
    assert_eq!(
        said,
        [uid.to_string().as_str(), "0"],
        "its uid, and an empty /home: {log}"
    );
    let removed = helper(
        &data,
        &json!({"op": "remove_app_user", "service": service}).to_string(),
    );
    assert!(removed.status.success());
    eprintln!(
        "start_shim: {} refusals; the one started ran as uid {uid}",
        refused.len()
    );
}

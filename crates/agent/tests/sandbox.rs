//! The sandbox against real escape attempts: a real shim runs /bin/sh fixture apps
//! as their own system users in their mount namespaces, with real cgroup limits.
//! Each attempt prints `<name>: blocked` or `<name>: ALLOWED`, and the test reads
//! the instance's log. Needs root (users, namespaces); skips with a reason without.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nanoscale_agent::helper::{Answer, Helper, Operation};
use nanoscale_agent::runtime::{
    inspect, launch, stop, tail_exit_reason, warnings, ExitInfo, Limits, ShimSpec, ShimStatus,
};
use nanoscale_agent::sandbox::{spec, AppUser};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A data dir with two apps, `a` and `b`, laid out as the agent lays them out.
struct Node {
    temp: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let temp = tempfile::tempdir().expect("tempdir");
        for dir in [
            "agent",
            "apps/sbxa/releases/1",
            "apps/sbxa/home",
            "apps/sbxb/releases/1",
            "apps/sbxb/home",
        ] {
            std::fs::create_dir_all(temp.path().join(dir)).expect("mkdir");
        }
        std::fs::write(temp.path().join("agent/agent.db"), "agent state").expect("write");
        std::fs::write(
            temp.path().join("apps/sbxa/releases/1/secret.txt"),
            "a's secret",
        )
        .expect("write");
        Node { temp }
    }

    fn data(&self) -> &Path {
        self.temp.path()
    }

    fn release(&self, app: &str) -> PathBuf {
        self.data().join("apps").join(app).join("releases/1")
    }

    fn home(&self, app: &str) -> PathBuf {
        self.data().join("apps").join(app).join("home")
    }

    /// The app's user and directories, made through the privileged helper as
    /// the agent makes them.
    async fn user(&self, app: &str) -> AppUser {
        let helper =
            Helper::new(&self.data().join("apps"), &self.data().join("agent")).expect("helper");
        let service = app.to_owned();
        let created = helper
            .run(&Operation::CreateAppUser {
                service: service.clone(),
            })
            .await
            .expect("create the app user");
        let Answer::User { name, uid, gid } = created else {
            panic!("no user: {created:?}");
        };
        for dir in [self.release(app), self.home(app)] {
            helper
                .run(&Operation::OwnAppDir {
                    service: service.clone(),
                    dir,
                    volumes: Vec::new(),
                })
                .await
                .expect("chown");
        }
        AppUser { name, uid, gid }
    }

    /// Runs `script` as app `app`, sandboxed, and waits for it to exit.
    async fn run(&self, app: &str, name: &str, script: &str, limits: Limits) -> Run {
        let user = self.user(app).await;
        let dir = self
            .data()
            .join("apps")
            .join(app)
            .join("instances")
            .join(name);
        std::fs::create_dir_all(&dir).expect("instance dir");
        let spec = ShimSpec {
            id: format!("sbx-{}-{name}", std::process::id()),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), self.home(app).display().to_string()),
            ],
            cwd: self.release(app),
            log_dir: dir.join("log"),
            log_max_bytes: 1 << 20,
            log_keep: 2,
            limits,
            stop_grace_secs: 2,
            uid: Some(user.uid),
            gid: Some(user.gid),
            sandbox: Some(spec(
                &[self.data().to_path_buf()],
                vec![self.release(app), self.home(app)],
            )),
        };
        launch(&common::shim(), &[], &dir, &spec)
            .await
            .expect("launch");
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let ShimStatus::Exited(exit) = inspect(&dir) {
                break exit;
            }
            assert!(Instant::now() < deadline, "{name} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let lines = tail_exit_reason(&spec.log_dir, 1000);
        let warned = warnings(&dir);
        stop(&dir, Duration::from_secs(1)).await.expect("stop");
        Run {
            id: spec.id.clone(),
            exit,
            lines,
            warnings: warned,
        }
    }
}

struct Run {
    id: String,
    exit: ExitInfo,
    lines: Vec<String>,
    warnings: Vec<String>,
}

impl Run {
    fn said(&self, line: &str) -> bool {
        self.lines.iter().any(|said| said == line)
    }
}

/// One attempt per line: runs the command with output discarded and reports.
const TRY: &str = r#"try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1: ALLOWED"; else echo "$1: blocked"; fi; }"#;

#[tokio::test]
async fn escapes_from_the_sandbox_are_blocked() {
    if !is_root() {
        eprintln!("skipping: the sandbox needs root (users, mount namespaces)");
        return;
    }
    // As installed: the agent runs with umask 077, which the shim inherits.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let node = Node::new();
    // a runs first so that its files exist and belong to its own user.
    let _ = node.user("sbxa").await;
    let data = node.data().display().to_string();
    let probe = format!("ns-sandbox-probe-{}", std::process::id());
    let script = format!(
        r#"{TRY}
try read-shadow 'cat /etc/shadow'
try read-other-app 'cat {data}/apps/sbxa/releases/1/secret.txt'
try list-other-app 'ls {data}/apps/sbxa'
try read-agent-state 'cat {data}/agent/agent.db'
try write-usr 'touch /usr/{probe}'
try write-etc 'touch /etc/{probe}'
try write-root-fs 'touch /{probe}'
try list-root-home 'test -n "$(ls -A /root)"'
try list-home 'test -n "$(ls -A /home)"'
try mount-tmpfs 'mount -t tmpfs none /mnt'
try chown-to-root 'touch owned && chown 0 owned'
try signal-init 'kill -0 1'
try see-shim "test -e /proc/$PPID"
try write-proc-sys 'echo 3 > /proc/sys/vm/drop_caches'
try write-own-release 'echo hi > ./written && test -s ./written'
try write-home 'echo hi > "$HOME/written"'
try write-tmp 'echo hi > /tmp/{probe}'
echo "uid $(id -u) groups $(id -G)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status | tr -s '\t ' ' '
echo "core $(ulimit -c)"
"#
    );
    let run = node
        .run("sbxb", "escapes", &script, Limits::default())
        .await;
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!(run.exit.code, Some(0), "{:?}", run.lines);
    for blocked in [
        "read-shadow",
        "read-other-app",
        "list-other-app",
        "read-agent-state",
        "write-usr",
        "write-etc",
        "write-root-fs",
        "list-root-home",
        "list-home",
        "mount-tmpfs",
        "chown-to-root",
        "signal-init",
        "see-shim",
        "write-proc-sys",
    ] {
        assert!(
            run.said(&format!("{blocked}: blocked")),
            "{blocked}: {:?}",
            run.lines
        );
    }
    for allowed in ["write-own-release", "write-home", "write-tmp"] {
        assert!(
            run.said(&format!("{allowed}: ALLOWED")),
            "{allowed}: {:?}",
            run.lines
        );
    }
    let user = nix::unistd::User::from_name("ns-sbxb").unwrap().unwrap();
    let uid = user.uid.as_raw();
    let gid = user.gid.as_raw();
    assert!(
        run.said(&format!("uid {uid} groups {gid}")),
        "{:?}",
        run.lines
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            run.said(&format!("{set}: 0000000000000000")),
            "{set}: {:?}",
            run.lines
        );
    }
    assert!(run.said("NoNewPrivs: 1"), "{:?}", run.lines);
    assert!(run.said("core 0"), "{:?}", run.lines);
    // Nothing reached the host: not the probe in /usr, /etc or /tmp.
    for path in ["/usr", "/etc", "/tmp", "/"] {
        assert!(!Path::new(path).join(&probe).exists(), "{path}/{probe}");
    }
    // The writes it was allowed landed in its own directories, as its user.
    use std::os::unix::fs::MetadataExt;
    let written = std::fs::metadata(node.release("sbxb").join("written")).expect("written");
    assert_eq!(written.uid(), uid);
    assert!(node.home("sbxb").join("written").exists());
}

#[tokio::test]
async fn a_sandboxed_fork_bomb_hits_its_pids_limit_and_the_exit_says_so() {
    if !is_root() {
        eprintln!("skipping: the sandbox needs root (users, mount namespaces)");
        return;
    }
    let node = Node::new();
    // Each bomb forks two more until the limit refuses; the parent waits, then leaves.
    let script =
        "bomb() { bomb & bomb & wait; }; (bomb) 2>/dev/null & sleep 2; echo still here; exit 7";
    let run = node
        .run(
            "sbxb",
            "bomb",
            script,
            Limits {
                pids: Some(32),
                ..Limits::default()
            },
        )
        .await;
    if run.warnings.iter().any(|warning| warning.contains("pids")) {
        eprintln!("skipping: no pids controller: {:?}", run.warnings);
        return;
    }
    // The parent either outlived the bomb (7) or could not fork `sleep` itself (2):
    // either way it ended, the limit counted the refusals, and the bomb went with it.
    assert!(
        matches!(run.exit.code, Some(7 | 2)),
        "{:?} {:?}",
        run.exit,
        run.lines
    );
    assert!(run.exit.forks_refused > 0, "{:?}", run.exit);
    assert!(
        nanoscale_agent::runtime::cgroup::Layout::detect()
            .existing(&run.id)
            .is_empty(),
        "the bomb's cgroup was left behind"
    );
}

#[tokio::test]
async fn a_sandboxed_app_allocating_past_its_memory_limit_is_oom_killed() {
    if !is_root() {
        eprintln!("skipping: the sandbox needs root (users, mount namespaces)");
        return;
    }
    let node = Node::new();
    let run = node
        .run(
            "sbxb",
            "oom",
            "exec tail /dev/zero",
            Limits {
                memory_bytes: Some(32 << 20),
                ..Limits::default()
            },
        )
        .await;
    if run
        .warnings
        .iter()
        .any(|warning| warning.contains("memory"))
    {
        eprintln!("skipping: memory limit not enforced: {:?}", run.warnings);
        return;
    }
    assert!(run.exit.oom_killed, "{:?}", run.exit);
    assert_eq!(run.exit.signal, Some(9), "{:?}", run.exit);
}

//! The runtime with real processes: the `nanoscale-shim` binary, /bin/sh apps,
//! signals, rotated logs and (where the host allows) cgroup v1/v2 limits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nanoscale_agent::runtime::cgroup::{Controller, Layout};
use nanoscale_agent::runtime::logs::{read_from, tail, LogCursor, Stream};
use nanoscale_agent::runtime::{
    inspect, launch, stop, tail_exit_reason, warnings, Launched, Limits, ProcRef, RuntimeError,
    ShimSpec, ShimStatus,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

struct Instance {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    spec: ShimSpec,
}

impl Instance {
    fn new(name: &str, script: &str) -> Instance {
        Instance::with_argv(name, &["/bin/sh", "-c", script])
    }

    fn with_argv(name: &str, argv: &[&str]) -> Instance {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("shim");
        let spec = ShimSpec {
            id: format!("rt-{}-{name}", std::process::id()),
            argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
            env: vec![
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
                ("GREETING".to_owned(), "hi there".to_owned()),
            ],
            cwd: temp.path().to_path_buf(),
            log_dir: temp.path().join("logs"),
            log_max_bytes: 1 << 20,
            log_keep: 3,
            limits: Limits::default(),
            stop_grace_secs: 5,
            uid: None,
            gid: None,
            sandbox: None,
        };
        Instance {
            _temp: temp,
            dir,
            spec,
        }
    }

    async fn launch(&self) -> Result<Launched, RuntimeError> {
        launch(&common::shim(), &[], &self.dir, &self.spec).await
    }

    fn log_texts(&self) -> Vec<String> {
        tail_exit_reason(&self.spec.log_dir, 10_000)
    }

    async fn wait_for_log(&self, wanted: &str) -> Vec<String> {
        wait_until(Duration::from_secs(10), || {
            let texts = self.log_texts();
            texts
                .iter()
                .any(|text| text.contains(wanted))
                .then_some(texts)
        })
        .await
        .unwrap_or_else(|| panic!("no log line with {wanted:?}: {:?}", self.log_texts()))
    }

    async fn wait_for_exit(&self) -> nanoscale_agent::runtime::ExitInfo {
        wait_until(Duration::from_secs(20), || match inspect(&self.dir) {
            ShimStatus::Exited(info) => Some(info),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("still not exited: {:?}", inspect(&self.dir)))
    }
}

async fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The launching test process must not keep shims as zombies: tokio reaps them.
async fn assert_reaped(pid: i32) {
    let gone = wait_until(Duration::from_secs(5), || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "shim {pid} was not reaped");
}

#[tokio::test]
async fn an_app_runs_logs_both_streams_and_stops_on_sigterm() {
    let instance = Instance::new("basic", "echo hello; echo oops >&2; exec sleep 1000");
    let launched = instance.launch().await.expect("launch");
    assert!(launched.shim.alive() && launched.app.alive());
    instance.wait_for_log("oops").await;
    instance.wait_for_log("hello").await;
    let (lines, _) = tail(&instance.spec.log_dir, 10);
    let hello = lines
        .iter()
        .find(|line| line.text == "hello")
        .expect("hello");
    let oops = lines.iter().find(|line| line.text == "oops").expect("oops");
    assert_eq!(hello.stream, Stream::Stdout);
    assert_eq!(oops.stream, Stream::Stderr);
    for line in [hello, oops] {
        assert!(line.at.ends_with('Z') && line.at.len() == 24, "{}", line.at);
        chrono::DateTime::parse_from_rfc3339(&line.at).expect("RFC 3339 time");
    }
    assert_eq!(inspect(&instance.dir), ShimStatus::Running(launched));
    assert!(warnings(&instance.dir).is_empty());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(instance.dir.join("shim.json"))
            .expect("shim.json")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "shim.json holds secrets");

    let started = Instant::now();
    let exit = stop(&instance.dir, Duration::from_secs(5))
        .await
        .expect("stop")
        .expect("exit info");
    assert_eq!(
        (exit.code, exit.signal, exit.oom_killed),
        (None, Some(SIGTERM), false)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(!launched.shim.alive() && !launched.app.alive());
    assert_eq!(inspect(&instance.dir), ShimStatus::Exited(exit.clone()));
    // Idempotent.
    assert_eq!(
        stop(&instance.dir, Duration::from_secs(5))
            .await
            .expect("again"),
        Some(exit)
    );
    assert_reaped(launched.shim.pid).await;
}

#[tokio::test]
async fn an_app_ignoring_sigterm_is_killed_after_the_grace() {
    let mut instance = Instance::new(
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    );
    // stop()'s grace wins over the spec's.
    instance.spec.stop_grace_secs = 60;
    let launched = instance.launch().await.expect("launch");
    instance.wait_for_log("ready").await;
    let started = Instant::now();
    let exit = stop(&instance.dir, Duration::from_secs(1))
        .await
        .expect("stop")
        .expect("exit info");
    let took = started.elapsed();
    assert_eq!(exit.signal, Some(SIGKILL));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!launched.app.alive());
}

#[tokio::test]
async fn an_app_killed_with_sigkill_is_recorded_as_exited() {
    let instance = Instance::new("killed", "exec sleep 1000");
    let launched = instance.launch().await.expect("launch");
    kill(Pid::from_raw(launched.app.pid), Signal::SIGKILL).expect("kill app");
    let exit = instance.wait_for_exit().await;
    assert_eq!(
        (exit.code, exit.signal, exit.oom_killed),
        (None, Some(SIGKILL), false)
    );
    assert_eq!(
        stop(&instance.dir, Duration::from_secs(1))
            .await
            .expect("stop"),
        Some(exit)
    );
    assert_reaped(launched.shim.pid).await;
}

#[tokio::test]
async fn an_app_exiting_on_its_own_records_its_code_and_last_lines() {
    let instance = Instance::new(
        "crash",
        "echo starting; echo 'fatal: no database' >&2; exit 3",
    );
    instance.launch().await.expect("launch");
    let exit = instance.wait_for_exit().await;
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    assert_eq!(
        tail_exit_reason(&instance.spec.log_dir, 1),
        vec!["fatal: no database".to_owned()]
    );
}

#[tokio::test]
async fn an_orphaned_app_and_its_process_group_are_stopped() {
    let instance = Instance::new("orphan", "sleep 1000 & echo child $!; wait");
    let launched = instance.launch().await.expect("launch");
    let texts = instance.wait_for_log("child ").await;
    let child_pid: i32 = texts
        .iter()
        .find_map(|text| text.strip_prefix("child "))
        .and_then(|pid| pid.parse().ok())
        .expect("child pid");
    let grandchild = ProcRef::of(child_pid).expect("grandchild alive");

    kill(Pid::from_raw(launched.shim.pid), Signal::SIGKILL).expect("kill shim");
    let status = wait_until(Duration::from_secs(5), || match inspect(&instance.dir) {
        status @ ShimStatus::Orphaned { .. } => Some(status),
        _ => None,
    })
    .await;
    assert_eq!(status, Some(ShimStatus::Orphaned { app: launched.app }));
    assert!(launched.app.alive() && grandchild.alive());

    assert_eq!(
        stop(&instance.dir, Duration::from_secs(2))
            .await
            .expect("stop"),
        None
    );
    assert!(!launched.app.alive(), "app survived stop");
    assert!(
        !grandchild.alive(),
        "grandchild in the app's group survived stop"
    );
    assert_eq!(inspect(&instance.dir), ShimStatus::Gone);
    assert_eq!(
        stop(&instance.dir, Duration::from_secs(2))
            .await
            .expect("again"),
        None
    );
    assert_reaped(launched.shim.pid).await;
}

#[tokio::test]
async fn logs_rotate_to_log_keep_files_and_a_follower_misses_nothing() {
    // Bursts of 20 lines, 50 ms apart: several rotations while the follower reads.
    let script = "i=0; while [ $i -lt 400 ]; do echo \"line $i\"; i=$((i+1)); \
                  if [ $((i % 20)) -eq 0 ]; then sleep 0.05; fi; done; echo finished; exec sleep 1000";
    let mut instance = Instance::new("rotate", script);
    instance.spec.log_max_bytes = 1024;
    instance.spec.log_keep = 3;
    instance.launch().await.expect("launch");
    let mut cursor = LogCursor::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|text| text == "finished") {
        assert!(
            Instant::now() < deadline,
            "follower saw {} lines",
            seen.len()
        );
        seen.extend(
            read_from(&instance.spec.log_dir, &mut cursor)
                .into_iter()
                .map(|line| line.text),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut expected: Vec<String> = (0..400).map(|index| format!("line {index}")).collect();
    expected.push("finished".to_owned());
    assert_eq!(seen, expected);

    let mut names: Vec<String> = std::fs::read_dir(&instance.spec.log_dir)
        .expect("log dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["current", "current.1", "current.2", "current.3"]
    );
    for name in &names {
        let size = std::fs::metadata(instance.spec.log_dir.join(name))
            .expect("size")
            .len();
        assert!(size <= 1024, "{name} has {size} bytes");
    }
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
}

#[tokio::test]
async fn a_missing_program_fails_the_launch_with_the_reason() {
    let instance = Instance::with_argv("missing", &["/nonexistent/app", "--port", "8080"]);
    let error = instance.launch().await.expect_err("must fail");
    let message = error.to_string();
    assert!(matches!(error, RuntimeError::AppStart { .. }), "{error:?}");
    assert!(message.contains("/nonexistent/app"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(matches!(inspect(&instance.dir), ShimStatus::Exited(_)));

    let relative = Instance::with_argv("relative", &["sleep", "1"]);
    let error = relative.launch().await.expect_err("must fail");
    assert!(
        error.to_string().contains("must be an absolute path"),
        "{error}"
    );
}

#[tokio::test]
async fn a_second_launch_in_a_running_dir_is_refused() {
    let instance = Instance::new("twice", "exec sleep 1000");
    let launched = instance.launch().await.expect("launch");
    let error = instance.launch().await.expect_err("must refuse");
    assert!(
        matches!(error, RuntimeError::AlreadyRunning { pid, .. } if pid == launched.shim.pid),
        "{error:?}"
    );
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
    // Once stopped, the directory can be reused.
    let again = instance.launch().await.expect("relaunch");
    assert_ne!(again.app, launched.app);
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
}

#[tokio::test]
async fn the_app_gets_only_its_environment_a_clean_signal_state_and_no_core_dumps() {
    let instance = Instance::new(
        "clean",
        "grep -E '^(SigBlk|SigIgn|NoNewPrivs)' /proc/self/status; grep 'core file' /proc/self/limits; env",
    );
    instance.launch().await.expect("launch");
    instance.wait_for_exit().await;
    let texts = instance.log_texts();
    let has = |wanted: &str| {
        texts
            .iter()
            .any(|text| text.split_whitespace().collect::<Vec<_>>().join(" ") == wanted)
    };
    let mask = |name: &str| {
        texts
            .iter()
            .find_map(|text| text.strip_prefix(name))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {texts:?}"))
    };
    assert_eq!(mask("SigBlk:"), 0, "{texts:?}");
    // Signals 1-31; glibc's reserved real-time signals (32, 33) cannot be reset
    // and may come ignored from whatever started the test.
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{texts:?}");
    assert!(has("NoNewPrivs: 1"), "{texts:?}");
    assert!(has("Max core file size 0 0 bytes"), "{texts:?}");
    assert!(has("GREETING=hi there"), "{texts:?}");
    assert!(
        !texts.iter().any(|text| text.starts_with("CARGO")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn a_proc_ref_with_another_start_time_is_not_alive() {
    let instance = Instance::new("reuse", "exec sleep 1000");
    let launched = instance.launch().await.expect("launch");
    let reused = ProcRef {
        start_time: launched.app.start_time + 1,
        ..launched.app
    };
    assert!(launched.app.alive());
    assert!(!reused.alive());
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
}

/// `(field, KiB)` pairs of a `/proc/<pid>/status` or `smaps_rollup` file.
fn kib_fields(path: &str) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{path}: {error}"))
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let value = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

fn kib(fields: &[(String, u64)], name: &str) -> u64 {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| *value)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// VmRSS counts every page mapped, shared ones included: on this kind of host a
/// dynamically linked hello-world already maps ~1.9 MiB, nearly all of it libc and
/// ld.so text shared with every other process. The budget that matters per instance
/// is what the shim adds: its private memory, and what stays private to one shim
/// while another runs from the same binary.
#[tokio::test]
async fn the_shim_stays_small() {
    let script = "i=0; while [ $i -lt 2000 ]; do echo \"some output line number $i\"; i=$((i+1)); done; exec sleep 1000";
    let first = Instance::new("rss1", script);
    let second = Instance::new("rss2", script);
    let launched = first.launch().await.expect("launch");
    second.launch().await.expect("launch second");
    first.wait_for_log("line number 1999").await;
    second.wait_for_log("line number 1999").await;
    let app_rss = wait_until(Duration::from_secs(5), || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", launched.app.pid)).ok()?;
        (comm.trim() == "sleep").then(|| {
            kib(
                &kib_fields(&format!("/proc/{}/status", launched.app.pid)),
                "VmRSS",
            )
        })
    })
    .await
    .expect("app exec'd sleep");

    let status = kib_fields(&format!("/proc/{}/status", launched.shim.pid));
    let rollup = kib_fields(&format!("/proc/{}/smaps_rollup", launched.shim.pid));
    let (rss, anon, file) = (
        kib(&status, "VmRSS"),
        kib(&status, "RssAnon"),
        kib(&status, "RssFile"),
    );
    let unique = kib(&rollup, "Private_Clean") + kib(&rollup, "Private_Dirty");
    eprintln!(
        "nanoscale-shim after 2000 lines: VmRSS {rss} KiB (RssAnon {anon} KiB, RssFile {file} KiB), \
         unique to it with a second shim running {unique} KiB; \
         coreutils sleep with the same libc: VmRSS {app_rss} KiB"
    );
    stop(&first.dir, Duration::from_secs(2))
        .await
        .expect("stop");
    stop(&second.dir, Duration::from_secs(2))
        .await
        .expect("stop");
    assert!(anon < 512, "shim private memory {anon} KiB");
    assert!(unique < 1024, "memory unique to one shim {unique} KiB");
    // A coarse guard on the total: an async runtime, threads or big buffers would
    // show here long before they showed in production.
    assert!(rss < 2048, "shim VmRSS {rss} KiB");
}

fn is_root() -> bool {
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// The hierarchy that would hold `controller`, or why this host cannot test it.
fn cgroup_available(controller: Controller) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipping: cgroup limits need root");
        return None;
    }
    match Layout::detect().hierarchy(controller) {
        Some((_, root)) => Some(root),
        None => {
            eprintln!(
                "skipping: no {} cgroup controller on this host",
                controller.name()
            );
            None
        }
    }
}

/// On this host's real hierarchy: an app's memory limit admits no swap, a build's
/// admits as much swap again (so a low-memory host's swap file can carry it).
#[test]
fn swap_is_granted_only_where_asked() {
    let Some(root) = cgroup_available(Controller::Memory) else {
        return;
    };
    let layout = Layout::detect();
    let Some((version, _)) = layout.hierarchy(Controller::Memory) else {
        return;
    };
    let v2 = version == nanoscale_agent::runtime::cgroup::Version::V2;
    let swap_file = if v2 {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    let memory = 64 << 20;
    for (id, swap) in [("swap-none-test", None), ("swap-grant-test", Some(memory))] {
        let limits = nanoscale_agent::runtime::Limits {
            memory_bytes: Some(memory),
            swap_bytes: swap,
            ..Default::default()
        };
        let (cgroup, warnings) = layout.create(id, &limits);
        assert!(warnings.is_empty(), "{warnings:?}");
        let dir = cgroup
            .dir_for(Controller::Memory)
            .expect("memory group")
            .to_owned();
        assert!(dir.starts_with(&root));
        let written = std::fs::read_to_string(dir.join(swap_file));
        let _ = cgroup.kill_and_remove(Duration::from_secs(1));
        match written {
            // v2 counts swap alone, v1 memory and swap together.
            Ok(text) => {
                let swap = swap.unwrap_or(0);
                let expected = if v2 { swap } else { memory + swap };
                assert_eq!(text.trim(), expected.to_string(), "{id}");
            }
            // Without swap accounting there is no swap to grant or refuse.
            Err(_) => eprintln!("skipping {id}: no {swap_file} (no swap accounting)"),
        }
    }
    // A build's limits grant it.
    assert_eq!(
        nanoscale_agent::builder::build_limits(Some(memory), None).swap_bytes,
        Some(memory)
    );
}

#[tokio::test]
async fn a_memory_limit_oom_kills_an_allocating_app() {
    if cgroup_available(Controller::Memory).is_none() {
        return;
    }
    // tail looks for the last newline of an endless file without one, buffering it all.
    let mut instance = Instance::with_argv("oom", &["/usr/bin/tail", "/dev/zero"]);
    instance.spec.limits.memory_bytes = Some(32 * 1024 * 1024);
    instance.launch().await.expect("launch");
    let exit = instance.wait_for_exit().await;
    if !warnings(&instance.dir).is_empty() {
        eprintln!(
            "skipping: memory limit not enforced: {:?}",
            warnings(&instance.dir)
        );
        return;
    }
    assert_eq!(
        (exit.signal, exit.oom_killed),
        (Some(SIGKILL), true),
        "{exit:?}"
    );
    stop(&instance.dir, Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(
        Layout::detect().existing(&instance.spec.id).is_empty(),
        "cgroup left behind"
    );
}

#[tokio::test]
async fn a_pids_limit_stops_a_fork_loop() {
    if cgroup_available(Controller::Pids).is_none() {
        return;
    }
    let mut instance = Instance::new(
        "forks",
        "i=0; while [ $i -lt 50 ]; do sleep 100 & i=$((i+1)); done; echo all started",
    );
    instance.spec.limits.pids = Some(4);
    instance.launch().await.expect("launch");
    let exit = instance.wait_for_exit().await;
    assert!(
        warnings(&instance.dir).is_empty(),
        "{:?}",
        warnings(&instance.dir)
    );
    let texts = instance.log_texts();
    assert!(
        texts
            .iter()
            .any(|text| text.to_lowercase().contains("fork")),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|text| text == "all started"), "{texts:?}");
    assert_ne!(exit.code, Some(0));
    stop(&instance.dir, Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(
        Layout::detect().existing(&instance.spec.id).is_empty(),
        "cgroup left behind"
    );
}

#[tokio::test]
async fn a_cpu_limit_is_written_as_a_quota_and_removed_with_the_instance() {
    let Some(root) = cgroup_available(Controller::Cpu) else {
        return;
    };
    let mut instance = Instance::new("cpu", "exec sleep 1000");
    instance.spec.limits.cpu_millis = Some(250);
    let launched = instance.launch().await.expect("launch");
    assert!(
        warnings(&instance.dir).is_empty(),
        "{:?}",
        warnings(&instance.dir)
    );
    let group = root.join("nanoscale").join(&instance.spec.id);
    let read =
        |name: &str| std::fs::read_to_string(group.join(name)).map(|text| text.trim().to_owned());
    match Layout::detect().hierarchy(Controller::Cpu) {
        Some((nanoscale_agent::runtime::cgroup::Version::V1, _)) => {
            assert_eq!(read("cpu.cfs_quota_us").expect("quota"), "25000");
            assert_eq!(read("cpu.cfs_period_us").expect("period"), "100000");
        }
        _ => assert_eq!(read("cpu.max").expect("cpu.max"), "25000 100000"),
    }
    let members = read("cgroup.procs").expect("procs");
    assert!(
        members
            .lines()
            .any(|pid| pid == launched.app.pid.to_string()),
        "{members}"
    );
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
    assert!(!group.exists(), "cgroup left behind");
}

#[tokio::test]
async fn without_limits_no_cgroup_is_created() {
    let instance = Instance::new("nolimits", "exec sleep 1000");
    instance.launch().await.expect("launch");
    assert!(Layout::detect().existing(&instance.spec.id).is_empty());
    assert!(warnings(&instance.dir).is_empty());
    stop(&instance.dir, Duration::from_secs(2))
        .await
        .expect("stop");
}

#[tokio::test]
async fn stop_removes_the_cgroup_a_killed_shim_left_behind() {
    let Some(root) = cgroup_available(Controller::Pids) else {
        return;
    };
    let mut instance = Instance::new("deadshim", "exec sleep 1000");
    instance.spec.limits.pids = Some(16);
    let launched = instance.launch().await.expect("launch");
    let group = root.join("nanoscale").join(&instance.spec.id);
    assert!(group.is_dir());
    kill(Pid::from_raw(launched.shim.pid), Signal::SIGKILL).expect("kill shim");
    wait_until(Duration::from_secs(5), || {
        (!launched.shim.alive()).then_some(())
    })
    .await;
    assert_eq!(
        inspect(&instance.dir),
        ShimStatus::Orphaned { app: launched.app }
    );
    assert_eq!(
        stop(&instance.dir, Duration::from_secs(1))
            .await
            .expect("stop"),
        None
    );
    assert!(!launched.app.alive());
    assert!(!group.exists(), "cgroup left behind");
}

#[tokio::test]
async fn the_app_runs_as_the_requested_user() {
    if !is_root() {
        eprintln!("skipping: switching users needs root");
        return;
    }
    let mut instance = Instance::new("user", "echo uid $(id -u) gid $(id -g) groups $(id -G)");
    instance.spec.uid = Some(65534);
    instance.spec.gid = Some(65534);
    // The temporary directory is private to root; the app's cwd must be reachable.
    instance.spec.cwd = PathBuf::from("/");
    instance.launch().await.expect("launch");
    let exit = instance.wait_for_exit().await;
    assert_eq!(exit.code, Some(0), "{:?}", instance.log_texts());
    assert_eq!(
        instance.log_texts(),
        vec!["uid 65534 gid 65534 groups 65534".to_owned()]
    );
}

use std::fs;

use super::*;

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const PURE_V2: &str = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn fake_unified(controllers: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    fs::write(root.path().join("cgroup.controllers"), controllers).expect("controllers");
    fs::write(root.path().join("cgroup.subtree_control"), "").expect("subtree_control");
    root
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn hybrid_mountinfo_puts_each_controller_on_its_v1_hierarchy() {
    let layout = Layout::from_mountinfo(HYBRID);
    assert_eq!(
        layout.v1[&Controller::Cpu],
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(
        layout.v1[&Controller::Memory],
        Path::new("/sys/fs/cgroup/memory")
    );
    assert_eq!(
        layout.v1[&Controller::Pids],
        Path::new("/sys/fs/cgroup/pids")
    );
    assert_eq!(
        layout.unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    // name=systemd holds no controller we use.
    assert_eq!(layout.v1.len(), 3);
}

#[test]
fn pure_v2_mountinfo_has_only_the_unified_root() {
    let layout = Layout::from_mountinfo(PURE_V2);
    assert!(layout.v1.is_empty());
    assert_eq!(layout.unified.as_deref(), Some(Path::new("/sys/fs/cgroup")));
}

#[test]
fn escaped_mount_points_are_decoded() {
    let line = "41 31 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        Layout::from_mountinfo(line).unified.as_deref(),
        Some(Path::new("/mnt/with space"))
    );
}

#[test]
fn v2_enables_controllers_and_writes_every_limit() {
    let root = fake_unified("cpuset cpu io memory hugetlb pids rdma misc\n");
    let layout = Layout::unified(root.path());
    let limits = Limits {
        memory_bytes: Some(256 * 1024 * 1024),
        swap_bytes: None,
        cpu_millis: Some(500),
        pids: Some(64),
    };
    let (cgroup, warnings) = layout.create("web-1", &limits);
    assert_eq!(warnings, Vec::<String>::new());
    let dir = root.path().join("nanoscale/web-1");
    assert_eq!(cgroup.dir_for(Controller::Memory), Some(dir.as_path()));
    assert_eq!(
        read(&root.path().join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(&root.path().join("nanoscale/cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(read(&dir.join("memory.max")), "268435456");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    // One more than asked: the shim lives in the group too.
    assert_eq!(read(&dir.join("pids.max")), "65");
}

#[test]
fn v2_grants_swap_only_when_asked() {
    let root = fake_unified("memory\n");
    let layout = Layout::unified(root.path());
    let limits = Limits {
        memory_bytes: Some(1 << 30),
        swap_bytes: Some(1 << 30),
        ..Limits::default()
    };
    let (_cgroup, warnings) = layout.create("build-web-3", &limits);
    assert!(warnings.is_empty(), "{warnings:?}");
    let dir = root.path().join("nanoscale/build-web-3");
    assert_eq!(read(&dir.join("memory.max")), "1073741824");
    assert_eq!(read(&dir.join("memory.swap.max")), "1073741824");
}

#[test]
fn v2_without_a_controller_warns_instead_of_failing() {
    let root = fake_unified("cpu io pids\n");
    let layout = Layout::unified(root.path());
    let limits = Limits {
        memory_bytes: Some(1 << 20),
        swap_bytes: None,
        cpu_millis: None,
        pids: Some(10),
    };
    let (cgroup, warnings) = layout.create("api-2", &limits);
    assert_eq!(
        warnings,
        vec![
            "memory limit of 1048576 bytes not enforced: no cgroup controller for it on this host"
        ]
    );
    assert_eq!(cgroup.dir_for(Controller::Memory), None);
    assert!(cgroup.dir_for(Controller::Pids).is_some());
    assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+pids");
}

#[test]
fn no_limits_create_nothing() {
    let root = fake_unified("cpu memory pids\n");
    let (cgroup, warnings) = Layout::unified(root.path()).create("idle", &Limits::default());
    assert!(cgroup.is_empty());
    assert!(warnings.is_empty());
    assert!(!root.path().join(PARENT).exists());
}

#[test]
fn an_unwritable_hierarchy_becomes_warnings() {
    let root = fake_unified("cpu memory pids\n");
    // A file where the parent directory should be: creating it fails like a
    // read-only or foreign mount would.
    fs::write(root.path().join(PARENT), "").expect("blocker");
    let limits = Limits {
        memory_bytes: None,
        swap_bytes: None,
        cpu_millis: Some(250),
        pids: None,
    };
    let (cgroup, warnings) = Layout::unified(root.path()).create("blocked", &limits);
    assert!(cgroup.is_empty());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("cpu limit of 250 millicpus not enforced: creating "),
        "{warnings:?}"
    );
}

#[test]
fn join_writes_the_pid_and_oom_kills_count_from_the_baseline() {
    let root = fake_unified("memory\n");
    let layout = Layout::unified(root.path());
    let limits = Limits {
        memory_bytes: Some(1 << 30),
        swap_bytes: None,
        ..Limits::default()
    };
    let dir = root.path().join("nanoscale/reused");
    fs::create_dir_all(&dir).expect("dir");
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n",
    )
    .expect("events");
    let (mut cgroup, warnings) = layout.create("reused", &limits);
    assert!(warnings.is_empty());
    assert!(cgroup.join(4242, &limits).is_empty());
    assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    assert_eq!(cgroup.oom_kills(), 0);
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\n",
    )
    .expect("events");
    assert_eq!(cgroup.oom_kills(), 1);
    assert_eq!(
        layout.existing("reused").dir_for(Controller::Memory),
        Some(dir.as_path())
    );
    assert!(layout.existing("absent").is_empty());
}

#[test]
fn oom_counters_parse_in_both_versions() {
    assert_eq!(
        oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
        4
    );
    assert_eq!(
        oom_kill_count("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"),
        0
    );
    assert_eq!(oom_kill_count(""), 0);
}

#[test]
fn cpu_quota_is_per_100ms_with_a_1ms_floor() {
    assert_eq!(cpu_quota_micros(1000), 100_000);
    assert_eq!(cpu_quota_micros(2500), 250_000);
    assert_eq!(cpu_quota_micros(1), 1000);
}

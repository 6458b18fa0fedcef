//! What the agent's tasks share: configuration, its store, the source cache, the
//! current document, in-memory health, and the work in flight.
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nanoscale_core::agent::AgentEvent;
use nanoscale_core::desired::DesiredDocument;
use tokio::sync::Notify;

use crate::source::SourceCache;
use crate::store::AgentStore;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the control plane, e.g. `http://127.0.0.1:7070` (a cluster
    /// member's identity names its own).
    pub control_plane: String,
    pub credential: crate::protocol::Credential,
    /// The agent's own state (its SQLite file, its lock).
    pub state_dir: PathBuf,
    /// `<data>/apps`: per-service source cache, releases, instances, logs.
    pub apps_dir: PathBuf,
    pub allowed_file_roots: Vec<PathBuf>,
    /// The shim executable and the arguments before the instance directory. `run`
    /// sets them to the embedded static shim written into `<state>/bin`
    /// (`runtime::embedded`); what is configured is the fallback where it cannot be
    /// written (`nanoscale shim <dir>`: this program, with its `shim` verb).
    pub shim_program: PathBuf,
    pub shim_args: Vec<String>,
    /// Ports handed to instances as `PORT`.
    pub ports: RangeInclusive<u16>,
    pub build_timeout: Duration,
    pub build_memory_bytes: Option<u64>,
    pub stop_grace: Duration,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// The traffic layer, when this node runs one (`nanoscale up` does).
    pub proxy: Option<crate::traffic::ProxySettings>,
    /// The proxy's state directory (`<data>/proxy`).
    pub proxy_dir: PathBuf,
    /// How long a stopping instance keeps running after leaving the route table,
    /// so requests already sent to it finish before it gets SIGTERM.
    pub drain: Duration,
    /// Run every app and build as its own user in a sandbox (`sandbox.rs`). Needs
    /// root, or the privileged helper as a command; on by default when the agent
    /// is root.
    pub sandbox: bool,
    /// The privileged helper as a command (program and arguments; the operation
    /// goes to its stdin as JSON), for an agent that is not root: `sudo -n
    /// /usr/local/bin/nanoscale helper --data-dir DIR -`. Empty: in process.
    pub helper_command: Vec<String>,
    /// Processes (threads included) an app or build may have when its spec sets no
    /// limit: a fork bomb stops here.
    pub default_pids: u32,
    /// Converge NanoScale's nftables table to the document's security mode. Needs
    /// root; on by default when the agent is root.
    pub manage_firewall: bool,
    /// Hold the channel to the control plane (`crate::channel`); off, the agent
    /// uses only the long-poll and report routes (a network where an upgrade
    /// never passes: it saves a failed attempt a minute).
    pub channel: bool,
    /// TCP ports open in mode B besides the proxy's (the control plane's API and
    /// cluster listener on its own node).
    pub firewall_open_ports: Vec<u16>,
    /// How long a firewall change may go without reaching the control plane
    /// before it is reverted.
    pub firewall_confirm: Duration,
    /// Retired releases of a service whose built trees are kept (rolling back to
    /// one is instant); older trees are deleted, and a rollback to one builds it
    /// again.
    pub keep_releases: usize,
    /// Make a swap file of this many MiB before building when the host has less
    /// RAM than `swap_below_mib` and no swap (`low_memory.rs`); `None` only warns.
    pub swap_file_mib: Option<u64>,
    /// RAM in MiB under which a host without swap counts as low on memory.
    pub swap_below_mib: u64,
    /// What runs app instances: the built-in shims, or systemd units.
    pub supervisor: Supervisor,
}

/// What runs app instances (`--supervisor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Supervisor {
    /// The per-instance shim (`runtime/`): works on any Linux host.
    #[default]
    Builtin,
    /// A hardened unit per instance, started by systemd (PID 1 on the host),
    /// written and started by the privileged helper (`runtime/systemd.rs`,
    /// `runtime/unit.rs`). Needs sandboxing (root or the helper command).
    Systemd,
}

impl Supervisor {
    pub fn parse(text: &str) -> Result<Supervisor, String> {
        match text {
            "builtin" => Ok(Supervisor::Builtin),
            "systemd" => Ok(Supervisor::Systemd),
            other => Err(format!(
                "supervisor {other:?}: it is builtin (the default) or systemd"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Supervisor::Builtin => "builtin",
            Supervisor::Systemd => "systemd",
        }
    }
}

impl AgentConfig {
    /// Defaults for everything but where to reach the control plane and where to
    /// keep state.
    pub fn new(
        control_plane: String,
        credential: crate::protocol::Credential,
        data_dir: PathBuf,
    ) -> AgentConfig {
        AgentConfig {
            control_plane,
            credential,
            state_dir: data_dir.join("agent"),
            apps_dir: data_dir.join("apps"),
            allowed_file_roots: vec![data_dir.clone()],
            shim_program: PathBuf::from("/proc/self/exe"),
            shim_args: vec!["shim".into()],
            ports: 20000..=29999,
            build_timeout: Duration::from_secs(15 * 60),
            build_memory_bytes: Some(2 << 30),
            stop_grace: Duration::from_secs(10),
            log_max_bytes: 8 << 20,
            log_keep: 3,
            proxy: None,
            proxy_dir: data_dir.join("proxy"),
            drain: Duration::from_secs(2),
            sandbox: nix::unistd::geteuid().is_root(),
            helper_command: Vec::new(),
            default_pids: 1024,
            manage_firewall: nix::unistd::geteuid().is_root(),
            channel: true,
            firewall_open_ports: Vec::new(),
            firewall_confirm: Duration::from_secs(60),
            keep_releases: 3,
            swap_file_mib: None,
            swap_below_mib: 2048,
            supervisor: Supervisor::Builtin,
        }
    }
}

impl AgentConfig {
    /// Whether this configuration can run: the systemd backend needs systemd as
    /// the host's PID 1, and sandboxed apps (units run apps as their own users).
    pub fn check(&self) -> Result<(), String> {
        if self.supervisor != Supervisor::Systemd {
            return Ok(());
        }
        if !crate::runtime::unit::systemd_booted() {
            return Err("--supervisor systemd: systemd does not run this host (no \
                 /run/systemd/system); use --supervisor builtin"
                .into());
        }
        if crate::runtime::unit::systemctl().is_none()
            || nanoscale_process::which("journalctl").is_none()
        {
            return Err("--supervisor systemd: systemctl and journalctl must be installed".into());
        }
        if !self.sandbox {
            return Err(
                "--supervisor systemd runs apps as their own users: run the agent \
                 as root or give it --helper-command"
                    .into(),
            );
        }
        Ok(())
    }

    /// The pids limit of a build or instance: the spec's, else the default when
    /// apps are sandboxed (a fork bomb stops there), else none.
    pub fn pids_limit(&self, spec: Option<u32>) -> Option<u32> {
        spec.or(self.sandbox.then_some(self.default_pids))
    }

    /// What no app may see: the agent's state, every app's files, the proxy's.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let data = self.apps_dir.parent().unwrap_or(&self.apps_dir);
        [data, &self.state_dir, &self.proxy_dir]
            .into_iter()
            .map(PathBuf::from)
            .collect()
    }
}

/// In-memory health of an instance (rebuilt by checks after an agent restart).
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    pub last_error: Option<String>,
}

pub struct Context {
    pub config: AgentConfig,
    pub store: AgentStore,
    pub sources: SourceCache,
    pub document: Mutex<Option<DesiredDocument>>,
    /// Reconcile now (a new document, a finished build, a health transition).
    pub wake: Notify,
    /// Report now (something changed the control plane should see).
    pub report_now: Notify,
    /// Work in flight, so a tick never starts it twice: `build:<release>`,
    /// `stop:<instance>`, `health:<instance>`.
    pub busy: Mutex<HashSet<String>>,
    pub health: Mutex<HashMap<String, HealthState>>,
    /// Where the node stands, for the next report.
    pub status: Mutex<NodeStatus>,
    /// The route table last handed to the proxy.
    pub published: tokio::sync::Mutex<crate::traffic::Published>,
    /// CPU counters between heartbeats.
    pub usage: crate::usage::UsageSampler,
    /// Author and subject of commits already described, by SHA (a commit never changes).
    pub commits: Mutex<HashMap<String, nanoscale_core::agent::CommitInfo>>,
    /// The firewall in force and what to report of it.
    pub firewall: Mutex<crate::firewall::FirewallStatus>,
    /// When the control plane last accepted a report (UTC ms): a firewall change
    /// is kept only if this moves on after it.
    pub last_contact_ms: std::sync::atomic::AtomicI64,
    /// Set once the host's memory was checked (and the swap file made, where
    /// enabled) in this agent run.
    pub memory_checked: tokio::sync::OnceCell<()>,
}

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub convergence: nanoscale_core::agent::Convergence,
    pub problems: Vec<String>,
}

impl Context {
    pub fn new(config: AgentConfig, store: AgentStore) -> Context {
        let sources = SourceCache::new(config.apps_dir.clone(), config.allowed_file_roots.clone());
        Context {
            config,
            store,
            sources,
            document: Mutex::new(None),
            wake: Notify::new(),
            report_now: Notify::new(),
            busy: Mutex::new(HashSet::new()),
            health: Mutex::new(HashMap::new()),
            status: Mutex::new(NodeStatus {
                convergence: nanoscale_core::agent::Convergence::Unknown,
                problems: Vec::new(),
            }),
            published: tokio::sync::Mutex::new(crate::traffic::Published::default()),
            usage: crate::usage::UsageSampler::default(),
            commits: Mutex::new(HashMap::new()),
            firewall: Mutex::new(Default::default()),
            last_contact_ms: std::sync::atomic::AtomicI64::new(0),
            memory_checked: tokio::sync::OnceCell::new(),
        }
    }

    pub fn document(&self) -> Option<DesiredDocument> {
        self.document.lock().map(|d| d.clone()).unwrap_or(None)
    }

    /// Claims `key`; false when that work is already in flight.
    pub fn claim(&self, key: String) -> bool {
        self.busy
            .lock()
            .map(|mut busy| busy.insert(key))
            .unwrap_or(false)
    }

    pub fn release(&self, key: &str) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(key);
        }
    }

    pub fn is_busy(&self, key: &str) -> bool {
        self.busy
            .lock()
            .map(|busy| busy.contains(key))
            .unwrap_or(false)
    }

    pub fn last_health_error(&self, instance: &str) -> Option<String> {
        self.health
            .lock()
            .ok()
            .and_then(|health| health.get(instance).and_then(|h| h.last_error.clone()))
    }

    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.config.apps_dir.join(service)
    }

    pub fn nudge(&self) {
        self.wake.notify_one();
        self.report_now.notify_one();
    }
}

/// Attaches the service and release an event is about.
pub fn about(
    mut event: AgentEvent,
    service_id: uuid::Uuid,
    release_id: Option<uuid::Uuid>,
) -> AgentEvent {
    event.service_id = Some(service_id);
    event.release_id = release_id;
    event
}

//! The agent's side of the traffic layer: compile the route table from the
//! document and the instances observed healthy, keep `nanoscale proxy` running
//! (a detached process that outlives agent restarts), and hand it the table over
//! its control socket whenever the table or the proxy changes.
//!
//! Zero-downtime switch: a release's instances join the table when healthy; the
//! table moves to the new release when it is promoted live, and is pushed before
//! the round ends, so the next round's stop of the old instances never races it.
//! A stopping instance leaves the table at once and gets SIGTERM only after
//! [`AgentConfig::drain`](crate::context::AgentConfig) (see `supervise::stop`).
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nanoscale_core::agent::{InstanceStatus, ServiceTraffic};
use nanoscale_core::desired::{DesiredDocument, SecurityMode, INTERNAL_DOMAIN};
use nanoscale_core::route::{Backend, Route, RoutePolicy, RouteTable, Target};
use nanoscale_proxy::{ControlClient, ControlRequest};
use uuid::Uuid;

use crate::context::Context;
use crate::store::{event, InstanceRecord, ReleaseRecord, ReleaseState};

/// How the agent runs the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The `nanoscale` executable and the arguments before the options
    /// (`nanoscale proxy …`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub listen: Option<SocketAddr>,
    pub internal_listen: Option<SocketAddr>,
    pub dns_listen: Option<SocketAddr>,
    /// Prometheus `/metrics` of the proxy (per-route requests, latency, errors).
    pub metrics_listen: Option<SocketAddr>,
    pub workers: Option<usize>,
    /// Diagnostics as JSON lines (as the agent's own).
    pub log_json: bool,
    /// Where to keep this node's internal names (`/etc/hosts`), if anywhere.
    pub hosts_file: Option<PathBuf>,
}

impl ProxySettings {
    /// The external listener the node's security mode allows: in mode C (nothing
    /// inbound, a tunnel in front) only loopback, on the same port.
    pub fn external_listen(&self, mode: Option<SecurityMode>) -> Option<SocketAddr> {
        let listen = self.listen?;
        if mode == Some(SecurityMode::C) && !listen.ip().is_loopback() {
            let loopback = match listen {
                SocketAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            };
            return Some(SocketAddr::new(loopback, listen.port()));
        }
        Some(listen)
    }

    /// The origin apps use for another service: `http://<name>.svc.internal`
    /// (with the port when the internal listener is not on 80).
    pub fn internal_url(&self, service: &str) -> Option<String> {
        let listen = self.internal_listen?;
        Some(match listen.port() {
            80 => format!("http://{service}.{INTERNAL_DOMAIN}"),
            port => format!("http://{service}.{INTERNAL_DOMAIN}:{port}"),
        })
    }
}

/// The table for the current state: each service's serving release is its live
/// one, or (before any is live) the document's; its healthy instances that are
/// not being stopped are the targets.
pub fn route_table(
    document: &DesiredDocument,
    releases: &HashMap<Uuid, ReleaseRecord>,
    instances: &[InstanceRecord],
    stopping: &dyn Fn(&str) -> bool,
) -> RouteTable {
    let mut targets_of: HashMap<&str, Vec<Target>> = HashMap::new();
    let mut static_of: HashMap<&str, PathBuf> = HashMap::new();
    for workload in &document.state.workloads {
        // A built static release serves at once (it has no instances to wait for).
        let built_static = releases
            .get(&workload.release_id)
            .filter(|r| matches!(r.state, ReleaseState::Built | ReleaseState::Live))
            .and_then(|r| r.run_plan.as_deref())
            .and_then(crate::builder::static_root_of);
        if let Some(root) = built_static {
            static_of.insert(&workload.service, root);
            continue;
        }
        let live = releases
            .values()
            .find(|r| r.service == workload.service && r.state == ReleaseState::Live);
        if let Some(root) = live
            .and_then(|r| r.run_plan.as_deref())
            .and_then(crate::builder::static_root_of)
        {
            static_of.insert(&workload.service, root);
            continue;
        }
        let ready = |release: Uuid| -> Vec<Target> {
            instances
                .iter()
                .filter(|i| {
                    i.release_id == release
                        && i.status == InstanceStatus::Healthy
                        && !stopping(&i.id)
                })
                .map(|i| Target {
                    addr: SocketAddr::from(([127, 0, 0, 1], i.port)),
                    instance: i.id.clone(),
                })
                .collect()
        };
        // The live release's instances; when none is left (the planner stops the
        // old ones in the round that promotes the new release), the new one's.
        let mut targets = live.map(|release| ready(release.id)).unwrap_or_default();
        if targets.is_empty() {
            targets = ready(workload.release_id);
        }
        targets.sort();
        targets_of.insert(&workload.service, targets);
    }
    let upstreams = |service: &str| match static_of.get(service) {
        Some(root) => Backend::Static {
            service: service.to_owned(),
            root: root.clone(),
        },
        None => Backend::Upstreams {
            service: service.to_owned(),
            targets: targets_of.get(service).cloned().unwrap_or_default(),
        },
    };
    let external = document
        .state
        .routes
        .iter()
        .map(|entry| {
            let path = entry.path.clone().unwrap_or_else(|| "/".to_owned());
            Route {
                name: format!(
                    "{}:{}{}",
                    entry.service,
                    entry.host.as_deref().unwrap_or("*"),
                    path
                ),
                host: entry.host.clone(),
                path,
                strip_prefix: entry.strip_prefix,
                backend: upstreams(&entry.service),
                policy: entry.options.policy(),
            }
        })
        .collect();
    let internal = document
        .state
        .dns
        .iter()
        .map(|entry| Route {
            name: format!("{}:{}", entry.service, entry.name),
            host: Some(entry.name.clone()),
            path: "/".to_owned(),
            strip_prefix: false,
            backend: upstreams(&entry.service),
            policy: RoutePolicy::default(),
        })
        .collect();
    RouteTable {
        version: 0,
        external,
        internal,
    }
}

/// What the agent last handed the proxy.
#[derive(Debug, Default)]
pub struct Published {
    /// The table (version 0) and the version it went out with.
    pub table: Option<(RouteTable, u64)>,
}

/// Compiles the table and pushes it when it changed (or the proxy restarted).
/// Errors are logged: the supervisor loop retries within a second.
pub async fn publish(context: &Arc<Context>) {
    if context.config.proxy.is_none() {
        return;
    }
    let Some(document) = context.document() else {
        return;
    };
    let (releases, instances) = match (
        context.store.releases().await,
        context.store.instances().await,
    ) {
        (Ok(releases), Ok(instances)) => (releases, instances),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "reading state for the route table");
            return;
        }
    };
    let releases: HashMap<Uuid, ReleaseRecord> = releases.into_iter().map(|r| (r.id, r)).collect();
    let stopping = |id: &str| context.is_busy(&format!("stop:{id}"));
    let table = route_table(&document, &releases, &instances, &stopping);
    push(context, table, false).await;
}

/// Each service's counters in this node's proxy (its external and internal
/// routes together), for the heartbeat. Empty when the proxy is off or does not
/// answer within 2 s: a report never waits for the proxy.
pub async fn service_traffic(context: &Context) -> Vec<ServiceTraffic> {
    if context.config.proxy.is_none() {
        return Vec::new();
    }
    let Some(document) = context.document() else {
        return Vec::new();
    };
    let state_dir = context.config.proxy_dir.clone();
    let call = async {
        let mut client = ControlClient::connect(&state_dir).await?;
        client.call(&ControlRequest::Stats).await
    };
    let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), call).await else {
        return Vec::new();
    };
    let ids: HashMap<&str, Uuid> = document
        .state
        .workloads
        .iter()
        .map(|w| (w.service.as_str(), w.service_id))
        .collect();
    let mut by_service: BTreeMap<Uuid, ServiceTraffic> = BTreeMap::new();
    for route in answer.stats.unwrap_or_default() {
        // Route names are `<service>:<…>` (see `route_table`); service names hold no ':'.
        let Some(service_id) = route
            .route
            .split_once(':')
            .and_then(|(service, _)| ids.get(service).copied())
        else {
            continue;
        };
        let entry = by_service.entry(service_id).or_insert(ServiceTraffic {
            service_id,
            requests: 0,
            server_errors: 0,
            latency_sum_micros: 0,
        });
        entry.requests += route.requests;
        entry.server_errors += route.server_errors;
        entry.latency_sum_micros += route.latency_sum_micros;
    }
    by_service.into_values().collect()
}

async fn push(context: &Arc<Context>, mut table: RouteTable, force: bool) {
    let state_dir = context.config.proxy_dir.clone();
    let mut published = context.published.lock().await;
    let unchanged = published
        .table
        .as_ref()
        .is_some_and(|(last, _)| *last == table);
    if unchanged && !force {
        return;
    }
    let version = published
        .table
        .as_ref()
        .map_or(0, |(_, version)| *version)
        .max(crate::store::now_ms().max(0) as u64)
        + u64::from(!unchanged);
    let content = table.clone();
    table.version = version;
    let call = async {
        let mut client = ControlClient::connect(&state_dir).await?;
        client.call(&ControlRequest::Apply { table }).await
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(_)) => {
            tracing::debug!(version, "route table applied by the proxy");
            sync_hosts(context, &content).await;
            published.table = Some((content, version));
        }
        Ok(Err(error)) => tracing::warn!("handing the route table to the proxy: {error:#}"),
        Err(_) => tracing::warn!("the proxy did not take the route table within 5 s"),
    }
}

async fn sync_hosts(context: &Context, table: &RouteTable) {
    let Some(settings) = &context.config.proxy else {
        return;
    };
    let (Some(path), Some(listen)) = (&settings.hosts_file, settings.internal_listen) else {
        return;
    };
    let names: Vec<String> = table
        .internal
        .iter()
        .filter_map(|route| route.host.clone())
        .collect();
    // The host's own /etc/hosts is root's: a sandboxing node changes it through
    // the privileged helper. Another file (a test's) is written directly.
    if context.config.sandbox && path == std::path::Path::new(crate::helper::HOSTS) {
        let address = listen.ip();
        let synced = match crate::helper::Helper::for_agent(&context.config) {
            Ok(helper) => {
                helper
                    .run(&crate::helper::Operation::SyncHosts { address, names })
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = synced {
            tracing::warn!("cannot update {}: {error}", crate::helper::HOSTS);
        }
        return;
    }
    let marker = context.config.proxy_dir.display().to_string();
    if let Err(error) = sync_hosts_file(path, &marker, listen.ip(), &names) {
        tracing::warn!("cannot update {}: {error}", path.display());
    }
}

/// Keeps the proxy running: started when its lock is free, its served version
/// checked every second, and the table pushed again after a proxy restart.
pub async fn supervise_proxy(context: Arc<Context>) {
    let Some(settings) = context.config.proxy.clone() else {
        return;
    };
    let state_dir = context.config.proxy_dir.clone();
    let mut failures = 0u32;
    let mut announced = false;
    loop {
        if !proxy_running(&state_dir) {
            if announced {
                let _ = context
                    .store
                    .record_event(event(
                        "proxy.exited",
                        "warning",
                        "the proxy exited; restarting it".to_owned(),
                    ))
                    .await;
                announced = false;
            }
            if failures > 0 {
                let pause = Duration::from_millis(250 << failures.min(7));
                tokio::time::sleep(pause).await;
            }
            let mode = context.document().map(|d| d.state.security_mode);
            match start_proxy(&settings, mode, &state_dir).await {
                Ok(()) => {
                    failures = 0;
                    announced = true;
                    tracing::info!("proxy started");
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!("cannot start the proxy: {error:#}");
                    if failures == 3 {
                        let _ = context
                            .store
                            .record_event(event(
                                "proxy.failed",
                                "error",
                                format!("the proxy does not start: {error:#}"),
                            ))
                            .await;
                    }
                    continue;
                }
            }
        } else {
            announced = true;
        }
        // A proxy left running with other listeners (`up` restarted with new
        // flags) is replaced: stopped gracefully, then started by the next turn.
        let mode = context.document().map(|d| d.state.security_mode);
        if let Some(status) = status(&state_dir).await {
            let wanted = (
                settings.external_listen(mode),
                settings.internal_listen,
                settings.dns_listen,
                settings.metrics_listen,
            );
            let running = (
                status.listen,
                status.internal_listen,
                status.dns_listen,
                status.metrics_listen,
            );
            if running != wanted {
                tracing::info!("the running proxy has other listeners; restarting it");
                stop_proxy(&state_dir, status.pid).await;
                continue;
            }
        }
        // A proxy that (re)started serves the table it saved; make sure it is ours.
        let served = status_version(&state_dir).await;
        let ours = context
            .published
            .lock()
            .await
            .table
            .as_ref()
            .map(|(_, version)| *version);
        if served.is_some() && served != ours {
            let table = context
                .published
                .lock()
                .await
                .table
                .as_ref()
                .map(|(table, _)| table.clone());
            match table {
                Some(table) => push(&context, table, true).await,
                None => publish(&context).await,
            }
        } else if ours.is_none() {
            publish(&context).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A running proxy holds its lock; taking it means none runs.
fn proxy_running(state_dir: &std::path::Path) -> bool {
    let path = state_dir.join(nanoscale_proxy::server::LOCK_FILE);
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

async fn status(state_dir: &std::path::Path) -> Option<nanoscale_proxy::ControlResponse> {
    let call = async {
        let mut client = ControlClient::connect(state_dir).await?;
        client.call(&ControlRequest::Status).await
    };
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(status)) => Some(status),
        _ => None,
    }
}

async fn status_version(state_dir: &std::path::Path) -> Option<u64> {
    status(state_dir).await.map(|status| status.version)
}

/// SIGTERM (it drains), then waits up to 35 s for its lock to be released.
async fn stop_proxy(state_dir: &std::path::Path, pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for _ in 0..350 {
        if !proxy_running(state_dir) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_proxy(
    settings: &ProxySettings,
    mode: Option<SecurityMode>,
    state_dir: &std::path::Path,
) -> anyhow::Result<()> {
    crate::builder::create_private_dir(state_dir).map_err(anyhow::Error::msg)?;
    let off = || "off".to_owned();
    let show = |address: Option<SocketAddr>| address.map_or_else(off, |a| a.to_string());
    let mut args = settings.args.clone();
    args.extend([
        "--state-dir".to_owned(),
        state_dir.display().to_string(),
        "--listen".to_owned(),
        show(settings.external_listen(mode)),
        "--internal-listen".to_owned(),
        show(settings.internal_listen),
        "--dns-listen".to_owned(),
        show(settings.dns_listen),
        "--metrics-listen".to_owned(),
        show(settings.metrics_listen),
        "--access-log".to_owned(),
        state_dir.join("access.log").display().to_string(),
    ]);
    if settings.log_json {
        args.extend(["--log-format".to_owned(), "json".to_owned()]);
    }
    if let Some(workers) = settings.workers {
        args.extend(["--workers".to_owned(), workers.to_string()]);
    }
    let mut env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    if let Ok(level) = std::env::var("NANOSCALE_LOG") {
        env.push(("NANOSCALE_LOG".to_owned(), level));
    }
    let mut child = nanoscale_process::spawn_detached(&nanoscale_process::DetachedSpec {
        program: settings.program.clone(),
        args,
        env,
        cwd: state_dir.to_path_buf(),
        inherit_stderr: true,
    })?;
    // Ready when its control socket answers; an early exit is a start failure
    // (a port in use, most often), reported with its status.
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the proxy exited at start ({status}); see its messages above");
        }
        if status_version(state_dir).await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the proxy did not open its control socket within 5 s")
}

/// Keeps this node's block in a hosts file (`/etc/hosts`) naming every internal
/// service at the internal listener's address, for hosts whose resolver cannot
/// be pointed at the DNS responder. The block is marked with the proxy's state
/// directory, so several nodes on one machine (tests) never touch each other's
/// lines, and it is removed entirely when no internal name is left.
pub fn sync_hosts_file(
    path: &std::path::Path,
    marker: &str,
    address: std::net::IpAddr,
    names: &[String],
) -> std::io::Result<bool> {
    let begin = format!("# BEGIN nanoscale {marker}");
    let end = format!("# END nanoscale {marker}");
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let mut block = String::new();
    if !names.is_empty() {
        block.push_str(&begin);
        block.push('\n');
        for name in names {
            block.push_str(&format!("{address} {name}\n"));
        }
        block.push_str(&end);
        block.push('\n');
    }
    // The block stays where it was (other nodes' blocks may follow it).
    let mut next = String::with_capacity(current.len() + block.len());
    let mut inside = false;
    let mut placed = false;
    for line in current.lines() {
        if line == begin {
            inside = true;
            next.push_str(&block);
            placed = true;
        } else if line == end {
            inside = false;
        } else if !inside {
            next.push_str(line);
            next.push('\n');
        }
    }
    if !placed {
        next.push_str(&block);
    }
    if next == current {
        return Ok(false);
    }
    // In place, not rename: /etc/hosts is often a bind mount (containers), which
    // cannot be replaced. One write of the whole file keeps readers consistent
    // enough (they re-read on the next lookup).
    std::fs::write(path, next)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_c_keeps_the_external_listener_on_loopback() {
        let settings = |listen: &str| ProxySettings {
            program: PathBuf::from("/x"),
            args: vec![],
            listen: Some(listen.parse().unwrap()),
            internal_listen: None,
            dns_listen: None,
            metrics_listen: None,
            workers: None,
            log_json: false,
            hosts_file: None,
        };
        let public = settings("0.0.0.0:80");
        assert_eq!(
            public.external_listen(Some(SecurityMode::A)),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            public.external_listen(None),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            public.external_listen(Some(SecurityMode::C)),
            Some("127.0.0.1:80".parse().unwrap())
        );
        let v6 = settings("[::]:443");
        assert_eq!(
            v6.external_listen(Some(SecurityMode::C)),
            Some("[::1]:443".parse().unwrap())
        );
        let local = settings("127.0.0.1:8080");
        assert_eq!(
            local.external_listen(Some(SecurityMode::C)),
            Some("127.0.0.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn the_hosts_block_is_added_replaced_and_removed_without_touching_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let original = "127.0.0.1 localhost\n::1 localhost\n";
        std::fs::write(&path, original).unwrap();
        let address = "127.0.0.1".parse().unwrap();
        let names = vec![
            "api.svc.internal".to_owned(),
            "api.shop.svc.internal".to_owned(),
        ];
        assert!(sync_hosts_file(&path, "/data/proxy", address, &names).unwrap());
        assert!(sync_hosts_file(&path, "/other/proxy", address, &names[..1]).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(original), "{text}");
        assert!(text.contains("# BEGIN nanoscale /data/proxy\n127.0.0.1 api.svc.internal\n127.0.0.1 api.shop.svc.internal\n# END nanoscale /data/proxy\n"), "{text}");
        assert!(
            !sync_hosts_file(&path, "/data/proxy", address, &names).unwrap(),
            "unchanged"
        );
        assert!(sync_hosts_file(&path, "/data/proxy", address, &[]).unwrap());
        assert!(sync_hosts_file(&path, "/other/proxy", address, &[]).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }
}

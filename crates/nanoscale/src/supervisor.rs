//! Runs the node agent as a separate process and restarts it with backoff: `up`
//! does it for the control plane's own host, `nanoscale node run` for a joined
//! server without systemd. The agent is its own process so that it can crash or be
//! upgraded without the control plane, and apps (under their shims) outlive both.
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, LogFormat};

/// How to start a node's agent.
pub struct AgentLaunch {
    /// The control plane's URL and the node credential file, for the control
    /// plane's own host; `None` for a joined node (its identity is in the data dir).
    pub bearer: Option<(String, PathBuf)>,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub allowed_file_roots: Vec<PathBuf>,
    pub traffic: config::Traffic,
    pub supervisor: nanoscale_agent::context::Supervisor,
    /// TCP ports of this host's control plane, open in security mode B.
    pub firewall_open_ports: Vec<u16>,
}

impl AgentLaunch {
    /// The `nanoscale agent` arguments.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "agent".to_owned(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
        ];
        if let Some((url, credential_file)) = &self.bearer {
            args.extend([
                "--control-plane".to_owned(),
                url.clone(),
                "--credential-file".to_owned(),
                credential_file.display().to_string(),
            ]);
        }
        if self.log_format == LogFormat::Json {
            args.extend(["--log-format".to_owned(), "json".to_owned()]);
        }
        let show = |address: Option<std::net::SocketAddr>| {
            address.map_or_else(|| "off".to_owned(), |a| a.to_string())
        };
        args.extend([
            "--proxy-listen".to_owned(),
            show(self.traffic.proxy_listen),
            "--internal-listen".to_owned(),
            show(self.traffic.internal_listen),
            "--dns-listen".to_owned(),
            show(self.traffic.dns_listen),
            "--proxy-metrics-listen".to_owned(),
            show(self.traffic.proxy_metrics_listen),
        ]);
        args.extend([
            "--supervisor".to_owned(),
            self.supervisor.as_str().to_owned(),
        ]);
        if let Some(hosts) = &self.traffic.hosts_file {
            args.extend(["--hosts-file".to_owned(), hosts.display().to_string()]);
        }
        for root in &self.allowed_file_roots {
            args.push("--allow-file-root".to_owned());
            args.push(root.display().to_string());
        }
        for port in &self.firewall_open_ports {
            args.push("--firewall-open-port".to_owned());
            args.push(port.to_string());
        }
        args
    }
}

/// The running supervisor.
pub struct AgentSupervisor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentSupervisor {
    pub fn start(launch: AgentLaunch) -> anyhow::Result<AgentSupervisor> {
        let program = std::env::current_exe()?;
        let env: Vec<(String, String)> = [
            "NANOSCALE_LOG",
            "HOME",
            "PATH",
            "NANOSCALE_FIREWALL_CONFIRM_SECS",
            "NANOSCALE_KEEP_RELEASES",
            "NANOSCALE_SWAP_FILE_MIB",
            "NANOSCALE_SWAP_BELOW_MIB",
            "NANOSCALE_HELPER_COMMAND",
            "NANOSCALE_AGENT_NO_CHANNEL",
        ]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect();
        let spec = nanoscale_process::DetachedSpec {
            program,
            args: launch.args(),
            env,
            cwd: launch.data_dir,
            inherit_stderr: true,
        };
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let mut child = match nanoscale_process::spawn_detached(&spec) {
                    Ok(child) => child,
                    Err(error) => {
                        tracing::error!(%error, "could not start the agent");
                        failures += 1;
                        tokio::time::sleep(Duration::from_secs(1 << failures.min(5))).await;
                        continue;
                    }
                };
                let started = std::time::Instant::now();
                tokio::select! {
                    status = child.wait() => {
                        if *stopping.borrow() {
                            return;
                        }
                        let refused = status
                            .as_ref()
                            .ok()
                            .and_then(std::process::ExitStatus::code)
                            == Some(i32::from(crate::agent::REFUSED_EXIT_CODE));
                        if refused {
                            tracing::error!(
                                "the control plane refused this node (removed from the cluster, or a newer agent took over); not restarting the agent"
                            );
                            return;
                        }
                        tracing::warn!(?status, "the agent exited; restarting it");
                        failures = if started.elapsed() > Duration::from_secs(60) { 0 } else { failures + 1 };
                        let pause = Duration::from_millis(200 << failures.min(7));
                        tokio::time::sleep(pause).await;
                    }
                    _ = stopping.changed() => {
                        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGTERM,
                            );
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                        let _ = child.start_kill();
                        return;
                    }
                }
            }
        });
        Ok(AgentSupervisor { stop, task })
    }

    /// Resolves when the supervisor gave up: the control plane refused the node.
    pub async fn refused(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Stops the agent (SIGTERM); apps keep running under their shims.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

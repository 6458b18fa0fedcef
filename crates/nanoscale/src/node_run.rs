//! `nanoscale node run`: keeps a joined server's agent running where systemd does
//! not (the install script starts it detached). It only supervises: the agent is
//! its own process, and apps run under their own shims, so stopping this leaves
//! apps serving.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::{CliError, CliResult};
use crate::config::{LogFormat, Traffic};
use crate::proxy::{parse_listen, Listener};
use crate::supervisor::{AgentLaunch, AgentSupervisor};

#[derive(Debug, Args)]
pub struct NodeRunArgs {
    /// The node's data directory (where `nanoscale join` wrote its identity).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nanoscale")]
    data_dir: PathBuf,
    /// External proxy listener, or `off`.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "0.0.0.0:80", value_parser = parse_listen)]
    proxy_listen: Listener,
    /// Internal service network (`*.svc.internal`), or `off`.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.1:80", value_parser = parse_listen)]
    internal_listen: Listener,
    /// DNS responder for `*.svc.internal`, or `off`.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.153:53", value_parser = parse_listen)]
    dns_listen: Listener,
    /// The proxy's Prometheus listener, or `off`.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "off", value_parser = parse_listen)]
    proxy_metrics_listen: Listener,
    /// Keep the internal names in this hosts file (e.g. /etc/hosts).
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,
    #[command(flatten)]
    supervisor: crate::agent::SupervisorArg,
    /// text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: String,
}

pub async fn run(args: NodeRunArgs) -> CliResult {
    let log_format = LogFormat::from_flag(&args.log_format).map_err(CliError::usage)?;
    let supervisor = args.supervisor.get().map_err(CliError::usage)?;
    crate::up::init_logging(log_format);
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(|error| {
        CliError::usage(format!("--data-dir {}: {error}", args.data_dir.display()))
            .hint("join first: nanoscale join --cluster HOST:PORT --data-dir DIR")
    })?;
    let identity = nanoscale_agent::cluster::identity_dir(&data_dir);
    let membership = nanoscale_agent::cluster::Membership::load(&identity)
        .map_err(|error| CliError::usage(error).hint("join first: nanoscale join"))?;
    let mut supervisor = AgentSupervisor::start(AgentLaunch {
        bearer: None,
        data_dir: data_dir.clone(),
        log_format,
        allowed_file_roots: Vec::new(),
        traffic: Traffic {
            proxy_listen: args.proxy_listen.0,
            internal_listen: args.internal_listen.0,
            dns_listen: args.dns_listen.0,
            proxy_metrics_listen: args.proxy_metrics_listen.0,
            hosts_file: args.hosts_file,
        },
        supervisor,
        // A worker serves nothing but its proxy.
        firewall_open_ports: Vec::new(),
    })
    .map_err(|error| CliError::failure(format!("cannot start the agent: {error:#}")))?;
    println!(
        "node {} ({}) runs its agent for the cluster at {}",
        membership.node_name,
        data_dir.display(),
        membership.cluster
    );
    tokio::select! {
        _ = crate::up::shutdown_signal() => {}
        _ = supervisor.refused() => {
            return Err(CliError::failure(format!(
                "the control plane at {} refused node {}: it was removed from the cluster",
                membership.cluster, membership.node_name
            ))
            .hint("join again with a new token (nanoscale node add), after removing the data dir"));
        }
    }
    // Let the agent finish its round; apps keep running.
    let _ = tokio::time::timeout(Duration::from_secs(15), supervisor.stop()).await;
    Ok(())
}

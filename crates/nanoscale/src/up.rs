//! `nanoscale up`: start the control plane (and, as they land, the local agent and
//! the proxy) on this machine.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nanoscale_server::Server;

use crate::config::{self, FileConfig, LogFormat, Overrides};
use crate::supervisor::{AgentLaunch, AgentSupervisor};

/// Exit code for bad configuration (EX_USAGE), so scripts can tell it from a crash.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// TOML config file (keys as the long flags, with '_' for '-').
    #[arg(long, env = "NANOSCALE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where NanoScale keeps its data [default: ./.nanoscale, or /var/lib/nanoscale when installed].
    #[arg(long, env = "NANOSCALE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API and dashboard [default: 127.0.0.1:4000].
    #[arg(long, env = "NANOSCALE_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// postgres://… to use PostgreSQL [default: SQLite in the data dir]. Prefer the
    /// environment variable or the config file for URLs with a password.
    #[arg(
        long,
        env = "NANOSCALE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// The URL people reach NanoScale at (https:// turns on Secure cookies).
    #[arg(long, env = "NANOSCALE_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// text or json.
    #[arg(long, env = "NANOSCALE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Name of this machine as a node [default: its host name].
    #[arg(long, env = "NANOSCALE_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Login attempts per client address per minute [default: 10].
    #[arg(long, env = "NANOSCALE_LOGIN_ATTEMPTS_PER_MINUTE", value_name = "N")]
    login_attempts_per_minute: Option<u32>,
    /// Directory file:// repositories may live under (repeatable) [default: data dir, $HOME, /tmp].
    #[arg(long = "allow-file-root", value_name = "DIR")]
    allowed_file_roots: Vec<PathBuf>,
    /// Run only the control plane: no node agent on this host, so nothing is built
    /// or run here (config key `agent = false`).
    #[arg(long, env = "NANOSCALE_NO_AGENT")]
    no_agent: bool,
    /// External proxy listener, or `off` [default: 127.0.0.1:8080; 0.0.0.0:80 when
    /// installed under /usr].
    #[arg(long, env = "NANOSCALE_PROXY_LISTEN", value_name = "ADDR:PORT")]
    proxy_listen: Option<String>,
    /// Internal service network (`http://<service>.svc.internal`), a loopback
    /// address, or `off` [default: 127.0.0.1:80 as root, else off].
    #[arg(long, env = "NANOSCALE_INTERNAL_LISTEN", value_name = "ADDR:PORT")]
    internal_listen: Option<String>,
    /// DNS responder for `*.svc.internal`, or `off` [default: 127.0.0.153:53 as root, else off].
    #[arg(long, env = "NANOSCALE_DNS_LISTEN", value_name = "ADDR:PORT")]
    dns_listen: Option<String>,
    /// Prometheus `/metrics` of the proxy (per-route requests, latency, upstream
    /// errors), or `off` [default: off].
    #[arg(long, env = "NANOSCALE_PROXY_METRICS_LISTEN", value_name = "ADDR:PORT")]
    proxy_metrics_listen: Option<String>,
    /// Hosts file the agent keeps `<service>.svc.internal` names in, or `off`
    /// [default: /etc/hosts as root with an internal listener, else off].
    #[arg(long, env = "NANOSCALE_HOSTS_FILE", value_name = "FILE")]
    hosts_file: Option<String>,
    /// What runs app instances: `builtin` (a small supervisor per instance, any
    /// Linux host) or `systemd` (a hardened unit per instance, where systemd is
    /// PID 1) [default: builtin].
    #[arg(long, env = "NANOSCALE_SUPERVISOR", value_name = "builtin|systemd")]
    supervisor: Option<String>,
    /// The cluster listener other servers' agents dial (mTLS), or `off`
    /// [default: 0.0.0.0:7443 when installed, else off].
    #[arg(long, env = "NANOSCALE_CLUSTER_LISTEN", value_name = "ADDR:PORT")]
    cluster_listen: Option<String>,
    /// HOST:PORT agents dial for the cluster listener, when not the public URL's
    /// host with the cluster listener's port.
    #[arg(long, env = "NANOSCALE_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    cluster_advertise: Option<String>,
    /// Seconds to let in-flight requests finish on SIGTERM [default: 10].
    #[arg(long, env = "NANOSCALE_SHUTDOWN_GRACE_SECS", value_name = "SECONDS")]
    shutdown_grace_secs: Option<u64>,
}

pub async fn run(args: UpArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match config::read_file(path) {
            Ok(file) => file,
            Err(error) => return config_error(&error.to_string()),
        },
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        data_dir: args.data_dir,
        listen: args.listen,
        database_url: args.database_url,
        public_url: args.public_url,
        log_format: args.log_format,
        node_name: args.node_name,
        login_attempts_per_minute: args.login_attempts_per_minute,
        allowed_file_roots: args.allowed_file_roots,
        shutdown_grace_secs: args.shutdown_grace_secs,
        no_agent: args.no_agent,
        proxy_listen: args.proxy_listen,
        internal_listen: args.internal_listen,
        dns_listen: args.dns_listen,
        hosts_file: args.hosts_file,
        supervisor: args.supervisor,
        proxy_metrics_listen: args.proxy_metrics_listen,
        cluster_listen: args.cluster_listen,
        cluster_advertise: args.cluster_advertise,
    };
    let config = match config::resolve(overrides, file) {
        Ok(config) => config,
        Err(error) => return config_error(&error.to_string()),
    };
    init_logging(config.log_format);
    if let Err(error) = prepare_data_dir(&config.server.data_dir) {
        return config_error(&format!("invalid configuration: data_dir: {error:#}"));
    }
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(config: config::UpConfig) -> anyhow::Result<()> {
    let server = Server::start(config.server.clone()).await?;
    let address = server.local_addr()?;
    let base = if config.server.public_url == format!("http://{}", config.server.listen) {
        format!("http://{address}")
    } else {
        config.server.public_url.clone()
    };
    println!("NanoScale is running");
    println!("  API:       {base}/api/v1  (OpenAPI: {base}/api/v1/openapi.json)");
    println!("  data:      {}", config.server.data_dir.display());
    println!("  node:      {}", config.server.node_name);
    if let Some(cluster) = server.cluster_addr() {
        println!("  cluster:   {cluster} (servers join with: nanoscale node add)");
    }
    if config.agent {
        let show = |address: Option<std::net::SocketAddr>| {
            address.map_or_else(|| "off".to_owned(), |a| a.to_string())
        };
        println!(
            "  proxy:     {} (internal {}, DNS {})",
            config
                .traffic
                .proxy_listen
                .map_or_else(|| "off".to_owned(), |a| format!("http://{a}")),
            show(config.traffic.internal_listen),
            show(config.traffic.dns_listen)
        );
    }
    if server.state.store.count_users().await? == 0 {
        println!();
        println!("First start: no admin exists yet. Create one with");
        println!("  nanoscale setup {base}");
        println!("or POST {base}/api/v1/setup {{\"username\", \"password\"}}.");
    }
    if !config.agent {
        println!("  agent:     off (--no-agent): this host builds and runs nothing");
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        return server.serve(shutdown_signal(), grace).await;
    }
    let credential = server.issue_node_credential().await?;
    let agent_dir = config.server.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let credential_file = agent_dir.join("credential");
    crate::agent::write_credential(&credential_file, &credential)
        .map_err(|error| anyhow::anyhow!("writing {}: {error}", credential_file.display()))?;
    let agent = AgentSupervisor::start(AgentLaunch {
        bearer: Some((format!("http://{address}"), credential_file)),
        // The agent runs with the data dir as its working directory: give it an
        // absolute path so a relative --data-dir means the same thing there.
        data_dir: std::fs::canonicalize(&config.server.data_dir)?,
        log_format: config.log_format,
        allowed_file_roots: config.server.allowed_file_roots.clone(),
        traffic: config.traffic.clone(),
        supervisor: config.supervisor,
        firewall_open_ports: [Some(config.server.listen), config.server.cluster_listen]
            .into_iter()
            .flatten()
            .filter(|address| !address.ip().is_loopback())
            .map(|address| address.port())
            .collect(),
    })?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let result = server.serve(shutdown_signal(), grace).await;
    agent.stop().await;
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// The data dir holds the database and (later) app sources and secrets: owner only.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    }
    Ok(())
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOSCALE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

//! `nanoscale agent` (the node agent, started and supervised by `nanoscale up` or by
//! `nanoscale node run` on a joined server) and `nanoscale shim` (the per-instance
//! shim the agent starts; never run by hand).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use nanoscale_agent::context::AgentConfig;
use nanoscale_agent::protocol::Credential;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Base URL of the control plane, e.g. http://127.0.0.1:4000 (with
    /// --credential-file; a joined node's identity names its control plane).
    #[arg(long, value_name = "URL", requires = "credential_file")]
    control_plane: Option<String>,
    /// The node's data directory (agent state, apps, logs; a joined node's
    /// identity in `agent/cluster/`).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// File holding the node credential of the control plane's own host (mode
    /// 0600; never pass secrets as arguments). Without it the agent uses the
    /// cluster identity `nanoscale join` wrote into the data dir.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    credential_file: Option<PathBuf>,
    /// Directory file:// repositories may live under (repeatable).
    #[arg(long = "allow-file-root", value_name = "DIR")]
    allowed_file_roots: Vec<PathBuf>,
    /// The node's external proxy listener (`off` for none); with the two below,
    /// the agent runs `nanoscale proxy` when any of them is given.
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = crate::proxy::parse_listen)]
    proxy_listen: Option<crate::proxy::Listener>,
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = crate::proxy::parse_listen)]
    internal_listen: Option<crate::proxy::Listener>,
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = crate::proxy::parse_listen)]
    dns_listen: Option<crate::proxy::Listener>,
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = crate::proxy::parse_listen)]
    proxy_metrics_listen: Option<crate::proxy::Listener>,
    /// Keep a marked block naming the internal services in this hosts file
    /// (`/etc/hosts`), for resolvers that cannot ask the DNS responder.
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,
    /// A TCP port to keep open in security mode B besides the proxy's (repeatable;
    /// `up` passes its API and cluster listener ports).
    #[arg(long = "firewall-open-port", value_name = "PORT")]
    firewall_open_ports: Vec<u16>,
    /// Seconds a firewall change may go without reaching the control plane before
    /// the agent reverts it.
    #[arg(long, env = "NANOSCALE_FIREWALL_CONFIRM_SECS", value_name = "SECONDS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(5..=3600))]
    firewall_confirm_secs: u64,
    /// Retired releases per service whose built trees stay on disk for an
    /// instant rollback; older ones are deleted (a rollback to one rebuilds it).
    #[arg(long, env = "NANOSCALE_KEEP_RELEASES", value_name = "N", default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(0..=1000))]
    keep_releases: u32,
    /// On a host with less RAM than --swap-below-mib and no swap, make a swap file
    /// of this many MiB (`<data>/helper/swapfile`, through the privileged helper)
    /// before building. Without it the agent only warns.
    #[arg(long, env = "NANOSCALE_SWAP_FILE_MIB", value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(16..=65536))]
    swap_file_mib: Option<u64>,
    /// RAM in MiB under which a host without swap counts as low on memory.
    #[arg(long, env = "NANOSCALE_SWAP_BELOW_MIB", value_name = "MIB", default_value_t = 2048,
        value_parser = clap::value_parser!(u64).range(1..))]
    swap_below_mib: u64,
    /// Use only the long-poll and report routes, never the channel (for a
    /// network whose proxy drops `Upgrade`; the agent also finds that out by
    /// itself and retries the channel every minute).
    #[arg(long, env = "NANOSCALE_AGENT_NO_CHANNEL", value_parser = clap::builder::BoolishValueParser::new())]
    no_channel: bool,
    /// The privileged helper as a command, for an agent that is not root: an
    /// absolute program and its arguments, separated by spaces; each operation
    /// goes to its stdin as JSON. Installed: `/usr/bin/sudo -n
    /// /usr/local/bin/nanoscale helper --data-dir /var/lib/nanoscale -`. Apps are
    /// then sandboxed, and the firewall managed, as by a root agent.
    #[arg(long, env = "NANOSCALE_HELPER_COMMAND", value_name = "COMMAND")]
    helper_command: Option<String>,
    #[command(flatten)]
    supervisor: SupervisorArg,
    /// text or json (as `up`'s log format).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: String,
}

/// `--supervisor`, of the agent and of `node run`.
#[derive(Debug, Args)]
pub struct SupervisorArg {
    /// What runs app instances: `builtin` (a small supervisor per instance, any
    /// Linux host) or `systemd` (a hardened unit per instance, where systemd is
    /// PID 1; needs root or --helper-command). Builds run under the built-in
    /// supervisor either way.
    #[arg(
        long,
        env = "NANOSCALE_SUPERVISOR",
        value_name = "builtin|systemd",
        default_value = "builtin"
    )]
    supervisor: String,
}

impl SupervisorArg {
    /// The choice, or a message naming the flag.
    pub fn get(&self) -> Result<nanoscale_agent::context::Supervisor, String> {
        nanoscale_agent::context::Supervisor::parse(&self.supervisor)
            .map_err(|message| format!("--{message}"))
    }
}

/// Runs the agent until SIGTERM or Ctrl-C; apps keep running under their shims.
pub async fn run(args: AgentArgs) -> ExitCode {
    let format = match crate::config::LogFormat::from_flag(&args.log_format) {
        Ok(format) => format,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(64);
        }
    };
    crate::up::init_logging(format);
    let (control_plane, credential) = match credential(&args) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(64);
        }
    };
    let mut config = AgentConfig::new(control_plane, credential, args.data_dir.clone());
    config.allowed_file_roots.extend(args.allowed_file_roots);
    config.firewall_open_ports = args.firewall_open_ports;
    config.firewall_confirm = std::time::Duration::from_secs(args.firewall_confirm_secs);
    config.keep_releases = args.keep_releases as usize;
    config.swap_file_mib = args.swap_file_mib;
    config.swap_below_mib = args.swap_below_mib;
    config.channel = !args.no_channel;
    config.supervisor = match args.supervisor.get() {
        Ok(supervisor) => supervisor,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(64);
        }
    };
    if let Some(command) = &args.helper_command {
        let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if !words
            .first()
            .is_some_and(|program| program.starts_with('/'))
        {
            eprintln!(
                "error: --helper-command {command:?}: it must start with the helper's absolute \
                 path, e.g. /usr/bin/sudo -n /usr/local/bin/nanoscale helper --data-dir DIR -"
            );
            return ExitCode::from(64);
        }
        config.helper_command = words;
        config.sandbox = true;
        config.manage_firewall = true;
    }
    match std::env::current_exe() {
        Ok(exe) => {
            config.shim_program = exe.clone();
            if args.proxy_listen.is_some()
                || args.internal_listen.is_some()
                || args.dns_listen.is_some()
            {
                let address = |given: Option<crate::proxy::Listener>| given.and_then(|l| l.0);
                config.proxy = Some(nanoscale_agent::traffic::ProxySettings {
                    program: exe,
                    args: vec!["proxy".to_owned()],
                    listen: address(args.proxy_listen),
                    internal_listen: address(args.internal_listen),
                    dns_listen: address(args.dns_listen),
                    metrics_listen: address(args.proxy_metrics_listen),
                    workers: None,
                    log_json: format == crate::config::LogFormat::Json,
                    hosts_file: args.hosts_file.clone(),
                });
            }
        }
        Err(error) => {
            eprintln!("error: cannot find this program's own path for the shim: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(message) = config.check() {
        eprintln!("error: {message}");
        return ExitCode::from(64);
    }
    match nanoscale_agent::agent::run(config, crate::up::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_refused(&error) => {
            tracing::error!("{error:#}");
            eprintln!("error: agent: {error:#}");
            ExitCode::from(REFUSED_EXIT_CODE)
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's exit code when the control plane refuses its credential or
/// certificate (a newer `up` took over, or the node was removed): restarting it
/// cannot help, so supervisors stop.
pub const REFUSED_EXIT_CODE: u8 = 3;

fn is_refused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<nanoscale_agent::protocol::ProtocolError>(),
            Some(nanoscale_agent::protocol::ProtocolError::Unauthorized)
        )
    })
}

/// The bearer credential `up` wrote, or the cluster identity `join` wrote.
fn credential(args: &AgentArgs) -> Result<(String, Credential), String> {
    if let (Some(url), Some(file)) = (&args.control_plane, &args.credential_file) {
        return Ok((url.clone(), Credential::Bearer(read_credential(file)?)));
    }
    let dir = nanoscale_agent::cluster::identity_dir(&args.data_dir);
    let membership = nanoscale_agent::cluster::Membership::load(&dir).map_err(|error| {
        format!(
            "{error}; join first (nanoscale join), or pass --control-plane and --credential-file"
        )
    })?;
    Ok((membership.base_url(), Credential::Certificate(dir)))
}

fn read_credential(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("credential_file {}: {error}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "credential_file {} must be readable by its owner only (chmod 600)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("credential_file {}: {error}", path.display()))?;
    let credential = text.trim().to_owned();
    if !credential.starts_with(nanoscale_core::agent::NODE_CREDENTIAL_PREFIX) {
        return Err(format!(
            "credential_file {} does not hold a node credential (nsn_…)",
            path.display()
        ));
    }
    Ok(credential)
}

/// Writes the node credential for the agent, owner-only from the first byte.
pub fn write_credential(path: &Path, credential: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(credential.as_bytes())
}

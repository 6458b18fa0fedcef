//! `nanoscale up` configuration: flags > environment (`NANOSCALE_…`) > TOML file >
//! defaults. Everything is validated before a port is bound; a bad value exits with
//! code 64 and a message naming the key and the fix.
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use nanoscale_server::ServerConfig;
use serde::Deserialize;

/// The config file. Unknown keys are errors so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub log_format: Option<String>,
    pub node_name: Option<String>,
    pub login_attempts_per_minute: Option<u32>,
    pub allowed_file_roots: Option<Vec<PathBuf>>,
    pub shutdown_grace_secs: Option<u64>,
    /// Run this host's node agent (default true; false = control plane only).
    pub agent: Option<bool>,
    pub proxy_listen: Option<String>,
    pub internal_listen: Option<String>,
    pub dns_listen: Option<String>,
    pub hosts_file: Option<String>,
    pub proxy_metrics_listen: Option<String>,
    pub cluster_listen: Option<String>,
    pub cluster_advertise: Option<String>,
    /// What runs app instances: `builtin` or `systemd`.
    pub supervisor: Option<String>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `--log-format` of the hidden verbs (`agent`, `proxy`): a message naming
    /// the fix on a bad value.
    pub fn from_flag(value: &str) -> Result<LogFormat, String> {
        match value {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!("invalid --log-format {other:?}: use text or json")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpConfig {
    pub server: ServerConfig,
    pub log_format: LogFormat,
    pub shutdown_grace_secs: u64,
    /// Whether `up` runs this host's node agent.
    pub agent: bool,
    pub traffic: Traffic,
    /// What runs this host's app instances.
    pub supervisor: nanoscale_agent::context::Supervisor,
}

/// The traffic layer's listeners (`None` = off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// External proxy [default: 127.0.0.1:8080].
    pub proxy_listen: Option<SocketAddr>,
    /// Internal service network [default: 127.0.0.1:80 as root, else off].
    pub internal_listen: Option<SocketAddr>,
    /// DNS responder for `*.svc.internal` [default: 127.0.0.153:53 as root, else off].
    pub dns_listen: Option<SocketAddr>,
    /// The proxy's Prometheus `/metrics` listener [default: off].
    pub proxy_metrics_listen: Option<SocketAddr>,
    /// Hosts file the agent keeps the internal names in [default: /etc/hosts as
    /// root with an internal listener, else off].
    pub hosts_file: Option<PathBuf>,
}

/// What flags and environment gave (clap resolves flag > env); `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub log_format: Option<String>,
    pub node_name: Option<String>,
    pub login_attempts_per_minute: Option<u32>,
    pub allowed_file_roots: Vec<PathBuf>,
    pub shutdown_grace_secs: Option<u64>,
    /// `--no-agent`.
    pub no_agent: bool,
    pub proxy_listen: Option<String>,
    pub internal_listen: Option<String>,
    pub dns_listen: Option<String>,
    pub hosts_file: Option<String>,
    pub proxy_metrics_listen: Option<String>,
    pub cluster_listen: Option<String>,
    pub cluster_advertise: Option<String>,
    pub supervisor: Option<String>,
}

pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid("config", format!("cannot read {}: {error}", path.display())))?;
    toml::from_str(&text).map_err(|error| {
        invalid(
            "config",
            format!("{}: {}", path.display(), error.to_string().trim_end()),
        )
    })
}

/// Where data lives when nothing says otherwise: `/var/lib/nanoscale` for an
/// installed binary (under /usr), `./.nanoscale` in development.
pub fn default_data_dir() -> PathBuf {
    if installed() {
        PathBuf::from("/var/lib/nanoscale")
    } else {
        PathBuf::from(".nanoscale")
    }
}

/// An installed binary lives under /usr; a development build does not.
fn installed() -> bool {
    std::env::current_exe()
        .map(|exe| exe.starts_with("/usr/"))
        .unwrap_or(false)
}

pub fn resolve(overrides: Overrides, file: FileConfig) -> Result<UpConfig, ConfigError> {
    let data_dir = overrides
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(default_data_dir);
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty"));
    }
    let data_dir = absolute(&data_dir).map_err(|message| invalid("data_dir", message))?;

    let listen_text = overrides
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:4000".to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "listen",
            format!(
                "{listen_text:?} is not ADDRESS:PORT; use for example 127.0.0.1:4000 or [::1]:4000"
            ),
        )
    })?;

    let database_url =
        match overrides.database_url.or(file.database_url) {
            Some(url)
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:") =>
            {
                url
            }
            Some(_) => return Err(invalid(
                "database_url",
                "must start with postgres:// or sqlite:// (omit it to use SQLite in the data dir)",
            )),
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("nanoscale.db").display()
            ),
        };

    let given_public_url = overrides.public_url.or(file.public_url);
    let public_url_configured = given_public_url.is_some();
    let public_url = given_public_url.unwrap_or_else(|| format!("http://{listen}"));
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        return Err(invalid("public_url", "must start with http:// or https://"));
    }
    let public_url = public_url.trim_end_matches('/').to_owned();

    let log_format = match overrides.log_format.or(file.log_format).as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(invalid(
                "log_format",
                format!("{other:?} is not text or json"),
            ))
        }
    };

    let node_name = overrides
        .node_name
        .or(file.node_name)
        .unwrap_or_else(default_node_name);
    if !nanoscale_core::is_dns_label(&node_name) {
        return Err(invalid(
            "node_name",
            format!("{node_name:?} is not a DNS label (a-z, 0-9, '-', at most 63 characters)"),
        ));
    }

    let attempts = overrides
        .login_attempts_per_minute
        .or(file.login_attempts_per_minute)
        .unwrap_or(10);
    let login_attempts_per_minute = NonZeroU32::new(attempts)
        .filter(|n| n.get() <= 10_000)
        .ok_or_else(|| invalid("login_attempts_per_minute", "must be between 1 and 10000"))?;

    let shutdown_grace_secs = overrides
        .shutdown_grace_secs
        .or(file.shutdown_grace_secs)
        .unwrap_or(10);
    if shutdown_grace_secs > 3600 {
        return Err(invalid("shutdown_grace_secs", "must be at most 3600"));
    }

    let mut allowed_file_roots = if overrides.allowed_file_roots.is_empty() {
        file.allowed_file_roots
            .unwrap_or_else(|| default_file_roots(&data_dir))
    } else {
        overrides.allowed_file_roots
    };
    for root in &mut allowed_file_roots {
        if !root.is_absolute() {
            return Err(invalid(
                "allowed_file_roots",
                format!("{} is not an absolute path", root.display()),
            ));
        }
        *root = root.clone();
    }

    let root = nix::unistd::geteuid().is_root();
    let listener = |key: &str, given: Option<String>, default: Option<&str>| match given
        .as_deref()
        .or(default)
    {
        None | Some("off") => Ok(None),
        Some(text) => text.parse::<SocketAddr>().map(Some).map_err(|_| {
            invalid(
                key,
                format!("{text:?} is not ADDRESS:PORT or off; use for example 127.0.0.1:8080"),
            )
        }),
    };
    let traffic = Traffic {
        proxy_listen: listener(
            "proxy_listen",
            overrides.proxy_listen.or(file.proxy_listen),
            // Installed, the node serves the world on :80 (TLS on :443 comes with
            // ACME); in development it stays on loopback.
            Some(if installed() {
                "0.0.0.0:80"
            } else {
                "127.0.0.1:8080"
            }),
        )?,
        internal_listen: listener(
            "internal_listen",
            overrides.internal_listen.or(file.internal_listen),
            root.then_some("127.0.0.1:80"),
        )?,
        dns_listen: listener(
            "dns_listen",
            overrides.dns_listen.or(file.dns_listen),
            root.then_some("127.0.0.153:53"),
        )?,
        proxy_metrics_listen: listener(
            "proxy_metrics_listen",
            overrides.proxy_metrics_listen.or(file.proxy_metrics_listen),
            None,
        )?,
        hosts_file: None,
    };
    let hosts_file = match overrides.hosts_file.or(file.hosts_file).as_deref() {
        Some("off") => None,
        Some(path) if path.starts_with('/') => Some(PathBuf::from(path)),
        Some(other) => {
            return Err(invalid(
                "hosts_file",
                format!("{other:?} is not an absolute path or off"),
            ))
        }
        None => (root && traffic.internal_listen.is_some()).then(|| PathBuf::from("/etc/hosts")),
    };
    let traffic = Traffic {
        hosts_file,
        ..traffic
    };
    if traffic.proxy_listen.is_some() && traffic.proxy_listen == traffic.internal_listen {
        return Err(invalid(
            "internal_listen",
            "must differ from proxy_listen (the internal network routes other names)",
        ));
    }
    if let Some(internal) = traffic.internal_listen {
        if !internal.ip().is_loopback() {
            return Err(invalid(
                "internal_listen",
                "must be a loopback address: the internal service network is not reachable from outside",
            ));
        }
    }

    let cluster_listen = listener(
        "cluster_listen",
        overrides.cluster_listen.or(file.cluster_listen),
        // Installed, other servers can join; in development nothing listens
        // unless asked.
        installed().then_some("0.0.0.0:7443"),
    )?;
    let cluster_advertise = overrides.cluster_advertise.or(file.cluster_advertise);
    if let Some(advertise) = &cluster_advertise {
        let valid = advertise.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|port| port > 0)
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        });
        if !valid {
            return Err(invalid(
                "cluster_advertise",
                format!("{advertise:?} is not HOST:PORT, e.g. cp.example.com:7443"),
            ));
        }
    }

    let agent = !overrides.no_agent && file.agent.unwrap_or(true);
    let supervisor = match overrides.supervisor.or(file.supervisor) {
        None => nanoscale_agent::context::Supervisor::Builtin,
        Some(text) => nanoscale_agent::context::Supervisor::parse(&text)
            .map_err(|message| invalid("supervisor", message))?,
    };
    if agent {
        check_supervisor(
            supervisor,
            nanoscale_agent::runtime::unit::systemd_booted(),
            nix::unistd::geteuid().is_root()
                || std::env::var_os("NANOSCALE_HELPER_COMMAND").is_some(),
        )
        .map_err(|message| invalid("supervisor", message))?;
    }

    Ok(UpConfig {
        traffic,
        supervisor,
        server: ServerConfig {
            listen,
            data_dir,
            database_url,
            public_url,
            public_url_configured,
            cluster_listen,
            cluster_advertise,
            login_attempts_per_minute,
            allowed_file_roots,
            node_name,
        },
        log_format,
        shutdown_grace_secs,
        agent,
    })
}

/// Whether this host can run apps with `supervisor`: the systemd backend needs
/// systemd as PID 1, and sandboxed apps (root, or the privileged helper as a
/// command), as units run apps as their own users. The agent checks the same
/// (`AgentConfig::check`); `up` checks first, so a bad choice exits 64 instead of
/// an agent that keeps being restarted.
fn check_supervisor(
    supervisor: nanoscale_agent::context::Supervisor,
    systemd_booted: bool,
    sandboxes: bool,
) -> Result<(), &'static str> {
    if supervisor != nanoscale_agent::context::Supervisor::Systemd {
        return Ok(());
    }
    if !systemd_booted {
        return Err("systemd does not run this host (no /run/systemd/system); use builtin");
    }
    if !sandboxes {
        return Err("systemd runs apps as their own users: run as root, or set \
                    NANOSCALE_HELPER_COMMAND to the privileged helper");
    }
    Ok(())
}

/// `nanoscale up` lets git read repositories under its own data dir, the user's
/// home and /tmp.
fn default_file_roots(data_dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![data_dir.to_path_buf(), PathBuf::from("/tmp")];
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home));
    }
    roots
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .map_err(|error| format!("cannot resolve {}: {error}", path.display()))
}

/// The host name, lowercased and cut to a DNS label; `local` if it has none.
fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if nanoscale_core::is_dns_label(&cleaned) {
        cleaned
    } else {
        "local".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config =
            resolve(Overrides::default(), FileConfig::default()).expect("defaults are valid");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:4000");
        assert!(config.server.database_url.starts_with("sqlite://"));
        assert_eq!(config.server.public_url, "http://127.0.0.1:4000");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.server.login_attempts_per_minute.get(), 10);
    }

    #[test]
    fn flags_beat_file() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:5000\"\nlog_format = \"json\"").expect("toml");
        let overrides = Overrides {
            listen: Some("127.0.0.1:6000".into()),
            ..Overrides::default()
        };
        let config = resolve(overrides, file).expect("valid");
        assert_eq!(config.server.listen.port(), 6000);
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                Overrides {
                    listen: Some("localhost".into()),
                    ..Overrides::default()
                },
                "listen",
            ),
            (
                Overrides {
                    database_url: Some("mysql://x".into()),
                    ..Overrides::default()
                },
                "database_url",
            ),
            (
                Overrides {
                    log_format: Some("xml".into()),
                    ..Overrides::default()
                },
                "log_format",
            ),
            (
                Overrides {
                    node_name: Some("Bad_Name".into()),
                    ..Overrides::default()
                },
                "node_name",
            ),
            (
                Overrides {
                    login_attempts_per_minute: Some(0),
                    ..Overrides::default()
                },
                "login_attempts_per_minute",
            ),
            (
                Overrides {
                    public_url: Some("ftp://x".into()),
                    ..Overrides::default()
                },
                "public_url",
            ),
            (
                Overrides {
                    supervisor: Some("docker".into()),
                    ..Overrides::default()
                },
                "supervisor",
            ),
        ];
        for (overrides, key) in cases {
            let error = resolve(overrides, FileConfig::default()).expect_err(key);
            assert_eq!(error.key, key);
        }
    }

    #[test]
    fn the_systemd_supervisor_needs_systemd_running_the_host() {
        let overrides = || Overrides {
            supervisor: Some("systemd".into()),
            ..Overrides::default()
        };
        let resolved = resolve(overrides(), FileConfig::default());
        if nanoscale_agent::runtime::unit::systemd_booted() {
            let config = resolved.expect("systemd runs this host");
            assert_eq!(
                config.supervisor,
                nanoscale_agent::context::Supervisor::Systemd
            );
        } else {
            let error = resolved.expect_err("no systemd here");
            assert_eq!(error.key, "supervisor");
            assert!(error.message.contains("use builtin"), "{}", error.message);
        }
        // A control plane without an agent runs no apps: nothing to check.
        let without_agent = Overrides {
            no_agent: true,
            ..overrides()
        };
        assert!(resolve(without_agent, FileConfig::default()).is_ok());
    }

    #[test]
    fn the_systemd_supervisor_is_refused_where_it_cannot_run() {
        use nanoscale_agent::context::Supervisor;
        assert!(check_supervisor(Supervisor::Builtin, false, false).is_ok());
        assert!(check_supervisor(Supervisor::Systemd, true, true).is_ok());
        let no_systemd = check_supervisor(Supervisor::Systemd, false, true);
        assert!(no_systemd.is_err_and(|why| why.contains("use builtin")));
        let unsandboxed = check_supervisor(Supervisor::Systemd, true, false);
        assert!(unsandboxed.is_err_and(|why| why.contains("NANOSCALE_HELPER_COMMAND")));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let result: Result<FileConfig, _> =
            toml::from_str("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"");
        let message = result.expect_err("unknown key").to_string();
        assert!(message.contains("listen_adress"), "{message}");
    }
}

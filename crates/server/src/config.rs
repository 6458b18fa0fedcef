//! The control plane's typed configuration. The binary merges flags, environment
//! and the TOML file into this and validates it before any port is bound.
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the API and dashboard.
    pub listen: SocketAddr,
    /// Everything NanoScale keeps on this machine lives under here.
    pub data_dir: PathBuf,
    /// `sqlite://…` (default: a file in `data_dir`) or `postgres://…`.
    pub database_url: String,
    /// The URL users reach the control plane at; `https://` turns on Secure cookies.
    pub public_url: String,
    /// Whether `public_url` was configured (else it is derived from `listen`, and
    /// the install command uses the address a request came in on).
    pub public_url_configured: bool,
    /// The cluster listener (mTLS, agents of other servers dial it); `None` = off,
    /// so no server can join.
    pub cluster_listen: Option<SocketAddr>,
    /// `host:port` agents dial for the cluster listener when it differs from the
    /// public URL's host with the listener's port (NAT, a load balancer).
    pub cluster_advertise: Option<String>,
    /// Login attempts allowed per client address per minute.
    pub login_attempts_per_minute: NonZeroU32,
    /// Directories a `file://` repository may live under.
    pub allowed_file_roots: Vec<PathBuf>,
    /// Name this host registers under as a node.
    pub node_name: String,
}

impl ServerConfig {
    /// The key that seals secret env values in the store (`nanoscale-sealed`),
    /// created on first start. Control-plane replicas sharing one PostgreSQL
    /// database must share this file too.
    pub fn secret_key_file(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

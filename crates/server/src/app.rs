//! Starting and stopping the control plane.
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::state::AppState;
use crate::store::{NewEvent, NewNode, Store};

/// A control plane whose store is open and whose port is bound, not yet serving.
pub struct Server {
    pub state: AppState,
    pub router: Router,
    pub listener: TcpListener,
    pub document: utoipa::openapi::OpenApi,
    /// This host as a node of its cluster.
    pub node: nanoscale_core::api::Node,
    /// The bound cluster listener and its TLS configuration, when it is on.
    cluster: Option<(TcpListener, rustls::ServerConfig)>,
}

impl Server {
    /// Opens the store (running migrations), registers this host as a node and binds
    /// the listener. Fails before binding when the store cannot be opened.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let key_file = config.secret_key_file();
        let sealer = nanoscale_sealed::Sealer::load_or_create(&key_file)
            .context("while opening the key that seals secret env values")?;
        let store = Store::connect(&config.database_url, sealer)
            .await
            .with_context(|| {
                format!(
                    "while opening the store at {}",
                    redact_url(&config.database_url)
                )
            })?;
        let sealed = store
            .seal_plain_secrets()
            .await
            .context("while sealing secret env values stored in plain text")?;
        if sealed > 0 {
            tracing::info!(
                rows = sealed,
                "sealed secret env values stored in plain text"
            );
        }
        let metrics = crate::metrics::install();
        let state = AppState::new(store, config.clone(), metrics);
        let node = register_local_node(&state)
            .await
            .context("while registering this host as a node")?;
        let (router, document) = crate::api::router(state.clone());
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "while binding {} (is another process using it? pick another with --listen)",
                config.listen
            )
        })?;
        let cluster = match config.cluster_listen {
            Some(address) => {
                let ca = crate::cluster::ClusterCa::load_or_create(&state.store)
                    .await
                    .context("while loading the cluster CA")?;
                let tls = ca.server_config()?;
                let listener = crate::cluster::bind(address).with_context(|| {
                    format!(
                        "while binding the cluster listener {address} (pick another with --cluster-listen, or off)"
                    )
                })?;
                let local_addr = listener.local_addr()?;
                let _ = state
                    .cluster
                    .set(std::sync::Arc::new(crate::cluster::Cluster {
                        ca,
                        local_addr,
                    }));
                Some((listener, tls))
            }
            None => None,
        };
        state.mark_started();
        Ok(Server {
            state,
            router,
            listener,
            document,
            node,
            cluster,
        })
    }

    /// Makes a new credential for this host's agent; the previous one stops working
    /// (so an agent left over from an earlier start gives way to the new one).
    pub async fn issue_node_credential(&self) -> anyhow::Result<String> {
        let credential = crate::auth::new_secret(nanoscale_core::agent::NODE_CREDENTIAL_PREFIX);
        self.state
            .store
            .set_node_credential(self.node.id, &crate::auth::hash_secret(&credential))
            .await
            .context("while storing the node credential")?;
        Ok(credential)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the cluster listener is bound, when it is on.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.state.cluster.get().map(|cluster| cluster.local_addr)
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (up to `grace`), and closes the store.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let (stop_housekeeping, stopped) = tokio::sync::oneshot::channel::<()>();
        let housekeeping = tokio::spawn(housekeeping(self.state.clone(), stopped));
        let liveness = tokio::spawn(liveness(self.state.clone()));
        let cluster = self.cluster.map(|(listener, tls)| {
            let router = crate::api::cluster_router(self.state.clone());
            tokio::spawn(crate::cluster::serve_tls(listener, tls, router))
        });
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = drained_tx.send(());
        });
        let serving = tokio::spawn(async move { server.await });
        let result = tokio::select! {
            result = serving => result.context("server task")?.context("while serving"),
            _ = async {
                // After the shutdown signal, give in-flight requests (and open SSE
                // streams, which never end on their own) `grace` to finish.
                let _ = drained_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
                Ok(())
            }
        };
        if let Some(cluster) = cluster {
            cluster.abort();
        }
        liveness.abort();
        // Stop between rounds, never in the middle of one.
        let _ = stop_housekeeping.send(());
        let _ = housekeeping.await;
        self.state.store.close().await;
        result
    }
}

/// Periodic clean-up that keeps the store small.
async fn housekeeping(state: AppState, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        // Forget rate-limit buckets that refilled, so the map does not only grow.
        state.login_limiter.retain_recent();
        state.login_limiter.shrink_to_fit();
        match state.store.delete_expired_sessions().await {
            Ok(removed) if removed > 0 => tracing::debug!(removed, "expired sessions removed"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not remove expired sessions"),
        }
    }
}

/// A node whose agent sends no heartbeat for this long is marked unreachable.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(30);

/// Marks nodes that stopped sending heartbeats unreachable (each with an event);
/// their next report marks them ready again.
async fn liveness(state: AppState) {
    // Agents get a full period to reach a control plane that just started.
    tokio::time::sleep(UNREACHABLE_AFTER).await;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = crate::store::now_millis() - UNREACHABLE_AFTER.as_millis() as i64;
        match state.store.mark_unreachable(cutoff).await {
            Ok(names) => {
                for name in names {
                    tracing::warn!(node = %name, "node unreachable: no heartbeat for 30 s");
                }
            }
            Err(error) => tracing::warn!(%error, "could not check node heartbeats"),
        }
    }
}

/// The control-plane host runs workloads too, so it is always a node of its cluster.
async fn register_local_node(state: &AppState) -> anyhow::Result<nanoscale_core::api::Node> {
    let new = NewNode {
        name: state.config.node_name.clone(),
        address: state.config.listen.ip().to_string(),
        labels: BTreeMap::from([("role".to_owned(), "control-plane".to_owned())]),
        security_mode: "A".to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
        memory_bytes: total_memory_bytes().unwrap_or(0),
    };
    let (node, created) = state.store.upsert_node(new).await?;
    if created {
        state
            .store
            .record_events(vec![NewEvent {
                node_id: Some(node.id),
                ..NewEvent::info(
                    "node.registered",
                    format!(
                        "node {} registered ({} CPUs)",
                        node.name, node.capacity.cpus
                    ),
                )
            }])
            .await?;
    }
    Ok(node)
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn total_memory_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Hides the password of a database URL for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
    }
}

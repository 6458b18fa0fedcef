use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::ServerConfig;
use crate::git::GitResolver;
use crate::store::Store;

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub config: ServerConfig,
    pub login_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub metrics: PrometheusHandle,
    pub git: GitResolver,
    /// Set once start-up work (migrations, node registration) is done.
    pub started: AtomicBool,
    /// The JSON of the last project list served, reused while the store hands out
    /// the same cached list (see `store/cache.rs`).
    pub projects_body:
        std::sync::Mutex<Option<(Arc<Vec<nanoscale_core::api::Project>>, bytes::Bytes)>>,
    /// The cluster CA and listener, set at start when the cluster listener is on.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Every node's desired-state document, compiled once for all waiting agents.
    pub desired: crate::desired::DesiredCache,
    /// Log requests waiting for nodes' agents.
    pub logs: crate::log_broker::LogBroker,
    /// The last hour of each service's traffic and memory, from agents' reports.
    pub service_metrics: crate::metrics_history::MetricsHistory,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig, metrics: PrometheusHandle) -> AppState {
        let quota = Quota::per_minute(config.login_attempts_per_minute);
        let git = GitResolver::new(config.allowed_file_roots.clone());
        AppState(Arc::new(Inner {
            store,
            login_limiter: RateLimiter::keyed(quota),
            metrics,
            git,
            config,
            started: AtomicBool::new(false),
            projects_body: std::sync::Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
            desired: crate::desired::DesiredCache::default(),
            logs: crate::log_broker::LogBroker::default(),
            service_metrics: crate::metrics_history::MetricsHistory::default(),
        }))
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

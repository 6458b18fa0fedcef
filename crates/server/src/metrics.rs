//! Every metric the control plane exports, declared in one place.
use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "nanoscale_http_requests_total";
pub const HTTP_DURATION: &str = "nanoscale_http_request_duration_seconds";
pub const STORE_PING: &str = "nanoscale_store_ping_duration_seconds";
pub const PROJECTS: &str = "nanoscale_projects";
pub const SERVICES: &str = "nanoscale_services";
pub const NODES: &str = "nanoscale_nodes";
pub const AGENT_CHANNELS: &str = "nanoscale_agent_channels";
pub const LOG_FOLLOWS: &str = "nanoscale_log_follows";
pub const LOGIN_FAILURES: &str = "nanoscale_login_failures_total";

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the process-wide recorder once (the `metrics` facade is global) and
/// returns the handle that renders the Prometheus text.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Buckets make histograms (not summaries), which aggregate across replicas.
            let builder = match builder.set_buckets(&BUCKETS) {
                Ok(builder) => builder,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A second install (another server in the same test process) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration, by method and route"
    );
    describe_histogram!(
        STORE_PING,
        Unit::Seconds,
        "Round trip of a trivial store query, sampled at each scrape"
    );
    describe_gauge!(PROJECTS, "Projects that exist");
    describe_gauge!(SERVICES, "Services that exist");
    describe_gauge!(NODES, "Nodes registered in the cluster");
    describe_gauge!(
        AGENT_CHANNELS,
        "Agents connected by their channel (the others, if any, use the long-poll)"
    );
    describe_gauge!(
        LOG_FOLLOWS,
        "Other nodes' log sources that live log streams follow over their channels"
    );
    describe_counter!(LOGIN_FAILURES, "Failed or rate-limited login attempts");
}

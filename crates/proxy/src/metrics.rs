//! Per-route Prometheus metrics kept in plain atomics (no label lookup on the
//! request path) and rendered in the text exposition format on demand.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::table::Compiled;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Responses by status class: 1xx … 5xx.
    by_class: [AtomicU64; 5],
    /// Histogram counts per bucket (non-cumulative) plus the +Inf overflow.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    /// Requests in flight.
    pub active: AtomicUsize,
    /// Failures talking to an instance (connect, reset, timeout).
    pub upstream_errors: AtomicU64,
    pub bytes_sent: AtomicU64,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, elapsed: Duration, bytes: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One route's counters since the proxy started (or since the route appeared),
/// for the agent's heartbeat: the control plane turns differences into rates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStats {
    /// The route's name (`<service>:<host><path>` or `<service>:<internal name>`).
    pub route: String,
    pub requests: u64,
    pub server_errors: u64,
    pub latency_sum_micros: u64,
}

impl RouteMetrics {
    fn stats(&self, route: &str) -> RouteStats {
        RouteStats {
            route: route.to_owned(),
            requests: self
                .by_class
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .sum(),
            server_errors: self.by_class[4].load(Ordering::Relaxed),
            latency_sum_micros: self.latency_sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Every route's counters, external and internal listener alike.
pub fn stats(table: &Compiled) -> Vec<RouteStats> {
    [&table.external, &table.internal]
        .into_iter()
        .flat_map(|matcher| matcher.routes())
        .map(|route| route.metrics.stats(&route.route.name))
        .collect()
}

/// Requests no route matched, per listener.
#[derive(Debug, Default)]
pub struct Unrouted {
    pub external: AtomicU64,
    pub internal: AtomicU64,
}

/// The whole proxy's metrics in Prometheus text format.
pub fn render(table: &Compiled, unrouted: &Unrouted, connections: usize, parked: usize) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP nanoscale_proxy_requests_total Responses by route and status class.\n# TYPE nanoscale_proxy_requests_total counter"
    );
    let listeners = [("external", &table.external), ("internal", &table.internal)];
    let each = |out: &mut String, body: &dyn Fn(&mut String, &str, &RouteMetrics)| {
        for (listener, matcher) in listeners {
            for route in matcher.routes() {
                let labels = format!(
                    "listener=\"{listener}\",route=\"{}\"",
                    escape(&route.route.name)
                );
                body(out, &labels, &route.metrics);
            }
        }
    };
    each(&mut out, &|out, labels, metrics| {
        for (index, counter) in metrics.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "nanoscale_proxy_requests_total{{{labels},class=\"{}xx\"}} {}",
                index + 1,
                counter.load(Ordering::Relaxed)
            );
        }
    });
    let _ = writeln!(out, "# HELP nanoscale_proxy_request_duration_seconds Time from request to the end of the response body.\n# TYPE nanoscale_proxy_request_duration_seconds histogram");
    each(&mut out, &|out, labels, metrics| {
        let mut cumulative = 0;
        for (index, bound) in BUCKETS.iter().enumerate() {
            cumulative += metrics.buckets[index].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "nanoscale_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += metrics.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "nanoscale_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\nnanoscale_proxy_request_duration_seconds_sum{{{labels}}} {}\nnanoscale_proxy_request_duration_seconds_count{{{labels}}} {cumulative}",
            metrics.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
    });
    let _ = writeln!(out, "# HELP nanoscale_proxy_active_requests Requests in flight.\n# TYPE nanoscale_proxy_active_requests gauge");
    each(&mut out, &|out, labels, metrics| {
        let _ = writeln!(
            out,
            "nanoscale_proxy_active_requests{{{labels}}} {}",
            metrics.active.load(Ordering::Relaxed)
        );
    });
    let _ = writeln!(out, "# HELP nanoscale_proxy_upstream_errors_total Failed connections or exchanges with an instance.\n# TYPE nanoscale_proxy_upstream_errors_total counter");
    each(&mut out, &|out, labels, metrics| {
        let _ = writeln!(
            out,
            "nanoscale_proxy_upstream_errors_total{{{labels}}} {}",
            metrics.upstream_errors.load(Ordering::Relaxed)
        );
    });
    let _ = writeln!(out, "# HELP nanoscale_proxy_response_bytes_total Response body bytes sent.\n# TYPE nanoscale_proxy_response_bytes_total counter");
    each(&mut out, &|out, labels, metrics| {
        let _ = writeln!(
            out,
            "nanoscale_proxy_response_bytes_total{{{labels}}} {}",
            metrics.bytes_sent.load(Ordering::Relaxed)
        );
    });
    let _ = writeln!(
        out,
        "# HELP nanoscale_proxy_unrouted_requests_total Requests no route matched (404).\n# TYPE nanoscale_proxy_unrouted_requests_total counter\nnanoscale_proxy_unrouted_requests_total{{listener=\"external\"}} {}\nnanoscale_proxy_unrouted_requests_total{{listener=\"internal\"}} {}",
        unrouted.external.load(Ordering::Relaxed),
        unrouted.internal.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP nanoscale_proxy_open_connections Client connections open.\n# TYPE nanoscale_proxy_open_connections gauge\nnanoscale_proxy_open_connections {connections}\n# HELP nanoscale_proxy_parked_connections Idle keep-alive client connections parked outside the runtime (counted in open connections).\n# TYPE nanoscale_proxy_parked_connections gauge\nnanoscale_proxy_parked_connections {parked}\n# HELP nanoscale_proxy_route_table_version Version of the route table served.\n# TYPE nanoscale_proxy_route_table_version gauge\nnanoscale_proxy_route_table_version {}",
        table.source.version
    );
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

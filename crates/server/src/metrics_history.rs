//! Recent traffic and memory per service, built from the agents' reports and kept
//! in memory (the last hour in 10 s intervals) for the dashboard's chart.
//!
//! Agents report cumulative counters from their proxy; the difference between two
//! reports of one node is that node's traffic in between. A counter that went down
//! (the proxy restarted, the route was re-created) counts from zero. A node may only
//! speak for services it reports instances of, so a node cannot paint another
//! service's chart.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use nanoscale_core::agent::{InstanceReport, ServiceTraffic};
use nanoscale_core::api::{MetricsPoint, ServiceMetrics};
use uuid::Uuid;

pub const INTERVAL_SECS: i64 = 10;
/// One hour of intervals per service.
const KEPT: usize = 360;

#[derive(Default)]
pub struct MetricsHistory {
    services: Mutex<HashMap<Uuid, Series>>,
}

#[derive(Default)]
struct Series {
    /// The last counters each node reported.
    last: HashMap<Uuid, Counters>,
    intervals: VecDeque<Interval>,
}

#[derive(Clone, Copy, Default)]
struct Counters {
    requests: u64,
    server_errors: u64,
    latency_sum_micros: u64,
}

struct Interval {
    /// Seconds since the epoch, a multiple of [`INTERVAL_SECS`].
    start: i64,
    traffic: Counters,
    /// Each node's newest memory figure in this interval.
    memory: BTreeMap<Uuid, u64>,
}

impl MetricsHistory {
    /// Takes one node's report.
    pub fn record(
        &self,
        node: Uuid,
        now: DateTime<Utc>,
        traffic: &[ServiceTraffic],
        instances: &[InstanceReport],
    ) {
        let mut memory: BTreeMap<Uuid, Option<u64>> = BTreeMap::new();
        for instance in instances {
            let entry = memory.entry(instance.service_id).or_insert(None);
            if let Some(bytes) = instance.memory_bytes {
                *entry = Some(entry.unwrap_or(0) + bytes);
            }
        }
        let start = now.timestamp().div_euclid(INTERVAL_SECS) * INTERVAL_SECS;
        let Ok(mut services) = self.services.lock() else {
            return;
        };
        for sample in traffic {
            if !memory.contains_key(&sample.service_id) {
                continue;
            }
            let series = services.entry(sample.service_id).or_default();
            let now_counters = Counters {
                requests: sample.requests,
                server_errors: sample.server_errors,
                latency_sum_micros: sample.latency_sum_micros,
            };
            let delta = match series.last.insert(node, now_counters) {
                // The first report says nothing about when its counts happened.
                None => Counters::default(),
                Some(before) => difference(before, now_counters),
            };
            let interval = series.interval(start);
            interval.traffic.requests += delta.requests;
            interval.traffic.server_errors += delta.server_errors;
            interval.traffic.latency_sum_micros += delta.latency_sum_micros;
        }
        for (service, bytes) in memory {
            let Some(bytes) = bytes else { continue };
            services
                .entry(service)
                .or_default()
                .interval(start)
                .memory
                .insert(node, bytes);
        }
    }

    pub fn points(&self, service: Uuid) -> ServiceMetrics {
        let points = self
            .services
            .lock()
            .ok()
            .and_then(|services| {
                services.get(&service).map(|series| {
                    series
                        .intervals
                        .iter()
                        .map(Interval::point)
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default();
        ServiceMetrics {
            interval_secs: INTERVAL_SECS as u32,
            points,
        }
    }
}

impl Series {
    fn interval(&mut self, start: i64) -> &mut Interval {
        let newest = self.intervals.back().map(|i| i.start);
        if newest.is_none_or(|newest| newest < start) {
            self.intervals.push_back(Interval {
                start,
                traffic: Counters::default(),
                memory: BTreeMap::new(),
            });
            while self.intervals.len() > KEPT {
                self.intervals.pop_front();
            }
        }
        // A report from a slower clock lands in the interval it names, if still kept.
        let index = self
            .intervals
            .iter()
            .rposition(|i| i.start <= start)
            .unwrap_or(0);
        &mut self.intervals[index]
    }
}

impl Interval {
    fn point(&self) -> MetricsPoint {
        let requests = self.traffic.requests;
        MetricsPoint {
            at: Utc
                .timestamp_opt(self.start, 0)
                .single()
                .unwrap_or_default(),
            requests,
            requests_per_second: requests as f64 / INTERVAL_SECS as f64,
            server_errors: self.traffic.server_errors,
            mean_latency_ms: (requests > 0)
                .then(|| self.traffic.latency_sum_micros as f64 / requests as f64 / 1000.0),
            memory_bytes: (!self.memory.is_empty()).then(|| self.memory.values().sum()),
        }
    }
}

fn difference(before: Counters, now: Counters) -> Counters {
    // Counters only grow; a smaller one started again from zero.
    if now.requests < before.requests {
        return now;
    }
    Counters {
        requests: now.requests - before.requests,
        server_errors: now.server_errors.saturating_sub(before.server_errors),
        latency_sum_micros: now
            .latency_sum_micros
            .saturating_sub(before.latency_sum_micros),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoscale_core::agent::InstanceStatus;

    fn instance(service: Uuid, memory: Option<u64>) -> InstanceReport {
        InstanceReport {
            id: "web-r1-0-abcd".into(),
            service_id: service,
            release_id: Uuid::nil(),
            replica: 0,
            port: 20000,
            pid: Some(1),
            status: InstanceStatus::Healthy,
            restarts: 0,
            started_at: Utc::now(),
            memory_bytes: memory,
        }
    }

    fn traffic(service: Uuid, requests: u64, latency_sum_micros: u64) -> ServiceTraffic {
        ServiceTraffic {
            service_id: service,
            requests,
            server_errors: requests / 10,
            latency_sum_micros,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn rates_come_from_differences_summed_over_nodes() {
        let history = MetricsHistory::default();
        let (service, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, Some(1000))];
        history.record(a, at(0), &[traffic(service, 100, 1_000_000)], &running);
        history.record(b, at(1), &[traffic(service, 50, 0)], &running);
        history.record(a, at(10), &[traffic(service, 120, 1_040_000)], &running);
        history.record(b, at(11), &[traffic(service, 70, 40_000)], &running);
        let points = history.points(service).points;
        assert_eq!(points.len(), 2);
        // The first reports only set the baseline.
        assert_eq!(points[0].requests, 0);
        assert_eq!(points[0].mean_latency_ms, None);
        assert_eq!(points[0].memory_bytes, Some(2000));
        assert_eq!(points[1].requests, 40);
        assert_eq!(points[1].requests_per_second, 4.0);
        assert_eq!(points[1].server_errors, 4);
        assert_eq!(points[1].mean_latency_ms, Some(2.0));
        assert_eq!(points[1].at, at(10));
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let history = MetricsHistory::default();
        let (service, node) = (Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, None)];
        history.record(node, at(0), &[traffic(service, 500, 0)], &running);
        history.record(node, at(10), &[traffic(service, 30, 0)], &running);
        let points = history.points(service).points;
        assert_eq!(points[1].requests, 30);
        assert_eq!(points[1].memory_bytes, None);
    }

    #[test]
    fn a_node_speaks_only_for_services_it_runs() {
        let history = MetricsHistory::default();
        let (mine, other, node) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(mine, Some(1))];
        for second in [0, 10] {
            history.record(
                node,
                at(second),
                &[traffic(other, second as u64 * 100, 0)],
                &running,
            );
        }
        assert!(history.points(other).points.is_empty());
        assert_eq!(history.points(mine).points.len(), 2);
    }

    #[test]
    fn an_hour_is_kept() {
        let history = MetricsHistory::default();
        let (service, node) = (Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, Some(1))];
        for i in 0..400 {
            history.record(node, at(i * 10), &[], &running);
        }
        let points = history.points(service).points;
        assert_eq!(points.len(), KEPT);
        assert_eq!(points[0].at, at(40 * 10));
    }
}

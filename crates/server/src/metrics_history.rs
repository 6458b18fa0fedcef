//! Recent traffic and memory per service, built from the agents' reports and kept
//! in memory (the last hour in 10 s intervals) for the dashboard's chart.
//!
//! Agents report cumulative counters from their proxy; the difference between two
//! reports of one node is that node's traffic in between. When the counters went
//! down (the proxy restarted, a route was removed) or the previous report is more
//! than two intervals old, the report only sets a new baseline: counts of unknown
//! duration would draw a spike. A node speaks only for the services of its own
//! desired-state document (the caller passes them), so it cannot paint another
//! service's chart. The interval still filling is not shown.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    last: HashMap<Uuid, Baseline>,
    intervals: VecDeque<Interval>,
}

#[derive(Clone, Copy, Default)]
struct Counters {
    requests: u64,
    server_errors: u64,
    latency_sum_micros: u64,
}

#[derive(Clone, Copy)]
struct Baseline {
    counters: Counters,
    /// Seconds since the epoch of the report that set it.
    at: i64,
}

struct Interval {
    /// Seconds since the epoch, a multiple of [`INTERVAL_SECS`].
    start: i64,
    traffic: Counters,
    /// Each node's newest memory figure in this interval.
    memory: BTreeMap<Uuid, u64>,
}

impl MetricsHistory {
    /// Takes one node's report; `placed` are the services of its document.
    pub fn record(
        &self,
        node: Uuid,
        now: DateTime<Utc>,
        traffic: &[ServiceTraffic],
        instances: &[InstanceReport],
        placed: &HashSet<Uuid>,
    ) {
        let mut memory: BTreeMap<Uuid, Option<u64>> = BTreeMap::new();
        for instance in instances.iter().filter(|i| placed.contains(&i.service_id)) {
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
            if !placed.contains(&sample.service_id) {
                continue;
            }
            let series = services.entry(sample.service_id).or_default();
            let now_counters = Counters {
                requests: sample.requests,
                server_errors: sample.server_errors,
                latency_sum_micros: sample.latency_sum_micros,
            };
            let baseline = Baseline {
                counters: now_counters,
                at: now.timestamp(),
            };
            let delta = match series.last.insert(node, baseline) {
                Some(before) if now.timestamp() - before.at <= 2 * INTERVAL_SECS => {
                    difference(before.counters, now_counters)
                }
                // A first report, or one after a gap: it says nothing about when
                // its counts happened.
                _ => Counters::default(),
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

    /// The service's finished intervals at `now`.
    pub fn points(&self, service: Uuid, now: DateTime<Utc>) -> ServiceMetrics {
        let open = now.timestamp().div_euclid(INTERVAL_SECS) * INTERVAL_SECS;
        let points = self
            .services
            .lock()
            .ok()
            .and_then(|services| {
                services.get(&service).map(|series| {
                    series
                        .intervals
                        .iter()
                        .filter(|interval| interval.start < open)
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
    // Counters only grow; a smaller one was reset or lost a route: a new baseline.
    if now.requests < before.requests {
        return Counters::default();
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

    fn placed(services: &[Uuid]) -> HashSet<Uuid> {
        services.iter().copied().collect()
    }

    #[test]
    fn rates_come_from_differences_summed_over_nodes() {
        let history = MetricsHistory::default();
        let (service, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, Some(1000))];
        let mine = placed(&[service]);
        history.record(
            a,
            at(0),
            &[traffic(service, 100, 1_000_000)],
            &running,
            &mine,
        );
        history.record(b, at(1), &[traffic(service, 50, 0)], &running, &mine);
        history.record(
            a,
            at(10),
            &[traffic(service, 120, 1_040_000)],
            &running,
            &mine,
        );
        history.record(b, at(11), &[traffic(service, 70, 40_000)], &running, &mine);
        // The interval still filling is not shown.
        assert_eq!(history.points(service, at(15)).points.len(), 1);
        let points = history.points(service, at(20)).points;
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
    fn a_reset_or_a_gap_only_sets_a_new_baseline() {
        let history = MetricsHistory::default();
        let (service, node) = (Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, None)];
        let mine = placed(&[service]);
        history.record(node, at(0), &[traffic(service, 500, 0)], &running, &mine);
        // The proxy restarted: 30 since then, of unknown duration.
        history.record(node, at(10), &[traffic(service, 30, 0)], &running, &mine);
        history.record(node, at(20), &[traffic(service, 50, 0)], &running, &mine);
        // Silent for a minute: the next report only sets the baseline.
        history.record(node, at(80), &[traffic(service, 9_000, 0)], &running, &mine);
        history.record(node, at(90), &[traffic(service, 9_010, 0)], &running, &mine);
        let requests: Vec<u64> = history
            .points(service, at(100))
            .points
            .iter()
            .map(|p| p.requests)
            .collect();
        assert_eq!(requests, vec![0, 0, 20, 0, 10]);
        assert_eq!(
            history.points(service, at(100)).points[0].memory_bytes,
            None
        );
    }

    #[test]
    fn a_node_speaks_only_for_services_it_was_given() {
        let history = MetricsHistory::default();
        let (mine, other, node) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        // It even claims an instance of the other service.
        let running = [instance(mine, Some(1)), instance(other, Some(5))];
        for second in [0, 10] {
            history.record(
                node,
                at(second),
                &[traffic(other, second as u64 * 100, 0)],
                &running,
                &placed(&[mine]),
            );
        }
        assert!(history.points(other, at(30)).points.is_empty());
        assert_eq!(history.points(mine, at(30)).points.len(), 2);
    }

    #[test]
    fn a_static_site_has_traffic_without_instances() {
        let history = MetricsHistory::default();
        let (site, node) = (Uuid::now_v7(), Uuid::now_v7());
        history.record(node, at(0), &[traffic(site, 10, 0)], &[], &placed(&[site]));
        history.record(node, at(10), &[traffic(site, 30, 0)], &[], &placed(&[site]));
        let points = history.points(site, at(20)).points;
        assert_eq!(points[1].requests, 20);
        assert_eq!(points[1].memory_bytes, None);
    }

    #[test]
    fn an_hour_is_kept() {
        let history = MetricsHistory::default();
        let (service, node) = (Uuid::now_v7(), Uuid::now_v7());
        let running = [instance(service, Some(1))];
        for i in 0..400 {
            history.record(node, at(i * 10), &[], &running, &placed(&[service]));
        }
        let points = history.points(service, at(4000)).points;
        assert_eq!(points.len(), KEPT);
        assert_eq!(points[0].at, at(40 * 10));
    }
}

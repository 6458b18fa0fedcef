//! The compiled route table: lookup structures built once per swap, plus the
//! per-instance state (active requests, passive-health ejection) and per-route
//! metrics that must survive swaps, carried over from the previous table.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoscale_core::route::{host_matches, Backend, Balance, Route, RouteTable};

use crate::metrics::RouteMetrics;

/// How long a target that refused or timed out a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// One instance's live state, shared by every route that targets it.
#[derive(Debug)]
pub struct TargetState {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once.
    pub authority: http::uri::Authority,
    pub instance: String,
    /// Requests in flight (least-connections and the metrics).
    pub active: AtomicUsize,
    /// Consecutive connect failures.
    pub failures: AtomicU32,
    /// Milliseconds after the proxy's epoch until which the target is skipped.
    ejected_until: AtomicU64,
}

impl TargetState {
    fn new(addr: SocketAddr, instance: String) -> TargetState {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"));
        TargetState {
            addr,
            authority,
            instance,
            active: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// A connect failure: skip the target for [`EJECT_FOR`].
    pub fn failed(&self, now_ms: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.ejected_until
            .store(now_ms + EJECT_FOR.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}

/// A route ready to serve.
#[derive(Debug)]
pub struct CompiledRoute {
    pub route: Route,
    pub targets: Vec<Arc<TargetState>>,
    pub metrics: Arc<RouteMetrics>,
    next: AtomicUsize,
}

impl CompiledRoute {
    /// Picks a target not in `tried`, preferring ones not ejected; when every
    /// untried target is ejected one of them is used anyway (better a likely
    /// failure than a certain 503).
    pub fn pick(&self, tried: &[usize], now_ms: u64) -> Option<usize> {
        let count = self.targets.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| !tried.contains(index));
        let mut fallback = None;
        let mut best: Option<(usize, usize)> = None;
        for index in candidates {
            let target = &self.targets[index];
            if target.is_ejected(now_ms) {
                fallback.get_or_insert(index);
                continue;
            }
            match self.route.policy.balance {
                Balance::RoundRobin => return Some(index),
                Balance::LeastConnections => {
                    let active = target.active.load(Ordering::Relaxed);
                    if best.is_none_or(|(_, least)| active < least) {
                        best = Some((index, active));
                    }
                }
            }
        }
        best.map(|(index, _)| index).or(fallback)
    }
}

/// Routes of one listener, indexed for lookup.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Exact host → routes, longest prefix first.
    exact: HashMap<String, Vec<Arc<CompiledRoute>>>,
    /// `*.suffix` hosts, each with its routes, longest pattern first.
    wildcard: Vec<(String, Vec<Arc<CompiledRoute>>)>,
    /// Routes without a host, longest prefix first.
    any_host: Vec<Arc<CompiledRoute>>,
}

impl Matcher {
    /// The route for `host` (lowercase, no port) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<CompiledRoute>> {
        fn by_prefix<'a>(
            routes: &'a [Arc<CompiledRoute>],
            path: &str,
        ) -> Option<&'a Arc<CompiledRoute>> {
            routes.iter().find(|r| r.route.matches_path(path))
        }
        if let Some(found) = self
            .exact
            .get(host)
            .and_then(|routes| by_prefix(routes, path))
        {
            return Some(found);
        }
        for (pattern, routes) in &self.wildcard {
            if host_matches(pattern, host) {
                if let Some(found) = by_prefix(routes, path) {
                    return Some(found);
                }
            }
        }
        by_prefix(&self.any_host, path)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<CompiledRoute>> {
        self.exact
            .values()
            .flatten()
            .chain(self.wildcard.iter().flat_map(|(_, routes)| routes))
            .chain(self.any_host.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any_host.is_empty()
    }
}

/// The whole table as served.
#[derive(Debug, Default)]
pub struct Compiled {
    pub source: RouteTable,
    pub external: Matcher,
    pub internal: Matcher,
}

/// What a table is refused for.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TableError {
    pub field: String,
    pub message: String,
}

fn invalid(field: String, message: &str) -> TableError {
    TableError {
        field,
        message: message.to_owned(),
    }
}

/// Checks what the proxy relies on: lowercase hosts, paths starting with `/`,
/// unique names, sane limits.
pub fn validate(table: &RouteTable) -> Result<(), TableError> {
    for (list, routes) in [("external", &table.external), ("internal", &table.internal)] {
        let mut names = std::collections::HashSet::new();
        for (index, route) in routes.iter().enumerate() {
            let field = |name: &str| format!("{list}[{index}].{name}");
            if route.name.is_empty() || route.name.len() > 300 {
                return Err(invalid(field("name"), "must be 1 to 300 bytes"));
            }
            if !names.insert((&route.host, &route.path)) {
                return Err(invalid(field("path"), "duplicate host and path"));
            }
            if let Some(host) = &route.host {
                if nanoscale_core::service::validate_host("host", host).is_err() {
                    return Err(invalid(field("host"), "must be a lowercase host name"));
                }
            }
            if nanoscale_core::service::validate_path("path", &route.path).is_err() {
                return Err(invalid(
                    field("path"),
                    "must be a clean path starting with /",
                ));
            }
            if let Backend::Static { root, .. } = &route.backend {
                if !root.is_absolute() {
                    return Err(invalid(field("backend.static.root"), "must be absolute"));
                }
            }
            if route.policy.connect_timeout_ms == 0 || route.policy.response_timeout_ms == 0 {
                return Err(invalid(field("policy"), "timeouts must be above zero"));
            }
            if route.policy.retries > 10 {
                return Err(invalid(field("policy.retries"), "at most 10"));
            }
        }
    }
    Ok(())
}

/// Compiles `table`, reusing target state and route metrics from `previous`
/// (matched by address and by route name) so counters and ejections survive.
pub fn compile(table: RouteTable, previous: &Compiled) -> Compiled {
    let mut targets: HashMap<(SocketAddr, String), Arc<TargetState>> = previous
        .external
        .routes()
        .chain(previous.internal.routes())
        .flat_map(|route| route.targets.iter())
        .map(|target| ((target.addr, target.instance.clone()), target.clone()))
        .collect();
    let mut metrics: HashMap<String, Arc<RouteMetrics>> = previous
        .external
        .routes()
        .chain(previous.internal.routes())
        .map(|route| (route.route.name.clone(), route.metrics.clone()))
        .collect();
    let mut build = |routes: &[Route]| {
        let mut matcher = Matcher::default();
        let mut wildcard: BTreeMap<String, Vec<Arc<CompiledRoute>>> = BTreeMap::new();
        for route in routes {
            let route_targets = match &route.backend {
                Backend::Upstreams { targets: list, .. } => list
                    .iter()
                    .map(|target| {
                        targets
                            .entry((target.addr, target.instance.clone()))
                            .or_insert_with(|| {
                                Arc::new(TargetState::new(target.addr, target.instance.clone()))
                            })
                            .clone()
                    })
                    .collect(),
                Backend::Static { .. } => Vec::new(),
            };
            let route_metrics = metrics
                .entry(route.name.clone())
                .or_insert_with(|| Arc::new(RouteMetrics::default()))
                .clone();
            let compiled = Arc::new(CompiledRoute {
                route: route.clone(),
                targets: route_targets,
                metrics: route_metrics,
                next: AtomicUsize::new(0),
            });
            match &route.host {
                None => matcher.any_host.push(compiled),
                Some(host) if host.starts_with("*.") => {
                    wildcard.entry(host.clone()).or_default().push(compiled)
                }
                Some(host) => matcher
                    .exact
                    .entry(host.clone())
                    .or_default()
                    .push(compiled),
            }
        }
        let longest_first = |routes: &mut Vec<Arc<CompiledRoute>>| {
            routes.sort_by_key(|r| std::cmp::Reverse(r.route.path.trim_end_matches('/').len()))
        };
        matcher.exact.values_mut().for_each(longest_first);
        longest_first(&mut matcher.any_host);
        matcher.wildcard = wildcard.into_iter().collect();
        matcher
            .wildcard
            .sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.len()));
        matcher
            .wildcard
            .iter_mut()
            .for_each(|(_, routes)| longest_first(routes));
        matcher
    };
    let external = build(&table.external);
    let internal = build(&table.internal);
    Compiled {
        source: table,
        external,
        internal,
    }
}

/// Milliseconds since the process started (cheap monotonic clock for ejection).
pub fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoscale_core::route::{RoutePolicy, Target};

    fn route(name: &str, host: Option<&str>, path: &str, ports: &[u16]) -> Route {
        Route {
            name: name.into(),
            host: host.map(str::to_owned),
            path: path.into(),
            strip_prefix: false,
            backend: Backend::Upstreams {
                service: name.into(),
                targets: ports
                    .iter()
                    .map(|port| Target {
                        addr: SocketAddr::from(([127, 0, 0, 1], *port)),
                        instance: format!("i{port}"),
                    })
                    .collect(),
            },
            policy: RoutePolicy::default(),
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable {
            version: 1,
            external: routes,
            internal: vec![],
        }
    }

    #[test]
    fn exact_host_then_wildcard_then_any_host_longest_prefix_first() {
        let compiled = compile(
            table(vec![
                route("default", None, "/", &[1]),
                route("any-api", None, "/api", &[2]),
                route("app", Some("app.example.com"), "/", &[3]),
                route("app-admin", Some("app.example.com"), "/admin", &[4]),
                route("wild", Some("*.example.com"), "/", &[5]),
            ]),
            &Compiled::default(),
        );
        let name = |host: &str, path: &str| {
            compiled
                .external
                .lookup(host, path)
                .map(|r| r.route.name.clone())
        };
        assert_eq!(
            name("app.example.com", "/admin/x").as_deref(),
            Some("app-admin")
        );
        assert_eq!(name("app.example.com", "/adminx").as_deref(), Some("app"));
        assert_eq!(name("other.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(name("elsewhere.org", "/api/v1").as_deref(), Some("any-api"));
        assert_eq!(name("elsewhere.org", "/").as_deref(), Some("default"));
    }

    #[test]
    fn hosts_without_matching_prefix_fall_back_to_any_host_routes() {
        let compiled = compile(
            table(vec![
                route("app-api", Some("app.example.com"), "/api", &[1]),
                route("any", None, "/", &[2]),
            ]),
            &Compiled::default(),
        );
        let found = compiled.external.lookup("app.example.com", "/home");
        assert_eq!(found.map(|r| r.route.name.as_str()), Some("any"));
        let empty = compile(table(vec![]), &Compiled::default());
        assert!(empty.external.lookup("x", "/").is_none());
    }

    #[test]
    fn round_robin_skips_ejected_targets_and_falls_back_when_all_are() {
        let compiled = compile(
            table(vec![route("a", None, "/", &[1, 2, 3])]),
            &Compiled::default(),
        );
        let route = compiled.external.lookup("h", "/").unwrap();
        let now = now_ms();
        let picks: Vec<usize> = (0..6).map(|_| route.pick(&[], now).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        route.targets[1].failed(now);
        let picks: Vec<usize> = (0..6).map(|_| route.pick(&[], now).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        route.targets[0].failed(now);
        route.targets[2].failed(now);
        assert!(route.pick(&[], now).is_some(), "all ejected still answers");
        assert_eq!(route.pick(&[0, 1, 2], now), None);
        route.targets[1].succeeded();
        assert_eq!(route.pick(&[], now), Some(1));
    }

    #[test]
    fn least_connections_prefers_the_idlest_target() {
        let mut r = route("a", None, "/", &[1, 2, 3]);
        r.policy.balance = Balance::LeastConnections;
        let compiled = compile(table(vec![r]), &Compiled::default());
        let route = compiled.external.lookup("h", "/").unwrap();
        route.targets[0].active.store(5, Ordering::Relaxed);
        route.targets[1].active.store(1, Ordering::Relaxed);
        route.targets[2].active.store(3, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(route.pick(&[], now_ms()), Some(1));
        }
        assert_eq!(route.pick(&[1], now_ms()), Some(2));
    }

    #[test]
    fn target_state_and_metrics_survive_a_swap() {
        let first = compile(
            table(vec![route("a", None, "/", &[1, 2])]),
            &Compiled::default(),
        );
        let target = first.external.lookup("h", "/").unwrap().targets[0].clone();
        target.active.store(7, Ordering::Relaxed);
        let second = compile(table(vec![route("a", None, "/", &[1, 3])]), &first);
        let route = second.external.lookup("h", "/").unwrap();
        assert!(Arc::ptr_eq(&route.targets[0], &target));
        assert_eq!(route.targets[1].active.load(Ordering::Relaxed), 0);
        assert!(Arc::ptr_eq(
            &route.metrics,
            &first.external.lookup("h", "/").unwrap().metrics
        ));
    }

    #[test]
    fn validation_names_the_field() {
        let mut bad = route("a", Some("Bad Host"), "/", &[1]);
        let error = validate(&table(vec![bad.clone()])).unwrap_err();
        assert_eq!(error.field, "external[0].host");
        bad.host = None;
        bad.path = "nope".into();
        assert_eq!(
            validate(&table(vec![bad])).unwrap_err().field,
            "external[0].path"
        );
        let twice = vec![route("a", None, "/", &[1]), route("b", None, "/", &[2])];
        assert_eq!(
            validate(&table(twice)).unwrap_err().field,
            "external[1].path"
        );
    }
}

//! The proxy's route table and matcher: any table the agent could send (as JSON
//! over the control socket), then lookups of any host and path. Validation and
//! lookup must never panic, and a match must be one the route really matches:
//! its host (exact or wildcard) and a path prefix on a segment boundary, and no
//! longer prefix of the same host class left unmatched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanoscale_core::route::{host_matches, prefix_matches, RouteTable};
use nanoscale_proxy::table::{compile, validate, Compiled};

fuzz_target!(|data: &[u8]| {
    // The first line is the request (`host path`), the rest the table.
    let Some(split) = data.iter().position(|byte| *byte == b'\n') else {
        return;
    };
    let (request, table) = data.split_at(split);
    let Ok(request) = std::str::from_utf8(request) else {
        return;
    };
    let (host, path) = request.split_once(' ').unwrap_or((request, "/"));
    let Ok(table) = serde_json::from_slice::<RouteTable>(&table[1..]) else {
        return;
    };
    if validate(&table).is_err() {
        return;
    }
    let compiled = compile(table, &Compiled::default());
    for matcher in [&compiled.external, &compiled.internal] {
        let Some(found) = matcher.lookup(host, path) else {
            continue;
        };
        let route = &found.route;
        assert!(
            prefix_matches(&route.path, path),
            "{} does not prefix {path}",
            route.path
        );
        if let Some(pattern) = &route.host {
            assert!(
                pattern == host || host_matches(pattern, host),
                "{pattern} vs {host}"
            );
        }
        // Longest prefix wins among routes for the very same host.
        for other in matcher.routes() {
            if other.route.host == route.host && prefix_matches(&other.route.path, path) {
                assert!(
                    other.route.path.len() <= route.path.len(),
                    "{} beat {}",
                    route.path,
                    other.route.path
                );
            }
        }
    }
});

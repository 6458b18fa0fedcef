//! The cargo-fuzz seeds (fuzz/seeds) stay valid inputs as the types change, so
//! the fuzzer starts from documents and tables that reach past the parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoscale_core::desired::DesiredDocument;
use nanoscale_core::route::RouteTable;
use nanoscale_proxy::table::{compile, validate, Compiled};

#[test]
fn the_desired_document_seed_parses() {
    let seed = include_bytes!("../../../fuzz/seeds/desired_document/seed1");
    let document: DesiredDocument = serde_json::from_slice(seed).expect("seed parses");
    assert_eq!(document.state.workloads.len(), 1);
    assert!(!document.state.ssh_from.is_empty());
}

#[test]
fn the_route_match_seed_is_a_valid_table_and_matches() {
    let seed = include_bytes!("../../../fuzz/seeds/route_match/seed1");
    let split = seed.iter().position(|byte| *byte == b'\n').unwrap();
    let table: RouteTable = serde_json::from_slice(&seed[split + 1..]).expect("table parses");
    validate(&table).expect("valid table");
    let compiled = compile(table, &Compiled::default());
    let found = compiled
        .external
        .lookup("app.example.com", "/api/v1")
        .expect("a match");
    assert_eq!(found.route.name, "a");
}

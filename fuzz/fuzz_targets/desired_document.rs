//! The desired-state document as an agent receives it: any bytes may arrive. The
//! parser must never panic, and whatever it accepts must hash, redact, render its
//! firewall and survive its own canonical serialization unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanoscale_core::desired::DesiredDocument;
use nanoscale_core::firewall::FirewallPlan;

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<DesiredDocument>(data) else {
        return;
    };
    let state = &document.state;
    let hash = state.sha256();
    assert_eq!(hash.len(), 64);
    let again: nanoscale_core::desired::DesiredState =
        serde_json::from_slice(&state.canonical_json()).expect("canonical JSON parses");
    assert_eq!(&again, state, "canonical form round-trips");
    assert_eq!(again.sha256(), hash, "the hash is stable");
    let _ = state.redacted();
    let plan = FirewallPlan {
        mode: state.security_mode,
        open_tcp_ports: vec![80, 443],
        ssh_from: state.ssh_from.clone(),
    };
    if let Ok(script) = plan.script() {
        // Every accepted network was parsed, so nothing of it can add a rule.
        for network in &state.ssh_from {
            assert!(
                !network.contains(['\n', ';', '{', '}', '"']),
                "{network:?} accepted"
            );
        }
        assert!(script.starts_with("table inet nanoscale\ndelete table inet nanoscale\n"));
    }
});

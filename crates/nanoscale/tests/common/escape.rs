//! The escape-attempts fixture's verdict, shared by the built-in sandbox's test
//! (`tests/security.rs`) and the systemd unit's (`crates/agent/tests/systemd.rs`,
//! which includes this file by path): what a sandbox must make of each attempt
//! is in the fixture's `expected.json`.
use serde_json::Value;

/// Checks the app's `/report`; returns how many attempts were blocked.
pub fn check_escape_report(report: &Value) -> usize {
    let expected: Value = serde_json::from_str(include_str!(
        "../fixtures/apps/escape-attempts/expected.json"
    ))
    .expect("expected.json is JSON");
    let outcome = |name: &str| report[name].as_str().unwrap_or_default().to_owned();
    let names = |key: &str| -> Vec<String> {
        expected[key]
            .as_array()
            .unwrap_or_else(|| panic!("expected.json has no {key}"))
            .iter()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect()
    };
    let blocked = names("blocked");
    assert!(!blocked.is_empty(), "expected.json lists no attempt");
    for attempt in &blocked {
        assert!(
            outcome(attempt).starts_with("blocked"),
            "{attempt}: {report}"
        );
    }
    for attempt in names("allowed") {
        assert!(
            outcome(&attempt).starts_with("ALLOWED"),
            "{attempt}: {report}"
        );
    }
    for key in ["CapEff", "CapBnd"] {
        assert_eq!(
            Some(outcome(key).as_str()),
            expected["capabilities"].as_str(),
            "{key}: {report}"
        );
    }
    assert_eq!(
        Some(outcome("NoNewPrivs").as_str()),
        expected["no_new_privs"].as_str(),
        "{report}"
    );
    blocked.len()
}

//! `docs/openapi.json` is the document the server serves: the dashboard's TypeScript
//! types are generated from that file, so it must not drift from the handlers.
//! `NANOSCALE_UPDATE_OPENAPI=1 cargo test -p nanoscale-server --test openapi`
//! rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
use std::path::Path;

#[test]
fn docs_openapi_json_is_the_served_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let document = nanoscale_server::api::openapi_document();
    let expected = serde_json::to_string_pretty(&document).expect("serialize") + "\n";
    if std::env::var("NANOSCALE_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, &expected).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "docs/openapi.json is not the document the server serves (the API changed); \
         rerun with NANOSCALE_UPDATE_OPENAPI=1 cargo test -p nanoscale-server --test openapi \
         to rewrite it, and commit the result"
    );
}

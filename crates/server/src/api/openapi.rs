use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use nanoscale_core::api::ErrorBody;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "NanoScale API",
        description = "Control plane API of NanoScale, a self-hosted platform-as-a-service. \
            Authenticate with `Authorization: Bearer <token>` (API tokens) or the session cookie \
            from `POST /api/v1/auth/login` plus the `X-CSRF-Token` header on mutations. \
            Errors are always `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "setup, login, sessions"),
        (name = "tokens", description = "API tokens"),
        (name = "users"), (name = "teams"), (name = "projects"), (name = "services"),
        (name = "releases"), (name = "nodes"), (name = "events"), (name = "audit"),
        (name = "settings"), (name = "agent", description = "the node agent protocol (node credentials only)"), (name = "health", description = "probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The served document, serialized once at start-up.
#[derive(Clone)]
pub struct OpenApiJson(Arc<String>);

impl OpenApiJson {
    pub fn new(document: &Document) -> Self {
        OpenApiJson(Arc::new(
            serde_json::to_string(document).unwrap_or_default(),
        ))
    }
}

/// `Service` is `ServiceSpec` flattened with bookkeeping fields, which utoipa
/// renders as `allOf: [ServiceSpec, {…}]`. `ServiceSpec` forbids unknown fields (so a
/// request with a typo is refused), and under `allOf` that forbids the bookkeeping
/// fields too, making every response invalid. Responses therefore reference a copy
/// of the spec schema that lists the same fields without closing the object.
fn open_flattened_specs(document: &mut Document) {
    let Some(components) = document.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(spec))) = components.schemas.get("ServiceSpec") else {
        return;
    };
    let mut fields = spec.clone();
    fields.additional_properties = None;
    fields.description = Some("The fields of ServiceSpec, as they appear inside Service.".into());
    components
        .schemas
        .insert("ServiceSpecFields".into(), RefOr::T(Schema::Object(fields)));
    let Some(RefOr::T(Schema::AllOf(service))) = components.schemas.get_mut("Service") else {
        return;
    };
    let spec_location = Ref::from_schema_name("ServiceSpec").ref_location;
    for part in &mut service.items {
        if let RefOr::Ref(reference) = part {
            if reference.ref_location == spec_location {
                *reference = Ref::from_schema_name("ServiceSpecFields");
            }
        }
    }
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, content_type = "application/json", body = Object, description = "the OpenAPI 3.1 document")))]
pub async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
}

/// Routes anyone may call without authenticating.
const PUBLIC: [&str; 10] = [
    "/api/v1/setup",
    "/install.sh",
    "/api/v1/cluster/binary/sha256",
    "/api/v1/auth/login",
    "/api/v1/settings",
    "/api/v1/openapi.json",
    "/health/live",
    "/health/ready",
    "/health/startup",
    "/metrics",
];

const ERRORS: [(&str, &str); 12] = [
    (
        "400",
        "malformed request: bad JSON, path or query parameter",
    ),
    ("401", "not authenticated"),
    (
        "403",
        "authenticated, but the role (or a missing X-CSRF-Token) does not allow it",
    ),
    ("404", "no such resource"),
    (
        "409",
        "conflicts with the current state (name taken, last admin, setup done)",
    ),
    (
        "408",
        "the request body stopped arriving (15 s without a part, 60 s in all)",
    ),
    ("413", "request body over 1 MiB"),
    ("415", "body is not application/json"),
    ("422", "a field is invalid; `field` names it"),
    ("429", "rate limited; see Retry-After"),
    ("500", "internal error; the body carries a request id"),
    ("503", "a dependency (store, git) is unavailable"),
];

/// Adds what every operation shares, so handlers only document their success:
/// the error responses with the one error shape, and the security requirements.
/// Also opens the spec schema inside `Service` (see `open_flattened_specs`).
pub fn finish(document: &mut Document) {
    open_flattened_specs(document);
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
            crate::auth::SESSION_COOKIE,
        ))),
    );
    // Agents authenticate with the node credential `nanoscale up` (or, later, the
    // join) gave them, as a bearer token starting with `nsn_`.
    components.add_security_scheme(
        "node_credential",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    // A joining server downloads the binary with its join token (`K10…`) as the
    // bearer.
    components.add_security_scheme(
        "join_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let is_api = |path: &str| path.starts_with("/api/");
    for (path, item) in document.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            if !is_api(path) {
                continue;
            }
            for (code, description) in ERRORS {
                operation
                    .responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
            if path == "/api/v1/cluster/binary" {
                operation.security = Some(vec![SecurityRequirement::new(
                    "join_token",
                    Vec::<String>::new(),
                )]);
            } else if path.starts_with("/api/v1/agent/") {
                operation.security = Some(vec![SecurityRequirement::new(
                    "node_credential",
                    Vec::<String>::new(),
                )]);
            } else if !public {
                operation.security = Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("session", Vec::<String>::new()),
                ]);
            }
        }
    }
}

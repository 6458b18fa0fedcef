//! One request through the proxy: match a route, pick an instance, forward with
//! streaming bodies both ways, retry connect failures of idempotent requests,
//! splice upgraded connections (WebSocket), answer errors with a page naming the
//! route, and log and count every request once its response body is done.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nanoscale_core::route::{strip_path_prefix, Backend};

use crate::access_log::{AccessLog, Entry};
use crate::metrics::{RouteMetrics, Unrouted};
use crate::table::{now_ms, CompiledRoute, TargetState};
use crate::{Body, BoxError};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    External,
    Internal,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::External => "external",
            Listener::Internal => "internal",
        }
    }
}

pub type UpstreamClient = Client<HttpConnector, Body>;

/// Shared by every connection of the proxy.
pub struct Proxy {
    pub table: ArcSwap<crate::table::Compiled>,
    pub unrouted: Unrouted,
    pub access_log: AccessLog,
    /// Open client connections.
    pub connections: std::sync::atomic::AtomicUsize,
    clients: std::sync::Mutex<Vec<(u64, UpstreamClient)>>,
    request_ids: RequestIds,
}

impl Proxy {
    pub fn new(table: crate::table::Compiled, access_log: AccessLog) -> Proxy {
        Proxy {
            table: ArcSwap::from_pointee(table),
            unrouted: Unrouted::default(),
            access_log,
            connections: Default::default(),
            clients: Default::default(),
            request_ids: RequestIds::new(),
        }
    }

    /// The pooled upstream client for a connect timeout (one per distinct value,
    /// almost always one in all).
    fn client(&self, connect_timeout_ms: u64) -> UpstreamClient {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = clients.iter().find(|(ms, _)| *ms == connect_timeout_ms) {
            return client.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(connect_timeout_ms)));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(connector);
        clients.push((connect_timeout_ms, client.clone()));
        client
    }
}

/// The service function: never fails (errors become responses).
pub async fn handle(
    proxy: Arc<Proxy>,
    listener: Listener,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Logged>, std::convert::Infallible> {
    let started = Instant::now();
    let request_id = proxy.request_ids.take(request.headers());
    // Plain ASCII (checked or made so by `take`).
    let id = request_id.to_str().unwrap_or_default();
    let host = request_host(&request);
    // The entry's strings only where a line is written.
    let logging = proxy.access_log.enabled();
    let table = proxy.table.load();
    let matcher = match listener {
        Listener::External => &table.external,
        Listener::Internal => &table.internal,
    };
    let mut log = Entry {
        started,
        listener,
        route: None,
        method: request.method().clone(),
        host: if logging {
            host.clone().unwrap_or_default()
        } else {
            String::new()
        },
        path: if logging {
            request.uri().path().to_owned()
        } else {
            String::new()
        },
        status: 0,
        upstream: None,
        request_id: request_id.clone(),
        client: peer.ip(),
    };
    let wants_html = wants_html(request.headers());
    let page = |status: StatusCode, code: &str, message: &str, route: Option<&str>| {
        error(status, code, message, route, id, wants_html)
    };
    let Some(host) = host else {
        let response = page(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "the request has no valid Host header",
            None,
        );
        return Ok(finish(&proxy, response, log, None, None));
    };
    if has_dot_segments(request.uri().path()) {
        // Routing is by prefix: `/public/../admin` must not reach a route by one
        // prefix and an app that resolves it to another.
        let response = page(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the request path contains '.' or '..' segments",
            None,
        );
        return Ok(finish(&proxy, response, log, None, None));
    }
    let Some(route) = matcher.lookup(&host, request.uri().path()).cloned() else {
        let unrouted = match listener {
            Listener::External => &proxy.unrouted.external,
            Listener::Internal => &proxy.unrouted.internal,
        };
        unrouted.fetch_add(1, Ordering::Relaxed);
        let message = format!("no route for host {host} and path {}", request.uri().path());
        let response = page(StatusCode::NOT_FOUND, "no_route", &message, None);
        return Ok(finish(&proxy, response, log, None, None));
    };
    drop(table);
    log.route = Some(route.clone());
    route.metrics.active.fetch_add(1, Ordering::Relaxed);
    let active = ActiveGuard::route(route.metrics.clone());
    let forwarded_path = if route.route.strip_prefix {
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Some(strip_path_prefix(&route.route.path, path_and_query).into_owned())
    } else {
        None
    };
    if let Backend::Static { root, .. } = &route.route.backend {
        let path = forwarded_path
            .as_deref()
            .unwrap_or(request.uri().path())
            .split('?')
            .next()
            .unwrap_or("/")
            .to_owned();
        let response =
            crate::static_files::serve(root, request.method(), &path, request.headers()).await;
        return Ok(finish(&proxy, response, log, Some(active), None));
    }
    let max_body = route.route.policy.max_body_bytes;
    let refused = crate::linger::Refused::of(request.headers());
    if refused.declared().is_some_and(|length| length > max_body) {
        let message = format!("request body larger than {max_body} bytes");
        let mut response = page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &message,
            Some(&route.route.name),
        );
        if !refused.read_away(request.into_body(), 0) {
            // The body stays unread, so the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Ok(finish(&proxy, response, log, Some(active), None));
    }
    let upgrade = upgrade_protocol(&request);
    let mut client_upgrade = upgrade
        .as_ref()
        .map(|_| crate::conn::ClientUpgrade::take(&mut request));
    let (parts, incoming) = request.into_parts();
    let mut headers = parts.headers;
    let original_host = host.clone();
    prepare_headers(
        &mut headers,
        &original_host,
        peer,
        &request_id,
        &parts.uri,
        listener,
    );
    let path_and_query = match forwarded_path {
        Some(path) => http::uri::PathAndQuery::try_from(path).ok(),
        None => parts.uri.path_and_query().cloned(),
    };
    let Some(path_and_query) = path_and_query else {
        let response = page(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the request path cannot be forwarded",
            Some(&route.route.name),
        );
        return Ok(finish(&proxy, response, log, Some(active), None));
    };
    let bodyless = incoming.is_end_stream();
    let mut body = Some(incoming);
    let idempotent = is_idempotent(&parts.method);
    let policy = route.route.policy.clone();
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let Some(index) = route.pick(&tried, now_ms()) else {
            let (status, code, message) = if tried.is_empty() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_instance",
                    format!(
                        "service {} has no healthy instance for route {}",
                        route.route.backend.service(),
                        route.route.name
                    ),
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!(
                        "no instance of service {} accepted a connection",
                        route.route.backend.service()
                    ),
                )
            };
            let response = page(status, code, &message, Some(&route.route.name));
            return Ok(finish(&proxy, response, log, Some(active), None));
        };
        let target = route.targets[index].clone();
        log.upstream = Some(target.clone());
        let uri = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(target.authority.clone())
            .path_and_query(path_and_query.clone())
            .build();
        let Ok(uri) = uri else {
            let response = page(
                StatusCode::BAD_REQUEST,
                "bad_path",
                "the request path cannot be forwarded",
                Some(&route.route.name),
            );
            return Ok(finish(&proxy, response, log, Some(active), None));
        };
        let outbound_body: Body = match body.take() {
            Some(incoming) if !bodyless => Limited::new(incoming, max_body as usize)
                .map_err(BoxError::from)
                .boxed_unsync(),
            _ => Empty::new().map_err(BoxError::from).boxed_unsync(),
        };
        let mut outbound = Request::new(outbound_body);
        *outbound.method_mut() = parts.method.clone();
        *outbound.uri_mut() = uri;
        *outbound.version_mut() = Version::HTTP_11;
        // Only a request that may be retried needs its headers kept.
        *outbound.headers_mut() = if idempotent && bodyless && policy.retries > 0 {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        target.active.fetch_add(1, Ordering::Relaxed);
        let target_guard = ActiveGuard::target(target.clone());
        let timeout = Duration::from_millis(policy.response_timeout_ms);
        if let (Some(protocol), Some(client_upgrade)) = (&upgrade, client_upgrade.take()) {
            let response = splice_upgrade(outbound, protocol, client_upgrade, &policy).await;
            let response = match response {
                Ok(response) => {
                    target.succeeded();
                    response
                }
                Err(failure) => {
                    route
                        .metrics
                        .upstream_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if failure.connect {
                        target.failed(now_ms());
                    }
                    failure.response(&route, id, wants_html)
                }
            };
            return Ok(finish(
                &proxy,
                response,
                log,
                Some(active),
                Some(target_guard),
            ));
        }
        let client = proxy.client(policy.connect_timeout_ms);
        match tokio::time::timeout(timeout, client.request(outbound)).await {
            Ok(Ok(response)) => {
                target.succeeded();
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .insert(X_REQUEST_ID.clone(), request_id.clone());
                return Ok(logged(
                    &proxy,
                    parts,
                    Inner::Upstream(body),
                    log,
                    Some(active),
                    Some(target_guard),
                ));
            }
            Ok(Err(failure)) => {
                route
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                drop(target_guard);
                if failure.is_connect() {
                    target.failed(now_ms());
                    if idempotent && bodyless && tried.len() < policy.retries as usize {
                        tried.push(index);
                        continue;
                    }
                }
                let too_large = caused_by_length_limit(&failure);
                let (status, code, message) = if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request body larger than {max_body} bytes"),
                    )
                } else if failure.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        format!(
                            "instance {} of service {} refused the connection",
                            target.instance,
                            route.route.backend.service()
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_failed",
                        format!(
                            "instance {} of service {} closed the connection without a response",
                            target.instance,
                            route.route.backend.service()
                        ),
                    )
                };
                tracing::debug!(route = %route.route.name, upstream = %target.addr, "upstream error: {failure:#}");
                let response = page(status, code, &message, Some(&route.route.name));
                return Ok(finish(&proxy, response, log, Some(active), None));
            }
            Err(_) => {
                route
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "instance {} of service {} sent no response within {} ms",
                    target.instance,
                    route.route.backend.service(),
                    policy.response_timeout_ms
                );
                let response = page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &message,
                    Some(&route.route.name),
                );
                return Ok(finish(&proxy, response, log, Some(active), None));
            }
        }
    }
}

/// Why an upgrade could not be spliced.
struct UpgradeFailure {
    connect: bool,
    timeout: bool,
    message: String,
}

impl UpgradeFailure {
    fn response(
        &self,
        route: &CompiledRoute,
        request_id: &str,
        wants_html: bool,
    ) -> Response<Body> {
        let (status, code) = if self.timeout {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        } else if self.connect {
            (StatusCode::BAD_GATEWAY, "upstream_unreachable")
        } else {
            (StatusCode::BAD_GATEWAY, "upstream_failed")
        };
        error(
            status,
            code,
            &self.message,
            Some(&route.route.name),
            request_id,
            wants_html,
        )
    }
}

/// Forwards an upgrade request on a fresh connection and, on `101`, splices the
/// client's and the instance's upgraded streams together until either closes.
async fn splice_upgrade(
    mut outbound: Request<Body>,
    protocol: &HeaderValue,
    client_upgrade: crate::conn::ClientUpgrade,
    policy: &nanoscale_core::route::RoutePolicy,
) -> Result<Response<Body>, UpgradeFailure> {
    let authority = outbound
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let fail = |connect: bool, timeout: bool, message: String| UpgradeFailure {
        connect,
        timeout,
        message,
    };
    let connect = tokio::net::TcpStream::connect(authority.as_str());
    let stream =
        match tokio::time::timeout(Duration::from_millis(policy.connect_timeout_ms), connect).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(fail(true, false, format!("connecting to {authority}: {e}"))),
            Err(_) => {
                return Err(fail(
                    true,
                    true,
                    format!("connecting to {authority} timed out"),
                ))
            }
        };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(false, false, format!("handshake with {authority}: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    // Origin form on a direct connection.
    let path = outbound
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    if let Ok(uri) = path.parse() {
        *outbound.uri_mut() = uri;
    }
    let headers = outbound.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
    let exchange = sender.send_request(outbound);
    let mut response =
        match tokio::time::timeout(Duration::from_millis(policy.response_timeout_ms), exchange)
            .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return Err(fail(
                    false,
                    false,
                    format!("upgrade request to {authority}: {e}"),
                ))
            }
            Err(_) => {
                return Err(fail(
                    false,
                    true,
                    format!("{authority} sent no response to the upgrade in time"),
                ))
            }
        };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let upstream_upgrade = async { upstream_upgrade.await.map_err(|e| e.to_string()) };
            let (mut client, upstream) =
                match tokio::try_join!(client_upgrade.wait(), upstream_upgrade) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!("upgrade failed: {e}");
                        return;
                    }
                };
            let mut upstream = TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        let (parts, body) = response.into_parts();
        return Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ));
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed_unsync(),
    ))
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1: Connection and the fields it names, plus the hop-by-hop
/// fields of earlier specs that some clients still send.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn prepare_headers(
    headers: &mut HeaderMap,
    host: &str,
    peer: SocketAddr,
    request_id: &HeaderValue,
    uri: &Uri,
    listener: Listener,
) {
    remove_hop_by_hop(headers);
    // HTTP/2 clients send :authority instead of Host; instances speak HTTP/1.1.
    if !headers.contains_key(header::HOST) {
        if let Some(authority) = uri.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, value);
            }
        }
    }
    let ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) if listener == Listener::External => format!("{earlier}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST.clone(), value);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// The `Upgrade` protocol of an HTTP/1.1 upgrade request (WebSocket and others).
fn upgrade_protocol(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    request.headers().get(header::UPGRADE).cloned()
}

/// The request's host, lowercase, without port; `None` when missing or invalid.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri().host()?,
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host().trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// `.` or `..` path segments, also percent-encoded (`%2e%2E`).
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Whether a failed exchange was our request-body limit cutting the upload.
fn caused_by_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// An error answered by the proxy itself: JSON (`{"error":{…}}`, the control
/// plane's shape) or a small HTML page for browsers. User-controlled text is
/// escaped.
pub fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    route: Option<&str>,
    request_id: &str,
    html: bool,
) -> Response<Body> {
    let (content_type, body) = if html {
        let title = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let route_line = route
            .map(|r| format!("<p>Route: <code>{}</code></p>", escape_html(r)))
            .unwrap_or_default();
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1><p>{}</p>{route_line}<p>Request id: <code>{}</code></p><hr><p>NanoScale proxy</p></body></html>\n",
                escape_html(message),
                escape_html(request_id)
            ),
        )
    } else {
        let value = serde_json::json!({
            "error": {
                "status": status.as_u16(),
                "code": code,
                "message": message,
                "route": route,
                "request_id": request_id,
            }
        });
        ("application/json", format!("{value}\n"))
    };
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(BoxError::from)
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    response
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Decrements an in-flight counter when the response body is done.
pub enum ActiveGuard {
    Route(Arc<RouteMetrics>),
    Target(Arc<TargetState>),
}

impl ActiveGuard {
    fn route(metrics: Arc<RouteMetrics>) -> ActiveGuard {
        ActiveGuard::Route(metrics)
    }
    fn target(target: Arc<TargetState>) -> ActiveGuard {
        ActiveGuard::Target(target)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        match self {
            ActiveGuard::Route(metrics) => metrics.active.fetch_sub(1, Ordering::Relaxed),
            ActiveGuard::Target(target) => target.active.fetch_sub(1, Ordering::Relaxed),
        };
    }
}

/// Wraps the response body so the request is logged and counted when the body
/// ends or the client goes away.
fn finish(
    proxy: &Arc<Proxy>,
    response: Response<Body>,
    log: Entry,
    route_guard: Option<ActiveGuard>,
    target_guard: Option<ActiveGuard>,
) -> Response<Logged> {
    let (parts, body) = response.into_parts();
    logged(
        proxy,
        parts,
        Inner::Boxed(body),
        log,
        route_guard,
        target_guard,
    )
}

/// The response with its body wrapped to count bytes and log at the end.
fn logged(
    proxy: &Arc<Proxy>,
    parts: http::response::Parts,
    inner: Inner,
    mut log: Entry,
    route_guard: Option<ActiveGuard>,
    target_guard: Option<ActiveGuard>,
) -> Response<Logged> {
    log.status = parts.status.as_u16();
    let body = Logged {
        inner,
        bytes: 0,
        log: Some(log),
        proxy: proxy.clone(),
        _guards: (route_guard, target_guard),
    };
    Response::from_parts(parts, body)
}

/// A response body: an instance's, as it comes (no box per request), or any
/// other.
enum Inner {
    Upstream(Incoming),
    Boxed(Body),
}

/// Every response's body: counts its bytes, and when it is dropped records the
/// route's metrics and the access log line.
pub struct Logged {
    inner: Inner,
    bytes: u64,
    log: Option<Entry>,
    proxy: Arc<Proxy>,
    _guards: (Option<ActiveGuard>, Option<ActiveGuard>),
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
            Inner::Boxed(body) => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Boxed(body) => body.size_hint(),
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let elapsed = log.started.elapsed();
            if let Some(route) = &log.route {
                route.metrics.record(log.status, elapsed, self.bytes);
            }
            self.proxy.access_log.write(&log, self.bytes, elapsed);
        }
    }
}

/// Request ids: the client's `X-Request-Id` when it is short and plain, else a
/// fresh one (a random per-process prefix and a counter: unique, no syscall).
struct RequestIds {
    prefix: u64,
    counter: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: rand::random::<u64>(),
            counter: Default::default(),
        }
    }

    /// As a header value, made once and shared by the request, the response and
    /// the log (a clone is a reference count).
    fn take(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(given) = headers.get(&X_REQUEST_ID) {
            let bytes = given.as_bytes();
            let plain = bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
            if !bytes.is_empty() && bytes.len() <= 128 && plain {
                return given.clone();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let made = format!("{:016x}{n:08x}", self.prefix);
        HeaderValue::try_from(made).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn hosts_are_lowercased_without_port() {
        let request = |host: &str| {
            Request::builder()
                .uri("/")
                .header(header::HOST, host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            request_host(&request("App.Example.com:8080")).as_deref(),
            Some("app.example.com")
        );
        assert_eq!(request_host(&request("[::1]:80")).as_deref(), Some("[::1]"));
        assert_eq!(request_host(&request("bad host")), None);
        let h2 = Request::builder()
            .uri("http://h2.example.com/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&h2).as_deref(), Some("h2.example.com"));
    }

    #[test]
    fn error_pages_escape_what_the_user_controls() {
        let response = error(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route for <script>",
            Some("r\"1"),
            "id",
            true,
        );
        assert_eq!(response.status(), 404);
        let body = futures::executor::block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("&lt;script&gt;") && !text.contains("<script>"),
            "{text}"
        );
    }

    #[test]
    fn dot_segments_are_found_encoded_or_not() {
        for bad in ["/a/../b", "/..", "/a/./b", "/a/%2e%2E/b", "/.%2e/x", "/%2e"] {
            assert!(has_dot_segments(bad), "{bad}");
        }
        for good in ["/", "/a/b", "/a..b", "/.well-known/x", "/file.txt", "/..."] {
            assert!(!has_dot_segments(good), "{good}");
        }
    }

    #[test]
    fn request_ids_are_kept_when_plain_and_made_otherwise() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.take(&headers), "abc-123");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("a\"b"));
        assert_eq!(ids.take(&headers).len(), 24, "not plain: made anew");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        let made = ids.take(&headers);
        assert_eq!(made.len(), 24);
        assert_ne!(made, ids.take(&HeaderMap::new()));
    }
}

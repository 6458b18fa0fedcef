//! The traffic layer as a real process: `nanoscale proxy` fed route tables over its
//! control socket, in front of real upstream servers on loopback, driven by real
//! clients (curl, a WebSocket client, a load loop).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nanoscale_core::route::{Backend, Route, RoutePolicy, RouteTable, Target};
use nanoscale_proxy::{ControlClient, ControlRequest};
use serde_json::{json, Value};

/// The size of `/big`'s body: more than the socket buffers hold.
const BIG: usize = 8 << 20;

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream on a loopback port that says who it is (`x-upstream`) and echoes
/// what it received, with a few special paths.
struct Upstream {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(name: &'static str) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    answer(name, request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, served, task }
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).boxed()
}

async fn answer(
    name: &'static str,
    mut request: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let reply = |body: TestBody| {
        Response::builder()
            .header("x-upstream", name)
            .body(body)
            .unwrap()
    };
    if path.ends_with("/ws") {
        let key = request.headers().get("sec-websocket-key").cloned().unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = socket.next().await {
                if message.is_text() || message.is_binary() {
                    let _ = socket.send(message).await;
                }
            }
        });
        let response = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(""))
            .unwrap();
        return Ok(response);
    }
    if path.ends_with("/sse") {
        // The first event at once, the second only after two seconds: a proxy that
        // buffers shows nothing until the end.
        let frames = futures::stream::unfold(0, |step| async move {
            match step {
                0 => Some((Ok(Frame::data(Bytes::from("data: first\n\n"))), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Some((Ok(Frame::data(Bytes::from("data: second\n\n"))), 2))
                }
                _ => None,
            }
        });
        let mut response = reply(BodyExt::boxed(StreamBody::new(frames)));
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(response);
    }
    if path.ends_with("/big") {
        return Ok(reply(full(vec![b'x'; BIG])));
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return Ok(reply(full("slow\n")));
    }
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let mut received = 0u64;
    let mut body = request.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
        }
    }
    let echo = json!({"upstream": name, "method": method, "uri": uri, "headers": headers, "received": received});
    let mut response = reply(full(echo.to_string()));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

/// `nanoscale proxy` on free ports with its own state dir, killed on drop.
struct ProxyProcess {
    child: Child,
    url: String,
    state_dir: PathBuf,
    metrics_url: String,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    async fn start() -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("proxy");
        let (child, url, metrics_url) = Self::spawn(&state_dir).await;
        ProxyProcess {
            child,
            url,
            state_dir,
            metrics_url,
            _dir: dir,
        }
    }

    async fn spawn(state_dir: &Path) -> (Child, String, String) {
        let port = common::free_port();
        let metrics = common::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
            .arg("proxy")
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--workers", "2"])
            .arg("--access-log")
            .arg(state_dir.with_file_name("access.log"))
            .env("NANOSCALE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ControlClient::connect(state_dir).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the proxy opened no control socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (
            child,
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{metrics}/metrics"),
        )
    }

    /// Its `/metrics` text.
    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn apply(&self, table: &RouteTable) -> nanoscale_proxy::ControlResponse {
        let mut client = ControlClient::connect(&self.state_dir).await.unwrap();
        client
            .call(&ControlRequest::Apply {
                table: table.clone(),
            })
            .await
            .unwrap()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn route(name: &str, host: Option<&str>, path: &str, targets: &[SocketAddr]) -> Route {
    Route {
        name: name.to_owned(),
        host: host.map(str::to_owned),
        path: path.to_owned(),
        strip_prefix: false,
        backend: Backend::Upstreams {
            service: name.split(':').next().unwrap().to_owned(),
            targets: targets
                .iter()
                .enumerate()
                .map(|(i, addr)| Target {
                    addr: *addr,
                    instance: format!("{name}-{i}"),
                })
                .collect(),
        },
        policy: RoutePolicy::default(),
    }
}

fn table(version: u64, external: Vec<Route>) -> RouteTable {
    RouteTable {
        version,
        external,
        internal: vec![],
    }
}

/// curl with the given arguments; returns (status, headers+body text).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix_with_forwarded_headers_and_clear_errors() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let proxy = ProxyProcess::start().await;
    let mut api = route("b:*/api", None, "/api", &[b.addr]);
    api.strip_prefix = true;
    let mut slow = route("a:*/slow", None, "/slow", &[a.addr]);
    slow.policy.response_timeout_ms = 300;
    let mut small = route("a:*/small", None, "/small", &[a.addr]);
    small.policy.max_body_bytes = 10;
    let applied = proxy
        .apply(&table(
            7,
            vec![
                route("a:a.test/", Some("a.test"), "/", &[a.addr]),
                route("b:a.test/b", Some("a.test"), "/b", &[b.addr]),
                api,
                route("down:*/down", None, "/down", &[closed_port()]),
                route("empty:*/empty", None, "/empty", &[]),
                slow,
                small,
            ],
        ))
        .await;
    assert_eq!(applied.version, 7);
    let url = |path: &str| format!("{}{path}", proxy.url);

    // Host routing, longest prefix on segment boundaries, prefix strip.
    let (status, body) = curl(&["-H", "Host: A.test:80", &url("/echo")]);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["upstream"], "a");
    assert_eq!(echo["uri"], "/echo");
    let (_, body) = curl(&["-H", "Host: a.test", &url("/b/x")]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["upstream"],
        "b"
    );
    let (_, body) = curl(&["-H", "Host: a.test", &url("/bx")]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["upstream"],
        "a"
    );
    let (status, body) = curl(&["-H", "Host: other.test", &url("/api/users?page=2")]);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["upstream"], "b");
    assert_eq!(echo["uri"], "/users?page=2", "prefix stripped, query kept");
    let (_, body) = curl(&["-H", "Host: other.test", &url("/api")]);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["uri"], "/");

    // Forwarded headers, request id, hop-by-hop removal.
    let (_, body) = curl(&[
        "-H",
        "Host: a.test",
        "-H",
        "Connection: keep-alive, x-secret",
        "-H",
        "X-Secret: hop",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "X-Forwarded-Proto: https",
        "-D",
        "-",
        &url("/echo"),
    ]);
    let (head, json_body) = body.split_once("\r\n\r\n").unwrap();
    let headers = &serde_json::from_str::<Value>(json_body).unwrap()["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        headers["x-forwarded-proto"], "http",
        "never trusted from the client"
    );
    assert_eq!(headers["x-forwarded-host"], "a.test");
    assert_eq!(
        headers["host"], "a.test",
        "the original Host reaches the app"
    );
    assert!(headers.get("x-secret").is_none(), "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    let request_id = headers["x-request-id"].as_str().unwrap().to_owned();
    assert!(request_id.len() >= 16, "{request_id}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-request-id: {request_id}")),
        "{head}"
    );
    let (_, body) = curl(&[
        "-H",
        "Host: a.test",
        "-H",
        "X-Request-Id: trace-42",
        &url("/echo"),
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["headers"]["x-request-id"],
        "trace-42"
    );

    // Errors name the route (or say nothing matched), as JSON or as a page.
    let (status, body) = curl(&["-H", "Host: nowhere.test", &url("/nothing")]);
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "no_route");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nowhere.test"));
    let (status, body) = curl(&["-H", "Accept: text/html", &url("/nothing")]);
    assert_eq!(status, 404);
    assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
    let (status, body) = curl(&["--path-as-is", "-H", "Host: a.test", &url("/b/../admin")]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_path"), "{body}");
    let (status, _) = curl(&["--path-as-is", &url("/api/%2E%2e/secret")]);
    assert_eq!(status, 400);
    let (status, body) = curl(&[&url("/down")]);
    assert_eq!(status, 502, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["route"], "down:*/down");
    let (status, body) = curl(&[&url("/empty")]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no healthy instance"), "{body}");
    let (status, body) = curl(&[&url("/slow")]);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("300 ms"), "{body}");
    let (status, body) = curl(&["--data-binary", "more than ten bytes", &url("/small")]);
    assert_eq!(status, 413, "{body}");
    let (status, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "more than ten bytes, chunked",
        &url("/small"),
    ]);
    assert_eq!(status, 413, "a streamed body is counted too");
    // A client that writes its whole refused body before reading gets the 413, not
    // a reset, and its connection carries the next request.
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let (refused, next) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let size = 2 << 20;
        let head =
            format!("POST /small HTTP/1.1\r\nHost: {address}\r\nContent-Length: {size}\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .write_all(&vec![b'x'; size])
            .expect("the proxy reads the refused body");
        let mut reply = vec![0u8; 8192];
        let read = stream.read(&mut reply).unwrap();
        let refused = String::from_utf8_lossy(&reply[..read]).into_owned();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        let read = stream.read(&mut reply).unwrap();
        (
            refused,
            String::from_utf8_lossy(&reply[..read]).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");

    // Metrics and the access log saw it all.
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("nanoscale_proxy_requests_total{listener=\"external\",route=\"a:a.test/\",class=\"2xx\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nanoscale_proxy_unrouted_requests_total{listener=\"external\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nanoscale_proxy_route_table_version 7"),
        "{metrics}"
    );
    let log_path = proxy.state_dir.with_file_name("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("trace-42") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entry: Value = lines
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|entry| entry["request_id"] == "trace-42")
        .expect("the request is in the access log");
    assert_eq!(entry["route"], "a:a.test/");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["upstream"], a.addr.to_string());
    assert!(entry["bytes"].as_u64().unwrap() > 0);
    assert!(entry["duration_ms"].is_number());
    assert!(entry["time"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sse_http2_and_large_uploads_stream_through() {
    let a = upstream("a").await;
    let proxy = ProxyProcess::start().await;
    proxy
        .apply(&table(1, vec![route("a:*/", None, "/", &[a.addr])]))
        .await;

    // WebSocket echo.
    let ws_url = format!("{}/ws", proxy.url.replace("http://", "ws://"));
    let (socket, response) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(response.status(), 101);
    echo_and_close(socket, &["hello", "through the proxy"]).await;

    // SSE: the first event arrives while the upstream is still holding the rest.
    let started = Instant::now();
    let mut response = reqwest::get(format!("{}/sse", proxy.url)).await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    let first_after = started.elapsed();
    assert_eq!(&first[..], b"data: first\n\n");
    assert!(
        first_after < Duration::from_millis(1500),
        "first event after {first_after:?}: buffered"
    );
    let second = response.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
    assert!(started.elapsed() >= Duration::from_secs(2));

    // HTTP/2 with prior knowledge (h2c).
    let output = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["-o", "/dev/null", &format!("{}/echo", proxy.url)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2 200");
    // h2load: 200 requests as 10 concurrent streams on each of 2 connections.
    let output = Command::new("h2load")
        .args(["-n", "200", "-c", "2", "-m", "10"])
        .arg(format!("{}/echo", proxy.url))
        .output()
        .expect("h2load (Debian nghttp2-client; scripts/test installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("200 succeeded, 0 failed, 0 errored"),
        "{report}"
    );
    assert!(report.contains("status codes: 200 2xx"), "{report}");

    // A 32 MiB upload streams through (the default limit is 64 MiB).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 32 << 20]).unwrap();
    let (status, body) = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{}/upload", proxy.url),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["received"],
        32 << 20
    );
}

/// Each text comes back from the upstream's WebSocket echo; then a clean close.
async fn echo_and_close<S>(mut socket: tokio_tungstenite::WebSocketStream<S>, texts: &[&str])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for text in texts {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(*text))
            .await
            .unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.to_text().unwrap(), *text);
    }
    socket.close(None).await.unwrap();
}

/// One response read off a raw connection (`Content-Length` framing only).
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            read > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    while pending.len() < head_end + length {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the body within 10 s")
            .unwrap();
        assert!(read > 0, "closed inside a body");
        pending.extend_from_slice(&buffer[..read]);
    }
    let body = pending[head_end..head_end + length].to_vec();
    pending.drain(..head_end + length);
    (status, body)
}

async fn proxy_status(proxy: &ProxyProcess) -> nanoscale_proxy::ControlResponse {
    let mut client = ControlClient::connect(&proxy.state_dir).await.unwrap();
    client.call(&ControlRequest::Status).await.unwrap()
}

/// Waits until the proxy reports `parked` parked connections.
async fn until_parked(proxy: &ProxyProcess, parked: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = proxy_status(proxy).await;
        if status.parked == parked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "parked {} (wanted {parked})",
            status.parked
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_park_and_carry_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = upstream("a").await;
    let proxy = ProxyProcess::start().await;
    proxy
        .apply(&table(1, vec![route("a:*/", None, "/", &[a.addr])]))
        .await;
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n");
    let echoed = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap()["uri"].clone();

    // A connection that never sends anything, and one that made a request, both
    // park once idle; the second then carries on where it was.
    let silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut pending = Vec::new();
    client.write_all(get("/one").as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut client, &mut pending).await;
    assert_eq!((status, echoed(&body)), (200, json!("/one")));
    until_parked(&proxy, 2).await;
    assert_eq!(proxy_status(&proxy).await.connections, 2);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("\nnanoscale_proxy_parked_connections 2\n")
            && metrics.contains("\nnanoscale_proxy_open_connections 2\n"),
        "{metrics}"
    );
    client.write_all(get("/two").as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut client, &mut pending).await;
    assert_eq!((status, echoed(&body)), (200, json!("/two")));
    assert_eq!(proxy_status(&proxy).await.parked, 1);

    // The client closing a parked connection closes it here too.
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy_status(&proxy).await.connections != 1 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pipelined requests arriving at a parked connection.
    until_parked(&proxy, 1).await;
    client
        .write_all(format!("{}{}", get("/p1"), get("/p2")).as_bytes())
        .await
        .unwrap();
    for path in ["/p1", "/p2"] {
        let (status, body) = read_response(&mut client, &mut pending).await;
        assert_eq!((status, echoed(&body)), (200, json!(path)));
    }

    // A request head that stops half way for longer than parking waits: hyper is
    // stopped, the half head kept, and the request completes when the rest comes.
    until_parked(&proxy, 1).await;
    client
        .write_all(b"GET /split HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        proxy_status(&proxy).await.parked,
        0,
        "parked inside a request head"
    );
    client.write_all(b"st: app\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut client, &mut pending).await;
    assert_eq!((status, echoed(&body)), (200, json!("/split")));

    // A client that stops reading a large response for longer than parking waits
    // gets all of it, byte for byte, on the same connection.
    client.write_all(get("/big").as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    client.read_exact(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        proxy_status(&proxy).await.parked,
        0,
        "parked during a response"
    );
    pending.extend_from_slice(&first);
    let (status, body) = read_response(&mut client, &mut pending).await;
    assert_eq!(status, 200);
    assert!(body.len() == BIG && body.iter().all(|b| *b == b'x'));
    client
        .write_all(get("/after-big").as_bytes())
        .await
        .unwrap();
    let (status, body) = read_response(&mut client, &mut pending).await;
    assert_eq!((status, echoed(&body)), (200, json!("/after-big")));

    // A WebSocket upgrade on a connection that was parked.
    until_parked(&proxy, 1).await;
    assert!(pending.is_empty());
    let (socket, response) = tokio_tungstenite::client_async(format!("ws://{address}/ws"), client)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    tokio::time::sleep(Duration::from_secs(3)).await;
    echo_and_close(socket, &["after parking", "and idle"]).await;

    // At shutdown, parked connections are closed at once (they are idle) and the
    // proxy does not wait out the drain time for them.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut pending = Vec::new();
    idle.write_all(get("/last").as_bytes()).await.unwrap();
    read_response(&mut idle, &mut pending).await;
    until_parked(&proxy, 1).await;
    let mut proxy = proxy;
    let stopping = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || proxy.child.wait().map(|s| (s, proxy)))
        .await
        .unwrap()
        .unwrap();
    assert!(status.0.success(), "{:?}", status.0);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopping.elapsed()
    );
    let mut rest = [0u8; 1];
    assert_eq!(
        idle.read(&mut rest).await.unwrap(),
        0,
        "still open after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_skips_a_dead_instance_and_only_idempotent_requests_retry() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dead = closed_port();
    let proxy = ProxyProcess::start().await;
    proxy
        .apply(&table(
            1,
            vec![route("web:*/", None, "/", &[a.addr, dead, b.addr])],
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..30 {
        let response = client
            .get(format!("{}/echo", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "a connect failure is retried elsewhere"
        );
    }
    let (served_a, served_b) = (
        a.served.load(Ordering::Relaxed),
        b.served.load(Ordering::Relaxed),
    );
    assert_eq!(served_a + served_b, 30);
    assert!(
        served_a >= 10 && served_b >= 10,
        "round robin: a {served_a}, b {served_b}"
    );
    let metrics = proxy.metrics().await;
    let errors: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "nanoscale_proxy_upstream_errors_total{listener=\"external\",route=\"web:*/\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(
        errors, 1,
        "the dead instance is ejected after its first failure"
    );

    // A POST is not retried: its body may have reached the app.
    proxy
        .apply(&table(
            2,
            vec![route("web:*/", None, "/", &[closed_port(), a.addr])],
        ))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{}/echo", proxy.url))
            .body("x")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 502],
        "one POST met the dead instance and was not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_swapped_100_times_under_load_fails_no_request() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let proxy = ProxyProcess::start().await;
    proxy
        .apply(&table(1, vec![route("web:*/", None, "/", &[a.addr])]))
        .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let mut load = Vec::new();
    for _ in 0..8 {
        let (client, stop, url) = (client.clone(), stop.clone(), format!("{}/echo", proxy.url));
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.bytes().await;
                        ok += 1;
                    }
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    let sets = [vec![a.addr], vec![b.addr], vec![a.addr, b.addr]];
    for version in 2..102u64 {
        let targets = &sets[version as usize % 3];
        let mut next = route("web:*/", None, "/", targets);
        next.policy.balance = if version % 2 == 0 {
            nanoscale_core::route::Balance::RoundRobin
        } else {
            nanoscale_core::route::Balance::LeastConnections
        };
        let response = proxy.apply(&table(version, vec![next])).await;
        assert_eq!(response.version, version);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 500, "the load loop ran: {total} requests");
    assert!(a.served.load(Ordering::Relaxed) > 0 && b.served.load(Ordering::Relaxed) > 0);
    eprintln!("{total} requests over 100 swaps, none failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_input_is_refused_and_a_restarted_proxy_serves_its_saved_table() {
    let a = upstream("a").await;
    let mut proxy = ProxyProcess::start().await;
    proxy
        .apply(&table(3, vec![route("a:*/", None, "/", &[a.addr])]))
        .await;
    let mut client = ControlClient::connect(&proxy.state_dir).await.unwrap();
    let mut bad = route("a:*/", Some("Not A Host"), "/", &[a.addr]);
    let refused = client
        .call(&ControlRequest::Apply {
            table: table(4, vec![bad.clone()]),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("external[0].host"), "{refused}");
    bad.host = None;
    bad.path = "/../etc".into();
    let refused = client
        .call(&ControlRequest::Apply {
            table: table(4, vec![bad]),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("external[0].path"), "{refused}");
    let status = client.call(&ControlRequest::Status).await.unwrap();
    assert_eq!(status.version, 3, "a refused table changes nothing");
    // Not JSON at all: an error line, and the connection still answers.
    let mut raw = tokio::net::UnixStream::connect(proxy.state_dir.join("control.sock"))
        .await
        .unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    raw.write_all(b"{not json\n").await.unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(&mut raw)
        .read_line(&mut line)
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("invalid request"),
        "{answer}"
    );
    // Only the owner may talk to the proxy.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&proxy.state_dir.join("control.sock")), 0o600);
    assert_eq!(mode(&proxy.state_dir), 0o700);

    // A second proxy on the same state dir refuses to start.
    let second = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .arg("proxy")
        .arg("--state-dir")
        .arg(&proxy.state_dir)
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another proxy"));

    // Restarted, it serves the saved table before anyone speaks to it.
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    let (child, url, _) = ProxyProcess::spawn(&proxy.state_dir).await;
    proxy.child = child;
    let (status, body) = curl(&[&format!("{url}/echo")]);
    assert_eq!(status, 200, "{body}");
    let status = ControlClient::connect(&proxy.state_dir)
        .await
        .unwrap()
        .call(&ControlRequest::Status)
        .await
        .unwrap();
    assert_eq!(status.version, 3);
}

#[test]
fn bad_proxy_flags_name_the_fix() {
    let output = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .args(["proxy", "--state-dir", "/tmp/x", "--listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not ADDR:PORT"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_nanoscale"))
        .args([
            "proxy",
            "--state-dir",
            "/tmp/x",
            "--access-log",
            "relative.log",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absolute file path"), "{stderr}");
}

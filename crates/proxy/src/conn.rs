//! Serving one client connection: HTTP/1.1 through hyper, parked between requests
//! once idle; HTTP/2 (prior knowledge) through hyper's h2 server.
//!
//! An HTTP/1.1 connection is served by `hyper::server::conn::http1` until it has
//! been idle for [`PARK_AFTER`]: no request or response in flight, no byte moved in
//! either direction, no write waiting on the client. Then it is shut down
//! gracefully with the socket's own shutdown turned into a no-op, and
//! `into_parts` gives back the socket (hyper's buffers are freed); the socket goes
//! to the
//! [`Parker`]. When the client speaks again, the parker spawns a fresh
//! [`serve`]. A new connection that sends nothing for [`PARK_AFTER`] is parked the
//! same way before any buffer is made for it.
//!
//! (`poll_without_shutdown` would do the same without the no-op, but requires an
//! `Unpin` service future: a heap allocation per request.) As the connection is
//! not run `with_upgrades`, hyper does not complete upgrades itself: a `101 Switching Protocols` ends its dispatch and hands the
//! socket (with any bytes already read) back here, and this module passes it to
//! the request's [`ClientUpgrade`], which `forward` splices to the upstream.
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::{handle, Listener, Logged, Proxy};
use crate::park::{lock, Parker, Resume};

/// How long an HTTP/1.1 connection stays idle in the runtime before it is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Who a connection is: kept with it while parked.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub peer: SocketAddr,
    pub listener: Listener,
}

/// Everything the connections of one proxy process share.
pub struct Server {
    pub proxy: Arc<Proxy>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    parker: Option<Arc<Parker<Meta>>>,
    /// Cancelled at shutdown: connections finish their request and close.
    pub shutdown: CancellationToken,
    /// The tasks serving connections (the drain waits for them).
    pub tracker: TaskTracker,
    runtime: tokio::runtime::Handle,
}

impl Server {
    /// `idle`: how long a connection may wait for its next request in all.
    pub fn new(proxy: Arc<Proxy>, idle: Duration) -> Arc<Server> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(idle)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(idle / 2))
            .max_concurrent_streams(256);
        Arc::new_cyclic(|server: &std::sync::Weak<Server>| {
            let parker = Parker::start(
                idle,
                Wake {
                    server: server.clone(),
                },
            )
            .map_err(|error| tracing::warn!("idle connections will not be parked: {error}"))
            .ok();
            Server {
                proxy,
                h1,
                h2,
                parker,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
            }
        })
    }

    /// Serves a connection just accepted.
    pub fn accepted(self: &Arc<Self>, stream: TcpStream, meta: Meta) {
        self.proxy.connections.fetch_add(1, Ordering::Relaxed);
        self.tracker
            .spawn(serve(self.clone(), stream, meta, Vec::new(), true));
    }

    /// Connections parked now.
    pub fn parked(&self) -> usize {
        self.parker.as_ref().map_or(0, |parker| parker.parked())
    }

    /// Stops accepting parks and closes the parked connections (they are idle).
    pub fn stop_parking(&self) {
        if let Some(parker) = &self.parker {
            parker.stop();
        }
    }

    fn closed(&self) {
        self.proxy.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn park(&self, stream: TcpStream, meta: Meta) {
        let Some(parker) = self
            .parker
            .as_ref()
            .filter(|_| !self.shutdown.is_cancelled())
        else {
            return self.closed();
        };
        match stream.into_std() {
            Ok(stream) => parker.park(stream, meta),
            Err(error) => {
                tracing::debug!(peer = %meta.peer, "cannot park: {error}");
                self.closed();
            }
        }
    }
}

/// The parker's way back into the runtime.
struct Wake {
    server: std::sync::Weak<Server>,
}

impl Resume<Meta> for Wake {
    fn wake(&self, stream: std::net::TcpStream, meta: Meta) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let runtime = server.runtime.clone();
        let tracker = server.tracker.clone();
        runtime.spawn(tracker.track_future(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(server, stream, meta, Vec::new(), false).await,
                Err(error) => {
                    tracing::debug!(peer = %meta.peer, "cannot resume a parked connection: {error}");
                    server.closed();
                }
            }
        }));
    }

    fn closed(&self, _meta: Meta) {
        if let Some(server) = self.server.upgrade() {
            server.closed();
        }
    }
}

enum Outcome {
    Closed,
    Park(TcpStream),
}

async fn serve(server: Arc<Server>, stream: TcpStream, meta: Meta, prefix: Vec<u8>, fresh: bool) {
    match serve_until_idle(&server, stream, meta, prefix, fresh).await {
        Outcome::Park(stream) => server.park(stream, meta),
        Outcome::Closed => server.closed(),
    }
}

async fn serve_until_idle(
    server: &Arc<Server>,
    stream: TcpStream,
    meta: Meta,
    mut prefix: Vec<u8>,
    fresh: bool,
) -> Outcome {
    // Wait for the first bytes with no buffer made; park when none come soon.
    // (A peek, not `readable()`: that may report a fresh socket ready at once.)
    let can_park = server.parker.is_some();
    let mut first = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        peeked = stream.peek(&mut first) => peeked,
        () = tokio::time::sleep(PARK_AFTER), if can_park => return Outcome::Park(stream),
        () = server.shutdown.cancelled() => return Outcome::Closed,
    };
    match peeked {
        Ok(0) | Err(_) => return Outcome::Closed,
        Ok(read)
            if fresh && first[..read] == H2_PREFACE[..read] && is_h2_preface(&stream).await =>
        {
            serve_h2(server, stream, meta).await;
            return Outcome::Closed;
        }
        Ok(_) => {}
    }
    let mut stream = stream;
    loop {
        match serve_h1(server, stream, meta, prefix).await {
            H1::Closed => return Outcome::Closed,
            H1::Park(idle) => return Outcome::Park(idle),
            // hyper stopped inside a request head that has been still for a
            // while: go on with what it had read, and do not park until the
            // request comes (the header timeout keeps running in the new one).
            H1::PartialHead(again, read) => {
                stream = again;
                prefix = read;
            }
        }
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with the HTTP/2 preface (prior knowledge), peeked
/// without consuming it.
async fn is_h2_preface(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 24];
    for _ in 0..100 {
        let Ok(read) = stream.peek(&mut buffer).await else {
            return false;
        };
        if read == 0 || buffer[..read] != H2_PREFACE[..read] {
            return false;
        }
        if read == H2_PREFACE.len() {
            return true;
        }
        // A client that sent only the start of the preface so far.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn serve_h2(server: &Arc<Server>, stream: TcpStream, meta: Meta) {
    let proxy = server.proxy.clone();
    let service =
        service_fn(move |request| handle(proxy.clone(), meta.listener, meta.peer, request));
    let connection = server.h2.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = server.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::trace!(peer = %meta.peer, "h2 connection ended: {error}");
    }
}

enum H1 {
    Closed,
    Park(TcpStream),
    PartialHead(TcpStream, Vec<u8>),
}

/// What the connection's parts tell the loop that watches it.
#[derive(Default)]
struct ConnState {
    /// Reads and writes that moved bytes.
    activity: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// The last write could not complete (the client is not reading).
    write_blocked: AtomicBool,
    /// No parking until the next request (hyper was stopped mid-head once).
    hold: AtomicBool,
    /// Being parked: hyper's shutdown of the socket must not reach it.
    parking: AtomicBool,
    /// The upgrade request waiting for the socket, and whether it got a 101.
    upgrade: Mutex<Option<oneshot::Sender<Upgraded>>>,
    upgraded: AtomicBool,
}

async fn serve_h1(server: &Arc<Server>, stream: TcpStream, meta: Meta, prefix: Vec<u8>) -> H1 {
    let state = Arc::new(ConnState {
        hold: AtomicBool::new(!prefix.is_empty()),
        ..ConnState::default()
    });
    let io = Watched {
        inner: Rewind::new(prefix, stream),
        state: state.clone(),
    };
    let service = {
        let proxy = server.proxy.clone();
        let state = state.clone();
        service_fn(move |request| dispatch(proxy.clone(), meta, state.clone(), request))
    };
    let mut connection = server.h1.serve_connection(TokioIo::new(io), service);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PARK_AFTER, PARK_AFTER);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = state.activity.load(Ordering::Relaxed);
    // Without a parker (it could not start), connections stay in the runtime.
    let can_park = server.parker.is_some();
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = &mut connection => break result,
            () = server.shutdown.cancelled(), if !closing => {
                closing = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
            _ = tick.tick(), if can_park && !closing && !state.parking.load(Ordering::Relaxed) => {
                let now = state.activity.load(Ordering::Relaxed);
                if now == seen
                    && state.in_flight.load(Ordering::Relaxed) == 0
                    && !state.write_blocked.load(Ordering::Relaxed)
                    && !state.hold.load(Ordering::Relaxed)
                {
                    state.parking.store(true, Ordering::Relaxed);
                    Pin::new(&mut connection).graceful_shutdown();
                }
                seen = now;
            }
        }
    };
    if let Err(error) = result {
        tracing::trace!(peer = %meta.peer, "connection ended: {error}");
        return H1::Closed;
    }
    let parts = connection.into_parts();
    let mut stream = parts.io.into_inner().inner;
    if state.upgraded.load(Ordering::Relaxed) {
        let sender = lock(&state.upgrade).take();
        if let Some(sender) = sender {
            stream.push_front(parts.read_buf);
            let _ = sender.send(Upgraded(stream));
        }
        return H1::Closed;
    }
    if state.parking.load(Ordering::Relaxed) && !closing {
        // Whatever hyper read and had not used yet stays with the connection.
        let read = stream.take_prefix(parts.read_buf);
        return match (stream.into_stream(), read.is_empty()) {
            (Some(stream), true) => H1::Park(stream),
            (Some(stream), false) => H1::PartialHead(stream, read),
            (None, _) => H1::Closed,
        };
    }
    // hyper is done with it (the client closed, or the exchange said close) and
    // has shut the socket down.
    H1::Closed
}

/// The service hyper calls: counts the request in flight until its response body
/// is dropped, and arranges the socket for an upgrade.
fn dispatch(
    proxy: Arc<Proxy>,
    meta: Meta,
    state: Arc<ConnState>,
    mut request: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<Tracked>, std::convert::Infallible>> {
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    state.hold.store(false, Ordering::Relaxed);
    if request.headers().contains_key(header::UPGRADE) {
        let (sender, receiver) = oneshot::channel();
        *lock(&state.upgrade) = Some(sender);
        request
            .extensions_mut()
            .insert(SocketUpgrade(Arc::new(Mutex::new(Some(receiver)))));
    }
    async move {
        let response = handle(proxy, meta.listener, meta.peer, request).await?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            state.upgraded.store(true, Ordering::Relaxed);
        } else {
            // Not upgraded: the connection goes on as HTTP.
            lock(&state.upgrade).take();
        }
        Ok(response.map(|body| Tracked { body, state }))
    }
}

/// A response body that tells the connection when it is finished with.
struct Tracked {
    body: Logged,
    state: Arc<ConnState>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How an upgraded client connection reaches `forward`: hyper's own upgrade on
/// connections hyper completes (HTTP/2 has none), or the socket handed back here.
pub enum ClientUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    Socket(oneshot::Receiver<Upgraded>),
}

/// The client's socket after a `101`, with the bytes it sent after its request.
pub struct Upgraded(Rewind);

/// The request extension that carries the way to the socket (extensions must be
/// `Clone`; the receiver is taken out once).
#[derive(Clone)]
struct SocketUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// Either kind of upgraded client stream.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradedIo for T {}

impl ClientUpgrade {
    /// Takes the request's upgrade (ours if this module served it, else hyper's).
    pub fn take(request: &mut Request<Incoming>) -> ClientUpgrade {
        let socket = request
            .extensions_mut()
            .remove::<SocketUpgrade>()
            .and_then(|SocketUpgrade(slot)| lock(&slot).take());
        match socket {
            Some(receiver) => ClientUpgrade::Socket(receiver),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(request)),
        }
    }

    /// The upgraded stream, once the `101` has been written to the client.
    pub async fn wait(self) -> Result<Box<dyn UpgradedIo>, String> {
        match self {
            ClientUpgrade::Hyper(upgrade) => upgrade
                .await
                .map(|upgraded| Box::new(TokioIo::new(upgraded)) as Box<dyn UpgradedIo>)
                .map_err(|error| error.to_string()),
            ClientUpgrade::Socket(receiver) => receiver
                .await
                .map(|Upgraded(stream)| Box::new(stream) as Box<dyn UpgradedIo>)
                .map_err(|_| "the client connection ended before the upgrade".to_owned()),
        }
    }
}

/// A socket with bytes to hand out before its own (what hyper had read ahead).
pub struct Rewind {
    prefix: Bytes,
    stream: Option<TcpStream>,
}

impl Rewind {
    fn new(prefix: Vec<u8>, stream: TcpStream) -> Rewind {
        Rewind {
            prefix: Bytes::from(prefix),
            stream: Some(stream),
        }
    }

    fn push_front(&mut self, read: Bytes) {
        if !read.is_empty() {
            let mut joined = Vec::with_capacity(read.len() + self.prefix.len());
            joined.extend_from_slice(&read);
            joined.extend_from_slice(&self.prefix);
            self.prefix = Bytes::from(joined);
        }
    }

    /// The unread bytes, copied out of hyper's buffer so that it can be freed.
    fn take_prefix(&mut self, read: Bytes) -> Vec<u8> {
        self.push_front(read);
        std::mem::take(&mut self.prefix).to_vec()
    }

    fn into_stream(self) -> Option<TcpStream> {
        self.stream
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

/// The connection's socket as hyper sees it, counting what moves.
struct Watched {
    inner: Rewind,
    state: Arc<ConnState>,
}

impl Watched {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.state.activity.fetch_add(1, Ordering::Relaxed);
                self.state.write_blocked.store(false, Ordering::Relaxed);
            }
            Poll::Pending => self.state.write_blocked.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.parking.load(Ordering::Relaxed) {
            // The socket goes on to the parker, open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

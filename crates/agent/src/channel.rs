//! The agent's side of the channel (`nanoscale_core::channel`): one upgraded
//! connection that brings the node's document the moment it changes and log
//! requests, and takes reports and log answers up. [`crate::protocol`] sends over
//! it while it is up and falls back to the long-poll routes while it is down.
//!
//! The framing helpers ([`read_frame`], [`write_frame`]) are the control plane's
//! too.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use nanoscale_core::agent::{LogRequest, ReportAck};
use nanoscale_core::channel::{
    encode, ToAgent, ToControlPlane, DEAD_AFTER_SECS, MAX_TO_AGENT, PATH, PING_AFTER_SECS, PROTOCOL,
};
use nanoscale_core::desired::DesiredDocument;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::protocol::{Credential, ProtocolError};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is over the limit of {1}")]
    TooLarge(u32, u32),
    #[error("the connection ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The most a frame's body takes before its bytes arrive.
const FIRST_READ: usize = 16 * 1024;

/// Reads one frame's bytes: `None` when the peer closed between frames. Takes
/// and gives back the reader, so that the read can wait in a boxed future beside
/// other work without being cancelled halfway through a frame. Nothing is
/// buffered between frames: the length goes on the stack, the body into a
/// vector that grows with what arrives and is trimmed to its size.
pub async fn read_frame<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: u32,
) -> (R, Result<Option<Vec<u8>>, FrameError>) {
    let result = async {
        let mut length = [0u8; 4];
        let mut filled = 0;
        while filled < 4 {
            match reader.read(&mut length[filled..]).await? {
                0 if filled == 0 => return Ok(None),
                0 => return Err(FrameError::Truncated),
                n => filled += n,
            }
        }
        let length = u32::from_be_bytes(length);
        if length > limit {
            return Err(FrameError::TooLarge(length, limit));
        }
        // Grown as the bytes come, not sized by the length a peer announced.
        let mut body = Vec::with_capacity((length as usize).min(FIRST_READ));
        (&mut reader)
            .take(u64::from(length))
            .read_to_end(&mut body)
            .await?;
        if body.len() < length as usize {
            return Err(FrameError::Truncated);
        }
        body.shrink_to_fit();
        Ok(Some(body))
    }
    .await;
    (reader, result)
}

/// Writes one encoded frame (`nanoscale_core::channel::encode`) and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

/// How long a frame may take to leave, and the upgrade to be answered.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a report waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After the control plane answered the upgrade with something other than 101
/// (an older control plane, a proxy that drops `Upgrade`), the long-poll carries
/// everything; the upgrade is tried again this much later.
const RETRY_UNSUPPORTED: Duration = Duration::from_secs(60);
/// Channels in a row that may close before bringing their first document (sent
/// at once by the control plane) before the long-poll takes the work over.
const EMPTY_CHANNELS: u32 = 3;
/// How long the channel may fail to open (a control plane restarting, a link
/// down) before the long-poll carries the work meanwhile.
const FALLBACK_AFTER: Duration = Duration::from_secs(30);

type Waiting = oneshot::Sender<Result<ReportAck, ProtocolError>>;

/// The channel's state, shared by the task that holds it and the callers of
/// [`crate::protocol::ControlPlane`].
pub struct Channel {
    up: watch::Sender<bool>,
    /// Whether the first attempt to open the channel has ended (either way).
    tried: watch::Sender<bool>,
    /// Whether the long-poll routes carry the work: the channel is off, or the
    /// control plane answered the upgrade with something other than 101, or
    /// channels opened but carried nothing (a proxy that buffers). Cleared when
    /// a channel brings its first document.
    polling: watch::Sender<bool>,
    /// The newest document of the current connection (none until it sent one).
    document: watch::Sender<Option<Arc<DesiredDocument>>>,
    outgoing: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    waiting: Mutex<HashMap<u64, Waiting>>,
    seq: AtomicU64,
    log_requests: Mutex<Vec<LogRequest>>,
    follows: Mutex<Vec<Follow>>,
    /// Counts the connections made: a follow belongs to one.
    connection: AtomicU64,
    logs_waiting: Arc<Notify>,
    /// Set when the node's certificate was renewed: the channel reconnects with
    /// the new one.
    reconnect: watch::Sender<u64>,
}

/// What the control plane asked about followed log sources.
#[derive(Debug)]
pub enum Follow {
    /// Send these sources' new lines, as `LogLines` naming `id`, on the
    /// connection `connection` only.
    Start {
        id: uuid::Uuid,
        request: LogRequest,
        connection: u64,
    },
    Stop {
        id: uuid::Uuid,
    },
}

/// How one connection ended.
enum End {
    Unauthorized,
    Lost(String),
}

impl Channel {
    pub fn new(logs_waiting: Arc<Notify>) -> Channel {
        Channel {
            up: watch::Sender::new(false),
            tried: watch::Sender::new(false),
            polling: watch::Sender::new(false),
            document: watch::Sender::new(None),
            outgoing: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            log_requests: Mutex::new(Vec::new()),
            follows: Mutex::new(Vec::new()),
            connection: AtomicU64::new(0),
            logs_waiting,
            reconnect: watch::Sender::new(0),
        }
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Resolves once the first attempt to open the channel has ended, so that an
    /// agent that just started does not open a long-poll connection it would
    /// drop a moment later. Bounded (once per channel): if nothing holds the
    /// channel, the long-poll carries the work from then on.
    pub async fn first_attempt(&self) {
        let mut tried = self.tried.subscribe();
        let limit = IO_TIMEOUT + Duration::from_secs(1);
        if tokio::time::timeout(limit, tried.wait_for(|tried| *tried))
            .await
            .is_err()
        {
            self.never();
        }
    }

    /// Marks the channel as never to be held: the long-poll carries the work.
    pub fn never(&self) {
        self.polling.send_replace(true);
        self.tried.send_replace(true);
    }

    /// Whether the long-poll routes carry the work now (see `polling`).
    pub fn is_polling(&self) -> bool {
        *self.polling.borrow()
    }

    /// Whether the work goes over the channel: it is up, and the long-poll does
    /// not carry the work (in fallback, a channel is trusted once it brings a
    /// document).
    pub fn is_usable(&self) -> bool {
        self.is_up() && !self.is_polling()
    }

    /// Resolves when the channel becomes usable.
    pub async fn until_usable(&self) {
        let mut up = self.up.subscribe();
        let mut polling = self.polling.subscribe();
        loop {
            if *up.borrow_and_update() && !*polling.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = up.changed() => {}
                _ = polling.changed() => {}
            }
        }
    }

    /// Resolves when the channel comes up or the long-poll takes the work over.
    pub async fn until_up_or_polling(&self) {
        let mut up = self.up.subscribe();
        let mut polling = self.polling.subscribe();
        tokio::select! {
            _ = up.wait_for(|up| *up) => {}
            _ = polling.wait_for(|polling| *polling) => {}
        }
    }

    /// The node's document once its version passes `after`, while the channel
    /// is up; `Ok(None)` when the channel went down first, or when `wait` passed
    /// with no document at all.
    pub async fn document(
        &self,
        after: Option<i64>,
        wait: Duration,
    ) -> Option<Arc<DesiredDocument>> {
        let deadline = Instant::now() + wait;
        let mut documents = self.document.subscribe();
        let mut up = self.up.subscribe();
        loop {
            if !*up.borrow_and_update() {
                return None;
            }
            let current = documents.borrow_and_update().clone();
            if let Some(document) = &current {
                if after.is_none_or(|known| document.version > known) {
                    return current;
                }
            }
            tokio::select! {
                _ = documents.changed() => {}
                _ = up.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return current,
            }
        }
    }

    /// Sends a report and waits for its acknowledgement; `None` when the channel
    /// is down (the caller posts it instead).
    pub async fn report(
        &self,
        report: &nanoscale_core::agent::AgentReport,
    ) -> Option<Result<ReportAck, ProtocolError>> {
        if !self.is_usable() {
            return None;
        }
        let sender = self.outgoing.lock().ok()?.clone()?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(seq, answer);
        }
        let frame = encode(&ToControlPlane::Report {
            seq,
            report: Box::new(report.clone()),
        });
        if sender.send(frame).await.is_err() {
            self.forget(seq);
            return None;
        }
        let result = match tokio::time::timeout(ACK_TIMEOUT, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProtocolError::Channel(
                "the channel closed before the report was acknowledged".into(),
            )),
            Err(_) => Err(ProtocolError::Channel(format!(
                "no acknowledgement within {} s",
                ACK_TIMEOUT.as_secs()
            ))),
        };
        self.forget(seq);
        Some(result)
    }

    fn forget(&self, seq: u64) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&seq);
        }
    }

    /// Sends a frame if the channel is usable; false when it is not.
    pub async fn send(&self, message: &ToControlPlane) -> bool {
        if !self.is_usable() {
            return false;
        }
        let sender = self.outgoing.lock().ok().and_then(|s| s.clone());
        match sender {
            Some(sender) => sender.send(encode(message)).await.is_ok(),
            None => false,
        }
    }

    /// The log requests the channel brought, taken.
    pub fn take_log_requests(&self) -> Vec<LogRequest> {
        self.log_requests
            .lock()
            .map(|mut requests| std::mem::take(&mut *requests))
            .unwrap_or_default()
    }

    /// What the control plane asked about followed log sources, taken.
    pub fn take_follows(&self) -> Vec<Follow> {
        self.follows
            .lock()
            .map(|mut follows| std::mem::take(&mut *follows))
            .unwrap_or_default()
    }

    /// Whether connection `connection` is the one up now (a follow ends with
    /// the connection it was asked on: the control plane forgets it then).
    pub fn is_current(&self, connection: u64) -> bool {
        self.is_up() && self.connection.load(Ordering::SeqCst) == connection
    }

    /// Drops the current connection and opens a new one at once.
    pub fn reconnect(&self) {
        self.reconnect.send_modify(|generation| *generation += 1);
    }

    /// Holds the channel until the control plane refuses the node's credential
    /// (the only way this returns): reconnects with capped, jittered backoff
    /// after a lost link, and leaves the work to the long-poll for a minute
    /// after an answer other than `101`. `connected` is notified each time the
    /// channel comes up.
    pub async fn hold(&self, base: &str, credential: &Credential, connected: &Notify) {
        let mut failures = 0u32;
        // Channels in a row that closed without bringing a single document.
        let mut empty = 0u32;
        let mut down_since = Instant::now();
        loop {
            let attempt = connect(base, credential).await;
            if attempt.is_err() {
                self.tried.send_replace(true);
            }
            match attempt {
                Ok(io) => {
                    failures = 0;
                    tracing::info!("channel to the control plane open");
                    let end = self.run(io, connected).await;
                    down_since = Instant::now();
                    if self.document.borrow().is_some() {
                        empty = 0;
                    } else {
                        empty += 1;
                    }
                    match end {
                        End::Unauthorized => return,
                        End::Lost(why) => {
                            tracing::info!(%why, "the channel to the control plane closed; reconnecting");
                        }
                    }
                    if empty >= EMPTY_CHANNELS {
                        tracing::warn!(
                            "{empty} channels in a row carried nothing; using the long-poll"
                        );
                        self.polling.send_replace(true);
                        tokio::time::sleep(RETRY_UNSUPPORTED).await;
                        // From now on a single empty channel sends it back.
                        empty = EMPTY_CHANNELS - 1;
                    }
                }
                Err(Refusal::Unauthorized) => return,
                Err(Refusal::Unsupported(status)) => {
                    tracing::warn!(
                        status,
                        "the control plane did not open the channel; using the long-poll"
                    );
                    self.polling.send_replace(true);
                    tokio::time::sleep(RETRY_UNSUPPORTED).await;
                    continue;
                }
                Err(Refusal::Transport(error)) => {
                    tracing::debug!(%error, "opening the channel");
                    if down_since.elapsed() >= FALLBACK_AFTER && !self.is_polling() {
                        // Not a restart: a front that answers the upgrade
                        // with 502, refuses HTTP/1.1, or holds it. The
                        // long-poll may pass where the channel does not.
                        tracing::warn!(%error, "no channel for {} s; using the long-poll", FALLBACK_AFTER.as_secs());
                        self.polling.send_replace(true);
                    }
                    crate::agent::backoff(&mut failures).await;
                }
            }
        }
    }

    async fn run(&self, io: hyper::upgrade::Upgraded, connected: &Notify) -> End {
        let (reader, mut writer) = tokio::io::split(TokioIo::new(io));
        let (sender, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
        self.connection.fetch_add(1, Ordering::SeqCst);
        self.document.send_replace(None);
        if let Ok(mut slot) = self.outgoing.lock() {
            *slot = Some(sender);
        }
        self.up.send_replace(true);
        self.tried.send_replace(true);
        connected.notify_one();
        let end = self.exchange(reader, &mut writer, &mut outgoing).await;
        self.up.send_replace(false);
        if let Ok(mut slot) = self.outgoing.lock() {
            *slot = None;
        }
        // Reports in flight learn that they must be sent again.
        let lost: Vec<Waiting> = self
            .waiting
            .lock()
            .map(|mut waiting| waiting.drain().map(|(_, w)| w).collect())
            .unwrap_or_default();
        for waiting in lost {
            let _ = waiting.send(Err(match &end {
                End::Unauthorized => ProtocolError::Unauthorized,
                End::Lost(why) => ProtocolError::Channel(why.clone()),
            }));
        }
        let _ = tokio::time::timeout(IO_TIMEOUT, writer.shutdown()).await;
        end
    }

    async fn exchange<R, W>(
        &self,
        reader: R,
        writer: &mut W,
        outgoing: &mut mpsc::Receiver<Vec<u8>>,
    ) -> End
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let mut next = Box::pin(read_frame(reader, MAX_TO_AGENT));
        let mut heard = Instant::now();
        let mut said = Instant::now();
        // Whether a ping went since the control plane was last heard.
        let mut pinged = false;
        // A renewal made before this connection does not end it.
        let mut renewed = self.reconnect.subscribe();
        renewed.borrow_and_update();
        let every = Duration::from_secs(PING_AFTER_SECS);
        loop {
            // A ping when nothing was heard for 10 s (the link is checked), and
            // when nothing was said for 10 s (the control plane, which closes a
            // silent channel, keeps hearing from this one).
            let ping_at = if pinged {
                said + every
            } else {
                heard.min(said) + every
            };
            let dead_at = heard + Duration::from_secs(DEAD_AFTER_SECS);
            tokio::select! {
                (reader, frame) = &mut next => {
                    let bytes = match frame {
                        Ok(Some(bytes)) => bytes,
                        Ok(None) => return End::Lost("the control plane closed it".into()),
                        Err(error) => return End::Lost(error.to_string()),
                    };
                    heard = Instant::now();
                    pinged = false;
                    next = Box::pin(read_frame(reader, MAX_TO_AGENT));
                    match serde_json::from_slice::<ToAgent>(&bytes) {
                        Ok(message) => {
                            if let Some(end) = self.receive(message) {
                                return end;
                            }
                        }
                        Err(error) => {
                            return End::Lost(format!("an unreadable message: {error}"));
                        }
                    }
                }
                Some(frame) = outgoing.recv() => {
                    match tokio::time::timeout(IO_TIMEOUT, write_frame(writer, &frame)).await {
                        Ok(Ok(())) => said = Instant::now(),
                        Ok(Err(error)) => return End::Lost(error.to_string()),
                        Err(_) => return End::Lost("a write stalled".into()),
                    }
                }
                _ = tokio::time::sleep_until(ping_at) => {
                    pinged = true;
                    said = Instant::now();
                    let ping = encode(&ToControlPlane::Ping);
                    if let Ok(Err(error)) | Err(error) = tokio::time::timeout(IO_TIMEOUT, write_frame(writer, &ping))
                        .await
                        .map_err(|_| std::io::Error::other("a ping stalled"))
                    {
                        return End::Lost(error.to_string());
                    }
                }
                _ = tokio::time::sleep_until(dead_at) => {
                    return End::Lost(format!("nothing heard for {DEAD_AFTER_SECS} s"));
                }
                _ = renewed.changed() => {
                    return End::Lost("the node's certificate was renewed".into());
                }
            }
        }
    }

    /// Takes in one message; `Some` ends the connection.
    fn receive(&self, message: ToAgent) -> Option<End> {
        match message {
            ToAgent::Document { document } => {
                if let Err(why) = document.check_hash() {
                    return Some(End::Lost(format!("a document whose {why}")));
                }
                self.document.send_replace(Some(document));
                self.polling.send_replace(false);
            }
            ToAgent::LogRequests { requests } => {
                if let Ok(mut queue) = self.log_requests.lock() {
                    queue.extend(requests);
                }
                self.logs_waiting.notify_one();
            }
            ToAgent::LogFollow { id, request } => {
                let connection = self.connection.load(Ordering::SeqCst);
                if let Ok(mut follows) = self.follows.lock() {
                    follows.push(Follow::Start {
                        id,
                        request,
                        connection,
                    });
                }
                self.logs_waiting.notify_one();
            }
            ToAgent::LogUnfollow { id } => {
                if let Ok(mut follows) = self.follows.lock() {
                    follows.push(Follow::Stop { id });
                }
                self.logs_waiting.notify_one();
            }
            ToAgent::Ack { seq, ack } => self.answer(seq, Ok(ack)),
            ToAgent::Refused { status: 401, .. } => return Some(End::Unauthorized),
            ToAgent::Refused { seq, status, error } => {
                let body = match &error.field {
                    Some(field) => format!("{field}: {}", error.message),
                    None => error.message.clone(),
                };
                match seq {
                    Some(seq) => self.answer(seq, Err(ProtocolError::Status { status, body })),
                    None => tracing::warn!(status, %body, "the control plane refused a message"),
                }
            }
            ToAgent::Pong => {}
        }
        None
    }

    fn answer(&self, seq: u64, result: Result<ReportAck, ProtocolError>) {
        let waiting = self.waiting.lock().ok().and_then(|mut w| w.remove(&seq));
        if let Some(waiting) = waiting {
            let _ = waiting.send(result);
        }
    }
}

/// Why the upgrade did not give a channel.
enum Refusal {
    Unauthorized,
    /// Answered with this status instead of 101.
    Unsupported(u16),
    Transport(String),
}

/// Opens a bare channel, for tests that speak the frames themselves.
pub async fn open(base: &str, credential: &Credential) -> Result<hyper::upgrade::Upgraded, String> {
    connect(base, credential)
        .await
        .map_err(|refusal| match refusal {
            Refusal::Unauthorized => "401".to_owned(),
            Refusal::Unsupported(status) => status.to_string(),
            Refusal::Transport(error) => error,
        })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Dials the control plane and asks for the upgrade.
async fn connect(base: &str, credential: &Credential) -> Result<hyper::upgrade::Upgraded, Refusal> {
    let transport = |e: &dyn std::fmt::Display| Refusal::Transport(e.to_string());
    let url = reqwest::Url::parse(base).map_err(|e| transport(&e))?;
    let host = url
        .host_str()
        .ok_or_else(|| Refusal::Transport(format!("{base} names no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Refusal::Transport(format!("{base} names no port")))?;
    if matches!(credential, Credential::Bearer(_)) && url.scheme() != "http" {
        // The loopback credential goes over plain HTTP only; anything else
        // is the HTTP client's, which speaks TLS (the long-poll).
        return Err(Refusal::Unsupported(0));
    }
    let path = format!("{}{PATH}", url.path().trim_end_matches('/'));
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    // An IPv6 literal comes bracketed; the name checked in TLS is the address.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let dial = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| transport(&e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match credential {
            Credential::Bearer(_) => Box::new(tcp),
            Credential::Certificate(dir) => {
                let mut tls = crate::cluster::client_config(dir).map_err(Refusal::Transport)?;
                // The upgrade is an HTTP/1.1 request.
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| transport(&e))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| transport(&e))?,
                )
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| transport(&e))?;
        tokio::spawn(connection.with_upgrades());
        let mut request = http::Request::get(path.as_str())
            .header(http::header::HOST, authority)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, PROTOCOL);
        if let Credential::Bearer(token) = credential {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(String::new()).map_err(|e| transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        match response.status().as_u16() {
            101 => hyper::upgrade::on(response)
                .await
                .map_err(|e| transport(&e)),
            401 => Err(Refusal::Unauthorized),
            status @ (502..=504) => Err(Refusal::Transport(format!("answered {status}"))),
            status => Err(Refusal::Unsupported(status)),
        }
    };
    tokio::time::timeout(IO_TIMEOUT, dial)
        .await
        .unwrap_or_else(|_| Err(Refusal::Transport("no answer within 10 s".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_whole_and_bad_ones_are_named() {
        let (mut near, far) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write_frame(&mut near, &encode(&ToControlPlane::Ping))
                .await
                .unwrap();
            // A frame of 1 MiB + 1 against a limit of 1 MiB.
            near.write_all(&(1_048_577u32).to_be_bytes()).await.unwrap();
            near
        });
        let (far, first) = read_frame(far, 1 << 20).await;
        assert_eq!(first.unwrap().unwrap(), br#"{"type":"ping"}"#);
        let (far, second) = read_frame(far, 1 << 20).await;
        assert!(matches!(
            second,
            Err(FrameError::TooLarge(1_048_577, 1_048_576))
        ));
        let mut near = writer.await.unwrap();
        drop(far);
        // A peer that closes between frames is a clean end; inside one, an error.
        let (mut near2, far2) = tokio::io::duplex(64);
        near2.write_all(&[0, 0, 0, 9, b'{']).await.unwrap();
        drop(near2);
        let (_, cut) = read_frame(far2, 1 << 20).await;
        assert!(matches!(cut, Err(FrameError::Truncated)));
        let (near3, far3) = tokio::io::duplex(64);
        drop(near3);
        let (_, clean) = read_frame(far3, 1 << 20).await;
        assert!(matches!(clean, Ok(None)));
        let _ = near.shutdown().await;
    }
}

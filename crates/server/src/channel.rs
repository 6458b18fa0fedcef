//! The control plane's side of an agent's channel (`nanoscale_core::channel`),
//! after `GET /api/v1/agent/channel` switched protocols: one task per agent that
//! pushes the node's document whenever its version moves, the log requests
//! users make and the follows their log streams start and stop, and takes
//! reports (checked and stored as the report route does), log answers and
//! followed lines.
//!
//! The task waits with no buffer of its own: the next frame's read is a boxed
//! future that holds only the reader, and each frame is read into a vector of
//! its size and dropped once handled.
use std::time::Duration;

use nanoscale_agent::channel::{read_frame, write_frame, FrameError};
use nanoscale_core::api::ErrorDetail;
use nanoscale_core::channel::{
    encode, ToAgent, ToControlPlane, MAX_FOLLOW_LINES, MAX_TO_CONTROL_PLANE, SERVER_IDLE_SECS,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::agent::{accept_report, check_log_answer, NodeAuth};
use crate::api::error::ApiError;
use crate::log_broker::{ChannelLease, FollowCommand};
use crate::state::AppState;

/// How long one frame may take to leave: an agent that stops reading loses its
/// channel, not the control plane's memory.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a channel goes without its credential being checked again (it is
/// also checked at every report).
const RECHECK: Duration = Duration::from_secs(30);
/// How old a check may be when a document is sent.
const FRESH: Duration = Duration::from_secs(12);

/// The node's channel as counted: in the broker (one per node) and in
/// `/metrics`, undone when the task ends, even by a panic.
struct Open<'a> {
    state: &'a AppState,
    lease: ChannelLease,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.state.logs.channel_closed(&self.lease);
        metrics::gauge!(crate::metrics::AGENT_CHANNELS).decrement(1);
    }
}

/// Serves `node`'s channel on `io` until the agent closes it, goes silent for
/// `SERVER_IDLE_SECS`, a newer channel of the node replaces it, or the node's
/// credential stops naming it (removed node, replaced credential or
/// certificate: the agent is told 401).
pub async fn serve<T>(state: AppState, auth: NodeAuth, node: Uuid, io: T)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, mut writer) = tokio::io::split(io);
    metrics::gauge!(crate::metrics::AGENT_CHANNELS).increment(1);
    let open = Open {
        state: &state,
        lease: state.logs.channel_opened(node),
    };
    // Errors answered on the channel name it in their request id.
    let id = format!("channel-{}", Uuid::now_v7());
    crate::api::error::REQUEST_ID
        .scope(
            id,
            session(&state, &auth, node, &open.lease, reader, &mut writer),
        )
        .await;
    drop(open);
    // TLS ends with close_notify, so the agent tells a close from a cut link.
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
}

/// Whether the presented credential still names `node`; false once the agent
/// was told otherwise.
async fn still_node<W: AsyncWrite + Unpin>(
    state: &AppState,
    auth: &NodeAuth,
    node: Uuid,
    writer: &mut W,
) -> bool {
    match Box::pin(auth.node(&state.store)).await {
        Ok(Some(found)) if found.id == node => true,
        Ok(_) => {
            refuse(writer, None, &ApiError::Unauthorized).await;
            false
        }
        // A passing database error: checked again at the next occasion.
        Err(error) => {
            tracing::warn!(%error, %node, "channel: checking the node's credential");
            true
        }
    }
}

async fn session<R, W>(
    state: &AppState,
    auth: &NodeAuth,
    node: Uuid,
    lease: &ChannelLease,
    reader: R,
    writer: &mut W,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    // Subscribed before the first document is compiled, so that no change
    // between the two is missed.
    let mut changes = state.store.subscribe();
    let logs_ready = state.logs.ready(node);
    let mut next = Box::pin(read_frame(reader, MAX_TO_CONTROL_PLANE));
    let mut sent = None;
    let mut stale = true;
    let mut heard = Instant::now();
    let mut checked = Instant::now();
    loop {
        if stale {
            stale = false;
            // Boxed: the compile's state is needed only while it runs, not in
            // every waiting channel's task.
            match Box::pin(state.desired.document(&state.store, node)).await {
                Ok(Some(document)) => {
                    if sent != Some(document.version) {
                        // Documents carry secrets: only to a credential that
                        // still named the node a moment ago (an agent's
                        // reports, every 10 s, keep that fresh, so a burst of
                        // changes costs no lookups).
                        if checked.elapsed() > FRESH {
                            if !still_node(state, auth, node, writer).await {
                                return;
                            }
                            checked = Instant::now();
                        }
                        sent = Some(document.version);
                        if !send(writer, &ToAgent::Document { document }).await {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    refuse(writer, None, &ApiError::Unauthorized).await;
                    return;
                }
                Err(error) => {
                    // The agent reconnects (and falls back to the long-poll
                    // while it cannot).
                    tracing::warn!(%error, %node, "channel: compiling the node's document");
                    return;
                }
            }
        }
        tokio::select! {
            (reader, frame) = &mut next => {
                let bytes = match frame {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return,
                    Err(error @ FrameError::TooLarge(..)) => {
                        let refusal = ApiError::BadRequest {
                            message: error.to_string(),
                            field: None,
                        };
                        refuse(writer, None, &refusal).await;
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, %node, "channel ended");
                        return;
                    }
                };
                heard = Instant::now();
                next = Box::pin(read_frame(reader, MAX_TO_CONTROL_PLANE));
                if !receive(state, auth, node, &bytes, writer, &mut checked).await {
                    return;
                }
            }
            received = changes.recv() => {
                if let Err(RecvError::Closed) = received {
                    return;
                }
                stale = true;
            }
            () = logs_ready.notified() => {
                // Follows first: the agent places a follow's cursors before it
                // answers the request that fills in what came before them.
                for command in state.logs.take_commands(node) {
                    let message = match command {
                        FollowCommand::Start(id, request) => ToAgent::LogFollow { id, request },
                        FollowCommand::Stop(id) => ToAgent::LogUnfollow { id },
                    };
                    if !send(writer, &message).await {
                        return;
                    }
                }
                let requests = state.logs.collect(node, Duration::ZERO).await;
                if !requests.is_empty()
                    && !send(writer, &ToAgent::LogRequests { requests }).await
                {
                    return;
                }
            }
            () = lease.replaced.notified() => {
                tracing::debug!(%node, "a newer channel of the node replaced this one");
                return;
            }
            () = tokio::time::sleep_until(checked + RECHECK) => {
                if !still_node(state, auth, node, writer).await {
                    return;
                }
                checked = Instant::now();
            }
            () = tokio::time::sleep_until(heard + Duration::from_secs(SERVER_IDLE_SECS)) => {
                tracing::debug!(%node, "channel silent for {SERVER_IDLE_SECS} s; closing it");
                return;
            }
        }
    }
}

/// Handles one frame; false ends the channel.
/// `checked` is set when a report's credential check passes.
async fn receive<W: AsyncWrite + Unpin>(
    state: &AppState,
    auth: &NodeAuth,
    node: Uuid,
    bytes: &[u8],
    writer: &mut W,
    checked: &mut Instant,
) -> bool {
    let message = match serde_json::from_slice::<ToControlPlane>(bytes) {
        Ok(message) => message,
        Err(error) => {
            // Answered, so that a report waiting for its seq hears why.
            let seq = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|value| value.get("seq").and_then(serde_json::Value::as_u64));
            let refusal = ApiError::BadRequest {
                message: format!("unreadable message: {error}"),
                field: None,
            };
            return refuse(writer, seq, &refusal).await;
        }
    };
    match message {
        ToControlPlane::Ping => send(writer, &ToAgent::Pong).await,
        ToControlPlane::Report { seq, report } => {
            // The credential is checked at every report, as over HTTP: a removed
            // node or a replaced certificate stops here.
            let answer = match Box::pin(auth.node(&state.store)).await {
                Ok(Some(found)) if found.id == node => {
                    *checked = Instant::now();
                    Box::pin(accept_report(state, &found, *report)).await
                }
                Ok(_) => Err(ApiError::Unauthorized),
                Err(error) => Err(error.into()),
            };
            match answer {
                Ok(ack) => send(writer, &ToAgent::Ack { seq, ack }).await,
                Err(error) => refuse(writer, Some(seq), &error).await,
            }
        }
        ToControlPlane::LogAnswer { id, answer } => {
            if let Err(refusal) = check_log_answer(&answer, "answer.entries") {
                return refuse(writer, None, &refusal).await;
            }
            // A late answer (the user's request timed out) is dropped.
            state.logs.answer(node, id, answer.entries);
            true
        }
        ToControlPlane::LogLines { id, entries } => {
            if entries.len() > MAX_FOLLOW_LINES {
                let refusal = ApiError::BadRequest {
                    message: format!("at most {MAX_FOLLOW_LINES} lines"),
                    field: Some("entries".into()),
                };
                return refuse(writer, None, &refusal).await;
            }
            // Lines of a follow already stopped are dropped.
            state.logs.lines(node, id, entries);
            true
        }
    }
}

/// Tells the agent why a message was refused; false when the channel must end
/// (the refusal was a 401, or it could not be sent).
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, seq: Option<u64>, error: &ApiError) -> bool {
    let (status, error): (_, ErrorDetail) = error.detail();
    let status = status.as_u16();
    let sent = send(writer, &ToAgent::Refused { seq, status, error }).await;
    sent && status != 401
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, message: &ToAgent) -> bool {
    let frame = encode(message);
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, write_frame(writer, &frame)).await,
        Ok(Ok(()))
    )
}

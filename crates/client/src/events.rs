//! The event timeline: the list and the live Server-Sent Events stream.
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use nanoscale_core::api::{Event, EventFilter};
use reqwest::header::ACCEPT;
use reqwest::Method;

use crate::sse::{SseMessage, SseParser};
use crate::{Client, ClientError, Result};

const STREAM_PATH: &str = "/api/v1/events/stream";

/// Live events, as they happen. Yields `Err(ClientError::Lagged)` (not terminal)
/// when the client fell behind, and ends when the server closes the connection.
pub struct EventStream {
    inner: BoxStream<'static, Result<Event>>,
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

impl Client {
    /// Events, newest first, filtered (`kind` matches exactly, or as a prefix
    /// when it ends with `.`).
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.get_query("/api/v1/events", filter).await
    }

    /// Subscribes to live events matching `filter`. Returns once the server has
    /// confirmed the subscription (its `ready` message), so an event that happens
    /// after this returns is in the stream: list first and stream after, and you
    /// may see an event twice (dedupe by id) but never miss one.
    pub async fn stream_events(&self, filter: &EventFilter) -> Result<EventStream> {
        let builder = self
            .streaming_builder(Method::GET, STREAM_PATH)?
            .query(filter)
            .header(ACCEPT, "text/event-stream");
        let response = self.execute(builder).await?;
        let url = response.url().to_string();
        let mut frames = frames(response.bytes_stream().boxed(), url);
        loop {
            match frames.next().await {
                Some(Ok(Frame::Ready)) => break,
                // Nothing but `ready` comes first; anything else is skipped.
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ClientError::Decode {
                        what: format!("GET {STREAM_PATH}"),
                        reason: "the stream ended before it was ready".into(),
                    })
                }
            }
        }
        let inner = frames
            .filter_map(|frame| async move {
                match frame {
                    Ok(Frame::Ready) => None,
                    Ok(Frame::Event(event)) => Some(Ok(*event)),
                    Ok(Frame::Lagged(missed)) => Some(Err(ClientError::Lagged { missed })),
                    Err(error) => Some(Err(error)),
                }
            })
            .boxed();
        Ok(EventStream { inner })
    }
}

enum Frame {
    Ready,
    Event(Box<Event>),
    Lagged(u64),
}

type ByteStream = BoxStream<'static, reqwest::Result<bytes::Bytes>>;

struct FrameState {
    bytes: ByteStream,
    parser: SseParser,
    pending: VecDeque<Result<Frame>>,
    finished: bool,
    url: String,
}

/// Turns the response body into control and event frames; ends after the first
/// transport error.
fn frames(bytes: ByteStream, url: String) -> BoxStream<'static, Result<Frame>> {
    let state = FrameState {
        bytes,
        parser: SseParser::default(),
        pending: VecDeque::new(),
        finished: false,
        url,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(frame) = state.pending.pop_front() {
                return Some((frame, state));
            }
            if state.finished {
                return None;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => match state.parser.push(&chunk) {
                    Ok(messages) => state.pending.extend(messages.into_iter().filter_map(frame)),
                    Err(reason) => {
                        state.finished = true;
                        state.pending.push_back(Err(ClientError::Decode {
                            what: format!("GET {STREAM_PATH}"),
                            reason,
                        }));
                    }
                },
                Some(Err(source)) => {
                    state.finished = true;
                    state
                        .pending
                        .push_back(Err(ClientError::http(&state.url, source)));
                }
                None => state.finished = true,
            }
        }
    })
    .boxed()
}

/// One SSE message as a frame; unknown message types are skipped so a newer
/// server can add some.
fn frame(message: SseMessage) -> Option<Result<Frame>> {
    match message.event.as_str() {
        "ready" => Some(Ok(Frame::Ready)),
        "lagged" => Some(Ok(Frame::Lagged(message.data.trim().parse().unwrap_or(0)))),
        "event" => Some(
            serde_json::from_str::<Event>(&message.data)
                .map(|event| Frame::Event(Box::new(event)))
                .map_err(|error| ClientError::Decode {
                    what: format!("GET {STREAM_PATH}"),
                    reason: error.to_string(),
                }),
        ),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const EVENT: &str = r#"{"id":"0190a0b0-0000-7000-8000-000000000001","time":"2025-01-01T00:00:00Z","kind":"project.created","severity":"info","message":"project shop created by admin","project_id":null,"service_id":null,"release_id":null,"node_id":null,"actor_id":null}"#;

    /// Serves one canned HTTP answer and hands back the request it got.
    async fn serve_once(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let read = socket.read(&mut request).await.unwrap();
            socket.write_all(answer.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        (format!("http://{address}"), handle)
    }

    #[tokio::test]
    async fn streams_events_after_ready_and_reports_lag() {
        let body = format!(
            "event: ready\ndata: {{}}\n\n:\n\nevent: event\nid: 1\ndata: {EVENT}\n\nevent: lagged\ndata: 7\n\n"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
        );
        let (base, server) = serve_once(answer).await;
        let client = Client::new(&base, Some("nsk_test".into())).unwrap();
        let filter = EventFilter {
            kind: Some("project.".into()),
            ..EventFilter::default()
        };
        let mut stream = client.stream_events(&filter).await.unwrap();
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.kind, "project.created");
        let lagged = stream.next().await.unwrap().unwrap_err();
        assert!(matches!(lagged, ClientError::Lagged { missed: 7 }));
        assert!(stream.next().await.is_none());
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /api/v1/events/stream?kind=project. HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.contains("authorization: Bearer nsk_test"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn error_answers_become_api_errors() {
        let body = r#"{"error":{"code":"not_found","message":"service not found"}}"#;
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (base, _server) = serve_once(answer).await;
        let client = Client::new(&base, None).unwrap();
        let error = client
            .list_events(&EventFilter::default())
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "404 not_found: service not found");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        // Bind then drop, so the port is (almost certainly) closed.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = Client::new(&base, None).unwrap();
        let error = client.me().await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to {base}")),
            "{text}"
        );
    }
}

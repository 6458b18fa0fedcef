//! The event timeline: the list and the live Server-Sent Events stream.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use nanoscale_core::api::{Event, EventFilter};

use crate::sse::SseMessage;
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
        let inner = self
            .subscribe(STREAM_PATH, filter)
            .await?
            .filter_map(|message| async move {
                match message {
                    Ok(message) => event(message),
                    Err(error) => Some(Err(error)),
                }
            })
            .boxed();
        Ok(EventStream { inner })
    }
}

/// One SSE message as an event, or the lag it reports; other message types are
/// skipped so a newer server can add some.
fn event(message: SseMessage) -> Option<Result<Event>> {
    match message.event.as_str() {
        "lagged" => Some(Err(ClientError::Lagged {
            missed: message.data.trim().parse().unwrap_or(0),
        })),
        "event" => Some(
            serde_json::from_str::<Event>(&message.data).map_err(|error| ClientError::Decode {
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
    use tokio::net::TcpListener;

    use super::*;
    use crate::tests::serve_once;

    const EVENT: &str = r#"{"id":"0190a0b0-0000-7000-8000-000000000001","time":"2025-01-01T00:00:00Z","kind":"project.created","severity":"info","message":"project shop created by admin","project_id":null,"service_id":null,"release_id":null,"node_id":null,"actor_id":null}"#;

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

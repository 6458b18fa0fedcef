//! A service's logs, live: `GET /api/v1/services/{id}/logs/stream`.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use nanoscale_core::api::{LogEntry, LogQuery};
use uuid::Uuid;

use crate::sse::SseMessage;
use crate::{Client, ClientError, Result};

/// What a log stream brings.
#[derive(Debug, Clone)]
pub enum LogFrame {
    Line(LogEntry),
    /// The server ended the stream on purpose (the build followed is over, the
    /// service was removed); `reason` says which. Nothing comes after it.
    End {
        reason: String,
    },
}

/// Log lines as they are written. A stream that ends without
/// [`LogFrame::End`] lost its connection: open another (it repeats the newest
/// lines; [`nanoscale_core::logs::Seen`] lets each through once).
pub struct LogStream {
    inner: BoxStream<'static, Result<LogFrame>>,
}

impl Stream for LogStream {
    type Item = Result<LogFrame>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStream")
    }
}

impl Client {
    /// Follows a service's instance logs (or one build's output with
    /// `query.build`): the newest `query.tail` lines first, then each new line.
    pub async fn stream_service_logs(
        &self,
        service_id: Uuid,
        query: &LogQuery,
    ) -> Result<LogStream> {
        let path = format!("/api/v1/services/{service_id}/logs/stream");
        let what = format!("GET {path}");
        let inner = self
            .subscribe(&path, query)
            .await?
            .filter_map(move |message| {
                let what = what.clone();
                async move {
                    match message {
                        Ok(message) => frame(message, &what),
                        Err(error) => Some(Err(error)),
                    }
                }
            })
            // Nothing is read after the end.
            .scan(false, |ended, frame| {
                let item = (!*ended).then(|| {
                    *ended = matches!(frame, Ok(LogFrame::End { .. }));
                    frame
                });
                async move { item }
            })
            .boxed();
        Ok(LogStream { inner })
    }
}

fn frame(message: SseMessage, what: &str) -> Option<Result<LogFrame>> {
    let decode = |error: serde_json::Error| ClientError::Decode {
        what: what.to_owned(),
        reason: error.to_string(),
    };
    match message.event.as_str() {
        "log" => Some(
            serde_json::from_str::<LogEntry>(&message.data)
                .map(LogFrame::Line)
                .map_err(decode),
        ),
        "end" => {
            #[derive(serde::Deserialize)]
            struct End {
                #[serde(default)]
                reason: String,
            }
            Some(
                serde_json::from_str::<End>(&message.data)
                    .map(|end| LogFrame::End { reason: end.reason })
                    .map_err(decode),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use crate::tests::serve_once;

    #[tokio::test]
    async fn lines_come_after_ready_and_nothing_after_the_end() {
        let line = r#"{"at":"2026-12-01T10:00:00.001Z","stream":"stdout","source":"build-3","text":"step 1"}"#;
        let body = format!(
            "event: ready\ndata: {{}}\n\n:\n\nevent: log\ndata: {line}\n\nevent: end\ndata: {{\"reason\":\"the build is over\"}}\n\nevent: log\ndata: {line}\n\n"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
        );
        let (base, server) = serve_once(answer).await;
        let client = Client::new(&base, Some("nsk_test".into())).unwrap();
        let service = Uuid::now_v7();
        let query = LogQuery {
            tail: Some(5),
            build: Some(3),
        };
        let frames: Vec<LogFrame> = client
            .stream_service_logs(service, &query)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert!(
            matches!(&frames[..], [LogFrame::Line(entry), LogFrame::End { reason }]
                if entry.text == "step 1" && reason == "the build is over"),
            "{frames:?}"
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with(&format!(
                "GET /api/v1/services/{service}/logs/stream?tail=5&build=3 HTTP/1.1"
            )),
            "{request}"
        );
    }
}

//! A small Server-Sent Events parser: bytes in (in any chunking), messages out.
//! Only what the event and log streams use: `event:`, `data:`, `id:`, comments and
//! the blank line that ends a message (the WHATWG rules for those fields).
use std::collections::VecDeque;

use futures::stream::{BoxStream, StreamExt};

use crate::{ClientError, Result};

/// A response body as it arrives.
pub(crate) type ByteStream = BoxStream<'static, reqwest::Result<bytes::Bytes>>;

struct MessageState {
    bytes: ByteStream,
    parser: SseParser,
    pending: VecDeque<Result<SseMessage>>,
    finished: bool,
    what: String,
    url: String,
}

/// The messages of a response body (of `GET <what>` at `url`); ends after the first
/// transport or framing error, or with the body.
pub(crate) fn messages(
    bytes: ByteStream,
    what: String,
    url: String,
) -> BoxStream<'static, Result<SseMessage>> {
    let state = MessageState {
        bytes,
        parser: SseParser::default(),
        pending: VecDeque::new(),
        finished: false,
        what,
        url,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(message) = state.pending.pop_front() {
                return Some((message, state));
            }
            if state.finished {
                return None;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => match state.parser.push(&chunk) {
                    Ok(messages) => state.pending.extend(messages.into_iter().map(Ok)),
                    Err(reason) => {
                        state.finished = true;
                        state.pending.push_back(Err(ClientError::Decode {
                            what: format!("GET {}", state.what),
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

impl crate::Client {
    /// Opens the event stream at `path` and returns its messages after the
    /// server's `ready` (anything before it is skipped): from then on the stream
    /// holds everything the server sends.
    pub(crate) async fn subscribe<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<BoxStream<'static, Result<SseMessage>>> {
        let builder = self
            .streaming_builder(reqwest::Method::GET, path)?
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.execute(builder).await?;
        let url = response.url().to_string();
        let mut stream = messages(response.bytes_stream().boxed(), path.to_owned(), url);
        loop {
            match stream.next().await {
                Some(Ok(message)) if message.event == "ready" => return Ok(stream),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ClientError::Decode {
                        what: format!("GET {path}"),
                        reason: "the stream ended before it was ready".into(),
                    })
                }
            }
        }
    }
}

/// The longest line accepted; the server's largest message is one Event.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseMessage {
    /// `message` when the server named no event type.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the messages they complete. `Err` when a line grows
    /// past [`MAX_LINE_BYTES`], which means the peer is not an SSE server.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|b| *b == b'\n') {
            let end = start + offset;
            let mut line = &self.buffer[start..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(message) = self.line(&line) {
                messages.push(message);
            }
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(format!(
                "an event stream line is longer than {MAX_LINE_BYTES} bytes"
            ));
        }
        Ok(messages)
    }

    fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseMessage> {
        let event = self.event.take();
        // A message without data lines is dropped, as browsers do.
        let data = self.data.take()?;
        Some(SseMessage {
            event: event
                .filter(|event| !event.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data,
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], chunk: usize) -> Vec<SseMessage> {
        let mut parser = SseParser::default();
        let mut messages = Vec::new();
        for piece in input.chunks(chunk) {
            messages.extend(parser.push(piece).unwrap());
        }
        messages
    }

    #[test]
    fn parses_the_server_stream_in_any_chunking() {
        let input = b"event: ready\ndata: {}\n\n:\n\nevent: event\nid: 42\ndata: {\"a\":1}\n\nevent: lagged\r\ndata: 3\r\n\r\n";
        for chunk in [1, 2, 3, 7, input.len()] {
            let messages = parse_in_chunks(input, chunk);
            assert_eq!(
                messages,
                vec![
                    SseMessage {
                        event: "ready".into(),
                        data: "{}".into(),
                        id: None
                    },
                    SseMessage {
                        event: "event".into(),
                        data: "{\"a\":1}".into(),
                        id: Some("42".into())
                    },
                    SseMessage {
                        event: "lagged".into(),
                        data: "3".into(),
                        id: Some("42".into())
                    },
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn joins_data_lines_and_defaults_the_event_type() {
        let messages = parse_in_chunks(b"data: one\ndata:two\n\nevent: x\n\n", 4);
        assert_eq!(
            messages,
            vec![SseMessage {
                event: "message".into(),
                data: "one\ntwo".into(),
                id: None
            }]
        );
    }

    #[test]
    fn an_unfinished_message_waits_for_its_blank_line() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: event\ndata: {}").unwrap().is_empty());
        assert!(parser.push(b"\n").unwrap().is_empty());
        assert_eq!(parser.push(b"\n").unwrap().len(), 1);
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut parser = SseParser::default();
        let junk = vec![b'x'; MAX_LINE_BYTES + 1];
        assert!(parser.push(&junk).is_err());
    }
}

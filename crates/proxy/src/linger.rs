//! Lingering close of a refused request body, for the proxy and the API alike.
//!
//! A server that answers 413 and closes with unread bytes in its socket makes the
//! kernel send a reset, and a client still writing its body may then lose the
//! answer. As nginx's lingering close does, a task reads the rest of the body away
//! (and drops it), so the client reads the 413 and can keep its connection. It is
//! bounded: at most [`DRAIN_LIMIT`] bytes in all, for [`DRAIN_TIME`], and
//! [`MAX_DRAINS`] at once, so a flood of large bodies cannot keep the server
//! reading. Not for a client waiting for `100 Continue` (it has sent nothing, and
//! reading would invite the upload) or for a body declared past the limit.
use std::time::Duration;

use http::HeaderMap;
use http_body_util::BodyExt;
use nanoscale_core::slots::Slots;

/// The most of a refused body that is read away, counting what was read before.
pub const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
/// The longest a refused body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Refused bodies read away at the same time, at most, per process.
pub const MAX_DRAINS: usize = 64;

static DRAINS: Slots = Slots::new(MAX_DRAINS);

/// What of a request's headers decides whether its refused body is read away.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    declared: Option<u64>,
    expects_continue: bool,
}

impl Refused {
    pub fn of(headers: &HeaderMap) -> Refused {
        Refused {
            declared: headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok()),
            expects_continue: headers
                .get(http::header::EXPECT)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        }
    }

    /// The length the request declared, if it did.
    pub fn declared(&self) -> Option<u64> {
        self.declared
    }

    /// Reads the rest of `body` (of which `read` bytes were read already) away in
    /// a task, where the rules above allow. Whether it does: when not, the
    /// connection cannot carry another request and should be closed.
    pub fn read_away<B>(self, body: B, read: u64) -> bool
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
    {
        if self.expects_continue || self.declared.is_some_and(|length| length > DRAIN_LIMIT) {
            return false;
        }
        let Some(slot) = DRAINS.take() else {
            return false;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut body = body;
            let mut read = read;
            let deadline = tokio::time::Instant::now() + DRAIN_TIME;
            while read <= DRAIN_LIMIT {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        read += frame
                            .data_ref()
                            .map_or(0, |data| bytes::Buf::remaining(data) as u64);
                    }
                    _ => break,
                }
            }
        });
        true
    }
}

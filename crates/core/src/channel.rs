//! The agent channel: one long-lived connection per agent that carries, both
//! ways, what the agent protocol's HTTP routes carry one request at a time.
//!
//! The agent opens it with `GET /api/v1/agent/channel` and `Upgrade:
//! nanoscale-channel/1` (HTTP/1.1), authenticated like every agent route (the
//! node's client certificate on the cluster listener, its `nsn_…` credential on
//! loopback). After `101 Switching Protocols` both sides send frames: a 4-byte
//! big-endian length, then that many bytes of one JSON message ([`ToAgent`] or
//! [`ToControlPlane`]).
//!
//! Why not WebSocket or HTTP/2: at 10,000 agents the control plane holds 10,000
//! idle channels, and every byte a library keeps per connection counts 10,000
//! times. h2 keeps a fixed 16 KiB write buffer, an HPACK decoder buffer and a read
//! buffer per connection; tungstenite keeps a read buffer (128 KiB unless
//! configured) and a write buffer that never shrinks. A channel frame is read
//! into a fresh vector and written whole, so an idle channel holds none.
//!
//! The long-poll (`GET /api/v1/agent/desired-state` and the report and log
//! routes) stays as the fallback where an upgrade cannot pass (an HTTP proxy
//! that drops `Upgrade`, an older control plane).
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::{AgentReport, LogAnswer, LogRequest, ReportAck};
use crate::api::{ErrorDetail, LogEntry};
use crate::desired::DesiredDocument;

/// The path of the upgrade request.
pub const PATH: &str = "/api/v1/agent/channel";
/// The `Upgrade` token both sides must name.
pub const PROTOCOL: &str = "nanoscale-channel/1";
/// Largest frame the control plane reads: a report, which over HTTP may be 1 MiB,
/// with room for its envelope.
pub const MAX_TO_CONTROL_PLANE: u32 = 1024 * 1024 + 4096;
/// Largest frame an agent reads: a document of a node running many services.
pub const MAX_TO_AGENT: u32 = 64 * 1024 * 1024;
/// Most lines in one [`ToControlPlane::LogLines`].
pub const MAX_FOLLOW_LINES: usize = 1000;
/// Log sources followed at once on one channel: the control plane allows 128
/// streams in all, each following one request per node.
pub const MAX_FOLLOWS: usize = 256;
/// The agent pings after this long without hearing or saying anything.
pub const PING_AFTER_SECS: u64 = 10;
/// The agent gives the channel up after this long without hearing anything
/// (a ping unanswered for 5 s): a dead link is noticed within 15 s.
pub const DEAD_AFTER_SECS: u64 = 15;
/// The control plane closes a channel it heard nothing on for this long (the
/// agent speaks at least every `PING_AFTER_SECS`).
pub const SERVER_IDLE_SECS: u64 = 45;

/// A message from the control plane to an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// The node's document: sent first on every channel, then each time its
    /// version moves. The agent checks the hash before using it.
    Document { document: Arc<DesiredDocument> },
    /// Users asked for this node's log lines; each is answered with
    /// [`ToControlPlane::LogAnswer`].
    LogRequests { requests: Vec<LogRequest> },
    /// A user follows these log sources (a service's instances on this node, or
    /// one build): send their lines from now on as they are written, each batch
    /// as [`ToControlPlane::LogLines`] naming `id`, until [`ToAgent::LogUnfollow`]
    /// or the end of this channel.
    LogFollow { id: Uuid, request: LogRequest },
    /// The user stopped following (`id` of a [`ToAgent::LogFollow`]).
    LogUnfollow { id: Uuid },
    /// The report `seq` is stored.
    Ack { seq: u64, ack: ReportAck },
    /// A message was refused, with the status and error body the HTTP route would
    /// have answered (`seq` names the report, when it was one). A 401 means the
    /// node was removed; the channel closes after it.
    Refused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        status: u16,
        error: ErrorDetail,
    },
    /// The answer to [`ToControlPlane::Ping`].
    Pong,
}

/// A message from an agent to the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToControlPlane {
    /// A report, answered with [`ToAgent::Ack`] or [`ToAgent::Refused`] naming
    /// the same `seq`.
    Report { seq: u64, report: Box<AgentReport> },
    /// The answer to one log request (a late one is dropped).
    LogAnswer { id: Uuid, answer: LogAnswer },
    /// New lines of a followed source, oldest first (at most
    /// [`MAX_FOLLOW_LINES`] per message).
    LogLines { id: Uuid, entries: Vec<LogEntry> },
    /// Keeps the link checked while nothing else goes over it.
    Ping,
}

/// The frame of one message: its length (4 bytes, big-endian), then its JSON.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0; 4];
    // Serializing these types to a vector cannot fail: no maps with non-string
    // keys, no failing `Serialize` implementations.
    serde_json::to_writer(&mut frame, message).unwrap_or_default();
    let length = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_a_length_then_tagged_json() {
        let frame = encode(&ToControlPlane::Ping);
        assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
        assert_eq!(&frame[4..], br#"{"type":"ping"}"#);
        let frame = encode(&ToAgent::Refused {
            seq: Some(7),
            status: 400,
            error: ErrorDetail {
                code: "validation_failed".into(),
                message: "at most 200 per report".into(),
                field: Some("events".into()),
                request_id: None,
            },
        });
        let back: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"type": "refused", "seq": 7, "status": 400, "error": {
                "code": "validation_failed", "message": "at most 200 per report", "field": "events"}})
        );
        let back: ToAgent = serde_json::from_slice(&frame[4..]).unwrap();
        assert!(matches!(
            back,
            ToAgent::Refused {
                seq: Some(7),
                status: 400,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_message_type_is_an_error_not_a_guess() {
        let parsed = serde_json::from_str::<ToControlPlane>(r#"{"type":"reboot"}"#);
        assert!(parsed.unwrap_err().to_string().contains("unknown variant"));
    }
}

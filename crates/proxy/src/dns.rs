//! The internal DNS responder: answers A/AAAA for the `*.svc.internal` names of
//! the route table with the internal listener's address, NXDOMAIN for other names
//! under `svc.internal`, and REFUSED for everything else. It never recurses or
//! forwards, so it is not an open resolver even if reachable.
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;

use nanoscale_core::desired::INTERNAL_DOMAIN;

/// Seconds resolvers may cache an answer (names come and go with services).
const TTL: u32 = 5;

/// The names answered and the addresses they resolve to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsAnswers {
    /// Lowercase, without the trailing dot (`api.svc.internal`).
    pub names: BTreeSet<String>,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// What a query gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not ours to answer.
    Refused,
    /// Under `svc.internal`, but no such service.
    NoSuchName,
    /// A known name: these addresses (none: the name exists without that type).
    Addresses(Vec<IpAddr>),
}

/// The decision for `name` (any case, trailing dot or not) and `kind`.
pub fn decide(answers: &DnsAnswers, name: &str, kind: RecordType) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let internal = name == INTERNAL_DOMAIN || name.ends_with(&format!(".{INTERNAL_DOMAIN}"));
    if !internal {
        return Answer::Refused;
    }
    if !answers.names.contains(&name) {
        return Answer::NoSuchName;
    }
    let v4 = answers.v4.map(IpAddr::V4);
    let v6 = answers.v6.map(IpAddr::V6);
    let addresses = match kind {
        RecordType::A => v4.into_iter().collect(),
        RecordType::AAAA => v6.into_iter().collect(),
        RecordType::ANY => v4.into_iter().chain(v6).collect(),
        _ => Vec::new(),
    };
    Answer::Addresses(addresses)
}

struct Handler {
    answers: Arc<ArcSwap<DnsAnswers>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let refuse = |code: ResponseCode| {
            let mut header = Header::response_from_request(request.header());
            header.set_response_code(code);
            header
        };
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            let header = refuse(ResponseCode::NotImp);
            let message = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response, message, header).await;
        }
        // Exactly one question, or FORMERR.
        let Ok(info) = request.request_info() else {
            let header = refuse(ResponseCode::FormErr);
            let message = builder.error_msg(request.header(), ResponseCode::FormErr);
            return send(&mut response, message, header).await;
        };
        let query_name = Name::from(info.query.name().clone());
        let decision = decide(
            &self.answers.load(),
            &query_name.to_ascii(),
            info.query.query_type(),
        );
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(false);
        match decision {
            Answer::Refused => {
                let header = refuse(ResponseCode::Refused);
                let message = builder.error_msg(request.header(), ResponseCode::Refused);
                send(&mut response, message, header).await
            }
            Answer::NoSuchName => {
                header.set_authoritative(true);
                header.set_response_code(ResponseCode::NXDomain);
                let message = builder.build_no_records(header);
                send(&mut response, message, header).await
            }
            Answer::Addresses(addresses) => {
                header.set_authoritative(true);
                let records: Vec<Record> = addresses
                    .into_iter()
                    .map(|address| {
                        let data = match address {
                            IpAddr::V4(v4) => RData::A(A(v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                        };
                        Record::from_rdata(query_name.clone(), TTL, data)
                    })
                    .collect();
                let none: [&Record; 0] = [];
                let message = builder.build(header, records.iter(), none, none, none);
                send(&mut response, message, header).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    header: Header,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!("DNS answer not sent: {error}");
            let mut failed = header;
            failed.set_response_code(ResponseCode::ServFail);
            failed.into()
        }
    }
}

/// A bound responder, so a taken address fails at start with its name.
pub struct DnsServer {
    server: ServerFuture<Handler>,
}

/// Binds UDP and TCP on `addr`.
pub async fn bind(
    addr: SocketAddr,
    answers: Arc<ArcSwap<DnsAnswers>>,
) -> anyhow::Result<DnsServer> {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}/udp (DNS)"))?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}/tcp (DNS)"))?;
    let mut server = ServerFuture::new(Handler { answers });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    Ok(DnsServer { server })
}

impl DnsServer {
    /// Serves until the future is dropped.
    pub async fn run(mut self) -> anyhow::Result<()> {
        self.server.block_until_done().await?;
        Ok(())
    }
}

/// Serves DNS over UDP and TCP on `addr` until the future is dropped; answers
/// are read from `answers` on every query, so swapping it changes them at once.
pub async fn serve(addr: SocketAddr, answers: Arc<ArcSwap<DnsAnswers>>) -> anyhow::Result<()> {
    bind(addr, answers).await?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> DnsAnswers {
        DnsAnswers {
            names: ["api.svc.internal", "api.shop.svc.internal"]
                .map(str::to_owned)
                .into(),
            v4: Some(Ipv4Addr::new(127, 0, 0, 1)),
            v6: None,
        }
    }

    #[test]
    fn internal_names_resolve_others_are_refused() {
        let answers = answers();
        let loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(
            decide(&answers, "API.svc.internal.", RecordType::A),
            Answer::Addresses(vec![loopback])
        );
        assert_eq!(
            decide(&answers, "api.shop.svc.internal", RecordType::ANY),
            Answer::Addresses(vec![loopback])
        );
        assert_eq!(
            decide(&answers, "api.svc.internal", RecordType::AAAA),
            Answer::Addresses(vec![])
        );
        assert_eq!(
            decide(&answers, "api.svc.internal", RecordType::MX),
            Answer::Addresses(vec![])
        );
        assert_eq!(
            decide(&answers, "web.svc.internal", RecordType::A),
            Answer::NoSuchName
        );
        assert_eq!(
            decide(&answers, "example.com", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            decide(&answers, "svc.internal.example.com", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            decide(&answers, "evilsvc.internal", RecordType::A),
            Answer::Refused
        );
    }
}

//! The cluster CA and the cluster listener.
//!
//! The CA (ECDSA P-256, made by rcgen on first start and kept in the store so every
//! control-plane replica signs with the same one) signs two kinds of certificate:
//! the control plane's server certificate, named `control-plane.nanoscale.internal`
//! whatever address agents dial, made fresh at every start; and each node's client
//! certificate, made from the node's own certificate request, valid
//! [`NODE_CERT_VALIDITY`] and renewed by the agent.
//!
//! The cluster listener is TLS (rustls, ring) that asks for a client certificate
//! but also admits connections without one, because a joining node has none yet:
//! only `POST /cluster/v1/join` works without it. The SHA-256 of the certificate a
//! connection presented travels with each request as a [`PeerCertificate`]
//! extension; a node is who the store says owns that fingerprint, so removing the
//! node revokes its certificate at once.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::store::Store;

/// How long a node certificate is valid; agents renew when a third is left.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Tolerated clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(300);
const CA_VALIDITY_DAYS: i64 = 3650;
const SERVER_CERT_VALIDITY_DAYS: i64 = 397;
/// Longest certificate request accepted.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// SHA-256 (lowercase hex) of the client certificate a connection presented, or
/// `None` when it presented none.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<String>);

/// The running cluster listener.
pub struct Cluster {
    pub ca: ClusterCa,
    pub local_addr: SocketAddr,
}

/// The cluster CA, loaded from the store.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    sha256: String,
}

/// A certificate just signed.
pub struct Signed {
    pub pem: String,
    pub sha256: String,
    pub not_after: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("is not a valid PEM certificate signing request: {0}")]
    Invalid(String),
    #[error("is longer than {MAX_CSR_BYTES} bytes")]
    TooLong,
}

impl ClusterCa {
    /// Loads the store's CA, making it on the very first start.
    pub async fn load_or_create(store: &Store) -> anyhow::Result<ClusterCa> {
        let (cert_pem, key_pem) = match store.cluster_ca().await? {
            Some(pair) => pair,
            None => {
                let (cert, key) = new_ca(&store.cluster_id().await?.to_string())?;
                store.init_cluster_ca(&cert, &key).await?
            }
        };
        let key = KeyPair::from_pem(&key_pem).context("the stored cluster CA key is unreadable")?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .context("the stored cluster CA certificate is unreadable")?;
        let cert_der = rustls_pemfile_one(&cert_pem)?;
        let sha256 = hex::encode(Sha256::digest(cert_der.as_ref()));
        Ok(ClusterCa {
            cert_pem,
            cert_der,
            issuer,
            sha256,
        })
    }

    /// SHA-256 of the CA certificate (DER), the fingerprint join tokens carry.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a node's certificate request. Only the request's public key is used:
    /// the name, usages and validity are the control plane's.
    pub fn sign_node(&self, csr_pem: &str, node_id: Uuid) -> Result<Signed, CsrError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLong);
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|error| CsrError::Invalid(error.to_string()))?;
        let now = Utc::now();
        let not_after = now + chrono::Duration::from_std(NODE_CERT_VALIDITY).unwrap_or_default();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id.to_string());
        name.push(DnType::OrganizationName, "NanoScale node");
        params.distinguished_name = name;
        params.subject_alt_names = vec![rcgen::SanType::DnsName(
            format!("{node_id}.node.nanoscale.internal")
                .try_into()
                .map_err(|_| CsrError::Invalid("node name".into()))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before =
            to_offset(now - chrono::Duration::from_std(BACKDATE).unwrap_or_default());
        params.not_after = to_offset(not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|error| CsrError::Invalid(error.to_string()))?;
        Ok(Signed {
            pem: cert.pem(),
            sha256: hex::encode(Sha256::digest(cert.der().as_ref())),
            not_after,
        })
    }

    /// A fresh server certificate for the cluster listener, with its chain.
    fn server_identity(
        &self,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            nanoscale_core::cluster::CONTROL_PLANE_SERVER_NAME.to_owned(),
        ])?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            nanoscale_core::cluster::CONTROL_PLANE_SERVER_NAME,
        );
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = Utc::now();
        params.not_before =
            to_offset(now - chrono::Duration::from_std(BACKDATE).unwrap_or_default());
        params.not_after = to_offset(now + chrono::Duration::days(SERVER_CERT_VALIDITY_DAYS));
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key))
    }

    /// The TLS configuration of the cluster listener.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let (chain, key) = self.server_identity()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn new_ca(cluster_id: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("NanoScale cluster CA {cluster_id}"),
    );
    name.push(DnType::OrganizationName, "NanoScale");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = Utc::now();
    params.not_before = to_offset(now - chrono::Duration::from_std(BACKDATE).unwrap_or_default());
    params.not_after = to_offset(now + chrono::Duration::days(CA_VALIDITY_DAYS));
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive: the top bit clear.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn to_offset(time: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(time.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn rustls_pemfile_one(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .context("the stored cluster CA certificate is not PEM")
}

/// Pending connections the cluster listener queues (the kernel caps it at
/// `net.core.somaxconn`): a restarted control plane is dialled by every agent at
/// once, and the default of 1024 drops part of a 10,000-agent reconnect.
const CLUSTER_BACKLOG: u32 = 8192;

/// Binds the cluster listener with a backlog sized for a fleet reconnecting.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(CLUSTER_BACKLOG)
}

/// Marks every header of an answer to an agent as never to be indexed by HPACK,
/// and dates it here so that hyper does not add an indexable `date`.
///
/// HTTP/2 lets the sender keep each header it sends in a per-connection table
/// (up to 4 KiB of HPACK size) so that it can repeat it as an index. An agent's
/// answers change their `date` every second and their document headers every
/// version, so each connection's table fills with values that never repeat:
/// about 8 KiB of heap per connection once full, 75 MiB at 10,000 agents
/// (measured with heaptrack across a burst of changes). The few bytes of
/// literals this costs per answer are nothing beside the documents.
fn never_indexed(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    if !headers.contains_key(http::header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(value) = http::HeaderValue::from_str(&now) {
            headers.insert(http::header::DATE, value);
        }
    }
    for value in headers.values_mut() {
        value.set_sensitive(true);
    }
    response
}

/// Serves `router` on `listener` with TLS until the task is dropped. Each request
/// carries the connection's [`PeerCertificate`] and `ConnectInfo<SocketAddr>`.
pub async fn serve_tls(listener: TcpListener, tls: rustls::ServerConfig, router: Router) {
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %remote, "cluster listener: TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let peer = PeerCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| hex::encode(Sha256::digest(cert.as_ref()))),
            );
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo::<SocketAddr>(remote));
                    let answer = router.clone().oneshot(request.map(axum::body::Body::new));
                    async move { answer.await.map(never_indexed) }
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%error, %remote, "cluster connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_agents_are_dated_and_never_indexed() {
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        response.headers_mut().insert(
            "x-nanoscale-log-requests",
            http::HeaderValue::from_static("1"),
        );
        let response = never_indexed(response);
        let date = response.headers().get(http::header::DATE).expect("a date");
        assert!(httpdate::parse_http_date(date.to_str().expect("ascii")).is_ok());
        assert_eq!(response.headers().len(), 2);
        assert!(response.headers().values().all(|v| v.is_sensitive()));

        // A date the handler set is kept.
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        let set = "Tue, 01 Dec 2026 10:00:00 GMT";
        response
            .headers_mut()
            .insert(http::header::DATE, http::HeaderValue::from_static(set));
        let response = never_indexed(response);
        assert_eq!(response.headers()[http::header::DATE], set);
        assert!(response.headers()[http::header::DATE].is_sensitive());
    }
}

//! The agent as a member of a cluster: joining with a one-time token, its
//! identity on disk, the mTLS client it talks to the control plane with, and
//! certificate renewal.
//!
//! Identity files live in `<data>/agent/cluster/` (0700): `ca.pem`, `node.pem`,
//! `node.key` (0600) and `node.json` (node id, name, cluster address, expiry).
//!
//! Trust: the control plane's certificate must chain to the cluster CA and carry
//! the name `control-plane.nanoscale.internal`, whatever address was dialled.
//! Before a node has the CA, the join pins it by the SHA-256 the token carries: the
//! handshake fails (and the token's secret is never sent) unless the server's chain
//! includes a CA with exactly that hash and its certificate verifies against it.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nanoscale_core::cluster::{
    JoinRequest, JoinToken, NodeCertificate, RenewRequest, CONTROL_PLANE_SERVER_NAME,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What the node knows about its membership (`node.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    pub node_id: Uuid,
    pub node_name: String,
    /// `host:port` of the control plane's cluster listener.
    pub cluster: String,
    pub not_after: DateTime<Utc>,
}

/// The directory of a node's cluster identity under its data dir.
pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("cluster")
}

impl Membership {
    pub fn load(dir: &Path) -> Result<Membership, String> {
        let path = dir.join("node.json");
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "{}: {error} (has this node joined a cluster?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// `https://<cluster>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.cluster)
    }
}

/// What `nanoscale join` asks for.
pub struct JoinOptions {
    pub cluster: String,
    pub token: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    #[error("{0}")]
    Invalid(String),
    #[error("the server at {0} is not the control plane this token was made for: its CA fingerprint does not match the token. Nothing was sent. Check the address, or ask for a new token")]
    WrongCa(String),
    #[error("cannot reach the control plane's cluster listener at {cluster}: {cause}")]
    Unreachable { cluster: String, cause: String },
    #[error("the control plane refused the join: {0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}

/// Joins the cluster: makes the node's key pair and certificate request, sends
/// them with the token over TLS pinned to the token's CA hash, and writes the
/// identity files. Refuses a data dir that already holds an identity.
pub async fn join(options: JoinOptions) -> Result<Membership, JoinFailure> {
    let token =
        JoinToken::parse(&options.token).map_err(|e| JoinFailure::Invalid(e.to_string()))?;
    let dir = identity_dir(&options.data_dir);
    if dir.join("node.json").exists() {
        return Err(JoinFailure::Invalid(format!(
            "{} already holds a cluster identity; this node has joined",
            dir.display()
        )));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| JoinFailure::Io(e.to_string()))?;
    let csr = certificate_request(&key, &options.name)?;
    let mismatch = Arc::new(Mutex::new(false));
    let verifier = Arc::new(ClusterVerifier::pinned(
        &token.ca_sha256,
        Arc::clone(&mismatch),
    ));
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinFailure::Io(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let http = client(tls).map_err(|e| JoinFailure::Io(e.to_string()))?;
    let request = JoinRequest {
        token: options.token.trim().to_owned(),
        name: options.name.clone(),
        csr,
        labels: options.labels.clone(),
        arch: std::env::consts::ARCH.to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
        memory_bytes: crate::usage::UsageSampler::default()
            .sample(Path::new("/"))
            .memory_total_bytes,
    };
    let url = format!("https://{}/cluster/v1/join", options.cluster);
    let response = match http.post(&url).json(&request).send().await {
        Ok(response) => response,
        Err(error) => {
            if mismatch.lock().map(|m| *m).unwrap_or(false) {
                return Err(JoinFailure::WrongCa(options.cluster));
            }
            return Err(JoinFailure::Unreachable {
                cluster: options.cluster,
                cause: error_chain(&error),
            });
        }
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        return Err(JoinFailure::Refused(format!("{status}: {message}")));
    }
    let issued: NodeCertificate = response
        .json()
        .await
        .map_err(|e| JoinFailure::Refused(format!("unreadable answer: {e}")))?;
    let ca_der = CertificateDer::from_pem_slice(issued.ca_certificate.as_bytes())
        .map_err(|e| JoinFailure::Refused(format!("unreadable CA certificate: {e}")))?;
    if hex::encode(Sha256::digest(ca_der.as_ref())) != token.ca_sha256 {
        return Err(JoinFailure::WrongCa(options.cluster));
    }
    let membership = Membership {
        node_id: issued.node_id,
        node_name: issued.node_name.clone(),
        cluster: options.cluster,
        not_after: issued.not_after,
    };
    write_identity(&dir, &membership, &issued, &key.serialize_pem()).map_err(JoinFailure::Io)?;
    Ok(membership)
}

fn certificate_request(key: &rcgen::KeyPair, name: &str) -> Result<String, JoinFailure> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name);
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| JoinFailure::Io(format!("cannot make the certificate request: {e}")))
}

/// Writes the identity files, the key owner-only from its first byte; `node.json`
/// last, so a half-written identity is never taken for a whole one.
fn write_identity(
    dir: &Path,
    membership: &Membership,
    issued: &NodeCertificate,
    key_pem: &str,
) -> Result<(), String> {
    crate::builder::create_private_dir(dir)?;
    write_private(&dir.join("ca.pem"), issued.ca_certificate.as_bytes())?;
    write_private(&dir.join("node.key"), key_pem.as_bytes())?;
    write_private(&dir.join("node.pem"), issued.certificate.as_bytes())?;
    let json = serde_json::to_vec_pretty(membership).map_err(|e| e.to_string())?;
    write_private(&dir.join("node.json"), &json)
}

/// Replaces `path` atomically with an owner-only file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| format!("{}: {e}", temp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The mTLS client configuration of a joined node.
pub fn client_config(dir: &Path) -> Result<rustls::ClientConfig, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let ca =
        CertificateDer::from_pem_slice(&read("ca.pem")?).map_err(|e| format!("ca.pem: {e}"))?;
    let chain =
        vec![CertificateDer::from_pem_slice(&read("node.pem")?)
            .map_err(|e| format!("node.pem: {e}"))?];
    let key =
        PrivateKeyDer::from_pem_slice(&read("node.key")?).map_err(|e| format!("node.key: {e}"))?;
    let verifier = ClusterVerifier::trusting(ca).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("node certificate: {e}"))?;
    // HTTP/2: the long-poll that carries documents down and the reports that go
    // up share one connection per node. HTTP/1.1 stays possible (the same
    // long-poll on two connections) where h2 cannot be negotiated.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest client over `tls`: with the node's ALPN that is one HTTP/2
/// connection, pinged every 10 s so that a dead link is noticed within 15 s
/// (the agent then reconnects with backoff).
pub fn client(tls: rustls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(crate::protocol::POLL_WAIT_SECS + 15))
        .pool_max_idle_per_host(1)
        // While the channel carries everything, the HTTP/2 connection of the
        // last renewal or long-poll does not stay open on the control plane.
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(15))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .http2_keep_alive_while_idle(true)
        .build()
}

/// Renews the certificate when less than a third of its life is left. Returns
/// true when it did (the caller then rebuilds its client).
pub async fn renew_if_due(
    dir: &Path,
    http: &reqwest::Client,
    validity: Duration,
) -> Result<bool, String> {
    let membership = Membership::load(dir)?;
    let left = membership.not_after - Utc::now();
    let threshold = chrono::Duration::from_std(validity / 3).unwrap_or_default();
    if left > threshold {
        return Ok(false);
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = certificate_request(&key, &membership.node_name).map_err(|e| e.to_string())?;
    let response = http
        .post(format!("{}/cluster/v1/renew", membership.base_url()))
        .json(&RenewRequest { csr })
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("renewal refused: {}", response.status()));
    }
    let issued: NodeCertificate = response.json().await.map_err(|e| e.to_string())?;
    let renewed = Membership {
        not_after: issued.not_after,
        ..membership
    };
    write_identity(dir, &renewed, &issued, &key.serialize_pem())?;
    tracing::info!(not_after = %issued.not_after, "node certificate renewed");
    Ok(true)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The message of an error and all its causes, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Verifies the control plane's certificate against the cluster CA under the
/// fixed control-plane name; or, while joining, against the CA in the presented
/// chain whose SHA-256 the token pins.
#[derive(Debug)]
struct ClusterVerifier {
    provider: Arc<CryptoProvider>,
    trust: Trust,
}

#[derive(Debug)]
enum Trust {
    Known(Arc<WebPkiServerVerifier>),
    Pinned {
        sha256: String,
        mismatch: Arc<Mutex<bool>>,
    },
}

impl ClusterVerifier {
    fn trusting(ca: CertificateDer<'static>) -> Result<ClusterVerifier, rustls::Error> {
        let provider = provider();
        Ok(ClusterVerifier {
            trust: Trust::Known(webpki(ca, &provider)?),
            provider,
        })
    }

    fn pinned(sha256: &str, mismatch: Arc<Mutex<bool>>) -> ClusterVerifier {
        ClusterVerifier {
            provider: provider(),
            trust: Trust::Pinned {
                sha256: sha256.to_owned(),
                mismatch,
            },
        }
    }
}

fn webpki(
    ca: CertificateDer<'static>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(CONTROL_PLANE_SERVER_NAME)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        match &self.trust {
            Trust::Known(inner) => {
                inner.verify_server_cert(end_entity, &[], &name, ocsp_response, now)
            }
            Trust::Pinned { sha256, mismatch } => {
                let ca = intermediates
                    .iter()
                    .find(|cert| hex::encode(Sha256::digest(cert.as_ref())) == *sha256);
                let Some(ca) = ca else {
                    if let Ok(mut flag) = mismatch.lock() {
                        *flag = true;
                    }
                    return Err(rustls::Error::General(
                        "the server's CA does not match the join token's fingerprint".into(),
                    ));
                };
                webpki(ca.clone().into_owned(), &self.provider)?.verify_server_cert(
                    end_entity,
                    &[],
                    &name,
                    ocsp_response,
                    now,
                )
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

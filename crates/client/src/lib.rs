//! Typed async client for the NanoScale HTTP API (`/api/v1`).
//!
//! One method per route, taking and returning the wire types of
//! [`nanoscale_core::api`], so the CLI, the end-to-end tests and any script agree
//! with the server on one shape. Errors are a [`ClientError`]: the server's
//! `{"error": {"code", "message", "field"}}` body becomes [`ClientError::Api`].
//!
//! ```no_run
//! # async fn example() -> Result<(), nanoscale_client::ClientError> {
//! let client = nanoscale_client::Client::new("http://127.0.0.1:4000", Some("nsk_…".into()))?;
//! for project in client.list_projects().await? {
//!     println!("{}", project.name);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod base_url;
mod cluster;
mod error;
mod events;
mod identity;
mod logs;
mod projects;
mod sse;

use std::time::Duration;

use base_url::{join_url, normalize_base_url, segment};
use reqwest::header::{HeaderValue, COOKIE, SET_COOKIE};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::{ClientError, Result};
pub use events::EventStream;
pub use logs::{LogFrame, LogStream};
/// The wire types this client speaks, re-exported for convenience.
pub use nanoscale_core::api;

/// How long an ordinary request may take (a deploy resolves a git ref on the server,
/// which the server itself caps at 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection; the event stream sends a keep-alive every 15 s.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CSRF_HEADER: &str = "x-csrf-token";

/// A connection to one NanoScale control plane. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Normalized: scheme http or https, no query or fragment, no trailing `/`.
    base: String,
    auth: Auth,
}

#[derive(Clone)]
enum Auth {
    Anonymous,
    Bearer(String),
    /// A browser-style session: the cookie, plus the CSRF token every mutation echoes.
    Session {
        cookie: HeaderValue,
        csrf_token: String,
    },
}

impl std::fmt::Debug for Client {
    // Never print the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            Auth::Anonymous => "anonymous",
            Auth::Bearer(_) => "bearer",
            Auth::Session { .. } => "session",
        };
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &auth)
            .finish()
    }
}

impl Client {
    /// A client for the control plane at `base_url` (`http://` or `https://`, with
    /// an optional path prefix), sending `Authorization: Bearer <token>` when a
    /// token is given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self> {
        let base = normalize_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("nanoscale-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::http(&base, source))?;
        let auth = match token {
            Some(token) => Auth::Bearer(token),
            None => Auth::Anonymous,
        };
        Ok(Self { http, base, auth })
    }

    /// The base URL requests go to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in with a password and returns a client that acts through the new
    /// session (cookie plus `X-CSRF-Token`), with the login answer. Use it to
    /// create an API token, then [`Client::logout`] the session.
    pub async fn start_session(
        &self,
        credentials: &api::Credentials,
    ) -> Result<(api::LoginResponse, Client)> {
        let builder = self.builder(Method::POST, "/api/v1/auth/login")?;
        let response = self.execute(builder.json(credentials)).await?;
        let cookie = session_cookie(&response).ok_or_else(|| ClientError::Decode {
            what: "POST /api/v1/auth/login".into(),
            reason: "the answer set no session cookie".into(),
        })?;
        let login: api::LoginResponse = decode(response, "POST /api/v1/auth/login").await?;
        let session = Client {
            http: self.http.clone(),
            base: self.base.clone(),
            auth: Auth::Session {
                cookie,
                csrf_token: login.csrf_token.clone(),
            },
        };
        Ok((login, session))
    }

    /// Sends any request and returns the status and the body as JSON (`null` when
    /// empty, a JSON string when the body is not JSON), whatever the status. An
    /// escape hatch for tests that need odd requests; `path` starts with `/`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut builder = self.builder(method, path)?;
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder
            .send()
            .await
            .map_err(|source| ClientError::http(&self.base, source))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::http(&self.base, source))?;
        if bytes.is_empty() {
            return Ok((status, serde_json::Value::Null));
        }
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok((status, value))
    }

    /// The absolute URL of an API path such as `/api/v1/projects`.
    pub fn url(&self, path: &str) -> Result<Url> {
        join_url(&self.base, path)
    }

    fn builder(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        Ok(self
            .streaming_builder(method, path)?
            .timeout(REQUEST_TIMEOUT))
    }

    /// Like `builder` but without the overall timeout, for long-lived responses.
    fn streaming_builder(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let url = self.url(path)?;
        let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let builder = self.http.request(method, url);
        Ok(match &self.auth {
            Auth::Anonymous => builder,
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::Session { cookie, csrf_token } => {
                let builder = builder.header(COOKIE, cookie);
                if safe {
                    builder
                } else {
                    builder.header(CSRF_HEADER, csrf_token)
                }
            }
        })
    }

    /// Sends and turns any non-2xx answer into [`ClientError::Api`].
    async fn execute(&self, builder: RequestBuilder) -> Result<Response> {
        let response = builder
            .send()
            .await
            .map_err(|source| ClientError::http(&self.base, source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        Err(ClientError::from_body(status, &bytes))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.execute(self.builder(Method::GET, path)?).await?;
        decode(response, &format!("GET {path}")).await
    }

    async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T> {
        let builder = self.builder(Method::GET, path)?.query(query);
        let response = self.execute(builder).await?;
        decode(response, &format!("GET {path}")).await
    }

    async fn send_json<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let what = format!("{method} {path}");
        let builder = self.builder(method, path)?.json(body);
        let response = self.execute(builder).await?;
        decode(response, &what).await
    }

    /// For routes answering 204 No Content.
    async fn send_no_content<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<()> {
        let mut builder = self.builder(method, path)?;
        if let Some(body) = body {
            builder = builder.json(body);
        }
        self.execute(builder).await?;
        Ok(())
    }
}

/// The `name=value` pair of the `Set-Cookie` header, to send back as `Cookie`.
fn session_cookie(response: &Response) -> Option<HeaderValue> {
    let pair = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .map(str::trim)
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(_, value)| !value.is_empty())
        })?;
    HeaderValue::from_str(pair).ok()
}

async fn decode<T: DeserializeOwned>(response: Response, what: &str) -> Result<T> {
    let url = response.url().to_string();
    let bytes = response
        .bytes()
        .await
        .map_err(|source| ClientError::http(&url, source))?;
    serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode {
        what: what.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one canned HTTP answer and hands back the request it got.
    pub(crate) async fn serve_once(answer: String) -> (String, tokio::task::JoinHandle<String>) {
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

    #[test]
    fn debug_hides_the_token() {
        let client = Client::new("http://h", Some("nsk_secret".into())).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("nsk_secret"), "{shown}");
        assert!(shown.contains("bearer"));
    }
}

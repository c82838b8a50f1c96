//! A small client of the Consul agent's HTTP API (reqwest): health queries
//! for discovery, the Connect CA and intentions for mesh TLS (`connect`;
//! their L7 permissions: `permissions`), and KV reads for the configuration
//! source (`?raw`: the value itself, no base64), all as blocking queries,
//! and the agent's service registration endpoints (`agent.rs`).
//!
//! The agent address comes from `consul.address`, else `CONSUL_HTTP_ADDR`,
//! else `http://127.0.0.1:8500`; the ACL token from `consul.token`, else
//! `consul.token_file`, else `CONSUL_HTTP_TOKEN`. The token travels in the
//! `X-Consul-Token` header only and is never logged (it is a [`Secret`]);
//! redirects are not followed, so it never reaches another host.
//! Errors say what Consul answered (status and a body excerpt).
//!
//! `https://` agents are verified against `consul.ca_file` (else
//! `CONSUL_CACERT`) only — there is no system trust store here — and an
//! agent with `verify_incoming` gets the client certificate and key of
//! `consul.client_cert` / `consul.client_key` (else `CONSUL_CLIENT_CERT` /
//! `CONSUL_CLIENT_KEY`), as the Consul CLI reads them. rustls with the ring
//! provider. Rejects an `https://` address without a CA file, and schemes
//! other than `http` and `https`.

pub mod agent;
pub mod blocking;
pub mod connect;
pub mod health;
pub mod permissions;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::config::{ConsulConfig, Secret};
use crate::error::error_chain;

pub use health::ServiceEntry;

/// Default agent address.
const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";
/// Most body characters quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// What went wrong talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid Consul address `{address}`: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot read the Consul token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the Consul HTTP client: {0}")]
    Client(String),
    #[error("Consul TLS: {0}")]
    Tls(String),
    #[error("Consul request failed: {0}")]
    Transport(String),
    #[error("Consul answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error(
        "Consul answered {status} to `{location}`: redirects are not followed (the ACL token \
         would go along); set consul.address to the agent itself"
    )]
    Redirect {
        status: StatusCode,
        location: String,
    },
    #[error("Consul answered with a body that is not {what} ({reason}): {body}")]
    Body {
        what: &'static str,
        reason: String,
        body: String,
    },
    #[error("Consul answered without a valid X-Consul-Index header")]
    Index,
}

/// One watched health query; also the key that lets upstreams share a watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthQuery {
    pub service: String,
    pub tags: Vec<String>,
    pub datacenter: Option<String>,
    pub passing_only: bool,
    pub connect: bool,
}

/// A successful answer.
#[derive(Debug)]
pub struct HealthAnswer {
    /// `X-Consul-Index`.
    pub index: u64,
    pub entries: Vec<ServiceEntry>,
}

/// A KV read.
#[derive(Debug)]
pub struct KvAnswer {
    /// `X-Consul-Index`.
    pub index: u64,
    /// `None` when the key does not exist.
    pub value: Option<String>,
}

/// The files of TLS to an `https://` agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) that sign the agent's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and private key (PEM), for `verify_incoming`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A Consul agent client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
    wait: Duration,
}

impl Client {
    /// Builds the client from the `consul` section and the process
    /// environment (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`).
    pub fn from_config(config: &ConsulConfig) -> Result<Client, ConsulError> {
        Client::from_config_with_env(config, &|name| std::env::var(name).ok())
    }

    /// [`from_config`](Self::from_config) with the environment looked up
    /// through `env`.
    pub fn from_config_with_env(
        config: &ConsulConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Client, ConsulError> {
        let address = config
            .address
            .clone()
            .or_else(|| env("CONSUL_HTTP_ADDR"))
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let token = match (&config.token, &config.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConsulError::TokenFile {
                        path: path.display().to_string(),
                        source,
                    })?;
                Some(Secret::new(text.trim()))
            }
            (None, None) => env("CONSUL_HTTP_TOKEN").map(Secret::new),
        }
        .filter(|token| !token.expose().is_empty());
        let file = |configured: &Option<PathBuf>, variable: &str| {
            configured
                .clone()
                .or_else(|| env(variable).map(PathBuf::from))
        };
        let tls = TlsFiles {
            ca_file: file(&config.ca_file, "CONSUL_CACERT"),
            client_cert: file(&config.client_cert, "CONSUL_CLIENT_CERT"),
            client_key: file(&config.client_key, "CONSUL_CLIENT_KEY"),
        };
        Client::new(&address, token, config.wait, &tls)
    }

    /// A client of the agent at `address` (`http://host:port`,
    /// `https://host:port`, or a bare `host:port` as `CONSUL_HTTP_ADDR`
    /// allows); `tls` is used for `https://` only.
    pub fn new(
        address: &str,
        token: Option<Secret>,
        wait: Duration,
        tls: &TlsFiles,
    ) -> Result<Client, ConsulError> {
        let invalid = |reason: String| ConsulError::Address {
            address: address.to_owned(),
            reason,
        };
        let with_scheme = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let base = Url::parse(&with_scheme).map_err(|error| invalid(error.to_string()))?;
        // reqwest's rustls needs a configuration even for plain HTTP (it
        // would otherwise look for a process-wide crypto provider).
        let tls_config = match base.scheme() {
            "http" => tls::plain_http_config()?,
            "https" => tls::client_config(tls)?,
            other => {
                return Err(invalid(format!(
                    "scheme `{other}`: only http:// and https:// are supported"
                )));
            }
        };
        // No redirects: the token would follow them to any host (reqwest
        // keeps custom headers); a 3xx is an error (see `send`).
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(tls_config)
            .build()
            .map_err(|error| ConsulError::Client(error_chain(&error)))?;
        Ok(Client {
            http,
            base,
            token,
            wait,
        })
    }

    /// The blocking-query wait.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// `GET /v1/health/service/:name` (or `/v1/health/connect/:name`). With
    /// `index` > 0 this is a blocking query: Consul answers when the result
    /// changes past `index` or after the wait.
    pub async fn health(
        &self,
        query: &HealthQuery,
        index: u64,
    ) -> Result<HealthAnswer, ConsulError> {
        let kind = if query.connect { "connect" } else { "service" };
        let mut params: Vec<(&str, String)> = Vec::new();
        if query.passing_only {
            params.push(("passing", "1".into()));
        }
        for tag in &query.tags {
            params.push(("tag", tag.clone()));
        }
        if let Some(dc) = &query.datacenter {
            params.push(("dc", dc.clone()));
        }
        let (index, entries) = self
            .blocking_get(
                &["health", kind, &query.service],
                params,
                index,
                "a health list",
            )
            .await?;
        Ok(HealthAnswer { index, entries })
    }

    /// `GET /v1/kv/:key?raw`: the key's value as text, `None` when the key
    /// does not exist (404). With `index` > 0 this is a blocking query.
    pub async fn kv(&self, key: &str, index: u64) -> Result<KvAnswer, ConsulError> {
        let mut path = vec!["kv"];
        path.extend(key.split('/'));
        let params = vec![("raw", String::new())];
        let answer = self.get(&path, params, index).await?;
        let value = match answer.status {
            StatusCode::NOT_FOUND => None,
            status if status.is_success() => {
                Some(String::from_utf8(answer.body.to_vec()).map_err(|error| {
                    ConsulError::Body {
                        what: "a KV value",
                        reason: format!("the value is not UTF-8 ({error})"),
                        body: excerpt(&answer.body),
                    }
                })?)
            }
            _ => return Err(status_error(answer.status, &answer.body)),
        };
        let index = answer.index.ok_or(ConsulError::Index)?;
        Ok(KvAnswer { index, value })
    }

    /// A blocking `GET /v1/<path>` (blocking when `index` > 0) whose body is
    /// `T` as JSON (`what` names it in errors); returns `X-Consul-Index` too.
    pub(crate) async fn blocking_get<T: serde::de::DeserializeOwned>(
        &self,
        path: &[&str],
        params: Vec<(&str, String)>,
        index: u64,
        what: &'static str,
    ) -> Result<(u64, T), ConsulError> {
        let answer = self.get(path, params, index).await?;
        if !answer.status.is_success() {
            return Err(status_error(answer.status, &answer.body));
        }
        let value = serde_json::from_slice(&answer.body).map_err(|error| ConsulError::Body {
            what,
            reason: error.to_string(),
            body: excerpt(&answer.body),
        })?;
        let index = answer.index.ok_or(ConsulError::Index)?;
        Ok((index, value))
    }

    /// A GET of `/v1/<path>` with `params`; blocking (index + wait) when `index` > 0.
    async fn get(
        &self,
        path: &[&str],
        mut params: Vec<(&str, String)>,
        index: u64,
    ) -> Result<RawAnswer, ConsulError> {
        let mut segments = vec!["v1"];
        segments.extend_from_slice(path);
        let url = self.url(&segments)?;
        if index > 0 {
            params.push(("index", index.to_string()));
            params.push(("wait", format!("{}ms", self.wait.as_millis())));
        }
        let request = self
            .http
            .get(url)
            .query(&params)
            .timeout(blocking::request_timeout(self.wait));
        let response = self.send(request).await?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let body = response.bytes().await.map_err(transport)?;
        Ok(RawAnswer {
            status,
            index,
            body,
        })
    }

    /// The agent URL with `segments` as its path (each one escaped).
    fn url(&self, segments: &[&str]) -> Result<Url, ConsulError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ConsulError::Address {
                address: self.base.to_string(),
                reason: "cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends `request` with the ACL token; a redirect is an error.
    async fn send(&self, mut request: RequestBuilder) -> Result<Response, ConsulError> {
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        let response = request.send().await.map_err(transport)?;
        if response.status().is_redirection() {
            let location = (response.headers().get(reqwest::header::LOCATION))
                .map(|location| String::from_utf8_lossy(location.as_bytes()).into_owned());
            return Err(ConsulError::Redirect {
                status: response.status(),
                location: location.unwrap_or_default(),
            });
        }
        Ok(response)
    }
}

fn transport(error: reqwest::Error) -> ConsulError {
    ConsulError::Transport(error_chain(&error))
}

/// The body of a 2xx answer, or the error saying what Consul answered.
async fn success_body(response: Response) -> Result<bytes::Bytes, ConsulError> {
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    if !status.is_success() {
        return Err(status_error(status, &body));
    }
    Ok(body)
}

/// An answer before its body is interpreted.
struct RawAnswer {
    status: StatusCode,
    /// `X-Consul-Index`, when valid.
    index: Option<u64>,
    body: bytes::Bytes,
}

/// The error for a non-2xx answer: its status and a body excerpt.
fn status_error(status: StatusCode, body: &[u8]) -> ConsulError {
    ConsulError::Status {
        status,
        body: excerpt(body),
    }
}

/// The start of `body` as one printable line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    excerpt.trim().to_owned()
}

/// A body from Consul's API documentation, kept in `tests/fixtures/consul-api/`.
#[cfg(test)]
pub(crate) fn documented_body(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/consul-api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let wait = Duration::from_secs(1);
        let no_tls = TlsFiles::default();
        assert!(Client::new("http://127.0.0.1:8500", None, wait, &no_tls).is_ok());
        let bare = Client::new("127.0.0.1:8500", None, wait, &no_tls).expect("bare host:port");
        assert_eq!(bare.base.as_str(), "http://127.0.0.1:8500/");
        let https = Client::new("https://consul:8501", None, wait, &no_tls).unwrap_err();
        assert!(https.to_string().contains("ca_file"), "{https}");
        let unix = Client::new("unix:///run/consul.sock", None, wait, &no_tls).unwrap_err();
        assert!(unix.to_string().contains("scheme `unix`"), "{unix}");
    }

    #[test]
    fn address_and_token_sources_in_order() {
        let none = |_: &str| None;
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("10.0.0.9:8500".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("from-env".to_owned()),
            _ => None,
        };
        let mut config = ConsulConfig::default();
        let client = Client::from_config_with_env(&config, &none).expect("defaults");
        assert_eq!(client.base.as_str(), "http://127.0.0.1:8500/");
        assert!(client.token.is_none());
        assert_eq!(client.wait(), Duration::from_secs(300));

        let client = Client::from_config_with_env(&config, &env).expect("from env");
        assert_eq!(client.base.as_str(), "http://10.0.0.9:8500/");
        assert_eq!(client.token.as_ref().map(Secret::expose), Some("from-env"));

        let file = std::env::temp_dir().join(format!("remora-token-unit-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").expect("write token file");
        config.address = Some("http://consul.local:8500".into());
        config.token_file = Some(file.clone());
        let client = Client::from_config_with_env(&config, &env).expect("from file");
        assert_eq!(client.base.as_str(), "http://consul.local:8500/");
        assert_eq!(client.token.as_ref().map(Secret::expose), Some("from-file"));

        config.token = Some(Secret::new("inline"));
        let client = Client::from_config_with_env(&config, &env).expect("inline");
        assert_eq!(client.token.as_ref().map(Secret::expose), Some("inline"));
        std::fs::remove_file(&file).expect("remove token file");

        config.token = None;
        let missing = Client::from_config_with_env(&config, &env).unwrap_err();
        assert!(missing.to_string().contains("token file"), "{missing}");
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt(b"ACL not found\n"), "ACL not found");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let client = Client::new(
            "http://127.0.0.1:8500",
            Some(Secret::new("s3cr3t")),
            Duration::from_secs(1),
            &TlsFiles::default(),
        )
        .expect("client");
        assert!(!format!("{client:?}").contains("s3cr3t"));
    }
}

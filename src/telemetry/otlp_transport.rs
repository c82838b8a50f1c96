//! How an encoded `ExportTraceServiceRequest` reaches the collector: its
//! settings (`tracing.otlp`, then the OpenTelemetry exporter environment
//! variables for what the section leaves unset) and the two OTLP
//! transports, over `http://` or `https://`:
//!
//! * `http/protobuf`: `POST <endpoint>` with `content-type:
//!   application/x-protobuf`; a 2xx is success.
//! * `grpc`: the unary call `TraceService/Export` on HTTP/2 (`h2` by ALPN
//!   over TLS, prior knowledge over `http://`): the message in one
//!   length-prefixed gRPC frame, `te: trailers`; success is HTTP 200 with
//!   `grpc-status: 0` (in the trailers, or the headers of a trailers-only
//!   answer). A reqwest client over HTTP/2 is all it takes, so tonic stays a
//!   test-only dependency.
//!
//! Both send the configured headers, and with `compression: gzip` a gzipped
//! body (`content-encoding: gzip`; for gRPC, the frame's compressed flag and
//! `grpc-encoding: gzip`). An `https://` collector must chain to `ca_file`
//! when set, else to the system's roots. The client keeps its connections
//! between batches.
//!
//! Environment (used only for what the section does not set; the
//! `_TRACES_` form wins over the general one, as the specification says):
//! `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT` (the general one is a base URL:
//! `/v1/traces` is appended for `http/protobuf`), `…_PROTOCOL` (`grpc`,
//! `http/protobuf`), `…_HEADERS` (`name=value,…`, values percent-decoded),
//! `…_COMPRESSION` (`gzip`, `none`), `…_CERTIFICATE` (a CA file).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::BodyExt;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{OtlpCompression, OtlpConfig, OtlpProtocol};
use crate::error::error_chain;
use crate::headers::{GRPC_MESSAGE, GRPC_STATUS};

/// The gRPC method of a trace export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where and how batches go, resolved at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: HeaderMap,
    pub gzip: bool,
    pub ca_file: Option<PathBuf>,
}

impl Settings {
    /// `config`, completed from `env` (the process environment in use);
    /// reads header value files.
    pub fn resolve(
        config: &OtlpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let otel = |name: &str| {
            env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .map(|value| (value, true))
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")).map(|value| (value, false)))
        };
        let protocol = match (config.protocol, otel("PROTOCOL")) {
            (Some(protocol), _) => protocol,
            (None, None) => OtlpProtocol::HttpProtobuf,
            (None, Some((value, _))) => match value.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => bail!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL `{other}`: remora speaks grpc and http/protobuf"
                ),
            },
        };
        let endpoint = match (&config.endpoint, otel("ENDPOINT")) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some((endpoint, true))) => endpoint,
            (None, Some((base, false))) if protocol == OtlpProtocol::HttpProtobuf => {
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, Some((base, false))) => base,
            (None, None) => match protocol {
                OtlpProtocol::HttpProtobuf => "http://127.0.0.1:4318/v1/traces".to_owned(),
                OtlpProtocol::Grpc => "http://127.0.0.1:4317".to_owned(),
            },
        };
        let uri: http::Uri = endpoint
            .parse()
            .with_context(|| format!("OTLP endpoint `{endpoint}`"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            bail!("OTLP endpoint `{endpoint}`: must be an http:// or https:// URL with a host");
        }
        let mut headers = HeaderMap::new();
        if config.headers.is_empty()
            && let Some((list, _)) = otel("HEADERS")
        {
            for pair in list.split(',').filter(|pair| !pair.trim().is_empty()) {
                let (name, value) = pair.split_once('=').with_context(|| {
                    format!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}` is not name=value")
                })?;
                let value = percent_encoding::percent_decode_str(value.trim())
                    .decode_utf8()
                    .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}`"))?;
                insert_header(&mut headers, name.trim(), &value)?;
            }
        }
        for configured in &config.headers {
            let value = match (&configured.value, &configured.value_file) {
                (Some(value), _) => value.expose().to_owned(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .with_context(|| {
                        format!(
                            "tracing.otlp.headers `{}`: {}",
                            configured.name,
                            file.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
                (None, None) => bail!("tracing.otlp.headers `{}` has no value", configured.name),
            };
            insert_header(&mut headers, &configured.name, &value)?;
        }
        let gzip = match (config.compression, otel("COMPRESSION")) {
            (Some(compression), _) => compression == OtlpCompression::Gzip,
            (None, None) => false,
            (None, Some((value, _))) => match value.trim() {
                "gzip" => true,
                "none" | "" => false,
                other => bail!("OTEL_EXPORTER_OTLP_COMPRESSION `{other}`: gzip or none"),
            },
        };
        let ca_file =
            (config.ca_file.clone()).or_else(|| otel("CERTIFICATE").map(|(path, _)| path.into()));
        Ok(Self {
            endpoint,
            protocol,
            headers,
            gzip,
            ca_file,
        })
    }
}

fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) -> anyhow::Result<()> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .with_context(|| format!("OTLP header name `{name}`"))?;
    let mut value = HeaderValue::from_str(value)
        .with_context(|| format!("OTLP header `{name}`: the value is not a valid header value"))?;
    value.set_sensitive(true);
    headers.append(name, value);
    Ok(())
}

/// A client for one collector.
pub struct Transport {
    client: reqwest::Client,
    url: reqwest::Url,
    protocol: OtlpProtocol,
    gzip: bool,
}

impl Transport {
    pub fn new(settings: &Settings, timeout: Duration) -> anyhow::Result<Self> {
        let mut url = reqwest::Url::parse(&settings.endpoint)
            .with_context(|| format!("OTLP endpoint `{}`", settings.endpoint))?;
        if settings.protocol == OtlpProtocol::Grpc {
            url.set_path(GRPC_EXPORT);
            url.set_query(None);
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(settings.ca_file.as_ref(), url.scheme() == "https")?)
        .with_no_client_auth();
        tls.alpn_protocols = match settings.protocol {
            OtlpProtocol::Grpc => vec![b"h2".to_vec()],
            OtlpProtocol::HttpProtobuf => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .default_headers(settings.headers.clone())
            .tls_backend_preconfigured(tls);
        if settings.protocol == OtlpProtocol::Grpc {
            builder = builder.http2_prior_knowledge();
        }
        Ok(Self {
            client: builder.build().context("the OTLP client")?,
            url,
            protocol: settings.protocol,
            gzip: settings.gzip,
        })
    }

    /// Sends one encoded export request; `Err` says why it failed.
    pub async fn export(&self, message: Vec<u8>) -> Result<(), String> {
        let message = if self.gzip { gzip(&message) } else { message };
        match self.protocol {
            OtlpProtocol::HttpProtobuf => self.post(message).await,
            OtlpProtocol::Grpc => self.call(message).await,
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let mut request = (self.client.post(self.url.clone()))
            .header(header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            request = request.header(header::CONTENT_ENCODING, "gzip");
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("collector answered {status}")),
        }
    }

    async fn call(&self, message: Vec<u8>) -> Result<(), String> {
        let mut frame = BytesMut::with_capacity(message.len() + 5);
        frame.put_u8(u8::from(self.gzip));
        frame.put_u32(u32::try_from(message.len()).map_err(|_| "export request over 4 GiB")?);
        frame.put_slice(&message);
        let mut request = (self.client.post(self.url.clone()))
            .version(http::Version::HTTP_2)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers");
        if self.gzip {
            request = request.header("grpc-encoding", "gzip");
        }
        let response = request
            .body(Bytes::from(frame))
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(format!("collector answered HTTP {status}"));
        }
        let response: http::Response<reqwest::Body> = response.into();
        let (head, body) = response.into_parts();
        let collected = body.collect().await.map_err(|e| error_chain(&e))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let grpc_status = |headers: &HeaderMap| {
            let status = headers.get(GRPC_STATUS)?.to_str().ok()?.to_owned();
            let message = (headers.get(GRPC_MESSAGE))
                .and_then(|m| m.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            Some((status, message))
        };
        match grpc_status(&trailers).or_else(|| grpc_status(&head.headers)) {
            Some((status, _)) if status == "0" => Ok(()),
            Some((status, message)) => {
                Err(format!("collector answered grpc-status {status} {message}"))
            }
            None => Err("collector answered without a grpc-status".to_owned()),
        }
    }
}

/// `ca_file`'s certificates, or the system's roots for an https:// endpoint
/// without one (none needed for http://).
fn roots(ca_file: Option<&PathBuf>, https: bool) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("tracing.otlp.ca_file {}", path.display()))?;
            if certs.is_empty() {
                bail!(
                    "tracing.otlp.ca_file {}: no PEM certificate",
                    path.display()
                );
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        None if https => {
            let system = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                bail!(
                    "an https:// OTLP endpoint needs tracing.otlp.ca_file: no system root certificates found"
                );
            }
        }
        None => {}
    }
    Ok(roots)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

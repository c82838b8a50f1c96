//! Where a provider's keys come from and how they stay current: a JWKS file
//! or URL, loaded at start and every `refresh`, and early when a token names
//! a `kid` the set does not hold — at most once per [`EARLY_REFRESH_EVERY`],
//! the request waiting for that load (bounded by the fetch timeout). A load
//! that fails (unreachable server, HTTP error, not a JWKS) keeps the last
//! good set, is logged and counted (`remora_jwt_jwks_fetches_total`), and
//! is tried again after 1 s, doubling up to `refresh`. The loading task
//! holds the source weakly and ends once the stack using it is gone (a
//! reload that changed it, or shutdown); nothing it does can fail the proxy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use super::keys::KeySet;
use crate::config::JwksConfig;
use crate::error::error_chain;
use crate::telemetry::metrics::jwks_fetches;

/// The least time between two early refreshes of one provider's keys.
pub(super) const EARLY_REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How long one fetch of a JWKS URL may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a JWKS document may weigh.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// One provider's current keys and where they come from.
pub(super) struct KeySource {
    provider: Arc<str>,
    origin: Origin,
    current: ArcSwap<KeySet>,
    /// A hash of the JWKS document in use (0 before the first): which keys
    /// a cached verification was made with.
    version: AtomicU64,
    /// Counts finished loads (good or not), so a request can wait for one.
    loads: watch::Sender<u64>,
    loading: AtomicBool,
    last_early: Mutex<Option<Instant>>,
    wake: Arc<Notify>,
}

enum Origin {
    File(PathBuf),
    Url {
        client: reqwest::Client,
        url: reqwest::Url,
    },
    /// A URL no client could be made for (its CA file, say): every load fails.
    Broken(String),
}

impl KeySource {
    /// A source for `jwks`; a file is read at once, and the refresh task
    /// (the first fetch of a URL included) starts on the current runtime.
    pub(super) fn start(provider: &str, jwks: &JwksConfig) -> Arc<KeySource> {
        let origin = match (&jwks.file, &jwks.url) {
            (Some(file), _) => Origin::File(file.clone()),
            (None, Some(url)) => match client(url, jwks.ca_file.as_deref()) {
                Ok((client, url)) => Origin::Url { client, url },
                Err(error) => Origin::Broken(error),
            },
            (None, None) => Origin::Broken("no file and no url".to_owned()),
        };
        let source = Arc::new(KeySource {
            provider: provider.into(),
            origin,
            current: ArcSwap::default(),
            version: AtomicU64::new(0),
            loads: watch::Sender::new(0),
            loading: AtomicBool::new(false),
            last_early: Mutex::new(None),
            wake: Arc::new(Notify::new()),
        });
        let first_load = matches!(source.origin, Origin::File(_)).then(|| source.load_file_now());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let skip_first = first_load == Some(true);
            runtime.spawn(keep_current(
                Arc::downgrade(&source),
                Arc::clone(&source.wake),
                jwks.refresh,
                skip_first,
            ));
        }
        source
    }

    pub(super) fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Which JWKS document is in use (a hash of it).
    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Asks for an early load (a token named an unknown key) and waits for
    /// it; returns at once when the last early load is too recent and none
    /// is under way.
    pub(super) async fn refresh_early(&self) {
        let mut loads = self.loads.subscribe();
        let before = *loads.borrow_and_update();
        {
            let mut last = self
                .last_early
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= EARLY_REFRESH_EVERY);
            if due {
                *last = Some(Instant::now());
                self.wake.notify_one();
            } else if !self.loading.load(Ordering::Acquire) {
                return;
            }
        }
        let wait = loads.wait_for(|count| *count > before);
        let _ = tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), wait).await;
    }

    /// The first synchronous read of a file source; true when it succeeded.
    fn load_file_now(&self) -> bool {
        let Origin::File(path) = &self.origin else {
            return false;
        };
        let loaded = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()));
        self.install(loaded)
    }

    async fn load(&self) -> bool {
        self.loading.store(true, Ordering::Release);
        let loaded = match &self.origin {
            Origin::File(path) => (tokio::fs::read(path).await)
                .map_err(|error| format!("{}: {error}", path.display())),
            Origin::Url { client, url } => fetch(client, url).await,
            Origin::Broken(reason) => Err(reason.clone()),
        };
        let ok = self.install(loaded);
        self.loading.store(false, Ordering::Release);
        ok
    }

    /// Installs a loaded document when it is a JWKS; counts and logs either way.
    fn install(&self, loaded: Result<Vec<u8>, String>) -> bool {
        let parsed = loaded.and_then(|bytes| Ok((KeySet::parse(&bytes)?, xxh3_64(&bytes))));
        let ok = parsed.is_ok();
        jwks_fetches(&self.provider, ok).increment(1);
        match parsed {
            Ok(((keys, skipped), version)) => {
                tracing::debug!(provider = %self.provider, keys = keys.len(), skipped, "JWKS loaded");
                self.current.store(Arc::new(keys));
                self.version.store(version, Ordering::Release);
            }
            Err(error) => tracing::warn!(
                provider = %self.provider,
                %error,
                "loading the JWKS failed; the last good keys stay in use"
            ),
        }
        self.loads.send_modify(|count| *count += 1);
        ok
    }
}

/// Loads `source` every `refresh` (sooner after a failure, at once when
/// woken) until it is dropped.
async fn keep_current(
    source: Weak<KeySource>,
    wake: Arc<Notify>,
    refresh: Duration,
    skip_first: bool,
) {
    let mut retry = FIRST_RETRY;
    let mut wait = if skip_first { refresh } else { Duration::ZERO };
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
        let Some(source) = source.upgrade() else {
            return;
        };
        wait = if source.load().await {
            retry = FIRST_RETRY;
            refresh
        } else {
            let now = retry.min(refresh);
            retry = (retry * 2).min(refresh);
            now
        };
    }
}

/// A client for `url`: rustls with ring, trusting `ca_file` or the system's roots.
fn client(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(reqwest::Client, reqwest::Url), String> {
    let url = reqwest::Url::parse(url).map_err(|error| format!("{url}: {error}"))?;
    let mut roots = rustls::RootCertStore::empty();
    if url.scheme() == "https" {
        let certificates = match ca_file {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|error| format!("{}: {error}", path.display()))?
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err("no CA certificate to verify the JWKS server with".to_owned());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|error| error.to_string())?;
    Ok((client, url))
}

/// The body of `GET url`, when it answers 200 within the size limit.
async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> Result<Vec<u8>, String> {
    let failed = |error: reqwest::Error| format!("{url}: {}", error_chain(&error));
    let mut response = client.get(url.clone()).send().await.map_err(failed)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("{url}: more than {MAX_JWKS_BYTES} bytes"));
        }
    }
    Ok(body)
}

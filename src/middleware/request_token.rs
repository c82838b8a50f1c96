//! Attaches a token read from a file to outbound requests (`request_token`
//! of an upstream or a route), so an application calls a JWT-protected API
//! without code: a Kubernetes projected service-account token, or any
//! token another process keeps fresh in a file.
//!
//! The file is read when the layer is built and again every
//! `reload_interval`; its content (surrounding whitespace trimmed) becomes
//! the header's value — `Bearer <token>` for `authorization` — marked
//! sensitive (HTTP/2: never indexed). A read that fails, or finds the file
//! empty or not a valid header value, keeps the last good token and is
//! logged once until a read succeeds again; before any good read, requests
//! go without a token. A header the application set itself is kept unless
//! `overwrite`. The reading task holds the token weakly and ends with the
//! stack.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue, Request, header};
use tower::{Layer, Service};

use crate::config::RequestTokenConfig;

/// Sets the token of a file on every request.
#[derive(Clone)]
pub struct RequestTokenLayer {
    token: Arc<TokenFile>,
}

struct TokenFile {
    path: PathBuf,
    header: HeaderName,
    overwrite: bool,
    current: ArcSwapOption<HeaderValue>,
    failing: AtomicBool,
}

impl RequestTokenLayer {
    /// Reads the file now and, on the current runtime, every `reload_interval`.
    pub fn new(config: &RequestTokenConfig) -> Self {
        let header =
            HeaderName::from_bytes(config.header.as_bytes()).unwrap_or(header::AUTHORIZATION);
        let token = Arc::new(TokenFile {
            path: config.file.clone(),
            header,
            overwrite: config.overwrite,
            current: ArcSwapOption::empty(),
            failing: AtomicBool::new(false),
        });
        token.read();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reread(Arc::downgrade(&token), config.reload_interval));
        }
        Self { token }
    }
}

async fn reread(token: Weak<TokenFile>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(token) = token.upgrade() else {
            return;
        };
        token.read();
    }
}

impl TokenFile {
    fn read(&self) {
        let value = std::fs::read_to_string(&self.path)
            .map_err(|error| error.to_string())
            .and_then(|text| self.value_of(text.trim()));
        match value {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(file = %self.path.display(), "request_token: the token file is read again");
                }
                self.current.store(Some(Arc::new(value)));
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        file = %self.path.display(),
                        %error,
                        "request_token: cannot read the token file; the last good token stays in use"
                    );
                }
            }
        }
    }

    fn value_of(&self, token: &str) -> Result<HeaderValue, String> {
        if token.is_empty() {
            return Err("the file is empty".to_owned());
        }
        let text = if self.header == header::AUTHORIZATION {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl<S> Layer<S> for RequestTokenLayer {
    type Service = RequestToken<S>;
    fn layer(&self, inner: S) -> RequestToken<S> {
        RequestToken {
            inner,
            token: Arc::clone(&self.token),
        }
    }
}

#[derive(Clone)]
pub struct RequestToken<S> {
    inner: S,
    token: Arc<TokenFile>,
}

impl<S, B> Service<Request<B>> for RequestToken<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let token = &self.token;
        if (token.overwrite || !request.headers().contains_key(&token.header))
            && let Some(value) = token.current.load_full()
        {
            request
                .headers_mut()
                .insert(token.header.clone(), (*value).clone());
        }
        self.inner.call(request)
    }
}

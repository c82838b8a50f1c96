//! The listener's `path_normalization` applied to each request before any
//! other layer sees its path: the request URI's path is replaced by the
//! normalized one (query kept), so routes match, rewrite and forward the
//! same path (see `path_normalize`). A refused path is answered here with
//! 400 `bad_path`. `OPTIONS *` carries no path and passes as it is (a
//! `CONNECT` never gets here: `request_head` refuses it).

use std::borrow::Cow;
use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::config::PathNormalization;
use crate::error::ProxyError;
use crate::headers::is_grpc;
use crate::middleware::error_response::error_response;
use crate::path_normalize::{PathError, normalize};

/// Normalizes request paths as one listener's `path_normalization` says.
#[derive(Clone, Copy)]
pub struct NormalizePathLayer {
    options: PathNormalization,
}

impl NormalizePathLayer {
    pub fn new(options: &PathNormalization) -> Self {
        Self { options: *options }
    }
}

impl<S> Layer<S> for NormalizePathLayer {
    type Service = NormalizePath<S>;
    fn layer(&self, inner: S) -> NormalizePath<S> {
        NormalizePath {
            inner,
            options: self.options,
        }
    }
}

#[derive(Clone)]
pub struct NormalizePath<S> {
    inner: S,
    options: PathNormalization,
}

impl<S, B> Service<Request<B>> for NormalizePath<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<ResponseBody>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match normalized_uri(request.method(), request.uri(), &self.options) {
            Ok(Some(uri)) => *request.uri_mut() = uri,
            Ok(None) => {}
            Err(error) => {
                let grpc = is_grpc(request.headers());
                let response = error_response(&ProxyError::BadPath(error), grpc);
                return Either::Right(ready(Ok(response)));
            }
        }
        Either::Left(self.inner.call(request))
    }
}

/// The URI with its path normalized; `None` when it stays as it is.
fn normalized_uri(
    method: &Method,
    uri: &Uri,
    options: &PathNormalization,
) -> Result<Option<Uri>, PathError> {
    let path = uri.path();
    if method == Method::OPTIONS && path == "*" {
        return Ok(None);
    }
    let Cow::Owned(mut normalized) = normalize(path, options)? else {
        return Ok(None);
    };
    if let Some(query) = uri.query() {
        normalized.push('?');
        normalized.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    // Made of the characters of a valid path and `%XX` escapes: always valid.
    parts.path_and_query =
        Some(PathAndQuery::try_from(normalized).map_err(|_| PathError::NotAPath)?);
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| PathError::NotAPath)
}

//! The one place where a [`ProxyError`] becomes a response (README: Proxy-made
//! responses).
//!
//! HTTP clients get a status code and a one-line text body; gRPC clients
//! (request `content-type: application/grpc…`) get a trailers-only response:
//! HTTP 200 with `grpc-status` and `grpc-message` in the headers and no body.
//! Both carry `x-remora-error: <kind>`, and the response's extensions carry the
//! [`ErrorKind`] (and the endpoint, when one was involved) for metrics and logs.
//! A gRPC response to an HTTP/2 client whose body fails after its head (the
//! upstream reset the stream or closed, or `timeouts.idle` cut it) ends
//! with trailers saying so rather than a reset, which a gRPC client reads
//! as `INTERNAL` ([`ResponseBody::end_failure_with_grpc_status`]), as
//! Linkerd does.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::error::{ErrorKind, ProxyError, TokenRejection};
use crate::headers::{X_REMORA_ERROR, is_grpc, is_grpc_web, put_grpc_status};

/// HTTP status of a proxy-made response.
pub fn http_status(error: &ProxyError) -> StatusCode {
    match error {
        ProxyError::FaultAbort { status, .. } => *status,
        _ => match error.kind() {
            ErrorKind::NoEndpoints
            | ErrorKind::NoHealthyEndpoints
            | ErrorKind::CircuitOpen
            | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamProtocol
            | ErrorKind::NoRoute => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::FaultAbort => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ClientBody | ErrorKind::BadRequest | ErrorKind::BadPath => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        },
    }
}

/// gRPC status code of a proxy-made response (google.rpc.Code numbers).
pub fn grpc_status(error: &ProxyError) -> u16 {
    match error {
        ProxyError::FaultAbort {
            grpc_status: Some(code),
            ..
        } => *code,
        _ => match error.kind() {
            ErrorKind::NoEndpoints
            | ErrorKind::NoHealthyEndpoints
            | ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::UpstreamReset
            | ErrorKind::CircuitOpen
            | ErrorKind::Overloaded
            | ErrorKind::FaultAbort
            | ErrorKind::NoRoute => 14, // UNAVAILABLE
            ErrorKind::Timeout => 4,     // DEADLINE_EXCEEDED
            ErrorKind::RateLimited => 8, // RESOURCE_EXHAUSTED
            ErrorKind::ClientBody | ErrorKind::BadRequest | ErrorKind::UpstreamProtocol => 13, // INTERNAL
            ErrorKind::Forbidden => 7,        // PERMISSION_DENIED
            ErrorKind::BadPath => 3,          // INVALID_ARGUMENT
            ErrorKind::Unauthenticated => 16, // UNAUTHENTICATED
        },
    }
}

/// The response remora sends for `error`, in gRPC form when `grpc` is set.
pub fn error_response(error: &ProxyError, grpc: bool) -> Response<ResponseBody> {
    let kind = error.kind();
    let message = error.to_string();
    let mut response = if grpc {
        let mut response = Response::new(ResponseBody::empty());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        put_grpc_status(headers, grpc_status(error), &message);
        response
    } else {
        let mut response = Response::new(ResponseBody::local(format!("remora: {message}\n")));
        *response.status_mut() = http_status(error);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(X_REMORA_ERROR, HeaderValue::from_static(kind.as_str()));
    if let ProxyError::RateLimited { retry_after } = error {
        // Whole seconds, rounded up (RFC 9110 §10.2.3), never 0.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let ProxyError::Unauthenticated(reason) = error {
        headers.insert(header::WWW_AUTHENTICATE, bearer_challenge(*reason));
    }
    response.extensions_mut().insert(kind);
    if let Some(detail) = error.detail() {
        response.extensions_mut().insert(detail);
    }
    if let Some(addr) = error.endpoint() {
        response.body_mut().set_served_by(addr);
    }
    response
}

/// The `www-authenticate` challenge of RFC 6750 §3: a request without a
/// token gets `Bearer` alone (§3.1: no error code when no credentials were
/// sent), an invalid token `Bearer error="invalid_token"` with what was
/// wrong (never the token).
fn bearer_challenge(reason: TokenRejection) -> HeaderValue {
    match reason {
        TokenRejection::Missing => HeaderValue::from_static("Bearer"),
        _ => HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{reason}\""
        ))
        .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    }
}

/// Turns the inner service's errors into responses.
#[derive(Clone, Copy, Default)]
pub struct ErrorResponseLayer;

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;
    fn layer(&self, inner: S) -> ErrorResponse<S> {
        ErrorResponse { inner }
    }
}

#[derive(Clone)]
pub struct ErrorResponse<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ErrorResponse<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        // Trailers reach an HTTP/2 client only (hyper's HTTP/1.1 server
        // drops undeclared ones, and would end the cut body as if whole);
        // gRPC-web has its status in the body.
        let trailers_tell =
            grpc && request.version() == Version::HTTP_2 && !is_grpc_web(request.headers());
        let response = self.inner.call(request);
        crate::svc::boxed(|| async move {
            Ok(match response.await {
                Ok(mut response) => {
                    if trailers_tell && is_grpc(response.headers()) {
                        response.body_mut().end_failure_with_grpc_status();
                    }
                    response
                }
                Err(error) => error_response(&error, grpc),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_form_has_status_kind_and_message() {
        let response = error_response(&ProxyError::Timeout(Duration::from_secs(2)), false);
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[X_REMORA_ERROR], "timeout");
        assert_eq!(
            response.extensions().get::<ErrorKind>(),
            Some(&ErrorKind::Timeout)
        );
    }

    #[test]
    fn grpc_form_is_trailers_only() {
        let error = ProxyError::NoEndpoints {
            upstream: "api".into(),
        };
        let response = error_response(&error, true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()[X_REMORA_ERROR], "no_endpoints");
        assert_eq!(
            response.headers()["grpc-message"],
            "upstream \"api\" has no endpoints"
        );
        assert!(http_body::Body::is_end_stream(response.body()));
    }

    #[test]
    fn rate_limited_has_retry_after_in_whole_seconds() {
        let limited = ProxyError::RateLimited {
            retry_after: Duration::from_millis(1200),
        };
        let response = error_response(&limited, false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(error_response(&limited, true).headers()["grpc-status"], "8");
    }

    #[test]
    fn fault_abort_uses_the_configured_statuses() {
        let abort = ProxyError::FaultAbort {
            status: StatusCode::IM_A_TEAPOT,
            grpc_status: Some(10),
        };
        assert_eq!(
            error_response(&abort, false).status(),
            StatusCode::IM_A_TEAPOT
        );
        assert_eq!(error_response(&abort, true).headers()["grpc-status"], "10");
    }

    #[test]
    fn forbidden_is_403_or_permission_denied() {
        let denied = ProxyError::Forbidden {
            peer: "spiffe://td/ns/default/dc/dc1/svc/web".into(),
        };
        let response = error_response(&denied, false);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[X_REMORA_ERROR], "forbidden");
        assert_eq!(error_response(&denied, true).headers()["grpc-status"], "7");
    }
}

//! The one place where a [`ProxyError`] becomes a response (architecture §5).
//!
//! HTTP clients get a status code and a one-line text body; gRPC clients
//! (request `content-type: application/grpc…`) get a trailers-only response:
//! HTTP 200 with `grpc-status` and `grpc-message` in the headers and no body.
//! Both carry `x-remora-error: <kind>`, and the response's extensions carry the
//! [`ErrorKind`] (and the endpoint, when one was involved) for metrics and logs.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::ServedBy;
use crate::headers::{X_REMORA_ERROR, is_grpc};

/// HTTP status for an error kind.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamReset => {
            StatusCode::BAD_GATEWAY
        }
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// gRPC status code for an error kind (google.rpc.Code numbers).
pub fn grpc_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NoEndpoints
        | ErrorKind::ConnectFailed
        | ErrorKind::ConnectTimeout
        | ErrorKind::UpstreamReset => 14, // UNAVAILABLE
        ErrorKind::Timeout => 4, // DEADLINE_EXCEEDED
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
        headers.insert("grpc-status", HeaderValue::from(grpc_status(kind)));
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
        response
    } else {
        let mut response = Response::new(ResponseBody::local(format!("remora: {message}\n")));
        *response.status_mut() = http_status(kind);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    response
        .headers_mut()
        .insert(X_REMORA_ERROR, HeaderValue::from_static(kind.as_str()));
    response.extensions_mut().insert(kind);
    if let Some(addr) = error.endpoint() {
        response.extensions_mut().insert(ServedBy(addr));
    }
    response
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec): every byte
/// outside printable ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
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

impl<S> Service<Request<Incoming>> for ErrorResponse<S>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = ProxyError>,
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

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        let response = self.inner.call(request);
        Box::pin(async move {
            Ok(response
                .await
                .unwrap_or_else(|error| error_response(&error, grpc)))
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
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% – ok"), "50%25 %E2%80%93 ok");
    }
}

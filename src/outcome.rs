//! What happened to one try, in the vocabulary of [`Condition`]: the one
//! classification that retries (what to try again), circuit breakers and
//! outlier detection (what counts as a failure) share.
//!
//! A response is judged by its head: its HTTP status, and for gRPC the
//! `grpc-status` of a trailers-only response. A gRPC status that only comes
//! in trailers is known when the body ends; [`Outcome::of_trailers`] reads it.

use http::{HeaderMap, Response};

use crate::config::Condition;
use crate::error::{ErrorKind, ProxyError};
use crate::headers::grpc_status;

/// The outcome of one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    RefusedStream,
    Reset,
    Timeout,
    /// A response; `grpc` is its non-zero `grpc-status`, when it has one.
    Response {
        status: u16,
        grpc: Option<u16>,
    },
    /// An opaque TCP connection was established.
    Connected,
    /// Remora itself refused the try (rate limit, open breaker, overload,
    /// injected fault, a client body that could not be read): says nothing
    /// about the upstream.
    Refused,
}

impl Outcome {
    pub fn of_response<B>(response: &Response<B>) -> Self {
        Outcome::Response {
            status: response.status().as_u16(),
            grpc: grpc_status(response.headers()).filter(|code| *code != 0),
        }
    }

    /// [`Outcome::of_response`] as far as `conditions` can tell: the head's
    /// `grpc-status` is looked up only when one of them names a gRPC status
    /// (a header lookup a response, spared where only HTTP statuses count).
    pub fn of_response_for<B>(response: &Response<B>, conditions: &[Condition]) -> Self {
        if (conditions.iter()).any(|condition| matches!(condition, Condition::Grpc(_))) {
            return Self::of_response(response);
        }
        Outcome::Response {
            status: response.status().as_u16(),
            grpc: None,
        }
    }

    /// The outcome of a gRPC response whose status arrived in trailers.
    pub fn of_trailers(status: u16, trailers_status: Option<u16>) -> Self {
        Outcome::Response {
            status,
            grpc: trailers_status.filter(|code| *code != 0),
        }
    }

    pub fn of_error(error: &ProxyError) -> Self {
        if error.is_refused_stream() {
            return Outcome::RefusedStream;
        }
        match error.kind() {
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout => Outcome::ConnectFailure,
            ErrorKind::UpstreamReset | ErrorKind::UpstreamProtocol => Outcome::Reset,
            ErrorKind::Timeout => Outcome::Timeout,
            ErrorKind::NoEndpoints
            | ErrorKind::NoHealthyEndpoints
            | ErrorKind::RateLimited
            | ErrorKind::CircuitOpen
            | ErrorKind::Overloaded
            | ErrorKind::FaultAbort
            | ErrorKind::ClientBody
            | ErrorKind::Forbidden
            | ErrorKind::NoRoute
            | ErrorKind::BadRequest
            | ErrorKind::BadPath
            | ErrorKind::Unauthenticated => Outcome::Refused,
        }
    }

    /// True when `condition` describes this outcome.
    pub fn matches(self, condition: Condition) -> bool {
        match (condition, self) {
            (Condition::ConnectFailure, Outcome::ConnectFailure)
            | (Condition::RefusedStream, Outcome::RefusedStream)
            | (Condition::Reset, Outcome::Reset)
            | (Condition::Timeout, Outcome::Timeout) => true,
            (Condition::Http5xx, Outcome::Response { status, .. }) => (500..600).contains(&status),
            (Condition::GatewayError, Outcome::Response { status, .. }) => {
                matches!(status, 502..=504)
            }
            (Condition::Status(code), Outcome::Response { status, .. }) => code == status,
            (Condition::Grpc(code), Outcome::Response { grpc, .. }) => grpc == Some(code),
            _ => false,
        }
    }

    /// True when any of `conditions` describes this outcome.
    pub fn matches_any(self, conditions: &[Condition]) -> bool {
        conditions.iter().any(|condition| self.matches(*condition))
    }

    /// True for a gRPC response whose status is not in its head, so it will
    /// only be known from the trailers.
    pub fn awaits_trailers(headers: &HeaderMap) -> bool {
        crate::headers::is_grpc(headers) && grpc_status(headers).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(status: u16, grpc: Option<&str>) -> Outcome {
        let mut builder = Response::builder().status(status);
        if let Some(code) = grpc {
            builder = builder.header("grpc-status", code);
        }
        Outcome::of_response(&builder.body(()).unwrap())
    }

    #[test]
    fn statuses_and_classes() {
        assert!(response(503, None).matches(Condition::Status(503)));
        assert!(response(503, None).matches(Condition::Http5xx));
        assert!(response(503, None).matches(Condition::GatewayError));
        assert!(!response(500, None).matches(Condition::GatewayError));
        assert!(!response(404, None).matches_any(&crate::config::default_failure_conditions()));
        assert!(!response(200, Some("0")).matches(Condition::Grpc(0)));
    }

    #[test]
    fn grpc_statuses_in_the_head() {
        let unavailable = response(200, Some("14"));
        assert!(unavailable.matches(Condition::Grpc(14)));
        assert!(!unavailable.matches(Condition::Http5xx));
        assert!(Outcome::of_trailers(200, Some(4)).matches(Condition::Grpc(4)));
    }

    #[test]
    fn grpc_statuses_are_read_only_for_conditions_that_name_one() {
        let head = Response::builder()
            .status(200)
            .header("grpc-status", "14")
            .body(())
            .unwrap();
        let unavailable = [Condition::Grpc(14)];
        let http_only = [Condition::Http5xx, Condition::Status(200)];
        assert!(Outcome::of_response_for(&head, &unavailable).matches_any(&unavailable));
        assert_eq!(
            Outcome::of_response_for(&head, &http_only),
            Outcome::Response {
                status: 200,
                grpc: None
            }
        );
        assert!(Outcome::of_response_for(&head, &http_only).matches_any(&http_only));
    }

    #[test]
    fn errors() {
        let timeout = Outcome::of_error(&ProxyError::Timeout(Duration::from_secs(1)));
        assert!(timeout.matches(Condition::Timeout));
        let limited = Outcome::of_error(&ProxyError::RateLimited {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(limited, Outcome::Refused);
        assert!(!limited.matches_any(&crate::config::default_failure_conditions()));
    }
}

//! Watching where a proxy's traffic goes while its endpoints change
//! (discovery tests): each call is `GET /` through the listener, answered by
//! an `http_backend` with its name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use super::get;

/// `GET /` through `listener`: the answering backend's name, or the failure
/// (status, `x-remora-error` and body).
pub async fn served_by(listener: SocketAddr) -> Result<String, String> {
    match get(Version::HTTP_11, &format!("http://{listener}/")).await {
        Ok(reply) if reply.status == StatusCode::OK => Ok(reply.body),
        Ok(reply) => Err(format!(
            "status {} {:?}: {}",
            reply.status,
            reply.headers.get("x-remora-error"),
            reply.body
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Calls until 10 replies in a row come from one of `names`; panics after
/// `within`. Returns how long that took.
pub async fn wait_for_traffic_on(
    listener: SocketAddr,
    names: &[&str],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let mut in_a_row = 0;
    let mut last = Ok(String::new());
    while in_a_row < 10 {
        assert!(
            start.elapsed() < within,
            "traffic did not move to {names:?} within {within:?}; last reply {last:?}"
        );
        last = served_by(listener).await;
        match &last {
            Ok(name) if names.contains(&name.as_str()) => in_a_row += 1,
            _ => {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    start.elapsed()
}

/// Calls until each of `names` answered; panics after `within`. Returns how
/// long that took.
pub async fn wait_for_traffic_on_each(
    listener: SocketAddr,
    names: &[&str],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let mut answered = vec![false; names.len()];
    while answered.contains(&false) {
        assert!(
            start.elapsed() < within,
            "traffic did not reach each of {names:?} within {within:?}"
        );
        if let Ok(name) = served_by(listener).await
            && let Some(i) = names.iter().position(|expected| *expected == name)
        {
            answered[i] = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Calls for `duration`; returns (requests, failures), a failure being any
/// reply not from one of `expected` (each printed).
pub async fn hammer(listener: SocketAddr, duration: Duration, expected: &[&str]) -> (usize, usize) {
    let start = Instant::now();
    let (mut requests, mut failures) = (0, 0);
    while start.elapsed() < duration {
        requests += 1;
        match served_by(listener).await {
            Ok(name) if expected.contains(&name.as_str()) => {}
            other => {
                failures += 1;
                eprintln!("unexpected reply: {other:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (requests, failures)
}

/// Keeps calling (as [`hammer`], in half-second spells, for at least
/// `first`) until `done` holds; panics after `within`. Returns (requests,
/// failures).
pub async fn hammer_until<F, Fut>(
    listener: SocketAddr,
    expected: &[&str],
    first: Duration,
    within: Duration,
    mut done: F,
) -> (usize, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let (mut requests, mut failures) = hammer(listener, first, expected).await;
    while !done().await {
        assert!(start.elapsed() < within, "not done within {within:?}");
        let (more, failed) = hammer(listener, Duration::from_millis(500), expected).await;
        requests += more;
        failures += failed;
    }
    (requests, failures)
}

//! Checks on `request_token` (of an upstream or a route): a file, a valid
//! header name that is not one HTTP framing or remora owns, and a
//! `reload_interval` above zero.

use http::HeaderName;

use super::Problems;
use crate::config::request_token::RequestTokenConfig;
use crate::headers::is_reserved;

const FRAMING: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
];

pub(super) fn check_request_token(at: &str, token: &RequestTokenConfig, problems: &mut Problems) {
    if token.file.as_os_str().is_empty() {
        problems.add(format!("{at}.file"), "must name a file");
    }
    match HeaderName::from_bytes(token.header.as_bytes()) {
        Err(_) => problems.add(
            format!("{at}.header"),
            format!("{:?} is not a valid header name", token.header),
        ),
        Ok(name) if is_reserved(&name) || FRAMING.contains(&name.as_str()) => problems.add(
            format!("{at}.header"),
            format!("{:?} is a header remora or HTTP owns", token.header),
        ),
        Ok(_) => {}
    }
    problems.nonzero(format!("{at}.reload_interval"), token.reload_interval);
}

//! A response head as read off an HTTP/1.1 connection, and how its body is
//! framed (RFC 9112 §6.3): none after a `HEAD` request or for `1xx`, `204`
//! and `304`; chunked when `Transfer-Encoding` ends in `chunked`; until the
//! connection closes for any other `Transfer-Encoding` or when there is no
//! `Content-Length`; else `Content-Length` bytes, whose values must agree.
//! A response with both `Transfer-Encoding` and `Content-Length` is read
//! chunked and its connection closed after it, as one that may be an attempt
//! at response splitting (RFC 9112 §6.1).

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::response::Parts;
use http::{HeaderMap, Response, StatusCode, Version};

use super::request::fold_content_length;
use super::{Error, MAX_HEADERS};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head, parsed, with what its framing and reuse depend on,
/// noted in the one pass over its fields.
pub struct Head {
    parts: Parts,
    /// `Transfer-Encoding` was sent; whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// `Content-Length` was sent; its value, unless invalid or contradictory.
    content_length: Option<Option<u64>>,
    /// `Connection: close`.
    close: bool,
    /// `Keep-Alive: timeout=N`.
    keep_alive_timeout: Option<Duration>,
}

/// Where a field's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Fields of a head noted without a heap allocation; more spill to one.
const INLINE_FIELDS: usize = 32;

/// Takes a whole response head off the front of `read`, or `None` while
/// it is still partial.
pub fn parse_head(read: &mut BytesMut) -> Result<Option<Head>, Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut parsed, read, &mut fields)
        .map_err(|error| Error::Malformed(parse_error(error)))?;
    let httparse::Status::Complete(length) = status else {
        return Ok(None);
    };
    let code = parsed.code.unwrap_or_default();
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let start = read.as_ptr() as usize;
    let offset = |field: &[u8]| {
        let from = field.as_ptr() as usize - start;
        (from, from + field.len())
    };
    let mut inline = [Span::default(); INLINE_FIELDS];
    let mut spilled = Vec::new();
    let spans = if parsed.headers.len() <= INLINE_FIELDS {
        &mut inline[..parsed.headers.len()]
    } else {
        spilled.resize(parsed.headers.len(), Span::default());
        &mut spilled[..]
    };
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        *span = Span {
            name: offset(field.name.as_bytes()),
            value: offset(field.value),
        };
    }
    let bytes = read.split_to(length).freeze();
    Ok(Some(Head::new(code, version, &bytes, spans)?))
}

fn parse_error(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::TooManyHeaders => "more than 100 headers",
        httparse::Error::Version => "not HTTP/1.x",
        httparse::Error::Status => "invalid status",
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        _ => "invalid response head",
    }
}

impl Head {
    fn new(code: u16, version: Version, bytes: &Bytes, spans: &[Span]) -> Result<Self, Error> {
        let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("invalid status"))?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = HeaderMap::with_capacity(spans.len());
        let mut head = Self {
            parts,
            transfer_encoding: None,
            content_length: None,
            close: false,
            keep_alive_timeout: None,
        };
        for span in spans {
            let name = HeaderName::from_bytes(&bytes[span.name.0..span.name.1])
                .map_err(|_| Error::Malformed("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(span.value.0..span.value.1))
                .map_err(|_| Error::Malformed("invalid header value"))?;
            head.note(&name, &value);
            head.parts.headers.append(name, value);
        }
        Ok(head)
    }

    /// Notes what a field says of framing and reuse.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = Some(ends_chunked(value));
        } else if *name == header::CONTENT_LENGTH {
            self.content_length = Some(match self.content_length {
                None => fold_content_length(None, value),
                Some(Some(length)) => fold_content_length(Some(length), value),
                // A field before was invalid or disagreed already.
                Some(None) => None,
            });
        } else if *name == header::CONNECTION {
            let mut options = value.to_str().unwrap_or_default().split(',');
            self.close |= options.any(|option| option.trim().eq_ignore_ascii_case("close"));
        } else if name.as_str() == "keep-alive" {
            self.keep_alive_timeout = keep_alive_timeout(value);
        }
    }

    /// An interim response to skip: `1xx` but `101`, which ends the exchange.
    pub fn is_interim(&self) -> bool {
        self.parts.status.is_informational() && self.parts.status != StatusCode::SWITCHING_PROTOCOLS
    }

    /// The `Keep-Alive: timeout` the server announced, if any.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        self.keep_alive_timeout
    }

    /// How the body of this response (to a `HEAD` request or not) is framed.
    pub fn framing(&self, head_request: bool) -> Result<Framing, Error> {
        let status = self.parts.status;
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Length(0));
        }
        match (self.transfer_encoding, self.content_length) {
            (Some(_), _) if self.parts.version == Version::HTTP_10 => Err(Error::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            )),
            (Some(true), _) => Ok(Framing::Chunked),
            (Some(false), _) | (None, None) => Ok(Framing::UntilClose),
            (None, Some(Some(length))) => Ok(Framing::Length(length)),
            (None, Some(None)) => Err(Error::Malformed("invalid Content-Length")),
        }
    }

    /// True when the connection may carry another request after this
    /// response: an HTTP/1.1 server that did not ask to close it. An
    /// HTTP/1.0 server's connection is not reused even with `keep-alive`:
    /// the next request might need chunked framing, which it cannot read.
    pub fn keeps_alive(&self) -> bool {
        self.parts.version == Version::HTTP_11
            && !self.close
            && self.parts.status != StatusCode::SWITCHING_PROTOCOLS
            && !(self.transfer_encoding.is_some() && self.content_length.is_some())
    }

    pub fn into_parts(self) -> Parts {
        self.parts
    }
}

/// True when the last transfer coding of a `Transfer-Encoding` field is
/// `chunked` (the last field counts: each field noted replaces the one before).
fn ends_chunked(value: &HeaderValue) -> bool {
    (value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// The `timeout=N` of a `Keep-Alive` header (RFC 2068 §19.7.1.1, as nginx,
/// Apache and Node send it), when there is one.
fn keep_alive_timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    value.split(',').find_map(|parameter| {
        let (name, seconds) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        seconds.trim().parse().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let mut read = BytesMut::from(text);
        let head = parse_head(&mut read).unwrap().expect("a whole head");
        assert!(read.is_empty(), "the head is taken off the buffer");
        head
    }

    fn malformed(text: &str) -> &'static str {
        match parse_head(&mut BytesMut::from(text)).map(|head| head.map(|h| h.framing(false))) {
            Err(Error::Malformed(why)) | Ok(Some(Err(Error::Malformed(why)))) => why,
            _ => panic!("{text:?} was taken as well-formed"),
        }
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        let mut read = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
        assert!(parse_head(&mut read).unwrap().is_none());
        assert_eq!(read.len(), 27, "nothing is taken");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = |fields: &str| head(&format!("HTTP/1.1 200 OK\r\n{fields}\r\n"));
        assert_eq!(
            ok("content-length: 5\r\n").framing(false).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            ok("content-length: 5\r\n").framing(true).unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            ok("content-length: 5, 5\r\ncontent-length: 5\r\n")
                .framing(false)
                .unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            ok("transfer-encoding: gzip, chunked\r\n")
                .framing(false)
                .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            ok("transfer-encoding: chunked, gzip\r\n")
                .framing(false)
                .unwrap(),
            Framing::UntilClose
        );
        assert_eq!(ok("").framing(false).unwrap(), Framing::UntilClose);
        let no_content = head("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(no_content.framing(false).unwrap(), Framing::Length(0));
        let not_modified = head("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(not_modified.framing(false).unwrap(), Framing::Length(0));
    }

    #[test]
    fn ambiguous_lengths_are_refused_or_end_the_connection() {
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(
            malformed("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            "Transfer-Encoding in an HTTP/1.0 response"
        );
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n"),
            "invalid header name"
        );
        assert_eq!(malformed("HTTP/2 200 OK\r\n\r\n"), "not HTTP/1.x");
        let both =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(both.framing(false).unwrap(), Framing::Chunked);
        assert!(
            !both.keeps_alive(),
            "a response with both lengths ends its connection"
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").keeps_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n").keeps_alive());
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keeps_alive());
        assert!(!head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n").keeps_alive());
        assert!(!head("HTTP/1.1 101 Switching Protocols\r\n\r\n").keeps_alive());
    }

    #[test]
    fn interim_responses_are_told_apart() {
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(head("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n").is_interim());
    }

    #[test]
    fn header_values_are_kept_as_sent() {
        let head = head(
            "HTTP/1.1 404 Not Found\r\nX-Thing: a b\r\nset-cookie: 1\r\nSet-Cookie: 2\r\n\r\n",
        );
        assert_eq!(head.parts.status, StatusCode::NOT_FOUND);
        assert_eq!(head.parts.headers["x-thing"], "a b");
        let cookies: Vec<_> = head.parts.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["1", "2"]);
    }

    fn keep_alive(value: &str) -> Option<Duration> {
        head(&format!("HTTP/1.1 200 OK\r\nKeep-Alive: {value}\r\n\r\n")).keep_alive_timeout()
    }

    #[test]
    fn reads_the_announced_timeout() {
        assert_eq!(keep_alive("timeout=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            keep_alive("timeout=5, max=100"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            keep_alive("max=100, Timeout = 2"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(keep_alive("max=100"), None);
        assert_eq!(keep_alive("timeout=soon"), None);
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").keep_alive_timeout(), None);
    }
}

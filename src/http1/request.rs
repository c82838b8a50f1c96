//! A request as HTTP/1.1 puts it on the wire: the head, then the body framed
//! by `Content-Length` or chunked.
//!
//! The framing follows hyper's client: a body that has ended is sent as
//! none (a `Content-Length` the client sent stays); a valid `Content-Length`
//! frames the body; else a body of known size gets one; else a `GET` or
//! `HEAD` is sent without its body, and any other request chunked, with the
//! trailers its `Trailer` header declares. A `Transfer-Encoding` the caller
//! set is replaced by this framing (the proxy has removed it already, as a
//! hop-by-hop header). A `Content-Length` body ends with its last byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body::Body;

use super::{BoxError, Io, poll_write_all};

/// How a request body goes out.
pub enum Framing {
    /// No body goes out.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, with the trailer fields named here.
    Chunked { trailers: Vec<HeaderName> },
}

/// Puts the head of `request` in `out`, and says how its body goes out.
pub fn encode_head<B: Body>(request: &Request<B>, out: &mut BytesMut) -> Framing {
    let (framing, keep_length) = framing(request);
    out.put_slice(request.method().as_str().as_bytes());
    out.put_u8(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    // Framing headers are written from `framing`, never copied (but for
    // a `Content-Length` that stands as the request has it).
    for (name, value) in request.headers() {
        let framing_header =
            name == header::TRANSFER_ENCODING || (name == header::CONTENT_LENGTH && !keep_length);
        if !framing_header {
            put_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match &framing {
        Framing::Length(length) if !keep_length => {
            put_field(out, b"content-length", length.to_string().as_bytes());
        }
        Framing::Chunked { .. } => put_field(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    out.put_slice(b"\r\n");
    framing
}

/// How the body of `request` goes out, and whether the request's own
/// `Content-Length` headers stand as they are. A request without a body
/// (an HTTP/2 client's, whose HEADERS ended the stream) whose method gives
/// content a meaning says `Content-Length: 0`, as RFC 9110 §8.6 asks:
/// servers may refuse a POST without (`411 Length Required`).
fn framing<B: Body>(request: &Request<B>) -> (Framing, bool) {
    let body = request.body();
    if body.is_end_stream() {
        let says_length = request.headers().contains_key(header::CONTENT_LENGTH);
        if !says_length && has_payload_semantics(request.method()) {
            return (Framing::Length(0), false);
        }
        return (Framing::None, true);
    }
    if let Some(length) = content_length(request.headers()) {
        return (Framing::Length(length), true);
    }
    if let Some(length) = body.size_hint().exact() {
        return (Framing::Length(length), false);
    }
    let trailers = (request.headers().get_all(header::TRAILER).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(may_trail)
        .collect();
    (Framing::Chunked { trailers }, false)
}

/// True for methods whose request content has a meaning, so that an empty
/// body is still announced with `content-length: 0` (hyper's rule; the
/// HTTP/2 client's too).
pub fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// The `Content-Length` of `headers` when it has one valid value (repeats
/// of the same value allowed, RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        length = Some(fold_content_length(length, value)?);
    }
    length
}

/// `length` (of the `Content-Length` fields before) with one more field
/// value, a list of lengths that must all agree; `None` when it is invalid
/// or disagrees.
pub fn fold_content_length(mut length: Option<u64>, value: &HeaderValue) -> Option<u64> {
    for part in value.to_str().ok()?.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let parsed = part.parse().ok()?;
        if length.is_some_and(|length| length != parsed) {
            return None;
        }
        length = Some(parsed);
    }
    length
}

/// Fields that must not be sent as trailers (RFC 9110 §6.5.1): framing,
/// routing and controls.
fn may_trail(name: &HeaderName) -> bool {
    ![
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::TRAILER,
        header::TE,
        header::CONNECTION,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::EXPECT,
    ]
    .contains(name)
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Why a request body could not be written.
pub enum WriteError {
    Io(io::Error),
    /// The body failed, or did not match its `Content-Length`.
    Body(BoxError),
}

/// A request body on its way out; its type is erased when a response body
/// goes on writing it, the response head having come first (see [`Http1Body`]).
///
/// [`Http1Body`]: super::Http1Body
pub trait SendBody: Send {
    /// Writes what the body has; ready once all of it is written.
    fn poll_send(
        &mut self,
        io: &mut Box<dyn Io>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>>;
}

/// Writes a request body, frame by frame, as the body yields them.
pub struct BodyWriter<B> {
    body: B,
    framing: Framing,
    /// Framed bytes not yet written.
    out: BytesMut,
    /// Bytes a `Content-Length` body still owes.
    owed: u64,
    ended: bool,
}

impl<B> BodyWriter<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// `out` is the (written) head's buffer, reused.
    pub fn new(body: B, framing: Framing, mut out: BytesMut) -> Self {
        out.clear();
        let owed = match framing {
            Framing::Length(length) => length,
            _ => 0,
        };
        Self {
            body,
            framing,
            out,
            owed,
            ended: false,
        }
    }

    fn put_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            // An empty chunk would end a chunked body.
            return Ok(());
        }
        match self.framing {
            Framing::Length(_) => {
                let length = data.len() as u64;
                if length > self.owed {
                    return Err(body_error(
                        "the request body is longer than its Content-Length",
                    ));
                }
                self.owed -= length;
                self.out.put_slice(&data);
                // All of it: the end the body reports later is not waited for.
                self.ended = self.owed == 0;
            }
            Framing::Chunked { .. } => {
                self.out
                    .put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.out.put_slice(&data);
                self.out.put_slice(b"\r\n");
            }
            Framing::None => {}
        }
        Ok(())
    }

    /// Trailers end a chunked body; a `Content-Length` body has nowhere
    /// to put them.
    fn put_trailers(&mut self, trailers: &HeaderMap) {
        let Framing::Chunked { trailers: allowed } = &self.framing else {
            return;
        };
        self.out.put_slice(b"0\r\n");
        for (name, value) in trailers {
            if allowed.contains(name) {
                put_field(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        self.out.put_slice(b"\r\n");
        self.ended = true;
    }

    fn end(&mut self) -> Result<(), WriteError> {
        if self.ended {
            return Ok(());
        }
        match self.framing {
            Framing::Length(_) if self.owed > 0 => {
                return Err(body_error(
                    "the request body is shorter than its Content-Length",
                ));
            }
            Framing::Chunked { .. } => self.out.put_slice(b"0\r\n\r\n"),
            _ => {}
        }
        self.ended = true;
        Ok(())
    }
}

impl<B> SendBody for BodyWriter<B>
where
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_send(
        &mut self,
        io: &mut Box<dyn Io>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            ready!(poll_write_all(io, &mut self.out, cx)).map_err(WriteError::Io)?;
            if self.ended || matches!(self.framing, Framing::None) {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.end()?,
                Some(Err(error)) => return Poll::Ready(Err(WriteError::Body(error.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.put_data(data)?,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.put_trailers(&trailers);
                        }
                    }
                },
            }
            if !self.ended && self.body.is_end_stream() {
                self.end()?;
            }
        }
    }
}

fn body_error(message: &'static str) -> WriteError {
    WriteError::Body(message.into())
}

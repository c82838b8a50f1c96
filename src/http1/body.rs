//! A response body read off its HTTP/1.1 connection as the client takes it:
//! `Content-Length` bytes, chunks (with trailers), or everything until the
//! connection closes. Data frames are slices of the read buffer, not copies.
//! When the response head came before the whole request body went out, each
//! poll first writes what the request body has; when the response ends
//! first, the rest is not sent (a client's HTTP/1.x body is then read and
//! dropped: [`crate::body::client`]). Read to its end, with the
//! request body sent, the body gives its connection back when the connection
//! may carry another request ([`Http1Body::take_reusable`]).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::request::{SendBody, WriteError};
use super::response::Framing;
use super::{BoxError, Connection, Error, MAX_HEAD, MAX_HEADERS, poll_fill};

/// The longest chunk-size line read (the size with its extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// The most chunk-extension bytes one body may carry (hyper's limit).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;

/// Where the reading of a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes are still to come (of the body, or of a chunk).
    Length(u64),
    /// A chunk-size line comes next.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk.
    Trailers,
    UntilClose,
    Done,
}

/// A response body streamed from its HTTP/1.1 connection.
pub struct Http1Body {
    /// Gone once the body failed.
    connection: Option<Connection>,
    state: State,
    /// The connection may carry another request once this body has ended.
    reusable: bool,
    /// The rest of a request body whose response head came first.
    unsent: Option<Box<dyn SendBody>>,
    /// Chunk-extension bytes read so far.
    extension_bytes: usize,
}

impl Http1Body {
    pub(super) fn new(
        connection: Connection,
        framing: Framing,
        reusable: bool,
        unsent: Option<Box<dyn SendBody>>,
    ) -> Self {
        let (state, reusable) = match framing {
            Framing::Length(length) => (State::Length(length), reusable),
            Framing::Chunked => (State::ChunkSize, reusable),
            Framing::UntilClose => (State::UntilClose, false),
        };
        Self {
            connection: Some(connection),
            state,
            reusable,
            unsent,
            extension_bytes: 0,
        }
    }

    /// The connection, for another request, once this body was read to its
    /// end with nothing after it on a connection both sides keep open.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let ended = self.is_end_stream();
        let clean = self.connection.as_ref().is_some_and(|c| c.read.is_empty());
        if ended && clean && self.reusable && self.unsent.is_none() {
            self.connection.take()
        } else {
            None
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.connection = None;
        self.unsent = None;
        Poll::Ready(Some(Err(error.into())))
    }

    /// Writes what the rest of the request body has. A request body that
    /// failed fails the exchange; a server that stopped reading it may
    /// still answer in full, but its connection is not reused.
    fn send_unsent(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let (Some(unsent), Some(connection)) = (&mut self.unsent, &mut self.connection) else {
            return Ok(());
        };
        match unsent.poll_send(&mut connection.io, cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.unsent = None;
                Ok(())
            }
            Poll::Ready(Err(WriteError::Body(error))) => Err(Error::RequestBody(error)),
            Poll::Ready(Err(WriteError::Io(error))) => {
                tracing::debug!(%error, "the upstream stopped reading the request body");
                self.unsent = None;
                self.reusable = false;
                Ok(())
            }
        }
    }

    /// Reads more into the buffer: `Ok(false)` when the connection closed.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let Some(connection) = &mut self.connection else {
            return Poll::Ready(Ok(false));
        };
        match ready!(poll_fill(&mut connection.io, &mut connection.read, cx)) {
            Ok(read) => Poll::Ready(Ok(read > 0)),
            Err(error) => Poll::Ready(Err(Error::Read(error))),
        }
    }

    /// The next step of reading what the buffer holds.
    fn step(&mut self) -> Result<Step, Error> {
        let Some(connection) = &mut self.connection else {
            return Ok(Step::Yield(None));
        };
        let read = &mut connection.read;
        match self.state {
            State::Done => Ok(Step::Yield(None)),
            State::Length(0) => {
                self.state = State::Done;
                Ok(Step::Yield(None))
            }
            State::Length(_) | State::ChunkData(_) | State::UntilClose if read.is_empty() => {
                Ok(Step::NeedMore)
            }
            State::Length(owed) | State::ChunkData(owed) => {
                let taken = owed.min(read.len() as u64);
                let data = read.split_to(taken as usize).freeze();
                let owed = owed - taken;
                self.state = match self.state {
                    State::ChunkData(_) if owed == 0 => State::ChunkEnd,
                    State::ChunkData(_) => State::ChunkData(owed),
                    _ => State::Length(owed),
                };
                Ok(Step::Yield(Some(Frame::data(data))))
            }
            State::UntilClose => Ok(Step::Yield(Some(Frame::data(read.split().freeze())))),
            State::ChunkSize => {
                let Some(line) = chunk_line(read)? else {
                    return Ok(Step::NeedMore);
                };
                self.extension_bytes += line.extensions;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err(Error::Malformed("too many chunk extensions"));
                }
                read.advance(line.length);
                self.state = if line.size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(line.size)
                };
                Ok(Step::Continue)
            }
            State::ChunkEnd if read.len() < 2 => Ok(Step::NeedMore),
            State::ChunkEnd => {
                if &read[..2] != b"\r\n" {
                    return Err(Error::Malformed("chunk data longer than its size"));
                }
                read.advance(2);
                self.state = State::ChunkSize;
                Ok(Step::Continue)
            }
            State::Trailers => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(read, &mut fields) {
                    Ok(httparse::Status::Complete((length, fields))) => {
                        let trailers = trailer_map(fields)?;
                        read.advance(length);
                        self.state = State::Done;
                        let frame = (!trailers.is_empty()).then(|| Frame::trailers(trailers));
                        Ok(Step::Yield(frame))
                    }
                    Ok(httparse::Status::Partial) if read.len() > MAX_HEAD => {
                        Err(Error::Malformed("trailers too large"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                    Err(_) => Err(Error::Malformed("invalid trailers")),
                }
            }
        }
    }
}

/// What [`Http1Body::step`] came to.
enum Step {
    /// A frame, or the end of the body.
    Yield(Option<Frame<Bytes>>),
    /// The state moved on: step again.
    Continue,
    /// The buffer holds too little: read more first.
    NeedMore,
}

/// A chunk-size line (RFC 9112 §7.1): the size in hex, then optional
/// whitespace and `;` extensions, which are skipped.
struct ChunkLine {
    /// Of the line, its CRLF included.
    length: usize,
    size: u64,
    extensions: usize,
}

/// The chunk-size line at the front of `read`, or `None` while it is
/// partial. Stricter than `httparse`'s: a size digit must come first, and a
/// bare CR or LF is refused (lenient line ends let two parsers of one
/// message disagree on where a chunk ends).
fn chunk_line(read: &[u8]) -> Result<Option<ChunkLine>, Error> {
    let invalid = Error::Malformed("invalid chunk size line");
    let Some(end) = read.iter().position(|&b| b == b'\n') else {
        if read.len() > MAX_CHUNK_LINE {
            return Err(Error::Malformed("chunk size line too long"));
        }
        return Ok(None);
    };
    let Some(line) = read[..end].strip_suffix(b"\r") else {
        return Err(invalid);
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 || line.len() > MAX_CHUNK_LINE {
        return Err(invalid);
    }
    let rest = &line[digits..];
    let extension = rest.trim_ascii_start();
    if !(extension.is_empty() || extension.starts_with(b";")) || rest.contains(&b'\r') {
        return Err(invalid);
    }
    let size = std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(invalid)?;
    Ok(Some(ChunkLine {
        length: end + 1,
        size,
        extensions: rest.len(),
    }))
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::Malformed("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Error::Malformed("invalid trailer value"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.state != State::Done
            && let Err(error) = this.send_unsent(cx)
        {
            return this.fail(error);
        }
        loop {
            match this.step() {
                Ok(Step::Yield(frame)) => return Poll::Ready(frame.map(Ok)),
                Ok(Step::Continue) => continue,
                Ok(Step::NeedMore) => {}
                Err(error) => return this.fail(error),
            }
            match ready!(this.poll_more(cx)) {
                Ok(true) => {}
                Ok(false) if this.state == State::UntilClose => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(false) => return this.fail(Error::IncompleteBody),
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(owed) => SizeHint::with_exact(owed),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Result<Option<(usize, u64)>, Error> {
        chunk_line(text.as_bytes()).map(|line| line.map(|line| (line.length, line.size)))
    }

    #[test]
    fn chunk_size_lines_are_read_strictly() {
        assert_eq!(line("1a\r\ndata").unwrap(), Some((4, 26)));
        assert_eq!(line("0\r\n\r\n").unwrap(), Some((3, 0)));
        assert_eq!(line("5 ;name=value\r\n").unwrap(), Some((15, 5)));
        assert_eq!(line("FfFf;a;b=\"c\"\r\n").unwrap(), Some((14, 0xffff)));
        assert_eq!(line("5;partial-ext").unwrap(), None);
        for bad in [
            "\r\n",
            ";ext\r\n",
            " 5\r\n",
            "5\n",
            "5;a\rb\r\n",
            "5 6\r\n",
            "g\r\n",
            "1234567890abcdef0\r\n",
        ] {
            assert!(
                matches!(line(bad), Err(Error::Malformed(_))),
                "{bad:?} was read"
            );
        }
        let long = format!("5;{}", "x".repeat(MAX_CHUNK_LINE));
        assert!(line(&long).is_err(), "a partial line longer than the limit");
    }
}

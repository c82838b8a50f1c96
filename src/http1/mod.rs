//! remora's own HTTP/1.1 client connection. A request is written and its
//! response read from the request's own task: there is no connection task
//! and no channel between the two, which is what hyper's client costs
//! (`docs/benchmarks.md` measures it). hyper's client stays for protocol
//! upgrades, whose connections become tunnels, and for the transparent
//! passthrough.
//!
//! A request's life on a [`Connection`]:
//!
//! 1. **Head** ([`request`]): written whole before any of the body is read.
//!    Until it is, a failure gives the request back, as unsent: a server
//!    cannot act on half a head. A request with no body to send comes back
//!    whole on any failure, for the caller to send again when that is safe.
//! 2. **Body**: framed by `Content-Length` or chunked, by the rules hyper
//!    follows, and written while the connection is also read (read first),
//!    since a server may answer before it has read all of it: an answer is
//!    heard even when the server then closes on the unread rest. When the
//!    response head comes first (an echo server's), the response body goes
//!    on writing the rest each time it is read; when the response ends
//!    first, the rest is not sent (a client's HTTP/1.x body is then read
//!    and dropped: [`crate::body::client`]). The connection is reused only
//!    when both ended.
//! 3. **Response head** ([`response`]): at most [`MAX_HEADERS`] headers in
//!    [`MAX_HEAD`] bytes; interim `1xx` responses are skipped. The body's
//!    framing follows RFC 9112 §6.3.
//! 4. **Response body** ([`Http1Body`]): streamed as it is read. Read to its
//!    end, with nothing after it, on a connection that neither side closes,
//!    it gives the connection back for the next request.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

mod body;
mod request;
mod response;

pub use self::body::Http1Body;

pub use self::request::has_payload_semantics;
use self::request::{BodyWriter, SendBody, WriteError, encode_head};
use self::response::{Head, parse_head};

/// The most headers a response head (or its trailers) may have.
pub const MAX_HEADERS: usize = 100;

/// The largest response head (or trailer section) read, in bytes, about:
/// hyper's default read buffer limit, so that what passed before passes.
pub const MAX_HEAD: usize = 400 * 1024;

/// The smallest free space a read is made into; it grows by [`READ_SIZE`].
const MIN_READ_SPACE: usize = 1024;
const READ_SIZE: usize = 8 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a connection is read from and written to: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection closed, or was reset, before any byte of a response
    /// came: the server may not have seen the request, or dropped it.
    #[error("the connection closed before any byte of a response{}", cause(.0))]
    NoResponse(Option<io::Error>),
    #[error("writing the request failed: {0}")]
    Write(io::Error),
    #[error("reading the response failed: {0}")]
    Read(io::Error),
    #[error("the connection closed in the middle of the response head")]
    IncompleteHead,
    #[error("the connection closed before the response body ended")]
    IncompleteBody,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The request's body failed (its client went away, say).
    #[error("the request body failed: {0}")]
    RequestBody(BoxError),
}

fn cause(error: &Option<io::Error>) -> String {
    error
        .as_ref()
        .map_or_else(String::new, |error| format!(": {error}"))
}

impl Error {
    /// True when no byte of a response came before the connection ended:
    /// an idempotent request may then be sent again (RFC 9110 §9.2.2).
    pub fn no_response(&self) -> bool {
        matches!(self, Error::NoResponse(_))
    }

    /// True when the upstream broke HTTP/1.1, rather than the connection.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Error::Malformed(_))
    }
}

/// A failed [`Connection::send`].
pub struct Failed<B> {
    pub error: Error,
    /// The request, when it is still whole: its head was not written, or
    /// it had no body to send.
    pub request: Option<Request<B>>,
    /// Its whole head was written: the server may have acted on it.
    pub head_written: bool,
}

/// How far a request body has gone out while its response head is awaited.
enum Upload<B> {
    Writing(BodyWriter<B>),
    Sent,
    /// The server stopped reading it (the write failed): not all went out.
    Cut,
}

/// One HTTP/1.1 connection to an upstream, between requests.
pub struct Connection {
    io: Box<dyn Io>,
    /// Bytes read and not yet used; empty between requests.
    read: BytesMut,
    /// The buffer a request head is put in, kept for the next one.
    write: BytesMut,
    /// An interim (`1xx`) response came for the request being sent.
    interim: bool,
    /// The `Keep-Alive: timeout` the last response announced.
    keep_alive: Option<Duration>,
}

impl Connection {
    pub fn new(io: impl Io + 'static) -> Self {
        Self {
            io: Box::new(io),
            read: BytesMut::new(),
            write: BytesMut::new(),
            interim: false,
            keep_alive: None,
        }
    }

    /// The `Keep-Alive: timeout` its last response announced, if any.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// False when the server closed the connection (or sent something
    /// unasked) while it was idle. Reads only what has already arrived:
    /// it never waits.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        poll_fill(&mut self.io, &mut self.read, &mut cx).is_pending()
    }

    /// Sends `request` and reads its response head; the response's body
    /// reads the rest and then hands this connection back (see [`Http1Body`]).
    pub async fn send<B>(mut self, request: Request<B>) -> Result<Response<Http1Body>, Failed<B>>
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.interim = false;
        let mut out = std::mem::take(&mut self.write);
        let framing = encode_head(&request, &mut out);
        let written = poll_fn(|cx| poll_write_all(&mut self.io, &mut out, cx)).await;
        if let Err(error) = written {
            let error = self.failed_before_response(error, Error::Write);
            return Err(Failed {
                error,
                request: Some(request),
                head_written: false,
            });
        }
        let head_request = request.method() == Method::HEAD;
        let mut upload = Upload::Sent;
        let head = if request.body().is_end_stream() {
            // Nothing more to write: the request stays whole, to be sent
            // again should the server close the connection under it.
            self.write = out;
            match poll_fn(|cx| self.poll_head(cx)).await {
                Ok(head) => head,
                Err(error) => {
                    return Err(Failed {
                        error,
                        request: Some(request),
                        head_written: true,
                    });
                }
            }
        } else {
            upload = Upload::Writing(BodyWriter::new(request.into_body(), framing, out));
            let head = poll_fn(|cx| self.poll_head_writing(&mut upload, cx)).await;
            head.map_err(|error| Failed {
                error,
                request: None,
                head_written: true,
            })?
        };
        self.keep_alive = head.keep_alive_timeout();
        let framing = head.framing(head_request).map_err(|error| Failed {
            error,
            request: None,
            head_written: true,
        })?;
        let reusable = head.keeps_alive() && !matches!(upload, Upload::Cut);
        // A head that came before the whole body went out: the response
        // body writes the rest.
        let unsent = match upload {
            Upload::Writing(writer) => Some(Box::new(writer) as Box<dyn SendBody>),
            Upload::Sent | Upload::Cut => None,
        };
        Ok(Response::from_parts(
            head.into_parts(),
            Http1Body::new(self, framing, reusable, unsent),
        ))
    }

    /// [`Connection::poll_head`] while the request body is written. The
    /// connection is read first: a server that answers early (`413`) and
    /// closes must be heard, not lost to the write error its close causes.
    /// A body the server stopped reading is cut, and its answer awaited.
    fn poll_head_writing<B>(
        &mut self,
        upload: &mut Upload<B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Head, Error>>
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin,
        B::Error: Into<BoxError>,
    {
        if let Poll::Ready(head) = self.poll_head(cx) {
            return Poll::Ready(head);
        }
        let Upload::Writing(writer) = upload else {
            return Poll::Pending;
        };
        match writer.poll_send(&mut self.io, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                *upload = Upload::Sent;
                Poll::Pending
            }
            Poll::Ready(Err(WriteError::Body(error))) => {
                Poll::Ready(Err(Error::RequestBody(error)))
            }
            Poll::Ready(Err(WriteError::Io(error))) => {
                tracing::debug!(%error, "the upstream stopped reading the request body");
                *upload = Upload::Cut;
                self.poll_head(cx)
            }
        }
    }

    /// Reads until a final response head is whole; skips interim (`1xx`)
    /// responses other than `101`.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, Error>> {
        loop {
            if !self.read.is_empty()
                && let Some(head) = parse_head(&mut self.read)?
            {
                if head.is_interim() {
                    self.interim = true;
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if self.read.len() >= MAX_HEAD {
                return Poll::Ready(Err(Error::Malformed("response head too large")));
            }
            match ready!(poll_fill(&mut self.io, &mut self.read, cx)) {
                Ok(0) if self.nothing_read() => return Poll::Ready(Err(Error::NoResponse(None))),
                Ok(0) => return Poll::Ready(Err(Error::IncompleteHead)),
                Ok(_) => {}
                Err(error) => {
                    return Poll::Ready(Err(self.failed_before_response(error, Error::Read)));
                }
            }
        }
    }

    /// No byte of a response (an interim one included) has come.
    fn nothing_read(&self) -> bool {
        self.read.is_empty() && !self.interim
    }

    /// An I/O error before the response head: [`Error::NoResponse`] when
    /// the connection was closed or reset and no response byte came.
    fn failed_before_response(&self, error: io::Error, other: fn(io::Error) -> Error) -> Error {
        let closed = matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        );
        if closed && self.nothing_read() {
            Error::NoResponse(Some(error))
        } else {
            other(error)
        }
    }
}

/// Reads what the connection has into the free space of `read`.
fn poll_fill(
    io: &mut Box<dyn Io>,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < MIN_READ_SPACE {
        read.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}

/// Writes all of `out` and flushes (TLS holds written bytes until then).
fn poll_write_all(
    io: &mut Box<dyn Io>,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while out.has_remaining() {
        let written = ready!(Pin::new(&mut *io).poll_write(cx, out))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(written);
    }
    Pin::new(io).poll_flush(cx)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connection to a server that, for each exchange in turn, reads until
    /// it has seen `until` and then writes the answer as given; it hands back
    /// everything it read when the connection ends.
    async fn connection_to(
        exchanges: Vec<(&'static str, &'static str)>,
    ) -> (Connection, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for (until, answer) in exchanges {
                let start = seen.len();
                while !String::from_utf8_lossy(&seen[start..]).contains(until) {
                    let mut chunk = [0; 4096];
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return seen,
                        Ok(read) => seen.extend_from_slice(&chunk[..read]),
                    }
                }
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        (
            Connection::new(TcpStream::connect(addr).await.unwrap()),
            server,
        )
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header("host", "origin")
            .body(Empty::new())
            .unwrap()
    }

    async fn send<B>(connection: Connection, request: Request<B>) -> Response<Http1Body>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        match connection.send(request).await {
            Ok(response) => response,
            Err(failed) => panic!("send failed: {}", failed.error),
        }
    }

    #[tokio::test]
    async fn a_chunked_body_streams_with_its_trailers_and_the_connection_is_reused() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                       4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nx-checksum: 7\r\n\r\n";
        let sized = "HTTP/1.1 201 Created\r\ncontent-length: 2\r\nkeep-alive: timeout=5\r\n\r\nok";
        let (connection, server) =
            connection_to(vec![("\r\n\r\n", chunked), ("\r\n\r\n", sized)]).await;

        let response = send(connection, get("/first")).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(data, b"wikipedia");
        assert_eq!(trailers.unwrap()["x-checksum"], "7");
        let connection = body.take_reusable().expect("the connection is reusable");
        assert!(connection.keep_alive().is_none());

        let response = send(connection, get("/second")).await;
        assert_eq!(response.status(), 201);
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(
            &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
            b"ok"
        );
        assert!(body.frame().await.is_none());
        let connection = body.take_reusable().unwrap();
        assert_eq!(connection.keep_alive(), Some(Duration::from_secs(5)));
        drop(connection);
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "GET /first HTTP/1.1\r\nhost: origin\r\n\r\nGET /second HTTP/1.1\r\nhost: origin\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_a_body_until_close_ends_the_connection() {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s>\r\n\r\n\
                      HTTP/1.0 200 OK\r\n\r\nall of it";
        let (connection, server) = connection_to(vec![("\r\n\r\n", answer)]).await;
        let response = send(connection, get("/")).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("link").is_none());
        let (mut body, server) = (response.into_body(), server);
        // The server task ends and closes the connection after its answer.
        server.await.unwrap();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"all of it");
        assert!(
            body.take_reusable().is_none(),
            "a body until close ends its connection"
        );
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_chunked_with_its_declared_trailers() {
        let (connection, server) =
            connection_to(vec![("0\r\n", "HTTP/1.1 204 No Content\r\n\r\n")]).await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", "9".parse().unwrap());
        trailers.insert("x-undeclared", "1".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from_static(b", world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let request = Request::post("/upload")
            .header("host", "origin")
            .header("trailer", "x-sum")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap();
        let response = send(connection, request).await;
        assert_eq!(response.status(), 204);
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        let connection = body
            .take_reusable()
            .expect("a 204 leaves the connection reusable");
        drop(connection);
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "POST /upload HTTP/1.1\r\nhost: origin\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 9\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_body_of_known_length_gets_a_content_length() {
        let (connection, server) = connection_to(vec![(
            "payload",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        )])
        .await;
        let request = Request::put("/item")
            .header("host", "origin")
            .header("transfer-encoding", "chunked")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let response = send(connection, request).await;
        assert!(response.into_body().take_reusable().is_some());
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "PUT /item HTTP/1.1\r\nhost: origin\r\ncontent-length: 7\r\n\r\npayload"
        );
    }

    #[tokio::test]
    async fn a_post_without_a_body_says_so() {
        let (connection, server) = connection_to(vec![
            ("\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"),
            ("\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let post = Request::post("/empty")
            .header("host", "origin")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut response = send(connection, post).await;
        let connection = response.body_mut().take_reusable().expect("reusable");
        send(connection, get("/after")).await;
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "POST /empty HTTP/1.1\r\nhost: origin\r\ncontent-length: 0\r\n\r\n\
             GET /after HTTP/1.1\r\nhost: origin\r\n\r\n"
        );
    }

    /// Uploads `body` to a server that answers `413` (with `fields`) right
    /// after the head, reading none of the body: the answer must come, and
    /// leave the connection unusable.
    async fn answered_before_the_body<B>(fields: &'static str, body: B)
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let answer = format!("HTTP/1.1 413 Content Too Large\r\n{fields}content-length: 0\r\n\r\n");
        let (connection, _server) = connection_to(vec![("\r\n\r\n", answer.leak())]).await;
        let request = Request::put("/upload")
            .header("host", "origin")
            .body(body)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), send(connection, request))
            .await
            .expect("the answer ends the exchange");
        assert_eq!(response.status(), 413);
        assert!(response.into_body().take_reusable().is_none());
    }

    #[tokio::test]
    async fn an_early_response_leaves_the_connection_unusable_until_the_body_went_out() {
        // A body that sends one chunk and then never ends.
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"some"),
        ))]);
        let never = futures_util::stream::pending();
        let body = StreamBody::new(futures_util::StreamExt::chain(first, never));
        answered_before_the_body("", body).await;
    }

    #[tokio::test]
    async fn an_answer_before_the_server_closes_on_an_unread_body_is_delivered() {
        // The server closes with the body unread (a reset): the answer is
        // read, not lost to the failed writes.
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let endless = futures_util::stream::repeat_with(move || {
            Ok::<_, std::io::Error>(Frame::data(chunk.clone()))
        });
        answered_before_the_body("connection: close\r\n", StreamBody::new(endless)).await;
    }

    #[tokio::test]
    async fn a_close_before_any_response_byte_is_told_apart_from_a_cut_response() {
        /// A GET answered with `answer`, then a close.
        async fn failed_on(answer: &'static str) -> Failed<Empty<Bytes>> {
            let (connection, _server) = connection_to(vec![("\r\n\r\n", answer)]).await;
            match connection.send(get("/")).await {
                Ok(response) => panic!("{answer:?} gave {}", response.status()),
                Err(failed) => failed,
            }
        }

        let failed = failed_on("").await;
        assert!(failed.error.no_response(), "{}", failed.error);
        assert!(failed.head_written);
        assert!(
            failed.request.is_some(),
            "a request without a body stays whole"
        );
        // A close after an interim response is not a close before any.
        for answer in [
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-le",
        ] {
            let failed = failed_on(answer).await;
            assert!(
                matches!(failed.error, Error::IncompleteHead),
                "{answer:?}: {}",
                failed.error
            );
        }

        let (connection, _server) = connection_to(vec![(
            "\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        )])
        .await;
        let mut body = send(connection, get("/")).await.into_body();
        assert_eq!(
            &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
            b"short"
        );
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), Error::IncompleteBody.to_string());
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_not_open() {
        let (mut connection, server) = connection_to(vec![]).await;
        assert!(connection.is_open(), "nothing has happened yet");
        server.await.unwrap();
        // The FIN takes a moment to arrive on loopback.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while connection.is_open() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close was never seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

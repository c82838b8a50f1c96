//! remora's own HTTP/2 client, on the `h2` crate. A request's stream is
//! opened, its response awaited and its body read from the request's own
//! task: there is no dispatch task and no channel between the two, which is
//! what hyper's HTTP/2 client adds (`docs/benchmarks.md` measures it). Two
//! things keep a task of their own: the connection ([`connection`], which
//! also sends the keepalive PINGs), and a request body still being sent
//! ([`upload`]), so that sending it never waits on the response being read.
//!
//! A request's life on a connection:
//!
//! 1. **Ready**: h2 takes no new stream on a connection that failed or
//!    received GOAWAY; the request then comes back whole, unsent.
//! 2. **Head**: connection-specific fields are dropped (RFC 9113 §8.2.2,
//!    by `headers::strip_hop_by_hop`, as `forward` does) and a body of known
//!    size gets its `content-length`.
//!    A request with no body ends its stream with its HEADERS.
//! 3. **Body**: sent by an [`upload`] task, as the peer's flow control
//!    allows. A body that fails resets the stream (`CANCEL`) and is the
//!    exchange's error; so does an exchange given up (its response or
//!    response body dropped) before the body was sent.
//! 4. **Response** ([`Http2Body`]): its head, then its body streamed, each
//!    frame's flow-control window given back as it is read, then trailers.
//!
//! A stream above a GOAWAY's `last_stream_id` or refused with
//! `REFUSED_STREAM` fails with h2's error, which says so (`resend.rs` sends
//! such requests again).

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response};
use http_body::Body;

use crate::headers::strip_hop_by_hop;
use crate::http1::has_payload_semantics;

mod body;
pub mod connection;
mod upload;

pub use self::body::Http2Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an HTTP/2 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream or its connection failed: h2's error says how (GOAWAY,
    /// reset by the peer and with which code, I/O).
    #[error("HTTP/2: {0}")]
    Stream(#[from] h2::Error),
    /// The connection could take no stream: it had received GOAWAY or
    /// failed. Nothing was sent.
    #[error("HTTP/2: no stream opened: {0}")]
    NotSent(h2::Error),
    /// Reading the request body failed; the stream was reset.
    #[error("reading the request body failed: {0}")]
    RequestBody(BoxError),
    /// The connection was closed under the stream because a keepalive PING
    /// went unanswered for this long.
    #[error(
        "HTTP/2: the connection was closed after a keepalive PING went unanswered for {0:?} (connection_pool.keepalive_timeout)"
    )]
    Silent(Duration),
}

impl Error {
    /// h2's error, when the stream or connection failed.
    pub fn h2(&self) -> Option<&h2::Error> {
        match self {
            Error::Stream(error) | Error::NotSent(error) => Some(error),
            Error::RequestBody(_) | Error::Silent(_) => None,
        }
    }

    /// True when nothing of the request was sent.
    pub fn not_sent(&self) -> bool {
        matches!(self, Error::NotSent(_))
    }
}

/// A failed exchange, with the request when none of it was sent.
pub struct Failed<B> {
    pub error: Error,
    pub request: Option<Request<B>>,
}

/// Sends `request` on a stream of `sender`'s connection and waits for the
/// response head.
pub async fn send<B>(
    mut sender: SendRequest<Bytes>,
    request: Request<B>,
) -> Result<Response<Http2Body>, Failed<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(error) = poll_fn(|cx| sender.poll_ready(cx)).await {
        return Err(Failed {
            error: error.into(),
            request: Some(request),
        });
    }
    let (head, body) = request.into_parts();
    let mut head = Request::from_parts(head, ());
    // h2 refuses to send connection-specific fields (RFC 9113 §8.2.2).
    strip_hop_by_hop(head.headers_mut(), false);
    let end_of_stream = body.is_end_stream();
    if let Some(length) = body.size_hint().exact()
        && (length != 0 || has_payload_semantics(head.method()))
        && !head.headers().contains_key(CONTENT_LENGTH)
    {
        head.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let (response, stream) = match sender.send_request(head, end_of_stream) {
        Ok(sent) => sent,
        // The connection received GOAWAY or failed just after it was
        // found ready: nothing was sent (h2 consumed the head, so the
        // caller resends its own copy).
        Err(error) if error.is_go_away() || error.is_io() => {
            return Err(Failed {
                error: Error::NotSent(error),
                request: None,
            });
        }
        Err(error) => {
            return Err(Failed {
                error: error.into(),
                request: None,
            });
        }
    };
    drop(sender);
    let mut upload = (!end_of_stream).then(|| upload::start(body, stream));
    match response.await {
        Ok(response) => {
            let (head, received) = response.into_parts();
            let body = Http2Body::new(received, &head.headers, upload);
            Ok(Response::from_parts(head, body))
        }
        Err(error) => {
            let error = match upload.as_mut().and_then(upload::Upload::failure) {
                Some(body_error) => Error::RequestBody(body_error),
                None => Error::Stream(error),
            };
            Err(Failed {
                error,
                request: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use h2::server::SendResponse;
    use http::{HeaderMap, Request, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::connection::{self, Keepalive};
    use super::*;

    type Chunks = StreamBody<UnboundedReceiverStream<Result<Frame<Bytes>, std::io::Error>>>;

    /// An h2 server on 127.0.0.1:0 handing each stream to `handle`; it
    /// closes its connection with GOAWAY after `streams` streams.
    async fn serve<F, Fut>(streams: usize, handle: F) -> SocketAddr
    where
        F: Fn(Request<h2::RecvStream>, SendResponse<Bytes>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (io, _) = listener.accept().await.unwrap();
            let mut server = h2::server::handshake(io).await.unwrap();
            for _ in 0..streams {
                let Some(Ok((request, respond))) = server.accept().await else {
                    return;
                };
                tokio::spawn(handle(request, respond));
            }
            server.graceful_shutdown();
            while server.accept().await.is_some() {}
        });
        addr
    }

    /// A client connection to `addr`, driven; `ended` resolves when its task does.
    async fn connect(
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
        let io = TcpStream::connect(addr).await.unwrap();
        let (sender, driver) = connection::handshake(io, keepalive).await.unwrap();
        let ended = tokio::spawn(async move { connection::drive(driver, &AlwaysBusy).await });
        (sender, ended)
    }

    /// A connection's owner that counts it busy and needs to hear nothing.
    struct AlwaysBusy;

    impl connection::Events for AlwaysBusy {
        fn busy(&self) -> bool {
            true
        }
        fn settings_received(&self) {}
        fn silent(&self, _: Duration) {}
    }

    fn chunks() -> (
        mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>,
        Chunks,
    ) {
        let (send, receive) = mpsc::unbounded_channel();
        (send, StreamBody::new(UnboundedReceiverStream::new(receive)))
    }

    /// What the server side reported, within 5 s.
    async fn within<T>(report: impl Future<Output = Option<T>>) -> T {
        let report = tokio::time::timeout(Duration::from_secs(5), report).await;
        report
            .expect("the server reported nothing within 5 s")
            .unwrap()
    }

    fn post<B>(body: B) -> Request<B> {
        Request::post("http://origin/").body(body).unwrap()
    }

    /// Reads the stream's whole body; the error's reason when it fails.
    async fn read_all(mut body: h2::RecvStream) -> Result<Vec<u8>, Option<h2::Reason>> {
        let mut read = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.map_err(|error| error.reason())?;
            let _ = body.flow_control().release_capacity(data.len());
            read.extend_from_slice(&data);
        }
        Ok(read)
    }

    #[tokio::test]
    async fn an_upload_and_its_response_stream_at_once_with_trailers_both_ways() {
        let addr = serve(1, |request, mut respond| async move {
            let mut body = request.into_body();
            let mut echo = respond.send_response(Response::new(()), false).unwrap();
            while let Some(data) = body.data().await {
                let data = data.unwrap();
                let _ = body.flow_control().release_capacity(data.len());
                echo.send_data(data, false).unwrap();
            }
            let mut trailers = body.trailers().await.unwrap().unwrap();
            trailers.insert("grpc-status", "0".parse().unwrap());
            echo.send_trailers(trailers).unwrap();
        })
        .await;
        let (sender, _) = connect(addr, None).await;
        let (chunk, body) = chunks();
        chunk.send(Ok(Frame::data(Bytes::from("ping 1")))).unwrap();
        let response = send(sender, post(body)).await.ok().unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ping 1");
        // The second chunk goes up only now, after the first came back.
        chunk.send(Ok(Frame::data(Bytes::from("ping 2")))).unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "ping 2");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sent", "2".parse().unwrap());
        chunk.send(Ok(Frame::trailers(trailers))).unwrap();
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["x-sent"], "2");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn connection_fields_are_dropped_and_the_length_is_announced() {
        let (seen, mut heads) = mpsc::unbounded_channel();
        let addr = serve(3, move |request, respond| {
            let seen = seen.clone();
            async move {
                seen.send(request.headers().clone()).unwrap();
                let mut respond = respond;
                let response = Response::builder().header("content-length", "2");
                let mut body = respond
                    .send_response(response.body(()).unwrap(), false)
                    .unwrap();
                body.send_data(Bytes::from("ok"), true).unwrap();
            }
        })
        .await;
        let (sender, _) = connect(addr, None).await;
        let mut request = post(Full::new(Bytes::from("hello")));
        for (name, value) in [
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ] {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let response = send(sender.clone(), request).await.ok().unwrap();
        assert_eq!(response.body().size_hint().exact(), Some(2));
        let head = within(heads.recv()).await;
        let names: Vec<_> = head.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["x-end-to-end", "content-length"], "{head:?}");
        assert_eq!(head["content-length"], "5");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");

        send(sender.clone(), post(Empty::<Bytes>::new()))
            .await
            .ok()
            .unwrap();
        assert_eq!(within(heads.recv()).await["content-length"], "0");
        let get = Request::get("http://origin/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send(sender, get).await.ok().unwrap();
        assert!(within(heads.recv()).await.get("content-length").is_none());
    }

    #[tokio::test]
    async fn a_failing_request_body_is_the_exchanges_error_and_cancels_the_stream() {
        let (reset, mut resets) = mpsc::unbounded_channel();
        let addr = serve(1, move |request, _respond| {
            let reset = reset.clone();
            async move {
                reset.send(read_all(request.into_body()).await).unwrap();
            }
        })
        .await;
        let (sender, _) = connect(addr, None).await;
        let (chunk, body) = chunks();
        chunk.send(Ok(Frame::data(Bytes::from("some")))).unwrap();
        chunk
            .send(Err(std::io::Error::other("the client went away")))
            .unwrap();
        let failed = send(sender, post(body)).await.err().unwrap();
        assert!(
            matches!(&failed.error, Error::RequestBody(error) if error.to_string() == "the client went away"),
            "{:?}",
            failed.error
        );
        assert!(failed.request.is_none());
        assert_eq!(within(resets.recv()).await, Err(Some(h2::Reason::CANCEL)));
    }

    #[tokio::test]
    async fn a_request_body_failing_after_the_response_head_is_the_bodys_error() {
        let addr = serve(1, |request, mut respond| async move {
            let _echo = respond.send_response(Response::new(()), false).unwrap();
            let _ = read_all(request.into_body()).await;
        })
        .await;
        let (sender, _) = connect(addr, None).await;
        let (chunk, body) = chunks();
        let response = send(sender, post(body)).await.ok().unwrap();
        chunk
            .send(Err(std::io::Error::other("the client went away")))
            .unwrap();
        let error = response.into_body().frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "the client went away");
    }

    #[tokio::test]
    async fn a_response_that_ends_first_stops_the_upload() {
        let (reset, mut resets) = mpsc::unbounded_channel();
        let addr = serve(1, move |request, mut respond| {
            let reset = reset.clone();
            async move {
                let response = Response::builder().status(StatusCode::PAYLOAD_TOO_LARGE);
                respond
                    .send_response(response.body(()).unwrap(), true)
                    .unwrap();
                reset.send(read_all(request.into_body()).await).unwrap();
            }
        })
        .await;
        let (sender, _) = connect(addr, None).await;
        let (chunk, body) = chunks();
        chunk.send(Ok(Frame::data(Bytes::from("part")))).unwrap();
        let response = send(sender, post(body)).await.ok().unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap();
        assert!(body.to_bytes().is_empty());
        // The client's body has not ended: the upload stops because the exchange is over.
        assert_eq!(within(resets.recv()).await, Err(Some(h2::Reason::CANCEL)));
        drop(chunk);
    }

    #[tokio::test]
    async fn after_goaway_a_request_comes_back_unsent() {
        let addr = serve(1, |_request, respond| async move {
            let mut respond = respond;
            respond.send_response(Response::new(()), true).unwrap();
        })
        .await;
        let (sender, ended) = connect(addr, None).await;
        let get = || {
            Request::get("http://origin/")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        send(sender.clone(), get()).await.ok().unwrap();
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .unwrap()
            .unwrap();
        let failed = send(sender, get()).await.err().unwrap();
        assert!(failed.request.is_some(), "{:?}", failed.error);
    }

    #[tokio::test]
    async fn keepalive_spares_a_peer_that_answers_pings() {
        let addr = serve(1, |_request, respond| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut respond = respond;
            respond.send_response(Response::new(()), true).unwrap();
        })
        .await;
        let keepalive = Keepalive {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(100),
        };
        let (sender, _) = connect(addr, Some(keepalive)).await;
        let get = Request::get("http://origin/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send(sender, get).await.ok().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

//! HTTP/2 (h2c) origins written frame by frame, for what no library server
//! does on demand:
//!
//! - `goaway_origin`: a GOAWAY whose `last_stream_id` leaves later streams of
//!   the connection unprocessed. On its first connection it waits for
//!   [`Goaway::streams`] request HEADERS, then sends GOAWAY (its error code)
//!   with `last_stream_id` = the first stream, which it answers `200`, or 0
//!   (nothing processed). Every later connection answers each request as
//!   `later` says, at once.
//! - `settings_origin`: a `SETTINGS_MAX_CONCURRENT_STREAMS` that changes in
//!   the middle of a connection.
//!
//! Requests must have no body beyond what fits in the frames they skip (they
//! read and ignore DATA).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Server, serve, serve_counted};

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const RST_STREAM: u8 = 3;
/// SETTINGS identifier of `SETTINGS_MAX_CONCURRENT_STREAMS`.
const MAX_CONCURRENT_STREAMS: u16 = 3;
/// RST_STREAM error code `INTERNAL_ERROR`.
const INTERNAL_ERROR: u32 = 2;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
/// HPACK: indexed field 8 of the static table, `:status: 200`.
const STATUS_200: u8 = 0x88;

/// What the origin saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// Connections the client closed.
    pub closed: AtomicUsize,
    /// Requests answered 200.
    pub answered: AtomicUsize,
}

/// The GOAWAY of `goaway_origin`'s first connection.
#[derive(Clone, Copy)]
pub struct Goaway {
    /// Request HEADERS awaited before it is sent.
    pub streams: usize,
    /// The first stream is processed (`last_stream_id`, answered `200`);
    /// otherwise `last_stream_id` is 0.
    pub first_processed: bool,
    /// Its error code (0 = `NO_ERROR`).
    pub code: u32,
}

/// How `goaway_origin`'s later connections answer a request.
#[derive(Clone, Copy)]
pub enum Later {
    /// `200`.
    Answer,
    /// `RST_STREAM` with `INTERNAL_ERROR`: a failure after the request was
    /// processed, never resent.
    Reset,
}

/// Starts the origin.
pub fn goaway_origin(goaway: Goaway, later: Later) -> (Server, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let server = serve({
        let seen = Arc::clone(&seen);
        move |stream| {
            let first = seen.connections.fetch_add(1, Ordering::SeqCst) == 0;
            let seen = Arc::clone(&seen);
            async move {
                let goaway = first.then_some(goaway);
                if let Err(error) = connection(stream, goaway, later, &seen).await
                    && error.kind() == std::io::ErrorKind::UnexpectedEof
                {
                    seen.closed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    (server, seen)
}

/// One frame as read: type, flags, stream id, payload.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub id: u32,
    pub payload: Vec<u8>,
}

/// Reads one frame.
pub async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
    let mut header = [0; 9];
    stream.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: header[3],
        flags: header[4],
        id,
        payload,
    })
}

async fn connection(
    mut stream: TcpStream,
    goaway: Option<Goaway>,
    later: Later,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut preface = [0; 24];
    stream.read_exact(&mut preface).await?;
    write_frame(&mut stream, SETTINGS, 0, 0, &[]).await?;
    let mut held = Vec::new();
    loop {
        let frame = read_frame(&mut stream).await?;
        let id = frame.id;
        match frame.kind {
            HEADERS => match (goaway, later) {
                (None, Later::Answer) => answer(&mut stream, id, seen).await?,
                (None, Later::Reset) => {
                    let code = INTERNAL_ERROR.to_be_bytes();
                    write_frame(&mut stream, RST_STREAM, 0, id, &code).await?;
                }
                (Some(goaway), _) => {
                    held.push(id);
                    if held.len() == goaway.streams {
                        let processed = if goaway.first_processed { held[0] } else { 0 };
                        let mut body = processed.to_be_bytes().to_vec();
                        body.extend_from_slice(&goaway.code.to_be_bytes());
                        write_frame(&mut stream, GOAWAY, 0, 0, &body).await?;
                        if processed != 0 {
                            answer(&mut stream, processed, seen).await?;
                        }
                    }
                }
            },
            _ => acknowledge(&mut stream, &frame).await?,
        }
    }
}

/// Answers the peer's SETTINGS and PING with their ACKs; other frames need no answer.
pub async fn acknowledge(
    stream: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
) -> std::io::Result<()> {
    match frame.kind {
        SETTINGS if frame.flags & ACK == 0 => write_frame(stream, SETTINGS, ACK, 0, &[]).await,
        PING if frame.flags & ACK == 0 => write_frame(stream, PING, ACK, 0, &frame.payload).await,
        _ => Ok(()),
    }
}

/// Answers stream `id` with a `200` head that ends it.
async fn write_200(stream: &mut (impl AsyncWrite + Unpin), id: u32) -> std::io::Result<()> {
    write_frame(stream, HEADERS, END_HEADERS | END_STREAM, id, &[STATUS_200]).await
}

async fn answer(
    stream: &mut (impl AsyncWrite + Unpin),
    id: u32,
    seen: &Seen,
) -> std::io::Result<()> {
    write_200(stream, id).await?;
    seen.answered.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

pub async fn write_frame(
    stream: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    flags: u8,
    id: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

/// Starts an origin whose SETTINGS allow `first` concurrent streams a
/// connection. It answers each request `200` after `delay`; just before a
/// connection's first answer, it changes the limit to `then` with a new
/// SETTINGS frame. Returns the connections opened and the most streams open
/// at once on one connection among those opened after its change.
pub fn settings_origin(
    first: u32,
    then: u32,
    delay: Duration,
) -> (Server, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    serve_counted(move |stream, busiest| async move {
        let _ = changing_connection(stream, (first, then), delay, busiest).await;
    })
}

fn max_streams_setting(limit: u32) -> Vec<u8> {
    let mut payload = MAX_CONCURRENT_STREAMS.to_be_bytes().to_vec();
    payload.extend_from_slice(&limit.to_be_bytes());
    payload
}

async fn changing_connection(
    stream: TcpStream,
    (first, then): (u32, u32),
    delay: Duration,
    busiest: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let mut preface = [0; 24];
    reader.read_exact(&mut preface).await?;
    write_frame(&mut writer, SETTINGS, 0, 0, &max_streams_setting(first)).await?;
    let writer = Arc::new(Mutex::new(writer));
    let open = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(AtomicBool::new(false));
    loop {
        let frame = read_frame(&mut reader).await?;
        let mut out = writer.lock().await;
        match frame.kind {
            HEADERS => {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                if changed.load(Ordering::SeqCst) {
                    busiest.fetch_max(now, Ordering::SeqCst);
                }
                let (writer, open, changed) =
                    (Arc::clone(&writer), Arc::clone(&open), Arc::clone(&changed));
                let id = frame.id;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut out = writer.lock().await;
                    if !changed.swap(true, Ordering::SeqCst) {
                        let setting = max_streams_setting(then);
                        let _ = write_frame(&mut *out, SETTINGS, 0, 0, &setting).await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                    let _ = write_200(&mut *out, id).await;
                });
            }
            _ => acknowledge(&mut *out, &frame).await?,
        }
    }
}

/// Opens an h2c connection to `addr` (preface and empty SETTINGS) and starts one `GET path`
/// on stream 1.
pub async fn client_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    client.write_all(preface).await.expect("preface");
    write_frame(&mut client, SETTINGS, 0, 0, &[])
        .await
        .expect("SETTINGS");
    // HPACK, literal fields without indexing: :method GET, :scheme http, :path, :authority x.
    let mut head = vec![0x82, 0x86, 0x04, path.len() as u8];
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(&[0x01, 1, b'x']);
    let flags = END_HEADERS | END_STREAM;
    write_frame(&mut client, HEADERS, flags, 1, &head)
        .await
        .expect("HEADERS");
    client
}

/// Reads frames (answering PINGs and SETTINGS) until stream 1's response head, each within
/// 5 s; returns the GOAWAYs met on the way as (last stream id, error code).
pub async fn goaways_until_answered(client: &mut TcpStream) -> Vec<(u32, u32)> {
    let mut goaways = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(client))
            .await
            .expect("frames within 5 s")
            .expect("read a frame");
        match frame.kind {
            GOAWAY => {
                let word =
                    |at: usize| u32::from_be_bytes(frame.payload[at..at + 4].try_into().unwrap());
                goaways.push((word(0) & 0x7fff_ffff, word(4)));
            }
            HEADERS if frame.id == 1 => return goaways,
            _ => acknowledge(client, &frame).await.expect("ACK"),
        }
    }
}

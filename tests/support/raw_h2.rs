//! `goaway_origin`: an HTTP/2 (h2c) origin written frame by frame, for what no
//! library server does on demand: a GOAWAY whose `last_stream_id` leaves
//! later streams of the connection unprocessed.
//!
//! On its first connection it waits for `streams` request HEADERS, then sends
//! GOAWAY (`last_stream_id` = the first stream, the given error code),
//! answers the first stream `200` and nothing else. Every later connection
//! answers each request `200` at once. Requests must have no body beyond
//! what fits in the frames it skips (it reads and ignores DATA).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Server, serve};

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
/// HPACK: indexed field 8 of the static table, `:status: 200`.
const STATUS_200: u8 = 0x88;

/// What the origin saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// Requests answered 200.
    pub answered: AtomicUsize,
}

/// Starts the origin; `code` is the GOAWAY's error code (0 = `NO_ERROR`).
pub fn goaway_origin(streams: usize, code: u32) -> (Server, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let server = serve({
        let seen = Arc::clone(&seen);
        move |stream| {
            let first = seen.connections.fetch_add(1, Ordering::SeqCst) == 0;
            let seen = Arc::clone(&seen);
            async move {
                let goaway = first.then_some((streams, code));
                let _ = connection(stream, goaway, &seen).await;
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
pub async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Frame> {
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
    goaway: Option<(usize, u32)>,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut preface = [0; 24];
    stream.read_exact(&mut preface).await?;
    write_frame(&mut stream, SETTINGS, 0, 0, &[]).await?;
    let mut held = Vec::new();
    loop {
        let Frame {
            kind,
            flags,
            id,
            payload,
        } = read_frame(&mut stream).await?;
        match kind {
            SETTINGS if flags & ACK == 0 => write_frame(&mut stream, SETTINGS, ACK, 0, &[]).await?,
            PING if flags & ACK == 0 => write_frame(&mut stream, PING, ACK, 0, &payload).await?,
            HEADERS => match goaway {
                None => answer(&mut stream, id, seen).await?,
                Some((streams, code)) => {
                    held.push(id);
                    if held.len() == streams {
                        let mut body = held[0].to_be_bytes().to_vec();
                        body.extend_from_slice(&code.to_be_bytes());
                        write_frame(&mut stream, GOAWAY, 0, 0, &body).await?;
                        answer(&mut stream, held[0], seen).await?;
                    }
                }
            },
            _ => {}
        }
    }
}

async fn answer(stream: &mut TcpStream, id: u32, seen: &Seen) -> std::io::Result<()> {
    write_frame(stream, HEADERS, END_HEADERS | END_STREAM, id, &[STATUS_200]).await?;
    seen.answered.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

pub async fn write_frame(
    stream: &mut TcpStream,
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

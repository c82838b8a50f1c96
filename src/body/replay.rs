//! Replay of a request body for retries, while it streams.
//!
//! [`replayable`] wraps a body in the [`ReplayBody`] of the first try and a
//! [`Replay`] that makes the body of each retry. The first try streams frames
//! upstream as they arrive from the client and keeps a copy of the data and
//! trailers while the copy holds at most `limit` bytes of data; past that the
//! copy is dropped and the body is *capped*: no retry can have it. A source
//! that fails is capped too, and one whose size hint already says it is larger
//! is capped as soon as any of its data is read (nothing is copied); until
//! then a retry may still stream it from the start.
//!
//! A retry's body first replays the copy, then — when the previous try did not
//! read the source to its end — reads on from where that try stopped. The
//! source lives in state that all bodies of one request share behind a mutex,
//! so whichever body is polled reads it. Only the newest body may:
//! [`Replay::next_body`] *supersedes* the previous body, which from then on
//! fails with [`Superseded`] (an abandoned try must not end its upstream
//! request cleanly, as if a truncated body were whole), and wakes it if it was
//! waiting on the source so that its connection lets go of it.
//!
//! After linkerd2-proxy's `ReplayBody` (linkerd/http/retry), which hands the
//! source from a dropped body to the next one instead.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The error of a body that a retry took over: its try was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("request body taken over by a retry")]
pub struct Superseded;

/// What the bodies of one request share.
struct State<B> {
    source: B,
    /// The data read from the source so far, in frames; empty when capped.
    data: Vec<Bytes>,
    /// Bytes in `data`.
    len: usize,
    trailers: Option<HeaderMap>,
    limit: usize,
    /// The size hint said more than `limit`: the first data caps.
    too_large: bool,
    /// The copy is incomplete: past the limit, or the source failed.
    capped: bool,
    /// The source returned its end: it is not polled again.
    ended: bool,
    /// Generation of the newest body; older bodies are superseded.
    newest: u64,
    /// The newest body's waker while it waits on the source.
    waker: Option<Waker>,
}

impl<B> State<B> {
    fn keep(&mut self, data: &Bytes) {
        if self.capped || data.is_empty() {
            return;
        }
        self.len += data.len();
        if self.len > self.limit || self.too_large {
            self.cap();
        } else {
            self.data.push(data.clone());
        }
    }

    fn cap(&mut self) {
        self.capped = true;
        self.data = Vec::new();
        self.trailers = None;
    }
}

type Shared<B> = Arc<Mutex<State<B>>>;

fn lock<B>(shared: &Shared<B>) -> MutexGuard<'_, State<B>> {
    // Nothing panics while holding the lock but a source's own poll; its state
    // is still consistent (the frame it was reading is simply not kept).
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The body of one try.
pub struct ReplayBody<B> {
    shared: Shared<B>,
    generation: u64,
    /// Frames of the copy this body has sent.
    replayed: usize,
    /// The trailers were sent (replayed or read from the source).
    trailers_sent: bool,
}

/// Makes the bodies of retries.
pub struct Replay<B> {
    shared: Shared<B>,
}

/// The body of the first try and the [`Replay`] that makes the retries' bodies.
pub fn replayable<B: Body>(source: B, limit: usize) -> (ReplayBody<B>, Replay<B>) {
    let too_large = source.size_hint().lower() > limit as u64;
    let shared = Arc::new(Mutex::new(State {
        source,
        data: Vec::new(),
        len: 0,
        trailers: None,
        limit,
        too_large,
        capped: false,
        ended: false,
        newest: 0,
        waker: None,
    }));
    let replay = Replay {
        shared: Arc::clone(&shared),
    };
    (ReplayBody::new(shared, 0), replay)
}

impl<B> ReplayBody<B> {
    fn new(shared: Shared<B>, generation: u64) -> Self {
        Self {
            shared,
            generation,
            replayed: 0,
            trailers_sent: false,
        }
    }
}

impl<B> Replay<B> {
    /// True when a retry cannot have the body: the copy lacks part of what
    /// was sent.
    pub fn is_capped(&self) -> bool {
        lock(&self.shared).capped
    }

    /// The whole body — its data frames and trailers — once the source has
    /// ended and the copy holds all of it; `None` while it is still arriving
    /// or when capped. Unlike [`next_body`](Self::next_body) it supersedes
    /// nothing: a try running beside the one still sending (a hedge) gets it.
    pub fn whole(&self) -> Option<(Vec<Bytes>, Option<HeaderMap>)>
    where
        B: Body,
    {
        let state = lock(&self.shared);
        // Trailers are a body's last frame.
        let ended = state.ended || state.trailers.is_some() || state.source.is_end_stream();
        (ended && !state.capped).then(|| (state.data.clone(), state.trailers.clone()))
    }

    /// The body of the next try, superseding the previous one; `None` when
    /// capped.
    pub fn next_body(&self) -> Option<ReplayBody<B>> {
        let mut state = lock(&self.shared);
        if state.capped {
            return None;
        }
        state.newest += 1;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Some(ReplayBody::new(Arc::clone(&self.shared), state.newest))
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: From<Superseded>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let mut state = lock(&this.shared);
        if this.generation != state.newest {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if !state.capped {
            if let Some(data) = state.data.get(this.replayed) {
                this.replayed += 1;
                return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
            }
            if let (false, Some(trailers)) = (this.trailers_sent, &state.trailers) {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
        }
        if state.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut state.source).poll_frame(cx);
        match &polled {
            Poll::Pending => match &state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            },
            Poll::Ready(None) => state.ended = true,
            Poll::Ready(Some(Err(_))) => state.cap(),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.keep(data);
                    this.replayed = state.data.len();
                } else if let Some(trailers) = frame.trailers_ref() {
                    if !state.capped {
                        state.trailers = Some(trailers.clone());
                    }
                    this.trailers_sent = true;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.shared);
        if self.generation != state.newest {
            // Polling it yields the error, which must not be skipped.
            return false;
        }
        let to_replay = !state.capped
            && (self.replayed < state.data.len()
                || (!self.trailers_sent && state.trailers.is_some()));
        !to_replay && (state.ended || state.source.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.shared);
        if self.generation != state.newest {
            return SizeHint::default();
        }
        let copied: u64 = match state.data.get(self.replayed..) {
            Some(rest) if !state.capped => rest.iter().map(|d| d.len() as u64).sum(),
            _ => 0,
        };
        if state.ended {
            return SizeHint::with_exact(copied);
        }
        let source = state.source.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(source.lower() + copied);
        if let Some(upper) = source.upper() {
            hint.set_upper(upper + copied);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    #[derive(Debug)]
    enum TestError {
        Superseded,
    }

    impl From<Superseded> for TestError {
        fn from(_: Superseded) -> Self {
            TestError::Superseded
        }
    }

    type Item = Result<Frame<Bytes>, TestError>;
    type Source = StreamBody<tokio_stream::wrappers::ReceiverStream<Item>>;

    /// A source the test feeds frame by frame; dropping the sender ends it.
    fn source() -> (mpsc::Sender<Item>, Source) {
        let (tx, rx) = mpsc::channel(16);
        (
            tx,
            StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
    }

    fn data(bytes: &'static [u8]) -> Item {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers
    }

    /// Reads the body to its end: the data, and the trailers if any.
    async fn read<B>(body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    async fn next_data<B>(body: &mut ReplayBody<B>) -> Bytes
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: From<Superseded> + std::fmt::Debug,
    {
        let frame = body.frame().await.unwrap().unwrap();
        frame.into_data().unwrap()
    }

    #[tokio::test]
    async fn replays_data_and_trailers() {
        let (tx, source) = source();
        tx.send(data(b"hello ")).await.unwrap();
        tx.send(data(b"world")).await.unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
        drop(tx);
        let (first, replay) = replayable(source, 64);
        assert_eq!(
            read(first).await,
            (b"hello world".to_vec(), Some(trailers()))
        );
        assert!(!replay.is_capped());
        let retry = replay.next_body().unwrap();
        assert!(!retry.is_end_stream());
        assert_eq!(retry.size_hint().exact(), Some(11));
        assert_eq!(
            read(retry).await,
            (b"hello world".to_vec(), Some(trailers()))
        );
        // Any number of times.
        let again = replay.next_body().unwrap();
        assert_eq!(
            read(again).await,
            (b"hello world".to_vec(), Some(trailers()))
        );
    }

    #[tokio::test]
    async fn a_retry_after_a_partial_read_continues_with_the_rest() {
        let (tx, source) = source();
        let (mut first, replay) = replayable(source, 64);
        tx.send(data(b"one ")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "one ");
        // The first try is abandoned (its upstream failed) while the client
        // is still sending.
        let retry = replay.next_body().unwrap();
        assert!(matches!(
            first.frame().await,
            Some(Err(TestError::Superseded))
        ));
        drop(first);
        tx.send(data(b"two ")).await.unwrap();
        tx.send(data(b"three")).await.unwrap();
        drop(tx);
        assert_eq!(read(retry).await, (b"one two three".to_vec(), None));
        // The retry read the rest: a third try replays all of it.
        let third = replay.next_body().unwrap();
        assert_eq!(third.size_hint().exact(), Some(13));
        assert_eq!(read(third).await, (b"one two three".to_vec(), None));
    }

    #[tokio::test]
    async fn a_superseded_body_waiting_on_the_source_is_woken() {
        let (tx, source) = source();
        let (mut first, replay) = replayable(source, 64);
        let waiting = tokio::spawn(async move { first.frame().await.map(|f| f.is_err()) });
        tokio::task::yield_now().await;
        let _retry = replay.next_body().unwrap();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert_eq!(woken.unwrap().unwrap(), Some(true));
        drop(tx);
    }

    #[tokio::test]
    async fn past_the_limit_the_body_streams_on_but_cannot_be_replayed() {
        let (tx, source) = source();
        let (mut first, replay) = replayable(source, 8);
        tx.send(data(b"12345")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "12345");
        assert!(!replay.is_capped());
        tx.send(data(b"6789")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "6789");
        assert!(replay.is_capped());
        tx.send(data(b"more")).await.unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
        drop(tx);
        assert_eq!(read(first).await, (b"more".to_vec(), Some(trailers())));
        assert!(replay.next_body().is_none());
    }

    #[tokio::test]
    async fn a_size_hint_over_the_limit_caps_at_the_first_data() {
        let source = http_body_util::Full::new(Bytes::from_static(b"0123456789"))
            .map_err(|never| -> TestError { match never {} });
        let (first, replay) = replayable(source, 4);
        assert_eq!(first.size_hint().exact(), Some(10));
        // Nothing read yet (a connect failure): the retry streams it all.
        assert!(!replay.is_capped());
        let retry = replay.next_body().unwrap();
        assert_eq!(retry.size_hint().exact(), Some(10));
        assert_eq!(read(retry).await, (b"0123456789".to_vec(), None));
        assert!(replay.is_capped());
        assert!(replay.next_body().is_none());
    }

    #[tokio::test]
    async fn a_body_that_ends_at_the_limit_replays_exactly() {
        let source = http_body_util::Full::new(Bytes::from_static(b"01234567"))
            .map_err(|never| -> TestError { match never {} });
        let (first, replay) = replayable(source, 8);
        assert_eq!(first.size_hint().exact(), Some(8));
        assert!(!first.is_end_stream());
        assert_eq!(read(first).await, (b"01234567".to_vec(), None));
        let retry = replay.next_body().unwrap();
        assert_eq!(retry.size_hint().exact(), Some(8));
        assert_eq!(read(retry).await, (b"01234567".to_vec(), None));
    }

    #[tokio::test]
    async fn an_empty_body_is_at_its_end_from_the_start() {
        let source =
            http_body_util::Empty::<Bytes>::new().map_err(|never| -> TestError { match never {} });
        let (first, replay) = replayable(source, 8);
        assert!(first.is_end_stream());
        assert_eq!(first.size_hint().exact(), Some(0));
        drop(first);
        let retry = replay.next_body().unwrap();
        assert!(retry.is_end_stream());
        assert_eq!(retry.size_hint().exact(), Some(0));
    }

    /// A hedge's copy exists only once the source has ended within the limit;
    /// taking it leaves the first try's body running.
    #[tokio::test]
    async fn the_whole_body_is_there_once_the_source_ended_within_the_limit() {
        let (tx, streamed) = source();
        let (mut first, replay) = replayable(streamed, 8);
        assert!(replay.whole().is_none(), "nothing read yet");
        tx.send(data(b"1234")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "1234");
        assert!(replay.whole().is_none(), "still arriving");
        tx.send(data(b"56")).await.unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
        drop(tx);
        assert_eq!(next_data(&mut first).await, "56");
        assert!(first.frame().await.unwrap().unwrap().is_trailers());
        let (copied, copied_trailers) = replay.whole().unwrap();
        assert_eq!(copied.concat(), b"123456");
        assert_eq!(copied_trailers, Some(trailers()));
        assert!(first.frame().await.is_none(), "not superseded");

        let empty =
            http_body_util::Empty::<Bytes>::new().map_err(|never| -> TestError { match never {} });
        let (_first, replay) = replayable(empty, 8);
        assert_eq!(replay.whole(), Some((Vec::new(), None)));

        let (tx, source) = source();
        let (mut first, replay) = replayable(source, 4);
        tx.send(data(b"12345")).await.unwrap();
        drop(tx);
        assert_eq!(next_data(&mut first).await, "12345");
        assert!(first.frame().await.is_none());
        assert!(replay.whole().is_none(), "capped");
    }

    #[tokio::test]
    async fn a_retry_of_a_body_never_read_streams_from_the_start() {
        let (tx, source) = source();
        let (first, replay) = replayable(source, 64);
        // The first try failed to connect: nothing was read.
        drop(first);
        let retry = replay.next_body().unwrap();
        tx.send(data(b"all")).await.unwrap();
        drop(tx);
        assert_eq!(read(retry).await, (b"all".to_vec(), None));
    }
}

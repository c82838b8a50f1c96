//! Accepting connections without spinning, shared by every listener (the
//! data listeners' accept loop and the admin listener). A failed `accept` —
//! out of file descriptors (EMFILE, ENFILE), of buffers (ENOBUFS) or memory
//! (ENOMEM), or anything else — is retried after a pause that starts at
//! 5 ms and doubles up to 1 s (as Go's `net/http` server does), and resets
//! on the next success. Failures are logged at most once a second per
//! listener, with the number of failures not logged since the last line, so
//! a listener out of descriptors writes a line a second, not millions.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The first pause after a failed accept.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between failed accepts.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning per this period and listener.
const WARNING_PERIOD: Duration = Duration::from_secs(1);

/// A listener whose `accept` backs off on errors.
pub struct Acceptor {
    listener: TcpListener,
    /// The listener's address, for the log.
    addr: Option<SocketAddr>,
    /// The pause after the next failure; `None` after a success.
    pause: Option<Duration>,
    /// When the last warning was logged.
    warned: Option<Instant>,
    /// Failures since that warning.
    unlogged: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            addr: listener.local_addr().ok(),
            listener,
            pause: None,
            warned: None,
            unlogged: 0,
        }
    }

    /// The next connection; errors are logged and retried after a pause.
    /// Cancel safe: dropping the future loses no connection.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause = None;
                    return accepted;
                }
                Err(error) => {
                    let pause = next_pause(self.pause);
                    self.pause = Some(pause);
                    self.report(&error, pause);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Logs `error` unless this listener logged one less than a period ago.
    fn report(&mut self, error: &io::Error, pause: Duration) {
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|warned| now.duration_since(warned) < WARNING_PERIOD)
        {
            self.unlogged += 1;
            return;
        }
        let listener = self.addr.map(|addr| addr.to_string()).unwrap_or_default();
        tracing::warn!(
            listener,
            %error,
            unlogged_failures = self.unlogged,
            retry_in = ?pause,
            "accept failed; retrying after a pause"
        );
        self.warned = Some(now);
        self.unlogged = 0;
    }
}

/// The pause after a failure, given the one after the previous failure.
fn next_pause(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_PAUSE, |pause| (pause * 2).min(LONGEST_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second() {
        let mut pause = None;
        let pauses: Vec<u128> = (0..10)
            .map(|_| {
                pause = Some(next_pause(pause));
                pause.unwrap_or_default().as_millis()
            })
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}

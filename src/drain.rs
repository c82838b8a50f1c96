//! Graceful shutdown: one signal tells every accept loop and connection to
//! wind down, and a count of live connections tells when they all have.
//!
//! On drain, listeners stop accepting; HTTP/1.1 connections finish their
//! current request and close, HTTP/2 connections send GOAWAY and finish their
//! open streams, TCP tunnels run on. The process waits for all of them up to
//! the drain timeout.
//!
//! A controller drains what holds its [`Drain`]s: the process has one per
//! listener generation (see `live`), so a listener removed or replaced by a
//! configuration reload drains alone while the others keep serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Starts the drain and waits for it.
pub struct DrainController {
    signal: watch::Sender<bool>,
    live: Arc<LiveCount>,
}

/// Held by accept loops and connections: tells them when to stop.
#[derive(Clone)]
pub struct Drain {
    signal: watch::Receiver<bool>,
    live: Arc<LiveCount>,
}

#[derive(Default)]
struct LiveCount {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts one live connection until dropped.
pub struct Live(Arc<LiveCount>);

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl DrainController {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        Self {
            signal,
            live: Arc::default(),
        }
    }

    pub fn watch(&self) -> Drain {
        Drain {
            signal: self.signal.subscribe(),
            live: Arc::clone(&self.live),
        }
    }

    /// Starts the drain without waiting for it (also how a background task
    /// holding a [`Drain`] is told to stop).
    pub fn signal(&self) {
        self.signal.send_replace(true);
    }

    /// Connections still live.
    pub fn live(&self) -> usize {
        self.live.count.load(Ordering::Acquire)
    }

    /// Signals the drain and waits until no connection is live or `timeout`
    /// passes. Returns how many connections were still live at the end.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.signal();
        let all_closed = async {
            loop {
                let idle = self.live.idle.notified();
                if self.live.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(timeout, all_closed).await;
        self.live()
    }
}

impl Default for DrainController {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// Resolves once the drain has started.
    pub async fn signaled(&mut self) {
        // An error means the controller is gone, which is a drain too.
        let _ = self.signal.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Counts a connection as live until the returned guard drops.
    pub fn track(&self) -> Live {
        self.live.count.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(&self.live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_live_connections_up_to_the_timeout() {
        let controller = DrainController::new();
        let drain = controller.watch();
        let live = drain.track();
        let mut watcher = drain.clone();
        let closer = tokio::spawn(async move {
            watcher.signaled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(live);
        });
        let started = tokio::time::Instant::now();
        assert_eq!(controller.drain(Duration::from_secs(10)).await, 0);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        closer.await.unwrap();

        let _stuck = drain.track();
        assert_eq!(controller.drain(Duration::from_secs(3)).await, 1);
        assert!(drain.is_draining());
    }
}

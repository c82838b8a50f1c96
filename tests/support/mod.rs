//! Upstream servers and clients for integration tests: real sockets on 127.0.0.1:0, no proxy.
//!
//! Every server binds before its constructor returns, so the returned address accepts
//! connections at once (no sleeps needed). Servers run on the calling tokio runtime, so
//! the constructors must be called from inside a test runtime; they panic otherwise.
//! What this module does not do: fixed ports. TLS helpers are in `tls`.
//!
//! A test never passes by skipping: one that needs a tool fails, naming the
//! Debian package `scripts/test.sh` installs, and one that needs root is
//! `#[ignore = "needs root (CI runs as root): …"]`, so `cargo test` lists it
//! as ignored; `scripts/test.sh` runs those too when it runs as root, where
//! they fail rather than skip if root is not enough (see `requirements`).

// Each test file compiles its own copy of this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod black_hole;
pub mod browser;
pub mod client;
pub mod config;
pub mod consul;
pub mod curl;
pub mod dnsmasq;
pub mod etcd;
pub mod grpc;
pub mod h2_origin;
pub mod in_flight;
pub mod jwt;
pub mod otlp;
pub mod peers;
pub mod prober;
pub mod prom;
pub mod proxy;
pub mod queueing;
pub mod raw_h2;
pub mod raw_http1;
pub mod requirements;
pub mod switchable;
pub mod tcp;
pub mod tls;
pub mod traffic;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use backend::{Backend, http_backend, http_backend_on};
pub use black_hole::black_hole;
pub use client::{Reply, get, http_client, send};
pub use grpc::{EchoMsg, grpc_bidi, grpc_echo, grpc_fail, grpc_failing, grpc_unary};
pub use h2_origin::h2_origin;
pub use otlp::{Collector, otlp_collector};
pub use prober::Prober;
pub use proxy::{Proxy, ProxyProcess};
pub use tcp::tcp_echo;
pub use websocket::{websocket_echo, websocket_roundtrip};

/// An address that refuses connections: a port bound but never listening
/// (a connect to it is refused), and kept bound for the rest of the test
/// process. Closing it instead let another test's server take the port, and
/// the "dead" endpoint answered.
pub fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// A running server. Dropping it stops the accept loop and every open connection
/// (the listener closes on the runtime's next tick).
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Keeps the server running until the test's runtime shuts down; returns its address.
    pub fn detach(self) -> SocketAddr {
        let addr = self.addr;
        std::mem::forget(self); // the JoinHandle is leaked, which detaches the task.
        addr
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`serve`], and counts the connections accepted; `handle` also gets `busiest`, a
/// maximum shared by all connections that it may raise (say, the most streams open at once on
/// one connection). Returns the server, the count and `busiest`.
pub fn serve_counted<F, Fut>(
    handle: F,
) -> (
    Server,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
)
where
    F: Fn(TcpStream, Arc<std::sync::atomic::AtomicUsize>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let connections = Arc::new(AtomicUsize::new(0));
    let busiest = Arc::new(AtomicUsize::new(0));
    let server = serve({
        let (connections, busiest) = (Arc::clone(&connections), Arc::clone(&busiest));
        move |stream| {
            connections.fetch_add(1, Ordering::SeqCst);
            handle(stream, Arc::clone(&busiest))
        }
    });
    (server, connections, busiest)
}

/// Binds 127.0.0.1:0 and runs `handle` on every accepted connection.
pub fn serve<F, Fut>(handle: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_listener(loopback_listener(), handle)
}

/// A listener on 127.0.0.1:0 with the kernel's largest accept queue, as remora's listeners
/// have: a test server then takes a burst of connections from the proxy while its accept
/// task waits for the runtime (std's queue of 128 would drop the SYNs past it, and the proxy's
/// connects would wait a second for their SYN to be sent again).
pub fn loopback_listener() -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&addr.into()).expect("bind 127.0.0.1:0");
    socket.listen(i32::MAX).expect("listen");
    socket.into()
}

/// Raises this process's soft limit on open files to `wanted` (at most the hard limit), for
/// tests that hold many connections at once.
pub fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Like [`serve`], on `addr` (a server coming back on the port of one
/// dropped); tries to bind for up to 2 s, while the old listener closes.
pub fn serve_on<F, Fut>(addr: SocketAddr, handle: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(2);
    let std_listener = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => break listener,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("bind {addr} again: {e}"),
        }
    };
    serve_listener(std_listener, handle)
}

/// Runs `handle` on every connection accepted by `std_listener`.
pub fn serve_listener<F, Fut>(std_listener: std::net::TcpListener, handle: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    std_listener.set_nonblocking(true).expect("set_nonblocking");
    let addr = std_listener.local_addr().expect("local_addr");
    let listener = TcpListener::from_std(std_listener).expect("called outside a tokio runtime");
    let task = tokio::spawn(async move {
        // Connections live in the JoinSet, so aborting this task aborts them too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(handle(stream));
                    }
                    Err(e) => eprintln!("test server {addr}: accept failed: {e}"),
                },
                Some(_) = conns.join_next() => {}
            }
        }
    });
    Server { addr, task }
}

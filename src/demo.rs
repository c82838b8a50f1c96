//! `remora demo`: the proxy's main job on a built-in config, with nothing
//! installed. Three echo backends start on 127.0.0.1:18081-18083 and a demo
//! application on 127.0.0.1:18080; remora balances the `echo` upstream
//! (127.0.0.1:9001) over the backends round-robin and fronts the application
//! on its inbound listener (127.0.0.1:15006). A few requests show the
//! balancing, and the proxy keeps running for curl until Ctrl-C.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::Acceptor;
use crate::config;

/// The demo's configuration, also shipped as `config/demo.yaml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");
const SERVERS: [(&str, u16); 4] = [
    ("backend-1", 18081),
    ("backend-2", 18082),
    ("backend-3", 18083),
    ("the demo app", 18080),
];
const REQUESTS: usize = 9;

pub fn run() -> anyhow::Result<()> {
    let config = config::parse(DEMO_CONFIG, "config/demo.yaml (built in)")?;
    crate::telemetry::logging::init(&config.logging, &config.service.name)?;
    crate::runtime::build(&config.runtime)?.block_on(async {
        for (name, port) in SERVERS {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot start the demo backend on {addr}"))?;
            tokio::spawn(echo_backend(listener, name));
        }
        let running = crate::app::start(&config).await?;
        let proxy = running
            .bound
            .upstream("echo")
            .context("the demo config has no `echo` upstream")?;
        println!("remora demo: upstream `echo` on http://{proxy}/ balances over 3 backends\n");
        let mut answered: BTreeMap<String, usize> = BTreeMap::new();
        for n in 1..=REQUESTS {
            let backend = get(proxy).await?;
            println!("  request {n} -> {backend}");
            *answered.entry(backend).or_default() += 1;
        }
        println!("\n  per backend: {answered:?}");
        println!(
            "\nremora keeps running. Try:\n  curl http://{proxy}/            (outbound, balanced)\n  curl http://{}/            (inbound, to the app)\n  curl http://{admin}/metrics\n  curl http://{admin}/config\n  open http://{admin}/ in a browser (live dashboard)\nCtrl-C to stop.",
            running.bound.inbound.map_or_else(|| "-".into(), |a| a.to_string()),
            admin = running.bound.admin,
        );
        crate::app::wait_for_shutdown_signal().await?;
        running.shutdown().await;
        Ok(())
    })
}

/// Answers every request with `hello from <name>`.
async fn echo_backend(listener: TcpListener, name: &'static str) {
    let mut acceptor = Acceptor::new(listener);
    loop {
        let (stream, _) = acceptor.accept().await;
        let service = service_fn(move |_request: Request<hyper::body::Incoming>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "hello from {name}\n"
            )))))
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

/// One GET through the proxy; returns the body, trimmed.
async fn get(proxy: SocketAddr) -> anyhow::Result<String> {
    let stream = TcpStream::connect(proxy).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "echo")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body)
        .trim()
        .trim_start_matches("hello from ")
        .to_owned())
}

//! Two services, each with its sidecar, on one machine:
//! web → web's remora (outbound `api`) → api's remora (inbound) → api app.
//!
//! Run: `cargo run --example sidecar_pair`. It starts the api application,
//! both sidecars from `examples/sidecar-pair/*.yaml`, sends one request the
//! way the web application would, and prints what the api application saw.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sidecar-pair");
    let api = remora::config::load(&dir.join("api.yaml"))?;
    let web = remora::config::load(&dir.join("web.yaml"))?;

    // The api application: tells who called it and through which Host.
    let app = TcpListener::bind(("127.0.0.1", api.service.port.unwrap_or(18180))).await?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = app.accept().await {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let host = request.headers().get("host").cloned();
                let body = format!(
                    "api saw {} {} (host {host:?})\n",
                    request.method(),
                    request.uri()
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });

    let api_sidecar = remora::app::start(&api).await?;
    let web_sidecar = remora::app::start(&web).await?;
    let target = web_sidecar
        .bound
        .upstream("api")
        .expect("web.yaml has an `api` upstream");

    // What the web application does: plain HTTP to its local sidecar.
    let stream = TcpStream::connect(target).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/orders/42")
        .header("host", "api.internal")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("web → {target} → api sidecar → api app: {status}");
    print!("{}", String::from_utf8_lossy(&body));

    web_sidecar.shutdown().await;
    api_sidecar.shutdown().await;
    Ok(())
}

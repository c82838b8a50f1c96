//! What the pair examples (`consul_pair`, `etcd_pair`) share: the
//! applications behind the sidecars, the plain HTTP/1.1 client that plays
//! the applications' outbound calls and polls the admin `/ready`, and the
//! call each way through both sidecars.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Once both sidecars have their peer's endpoints, web calls api and api
/// calls web, each through both sidecars; then both shut down.
pub async fn call_each_way(
    web: remora::app::Running,
    api: remora::app::Running,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    wait_ready(web.bound.admin).await?;
    wait_ready(api.bound.admin).await?;
    println!();
    let to_api = web.bound.upstream("api").context("web.yaml has `api`")?;
    let to_web = api.bound.upstream("web").context("api.yaml has `web`")?;
    print!(
        "web app → {to_api} (web sidecar) → api sidecar → {}",
        get(to_api, "/orders/42").await?
    );
    print!(
        "api app → {to_web} (api sidecar) → web sidecar → {}",
        get(to_web, "/users/7").await?
    );
    web.shutdown().await;
    api.shutdown().await;
    Ok(())
}

/// The application: says who it is and what it was asked.
pub async fn serve_app(listener: TcpListener, name: &'static str) {
    while let Ok((stream, _)) = listener.accept().await {
        let service = service_fn(move |request: Request<hyper::body::Incoming>| async move {
            let body = format!("{name} app saw {} {}\n", request.method(), request.uri());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

/// Polls the admin `/ready` (every upstream has endpoints) for up to 10 s.
async fn wait_ready(admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_status(admin, "/ready").await? != 200 {
        anyhow::ensure!(Instant::now() < deadline, "{admin} not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    Ok(request(addr, path).await?.0)
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(request(addr, path).await?.1)
}

/// One HTTP/1.1 GET: status and body.
async fn request(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

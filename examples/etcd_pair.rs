//! Two services, each with its sidecar, finding each other through etcd:
//! web ⇄ api, where each sidecar registers its service in etcd (the key
//! `/services/<name>/<id>` under a lease, holding its inbound listener's
//! address as JSON) and discovers the other service with
//! `discovery: { etcd: { service: … } }`.
//!
//! Run: `cargo run --example etcd_pair`. It needs a real etcd (Debian
//! `etcd-server` and `etcd-client`, which scripts/test.sh installs): the
//! example starts one on free ports with a temporary data directory (as the
//! tests do, `tests/support/etcd.rs`), the two applications and both
//! sidecars from `examples/etcd-pair/*.yaml`, shows what etcd holds, sends a
//! request each way through the sidecars, then shuts both down and shows
//! that their keys are gone.

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "shared/pair.rs"]
mod pair;
#[allow(dead_code)]
#[path = "../tests/support/requirements.rs"]
mod requirements;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use etcd::Etcd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let etcd = Etcd::start();
    println!("etcd at {}\n", etcd.url());

    let web = start_sidecar("web", &etcd).await?;
    let api = start_sidecar("api", &etcd).await?;
    // Registration runs in the background (a failing etcd never stops a sidecar).
    let deadline = Instant::now() + Duration::from_secs(10);
    while etcd.keys("/services/").len() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "not registered within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for key in etcd.keys("/services/") {
        let value = etcd.get(&key).context("registered key")?;
        println!("etcd holds {key} = {value}");
    }

    // Each sidecar learns the other's address from its etcd watch.
    pair::call_each_way(web, api).await?;
    println!(
        "\nafter SIGTERM-style shutdown etcd holds: {:?}",
        etcd.keys("/services/")
    );
    Ok(())
}

/// Starts the application `name` on a free port and its sidecar from
/// `examples/etcd-pair/<name>.yaml`, pointed at `etcd`.
async fn start_sidecar(name: &'static str, etcd: &Etcd) -> anyhow::Result<remora::app::Running> {
    let app = TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app.local_addr()?;
    tokio::spawn(pair::serve_app(app, name));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/etcd-pair");
    let mut config = remora::config::load(&dir.join(format!("{name}.yaml")))?;
    config.etcd.as_mut().context("an etcd section")?.endpoints = vec![etcd.url()];
    config.service.port = Some(app_addr.port());
    remora::app::start(&config).await
}

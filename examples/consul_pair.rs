//! Two services, each with its sidecar, finding each other through Consul:
//! web ⇄ api, where each sidecar registers its application and itself
//! (Consul-Connect style) with the agent and discovers the other service's
//! sidecars with `discovery: { consul: { service: …, connect: true } }`.
//!
//! Run: `cargo run --example consul_pair`. Consul is the test suite's
//! stand-in (`tests/support/consul.rs`, compiled into this example only — it
//! is not part of the remora binary), so nothing needs installing. The
//! example starts the stand-in, the two applications, both sidecars from
//! `examples/consul-pair/*.yaml`, shows what the agent holds, sends a
//! request each way through the sidecars, then shuts both down and shows
//! that they deregistered.

#[allow(dead_code)]
#[path = "../tests/support/consul.rs"]
mod consul;
#[path = "shared/pair.rs"]
mod pair;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use consul::ConsulStandIn;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let agent = ConsulStandIn::start();
    println!("Consul agent (stand-in) at {}\n", agent.url());

    let web = start_sidecar("web", &agent).await?;
    let api = start_sidecar("api", &agent).await?;
    // Registration runs in the background (a failing agent never stops a sidecar).
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.agent_service_ids().len() < 4 {
        anyhow::ensure!(Instant::now() < deadline, "not registered within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("the agent holds: {:?}", agent.agent_service_ids());
    for (service, sidecar) in [
        ("web", "web-1-sidecar-proxy"),
        ("api", "api-1-sidecar-proxy"),
    ] {
        let registration = agent.agent_service(sidecar).context("sidecar registered")?;
        println!(
            "  {sidecar}: Kind {}, Port {}, Proxy.DestinationServiceName {} ({service}'s inbound)",
            registration["Kind"],
            registration["Port"],
            registration["Proxy"]["DestinationServiceName"]
        );
    }

    // Each sidecar learns the other's address from the agent (a blocking query).
    pair::call_each_way(web, api).await?;
    println!(
        "\nafter SIGTERM-style shutdown the agent holds: {:?}",
        agent.agent_service_ids()
    );
    Ok(())
}

/// Starts the application `name` on a free port and its sidecar from
/// `examples/consul-pair/<name>.yaml`, pointed at `agent`.
async fn start_sidecar(
    name: &'static str,
    agent: &ConsulStandIn,
) -> anyhow::Result<remora::app::Running> {
    let app = TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app.local_addr()?;
    tokio::spawn(pair::serve_app(app, name));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consul-pair");
    let mut config = remora::config::load(&dir.join(format!("{name}.yaml")))?;
    config.consul.address = Some(agent.url());
    config.service.port = Some(app_addr.port());
    if let Some(check) = &mut config.service.check
        && check.tcp.is_some()
    {
        check.tcp = Some(app_addr.to_string());
    }
    remora::app::start(&config).await
}

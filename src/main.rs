//! The `remora` command line: run, validate, iptables, demo, tap, version.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use remora::config::{self, Config};
use remora::tap_cli::TapArgs;
use remora::transparent::iptables::{self, Family, IptablesError, RuleSet};

// mimalloc: measurably faster than the system allocator for a proxy's many
// small short-lived allocations. Built with its `no_thp` feature (see
// Cargo.toml) and given back what it frees by `release_freed_memory`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's `mi_collect` (mimalloc.h): frees the calling thread's
    /// empty pages and returns to the OS the freed memory whose purge delay
    /// has passed, in every thread's arenas; `force` would skip the delay.
    fn mi_collect(force: bool);
}

/// How often [`release_freed_memory`] runs: mimalloc's own purge delay is
/// 1 s, so memory goes back 1–2 s after it was freed.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(name = "remora", version, about = "A sidecar service-mesh proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run {
        #[arg(long, short, env = "REMORA_CONFIG")]
        config: PathBuf,
        /// How often the file is checked for a change to reload (`off`: on
        /// SIGHUP only).
        #[arg(long, env = "REMORA_WATCH_INTERVAL", default_value = "1s", value_parser = watch_interval)]
        watch_interval: WatchInterval,
    },
    /// Check a configuration file; print `ok` or every problem found.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the iptables nat rules of transparent mode (default), or apply
    /// or remove them (needs NET_ADMIN). Ports, exclusions and the proxy's
    /// uid come from the config's `transparent:` section, or the defaults
    /// (15006 inbound, 15001 outbound, 15000 admin, uid 1337) without one.
    Iptables {
        #[arg(long, short, env = "REMORA_CONFIG")]
        config: Option<PathBuf>,
        /// The uid remora runs as (its traffic is not redirected); overrides
        /// `transparent.proxy_uid`.
        #[arg(long)]
        uid: Option<u32>,
        /// Replace any earlier REMORA_* rules with these.
        #[arg(long, conflicts_with = "cleanup")]
        apply: bool,
        /// Remove every REMORA_* rule and chain.
        #[arg(long)]
        cleanup: bool,
    },
    /// Start three echo backends behind remora on a built-in config and show
    /// requests being balanced. Needs nothing installed.
    Demo,
    /// Follow a running proxy's live requests (its admin `GET /tap`): one
    /// line per completed request, filtered and rate-limited by the proxy.
    Tap {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Only this upstream's requests (inbound: the service's name).
        #[arg(long)]
        upstream: Option<String>,
        /// Only requests this route took.
        #[arg(long)]
        route: Option<String>,
        /// Only `inbound` or `outbound` requests.
        #[arg(long)]
        direction: Option<String>,
        /// Only paths starting with this prefix.
        #[arg(long)]
        path: Option<String>,
        /// Only this status class (`5xx`) or code (`503`).
        #[arg(long)]
        status: Option<String>,
        /// Only requests that took at least this long (`250ms`).
        #[arg(long)]
        min_duration: Option<String>,
        /// At most this many events a second (capped by the proxy's
        /// `admin.tap.max_events_per_second`).
        #[arg(long)]
        rate: Option<u32>,
        /// Show request and response headers (credentials redacted).
        #[arg(long)]
        headers: bool,
        /// Print the stream's JSON records instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("remora {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Validate { config } => match config::load(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config: path,
            watch_interval,
        } => match config::read(&path).and_then(|text| {
            let config = config::parse(&text, &path.display().to_string())?;
            Ok((text, config))
        }) {
            Ok((loaded, config)) => exit_code(run(config, path, watch_interval.0, loaded)),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Demo => exit_code(remora::demo::run()),
        Command::Tap {
            admin,
            upstream,
            route,
            direction,
            path,
            status,
            min_duration,
            rate,
            headers,
            json,
        } => {
            let filters = [
                ("upstream", upstream),
                ("route", route),
                ("direction", direction),
                ("path", path),
                ("status", status),
                ("min_duration", min_duration),
                ("rate", rate.map(|rate| rate.to_string())),
            ];
            let args = TapArgs {
                admin,
                query: (filters.into_iter())
                    .filter_map(|(name, value)| Some((name, value?)))
                    .collect(),
                json,
                headers,
            };
            exit_code(tap(&args))
        }
        Command::Iptables {
            config,
            uid,
            apply,
            cleanup,
        } => exit_code(iptables(config, uid, apply, cleanup)),
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("remora: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `remora tap`: follows the stream until it ends, or Ctrl-C.
fn tap(args: &TapArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(remora::tap_cli::run(args, &mut std::io::stdout()))
}

/// `--watch-interval`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
struct WatchInterval(Option<Duration>);

fn watch_interval(text: &str) -> Result<WatchInterval, String> {
    if text == "off" {
        return Ok(WatchInterval(None));
    }
    match humantime::parse_duration(text) {
        Ok(interval) if !interval.is_zero() => Ok(WatchInterval(Some(interval))),
        Ok(_) => Err("must be greater than zero (or `off`)".to_owned()),
        Err(error) => Err(format!("{error} (e.g. `1s`, `500ms`, or `off`)")),
    }
}

fn iptables(
    config: Option<PathBuf>,
    uid: Option<u32>,
    apply: bool,
    cleanup: bool,
) -> anyhow::Result<()> {
    let mut rules = match config {
        None => RuleSet::defaults(),
        Some(path) => {
            let config = config::load(&path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
            RuleSet::from_config(&config).ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no `transparent:` section, so nothing would listen on the redirected port",
                    path.display()
                )
            })?
        }
    };
    if let Some(uid) = uid {
        rules.proxy_uid = uid;
    }
    if cleanup {
        for family in [Family::V4, Family::V6] {
            match iptables::cleanup(family) {
                // No ip6tables (or no IPv6 nat): nothing of remora's there.
                Err(IptablesError::Spawn { .. }) if family == Family::V6 => {}
                result => result?,
            }
        }
    } else if apply {
        iptables::apply(&rules)?;
    } else {
        print!("{}", rules.render());
    }
    Ok(())
}

/// Runs `bootstrap` (the file at `path`, read as `loaded`) — or, with its
/// `config_source`, the configuration read from there — and reloads it as it
/// changes, until SIGTERM or SIGINT.
fn run(
    bootstrap: Config,
    path: PathBuf,
    watch_interval: Option<Duration>,
    loaded: String,
) -> anyhow::Result<()> {
    remora::telemetry::logging::init(&bootstrap.logging, &bootstrap.service.name)?;
    remora::runtime::build(&bootstrap.runtime)?.block_on(async {
        tokio::spawn(release_freed_memory());
        let (config, source) =
            remora::reload::initial(bootstrap, path, watch_interval, loaded).await?;
        let running = remora::app::start(&config).await?;
        running.watch_config(source);
        remora::app::wait_for_shutdown_signal().await?;
        running.shutdown().await;
        Ok(())
    })
}

/// mimalloc returns freed memory to the OS only after a delay, and only when
/// it is called again: once a load ends nothing calls it, and the memory of
/// the connections that closed stayed resident (79 MB 10 s after 1,000
/// connections, against 18 MB before them). A collection once a second
/// costs next to nothing when there is nothing to give back; purging at once
/// on every free instead (`purge_delay` 0) cost 10–20 % more CPU per request.
async fn release_freed_memory() {
    let mut ticks = tokio::time::interval(RELEASE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // SAFETY: `mi_collect` takes no pointer and may be called from any
        // thread at any time; mimalloc is the global allocator, so it is linked.
        unsafe { mi_collect(false) };
    }
}

//! The `remora` command line: run, validate, demo, version.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use remora::config::{self, Config};

// mimalloc: measurably faster than the system allocator for a proxy's many
// small short-lived allocations (see shared/performance-notes.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Start three echo backends behind remora on a built-in config and show
    /// requests being balanced. Needs nothing installed.
    Demo,
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
        let (config, source) =
            remora::reload::initial(bootstrap, path, watch_interval, loaded).await?;
        let running = remora::app::start(&config).await?;
        running.watch_config(source);
        remora::app::wait_for_shutdown_signal().await?;
        running.shutdown().await;
        Ok(())
    })
}

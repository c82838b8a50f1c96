//! The `remora` command line: run, validate, demo, version.

use std::path::PathBuf;
use std::process::ExitCode;

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
        Command::Run { config } => match config::load(&config) {
            Ok(config) => exit_code(run(config)),
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

fn run(config: Config) -> anyhow::Result<()> {
    remora::telemetry::logging::init(&config.logging, &config.service.name)?;
    remora::runtime::build(&config.runtime)?.block_on(async {
        let running = remora::app::start(&config).await?;
        remora::app::wait_for_shutdown_signal().await?;
        running.shutdown().await;
        Ok(())
    })
}

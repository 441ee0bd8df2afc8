//! The `parley` binary: parses arguments and runs a node.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gateway::Server;
use gateway::config::{Config, LogFormat};

/// Parley: an actor-based real-time chat server.
#[derive(Parser)]
#[command(name = "parley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (a complete server on embedded defaults).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory [default: ./parley-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file; `PARLEY_*` environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log line format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Print an example config file with every key and its default.
    ExampleConfig,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { listen, data_dir, config, log_format } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            if let Some(log_format) = log_format {
                config.log_format = log_format;
            }
            gateway::telemetry::init(config.log_format);
            actix_web::rt::System::new().block_on(async move {
                let listener = TcpListener::bind(config.listen)?;
                Server::start(config, listener).await?.run_until_signal().await
            })
        }
        Command::ExampleConfig => {
            use std::io::Write;
            std::io::stdout().write_all(Config::example_toml().as_bytes())?;
            Ok(())
        }
    }
}

//! The `parley` binary: parses arguments and runs a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use clap::{Parser, Subcommand};
use gateway::Server;
use gateway::config::{Config, LogFormat};
use gateway::files::{lock_data_dir, write_private};
use gateway::seed::{SeedSpec, seed_accounts};

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
    /// Create load-test accounts in a stopped node's store and write their
    /// logins (access and refresh tokens) as JSON for `parley-load --accounts`.
    Seed {
        /// Data directory [default: ./parley-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file; `PARLEY_*` environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Usernames are PREFIX_0, PREFIX_1, …
        #[arg(long)]
        prefix: String,
        /// How many accounts (1–1,000,000).
        #[arg(long)]
        count: usize,
        /// File whose first line is the password of every account; random
        /// (and never shown) when unset.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Lifetime of the access tokens written out, in seconds.
        #[arg(long, default_value_t = 86_400)]
        token_ttl_secs: u64,
        /// Where to write the accounts (JSON; created with mode 0600).
        #[arg(long)]
        out: PathBuf,
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
            // Dropped last: the lines logged until the end are written out.
            let _telemetry =
                gateway::telemetry::init(config.log_format, config.otlp.as_ref()).map_err(anyhow::Error::msg)?;
            let _lock = lock_data_dir(&config.data_dir)?;
            actix_web::rt::System::new().block_on(async move {
                let listener = gateway::bind(config.listen)?;
                Server::start(config, listener).await?.run_until_signal().await
            })
        }
        Command::Seed { data_dir, config, prefix, count, password_file, token_ttl_secs, out } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            let _lock = lock_data_dir(&config.data_dir)?;
            let password = match password_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => gateway::auth::random_token(),
            };
            let spec = SeedSpec { prefix, count, password, token_ttl: Duration::from_secs(token_ttl_secs) };
            let accounts = actix_web::rt::System::new().block_on(seed_accounts(&config, &spec))?;
            write_private(&out, &serde_json::to_vec(&accounts)?)
                .with_context(|| format!("writing {} (it must not exist yet)", out.display()))?;
            eprintln!("seeded {count} accounts; logins in {}", out.display());
            Ok(())
        }
        Command::ExampleConfig => {
            use std::io::Write;
            std::io::stdout().write_all(Config::example_toml().as_bytes())?;
            Ok(())
        }
    }
}

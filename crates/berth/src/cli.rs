//! Command-line arguments. Flags override environment variables, which override the config
//! file, which overrides the defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Berth, a container image registry that makes deleting safe.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry (the /v2 API, /metrics and /healthz).
    Serve(ServeArgs),
}

/// `berth serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML; accepts CNCF Distribution's config.yml keys).
    #[arg(long, short = 'c', env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Storage root [default: ./data, or storage.filesystem.rootdirectory].
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    /// Listen address, HOST:PORT or :PORT [default: :5000, or http.addr].
    #[arg(long, env = "BERTH_ADDR")]
    pub addr: Option<String>,
    /// Log level (error, warn, info, debug, trace) [default: info, or log.level].
    #[arg(long, env = "BERTH_LOG")]
    pub log_level: Option<String>,
}

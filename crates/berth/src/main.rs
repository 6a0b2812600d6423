//! The `berth` binary: flags, config and glue over the library crates.
//!
//! Exit codes: 0 success; 1 failure or refusal (the reason is printed on one line, prefixed
//! `berth: `); 2 bad usage. No command waits for input when stdin is not a terminal.

mod cli;
mod client;
mod commands;
mod config;
mod copy;
mod db;
mod format;
mod http;
mod remote;
mod serve;
mod user;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::Settings::resolve(&args).and_then(|s| {
            init_logging(&s.log_level);
            serve::run(s)
        }),
        command => {
            // Like other Unix tools: `berth ls | head` ends quietly when head stops reading.
            // SAFETY: restoring the default disposition of a signal at start, before any thread.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            init_logging("warn");
            match command {
                cli::Command::Serve(_) => unreachable!("handled above"),
                cli::Command::Ls(a) => commands::ls(a),
                cli::Command::Du(a) => commands::du(a),
                cli::Command::Rm(a) if a.registry.is_some() => remote::rm(a),
                cli::Command::Rm(a) => commands::rm(a),
                cli::Command::Trash(a) => commands::trash(a),
                cli::Command::Restore(a) => commands::restore(a),
                cli::Command::Gc(a) => commands::gc(a),
                cli::Command::Retention(a) => commands::retention(a),
                cli::Command::Fsck(a) => commands::fsck(a),
                cli::Command::User(a) => user::run(a),
                cli::Command::Copy(a) => copy::run(a),
                cli::Command::Db(a) => db::run(a),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, newlines folded.
            eprintln!("berth: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

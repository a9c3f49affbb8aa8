//! hookbox: a webhook delivery appliance in one synchronous binary with one
//! SQLite file.
//!
//! `main` parses the command line, sets up logging, runs the command and
//! prints its error chain once. Logic lives in the modules; ARCHITECTURE.md
//! is the map.

mod admin;
mod api;
mod catalog;
mod clock;
mod config;
mod content_filter;
mod delivery;
mod envelope;
mod headers;
mod ids;
mod logging;
mod monitor;
mod notify;
mod remote;
mod retention;
mod secrets;
mod serve;
mod store;
mod validation;

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(command) => admin::token(command),
        Command::Check(args) => admin::check(&args.db),
        Command::Backup(args) => admin::backup(&args.db.db, &args.dest, args.force),
        Command::Verify(args) => admin::verify(&args),
        Command::Trigger(args) => remote::trigger(&args),
        Command::Listen(args) => remote::listen(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookbox: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `datasafe` binary: parse the command line, hand it to [`datasafe::cli::run::run`],
//! exit with the code of the [`datasafe::cli::exit::Exit`] it returns.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(datasafe::cli::run::run(datasafe::cli::Cli::parse()))
}

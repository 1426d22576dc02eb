//! The `datasafe` binary: parse the command line, hand it to [`datasafe::cli::run::run`],
//! exit with the code it returns.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    datasafe::cli::run::run(datasafe::cli::Cli::parse())
}

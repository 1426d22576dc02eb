//! The `datasafe` binary: parse the command line, hand it to [`datasafe::app::run`],
//! exit with the code it returns.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    datasafe::app::run(datasafe::cli::Cli::parse())
}

//! Wiring: turns parsed arguments into a [`Config`], sets up logging and Ctrl-C, runs the
//! command and maps its result to an exit code. No mirroring logic lives here.

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::logging;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code for usage, configuration and fatal errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the command `cli` names and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Sync(args) => {
            let cfg = match Config::from_sync_args(&args) {
                Ok(cfg) => cfg,
                Err(e) => return usage_error(&e.to_string()),
            };
            if let Err(e) = logging::init(&cfg.output) {
                return usage_error(&e);
            }
            let stop = match install_stop_handler() {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            let summary = crate::sync::run(&cfg, &stop);
            ExitCode::from(summary.exit_code())
        }
        Command::Watch(args) => {
            let (cfg, timing) = match Config::from_watch_args(&args) {
                Ok(settled) => settled,
                Err(e) => return usage_error(&e.to_string()),
            };
            if let Err(e) = logging::init(&cfg.output) {
                return usage_error(&e);
            }
            let stop = match install_stop_handler() {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ExitCode::from(crate::daemon::run(&cfg, &timing, &stop))
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Ctrl-C or SIGTERM once: set the returned flag (work stops cleanly). Twice: exit now.
fn install_stop_handler() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        logging::print_line(
            true,
            "interrupted: finishing files in flight and saving the index (Ctrl-C again to quit now)",
        );
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(stop)
}

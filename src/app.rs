//! Wiring: turns parsed arguments into a [`Config`], sets up logging and Ctrl-C, runs the
//! command and maps its result to an exit code. No mirroring logic lives here.

use crate::cli::{AgentCommand, Cli, Command};
use crate::config::Settings;
use crate::logging;
use clap::CommandFactory;
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
            let settings = match Settings::from_sync_args(&args) {
                Ok(settings) => settings,
                Err(e) => return usage_error(&e.to_string()),
            };
            let stop = match prepare(&settings) {
                Ok(stop) => stop,
                Err(code) => return code,
            };
            let check = match args.repair {
                true => crate::repair::Check::Content,
                false => crate::repair::Check::Names,
            };
            ExitCode::from(crate::sync::run_checking(&settings, &stop, &check))
        }
        Command::Watch(args) => {
            let settings = match Settings::from_watch_args(&args) {
                Ok(settings) => settings,
                Err(e) => return usage_error(&e.to_string()),
            };
            let stop = match prepare(&settings) {
                Ok(stop) => stop,
                Err(code) => return code,
            };
            let reload = || Settings::from_watch_args(&args);
            ExitCode::from(crate::daemon::run(settings, &reload, &stop))
        }
        Command::Verify(args) => {
            let plan = match crate::verify::Plan::from_args(&args) {
                Ok(plan) => plan,
                Err(e) => return usage_error(&e.to_string()),
            };
            if let Err(e) = logging::init(&plan.output) {
                return usage_error(&e);
            }
            let stop = match install_stop_handler(STOP_VERIFY) {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ExitCode::from(crate::verify::run(&plan, &stop))
        }
        Command::Status(args) => ExitCode::from(crate::status::show(args.json)),
        Command::Restore(args) => {
            let stop = match plain_output().and_then(|()| install_stop_handler(STOP_RESTORE)) {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ExitCode::from(crate::restore::run(&args, &stop))
        }
        Command::Versions(args) => {
            if let Err(e) = plain_output() {
                return usage_error(&e);
            }
            ExitCode::from(crate::history::list_command(
                &args.dst,
                args.path.as_deref(),
                args.json,
            ))
        }
        Command::Archive(args) => {
            let stop = match plain_output().and_then(|()| install_stop_handler(STOP_ARCHIVE)) {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ExitCode::from(crate::archive::run(&args, &stop))
        }
        Command::Agent(action) => agent(action),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "datasafe", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => usage_error(&format!("writing the man page: {e}")),
            }
        }
    }
}

/// `datasafe agent install | uninstall | print`.
fn agent(action: AgentCommand) -> ExitCode {
    use crate::agent::{AgentSpec, Platform, install, uninstall};
    let result = match action {
        AgentCommand::Install { config } => {
            AgentSpec::for_this_binary(config.as_deref()).and_then(|spec| install(&spec))
        }
        AgentCommand::Uninstall => uninstall(),
        AgentCommand::Print { config, platform } => {
            let platform = platform
                .or_else(Platform::current)
                .unwrap_or(Platform::Systemd);
            AgentSpec::for_this_binary(config.as_deref()).map(|spec| {
                print!("{}", spec.render(platform));
                String::new()
            })
        }
    };
    match result {
        Ok(message) => {
            if !message.is_empty() {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Logging and the Ctrl-C handler, for the commands that mirror.
fn prepare(settings: &Settings) -> Result<Arc<AtomicBool>, ExitCode> {
    logging::init(&settings.output).map_err(|e| usage_error(&e))?;
    install_stop_handler(STOP_MIRROR).map_err(|e| usage_error(&e))
}

/// Logging for the commands that read a mirror: operation lines on stdout, warnings
/// and errors on stderr, no log files.
fn plain_output() -> Result<(), String> {
    logging::init(&crate::config::Output {
        dry_run: false,
        json: false,
        log_file: None,
        error_log: None,
        verbosity: crate::config::Verbosity::Normal,
    })
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// What the first Ctrl-C says while a mirror is being written.
const STOP_MIRROR: &str =
    "interrupted: finishing files in flight and saving the index (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `verify`, which has nothing to save.
const STOP_VERIFY: &str = "interrupted: stopping the check (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `restore`: the file in flight is rolled back.
const STOP_RESTORE: &str =
    "interrupted: removing the file in flight and stopping (Ctrl-C again to quit now)";

/// What the first Ctrl-C says during `archive`: the unfinished archive is removed.
const STOP_ARCHIVE: &str =
    "interrupted: removing the unfinished archive (Ctrl-C again to quit now)";

/// Ctrl-C or SIGTERM once: set the returned flag (work stops cleanly) and print
/// `message`. Twice: exit now.
fn install_stop_handler(message: &'static str) -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        logging::print_line(true, message);
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(stop)
}

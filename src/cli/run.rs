//! Wiring: turns parsed arguments into a [`Config`], sets up logging and Ctrl-C, runs the
//! command and maps its result to an exit code. No mirroring logic lives here.
//!
//! A run stopped by Ctrl-C, SIGTERM or SIGHUP cleans up (files in flight, the index, the
//! summary) and then dies by that same signal, as `cp` or `rsync` would: a shell loop or
//! a script around datasafe sees a process killed by SIGINT (a shell shows 130) and
//! stops too, which it would not do for an ordinary exit code.

use crate::cli::{AgentCommand, Cli, Command};
use crate::config::Settings;
use crate::output::logging;
use clap::CommandFactory;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Exit code for usage, configuration and fatal errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C or SIGTERM, where a process cannot die by the signal (the
/// commands' own counts; the process itself ends by the signal, see [`ended`]).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The first stop signal this process received (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

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
                true => crate::engine::repair::Check::Content,
                false => crate::engine::repair::Check::Names,
            };
            ended(crate::engine::sync::run_checking(&settings, &stop, &check))
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
            ended(crate::daemon::run(settings, &reload, &stop))
        }
        Command::Verify(args) => {
            let plan = match crate::read::verify::Plan::from_args(&args) {
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
            ended(crate::read::verify::run(&plan, &stop))
        }
        Command::Status(args) => ExitCode::from(crate::daemon::status::show(args.json)),
        Command::Release(args) => ExitCode::from(crate::daemon::status::release(
            args.dst.as_deref(),
            args.config.as_deref(),
        )),
        Command::Restore(args) => {
            let stop = match plain_output().and_then(|()| install_stop_handler(STOP_RESTORE)) {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ended(crate::read::restore::run(&args, &stop))
        }
        Command::Versions(args) => {
            if let Err(e) = plain_output() {
                return usage_error(&e);
            }
            ExitCode::from(crate::read::history::list_command(
                &args.dst,
                args.path.as_deref(),
                args.json,
                args.summary,
            ))
        }
        Command::Archive(args) => {
            let stop = match plain_output().and_then(|()| install_stop_handler(STOP_ARCHIVE)) {
                Ok(stop) => stop,
                Err(e) => return usage_error(&e),
            };
            ended(crate::read::archive::run(&args, &stop))
        }
        Command::Agent(action) => agent(action),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "datasafe", &mut text);
            print_text(&text, "the completion script")
        }
        Command::Man => {
            let mut text = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut text) {
                Ok(()) => print_text(&text, "the man page"),
                Err(e) => usage_error(&format!("writing the man page: {e}")),
            }
        }
    }
}

/// Writes generated text to stdout. A reader that stops early (`datasafe man | head`)
/// is no error: the rest is simply not wanted, so the exit is quiet and 0.
fn print_text(text: &[u8], what: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => usage_error(&format!("writing {what}: {e}")),
    }
}

/// The exit of a command that installed the stop handler: after a stop signal, the
/// process dies by that signal (its clean-up and summary are done by now); otherwise
/// it exits with `code`.
fn ended(code: u8) -> ExitCode {
    let signal = STOP_SIGNAL.load(Ordering::SeqCst);
    if signal != 0 {
        die_now(signal);
    }
    ExitCode::from(code)
}

/// Flushes what was printed and logged, then dies by `signal`.
fn die_now(signal: i32) -> ! {
    log::logger().flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    crate::platform::die_by_signal(signal)
}

/// `datasafe agent install | uninstall | print`.
fn agent(action: AgentCommand) -> ExitCode {
    use crate::daemon::agent::{AgentSpec, Platform, install, uninstall};
    // Arguments `watch` would refuse are a usage error (exit 2), as for `watch` itself;
    // a service manager that fails is a plain failure (exit 1).
    let spec = |watch| AgentSpec::for_this_binary(watch).map_err(|e| usage_error(&e));
    let result = match action {
        AgentCommand::Install { watch } => match spec(&watch) {
            Ok(spec) => install(&spec),
            Err(code) => return code,
        },
        AgentCommand::Uninstall => uninstall(),
        AgentCommand::Print { watch, platform } => {
            let platform = platform
                .or_else(Platform::current)
                .unwrap_or(Platform::Systemd);
            match spec(&watch) {
                Ok(spec) => {
                    print!("{}", spec.render(platform));
                    Ok(String::new())
                }
                Err(code) => return code,
            }
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

/// Ctrl-C, SIGTERM or SIGHUP once: set the returned flag (work stops cleanly), note the
/// signal (the process dies by it once done, see [`ended`]) and print `message`.
/// Twice: die by the second signal now.
fn install_stop_handler(message: &'static str) -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    crate::platform::on_stop_signals(move |signal| {
        // The signal is noted before the flag is set: whoever sees the flag finds it.
        if STOP_SIGNAL
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            die_now(signal);
        }
        flag.store(true, Ordering::SeqCst);
        logging::print_line(true, message);
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(stop)
}

//! Wiring: hands each subcommand to its runner (`cli::sync`, `cli::watch`, `cli::read`
//! for verify, restore, versions and archive, `cli::status` for status and release,
//! `cli::agent`; completions and the man page are here), and what every runner shares:
//! logging set-up, the Ctrl-C handler, the usage error line and [`ended`]. A runner
//! settles its arguments, runs the command, prints the error that ends it (one line) and
//! maps what it returns to an [`Exit`]. No mirroring logic lives here.
//!
//! A run stopped by Ctrl-C, SIGTERM or SIGHUP cleans up (files in flight, the index, the
//! summary) and then dies by that same signal, as `cp` or `rsync` would: a shell loop or
//! a script around datasafe sees a process killed by SIGINT (a shell shows 130) and
//! stops too, which it would not do for an ordinary exit code.

use crate::cli::exit::Exit;
use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::output::logging::{self, LogError};
use clap::CommandFactory;
use std::fmt::Display;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The per-pair loop of `sync` and `verify`: the pairs in order, each disabled one said
/// (`skipping pair NAME: enabled = false`) and passed over, none after Ctrl-C. `about`
/// gives a pair's name and whether it is enabled.
pub(crate) fn enabled_pairs<'a, T>(
    pairs: &'a [T],
    stop: &'a AtomicBool,
    about: fn(&T) -> (&str, bool),
) -> impl Iterator<Item = &'a T> + 'a {
    // Lazy: a pair is checked for `enabled` before Ctrl-C is looked at, as the loops did.
    pairs
        .iter()
        .filter(move |pair| {
            let (name, enabled) = about(pair);
            if !enabled {
                log::info!("skipping pair {name}: enabled = false");
            }
            enabled
        })
        .take_while(|_| !stop.load(Ordering::Relaxed))
}
/// The first stop signal this process received (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Runs the command `cli` names and says how the process ends.
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Sync(args) => crate::cli::sync::run(&args),
        Command::Watch(args) => crate::cli::watch::run(&args),
        Command::Verify(args) => crate::cli::read::verify(&args),
        Command::Status(args) => crate::cli::status::status(args.json),
        Command::Release(args) => {
            crate::cli::status::release(args.dst.as_deref(), args.config.as_deref())
        }
        Command::Restore(args) => crate::cli::read::restore(&args),
        Command::Versions(args) => crate::cli::read::versions(&args),
        Command::Archive(args) => crate::cli::read::archive(&args),
        Command::Agent(action) => crate::cli::agent::run(action),
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
fn print_text(text: &[u8], what: &str) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => Exit::Success,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => usage_error(&format!("writing {what}: {e}")),
    }
}

/// The exit of a command that installed the stop handler: after a stop signal, the
/// process dies by that signal (its clean-up and summary are done by now); otherwise
/// it ends as `exit` says.
pub(super) fn ended(exit: Exit) -> Exit {
    let signal = STOP_SIGNAL.load(Ordering::SeqCst);
    if signal != 0 {
        die_now(signal);
    }
    exit
}

/// Flushes what was printed and logged, then dies by `signal`.
fn die_now(signal: i32) -> ! {
    log::logger().flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    crate::platform::die_by_signal(signal)
}

/// Logging and the Ctrl-C handler, for the commands that mirror; on error, says it and
/// gives the usage exit.
pub(super) fn prepare(settings: &Settings) -> Result<Arc<AtomicBool>, Exit> {
    logging::init(&settings.output).map_err(|e| usage_error(&e))?;
    install_stop_handler(STOP_MIRROR).map_err(|e| usage_error(&e))
}

/// The start of `sync` and `watch`: settings settled from the arguments (a bad one is a
/// usage error), then [`prepare`]d.
pub(super) fn start(
    settled: Result<Settings, crate::config::ConfigError>,
) -> Result<(Settings, Arc<AtomicBool>), Exit> {
    let settings = settled.map_err(|e| usage_error(&e))?;
    let stop = prepare(&settings)?;
    Ok((settings, stop))
}

/// Logging for the commands that read a mirror: operation lines on stdout, warnings
/// and errors on stderr, no log files.
pub(super) fn plain_output() -> Result<(), StartError> {
    logging::init(&crate::config::Output {
        dry_run: false,
        json: false,
        log_file: None,
        error_log: None,
        verbosity: crate::config::Verbosity::Normal,
    })
    .map_err(StartError::from)
}

/// Prints `error` as the one line a usage, configuration or fatal error gets, and gives
/// the usage exit.
pub(super) fn usage_error(error: &dyn Display) -> Exit {
    eprintln!("error: {error}");
    Exit::Usage
}

/// What can keep a command from starting once its arguments are settled.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    /// Logging (a log file that cannot be opened).
    #[error(transparent)]
    Logging(#[from] LogError),
    /// The Ctrl-C handler.
    #[error("cannot install the Ctrl-C handler: {0}")]
    StopHandler(#[source] std::io::Error),
}

/// What the first Ctrl-C says while a mirror is being written (`sync`, `watch`).
const STOP_MIRROR: &str =
    "interrupted: finishing files in flight and saving the index (Ctrl-C again to quit now)";

/// Ctrl-C, SIGTERM or SIGHUP once: set the returned flag (work stops cleanly), note the
/// signal (the process dies by it once done, see [`ended`]) and print `message`.
/// Twice: die by the second signal now.
pub(super) fn install_stop_handler(message: &'static str) -> Result<Arc<AtomicBool>, StartError> {
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
    .map_err(StartError::StopHandler)?;
    crate::store::sftp::conn::give_up_on(stop.clone());
    Ok(stop)
}

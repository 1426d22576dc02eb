//! log + fern setup: operation lines to stdout, warnings and errors to stderr, every
//! line timestamped in `--log-file`, errors alone in `--error-log`. While a progress bar
//! is on screen, terminal lines are printed through it so the two never tear each other.
//!
//! Two log targets are for files only: [`DETAIL`] (the seed's "Backed up file: … |
//! Checksum: … | Permissions: …" lines) and [`SUMMARY`] (the summary, which the terminal
//! gets on stdout directly).

use crate::config::{Output, Verbosity};
use crate::output::names::{esc, io_message};
use indicatif::ProgressBar;
use log::{Level, LevelFilter};
use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Log target for per-file details that only log files get.
pub const DETAIL: &str = "datasafe::detail";
/// Log target for the summary lines written to log files.
pub const SUMMARY: &str = "datasafe::summary";

/// The progress bar terminal lines must be printed around, if one is showing.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

thread_local! {
    /// The pair this thread works for, when several run: every line names it.
    static PAIR: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Names the pair this thread's log lines are about (`None`: a single pair, no name).
pub fn set_pair(name: Option<Arc<str>>) {
    PAIR.with(|p| *p.borrow_mut() = name);
}

/// The pair this thread's log lines are about.
pub fn current_pair() -> Option<Arc<str>> {
    PAIR.with(|p| p.borrow().clone())
}

/// `[name] ` for a named pair, nothing otherwise.
fn pair_prefix() -> String {
    current_pair().map_or_else(String::new, |n| format!("[{n}] "))
}

/// Why logging could not be set up; the message names the file and what to check.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `--log-file`, `--error-log` or the config file's log paths.
    #[error(
        "cannot open log file {}: {}; check the path and its permissions",
        esc(.path),
        io_message(.source)
    )]
    Open {
        /// The log file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A logger was installed already (only once per process).
    #[error("cannot set up logging: {0}")]
    Install(#[source] log::SetLoggerError),
}

/// Installs the global logger. Fails (naming the file) if a log file cannot be opened.
pub fn init(out: &Output) -> Result<(), LogError> {
    let term_level = match out.verbosity {
        Verbosity::Quiet => LevelFilter::Warn,
        Verbosity::Normal => LevelFilter::Info,
        Verbosity::Verbose => LevelFilter::Debug,
        Verbosity::Trace => LevelFilter::Trace,
    };
    let file_level = term_level.max(LevelFilter::Info);
    let ours = |target: &str| target.starts_with("datasafe");
    let terminal = fern::Dispatch::new()
        .level(term_level)
        .filter(move |m| ours(m.target()) && m.target() != DETAIL && m.target() != SUMMARY)
        .chain(fern::Output::call(|record| {
            let prefix = pair_prefix();
            let line = match record.level() {
                Level::Error => format!("error: {prefix}{}", record.args()),
                Level::Warn => format!("warning: {prefix}{}", record.args()),
                _ => format!("{prefix}{}", record.args()),
            };
            print_line(record.level() <= Level::Warn, &line);
        }));
    reopen_files(out)?;
    // The log files are reached through `FILES`, so a reload of the config file can
    // point them elsewhere (the global logger itself is installed only once).
    let root = fern::Dispatch::new()
        .level(file_level)
        .chain(terminal)
        .chain(
            timestamped()
                .level(file_level)
                .filter(move |m| ours(m.target()) && FILE_OPEN[0].load(Ordering::Relaxed))
                .chain(fern::Output::call(|record| write_file(0, record))),
        )
        .chain(
            timestamped()
                .level(LevelFilter::Error)
                .filter(|_| FILE_OPEN[1].load(Ordering::Relaxed))
                .chain(fern::Output::call(|record| write_file(1, record))),
        );
    root.apply().map_err(LogError::Install)
}

/// The open log file (`--log-file`) and error log (`--error-log`), if any.
static FILES: Mutex<[Option<std::fs::File>; 2]> = Mutex::new([None, None]);
/// Whether each of `FILES` is open: without log files, no line is formatted for them.
static FILE_OPEN: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Opens the log files `out` names (closing those open before); on error nothing
/// changes. `watch` calls it again when a reload changes `log_file` or `error_log_file`.
pub fn reopen_files(out: &Output) -> Result<(), LogError> {
    let log = out.log_file.as_deref().map(open).transpose()?;
    let errors = out.error_log.as_deref().map(open).transpose()?;
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    FILE_OPEN[0].store(log.is_some(), Ordering::Relaxed);
    FILE_OPEN[1].store(errors.is_some(), Ordering::Relaxed);
    *files = [log, errors];
    Ok(())
}

/// Appends one formatted line to log file `slot` (0: all lines, 1: errors), if open.
fn write_file(slot: usize, record: &log::Record<'_>) {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(file) = files[slot].as_mut() {
        let _ = writeln!(file, "{}", record.args());
    }
}

fn timestamped() -> fern::Dispatch {
    fern::Dispatch::new().format(|out, message, record| {
        out.finish(format_args!(
            "{} {:<5} {}{}",
            // The milliseconds order lines written within one second.
            chrono::Local::now().format(&format!("{}%.3f", crate::output::TIME_FORMAT)),
            record.level(),
            pair_prefix(),
            message
        ))
    })
}

fn open(path: &Path) -> Result<std::fs::File, LogError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(parent);
    }
    fern::log_file(path).map_err(|source| LogError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints one terminal line (stderr for warnings and errors, stdout otherwise) without
/// tearing a progress bar.
pub fn print_line(to_stderr: bool, line: &str) {
    let write = || {
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    };
    let guard = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Routes terminal lines around `bar` until [`clear_progress`].
pub fn set_progress(bar: ProgressBar) {
    *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
}

/// Removes the progress bar from the screen.
pub fn clear_progress() {
    if let Some(bar) = PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bar.finish_and_clear();
    }
}

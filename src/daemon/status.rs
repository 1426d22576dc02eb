//! What a running watcher tells `datasafe status`: a JSON file per watcher in the state
//! folder (`$XDG_STATE_HOME/datasafe/status-PID.json`), rewritten atomically (temp file
//! then rename) about once a second by a small publisher thread from a shared board that
//! the event loop updates. `status` reads every such file whose pid is alive (removing
//! those a killed watcher left), so two watchers never hide each other. `release` finds
//! the watcher of a mirror through the same files and signals it.
//!
//! Also what a pair puts on the board (`Watched::publish`) and the periodic status line
//! the watcher logs ([`StatusLine`]).

use super::Daemon;
use super::pair::{State, Watched};
use super::pause::Pause;
use crate::engine::mirror::Mirror;
use crate::engine::plan::Held;
use crate::output::logging;
use crate::output::names::{count_of, esc, human_bytes, shell_word};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Status files are `status-PID.json` in the state folder.
const STATUS_PREFIX: &str = "status-";
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Everything `status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The watcher's process id.
    pub pid: u32,
    /// When it started (local time).
    pub started: String,
    /// When this report was written.
    pub updated: String,
    /// Its config file, if any.
    pub config: Option<String>,
    /// One entry per pair.
    pub pairs: Vec<PairStatus>,
}

/// One pair as `status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PairStatus {
    /// The pair's name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// Its destination.
    pub dest: String,
    /// `watching`, `reconciling`, `paused: …` or `error: …`.
    pub state: String,
    /// The last path mirrored.
    pub last_change: Option<String>,
    /// When it was mirrored.
    pub last_change_at: Option<String>,
    /// Hints waiting to be applied.
    pub queue: usize,
    /// Files written since start.
    pub files_mirrored: u64,
    /// Bytes written since start.
    pub bytes_mirrored: u64,
    /// Files deleted since start.
    pub deleted: u64,
    /// Failures since start.
    pub failed: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// Deletions the deletion guard holds back now (not a sum over passes);
    /// `datasafe release` lets them through.
    #[serde(default)]
    pub held_deletions: u64,
}

/// This process's status file.
pub fn path() -> Option<PathBuf> {
    crate::config::state_dir()
        .map(|d| d.join(format!("{STATUS_PREFIX}{}.json", std::process::id())))
}

/// The report header, each pair's status by id, and whether anything changed since the
/// last write.
type BoardState = (Report, BTreeMap<usize, PairStatus>, bool);

/// The shared board the event loop writes and the publisher thread reads.
#[derive(Clone)]
pub struct Board {
    inner: Arc<Mutex<BoardState>>,
    stop: Arc<AtomicBool>,
}

impl Board {
    /// Starts publishing to the status file (if there is a state folder).
    pub fn start(config: Option<&Path>) -> Board {
        let report = Report {
            pid: std::process::id(),
            started: now(),
            config: config.map(|p| p.display().to_string()),
            ..Report::default()
        };
        let board = Board {
            inner: Arc::new(Mutex::new((report, BTreeMap::new(), true))),
            stop: Arc::new(AtomicBool::new(false)),
        };
        if let Some(path) = path() {
            let publisher = board.clone();
            let _ = std::thread::Builder::new()
                .name("status".into())
                .spawn(move || publisher.publish_loop(&path));
        }
        board
    }

    /// Replaces the status of pair `id`.
    pub fn set(&self, id: usize, status: PairStatus) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.1.get(&id) != Some(&status) {
            inner.1.insert(id, status);
            inner.2 = true;
        }
    }

    /// Changes only the state line of pair `id`.
    pub fn set_state(&self, id: usize, state: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = inner.1.get_mut(&id)
            && p.state != state
        {
            p.state = state.to_string();
            inner.2 = true;
        }
    }

    /// Forgets pair `id` (it was stopped).
    pub fn remove(&self, id: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.remove(&id);
        inner.2 = true;
    }

    /// Stops publishing and removes the status file: no watcher runs any more.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(path) = path() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn publish_loop(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        while !self.stop.load(Ordering::Relaxed) {
            let report = {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let changed = std::mem::take(&mut inner.2);
                changed.then(|| {
                    let mut report = inner.0.clone();
                    report.pairs = inner.1.values().cloned().collect();
                    report.updated = now();
                    report
                })
            };
            if let Some(report) = report
                && let Err(e) = write_atomically(path, &report)
            {
                log::debug!("writing {}: {e}", esc(path));
            }
            std::thread::sleep(PUBLISH_EVERY);
        }
    }
}

fn now() -> String {
    crate::output::now()
}

fn write_atomically(path: &Path, report: &Report) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut file, report).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The report as people read it.
fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "datasafe watcher running (pid {}, since {}, updated {})",
        report.pid, report.started, report.updated
    );
    if let Some(config) = &report.config {
        let _ = writeln!(out, "config: {config}");
    }
    for p in &report.pairs {
        let _ = writeln!(out, "\n{}: {} -> {}", p.name, p.source, p.dest);
        let _ = writeln!(out, "  state:        {}", p.state);
        match (&p.last_change, &p.last_change_at) {
            (Some(what), Some(at)) => {
                let _ = writeln!(out, "  last change:  {what} at {at}");
            }
            _ => {
                let _ = writeln!(out, "  last change:  none yet");
            }
        }
        let _ = writeln!(out, "  queue:        {}", p.queue);
        let _ = writeln!(
            out,
            "  mirrored:     {}, {} since start ({} deleted, {} failed)",
            crate::output::names::count_of(p.files_mirrored, "file"),
            crate::output::names::human_bytes(p.bytes_mirrored),
            p.deleted,
            p.failed
        );
        if p.held_deletions > 0 {
            let _ = writeln!(
                out,
                "  held back:    {} (run `datasafe release` to let them through)",
                crate::output::names::count_of(p.held_deletions, "deletion")
            );
        }
        if let Some(error) = &p.last_error {
            let _ = writeln!(out, "  last error:   {error}");
        }
    }
    out
}

/// Every running watcher's report, oldest first; files a killed watcher left are removed.
fn running() -> Vec<Report> {
    let Some(dir) = crate::config::state_dir() else {
        return Vec::new();
    };
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(STATUS_PREFIX) && name.ends_with(".json")) {
            continue;
        }
        let report: Option<Report> = std::fs::read(entry.path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match report {
            Some(r) if crate::platform::process_alive(r.pid) => reports.push(r),
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    reports.sort_by(|a, b| (&a.started, a.pid).cmp(&(&b.started, b.pid)));
    reports
}

/// Why `status` has no report to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No place to look for status files.
    #[error("no state folder ($XDG_STATE_HOME or $HOME is not set)")]
    NoStateFolder,
    /// No watcher runs (the answer, not a failure of `status`).
    #[error("no datasafe watcher is running (start one with `datasafe watch`)")]
    NotRunning,
    /// A report could not be written as JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// `datasafe status [--json]`: prints each running watcher's report (`--json`: one JSON
/// object per line; `{"running":false}` when none runs, before the error says so).
pub fn show(json: bool) -> Result<(), StatusError> {
    if crate::config::state_dir().is_none() {
        return Err(StatusError::NoStateFolder);
    }
    let reports = running();
    if reports.is_empty() {
        if json {
            let _ = std::io::stdout().write_all(b"{\"running\":false}\n");
        }
        return Err(StatusError::NotRunning);
    }
    let mut text = String::new();
    for (i, report) in reports.iter().enumerate() {
        if json {
            text.push_str(&serde_json::to_string(report)?);
            text.push('\n');
        } else {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(&render(report));
        }
    }
    // A closed pipe (`datasafe status | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// `datasafe release [DST] | --config FILE`: finds the running watcher(s) of DST (or of
/// the config file; every watcher without either) through their status files and sends
/// each the release signal; the watcher then runs one full pass without the deletion
/// guard for each pair that holds deletions back. Fails if no watcher runs for it (then
/// `sync --force` is the way, and the error says so); a watcher that cannot be signalled
/// is said at once and the others are still asked.
pub fn release(dst: Option<&Path>, config: Option<&Path>) -> Result<(), NoWatcher> {
    let same = |given: &Path, shown: &str| {
        // A remote DST is named by its URL, however it was written.
        if let Ok(crate::config::Dest::Sftp(remote)) = crate::config::Dest::parse(given.as_os_str())
        {
            return remote.url() == shown;
        }
        let given =
            crate::config::canonical_even_if_missing(given).unwrap_or_else(|_| given.to_path_buf());
        let shown = Path::new(shown);
        given == shown || std::fs::canonicalize(shown).is_ok_and(|s| s == given)
    };
    // A watcher publishes its status about once a second: one that just started (or
    // just held deletions back) may not have written it yet, so look again briefly
    // before saying none runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let asked = signal_watchers(dst, config, &same);
        if asked > 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(no_watcher(dst, config))
}

/// Sends the release signal to every running watcher of `dst` (or of the pairs of
/// `config`, or every one); returns how many were asked.
fn signal_watchers(
    dst: Option<&Path>,
    config: Option<&Path>,
    same: &dyn Fn(&Path, &str) -> bool,
) -> u32 {
    let mut asked = 0;
    for report in running() {
        let pairs: Vec<&PairStatus> = match (dst, config) {
            (Some(dst), _) => report.pairs.iter().filter(|p| same(dst, &p.dest)).collect(),
            (None, Some(file)) => match &report.config {
                Some(c) if same(file, c) => report.pairs.iter().collect(),
                _ => Vec::new(),
            },
            (None, None) => report.pairs.iter().collect(),
        };
        if pairs.is_empty() {
            continue;
        }
        if let Err(e) = crate::platform::send_release(report.pid) {
            eprintln!(
                "error: cannot signal the watcher (pid {}): {}",
                report.pid,
                crate::output::names::io_message(&e)
            );
            continue;
        }
        asked += 1;
        for p in pairs {
            let held = if p.held_deletions > 0 {
                crate::output::names::count_of(p.held_deletions, "held deletion")
            } else {
                "no held deletions now".to_string()
            };
            println!(
                "asked the watcher (pid {}) to release the deletions held back in {} ({held}); \
                 it logs what it deletes",
                report.pid, p.dest
            );
        }
    }
    asked
}

/// No running watcher mirrors what `release` was given: `what` it was, and the `sync`
/// command that lets held deletions through instead.
#[derive(Debug, thiserror::Error)]
#[error("no running datasafe watcher mirrors {what}; to let held deletions through, run `{sync}`")]
pub struct NoWatcher {
    /// What was given (DST, the config file's pairs, any mirror).
    what: String,
    /// The command to run instead.
    sync: String,
}

/// What `release` says when no watcher runs for what it was given.
fn no_watcher(dst: Option<&Path>, config: Option<&Path>) -> NoWatcher {
    let (what, sync) = match (dst, config) {
        (Some(dst), _) => (
            esc(dst).to_string(),
            format!("datasafe sync SRC {} --force", shell_word(dst)),
        ),
        (None, Some(file)) => (
            format!("the pairs of {}", esc(file)),
            format!("datasafe sync --config {} --force", shell_word(file)),
        ),
        (None, None) => (
            "any mirror".to_string(),
            "datasafe sync SRC DST --force".to_string(),
        ),
    };
    NoWatcher { what, sync }
}

impl Watched {
    /// Puts this pair's state and counts on the board for `datasafe status`.
    pub(super) fn publish(&self, board: &Board, queue: usize) {
        let holding = self.mirror.as_ref().and_then(Mirror::holding);
        let held = holding.map_or(0, |(_, n)| n);
        let dry_run = self.mirror.as_ref().is_some_and(Mirror::dry_run);
        let reconnecting = self.mirror.as_ref().is_some_and(Mirror::dest_lost)
            && self.settings.config.pair.dst.is_remote();
        let state = match &self.state {
            State::Watching if reconnecting => format!(
                "reconnecting to {} (changes are collected and mirrored once it is back)",
                self.settings.config.pair.dst.host().unwrap_or_default()
            ),
            State::Watching if dry_run => {
                "watching (dry run: changes are printed, nothing is written)".to_string()
            }
            State::Watching => match holding {
                None => "watching".to_string(),
                Some((why, n)) => format!(
                    "watching; {} held back ({}); run `datasafe release` to let them through",
                    count_of(n, "deletion"),
                    held_reason(why)
                ),
            },
            State::Paused(Pause::Gone) => "paused: the source is missing".to_string(),
            State::Paused(Pause::Empty) => format!(
                "paused: the source is empty; {} held back, nothing deleted (run `datasafe \
                 release` to mirror that)",
                count_of(held, "deletion")
            ),
            State::Paused(Pause::Moved) => "paused: the source was unmounted or replaced by \
                 another folder; nothing deleted (mirroring resumes when the same filesystem \
                 is back; restart datasafe watch to mirror a new one)"
                .to_string(),
            State::Failed(why) => format!("error: {why}"),
        };
        let summary = self.mirror.as_ref().map(Mirror::summary);
        // A dry run mirrors nothing: it must not say it did.
        let summary = summary.filter(|_| !dry_run);
        let (last_change, last_change_at) = summary
            .and_then(|s| s.last_change.clone())
            .map(|(what, at)| {
                (
                    Some(what),
                    Some(at.format(crate::output::TIME_FORMAT).to_string()),
                )
            })
            .unwrap_or_default();
        let pair = &self.settings.config.pair;
        board.set(
            self.id,
            PairStatus {
                name: self.settings.name.clone(),
                source: pair.src.display().to_string(),
                dest: pair.dst.display().display().to_string(),
                state,
                last_change,
                last_change_at,
                queue,
                files_mirrored: summary.map_or(0, |s| s.copied),
                bytes_mirrored: summary.map_or(0, |s| s.bytes_copied),
                deleted: summary.map_or(0, |s| s.deleted),
                failed: summary.map_or(0, |s| s.failed),
                last_error: summary.and_then(|s| s.last_error.clone()),
                held_deletions: held,
            },
        );
    }
}

/// Why the guard holds deletions, for `status`.
fn held_reason(why: Held) -> &'static str {
    match why {
        Held::EmptySource => "the source is empty",
        Held::MassDelete => "more than the deletion guard allows in one pass",
    }
}

/// How often the status line may be printed (only when something happened).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The periodic one-line status per pair, printed only when something happened.
#[derive(Default)]
pub(super) struct StatusLine {
    last: Option<Instant>,
    shown: Vec<(usize, u64, u64, u64, u64)>,
}

impl StatusLine {
    pub(super) fn maybe_print(&mut self, daemon: &Daemon, queued: usize) {
        if self.last.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let mut shown = Vec::new();
        for pair in &daemon.pairs {
            let Some(s) = pair.mirror.as_ref().map(Mirror::summary) else {
                continue;
            };
            let key = (pair.id, s.copied, s.deleted, s.renamed, s.failed);
            shown.push(key);
            let nothing_yet = key.1 + key.2 + key.3 + key.4 == 0;
            if nothing_yet || self.shown.contains(&key) {
                continue;
            }
            logging::set_pair(pair.label.clone());
            if pair.mirror.as_ref().is_some_and(Mirror::dry_run) {
                log::info!(
                    "status (dry run, nothing written): {} would be copied ({}), {} \
                     would be deleted, {} renamed since start; {} queued",
                    count_of(s.copied, "file"),
                    human_bytes(s.bytes_copied),
                    s.deleted,
                    s.renamed,
                    queued + pair.pending.len()
                );
                logging::set_pair(None);
                continue;
            }
            log::info!(
                "status: {} mirrored ({}), {} deleted, {} renamed, {} failed since start; {} queued",
                count_of(s.copied, "file"),
                human_bytes(s.bytes_copied),
                s.deleted,
                s.renamed,
                s.failed,
                queued + pair.pending.len()
            );
            logging::set_pair(None);
        }
        self.shown = shown;
    }
}

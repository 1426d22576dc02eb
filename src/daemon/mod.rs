//! The long-running side of `datasafe watch`: one event loop and one debouncer for every
//! pair. It installs each watch, runs the start-up reconcile, feeds debounced hints to the
//! pair's mirror, and covers what events cannot: lost events (a reconcile on overflow,
//! rate-limited), the watch limit (a shorter fallback timer), a vanished source (pause,
//! never delete, resume with a reconcile), files that never go quiet (max-wait), a pair
//! that cannot start (retried), and edits to the config file (reloaded: added pairs start,
//! removed ones stop, changed ones restart; an invalid edit keeps what runs).
//!
//! It decides *when* to act; what to do is the engine's (`engine::mirror::Mirror`).

pub mod agent;
mod pair;
mod pause;
pub mod status;

use crate::config::{ConfigError, PairSettings, Settings, Timing};
use crate::daemon::pair::{State, Watched, human_duration};
use crate::daemon::status::{Board, StatusLine};
use crate::output::logging;
use crate::output::names::{count_of, esc};
use crate::output::report::Summary;
use crate::watch::{Signal, StartError, Watch};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often the loop wakes when nothing happens (stop flag, timers, commits).
const LOOP_TICK: Duration = Duration::from_millis(250);
/// How often a paused pair looks for its source, and a watched one checks it is there;
/// also how often the config file is checked for edits.
const ROOT_CHECK: Duration = Duration::from_secs(1);
/// At most this many signals are taken in one go, so timers still run during a flood.
const BATCH: usize = 10_000;

/// Re-reads the settings after the config file changed.
pub type Reload<'a> = &'a dyn Fn() -> Result<Settings, ConfigError>;

/// Watches every enabled pair of `settings` until `stop` is set, then prints the
/// summary of all. Fails only if the watcher cannot start (nothing was done then); a
/// pair that cannot start is retried, never an error of the run.
pub fn run(
    settings: Settings,
    reload: Reload<'_>,
    stop: &Arc<AtomicBool>,
) -> Result<(), StartError> {
    crate::platform::limit_malloc_arenas();
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    crate::platform::catch_release_signal();
    let mut watch = Watch::new(settings.timing.debounce, tx.clone())?;
    let board = Board::start(settings.file.as_deref());
    let mut daemon = Daemon {
        pairs: Vec::new(),
        next_id: 0,
        named: settings.file.is_some(),
        timing: settings.timing,
        stop: stop.clone(),
        board: board.clone(),
        finished: Vec::new(),
        signals: tx,
        output_files: (
            settings.output.log_file.clone(),
            settings.output.error_log.clone(),
        ),
        too_deep_said: Default::default(),
    };
    // Stamped before the start-up reconcile, so an edit made while it runs is seen.
    let mut config = settings.file.clone().map(|path| {
        let stamp = stamp(&path);
        (path, stamp)
    });
    daemon.start_all(&settings, &mut watch);
    let mut last_config_check = Instant::now();
    let mut status = StatusLine::default();
    let mut last_trim = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let Ok(signals) = next_signals(&rx) else {
            break;
        };
        // Under steady churn there is no idle reconcile to give freed memory back.
        if !signals.is_empty() && last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            crate::platform::release_free_memory();
        }
        daemon.dispatch(signals, &watch);
        if crate::platform::release_asked() {
            daemon.release();
        }
        daemon.tick(&mut watch);
        if let Some((path, seen)) = &mut config
            && last_config_check.elapsed() >= ROOT_CHECK
        {
            last_config_check = Instant::now();
            let now = stamp(path);
            if now != *seen {
                *seen = now;
                daemon.reload(path, reload, &mut watch);
            }
        }
        status.maybe_print(&daemon, rx.len());
    }
    drop(watch);
    let mut total = Summary {
        dry_run: settings.output.dry_run,
        ..Summary::default()
    };
    for (name, summary) in daemon.stop_all() {
        total.add(&name, summary, daemon.named);
    }
    board.close();
    total.finish(started, settings.output.json, "stopped");
    Ok(())
}

/// How often a busy watcher gives freed memory back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// The signals that arrived within one loop tick (none if it timed out).
fn next_signals(rx: &Receiver<Signal>) -> Result<Vec<Signal>, ()> {
    match rx.recv_timeout(LOOP_TICK) {
        Ok(first) => {
            let mut signals = vec![first];
            signals.extend(rx.try_iter().take(BATCH));
            Ok(signals)
        }
        Err(RecvTimeoutError::Timeout) => Ok(Vec::new()),
        Err(RecvTimeoutError::Disconnected) => Err(()),
    }
}

/// The config file's modification time and size, to notice edits (also by editors that
/// write a new file and rename it over the old one).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Every pair and what they share.
struct Daemon {
    pairs: Vec<Watched>,
    next_id: usize,
    /// Several pairs (from a config file): log lines name their pair.
    named: bool,
    timing: Timing,
    stop: Arc<AtomicBool>,
    board: Board,
    /// Counts of pairs stopped by a reload, for the final summary.
    finished: Vec<(String, Summary)>,
    /// Where the watcher sends its signals (a new debounce needs a new watcher).
    signals: crossbeam_channel::Sender<Signal>,
    /// The log files in use (`log_file`, `error_log_file`), reopened when a reload
    /// changes them.
    output_files: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
    /// Folders already reported as too deep to watch (each is said once).
    too_deep_said: std::collections::HashSet<std::path::PathBuf>,
}

impl Daemon {
    fn start_all(&mut self, settings: &Settings, watch: &mut Watch) {
        for pair in &settings.pairs {
            if pair.enabled {
                self.start(pair.clone(), watch);
            } else {
                log::info!("skipping pair {}: enabled = false", pair.name);
            }
        }
    }

    fn start(&mut self, settings: PairSettings, watch: &mut Watch) {
        let id = self.next_id;
        self.next_id += 1;
        let label = self.named.then(|| Arc::from(settings.name.as_str()));
        let mut pair = Watched::new(id, settings, self.timing, label);
        logging::set_pair(pair.label.clone());
        pair.start(watch, &self.stop, &self.board);
        logging::set_pair(None);
        self.pairs.push(pair);
    }

    fn dispatch(&mut self, signals: Vec<Signal>, watch: &Watch) {
        for signal in signals {
            match signal {
                Signal::Hints { root, hints } => {
                    if let Some(pair) = self.pairs.iter_mut().find(|p| p.id == root) {
                        pair.pending.extend(hints);
                    }
                }
                Signal::Rescan => {
                    for pair in &mut self.pairs {
                        pair.lost_events();
                    }
                }
                Signal::Limit => {
                    for pair in &mut self.pairs {
                        logging::set_pair(pair.label.clone());
                        pair.limit_reached();
                    }
                    logging::set_pair(None);
                }
                Signal::Unmounted { root } => {
                    if let Some(pair) = self.pairs.iter_mut().find(|p| p.id == root) {
                        logging::set_pair(pair.label.clone());
                        pair.unmounted();
                        logging::set_pair(None);
                    }
                }
                Signal::TooDeep(paths) => self.too_deep(paths),
                Signal::Error(message) => log::warn!("watcher: {message}"),
            }
        }
        for (root, hint) in watch.overdue(self.timing.max_wait) {
            if let Some(pair) = self.pairs.iter_mut().find(|p| p.id == root) {
                pair.pending.push(hint);
            }
        }
    }

    /// Folders too deep to watch: said once each, with what covers them instead.
    fn too_deep(&mut self, paths: Vec<std::path::PathBuf>) {
        let covered = match self.timing.rescan {
            Some(every) => format!(
                "changes below it are mirrored by the fallback rescan (--rescan, every {})",
                crate::config::TimeSpan::from(every)
            ),
            None => "changes below it are not mirrored until you run datasafe sync \
                     (or set --rescan)"
                .to_string(),
        };
        for path in paths {
            if self.too_deep_said.insert(path.clone()) {
                log::warn!(
                    "cannot watch {}: its path is longer than the system allows; {covered}",
                    crate::output::names::esc(&path)
                );
            }
        }
    }

    fn tick(&mut self, watch: &mut Watch) {
        for pair in &mut self.pairs {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            logging::set_pair(pair.label.clone());
            pair.tick(watch, &self.stop, &self.board);
            logging::set_pair(None);
        }
    }

    /// Applies an edited config file: added pairs start, removed pairs stop, changed
    /// pairs restart. An invalid file is reported and what runs is kept.
    fn reload(&mut self, path: &Path, reload: Reload<'_>, watch: &mut Watch) {
        let settings = match reload() {
            Ok(settings) => settings,
            Err(e) => {
                log::error!(
                    "{e}; the running configuration is kept (config {})",
                    esc(path)
                );
                return;
            }
        };
        if settings.output.log_file != self.output_files.0
            || settings.output.error_log != self.output_files.1
        {
            match logging::reopen_files(&settings.output) {
                Ok(()) => {
                    self.output_files = (
                        settings.output.log_file.clone(),
                        settings.output.error_log.clone(),
                    );
                }
                Err(message) => log::error!("{message}; the log files stay as they were"),
            }
        }
        if settings.timing.debounce != self.timing.debounce {
            self.rewatch(settings.timing.debounce, watch);
        }
        self.timing = settings.timing;
        for pair in &mut self.pairs {
            pair.timing = settings.timing;
        }
        let wanted: Vec<&PairSettings> = settings.enabled().collect();
        let (mut stopped, mut started) = (0, 0);
        let mut kept = Vec::new();
        for pair in std::mem::take(&mut self.pairs) {
            if wanted.iter().any(|w| same_pair(w, &pair.settings)) {
                kept.push(pair);
            } else {
                stopped += 1;
                self.finished.push(pair.stop(watch, &self.board));
            }
        }
        self.pairs = kept;
        for want in wanted {
            if !self.pairs.iter().any(|p| same_pair(want, &p.settings)) {
                started += 1;
                self.start(want.clone(), watch);
            }
        }
        log::info!(
            "config {} reloaded: {} started, {stopped} stopped",
            esc(path),
            count_of(started, "pair")
        );
    }

    /// A new debounce time: a new watcher (the debouncer's timing is fixed at its
    /// start), every root watched again, and a reconcile of each, since events in the
    /// old watcher's queue are dropped with it.
    fn rewatch(&mut self, debounce: Duration, watch: &mut Watch) {
        match Watch::new(debounce, self.signals.clone()) {
            Ok(new) => *watch = new,
            Err(message) => {
                log::error!(
                    "{message}; keeping the debounce time of {}",
                    human_duration(self.timing.debounce)
                );
                return;
            }
        }
        log::info!("debounce time is now {}", human_duration(debounce));
        for pair in &mut self.pairs {
            logging::set_pair(pair.label.clone());
            if pair.installed {
                pair.installed = false;
                pair.install(watch);
                if pair.state == State::Watching {
                    pair.reconcile(&self.board);
                }
            }
            logging::set_pair(None);
        }
    }

    /// The release signal (`datasafe release`, `kill -USR1`): every pair whose
    /// deletions the guard holds back runs one full pass without the guard.
    fn release(&mut self) {
        let mut any = false;
        for pair in &mut self.pairs {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            logging::set_pair(pair.label.clone());
            any |= pair.release(&self.board);
            logging::set_pair(None);
        }
        if !any {
            log::info!("release asked for, but no pair holds deletions back");
        }
    }

    /// Stops every pair; returns each pair's counts (those stopped earlier too).
    fn stop_all(&mut self) -> Vec<(String, Summary)> {
        let mut all = std::mem::take(&mut self.finished);
        for pair in std::mem::take(&mut self.pairs) {
            logging::set_pair(pair.label.clone());
            let name = pair.settings.name.clone();
            if let Some(mut mirror) = pair.mirror {
                mirror.commit();
                all.push((name, mirror.into_summary()));
            }
            logging::set_pair(None);
        }
        all
    }
}

/// True if two pair settings describe the same running pair (anything changed means a
/// restart).
fn same_pair(a: &PairSettings, b: &PairSettings) -> bool {
    // Destructured in full: a new key fails to compile here until reload considers it.
    // Output settings (log files) are applied to the running pair instead.
    let crate::config::Config {
        pair,
        plan,
        versions,
        versions_max_size,
        guard,
        excludes,
        jobs,
        output: _,
    } = &a.config;
    let y = &b.config;
    a.name == b.name
        && pair.src == y.pair.src
        && pair.dst == y.pair.dst
        && *plan == y.plan
        && *excludes == y.excludes
        && *jobs == y.jobs
        && *versions == y.versions
        && *versions_max_size == y.versions_max_size
        && *guard == y.guard
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_changed_option_means_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let base = crate::config::Config {
            pair: crate::config::Pair::resolve(
                &src,
                &crate::config::Dest::Local(dir.path().join("dst")),
            )
            .unwrap(),
            plan: crate::engine::plan::PlanOptions::default(),
            versions: crate::store::versions::Retention::Staggered,
            versions_max_size: None,
            guard: crate::engine::plan::Guard::default(),
            excludes: crate::config::filter::Excludes::default(),
            jobs: 2,
            output: crate::config::Output {
                dry_run: false,
                json: false,
                log_file: None,
                error_log: None,
                verbosity: crate::config::Verbosity::Normal,
            },
        };
        let a = PairSettings {
            name: "a".into(),
            enabled: true,
            config: base.clone(),
        };
        let mut b = a.clone();
        assert!(same_pair(&a, &b));
        b.config.plan.compress = true;
        assert!(!same_pair(&a, &b));
        let mut c = a.clone();
        c.config.excludes = crate::config::filter::Excludes::new(&["*.tmp"]).unwrap();
        assert!(!same_pair(&a, &c));
        // Retention and the deletion guard are read when the mirror opens: a restart.
        let mut d = a.clone();
        d.config.versions = crate::store::versions::Retention::Off;
        assert!(!same_pair(&a, &d));
        let mut e = a.clone();
        e.config.guard.force = true;
        assert!(!same_pair(&a, &e));
        let mut f = a.clone();
        f.config.guard.max_delete = Some(5);
        assert!(!same_pair(&a, &f));
    }
}

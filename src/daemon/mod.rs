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
pub mod status;

use crate::config::{ConfigError, PairSettings, Settings, Timing, check_source};
use crate::daemon::status::{Board, PairStatus};
use crate::engine::mirror::{Applied, Mirror};
use crate::engine::plan::Held;
use crate::engine::repair::Check;
use crate::output::logging;
use crate::output::names::{count_of, esc, human_bytes, shell_word};
use crate::output::report::Summary;
use crate::platform::{RootId, root_id};
use crate::watch::{Hint, Signal, StartError, Watch, WatchError};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often the loop wakes when nothing happens (stop flag, timers, commits).
const LOOP_TICK: Duration = Duration::from_millis(250);
/// The shortest gap between two reconciles caused by lost events.
const OVERFLOW_GAP: Duration = Duration::from_secs(2);
/// How often a paused pair looks for its source, and a watched one checks it is there;
/// also how often the config file is checked for edits.
const ROOT_CHECK: Duration = Duration::from_secs(1);
/// How often a pair that failed to start is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// The fallback rescan of a root the OS could not fully watch.
const LIMITED_RESCAN: Duration = Duration::from_secs(60);
/// How often the status line may be printed (only when something happened).
const STATUS_EVERY: Duration = Duration::from_secs(10);
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
        && pair.dst_canonical == y.pair.dst_canonical
        && *plan == y.plan
        && *excludes == y.excludes
        && *jobs == y.jobs
        && *versions == y.versions
        && *versions_max_size == y.versions_max_size
        && *guard == y.guard
}

/// Whether a pair is being mirrored.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Events are mirrored as they come.
    Watching,
    /// The source root is gone, or empty while the mirror holds files; nothing is done
    /// until that changes.
    Paused(Pause),
    /// The pair could not start (another process holds its mirror, say); retried.
    Failed(String),
}

/// Why a pair is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pause {
    /// The source root is missing or unreadable.
    Gone,
    /// The source root is empty while its mirror holds files (the deletion guard).
    Empty,
    /// The source root is another folder than the one mirrored: its filesystem was
    /// unmounted (or another mounted over it), or it was deleted and made again.
    Moved,
}

/// One watched pair and its timers.
struct Watched {
    id: usize,
    settings: PairSettings,
    label: Option<Arc<str>>,
    mirror: Option<Mirror>,
    timing: Timing,
    state: State,
    /// Hints waiting to be applied.
    pending: Vec<Hint>,
    /// Events were lost: a reconcile is due (rate-limited).
    rescan_wanted: bool,
    last_reconcile: Instant,
    last_check: Instant,
    /// The OS could not watch every folder: the fallback rescan runs more often.
    limited: bool,
    /// The root is being watched.
    installed: bool,
    /// When DST was last opened again after it vanished.
    last_reopen: Option<Instant>,
    /// The source root's identity when the pair started: the folder being mirrored.
    identity: Option<RootId>,
    /// The identity last reported while paused for another one (said once each).
    seen: Option<RootId>,
}

impl Watched {
    fn new(id: usize, settings: PairSettings, timing: Timing, label: Option<Arc<str>>) -> Watched {
        Watched {
            id,
            settings,
            label,
            mirror: None,
            timing,
            state: State::Watching,
            pending: Vec::new(),
            rescan_wanted: false,
            last_reconcile: Instant::now(),
            last_check: Instant::now(),
            limited: false,
            installed: false,
            last_reopen: None,
            identity: None,
            seen: None,
        }
    }

    fn src(&self) -> &Path {
        &self.settings.config.pair.src
    }

    /// Opens the mirror, installs the watch, then reconciles: nothing that changes
    /// between the two is missed, because its events queue up meanwhile.
    fn start(&mut self, watch: &mut Watch, stop: &Arc<AtomicBool>, board: &Board) {
        if self.mirror.is_none() {
            match Mirror::open(&self.settings.config, stop, false) {
                Ok(mut mirror) => {
                    mirror.set_watched();
                    self.mirror = Some(mirror);
                }
                Err(e) => {
                    log::error!("{e}; trying again every {}", human_duration(RETRY));
                    self.last_reconcile = Instant::now();
                    self.state = State::Failed(e.to_string());
                    self.publish(board, 0);
                    return;
                }
            }
        }
        if let Err(message) = check_source(self.src()) {
            self.pause(&message.to_string());
            self.publish(board, 0);
            return;
        }
        // The folder found now is the one mirrored from here on (until a restart).
        self.identity = root_id(self.src()).ok();
        self.state = State::Watching;
        if self.mirror.as_ref().is_some_and(Mirror::dry_run) {
            log::info!(
                "watching {} (dry run: changes are printed, nothing is written; Ctrl-C to stop)",
                esc(self.src())
            );
        } else {
            log::info!("watching {} (Ctrl-C to stop)", esc(self.src()));
        }
        self.install(watch);
        self.reconcile(board);
    }

    fn install(&mut self, watch: &mut Watch) {
        if self.installed {
            watch.remove_root(self.id);
        }
        self.installed = true;
        let src = self.src().to_path_buf();
        match watch.add_root(self.id, &src) {
            Ok(()) => {}
            Err(WatchError::Limit) => self.limit_reached(),
            Err(WatchError::Other(message)) => {
                self.limited = true;
                log::error!(
                    "cannot watch {}: {message}; it is rescanned every {} instead",
                    esc(&src),
                    human_duration(self.fallback_period().unwrap_or(LIMITED_RESCAN))
                );
            }
        }
    }

    fn lost_events(&mut self) {
        if self.state == State::Watching && !self.rescan_wanted {
            log::warn!(
                "change events were lost (the kernel's queue overflowed); rescanning {}",
                esc(self.src())
            );
            self.rescan_wanted = true;
        }
    }

    fn limit_reached(&mut self) {
        if self.limited {
            return;
        }
        self.limited = true;
        let period = human_duration(self.fallback_period().unwrap_or(LIMITED_RESCAN));
        log::error!(
            "{}",
            limit_message(self.src(), crate::platform::watch_limit(), &period)
        );
    }

    /// How often the fallback reconcile runs, if at all.
    fn fallback_period(&self) -> Option<Duration> {
        match (self.timing.rescan, self.limited) {
            (Some(every), true) => Some(every.min(LIMITED_RESCAN)),
            (None, true) => Some(LIMITED_RESCAN),
            (every, false) => every,
        }
    }

    /// One turn of the loop for this pair.
    fn tick(&mut self, watch: &mut Watch, stop: &Arc<AtomicBool>, board: &Board) {
        let checking = self.last_check.elapsed() >= ROOT_CHECK;
        if checking {
            self.last_check = Instant::now();
        }
        match &self.state {
            State::Failed(_) => {
                self.pending.clear();
                if self.last_reconcile.elapsed() >= RETRY {
                    self.last_reconcile = Instant::now();
                    self.start(watch, stop, board);
                }
            }
            State::Paused(Pause::Gone) => {
                self.pending.clear();
                if checking && check_source(self.src()).is_ok() {
                    // Missing since the start: the folder that appears is the source.
                    if self.identity.is_none() {
                        self.identity = root_id(self.src()).ok();
                    }
                    if self.same_root() {
                        log::info!("source {} is back; mirroring again", esc(self.src()));
                        self.state = State::Watching;
                        self.install(watch);
                        self.reconcile(board);
                    } else {
                        self.state = State::Paused(Pause::Moved);
                        self.another_root();
                    }
                }
            }
            State::Paused(Pause::Moved) => {
                self.pending.clear();
                if checking && check_source(self.src()).is_ok() {
                    if self.same_root() {
                        log::info!(
                            "source {} is back (the same filesystem); mirroring again",
                            esc(self.src())
                        );
                        self.seen = None;
                        self.state = State::Watching;
                        self.install(watch);
                        self.reconcile(board);
                    } else {
                        self.another_root();
                    }
                }
            }
            State::Paused(Pause::Empty) => {
                self.pending.clear();
                if checking
                    && check_source(self.src()).is_ok()
                    && self.mirror.as_ref().is_some_and(|m| !m.source_is_empty())
                {
                    log::info!(
                        "source {} holds files again; mirroring again",
                        esc(self.src())
                    );
                    self.state = State::Watching;
                    self.reconcile(board);
                }
            }
            State::Watching => {
                if checking && let Err(message) = check_source(self.src()) {
                    self.pause(&message.to_string());
                } else if (checking || !self.pending.is_empty()) && !self.same_root() {
                    // Checked before every batch too: after an unmount, the events of
                    // the old filesystem name paths the folder beneath no longer has.
                    self.moved(None);
                } else if self.mirror.as_ref().is_some_and(Mirror::dest_lost) {
                    // One lstat per turn: cheaper than a failed write per event.
                    self.reopen(board);
                } else if !self.pending.is_empty()
                    && let Some(mirror) = self.mirror.as_mut()
                {
                    let hints = std::mem::take(&mut self.pending);
                    let applied = mirror.apply(hints);
                    // Commit at once (not on the 2 s timer), so that `verify` and
                    // `restore` see in the index what they see in DST.
                    mirror.commit();
                    match applied {
                        Applied::Done => {}
                        Applied::SourceGone => self.pause("the source folder is gone"),
                    }
                }
                let overflow_due =
                    self.rescan_wanted && self.last_reconcile.elapsed() >= OVERFLOW_GAP;
                let timer_due = self
                    .fallback_period()
                    .is_some_and(|every| self.last_reconcile.elapsed() >= every);
                let lost = self.mirror.as_ref().is_some_and(Mirror::dest_lost);
                if self.state == State::Watching && !lost && (overflow_due || timer_due) {
                    if overflow_due {
                        // Folders created while events were lost have no watch yet: only
                        // watching the root again walks the tree (before the reconcile,
                        // so nothing falls between the two).
                        self.install(watch);
                    }
                    // The timer's pass also `lstat`s DST: a file edited or replaced in
                    // the mirror behind datasafe's back sends no event about the source.
                    let check = if timer_due { Check::Stat } else { Check::Names };
                    self.reconcile_checking(board, &check);
                }
            }
        }
        if let Some(mirror) = self.mirror.as_mut() {
            mirror.commit_if_due();
        }
        self.publish(board, self.pending.len());
    }

    fn reconcile(&mut self, board: &Board) {
        self.reconcile_checking(board, &Check::Names);
    }

    fn reconcile_checking(&mut self, board: &Board, check: &Check) {
        if let Err(message) = check_source(self.src()) {
            self.pause(&message.to_string());
            return;
        }
        if !self.same_root() {
            // A full pass over another folder would delete what it lacks.
            self.moved(None);
            return;
        }
        let Some(mirror) = self.mirror.as_mut() else {
            return;
        };
        board.set_state(self.id, "reconciling");
        self.rescan_wanted = false;
        mirror.reconcile_checking(Path::new(""), check);
        mirror.commit();
        if mirror.take_held() == Some(Held::EmptySource) {
            // Said by the mirror, with what to do.
            self.state = State::Paused(Pause::Empty);
            self.pending.clear();
        }
        self.last_reconcile = Instant::now();
        crate::platform::release_free_memory();
    }

    /// DST (or its state folder) vanished while watching (`rm -rf DST`, an unmounted
    /// disk): opens it again, which recreates it, and reconciles everything into it. At
    /// most once per [`RETRY`], so a destination that cannot be recreated costs one
    /// message per retry, not a failed write per event; hints meanwhile are dropped, as
    /// the reconcile after the reopen covers them.
    fn reopen(&mut self, board: &Board) {
        self.pending.clear();
        if self.last_reopen.is_some_and(|t| t.elapsed() < RETRY) {
            return;
        }
        self.last_reopen = Some(Instant::now());
        let Some(mirror) = self.mirror.as_mut() else {
            return;
        };
        let dst = &self.settings.config.pair.dst_canonical;
        log::warn!(
            "the destination {} (or its .datasafe folder) is gone; creating it again and \
             mirroring {} into it",
            esc(dst),
            esc(&self.settings.config.pair.src)
        );
        match mirror.reopen() {
            Ok(()) => self.reconcile(board),
            Err(message) => log::error!(
                "{message}; trying again every {} while the pair waits",
                human_duration(RETRY)
            ),
        }
    }

    /// True if the source root is still the folder the pair started with (or its
    /// identity cannot be read, which the existence check covers).
    fn same_root(&self) -> bool {
        match (self.identity, root_id(self.src())) {
            (Some(was), Ok(now)) => was == now,
            _ => true,
        }
    }

    /// The OS said a filesystem under the source was unmounted: pause if that was the
    /// source's own (its root is another folder now); else (a filesystem mounted
    /// inside the source) rescan, which watches it again.
    fn unmounted(&mut self) {
        if self.state != State::Watching {
            return;
        }
        if self.same_root() {
            self.rescan_wanted = true;
        } else {
            self.moved(Some("its filesystem was unmounted"));
        }
    }

    /// The source root turned into another folder: pause, delete nothing.
    fn moved(&mut self, why: Option<&str>) {
        self.state = State::Paused(Pause::Moved);
        self.pending.clear();
        self.seen = root_id(self.src()).ok();
        let dst = &self.settings.config.pair.dst_canonical;
        log::error!(
            "source {} is no longer the folder being mirrored ({}); this pair is paused and \
             nothing is deleted: the mirror in {} is kept as it is. Mirroring resumes when the \
             same filesystem is back; to mirror what is there now instead, restart `datasafe \
             watch` (or stop it and run `datasafe sync {} {}` with the options you watch it \
             with)",
            esc(self.src()),
            why.unwrap_or("it was unmounted, or replaced by another folder"),
            esc(dst),
            shell_word(self.src()),
            shell_word(dst)
        );
    }

    /// While paused for another root: says once per new folder how to go on.
    fn another_root(&mut self) {
        let now = root_id(self.src()).ok();
        if now.is_none() || now == self.seen {
            return;
        }
        self.seen = now;
        log::error!(
            "source {} is now a different folder or filesystem than the one mirrored; the \
             pair stays paused and its mirror {} is kept as it is. If this is the source now, \
             restart `datasafe watch` to mirror it (or stop the watcher and run `datasafe \
             sync {} {}` with the options you watch it with)",
            esc(self.src()),
            esc(&self.settings.config.pair.dst_canonical),
            shell_word(self.src()),
            shell_word(&self.settings.config.pair.dst_canonical)
        );
    }

    /// Runs a full pass without the deletion guard if this pair holds deletions back;
    /// returns whether it did.
    fn release(&mut self, board: &Board) -> bool {
        let empty = self.state == State::Paused(Pause::Empty);
        let holding = self.mirror.as_ref().and_then(Mirror::holding);
        if !(empty || self.state == State::Watching && holding.is_some()) {
            return false;
        }
        if check_source(self.src()).is_err() || !self.same_root() {
            log::error!(
                "not releasing the deletions held back in {}: the source {} is missing or \
                 not the folder being mirrored",
                esc(&self.settings.config.pair.dst_canonical),
                esc(self.src())
            );
            return true;
        }
        let Some(mirror) = self.mirror.as_mut() else {
            return false;
        };
        log::warn!(
            "releasing {} held back in {}: a full pass without the deletion guard",
            holding.map_or_else(
                || "the deletions".to_string(),
                |(_, n)| count_of(n, "deletion")
            ),
            esc(&self.settings.config.pair.dst_canonical)
        );
        board.set_state(self.id, "reconciling");
        self.rescan_wanted = false;
        mirror.reconcile_forced();
        mirror.commit();
        let _ = mirror.take_held();
        self.state = State::Watching;
        self.last_reconcile = Instant::now();
        true
    }

    fn pause(&mut self, why: &str) {
        if self.state == State::Paused(Pause::Gone) {
            return;
        }
        self.state = State::Paused(Pause::Gone);
        self.pending.clear();
        log::error!(
            "{why}; the mirror in {} is kept as it is, and mirroring resumes when the \
             source is back",
            esc(&self.settings.config.pair.dst_canonical)
        );
    }

    /// Stops the pair (a reload removed or changed it); returns its counts.
    fn stop(self, watch: &mut Watch, board: &Board) -> (String, Summary) {
        logging::set_pair(self.label.clone());
        if self.installed {
            watch.remove_root(self.id);
        }
        board.remove(self.id);
        log::info!("stopped watching {}", esc(self.src()));
        let summary = match self.mirror {
            Some(mut mirror) => {
                mirror.commit();
                mirror.into_summary()
            }
            None => Summary::default(),
        };
        logging::set_pair(None);
        (self.settings.name, summary)
    }

    fn publish(&self, board: &Board, queue: usize) {
        let holding = self.mirror.as_ref().and_then(Mirror::holding);
        let held = holding.map_or(0, |(_, n)| n);
        let dry_run = self.mirror.as_ref().is_some_and(Mirror::dry_run);
        let state = match &self.state {
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
                dest: pair.dst_canonical.display().to_string(),
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

/// The one message for a full watch limit: which sysctl, what to raise it to, and what
/// happens meanwhile.
fn limit_message(src: &Path, current: Option<u64>, period: &str) -> String {
    let (now, suggest) = match current {
        Some(n) => (format!(" ({n})"), (n * 4).max(524_288)),
        None => (String::new(), 524_288),
    };
    format!(
        "cannot watch every folder in {}: the kernel limit fs.inotify.max_user_watches{now} \
         is reached; raise it with `sudo sysctl fs.inotify.max_user_watches={suggest}` (and \
         put that line in /etc/sysctl.d/ to keep it); until then it is rescanned every {period}",
        esc(src)
    )
}

/// `90s` → `1m30s`, `10m`, `500ms`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// The periodic one-line status per pair, printed only when something happened.
#[derive(Default)]
struct StatusLine {
    last: Option<Instant>,
    shown: Vec<(usize, u64, u64, u64, u64)>,
}

impl StatusLine {
    fn maybe_print(&mut self, daemon: &Daemon, queued: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_message_names_the_sysctl_and_a_value() {
        let m = limit_message(Path::new("/src"), Some(8192), "1m");
        assert!(m.contains("fs.inotify.max_user_watches (8192)"), "{m}");
        assert!(
            m.contains("sysctl fs.inotify.max_user_watches=524288"),
            "{m}"
        );
        assert!(m.contains("/src") && m.contains("every 1m"), "{m}");
        let big = limit_message(Path::new("/src"), Some(1_000_000), "1m");
        assert!(big.contains("=4000000"), "{big}");
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn a_changed_option_means_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let base = crate::config::Config {
            pair: crate::config::Pair::resolve(&src, &dir.path().join("dst")).unwrap(),
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

//! One watched pair's state and timers ([`Watched`]): whether it is watching, paused or
//! failed to start ([`State`]), the hints waiting for it, the overflow and fallback
//! rescans, the retry of a pair that could not start, and opening DST again after it
//! vanished. The event loop (`daemon::run`) calls [`Watched::tick`] once per turn; why and
//! how a pair pauses is in `pause.rs`, what it shows on the status board in `status.rs`.

use super::ROOT_CHECK;
use super::pause::Pause;
use crate::config::{PairSettings, Timing, check_source};
use crate::daemon::status::Board;
use crate::engine::mirror::{Applied, Mirror};
use crate::engine::plan::Held;
use crate::engine::repair::Check;
use crate::output::logging;
use crate::output::names::{esc, io_message};
use crate::output::report::Summary;
use crate::platform::{RootId, root_id};
use crate::watch::{Hint, Watch, WatchError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The shortest gap between two reconciles caused by lost events.
const OVERFLOW_GAP: Duration = Duration::from_secs(2);
/// How often a pair that failed to start is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// The first wait before a remote DST whose connection was lost is tried again (it
/// doubles with each failed try, up to a minute).
const FIRST_RECONNECT: Duration = Duration::from_secs(1);
/// The fallback rescan of a root the OS could not fully watch.
const LIMITED_RESCAN: Duration = Duration::from_secs(60);

/// Whether a pair is being mirrored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Events are mirrored as they come.
    Watching,
    /// The source root is gone, or empty while the mirror holds files; nothing is done
    /// until that changes.
    Paused(Pause),
    /// The pair could not start (another process holds its mirror, say); retried.
    Failed(String),
}

/// One watched pair and its timers.
pub(super) struct Watched {
    pub(super) id: usize,
    pub(super) settings: PairSettings,
    pub(super) label: Option<Arc<str>>,
    pub(super) mirror: Option<Mirror>,
    pub(super) timing: Timing,
    pub(super) state: State,
    /// Hints waiting to be applied.
    pub(super) pending: Vec<Hint>,
    /// Events were lost: a reconcile is due (rate-limited).
    pub(super) rescan_wanted: bool,
    pub(super) last_reconcile: Instant,
    pub(super) last_check: Instant,
    /// The OS could not watch every folder: the fallback rescan runs more often.
    pub(super) limited: bool,
    /// The root is being watched.
    pub(super) installed: bool,
    /// When DST was last opened again after it vanished.
    pub(super) last_reopen: Option<Instant>,
    /// How long to wait before the next try to reach a remote DST again.
    pub(super) reopen_wait: Duration,
    /// A try to reach a remote DST under way, on a thread of its own: ssh may take its
    /// whole connect timeout to give up on a silent host, and the other pairs of the
    /// process go on meanwhile.
    pub(super) probe: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// The source root's identity when the pair started: the folder being mirrored.
    pub(super) identity: Option<RootId>,
    /// The identity last reported while paused for another one (said once each).
    pub(super) seen: Option<RootId>,
}

impl Watched {
    pub(super) fn new(
        id: usize,
        settings: PairSettings,
        timing: Timing,
        label: Option<Arc<str>>,
    ) -> Watched {
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
            reopen_wait: FIRST_RECONNECT,
            probe: None,
            identity: None,
            seen: None,
        }
    }

    pub(super) fn src(&self) -> &Path {
        &self.settings.config.pair.src
    }

    /// Opens the mirror, installs the watch, then reconciles: nothing that changes
    /// between the two is missed, because its events queue up meanwhile.
    pub(super) fn start(&mut self, watch: &mut Watch, stop: &Arc<AtomicBool>, board: &Board) {
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
        let began = Instant::now();
        self.install(watch);
        self.reconcile(board);
        if self.state == State::Watching && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // The start-up pass is over (on a big tree it takes a while).
            let took = began.elapsed().as_secs_f64();
            if self.mirror.as_ref().is_some_and(Mirror::dry_run) {
                log::info!(
                    "{}: start-up pass done in {took:.1} s (dry run: nothing written); \
                     watching for changes",
                    esc(self.src())
                );
            } else {
                log::info!(
                    "{} is mirrored (watches and start-up pass took {took:.1} s); watching \
                     for changes",
                    esc(self.src())
                );
            }
        }
    }

    pub(super) fn install(&mut self, watch: &mut Watch) {
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

    pub(super) fn lost_events(&mut self) {
        if self.state == State::Watching && !self.rescan_wanted {
            log::warn!(
                "change events were lost (the kernel's queue overflowed); rescanning {}",
                esc(self.src())
            );
            self.rescan_wanted = true;
        }
    }

    pub(super) fn limit_reached(&mut self) {
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
    pub(super) fn fallback_period(&self) -> Option<Duration> {
        match (self.timing.rescan, self.limited) {
            (Some(every), true) => Some(every.min(LIMITED_RESCAN)),
            (None, true) => Some(LIMITED_RESCAN),
            (every, false) => every,
        }
    }

    /// One turn of the loop for this pair.
    pub(super) fn tick(&mut self, watch: &mut Watch, stop: &Arc<AtomicBool>, board: &Board) {
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
                    let connections = mirror.connections();
                    let applied = mirror.apply(hints);
                    // Commit at once (not on the 2 s timer), so that `verify` and
                    // `restore` see in the index what they see in DST.
                    mirror.commit();
                    // A remote DST that was reached again meanwhile: what was in flight
                    // when the connection went failed, and a pass writes it again.
                    let reconnected = mirror.connections() != connections && !mirror.dest_lost();
                    match applied {
                        Applied::Done if reconnected => self.reconcile(board),
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
                    // Not for a remote DST: listing it in detail is what its index
                    // spares (verify and --repair look).
                    let local = self.settings.config.pair.dst.local().is_some();
                    let check = if timer_due && local {
                        Check::Stat
                    } else {
                        Check::Names
                    };
                    self.reconcile_checking(board, &check);
                }
            }
        }
        if let Some(mirror) = self.mirror.as_mut() {
            mirror.commit_if_due();
        }
        self.publish(board, self.pending.len());
    }

    pub(super) fn reconcile(&mut self, board: &Board) {
        self.reconcile_checking(board, &Check::Names);
    }

    pub(super) fn reconcile_checking(&mut self, board: &Board, check: &Check) {
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
    pub(super) fn reopen(&mut self, board: &Board) {
        // Whatever changes meanwhile, the full pass after DST is back mirrors it.
        self.pending.clear();
        // The name of a remote DST (host or bucket), for messages.
        let remote = self.settings.config.pair.dst.host();
        // A remote DST is tried again sooner at first, then less and less often.
        let wait = match &remote {
            Some(_) => self.reopen_wait,
            None => RETRY,
        };
        // A remote DST is reopened only once a try on the side reached it.
        let probed = match self.probe.take() {
            Some(probe) if !probe.is_finished() => {
                self.probe = Some(probe);
                return;
            }
            Some(probe) => Some(
                probe
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the try to connect failed"))),
            ),
            None => None,
        };
        if probed.is_none() && self.last_reopen.is_some_and(|t| t.elapsed() < wait) {
            return;
        }
        self.last_reopen = Some(Instant::now());
        let Some(mirror) = self.mirror.as_mut() else {
            return;
        };
        let dst = &self.settings.config.pair.dst.display();
        match &remote {
            Some(remote) if self.reopen_wait == FIRST_RECONNECT && probed.is_none() => log::warn!(
                "cannot write {} (the connection to {} was lost, or the folder is gone); \
                 reconnecting (changes to {} are collected and mirrored once it is back)",
                esc(dst),
                remote,
                esc(&self.settings.config.pair.src)
            ),
            Some(_) => {}
            None => log::warn!(
                "the destination {} (or its .datasafe folder) is gone; creating it again and \
                 mirroring {} into it",
                esc(dst),
                esc(&self.settings.config.pair.src)
            ),
        }
        if remote.is_some() {
            match probed {
                None => {
                    let dst = self.settings.config.pair.dst.clone();
                    self.probe = std::thread::Builder::new()
                        .name("reconnect".into())
                        .spawn(move || crate::store::reachable(&dst))
                        .ok();
                    if self.probe.is_some() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    log::error!(
                        "{}; trying again in {}",
                        io_message(&e),
                        human_duration(self.reopen_wait)
                    );
                    self.reopen_wait = (self.reopen_wait * 2).min(RETRY * 6);
                    return;
                }
                Some(Ok(())) => {}
            }
        }
        match mirror.reopen() {
            Ok(()) => {
                if let Some(remote) = &remote {
                    log::info!("connected to {remote} again; mirroring what changed");
                }
                self.reopen_wait = FIRST_RECONNECT;
                self.reconcile(board);
            }
            Err(message) if remote.is_some() => {
                log::error!(
                    "{message}; trying again in {}",
                    human_duration(self.reopen_wait)
                );
                self.reopen_wait = (self.reopen_wait * 2).min(RETRY * 6);
            }
            Err(message) => log::error!(
                "{message}; trying again every {} while the pair waits",
                human_duration(RETRY)
            ),
        }
    }
}

impl Watched {
    /// Stops the pair (a reload removed or changed it); returns its counts.
    pub(super) fn stop(self, watch: &mut Watch, board: &Board) -> (String, Summary) {
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
pub(super) fn human_duration(d: Duration) -> String {
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
}

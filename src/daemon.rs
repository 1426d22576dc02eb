//! The long-running side of `datasafe watch`: the event loop that installs the watch,
//! runs the start-up reconcile, feeds debounced hints to the mirror, and covers what
//! events cannot: lost events (a reconcile on overflow, rate-limited), the watch limit
//! (a shorter fallback timer), a vanished source (pause, never delete, resume with a
//! reconcile) and files that never go quiet (max-wait).
//!
//! It decides *when* to act; what to do is the engine's (`sync::Mirror`).

use crate::config::{Config, Timing};
use crate::names::{esc, human_bytes};
use crate::report::Summary;
use crate::sync::{Applied, Mirror};
use crate::watch::{Hint, Signal, Watch, WatchError};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the loop wakes when nothing happens (stop flag, timers, commits).
const LOOP_TICK: Duration = Duration::from_millis(100);
/// The shortest gap between two reconciles caused by lost events.
const OVERFLOW_GAP: Duration = Duration::from_secs(2);
/// How often a paused pair looks for its source, and a watched one checks it is there.
const ROOT_CHECK: Duration = Duration::from_secs(1);
/// The fallback rescan of a root the OS could not fully watch.
const LIMITED_RESCAN: Duration = Duration::from_secs(60);
/// How often the status line may be printed (only when something happened).
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// At most this many signals are taken in one go, so timers still run during a flood.
const BATCH: usize = 10_000;

/// Watches `cfg`'s pair until `stop` is set. Returns the exit code.
pub fn run(cfg: &Config, timing: &Timing, stop: &Arc<AtomicBool>) -> u8 {
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watch = match Watch::new(timing.debounce, tx) {
        Ok(watch) => watch,
        Err(message) => {
            log::error!("{message}");
            return crate::app::EXIT_USAGE;
        }
    };
    let mut pair = Watched::new(0, Mirror::open(cfg, stop, false), *timing);
    pair.start(&mut watch);
    log::info!(
        "watching {} (Ctrl-C to stop)",
        esc(&pair.mirror.pair().src)
    );
    let mut status = Status::default();
    while !stop.load(Ordering::Relaxed) {
        let signals = match next_signals(&rx) {
            Ok(signals) => signals,
            Err(()) => break,
        };
        for signal in signals {
            match signal {
                Signal::Hints { root, hints } if root == pair.id => pair.pending.extend(hints),
                Signal::Hints { .. } => {}
                Signal::Rescan => {
                    if !pair.rescan_wanted {
                        log::warn!(
                            "change events were lost (the kernel's queue overflowed); rescanning {}",
                            esc(&pair.mirror.pair().src)
                        );
                    }
                    pair.rescan_wanted = true;
                }
                Signal::Limit => pair.limit_reached(),
                Signal::Error(message) => log::warn!("watcher: {message}"),
            }
        }
        for (root, hint) in watch.overdue(timing.max_wait) {
            if root == pair.id {
                pair.pending.push(hint);
            }
        }
        pair.tick(&mut watch);
        status.maybe_print(pair.mirror.summary(), rx.len() + pair.pending.len());
    }
    drop(watch);
    pair.mirror.commit();
    let mut summary = pair.mirror.into_summary();
    summary.finish(started, cfg.output.json, "stopped");
    0
}

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

/// Whether a pair is being mirrored.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Events are mirrored as they come.
    Watching,
    /// The source root is gone; nothing is done until it is back.
    Paused,
}

/// One watched pair and its timers.
struct Watched {
    id: usize,
    mirror: Mirror,
    timing: Timing,
    state: State,
    /// Hints waiting to be applied.
    pending: Vec<Hint>,
    /// Events were lost: a reconcile is due (rate-limited).
    rescan_wanted: bool,
    last_reconcile: Instant,
    last_root_check: Instant,
    /// The OS could not watch every folder: the fallback rescan runs more often.
    limited: bool,
}

impl Watched {
    fn new(id: usize, mirror: Mirror, timing: Timing) -> Watched {
        Watched {
            id,
            mirror,
            timing,
            state: State::Watching,
            pending: Vec::new(),
            rescan_wanted: false,
            last_reconcile: Instant::now(),
            last_root_check: Instant::now(),
            limited: false,
        }
    }

    /// Installs the watch, then reconciles: nothing that changes between the two is
    /// missed, because its events queue up meanwhile.
    fn start(&mut self, watch: &mut Watch) {
        if !self.mirror.source_present() {
            self.pause();
            return;
        }
        self.install(watch);
        self.reconcile();
    }

    fn install(&mut self, watch: &mut Watch) {
        let src = self.mirror.pair().src.clone();
        match watch.add_root(self.id, &src) {
            Ok(()) => {}
            Err(WatchError::Limit) => self.limit_reached(),
            Err(WatchError::Other(message)) => {
                log::error!(
                    "cannot watch {}: {message}; it is rescanned every {} instead",
                    esc(&src),
                    human_duration(self.fallback_period().unwrap_or(LIMITED_RESCAN))
                );
                self.limited = true;
            }
        }
    }

    fn limit_reached(&mut self) {
        if self.limited {
            return;
        }
        self.limited = true;
        let src = &self.mirror.pair().src;
        let period = human_duration(self.fallback_period().unwrap_or(LIMITED_RESCAN));
        log::error!("{}", limit_message(src, crate::platform::watch_limit(), &period));
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
    fn tick(&mut self, watch: &mut Watch) {
        let check_root = self.last_root_check.elapsed() >= ROOT_CHECK;
        if check_root {
            self.last_root_check = Instant::now();
        }
        match self.state {
            State::Paused => {
                self.pending.clear();
                if check_root && self.mirror.source_present() {
                    log::info!(
                        "source {} is back; mirroring again",
                        esc(&self.mirror.pair().src)
                    );
                    self.state = State::Watching;
                    watch.remove_root(self.id);
                    self.install(watch);
                    self.reconcile();
                }
            }
            State::Watching => {
                if check_root && !self.mirror.source_present() {
                    self.pause();
                } else if !self.pending.is_empty() {
                    let hints = std::mem::take(&mut self.pending);
                    if self.mirror.apply(hints) == Applied::SourceGone {
                        self.pause();
                    }
                }
                let overflow_due =
                    self.rescan_wanted && self.last_reconcile.elapsed() >= OVERFLOW_GAP;
                let timer_due = self
                    .fallback_period()
                    .is_some_and(|every| self.last_reconcile.elapsed() >= every);
                if self.state == State::Watching && (overflow_due || timer_due) {
                    self.reconcile();
                }
            }
        }
        self.mirror.commit_if_due();
    }

    fn reconcile(&mut self) {
        if !self.mirror.source_present() {
            self.pause();
            return;
        }
        self.rescan_wanted = false;
        self.mirror.reconcile(Path::new(""));
        self.last_reconcile = Instant::now();
        crate::platform::release_free_memory();
    }

    fn pause(&mut self) {
        if self.state == State::Paused {
            return;
        }
        self.state = State::Paused;
        self.pending.clear();
        log::error!(
            "source {} is gone (unmounted or removed?); the mirror in {} is kept as it is, \
             and mirroring resumes when the source is back",
            esc(&self.mirror.pair().src),
            esc(&self.mirror.pair().dst)
        );
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

/// The periodic one-line status, printed only when something happened.
#[derive(Default)]
struct Status {
    last: Option<Instant>,
    shown: Summary,
}

impl Status {
    fn maybe_print(&mut self, summary: &Summary, queued: usize) {
        let due = self.last.is_none_or(|t| t.elapsed() >= STATUS_EVERY);
        let changed = (summary.copied, summary.deleted, summary.renamed, summary.failed)
            != (
                self.shown.copied,
                self.shown.deleted,
                self.shown.renamed,
                self.shown.failed,
            );
        if !due || !changed {
            return;
        }
        self.last = Some(Instant::now());
        self.shown = summary.clone();
        log::info!(
            "status: {} files mirrored ({}), {} deleted, {} renamed, {} failed since start; {queued} queued",
            summary.copied,
            human_bytes(summary.bytes_copied),
            summary.deleted,
            summary.renamed,
            summary.failed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_message_names_the_sysctl_and_a_value() {
        let m = limit_message(Path::new("/src"), Some(8192), "1m");
        assert!(m.contains("fs.inotify.max_user_watches (8192)"), "{m}");
        assert!(m.contains("sysctl fs.inotify.max_user_watches=524288"), "{m}");
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

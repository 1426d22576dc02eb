//! OS change notifications turned into path hints: notify (inotify, FSEvents,
//! ReadDirectoryChangesW) behind one notify-debouncer-full debouncer for every watched
//! root, with no file-id cache (see WATCHING.md: `NoCache` on Linux) and access events
//! filtered in the kernel, so our own reads never flood the queue.
//!
//! The debouncer's callback only translates events and sends them on an unbounded
//! channel: it never blocks and never touches a file. A hint is only a hint — the engine
//! looks at each path as it is when it acts (see `engine::mirror::Mirror::apply`).
//!
//! Timing: the debouncer only looks at its queues once per tick, so on its own it emits a
//! path anywhere between the debounce and the debounce plus a tick after the path went
//! quiet, and it wakes every tick even when idle. So it runs with a shorter timeout and
//! a coarse tick, and a hold thread ([`Hold`]) keeps each event until exactly the
//! debounce after it, sleeping on its channel while nothing is held. An event whose path
//! was touched again while held is dropped: the debouncer holds the newer event and will
//! emit it in turn, so a path is still mirrored only once it has been quiet for the
//! whole debounce.
//!
//! A thin wrapper around the OS watcher ([`TapWatcher`]) sees every raw event first: it
//! notes when each path was last touched (for the hold) and first written (a file that
//! never goes quiet, such as a growing log, would never be emitted, so
//! [`Watch::overdue`] names paths that waited longer than the max-wait).

mod hold;
#[cfg(target_os = "linux")]
mod inotify;
mod tap;

/// The OS watcher under the debouncer, the one place that chooses it: on Linux our own
/// compact inotify watcher (notify's keeps two maps of full paths per watched folder),
/// elsewhere notify's recommended one.
#[cfg(target_os = "linux")]
pub type OsWatcher = inotify::InotifyWatcher;
#[cfg(not(target_os = "linux"))]
pub type OsWatcher = notify::RecommendedWatcher;

use hold::Hold;
use tap::{TAP, Tap, TapWatcher};

use crossbeam_channel::Sender;
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, EventKindMask, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, NoCache};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Something to re-check in one mirror, relative to its source root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Something at `rel` changed, appeared or disappeared. With `walk`, a folder there
    /// is walked in full (it was created or moved in, and files written into it before
    /// its watch existed produce no events).
    Changed {
        /// The path relative to the source root.
        rel: PathBuf,
        /// Walk it if it is a folder.
        walk: bool,
    },
    /// `from` was renamed to `to`, both inside the same root.
    Renamed {
        /// The old path.
        from: PathBuf,
        /// The new path.
        to: PathBuf,
    },
}

/// What the watcher tells the event loop.
#[derive(Debug)]
pub enum Signal {
    /// Paths to re-check in root `root`.
    Hints {
        /// The root's id, as given to [`Watch::add_root`].
        root: usize,
        /// What to re-check.
        hints: Vec<Hint>,
    },
    /// Events were lost (a kernel queue overflow): every root needs a reconcile.
    Rescan,
    /// The OS refused to watch more folders.
    Limit,
    /// A filesystem under root `root` was unmounted (inotify's `IN_UNMOUNT`): the root
    /// itself, or one mounted inside it.
    Unmounted {
        /// The root's id.
        root: usize,
    },
    /// Folders whose paths are longer than the OS lets a watch be added by (past
    /// `PATH_MAX`): nothing below them sends events.
    TooDeep(Vec<PathBuf>),
    /// Anything else the watcher reported.
    Error(String),
}

/// Why a root could not be (fully) watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `fs.inotify.max_user_watches` (or the platform's equivalent) is reached; the
    /// watches installed so far stay.
    #[error("the operating system's limit on watched folders is reached")]
    Limit,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Why the watcher could not start at all (no thread, no OS watcher): fatal for
/// `watch`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The hold thread could not be spawned.
    #[error("cannot start watching for changes: {0}")]
    Thread(#[source] std::io::Error),
    /// The OS watcher (inotify, FSEvents, …) could not be set up.
    #[error("cannot start watching for changes: {0}")]
    Watcher(#[source] notify::Error),
}

/// The roots being watched: id → canonical path.
type Roots = Arc<RwLock<Vec<(usize, PathBuf)>>>;

/// One debouncer for all roots.
pub struct Watch {
    debouncer: Debouncer<TapWatcher, NoCache>,
    roots: Roots,
    tap: Arc<Tap>,
}

impl Watch {
    /// Starts the debouncer; signals go to `signals`. Paths are emitted once quiet for
    /// `debounce`.
    pub fn new(debounce: Duration, signals: Sender<Signal>) -> Result<Watch, StartError> {
        let roots: Roots = Arc::default();
        let tap = TAP.get_or_init(Arc::default).clone();
        tap.set_horizon(debounce);
        let (held_tx, held_rx) = crossbeam_channel::unbounded::<Vec<DebouncedEvent>>();
        let error_signals = signals.clone();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                let _ = held_tx.send(events);
            }
            Err(errors) => {
                for error in errors {
                    let signal = match error.kind {
                        notify::ErrorKind::MaxFilesWatch => Signal::Limit,
                        notify::ErrorKind::Io(ref e) if crate::platform::is_name_too_long(e) => {
                            Signal::TooDeep(error.paths.clone())
                        }
                        _ => Signal::Error(error.to_string()),
                    };
                    let _ = error_signals.send(signal);
                }
            }
        };
        let hold = Hold {
            debounce,
            held: VecDeque::new(),
        };
        let (hold_roots, hold_tap) = (roots.clone(), tap.clone());
        std::thread::Builder::new()
            .name("datasafe-debounce".into())
            .spawn(move || hold.run(&held_rx, &hold_tap, &hold_roots, &signals))
            .map_err(StartError::Thread)?;
        // The debouncer emits an event once it is `early` old, looking every `early` (its
        // tick may not exceed its timeout), so every event reaches the hold by 0.9 of the
        // debounce, and the debouncer wakes only about twice per debounce when idle.
        let early = (debounce * 9 / 20).max(Duration::from_millis(1));
        let config = notify::Config::default()
            .with_follow_symlinks(false)
            .with_event_kinds(EventKindMask::CORE);
        let debouncer =
            notify_debouncer_full::new_debouncer_opt(early, Some(early), handler, NoCache, config)
                .map_err(StartError::Watcher)?;
        Ok(Watch {
            debouncer,
            roots,
            tap,
        })
    }

    /// Watches `path` (a canonical folder) recursively as root `id`.
    pub fn add_root(&mut self, id: usize, path: &Path) -> Result<(), WatchError> {
        {
            let mut roots = self.roots.write().unwrap_or_else(|e| e.into_inner());
            roots.retain(|(i, _)| *i != id);
            roots.push((id, path.to_path_buf()));
            // Longest first, so a root inside another root claims its own paths.
            roots.sort_by_key(|(_, p)| std::cmp::Reverse(p.as_os_str().len()));
        }
        match self.debouncer.watch(path, RecursiveMode::Recursive) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Err(WatchError::Limit),
            Err(e) => Err(WatchError::Other(e.to_string())),
        }
    }

    /// Stops watching root `id` (errors are ignored: the folder may be gone).
    pub fn remove_root(&mut self, id: usize) {
        let removed = {
            let mut roots = self.roots.write().unwrap_or_else(|e| e.into_inner());
            let found = roots.iter().find(|(i, _)| *i == id).map(|(_, p)| p.clone());
            roots.retain(|(i, _)| *i != id);
            found
        };
        if let Some(path) = removed {
            let _ = self.debouncer.unwatch(&path);
        }
    }

    /// Paths written to for longer than `max_wait` without going quiet, as hints per
    /// root; each is reported again only after another `max_wait`.
    pub fn overdue(&self, max_wait: Duration) -> Vec<(usize, Hint)> {
        let paths = self.tap.overdue(max_wait);
        let roots = self.roots.read().unwrap_or_else(|e| e.into_inner());
        paths
            .into_iter()
            .filter_map(|p| {
                let (root, rel) = locate(&roots, &p)?;
                Some((root, Hint::Changed { rel, walk: false }))
            })
            .collect()
    }
}

/// Turns a batch of debounced events into signals, grouping hints by root.
fn translate(events: &[DebouncedEvent], roots: &[(usize, PathBuf)]) -> Vec<Signal> {
    let mut out: Vec<Signal> = Vec::new();
    let mut unmounted: Vec<usize> = Vec::new();
    let mut by_root: HashMap<usize, Vec<Hint>> = HashMap::new();
    let mut push = |root: usize, hint: Hint| by_root.entry(root).or_default().push(hint);
    for event in events {
        if event.need_rescan() {
            out.push(Signal::Rescan);
            continue;
        }
        if matches!(event.kind, EventKind::Remove(_)) && event.info() == Some("unmount") {
            // Its paths are gone from this filesystem, not deleted: never a hint.
            for (root, _) in event.paths.iter().filter_map(|p| locate(roots, p)) {
                if !unmounted.contains(&root) {
                    unmounted.push(root);
                    out.push(Signal::Unmounted { root });
                }
            }
            continue;
        }
        let changed = |path: &Path, walk: bool| {
            locate(roots, path).map(|(root, rel)| (root, Hint::Changed { rel, walk }))
        };
        let hints: Vec<(usize, Hint)> = match (&event.kind, event.paths.as_slice()) {
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) => {
                match (locate(roots, from), locate(roots, to)) {
                    (Some((a, from)), Some((b, to))) if a == b => {
                        vec![(a, Hint::Renamed { from, to })]
                    }
                    // Across roots (or in and out of one): a removal and an arrival.
                    (from, to) => from
                        .map(|(r, rel)| (r, Hint::Changed { rel, walk: false }))
                        .into_iter()
                        .chain(to.map(|(r, rel)| (r, Hint::Changed { rel, walk: true })))
                        .collect(),
                }
            }
            (kind, paths) => {
                let walk = matches!(
                    kind,
                    EventKind::Create(_)
                        | EventKind::Any
                        | EventKind::Modify(ModifyKind::Name(
                            RenameMode::To | RenameMode::Any | RenameMode::Both
                        ))
                );
                paths.iter().filter_map(|p| changed(p, walk)).collect()
            }
        };
        for (root, hint) in hints {
            push(root, hint);
        }
    }
    let mut roots_with_hints: Vec<_> = by_root.into_iter().collect();
    roots_with_hints.sort_by_key(|(root, _)| *root);
    out.extend(
        roots_with_hints
            .into_iter()
            .map(|(root, hints)| Signal::Hints { root, hints }),
    );
    out
}

/// The root holding `path` and the path relative to it.
fn locate(roots: &[(usize, PathBuf)], path: &Path) -> Option<(usize, PathBuf)> {
    roots.iter().find_map(|(id, root)| {
        path.strip_prefix(root)
            .ok()
            .map(|rel| (*id, rel.to_path_buf()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Event;
    use notify::event::{CreateKind, DataChange, Flag, RemoveKind};
    use std::time::Instant;

    pub(super) fn ev(kind: EventKind, paths: &[&str]) -> DebouncedEvent {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        DebouncedEvent::new(event, Instant::now())
    }

    fn hints(signals: Vec<Signal>) -> Vec<(usize, Hint)> {
        signals
            .into_iter()
            .flat_map(|s| -> Vec<(usize, Hint)> {
                match s {
                    Signal::Hints { root, hints } => hints.into_iter().map(|h| (root, h)).collect(),
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect()
    }

    fn changed(rel: &str, walk: bool) -> Hint {
        Hint::Changed {
            rel: rel.into(),
            walk,
        }
    }

    #[test]
    fn events_become_hints_for_their_root() {
        let roots = vec![(1, PathBuf::from("/a/inner")), (0, PathBuf::from("/a"))];
        let table: Vec<(DebouncedEvent, Vec<(usize, Hint)>)> = vec![
            (
                ev(EventKind::Create(CreateKind::Folder), &["/a/new"]),
                vec![(0, changed("new", true))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/a/inner/f"],
                ),
                vec![(1, changed("f", false))],
            ),
            (
                ev(EventKind::Remove(RemoveKind::Folder), &["/a/old"]),
                vec![(0, changed("old", false))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/a/x", "/a/y"],
                ),
                vec![(
                    0,
                    Hint::Renamed {
                        from: "x".into(),
                        to: "y".into(),
                    },
                )],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/a/x", "/elsewhere/y"],
                ),
                vec![(0, changed("x", false))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    &["/a/moved-in"],
                ),
                vec![(0, changed("moved-in", true))],
            ),
            (
                ev(EventKind::Create(CreateKind::File), &["/other/x"]),
                vec![],
            ),
        ];
        for (event, want) in table {
            let got = hints(translate(std::slice::from_ref(&event), &roots));
            assert_eq!(got, want, "{event:?}");
        }
    }

    #[test]
    fn an_unmount_is_a_signal_never_a_hint() {
        let roots = [(0, PathBuf::from("/a")), (1, PathBuf::from("/b"))];
        let unmount = |p: &str| {
            DebouncedEvent::new(
                Event::new(EventKind::Remove(notify::event::RemoveKind::Other))
                    .add_path(PathBuf::from(p))
                    .set_info("unmount"),
                Instant::now(),
            )
        };
        let events = [
            unmount("/a"),
            unmount("/a/sub"),
            ev(
                EventKind::Remove(notify::event::RemoveKind::File),
                &["/b/x"],
            ),
        ];
        let signals = translate(&events, &roots);
        assert!(
            matches!(
                signals.as_slice(),
                [Signal::Unmounted { root: 0 }, Signal::Hints { root: 1, .. }]
            ),
            "{signals:?}"
        );
    }

    #[test]
    fn overflow_asks_for_a_rescan() {
        let event = DebouncedEvent::new(
            Event::new(EventKind::Other).set_flag(Flag::Rescan),
            Instant::now(),
        );
        let signals = translate(&[event], &[(0, PathBuf::from("/a"))]);
        assert!(matches!(signals.as_slice(), [Signal::Rescan]));
    }
}

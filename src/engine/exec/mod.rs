//! Carrying out planned actions: the only code that decides how a destination is
//! written. An [`Executor`] holds SRC's root and DST as a [`Store`] (every write goes
//! through the store's primitives, never a path); its workers take [`Action`]s from a
//! bounded channel and send back one [`Outcome`] each. Every file reaches its final name
//! by an install from a private temp file in the store's temp folder, so nothing is ever
//! torn under a final name, whatever kills the process.
//!
//! An operation never decides *whether* to act (the planner did); the policy of *how*
//! lives here and in `ops`/`keep` (what stands in the way is displaced and kept, old
//! content is kept as a version, a changing source is copied again, a full disk makes
//! room), each step a store primitive. The store makes sure no step passes through a
//! symlink inside DST; the engine checks that the source did not change while it was
//! read.

mod attrs;
mod copy;
mod gzip;
mod keep;
mod link;
mod ops;

/// Whether a file read through an open handle is still what it was (as `sync` checks).
pub use copy::unchanged_since;

use crate::engine::plan::Action;
use crate::engine::source::Source;
use crate::model::Kind;
use crate::model::Record;
use crate::output::names::{esc, io_message};
use crate::store::local::Local;
use crate::store::versions::Retention;
use crate::store::{Caps, Reader, Store};
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Scope;

/// How many times a file that changed while being copied is copied again.
pub const COPY_RETRIES: u32 = 3;

/// What an action did, for the log, the summary and the index.
#[derive(Debug)]
pub enum Outcome {
    /// DST now holds `name` as `record`.
    Stored {
        /// What kind of write it was.
        done: Done,
        /// The name in DST.
        name: PathBuf,
        /// What the index should say about it.
        record: Record,
        /// Source bytes read for it.
        bytes: u64,
    },
    /// `from` (and, for a folder, everything in it) now lives at `to`.
    Renamed {
        /// The old name in DST.
        from: PathBuf,
        /// The new name in DST.
        to: PathBuf,
        /// What it is.
        kind: Kind,
    },
    /// DST held `name` as `record` already ([`Action::Record`]): nothing was written.
    Known {
        /// The name in DST.
        name: PathBuf,
        /// The record.
        record: Record,
    },
    /// A `--checksum` comparison found the content already equal.
    Same {
        /// The name in DST.
        name: PathBuf,
        /// The record, now with its digest.
        record: Record,
    },
    /// `name` (and, for a folder, everything in it) is gone from DST.
    Deleted {
        /// The name in DST.
        name: PathBuf,
        /// What it was.
        kind: Kind,
        /// Files removed (1 for a file, the count inside for a folder).
        files: u64,
        /// The old stored form of a file that still exists (a conversion).
        superseded: bool,
    },
    /// The action failed; DST holds at `name` what it held before.
    Failed {
        /// The name in DST (or the source path it came from).
        name: PathBuf,
        /// A one-line lowercase description naming the path and the OS error.
        error: String,
        /// True if the disk is full (the summary says so once more).
        no_space: bool,
        /// True if DST could not be reached (a remote store's connection is gone): said
        /// once, not for every file, and counted in the summary.
        unreachable: bool,
    },
    /// The source was gone when its copy began (deleted after it was planned, as a
    /// burst of creates and deletes does to a watcher): nothing changed; its removal is
    /// mirrored like any other.
    Vanished {
        /// The name in DST.
        name: PathBuf,
    },
    /// Stopped by Ctrl-C before it finished; nothing changed.
    Interrupted {
        /// The name in DST.
        name: PathBuf,
    },
    /// The source kept changing while it was copied (a file still being written): not
    /// a failure; the next event or pass copies it again.
    Unsettled {
        /// The name in DST.
        name: PathBuf,
        /// The source file.
        path: PathBuf,
        /// When DST now holds a consistent copy of the file's first bytes: what the
        /// index should say about it (its size is the bytes copied, so any later look
        /// at the source finds it changed) and the bytes copied.
        installed: Option<(Record, u64)>,
    },
}

/// What stood in DST where something of another type had to go (a folder where a file
/// now is, a file where a folder now is), and was removed (kept as versions first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displaced {
    /// Its name in DST.
    pub name: PathBuf,
    /// What it was.
    pub kind: Kind,
    /// Files removed (1 for a file or link, the count inside for a folder).
    pub files: u64,
}

/// The kinds of write, as the log line names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// A file copied as is.
    Copied,
    /// A file stored gzipped.
    Gzipped,
    /// Mode, mtime, owner or attributes set on a file whose content was current.
    Updated(crate::engine::plan::Changed),
    /// A folder created.
    Mkdir,
    /// A symlink created or replaced.
    Linked,
    /// A file given a second name of a file DST holds (a hard link, as in SRC): counted
    /// as a copy of no bytes.
    HardLinked,
}

/// Why an operation did not complete.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The OS refused; `doing` says what we were doing to `path`.
    Io {
        doing: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The source kept changing while it was read, and no consistent copy of it could
    /// be installed.
    Unsettled { path: PathBuf },
    /// Ctrl-C arrived mid-file; the temp file is gone.
    Interrupted,
}

impl OpError {
    pub(crate) fn io(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OpError {
        let path = path.to_path_buf();
        move |err| OpError::Io { doing, path, err }
    }
}

/// A folder's mode and mtime could not be set ([`Executor::finish_dir`]).
#[derive(Debug, thiserror::Error)]
#[error("setting mode and time on {}: {}", esc(path), io_message(err))]
pub struct DirMetaError {
    /// The folder, as it is shown to the user.
    pub path: PathBuf,
    /// What the OS said (in the message already, so not a `source`).
    pub err: io::Error,
}

/// Why DST cannot be written (the store's error, named where the engine has always
/// had it).
pub use crate::store::PrepareError;

/// How many times an action is tried again after pruning versions for room.
const ROOM_RETRIES: u32 = 3;

/// Room to make on a full disk before trying `action` again: its size and a margin
/// for the file system's own blocks.
fn room_for(action: &Action) -> u64 {
    const MARGIN: u64 = 1 << 20;
    match action {
        Action::Copy { entry, .. } | Action::Compare { entry, .. } => entry.meta.size + MARGIN,
        _ => MARGIN,
    }
}

/// The bytes `action` surely needs on DST: a plain copy's size (a gzipped one may take
/// much less, so it claims nothing).
fn least_needed(action: &Action) -> u64 {
    match action {
        Action::Copy {
            entry,
            stored: crate::model::Stored::Plain,
            ..
        } => entry.meta.size,
        _ => 0,
    }
}

/// Carries out actions for one mirror.
pub struct Executor {
    src: PathBuf,
    /// DST, prepared for writing (it holds the one-writer lock while it lives).
    store: Arc<dyn Store>,
    /// What the store can do, asked once.
    caps: Caps,
    level: flate2::Compression,
    stop: Arc<AtomicBool>,
    /// Whether replaced and deleted files are kept as versions.
    keep: Retention,
    /// Versions kept so far.
    versions_kept: AtomicU64,
    /// Keep every deleted file as a version whatever `keep` says (files that were in
    /// DST before it became a mirror).
    keep_all: AtomicBool,
    /// Versions pruned to make room for live files on a full disk.
    pruned_for_room: AtomicU64,
    /// One worker at a time prunes for room.
    making_room: std::sync::Mutex<()>,
    /// One worker at a time removes what stands in the way of a new type.
    displacing: std::sync::Mutex<()>,
    /// What was removed to make way for another type, not yet reported.
    displaced: std::sync::Mutex<Vec<Displaced>>,
    /// SRC's root, held open while a batch of actions runs ([`Executor::hold_source`]),
    /// so each copy reaches its folder from it instead of opening SRC again by path.
    /// Dropped between batches: a watcher must not keep SRC's filesystem busy.
    source: std::sync::Mutex<Option<Arc<Source>>>,
    /// Where a move made in steps is announced before it starts, while a batch runs
    /// ([`Executor::announce_to`]); `None`: not recorded.
    intents: std::sync::Mutex<Option<crossbeam_channel::Sender<Intent>>>,
    /// Owners and attributes set on what is written ([`Executor::with_attrs`]).
    attrs: attrs::AttrsPolicy,
    /// DST refused a hard link as such: later names are copied (said once).
    no_links: AtomicBool,
    /// Temp names handed out for links (`link::link_temp_name`).
    link_temps: AtomicU64,
}

/// A move DST makes in steps (copy, then delete: `Caps::atomic_rename` false), as the
/// workers announce it to the engine thread, which keeps the index.
#[derive(Debug)]
pub enum Intent {
    /// `from` is about to move to `to`: recorded in the index and committed, then
    /// `recorded` is answered, before the first step.
    Rename {
        from: PathBuf,
        to: PathBuf,
        recorded: crossbeam_channel::Sender<()>,
    },
    /// The move of `from` failed: its intent goes (what it left is compared afresh).
    Failed { from: PathBuf },
}

impl Executor {
    /// Prepares the folder DST for writing: creates it and its state folder if missing,
    /// refuses a state folder that is not a real folder, takes the one-writer lock and
    /// removes temp files a killed run left (see [`Store::prepare`]).
    pub fn new(src: &Path, dst: &Path, stop: Arc<AtomicBool>) -> Result<Executor, PrepareError> {
        Executor::with_store(src, Box::new(Local::create(dst)?), stop)
    }

    /// As [`Executor::new`], for any store (prepared here).
    pub fn with_store(
        src: &Path,
        mut store: Box<dyn Store>,
        stop: Arc<AtomicBool>,
    ) -> Result<Executor, PrepareError> {
        store.prepare()?;
        Ok(Executor {
            src: src.to_path_buf(),
            caps: store.caps(),
            store: Arc::from(store),
            level: flate2::Compression::new(6),
            stop,
            keep: Retention::Staggered,
            versions_kept: AtomicU64::new(0),
            keep_all: AtomicBool::new(false),
            pruned_for_room: AtomicU64::new(0),
            making_room: std::sync::Mutex::new(()),
            displacing: std::sync::Mutex::new(()),
            displaced: std::sync::Mutex::new(Vec::new()),
            source: std::sync::Mutex::new(None),
            intents: std::sync::Mutex::new(None),
            attrs: attrs::AttrsPolicy::default(),
            no_links: AtomicBool::new(false),
            link_temps: AtomicU64::new(0),
        })
    }

    /// Sets owners (when `owners`: run as root) and the attributes `kept` on what is
    /// written, as far as the store keeps them (said once if it does not).
    pub fn with_attrs(mut self, owners: bool, kept: crate::model::Kept) -> Executor {
        let dst = self.shown(Path::new(""));
        self.attrs = attrs::AttrsPolicy::new(owners, kept, &self.caps, &dst);
        self
    }

    /// While a batch runs, moves made in steps are announced on `to` (and each waits
    /// until the index holds its intent); `None` ends that.
    pub fn announce_to(&self, to: Option<crossbeam_channel::Sender<Intent>>) {
        *self
            .intents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }

    /// Where moves are announced: `None` where DST renames in one step, or no one
    /// listens.
    fn announcer(&self) -> Option<crossbeam_channel::Sender<Intent>> {
        if self.caps.atomic_rename {
            return None;
        }
        self.intents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Announces that `from` is about to move to `to`, and waits until the index holds
    /// that intent (if the engine thread is gone, the move goes ahead unrecorded).
    pub(super) fn intend_rename(&self, from: &Path, to: &Path) {
        let Some(announcer) = self.announcer() else {
            return;
        };
        let (recorded, answer) = crossbeam_channel::bounded(1);
        let intent = Intent::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            recorded,
        };
        if announcer.send(intent).is_ok() {
            let _ = answer.recv();
        }
    }

    /// Announces that the move of `from` failed.
    pub(super) fn rename_failed(&self, from: &Path) {
        if let Some(announcer) = self.announcer() {
            let _ = announcer.send(Intent::Failed {
                from: from.to_path_buf(),
            });
        }
    }

    /// The destination this executor writes.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The destination, shared, for what the engine reads of it (its listing on
    /// another thread).
    pub fn reader(&self) -> Arc<dyn Reader> {
        self.store.clone()
    }

    /// While `on`, SRC's root stays open for the copies and compares of this batch
    /// (opened now; a root that cannot be opened is opened, and fails, per action).
    pub fn hold_source(&self, on: bool) {
        let held = on
            .then(|| Source::open(&self.src).ok().map(Arc::new))
            .flatten();
        *self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    /// SRC's root: the one held for this batch, or opened now.
    pub(super) fn source(&self) -> io::Result<Arc<Source>> {
        let held = self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match held {
            Some(source) => Ok(source),
            None => Source::open(&self.src).map(Arc::new),
        }
    }

    /// Sets how replaced and deleted files are kept (versions are on by default).
    pub fn with_retention(mut self, keep: Retention) -> Executor {
        self.keep = keep;
        self
    }

    /// True while DST's temp folder is there. Removing DST (or its state folder) from
    /// under a long-lived executor takes the temp folder, the lock and the index with it;
    /// every write then fails until DST is prepared again.
    pub fn prepared(&self) -> bool {
        self.store.ready()
    }

    /// How many old copies this executor has kept as versions.
    pub fn versions_kept(&self) -> u64 {
        self.versions_kept.load(Ordering::Relaxed)
    }

    /// How many versions this executor pruned to make room for live files.
    pub fn pruned_for_room(&self) -> u64 {
        self.pruned_for_room.load(Ordering::Relaxed)
    }

    /// While on, every file deleted is kept as a version, even with versions off: for
    /// files that were in DST before it became a mirror, which were never datasafe's.
    pub fn keep_every_deletion(&self, on: bool) {
        self.keep_all.store(on, Ordering::SeqCst);
    }

    /// True if replaced and deleted files are kept as versions now.
    fn keeping(&self) -> bool {
        self.keep.keeps() || self.keep_all.load(Ordering::SeqCst)
    }

    /// What was removed to make way for another type since the last call, to log, count
    /// and forget in the index. Reported by the first caller after the removal, which
    /// comes before any outcome that wrote below the new name.
    pub fn take_displaced(&self) -> Vec<Displaced> {
        let mut displaced = self
            .displaced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *displaced)
    }

    /// Carries out one action. A full disk first makes room by pruning the oldest
    /// versions, then the action is tried again: live files win.
    pub fn run(&self, action: Action) -> Outcome {
        let name = action.dest_name();
        let mut tries = 0;
        let result = loop {
            if self.stopped() {
                return Outcome::Interrupted { name };
            }
            let result = self.run_once(&action);
            match &result {
                Err(OpError::Io { err, .. })
                    if crate::platform::is_no_space(err)
                        && tries < ROOM_RETRIES
                        && self.make_room(room_for(&action), least_needed(&action)) =>
                {
                    tries += 1;
                    log::debug!("trying {} again after making room", esc(&name));
                }
                _ => break result,
            }
        };
        match result {
            Ok(outcome) => outcome,
            Err(OpError::Interrupted) => Outcome::Interrupted { name },
            Err(OpError::Unsettled { path }) => Outcome::Unsettled {
                name,
                path,
                installed: None,
            },
            Err(OpError::Io { doing, path, err }) => Outcome::Failed {
                error: format!("{doing} {}: {}", esc(&path), io_message(&err)),
                no_space: crate::platform::is_no_space(&err),
                unreachable: matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::TimedOut
                ),
                name,
            },
        }
    }

    fn run_once(&self, action: &Action) -> Result<Outcome, OpError> {
        match action {
            Action::Copy { entry, stored, was } => self.copy(entry, *stored, *was),
            Action::Compare {
                entry,
                stored,
                known,
            } => self.compare(entry, *stored, known),
            Action::SetMeta {
                entry,
                stored,
                sha256,
                changed,
            } => self.set_meta(entry, *stored, *sha256, *changed),
            Action::Mkdir { entry } => self.mkdir(entry),
            Action::Symlink { entry } => self.symlink(entry),
            Action::Delete {
                name,
                kind,
                superseded,
            } => self.delete(name, *kind, *superseded),
            Action::Rename { from, to, kind } => self.rename(from, to, *kind),
            Action::Link {
                entry,
                stored,
                keep,
                to,
            } => self.link(entry, *stored, to, *keep),
            Action::Record { name, record } => Ok(Outcome::Known {
                name: name.clone(),
                record: record.clone(),
            }),
        }
    }

    /// Makes everything written so far durable (one `syncfs`, not an fsync per file);
    /// called before the index records it.
    pub fn barrier(&self) -> io::Result<()> {
        self.store.barrier()
    }

    /// Tells the store the index was committed ([`Store::index_committed`]).
    pub fn index_committed(&self) -> io::Result<()> {
        self.store.index_committed()
    }

    /// Sets a folder's owner and attributes, then its mode and mtime, after everything
    /// inside it was written. Returns the attributes set, for the index.
    pub fn finish_dir(
        &self,
        rel: &Path,
        meta: &crate::model::Meta,
        attrs: &crate::model::Attrs,
    ) -> Result<crate::model::Attrs, DirMetaError> {
        let (_, done) = self
            .attrs_on_name(rel, Kind::Dir, attrs)
            .map_err(|e| DirMetaError {
                path: self.shown(rel),
                // Setting attributes fails only as the OS or the store says.
                err: match e {
                    OpError::Io { err, .. } => err,
                    OpError::Unsettled { .. } | OpError::Interrupted => {
                        io::Error::other("interrupted")
                    }
                },
            })?;
        self.set_dir_meta(rel, meta).map_err(|err| DirMetaError {
            path: self.shown(rel),
            err,
        })?;
        Ok(done)
    }

    /// How `name` in DST is shown to the user.
    fn shown(&self, name: &Path) -> PathBuf {
        self.store.display(name)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Starts `jobs` workers on `scope` that run every action from `actions` and send each
/// outcome to `outcomes`. They exit when `actions` is closed and drained.
pub fn spawn_workers<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    exec: &'env Executor,
    jobs: usize,
    actions: &Receiver<Action>,
    outcomes: &Sender<Outcome>,
) {
    // Workers log too (kept versions): with the pair's name, like the thread that spawns
    // them.
    let pair = crate::output::logging::current_pair();
    for _ in 0..jobs.max(1) {
        let actions = actions.clone();
        let outcomes = outcomes.clone();
        let pair = pair.clone();
        scope.spawn(move || {
            crate::output::logging::set_pair(pair);
            for action in actions {
                if outcomes.send(exec.run(action)).is_err() {
                    break;
                }
            }
        });
    }
}

/// The executor's policy driven through the in-memory store: what each operation leaves
/// in DST, names and bytes, with SRC a real temp folder.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, Meta, Stored};
    use crate::store::memory::Memory;
    use crate::store::{Reader, layout};
    use filetime::FileTime;

    /// SRC with `files` in it, and an executor writing `mem`.
    fn setup(mem: &Memory, files: &[(&str, &str)]) -> (tempfile::TempDir, Executor) {
        let src = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = src.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let exec = Executor::with_store(
            src.path(),
            Box::new(mem.clone()),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        (src, exec)
    }

    fn entry(src: &Path, rel: &str) -> Entry {
        let meta = std::fs::symlink_metadata(src.join(rel)).unwrap();
        Entry {
            rel: rel.into(),
            kind: Kind::of(meta.file_type()),
            meta: Meta::of(&meta),
            target: None,
            attrs: Default::default(),
            link: None,
        }
    }

    fn copy(src: &Path, rel: &str) -> Action {
        Action::Copy {
            entry: entry(src, rel),
            stored: Stored::Plain,
            was: None,
        }
    }

    /// The versions kept, as (the name they were, content).
    fn kept(mem: &Memory) -> Vec<(PathBuf, String)> {
        let mut found: Vec<_> = crate::store::versions::list_in(mem)
            .into_iter()
            .map(|v| {
                let bytes = mem.read(&layout::versions().join(&v.path)).unwrap();
                (v.stored, String::from_utf8(bytes).unwrap())
            })
            .collect();
        found.sort();
        found
    }

    fn text(mem: &Memory, name: &str) -> Option<String> {
        mem.read(Path::new(name))
            .map(|b| String::from_utf8(b).unwrap())
    }

    fn mkdirs(mem: &Memory, names: &[&str]) {
        for name in names {
            mem.mkdir(Path::new(name)).unwrap();
        }
    }

    #[test]
    fn a_copy_creates_its_folders_and_sets_mode_and_mtime() {
        let mem = Memory::new();
        let (src, exec) = setup(&mem, &[("a/b/c.txt", "new")]);
        let outcome = exec.run(copy(src.path(), "a/b/c.txt"));
        assert!(
            matches!(
                outcome,
                Outcome::Stored {
                    done: Done::Copied,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(text(&mem, "a/b/c.txt").as_deref(), Some("new"));
        let stat = mem.stat(Path::new("a/b/c.txt")).unwrap().unwrap();
        let want = entry(src.path(), "a/b/c.txt").meta;
        assert_eq!((stat.mode, stat.mtime), (want.mode, want.mtime));
        assert!(kept(&mem).is_empty());
        // Nothing is left in the temp folder.
        assert!(mem.list(&layout::tmp()).unwrap().is_empty());
    }

    #[test]
    fn a_copy_over_a_file_keeps_the_old_one_as_a_version() {
        let mem = Memory::new();
        mem.put_file(Path::new("a.txt"), b"old", FileTime::zero())
            .unwrap();
        let (src, exec) = setup(&mem, &[("a.txt", "new")]);
        exec.run(copy(src.path(), "a.txt"));
        assert_eq!(text(&mem, "a.txt").as_deref(), Some("new"));
        assert_eq!(kept(&mem), [(PathBuf::from("a.txt"), "old".to_string())]);
        assert_eq!(exec.versions_kept(), 1);
    }

    #[test]
    fn a_delete_keeps_a_version_with_hard_links_or_without() {
        for hard_links in [true, false] {
            let caps = Caps {
                hard_links,
                ..Memory::new().caps()
            };
            let mem = Memory::new().with_caps(caps);
            mkdirs(&mem, &["d"]);
            mem.put_file(Path::new("d/a.txt"), b"old", FileTime::zero())
                .unwrap();
            let (_src, exec) = setup(&mem, &[]);
            let outcome = exec.run(Action::Delete {
                name: "d/a.txt".into(),
                kind: Kind::File,
                superseded: false,
            });
            assert!(
                matches!(outcome, Outcome::Deleted { files: 1, .. }),
                "{outcome:?}"
            );
            assert_eq!(text(&mem, "d/a.txt"), None);
            assert_eq!(
                kept(&mem),
                [(PathBuf::from("d/a.txt"), "old".to_string())],
                "hard links: {hard_links}"
            );
        }
    }

    #[test]
    fn a_rename_onto_another_name_of_the_same_file_removes_the_old_name() {
        // rename(2) would leave both names: the old one goes, nothing is kept.
        let mem = Memory::new();
        mkdirs(&mem, &["m"]);
        mem.put_file(Path::new("t"), b"same", FileTime::zero())
            .unwrap();
        mem.link(Path::new("t"), Path::new("m/t")).unwrap();
        let (_src, exec) = setup(&mem, &[]);
        let outcome = exec.run(Action::Rename {
            from: "t".into(),
            to: "m/t".into(),
            kind: Kind::File,
        });
        assert!(matches!(outcome, Outcome::Renamed { .. }), "{outcome:?}");
        assert_eq!(text(&mem, "t"), None);
        assert_eq!(text(&mem, "m/t").as_deref(), Some("same"));
        assert!(kept(&mem).is_empty(), "{:?}", kept(&mem));
    }

    #[test]
    fn a_folder_displaced_by_a_file_keeps_its_files() {
        let mem = Memory::new();
        mkdirs(&mem, &["d", "d/sub"]);
        mem.put_file(Path::new("d/x"), b"x", FileTime::zero())
            .unwrap();
        mem.put_file(Path::new("d/sub/y"), b"y", FileTime::zero())
            .unwrap();
        mem.symlink(Path::new("/etc"), Path::new("d/link")).unwrap();
        let (src, exec) = setup(&mem, &[("d", "now a file")]);
        exec.run(copy(src.path(), "d"));
        assert_eq!(text(&mem, "d").as_deref(), Some("now a file"));
        assert_eq!(
            kept(&mem),
            [
                (PathBuf::from("d/sub/y"), "y".to_string()),
                (PathBuf::from("d/x"), "x".to_string())
            ]
        );
        assert_eq!(
            exec.take_displaced(),
            [Displaced {
                name: "d".into(),
                kind: Kind::Dir,
                files: 3
            }]
        );
    }

    #[test]
    fn a_symlink_where_a_folder_goes_is_replaced_never_followed() {
        let mem = Memory::new();
        mem.symlink(Path::new("/elsewhere"), Path::new("d"))
            .unwrap();
        let (src, exec) = setup(&mem, &[("d/f", "f")]);
        exec.run(copy(src.path(), "d/f"));
        assert_eq!(mem.stat(Path::new("d")).unwrap().unwrap().kind, Kind::Dir);
        assert_eq!(text(&mem, "d/f").as_deref(), Some("f"));
        assert_eq!(
            exec.take_displaced(),
            [Displaced {
                name: "d".into(),
                kind: Kind::Symlink,
                files: 1
            }]
        );
    }

    #[test]
    fn a_rename_over_a_file_keeps_the_file_it_replaces() {
        let mem = Memory::new();
        mem.put_file(Path::new("a"), b"A", FileTime::zero())
            .unwrap();
        mem.put_file(Path::new("b"), b"B", FileTime::zero())
            .unwrap();
        let (_src, exec) = setup(&mem, &[]);
        let outcome = exec.run(Action::Rename {
            from: "a".into(),
            to: "b".into(),
            kind: Kind::File,
        });
        assert!(matches!(outcome, Outcome::Renamed { .. }), "{outcome:?}");
        assert_eq!(text(&mem, "a"), None);
        assert_eq!(text(&mem, "b").as_deref(), Some("A"));
        assert_eq!(kept(&mem), [(PathBuf::from("b"), "B".to_string())]);
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let mem = Memory::new();
        let (_src, exec) = setup(&mem, &[]);
        let second = Executor::with_store(
            Path::new("/nowhere"),
            Box::new(mem.clone()),
            Arc::new(AtomicBool::new(false)),
        );
        assert!(matches!(second, Err(PrepareError::Locked(_))));
        drop(exec);
        assert!(
            Executor::with_store(
                Path::new("/nowhere"),
                Box::new(mem.clone()),
                Arc::new(AtomicBool::new(false)),
            )
            .is_ok()
        );
    }

    #[test]
    fn folder_metadata_is_set_last_and_only_on_folders() {
        let mem = Memory::new();
        mkdirs(&mem, &["d"]);
        mem.put_file(Path::new("f"), b"f", FileTime::zero())
            .unwrap();
        let (_src, exec) = setup(&mem, &[]);
        let meta = Meta {
            size: 0,
            mtime: FileTime::from_unix_time(1_000_000, 5),
            mode: 0o750,
        };
        exec.finish_dir(Path::new("d"), &meta, &Default::default())
            .unwrap();
        let stat = mem.stat(Path::new("d")).unwrap().unwrap();
        assert_eq!((stat.mode, stat.mtime), (0o750, meta.mtime));
        let err = exec
            .finish_dir(Path::new("f"), &meta, &Default::default())
            .unwrap_err();
        assert!(err.to_string().contains("it is not a folder"), "{err}");
        let err = exec
            .finish_dir(Path::new("missing"), &meta, &Default::default())
            .unwrap_err();
        assert!(
            err.to_string().contains("no such file or directory"),
            "{err}"
        );
    }
}

//! The Linux OS watcher under the debouncer: [`InotifyWatcher`], a `notify::Watcher` on
//! the `inotify` crate that keeps each watched folder in under 60 bytes of heap instead
//! of the ~360 of notify's own backend (two maps of full `PathBuf`s, 36-40 MB at 100k
//! folders).
//!
//! A folder is a 40-byte [`Node`] in a slab of fixed chunks ([`Tree`]), found by its
//! watch descriptor through a small index: its watch, its parent, its own name (in one
//! arena of names, [`Tree::names`]), linked into its parent's list of children. Only
//! roots keep a full path; an event's path is rebuilt by walking up (folders are
//! shallow). A folder renamed within the tree keeps its watch: the node is
//! re-linked under its new parent and name, so later events carry the new path.
//!
//! It reproduces what our code and notify-debouncer-full rely on from notify's inotify
//! backend, for the one configuration we use (recursive roots, symlinks not followed,
//! kinds filtered in the kernel): the same event kinds and paths, renames as
//! `Name(From)`/`Name(To)` with the cookie as tracker plus `Name(Both)` when both halves
//! are seen, a `Rescan` flag on a queue overflow, a `Remove` with info "unmount",
//! `MaxFilesWatch` from `watch()` past `fs.inotify.max_user_watches` (the watches installed
//! so far stay), and later failures through the handler. Where it deliberately differs is
//! said at [`InotifyWatcher`]. It does not follow symbolic links below a root and does
//! not list watched paths.

use ::inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use hashbrown::HashTable;
use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RemoveKind,
    RenameMode,
};
use notify::{
    Config, Error, ErrorKind, Event, EventHandler, EventKind, EventKindMask, RecursiveMode,
    Watcher, WatcherKind,
};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// More steps up than this from a node means a broken tree, never a real path.
const MAX_DEPTH: usize = 4096;

const INOTIFY: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// The OS watcher behind the debouncer on Linux. Differences from notify's inotify
/// backend, all deliberate:
/// - A folder moved within the tree keeps its watches (notify removes and re-walks it),
///   so nothing inside it is missed while it is re-watched.
/// - Only roots ask for `IN_MOVE_SELF`: notify also gets it for every subfolder and
///   emits a tracker-less `Name(From)` of the old path after each folder rename, which
///   repeats the rename's own `From` half and costs a queue slot per moved folder.
/// - A folder deleted inside the tree is dropped on its `IN_IGNORED`, which the kernel
///   sends right after the `IN_DELETE`; notify also scans every watched path per delete.
/// - Subfolders are watched with `IN_ONLYDIR | IN_DONT_FOLLOW` (no `stat` after each
///   add), and an error for a folder that cannot be watched always names it (notify's
///   `ENAMETOOLONG` for a new folder names no path).
/// - Walks of new folders run as their event is handled, not at the end of the batch,
///   so the `Create(Folder)` events a walk synthesizes for subfolders come right after
///   the event that started it.
pub struct InotifyWatcher {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    waker: mio::Waker,
    thread: Option<JoinHandle<()>>,
}

impl InotifyWatcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watcher for InotifyWatcher {
    fn new<F: EventHandler>(handler: F, config: Config) -> notify::Result<Self> {
        let inotify = Inotify::init()?;
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let fd = inotify.as_raw_fd();
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            INOTIFY,
            mio::Interest::READABLE,
        )?;
        let state = Arc::new(Mutex::new(State::new(
            inotify,
            Box::new(handler),
            config.event_kinds(),
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("datasafe-inotify".into())
            .spawn({
                let (state, stop) = (state.clone(), stop.clone());
                move || run(poll, &state, &stop)
            })?;
        Ok(InotifyWatcher {
            state,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        let recursive = matches!(recursive_mode, RecursiveMode::Recursive);
        self.lock().add_root(path, recursive)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.lock().remove_root(path)
    }

    fn kind() -> WatcherKind {
        WatcherKind::Inotify
    }
}

impl Drop for InotifyWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            // The thread only ever waits on poll or on the state's lock, so it ends.
            let _ = thread.join();
        }
        // The last `Arc` of the state goes with `self`: the inotify fd is closed, and the
        // kernel drops every watch with it.
    }
}

/// The reader thread: waits for inotify or the waker, drains the queue, stops on `stop`.
fn run(mut poll: mio::Poll, state: &Mutex<State>, stop: &AtomicBool) {
    let mut events = mio::Events::with_capacity(4);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                lock(state).handler.handle_event(Err(Error::io(e)));
                return;
            }
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        // mio is edge-triggered: every wake-up on the fd drains it to `WouldBlock`.
        if events.iter().any(|e| e.token() == INOTIFY) {
            lock(state).drain();
        }
    }
}

/// Everything the watcher knows, behind one lock shared by the reader thread and
/// `watch`/`unwatch` (which walk on the caller's thread, as notify's reply waits for).
struct State {
    inotify: Inotify,
    tree: Tree,
    handler: Box<dyn EventHandler>,
    kinds: EventKindMask,
    /// What every watch asks the kernel for.
    child_mask: WatchMask,
    /// What a root's watch asks for: also its own deletion and move.
    root_mask: WatchMask,
    /// The last `Name(From)`, until its `Name(To)` makes a `Name(Both)` of them.
    rename_from: Option<(u32, PathBuf)>,
    /// Folders renamed away in this batch (cookie, node): re-linked by the matching
    /// `IN_MOVED_TO`, or moved out of the tree and dropped once the queue is drained.
    /// The descriptor number guards against the slot being freed and reused meanwhile.
    moving: Vec<(u32, Slot, i32)>,
    /// The watch limit was hit in this batch: no more walks until the next one (as
    /// notify stops adding the batch's folders).
    walks_stopped: bool,
}

impl State {
    fn new(inotify: Inotify, handler: Box<dyn EventHandler>, kinds: EventKindMask) -> State {
        let mask = watch_mask(kinds);
        State {
            inotify,
            tree: Tree::default(),
            handler,
            kinds,
            child_mask: mask.difference(WatchMask::MOVE_SELF),
            root_mask: mask | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF,
            rename_from: None,
            moving: Vec::new(),
            walks_stopped: false,
        }
    }

    fn emit(&mut self, event: Event) {
        if self.kinds.matches(&event.kind) {
            self.handler.handle_event(Ok(event));
        }
    }

    fn add_root(&mut self, path: &Path, recursive: bool) -> notify::Result<()> {
        if self.tree.roots.iter().any(|r| r.path == path) {
            return Ok(());
        }
        let mut watches = self.inotify.watches();
        let mask = self.root_mask | WatchMask::MASK_ADD;
        let (wd, is_dir) = match watches.add(path, mask | WatchMask::ONLYDIR) {
            Ok(wd) => (wd, true),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => (
                watches.add(path, mask).map_err(|e| watch_error(e, path))?,
                false,
            ),
            Err(e) => return Err(watch_error(e, path)),
        };
        let node = match self.tree.find(wd.get_watch_descriptor_id()) {
            Some(node) => {
                // Already watched below another root: it becomes a root of its own.
                self.tree.unlink(node);
                node
            }
            None => self.tree.insert(wd, NONE, b""),
        };
        self.tree.roots.push(Root {
            node,
            path: path.to_path_buf(),
            is_dir,
            recursive,
        });
        if is_dir && recursive {
            self.walk(node, false)?;
        }
        self.tree.names.shrink_to_fit();
        Ok(())
    }

    fn remove_root(&mut self, path: &Path) -> notify::Result<()> {
        let Some(at) = self.tree.roots.iter().rposition(|r| r.path == path) else {
            return Err(Error::watch_not_found().add_path(path.to_path_buf()));
        };
        let node = self.tree.roots.remove(at).node;
        // Another root reaching the same folder (a link, a bind mount) still needs it.
        if !self.tree.roots.iter().any(|r| r.node == node) {
            self.drop_tree(node, true);
        }
        Ok(())
    }

    /// Reads and handles every queued event, then drops the folders that were moved out.
    fn drain(&mut self) {
        self.walks_stopped = false;
        let mut buffer = [0u8; 16384];
        loop {
            match self.inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let mut read = 0;
                    for event in events {
                        read += 1;
                        self.handle(&event);
                    }
                    if read == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Read to the end even so: readiness is edge-triggered.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.handler.handle_event(Err(Error::io(e)));
                    break;
                }
            }
        }
        // Renamed away and not back in: moved out of the tree. Its watches go, as notify
        // removes them, or it would report under paths that are no longer there.
        for (_, node, id) in std::mem::take(&mut self.moving) {
            if self.tree.id(node) == Some(id) {
                self.drop_tree(node, true);
            }
        }
    }

    /// One kernel event: the notify events it makes (as notify's `handle_inotify`), then
    /// what it changes in the tree.
    fn handle(&mut self, event: &::inotify::Event<&OsStr>) {
        let mask = event.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            let rescan = Event::new(EventKind::Other).set_flag(Flag::Rescan);
            self.handler.handle_event(Ok(rescan));
            return;
        }
        let found = self.tree.find(event.wd.get_watch_descriptor_id());
        if mask.contains(EventMask::IGNORED) {
            // The kernel dropped this watch (its folder was deleted or unmounted, or we
            // removed it): the node goes, and the watches below it.
            if let Some(node) = found {
                self.drop_tree(node, false);
            }
            return;
        }
        let Some((dir, folder)) = found.and_then(|dir| Some((dir, self.tree.path(dir)?))) else {
            log::debug!("inotify event for an unknown watch: {event:?}");
            return;
        };
        let path = match event.name {
            Some(name) => folder.join(name),
            None => folder,
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        let cookie = event.cookie;
        let mut out = Vec::with_capacity(2);
        if mask.contains(EventMask::MOVED_FROM) {
            let from = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::From)))
                .add_path(path.clone())
                .set_tracker(cookie as usize);
            self.rename_from = Some((cookie, path.clone()));
            out.push(from);
        } else if mask.contains(EventMask::MOVED_TO) {
            out.push(
                Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::To)))
                    .set_tracker(cookie as usize)
                    .add_path(path.clone()),
            );
            if let Some((_, from)) = self.rename_from.take_if(|(c, _)| *c == cookie) {
                out.push(
                    Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
                        .set_tracker(cookie as usize)
                        .add_path(from)
                        .add_path(path.clone()),
                );
            }
        }
        if mask.contains(EventMask::MOVE_SELF) {
            out.push(
                Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::From)))
                    .add_path(path.clone()),
            );
        }
        if mask.contains(EventMask::CREATE) {
            let kind = if is_dir {
                CreateKind::Folder
            } else {
                CreateKind::File
            };
            out.push(Event::new(EventKind::Create(kind)).add_path(path.clone()));
        }
        if mask.contains(EventMask::DELETE) {
            let kind = if is_dir {
                RemoveKind::Folder
            } else {
                RemoveKind::File
            };
            out.push(Event::new(EventKind::Remove(kind)).add_path(path.clone()));
        }
        if mask.contains(EventMask::DELETE_SELF) {
            let kind = match self.tree.roots.iter().rfind(|r| r.node == dir) {
                Some(root) if root.is_dir => RemoveKind::Folder,
                Some(_) => RemoveKind::File,
                None => RemoveKind::Other,
            };
            out.push(Event::new(EventKind::Remove(kind)).add_path(path.clone()));
        }
        if mask.contains(EventMask::UNMOUNT) {
            out.push(
                Event::new(EventKind::Remove(RemoveKind::Other))
                    .add_path(path.clone())
                    .set_info("unmount"),
            );
        }
        if mask.contains(EventMask::MODIFY) {
            out.push(
                Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any)))
                    .add_path(path.clone()),
            );
        }
        if mask.contains(EventMask::CLOSE_WRITE) {
            out.push(
                Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                    .add_path(path.clone()),
            );
        }
        if mask.contains(EventMask::CLOSE_NOWRITE) {
            out.push(
                Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
                    .add_path(path.clone()),
            );
        }
        if mask.contains(EventMask::ATTRIB) {
            out.push(
                Event::new(EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)))
                    .add_path(path.clone()),
            );
        }
        if mask.contains(EventMask::OPEN) {
            out.push(
                Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)))
                    .add_path(path.clone()),
            );
        }
        for event in out {
            self.emit(event);
        }

        // What the event changes in the tree. (A deleted subfolder needs nothing here: its
        // own `IN_IGNORED` follows.)
        let name = event.name.map(OsStrExt::as_bytes);
        if mask.contains(EventMask::MOVED_FROM) {
            if let Some(child) = name
                .filter(|_| is_dir)
                .and_then(|n| self.tree.child(dir, n))
                && let Some(child_id) = self.tree.id(child)
            {
                self.moving.push((cookie, child, child_id));
            }
        } else if mask.contains(EventMask::MOVED_TO) && is_dir {
            let Some(name) = name else { return };
            let moved = self.moving.iter().position(|(c, _, _)| *c == cookie);
            match moved.map(|at| self.moving.swap_remove(at)) {
                // Renamed within the tree: the same watches, a new parent and name.
                Some((_, child, child_id))
                    if self.tree.id(child) == Some(child_id)
                        && !self.tree.is_within(dir, child) =>
                {
                    self.replace_child(dir, name, child);
                    self.tree.move_to(child, dir, name);
                }
                Some((_, child, child_id)) => {
                    if self.tree.id(child) == Some(child_id) {
                        self.drop_tree(child, true);
                    }
                    self.watch_new_folder(dir, name, &path, false);
                }
                None => self.watch_new_folder(dir, name, &path, false),
            }
        } else if mask.contains(EventMask::CREATE) && is_dir {
            if let Some(name) = name {
                self.watch_new_folder(dir, name, &path, true);
            }
        } else if mask.intersects(EventMask::DELETE_SELF | EventMask::UNMOUNT) {
            // The kernel already removed this watch; the ones below it may be live.
            self.drop_tree(dir, false);
        }
    }

    /// Watches a folder that appeared (created or moved in) under `parent`, and walks it.
    /// A walk started by a creation reports the subfolders it finds as created, as notify
    /// does; files written before the walk get no event (WATCHING.md: lost events).
    fn watch_new_folder(&mut self, parent: Slot, name: &[u8], path: &Path, created: bool) {
        let recursive = self
            .tree
            .roots
            .iter()
            .rfind(|r| r.node == parent)
            .is_none_or(|r| r.recursive);
        if self.walks_stopped || !recursive {
            return;
        }
        let mask = self.child_mask | WatchMask::MASK_ADD | WatchMask::ONLYDIR;
        let added = match self
            .inotify
            .watches()
            .add(path, mask | WatchMask::DONT_FOLLOW)
        {
            Ok(wd) => {
                let node = match self.tree.find(wd.get_watch_descriptor_id()) {
                    None => self.tree.insert(wd, parent, name),
                    Some(node) if self.tree.get(node).is_some_and(|n| n.parent == NONE) => return,
                    Some(node) if self.tree.is_within(parent, node) => return,
                    Some(node) => {
                        self.replace_child(parent, name, node);
                        self.tree.move_to(node, parent, name);
                        node
                    }
                };
                self.walk(node, created)
            }
            Err(e) => self.walk_failure(watch_error(e, path)),
        };
        if let Err(e) = added {
            // Only the watch limit stops a walk: every later folder would fail the same way.
            self.handler.handle_event(Err(e));
            self.walks_stopped = true;
        }
    }

    /// Drops a child of `parent` named `name` other than `keep`: a folder replaced by a
    /// rename over it, or a stale one whose `IN_IGNORED` was lost in an overflow. (A new
    /// folder is linked first among its siblings, so a stale namesake never shadows it.)
    fn replace_child(&mut self, parent: Slot, name: &[u8], keep: Slot) {
        if let Some(old) = self.tree.child(parent, name).filter(|&old| old != keep) {
            self.drop_tree(old, true);
        }
    }

    /// Watches every folder below node `top` (already watched), depth first, each one
    /// before its contents are read so nothing created meanwhile is missed. Errors that
    /// hide part of the tree go to the handler; the watch limit ends the walk with `Err`.
    fn walk(&mut self, top: Slot, report_created: bool) -> notify::Result<()> {
        let mask = self.child_mask | WatchMask::MASK_ADD | WatchMask::ONLYDIR;
        let mut watches = self.inotify.watches();
        let mut pending = vec![top];
        while let Some(dir) = pending.pop() {
            let Some(path) = self.tree.path(dir) else {
                continue;
            };
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) => {
                    self.walk_failure(Error::io_watch(e).add_path(path))?;
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        self.walk_failure(Error::io_watch(e).add_path(path.clone()))?;
                        continue;
                    }
                };
                let child = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => {}
                    Ok(_) => continue,
                    Err(e) => {
                        self.walk_failure(Error::io_watch(e).add_path(child))?;
                        continue;
                    }
                }
                let wd = match watches.add(&child, mask | WatchMask::DONT_FOLLOW) {
                    Ok(wd) => wd,
                    Err(e) => {
                        self.walk_failure(watch_error(e, &child))?;
                        continue;
                    }
                };
                let name = entry.file_name();
                let node = match self.tree.find(wd.get_watch_descriptor_id()) {
                    None => {
                        let node = self.tree.insert(wd, dir, name.as_bytes());
                        if report_created {
                            self.emit(
                                Event::new(EventKind::Create(CreateKind::Folder)).add_path(child),
                            );
                        }
                        node
                    }
                    // Another root: it watches its own tree.
                    Some(node) if self.tree.get(node).is_some_and(|n| n.parent == NONE) => {
                        continue;
                    }
                    // A bind mount of a folder above: descending would never end.
                    Some(node) if self.tree.is_within(dir, node) => continue,
                    Some(node) => {
                        self.tree.move_to(node, dir, name.as_bytes());
                        node
                    }
                };
                pending.push(node);
            }
        }
        Ok(())
    }

    /// What a failure during a walk means: gone meanwhile (skipped), the watch limit
    /// (`Err`: the walk ends), or anything else (reported, the walk goes on).
    fn walk_failure(&mut self, error: Error) -> notify::Result<()> {
        match &error.kind {
            ErrorKind::PathNotFound => Ok(()),
            // Replaced by a file or a link since it was listed.
            ErrorKind::Io(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(()),
            ErrorKind::MaxFilesWatch => Err(error),
            _ => {
                self.handler.handle_event(Err(error));
                Ok(())
            }
        }
    }

    /// Forgets node `id` and everything below it, removing their watches from the
    /// kernel (its own too with `remove_self`: not when the kernel already dropped it).
    fn drop_tree(&mut self, node: Slot, remove_self: bool) {
        let mut watches = self.inotify.watches();
        for (at, wd) in self.tree.remove_subtree(node).into_iter().enumerate() {
            if at == 0 && !remove_self {
                continue;
            }
            // EINVAL: the kernel dropped it already (deleted; its IN_IGNORED is queued).
            if let Err(e) = watches.remove(wd)
                && e.raw_os_error() != Some(libc::EINVAL)
            {
                log::debug!("cannot remove an inotify watch: {e}");
            }
        }
    }
}

/// The inotify events to ask for, for the event kinds asked for (notify's
/// `event_kind_mask_to_watch_mask` for a recursive watch).
fn watch_mask(kinds: EventKindMask) -> WatchMask {
    // New folders must be seen to be watched, whatever kinds are reported.
    let mut mask = WatchMask::CREATE | WatchMask::MOVED_TO;
    if kinds.intersects(EventKindMask::REMOVE) {
        mask |= WatchMask::DELETE | WatchMask::MOVED_FROM;
    }
    if kinds.intersects(EventKindMask::MODIFY_DATA) {
        mask |= WatchMask::MODIFY;
    }
    if kinds.intersects(EventKindMask::MODIFY_META) {
        mask |= WatchMask::ATTRIB;
    }
    if kinds.intersects(EventKindMask::MODIFY_NAME) {
        mask |= WatchMask::MOVE_SELF;
    }
    if kinds.intersects(EventKindMask::ACCESS_OPEN) {
        mask |= WatchMask::OPEN;
    }
    if kinds.intersects(EventKindMask::ACCESS_CLOSE) {
        mask |= WatchMask::CLOSE_WRITE;
    }
    if kinds.intersects(EventKindMask::ACCESS_CLOSE_NOWRITE) {
        mask |= WatchMask::CLOSE_NOWRITE;
    }
    // A folder renamed away must be seen to be re-linked or dropped.
    mask | WatchMask::MOVED_FROM
}

/// A failed `inotify_add_watch` as notify reports it, naming the path.
fn watch_error(e: io::Error, path: &Path) -> Error {
    let error = if e.raw_os_error() == Some(libc::ENOSPC) {
        // "No space left on device" is the watch limit, not the disk (notify #266).
        Error::new(ErrorKind::MaxFilesWatch)
    } else if e.kind() == io::ErrorKind::NotFound {
        Error::path_not_found()
    } else {
        Error::io(e)
    };
    error.add_path(path.to_path_buf())
}

/// A node's place in [`Tree`]'s slab.
type Slot = u32;

/// No node: a root's parent, the end of a list of children.
const NONE: Slot = Slot::MAX;

/// Nodes per slab chunk. Chunks are allocated whole and never move, so the slab grows
/// without the transient copy (and the up-to-half-empty tail) of a doubling `Vec`.
const CHUNK: usize = 4096;

/// One watched folder, or a free slot (`wd` is `None`). Roots have no parent and an
/// empty name: their path is in [`Tree::roots`]. 40 bytes.
struct Node {
    wd: Option<WatchDescriptor>,
    parent: Slot,
    first_child: Slot,
    next: Slot,
    prev: Slot,
    /// Where the name starts in [`Tree::names`].
    name_at: u32,
    name_len: u16,
}

/// A watched root, as given to `watch`.
struct Root {
    node: Slot,
    path: PathBuf,
    is_dir: bool,
    recursive: bool,
}

/// Every watched folder: a slab of [`Node`]s linked into trees, and an index from watch
/// descriptor to slot.
#[derive(Default)]
struct Tree {
    chunks: Vec<Vec<Node>>,
    /// Slots freed, for reuse.
    free: Vec<Slot>,
    /// Watch descriptor → slot: 5 bytes a bucket.
    by_wd: HashTable<Slot>,
    /// Every node's name, end to end; compacted when half of it is garbage.
    names: Vec<u8>,
    /// Bytes of `names` no node uses any more.
    garbage: usize,
    /// Several roots may share a node (the same folder by two paths): the last one
    /// added names it.
    roots: Vec<Root>,
}

/// Descriptors are small consecutive numbers: a Fibonacci multiply spreads them over the
/// low bits (the bucket) and the high bits (hashbrown's tag) alike.
fn hash(id: i32) -> u64 {
    u64::from(id as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The watch descriptor number in `slot` (0, which the kernel never gives, if free).
fn id_at(chunks: &[Vec<Node>], slot: Slot) -> i32 {
    let slot = slot as usize;
    chunks
        .get(slot / CHUNK)
        .and_then(|c| c.get(slot % CHUNK))
        .and_then(|n| n.wd.as_ref())
        .map_or(0, WatchDescriptor::get_watch_descriptor_id)
}

impl Tree {
    /// The live node in `slot`.
    fn get(&self, slot: Slot) -> Option<&Node> {
        let slot = slot as usize;
        let node = self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)?;
        node.wd.is_some().then_some(node)
    }

    fn get_mut(&mut self, slot: Slot) -> Option<&mut Node> {
        let slot = slot as usize;
        let node = self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)?;
        node.wd.is_some().then_some(node)
    }

    /// The slot of the folder watched as `id`.
    fn find(&self, id: i32) -> Option<Slot> {
        let chunks = &self.chunks;
        self.by_wd
            .find(hash(id), |&s| id_at(chunks, s) == id)
            .copied()
    }

    /// The watch descriptor number of the node in `slot`, if live.
    fn id(&self, slot: Slot) -> Option<i32> {
        Some(id_at(&self.chunks, slot)).filter(|&id| id != 0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_wd.len()
    }

    fn name(&self, node: &Node) -> &[u8] {
        &self.names[node.name_at as usize..][..usize::from(node.name_len)]
    }

    fn store_name(&mut self, name: &[u8]) -> (u32, u16) {
        // A name is at most NAME_MAX (255) bytes, and `names` holds at most twice the
        // live names: 4 GiB would take over 8 million watches of 255-byte names, at
        // ~1 KiB of kernel memory each, far past any `max_user_watches`.
        let at = self.names.len() as u32;
        self.names.extend_from_slice(name);
        (at, name.len() as u16)
    }

    fn insert(&mut self, wd: WatchDescriptor, parent: Slot, name: &[u8]) -> Slot {
        let id = wd.get_watch_descriptor_id();
        let (name_at, name_len) = self.store_name(name);
        let node = Node {
            wd: Some(wd),
            parent: NONE,
            first_child: NONE,
            next: NONE,
            prev: NONE,
            name_at,
            name_len,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let slot_at = slot as usize;
                self.chunks[slot_at / CHUNK][slot_at % CHUNK] = node;
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let last = self.chunks.len() - 1;
                let chunk = &mut self.chunks[last];
                chunk.push(node);
                // Fits: a slot per watch, and watches are counted in `i32`.
                (last * CHUNK + chunk.len() - 1) as Slot
            }
        };
        let chunks = &self.chunks;
        self.by_wd
            .insert_unique(hash(id), slot, |&s| hash(id_at(chunks, s)));
        if parent != NONE {
            self.link(slot, parent);
        }
        slot
    }

    /// Makes `slot` (unlinked) the first child of `parent`.
    fn link(&mut self, slot: Slot, parent: Slot) {
        let Some(head) = self.get(parent).map(|p| p.first_child) else {
            return;
        };
        if let Some(next) = self.get_mut(head) {
            next.prev = slot;
        }
        if let Some(node) = self.get_mut(slot) {
            node.parent = parent;
            node.next = head;
            node.prev = NONE;
        }
        if let Some(p) = self.get_mut(parent) {
            p.first_child = slot;
        }
    }

    /// Takes `slot` out of its parent's children; it keeps its own.
    fn unlink(&mut self, slot: Slot) {
        let Some(node) = self.get_mut(slot) else {
            return;
        };
        let (parent, prev, next) = (node.parent, node.prev, node.next);
        (node.parent, node.prev, node.next) = (NONE, NONE, NONE);
        if let Some(p) = self.get_mut(prev) {
            p.next = next;
        } else if let Some(p) = self.get_mut(parent) {
            p.first_child = next;
        }
        if let Some(n) = self.get_mut(next) {
            n.prev = prev;
        }
    }

    /// The child of `parent` named `name`. Linear in the folder's subfolders: only a
    /// folder renamed away needs it.
    fn child(&self, parent: Slot, name: &[u8]) -> Option<Slot> {
        let mut at = self.get(parent)?.first_child;
        while let Some(node) = self.get(at) {
            if self.name(node) == name {
                return Some(at);
            }
            at = node.next;
        }
        None
    }

    /// Re-links `slot` as `name` under `parent`.
    fn move_to(&mut self, slot: Slot, parent: Slot, name: &[u8]) {
        let Some(node) = self.get(slot) else { return };
        if node.parent == parent && self.name(node) == name {
            return;
        }
        let old_len = usize::from(node.name_len);
        self.unlink(slot);
        let (name_at, name_len) = self.store_name(name);
        if let Some(node) = self.get_mut(slot) {
            (node.name_at, node.name_len) = (name_at, name_len);
        }
        self.garbage += old_len;
        self.link(slot, parent);
        self.compact_if_sparse();
    }

    /// Whether `slot` is `ancestor` or below it.
    fn is_within(&self, mut slot: Slot, ancestor: Slot) -> bool {
        for _ in 0..MAX_DEPTH {
            if slot == ancestor {
                return true;
            }
            match self.get(slot) {
                Some(node) if node.parent != NONE => slot = node.parent,
                _ => return false,
            }
        }
        false
    }

    /// The path of folder `slot`: its root's path and the names on the way down.
    fn path(&self, slot: Slot) -> Option<PathBuf> {
        let mut names: Vec<&Node> = Vec::new();
        let mut at = slot;
        let root = loop {
            let node = self.get(at)?;
            if node.parent == NONE {
                break self.roots.iter().rfind(|r| r.node == at)?;
            }
            if names.len() == MAX_DEPTH {
                return None;
            }
            names.push(node);
            at = node.parent;
        };
        let len = root.path.as_os_str().len()
            + names
                .iter()
                .map(|n| usize::from(n.name_len) + 1)
                .sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(&root.path);
        for node in names.iter().rev() {
            path.push(OsStr::from_bytes(self.name(node)));
        }
        Some(path)
    }

    /// Removes `slot` and every node below it (and its root entries); returns their
    /// descriptors, `slot`'s first.
    fn remove_subtree(&mut self, slot: Slot) -> Vec<WatchDescriptor> {
        if self.get(slot).is_none() {
            return Vec::new();
        }
        self.unlink(slot);
        self.roots.retain(|r| r.node != slot);
        let mut removed = Vec::new();
        let mut pending = vec![slot];
        while let Some(at) = pending.pop() {
            let Some(node) = self.get_mut(at) else {
                continue;
            };
            let Some(wd) = node.wd.take() else { continue };
            let (mut child, name_len) = (node.first_child, node.name_len);
            let id = wd.get_watch_descriptor_id();
            if let Ok(entry) = self.by_wd.find_entry(hash(id), |&s| s == at) {
                entry.remove();
            }
            self.free.push(at);
            while let Some(c) = self.get(child) {
                pending.push(child);
                child = c.next;
            }
            self.garbage += usize::from(name_len);
            removed.push(wd);
        }
        if self.by_wd.is_empty() {
            // Nothing watched: give everything back.
            *self = Tree {
                roots: std::mem::take(&mut self.roots),
                ..Tree::default()
            };
        } else if self.by_wd.capacity() > 1024 && self.by_wd.len() < self.by_wd.capacity() / 4 {
            let chunks = &self.chunks;
            self.by_wd.shrink_to_fit(|&s| hash(id_at(chunks, s)));
        }
        self.compact_if_sparse();
        removed
    }

    /// Rewrites `names` without garbage once it is at least half of it.
    fn compact_if_sparse(&mut self) {
        if self.garbage < 4096 || self.garbage * 2 < self.names.len() {
            return;
        }
        let mut names = Vec::with_capacity(self.names.len() - self.garbage);
        for node in self.chunks.iter_mut().flatten().filter(|n| n.wd.is_some()) {
            let at = node.name_at as usize;
            let name = &self.names[at..at + usize::from(node.name_len)];
            // Fits: smaller than the `names` it comes from (see `store_name`).
            node.name_at = names.len() as u32;
            names.extend_from_slice(name);
        }
        self.names = names;
        self.garbage = 0;
    }

    /// Bytes of heap the tree holds (slab, index, free list and names).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity()).sum::<usize>() * std::mem::size_of::<Node>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Node>>()
            + self.free.capacity() * std::mem::size_of::<Slot>()
            + self.by_wd.allocation_size()
            + self.names.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A watcher on a fresh temp folder, and what it reports.
    struct Env {
        dir: tempfile::TempDir,
        root: PathBuf,
        watcher: InotifyWatcher,
        rx: mpsc::Receiver<notify::Result<Event>>,
        seen: Vec<Event>,
        markers: usize,
    }

    impl Env {
        fn new(prepare: impl FnOnce(&Path)) -> Env {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            fs::create_dir(&root).unwrap();
            prepare(&root);
            let (tx, rx) = mpsc::channel();
            let config = Config::default()
                .with_follow_symlinks(false)
                .with_event_kinds(EventKindMask::CORE);
            let mut watcher = InotifyWatcher::new(
                move |e| {
                    let _ = tx.send(e);
                },
                config,
            )
            .unwrap();
            watcher.watch(&root, RecursiveMode::Recursive).unwrap();
            Env {
                dir,
                root,
                watcher,
                rx,
                seen: Vec::new(),
                markers: 0,
            }
        }

        fn at(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// Waits (with a deadline) until an event of `kind` on `paths` is seen.
        fn expect(&mut self, kind: EventKind, paths: &[PathBuf]) -> Event {
            let end = Instant::now() + DEADLINE;
            loop {
                if let Some(e) = self
                    .seen
                    .iter()
                    .find(|e| e.kind == kind && e.paths == paths)
                {
                    return e.clone();
                }
                let left = end.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(Ok(e)) => self.seen.push(e),
                    Ok(Err(e)) => panic!("watcher error: {e:?}"),
                    Err(_) => panic!("no {kind:?} {paths:?}; saw {:#?}", self.seen),
                }
            }
        }

        /// Writes a marker file in the root and waits for it: everything queued before
        /// it has been handled, walks of new folders included.
        fn settle(&mut self) {
            self.markers += 1;
            let marker = self.at(&format!("marker-{}", self.markers));
            fs::write(&marker, b"m").unwrap();
            self.expect(EventKind::Create(CreateKind::File), &[marker]);
        }

        fn nodes(&self) -> usize {
            self.watcher.lock().tree.len()
        }
    }

    fn data() -> EventKind {
        EventKind::Modify(ModifyKind::Data(DataChange::Any))
    }

    fn name(mode: RenameMode) -> EventKind {
        EventKind::Modify(ModifyKind::Name(mode))
    }

    #[test]
    fn files_and_folders_inside_the_tree() {
        let mut env = Env::new(|root| fs::create_dir(root.join("old")).unwrap());
        let file = env.at("f");
        fs::write(&file, b"x").unwrap();
        env.expect(
            EventKind::Create(CreateKind::File),
            std::slice::from_ref(&file),
        );
        env.expect(data(), std::slice::from_ref(&file));
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        env.expect(
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            std::slice::from_ref(&file),
        );
        let moved = env.at("g");
        fs::rename(&file, &moved).unwrap();
        let from = env.expect(name(RenameMode::From), std::slice::from_ref(&file));
        let to = env.expect(name(RenameMode::To), std::slice::from_ref(&moved));
        let both = env.expect(name(RenameMode::Both), &[file.clone(), moved.clone()]);
        assert!(from.tracker().is_some());
        assert_eq!(from.tracker(), to.tracker());
        assert_eq!(from.tracker(), both.tracker());
        fs::remove_file(&moved).unwrap();
        env.expect(EventKind::Remove(RemoveKind::File), &[moved]);
        fs::create_dir(env.at("new")).unwrap();
        env.expect(EventKind::Create(CreateKind::Folder), &[env.at("new")]);
        assert_eq!(env.nodes(), 3);
        fs::remove_dir(env.at("old")).unwrap();
        env.expect(EventKind::Remove(RemoveKind::Folder), &[env.at("old")]);
        env.settle();
        assert_eq!(env.nodes(), 2, "the deleted folder's node is dropped");
    }

    #[test]
    fn a_nested_folder_created_then_written_into() {
        let mut env = Env::new(|_| {});
        let deep = env.at("a/b/c");
        fs::create_dir_all(&deep).unwrap();
        // Each level is either seen by the watch above it or found by the walk of a new
        // folder (and reported as created): both say `Create(Folder)`.
        for rel in ["a", "a/b", "a/b/c"] {
            env.expect(EventKind::Create(CreateKind::Folder), &[env.at(rel)]);
        }
        env.settle();
        let file = deep.join("f");
        fs::write(&file, b"x").unwrap();
        env.expect(EventKind::Create(CreateKind::File), &[file]);
        assert_eq!(env.nodes(), 4);
    }

    #[test]
    fn a_folder_moved_within_the_tree_keeps_its_watch_under_its_new_path() {
        let mut env = Env::new(|root| {
            fs::create_dir_all(root.join("d1/sub/deeper")).unwrap();
            fs::create_dir(root.join("d2")).unwrap();
        });
        let watches = env.nodes();
        let (from, to) = (env.at("d1/sub"), env.at("d2/sub2"));
        fs::rename(&from, &to).unwrap();
        env.expect(name(RenameMode::Both), &[from, to.clone()]);
        let file = to.join("deeper/f");
        fs::write(&file, b"x").unwrap();
        env.expect(EventKind::Create(CreateKind::File), &[file]);
        assert_eq!(env.nodes(), watches, "the same watches, re-linked");
        // And the old name is free for a new folder.
        fs::create_dir(env.at("d1/sub")).unwrap();
        let file = env.at("d1/sub/g");
        env.expect(EventKind::Create(CreateKind::Folder), &[env.at("d1/sub")]);
        env.settle();
        fs::write(&file, b"x").unwrap();
        env.expect(EventKind::Create(CreateKind::File), &[file]);
    }

    #[test]
    fn moves_into_and_out_of_the_tree() {
        let mut env = Env::new(|root| fs::create_dir_all(root.join("leaving/inner")).unwrap());
        let outside = env.dir.path().join("outside");
        fs::create_dir_all(outside.join("inner")).unwrap();
        // In: `Name(To)` only, and the folder is watched down to the bottom.
        let arrived = env.at("arrived");
        fs::rename(&outside, &arrived).unwrap();
        env.expect(name(RenameMode::To), std::slice::from_ref(&arrived));
        // The event goes out before the walk that follows it: wait for the walk.
        env.settle();
        let file = arrived.join("inner/f");
        fs::write(&file, b"x").unwrap();
        env.expect(EventKind::Create(CreateKind::File), &[file]);
        // Out: `Name(From)` only, and nothing more from it.
        let gone = env.dir.path().join("gone");
        fs::rename(env.at("leaving"), &gone).unwrap();
        env.expect(name(RenameMode::From), &[env.at("leaving")]);
        env.settle();
        fs::write(gone.join("inner/f"), b"x").unwrap();
        env.settle();
        let leaked: Vec<_> = env
            .seen
            .iter()
            .filter(|e| e.paths.iter().any(|p| p.starts_with(env.at("leaving"))))
            .filter(|e| e.kind != name(RenameMode::From))
            .collect();
        assert!(leaked.is_empty(), "{leaked:?}");
        assert!(
            !env.seen.iter().any(|e| e.kind == name(RenameMode::Both)),
            "no pair for a move across the tree's edge: {:#?}",
            env.seen
        );
        assert_eq!(env.nodes(), 3, "root, arrived, arrived/inner");
    }

    #[test]
    fn unwatch_removes_the_roots_watches() {
        let mut env = Env::new(|root| fs::create_dir(root.join("sub")).unwrap());
        let root = env.root.clone();
        env.watcher.unwatch(&root).unwrap();
        assert_eq!(env.nodes(), 0);
        assert!(env.watcher.unwatch(&root).is_err());
        fs::write(root.join("sub/f"), b"x").unwrap();
        // Watch a second root and see its event: anything from the first came before.
        let other = env.dir.path().join("other");
        fs::create_dir(&other).unwrap();
        env.watcher.watch(&other, RecursiveMode::Recursive).unwrap();
        fs::write(other.join("f"), b"x").unwrap();
        env.expect(EventKind::Create(CreateKind::File), &[other.join("f")]);
        assert!(
            env.seen.iter().all(|e| !e.paths[0].starts_with(&root)),
            "{:#?}",
            env.seen
        );
    }

    #[test]
    fn a_deleted_root_is_a_removed_folder() {
        let mut env = Env::new(|root| fs::create_dir(root.join("sub")).unwrap());
        let root = env.root.clone();
        fs::remove_dir_all(&root).unwrap();
        env.expect(EventKind::Remove(RemoveKind::Folder), &[root]);
        let end = Instant::now() + DEADLINE;
        while env.nodes() > 0 && Instant::now() < end {
            std::thread::yield_now();
        }
        assert_eq!(env.nodes(), 0);
    }

    #[test]
    fn a_missing_root_is_path_not_found() {
        let mut env = Env::new(|_| {});
        let missing = env.dir.path().join("missing");
        let error = env
            .watcher
            .watch(&missing, RecursiveMode::Recursive)
            .unwrap_err();
        assert!(matches!(error.kind, ErrorKind::PathNotFound), "{error:?}");
        assert_eq!(error.paths, [missing]);
    }

    /// The kernel queue overflows while the reader is held up: the watcher says
    /// `Rescan`.
    #[test]
    fn a_queue_overflow_asks_for_a_rescan() {
        let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        if max > 100_000 {
            eprintln!("skipping: max_queued_events is {max}");
            return;
        }
        let mut env = Env::new(|_| {});
        {
            let _held = env.watcher.lock();
            for i in 0..=max {
                fs::File::create(env.root.join(i.to_string())).unwrap();
            }
        }
        let end = Instant::now() + DEADLINE;
        while !env.seen.iter().any(Event::need_rescan) {
            let left = end.saturating_duration_since(Instant::now());
            match env.rx.recv_timeout(left) {
                Ok(Ok(e)) => env.seen.push(e),
                Ok(Err(e)) => panic!("watcher error: {e:?}"),
                Err(_) => panic!("no rescan after {} events", env.seen.len()),
            }
        }
    }

    /// The point of this watcher: a few dozen bytes per folder.
    #[test]
    fn a_watched_folder_costs_under_80_bytes() {
        let env = Env::new(|root| {
            for i in 0..3000 {
                fs::create_dir_all(root.join(format!("dir-{}/sub-{i:05}", i % 30))).unwrap();
            }
        });
        let state = env.watcher.lock();
        let nodes = state.tree.len();
        assert_eq!(nodes, 3031);
        let per = state.tree.heap_bytes() / nodes;
        assert!(per <= 80, "{per} bytes per folder");
        eprintln!("{per} bytes per folder");
    }

    #[test]
    fn names_are_compacted_as_folders_come_and_go() {
        let mut tree = Tree::default();
        let inotify = Inotify::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wd = inotify
            .watches()
            .add(dir.path(), WatchMask::CREATE)
            .unwrap();
        let root = tree.insert(wd, NONE, b"");
        tree.roots.push(Root {
            node: root,
            path: dir.path().to_path_buf(),
            is_dir: true,
            recursive: true,
        });
        let mut ids = Vec::new();
        for i in 0..200 {
            let sub = dir.path().join(format!("{i:0>100}"));
            fs::create_dir(&sub).unwrap();
            let wd = inotify.watches().add(&sub, WatchMask::CREATE).unwrap();
            ids.push(tree.insert(wd, root, sub.file_name().unwrap().as_bytes()));
        }
        for &id in &ids[..150] {
            tree.remove_subtree(id);
        }
        assert!(tree.names.len() < 150 * 100, "{}", tree.names.len());
        for (i, &id) in ids.iter().enumerate().skip(150) {
            assert_eq!(tree.path(id), Some(dir.path().join(format!("{i:0>100}"))));
        }
    }
}

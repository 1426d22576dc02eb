//! A store held in memory: deterministic (no clock, no other process, no file system
//! underneath), so the engine's own unit tests can drive the executor through the seam
//! and look at exactly what it left, as hyperfine tests its scheduler through a mock
//! executor. It keeps the rules a real store keeps and the engine relies on: a name is
//! reached only through real folders (a symlink on the way is `NotADirectory`, never
//! followed), `rename` replaces a file or an empty folder but not a full one, hard
//! links share one content and its metadata, temp files live in the layout's temp
//! folder until installed.
//!
//! It is not a product store: nothing is persisted, and the behaviour tests keep
//! driving the real binary on real folders.

use super::{Caps, Listed, PrepareError, ReadFile, Reader, Staged, Stat, Store, TempFile, layout};
use crate::model::Kind;
use filetime::FileTime;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What an inode holds.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    data: Vec<u8>,
    mode: u32,
    mtime: FileTime,
    target: PathBuf,
}

impl Node {
    /// An empty folder, as a new store's root and `prepare`'s state folders are.
    fn folder() -> Node {
        Node {
            kind: Kind::Dir,
            data: Vec::new(),
            mode: 0o755,
            mtime: FileTime::zero(),
            target: PathBuf::new(),
        }
    }
}

/// Names and inodes, behind the store's lock.
#[derive(Debug, Default)]
struct State {
    /// Every name (the root is the empty name) and its inode.
    names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Node>,
    next_ino: u64,
    next_tmp: u64,
    /// A writer holds the store (as the one-writer lock would say).
    locked: bool,
    /// Barriers asked for (each would be one `syncfs`).
    barriers: u64,
}

/// A store in memory. Clones share the same content (as two handles on one folder);
/// only the handle that prepared it holds its lock.
#[derive(Debug)]
pub struct Memory {
    state: Arc<Mutex<State>>,
    caps: Caps,
    /// This handle took the lock.
    holds_lock: bool,
}

impl Clone for Memory {
    fn clone(&self) -> Memory {
        Memory {
            state: self.state.clone(),
            caps: self.caps,
            holds_lock: false,
        }
    }
}

impl Default for Memory {
    fn default() -> Memory {
        Memory::new()
    }
}

fn err(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_string())
}

impl State {
    fn node(&self, name: &Path) -> Option<&Node> {
        self.inodes.get(self.names.get(name)?)
    }

    fn kind(&self, name: &Path) -> Option<Kind> {
        self.node(name).map(|n| n.kind)
    }

    /// Every folder above `name` must be a real folder.
    fn reach(&self, name: &Path) -> io::Result<()> {
        if name
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        }
        for above in name.ancestors().skip(1) {
            match self.kind(above) {
                Some(Kind::Dir) => {}
                Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a folder")),
                None => return Err(err(io::ErrorKind::NotFound, "no such file or folder")),
            }
        }
        Ok(())
    }

    fn links(&self, ino: u64) -> u64 {
        self.names.values().filter(|i| **i == ino).count() as u64
    }

    fn stat(&self, name: &Path) -> Option<Stat> {
        let ino = *self.names.get(name)?;
        let node = self.inodes.get(&ino)?;
        Some(Stat {
            kind: node.kind,
            size: match node.kind {
                Kind::Symlink => node.target.as_os_str().len() as u64,
                _ => node.data.len() as u64,
            },
            mtime: node.mtime,
            mode: node.mode,
            ino,
            links: self.links(ino),
            owner: None,
        })
    }

    /// Adds `name` as a new inode; the folder above must be reachable and the name free.
    fn create(&mut self, name: &Path, node: Node) -> io::Result<u64> {
        self.reach(name)?;
        if self.names.contains_key(name) {
            return Err(err(io::ErrorKind::AlreadyExists, "the name is taken"));
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(ino, node);
        self.names.insert(name.to_path_buf(), ino);
        Ok(ino)
    }

    /// Removes one name; the inode goes with its last name.
    fn unlink(&mut self, name: &Path) {
        if let Some(ino) = self.names.remove(name)
            && self.links(ino) == 0
        {
            self.inodes.remove(&ino);
        }
    }

    /// The names strictly below the folder `dir`.
    fn below(&self, dir: &Path) -> Vec<PathBuf> {
        self.names
            .keys()
            .filter(|n| n.as_path() != dir && n.starts_with(dir))
            .cloned()
            .collect()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.reach(from)?;
        self.reach(to)?;
        let Some(kind) = self.kind(from) else {
            return Err(err(io::ErrorKind::NotFound, "no such file or folder"));
        };
        if from == to {
            return Ok(());
        }
        if kind != Kind::Dir && self.names.get(from) == self.names.get(to) {
            // rename(2) between two names of one file does nothing (POSIX): both stay.
            return Ok(());
        }
        if kind == Kind::Dir && to.starts_with(from) {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "a folder cannot go inside itself",
            ));
        }
        match self.kind(to) {
            Some(Kind::Dir) if kind != Kind::Dir => {
                return Err(err(io::ErrorKind::IsADirectory, "a folder is in the way"));
            }
            Some(Kind::Dir) if !self.below(to).is_empty() => {
                return Err(err(
                    io::ErrorKind::DirectoryNotEmpty,
                    "the folder is not empty",
                ));
            }
            Some(found) if found != Kind::Dir && kind == Kind::Dir => {
                return Err(err(io::ErrorKind::NotADirectory, "not a folder"));
            }
            Some(_) => self.unlink(to),
            None => {}
        }
        let moving: Vec<PathBuf> = std::iter::once(from.to_path_buf())
            .chain(self.below(from))
            .collect();
        for old in moving {
            let Ok(rest) = old.strip_prefix(from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            if let Some(ino) = self.names.remove(&old) {
                self.names.insert(new, ino);
            }
        }
        Ok(())
    }
}

impl Memory {
    /// An empty store (only its root folder), with the capabilities of a local disk.
    pub fn new() -> Memory {
        let mut state = State {
            next_ino: 1,
            ..State::default()
        };
        state.names.insert(PathBuf::new(), 1);
        state.inodes.insert(1, Node::folder());
        Memory {
            state: Arc::new(Mutex::new(state)),
            caps: Caps {
                hard_links: true,
                atomic_rename: true,
                posix_meta: true,
                symlinks: true,
                server_side_copy: false,
                fsync: true,
                nanosecond_mtimes: true,
                cheap_listing: true,
                owners: false,
                xattrs: false,
            },
            holds_lock: false,
        }
    }

    /// The same store claiming other capabilities (a store without hard links, say).
    pub fn with_caps(mut self, caps: Caps) -> Memory {
        self.caps = caps;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every name the store holds (not the root), sorted, with its kind.
    pub fn names(&self) -> Vec<(PathBuf, Kind)> {
        let state = self.state();
        state
            .names
            .keys()
            .filter(|n| !n.as_os_str().is_empty())
            .filter_map(|n| Some((n.clone(), state.kind(n)?)))
            .collect()
    }

    /// The bytes of the file `name`, if it is one.
    pub fn read(&self, name: &Path) -> Option<Vec<u8>> {
        let state = self.state();
        state
            .node(name)
            .filter(|n| n.kind == Kind::File)
            .map(|n| n.data.clone())
    }

    /// Puts a file at `name` with `data` (its folders must exist): for setting up a
    /// test.
    pub fn put_file(&self, name: &Path, data: &[u8], mtime: FileTime) -> io::Result<()> {
        self.state()
            .create(
                name,
                Node {
                    kind: Kind::File,
                    data: data.to_vec(),
                    mode: 0o644,
                    mtime,
                    target: PathBuf::new(),
                },
            )
            .map(drop)
    }

    /// How many barriers were asked for.
    pub fn barriers(&self) -> u64 {
        self.state().barriers
    }

    fn staged(&self, kind: Kind, target: &Path, mtime: FileTime) -> io::Result<MemoryTemp> {
        let mut state = self.state();
        if state.kind(&layout::tmp()) != Some(Kind::Dir) {
            return Err(err(io::ErrorKind::NotFound, "the temp folder is gone"));
        }
        state.next_tmp += 1;
        let name = layout::tmp().join(format!("{}.tmp", state.next_tmp));
        let mode = if kind == Kind::File { 0o600 } else { 0o777 };
        state.create(
            &name,
            Node {
                kind,
                data: Vec::new(),
                mode,
                mtime,
                target: target.to_path_buf(),
            },
        )?;
        Ok(MemoryTemp {
            store: self.clone(),
            name: Some(name),
        })
    }
}

/// An open file's content, as read from the store.
struct MemoryFile {
    bytes: Cursor<Vec<u8>>,
    stat: Stat,
}

impl Read for MemoryFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bytes.read(buf)
    }
}

impl Seek for MemoryFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.bytes.seek(pos)
    }
}

impl ReadFile for MemoryFile {
    fn stat(&self) -> io::Result<Stat> {
        Ok(self.stat)
    }
}

impl Reader for Memory {
    fn caps(&self) -> Caps {
        self.caps
    }

    fn display(&self, name: &Path) -> PathBuf {
        Path::new("memory:").join(name)
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        let state = self.state();
        match state.reach(name) {
            Ok(()) => Ok(state.stat(name)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(e),
            Err(_) => Ok(None),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let state = self.state();
        state.reach(dir)?;
        match state.kind(dir) {
            Some(Kind::Dir) => {}
            Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a folder")),
            None => return Err(err(io::ErrorKind::NotFound, "no such folder")),
        }
        Ok(state
            .names
            .keys()
            .filter(|n| !n.as_os_str().is_empty() && n.parent() == Some(dir))
            .filter_map(|n| {
                Some(Listed {
                    name: n.clone(),
                    kind: state.kind(n)?,
                })
            })
            .collect())
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        let state = self.state();
        state.reach(name)?;
        let stat = state
            .stat(name)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file"))?;
        let node = state
            .node(name)
            .filter(|n| n.kind == Kind::File)
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "it is not a regular file"))?;
        Ok(Box::new(MemoryFile {
            bytes: Cursor::new(node.data.clone()),
            stat,
        }))
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        let state = self.state();
        state.reach(name)?;
        state
            .node(name)
            .filter(|n| n.kind == Kind::Symlink)
            .map(|n| n.target.clone())
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "not a symlink"))
    }

    fn index_file(&self) -> PathBuf {
        self.display(&layout::index())
    }
}

impl Store for Memory {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        let shown = |name: &Path| self.display(name).display().to_string();
        let mut state = self.state();
        for folder in [layout::state().to_path_buf(), layout::tmp()] {
            match state.kind(&folder) {
                Some(Kind::Dir) => {}
                Some(_) => {
                    return Err(PrepareError::Unwritable(format!(
                        "{} is not a folder; move it out of the way and run again",
                        shown(&folder)
                    )));
                }
                None => {
                    state
                        .create(&folder, Node::folder())
                        .map_err(|e| PrepareError::Unwritable(e.to_string()))?;
                }
            }
        }
        if state.locked {
            return Err(PrepareError::Locked(format!(
                "another datasafe process is writing the mirror in {}; stop it first, or \
                 wait until it is done",
                shown(Path::new(""))
            )));
        }
        state.locked = true;
        for leftover in state.below(&layout::tmp()) {
            state.unlink(&leftover);
        }
        drop(state);
        self.holds_lock = true;
        Ok(())
    }

    fn ready(&self) -> bool {
        self.holds_lock && self.state().kind(&layout::tmp()) == Some(Kind::Dir)
    }

    fn temp_file(&self) -> io::Result<Box<dyn TempFile>> {
        Ok(Box::new(self.staged(
            Kind::File,
            Path::new(""),
            FileTime::zero(),
        )?))
    }

    fn temp_symlink(&self, target: &Path, mtime: FileTime) -> io::Result<Box<dyn Staged>> {
        Ok(Box::new(self.staged(Kind::Symlink, target, mtime)?))
    }

    fn mkdir(&self, name: &Path) -> io::Result<()> {
        self.state().create(name, Node::folder()).map(drop)
    }

    fn symlink(&self, target: &Path, name: &Path) -> io::Result<()> {
        self.state()
            .create(
                name,
                Node {
                    kind: Kind::Symlink,
                    data: Vec::new(),
                    mode: 0o777,
                    mtime: FileTime::zero(),
                    target: target.to_path_buf(),
                },
            )
            .map(drop)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.caps.hard_links {
            return Err(err(io::ErrorKind::Unsupported, "no hard links here"));
        }
        let mut state = self.state();
        state.reach(from)?;
        state.reach(to)?;
        let ino = *state
            .names
            .get(from)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file"))?;
        if state.kind(from) == Some(Kind::Dir) {
            return Err(err(
                io::ErrorKind::PermissionDenied,
                "a folder has one name",
            ));
        }
        if state.names.contains_key(to) {
            return Err(err(io::ErrorKind::AlreadyExists, "the name is taken"));
        }
        state.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state().rename(from, to)
    }

    fn remove_file(&self, name: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.reach(name)?;
        match state.kind(name) {
            None => Err(err(io::ErrorKind::NotFound, "no such file")),
            Some(Kind::Dir) => Err(err(io::ErrorKind::IsADirectory, "it is a folder")),
            Some(_) => {
                state.unlink(name);
                Ok(())
            }
        }
    }

    fn remove_dir(&self, name: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.reach(name)?;
        match state.kind(name) {
            None => Err(err(io::ErrorKind::NotFound, "no such folder")),
            Some(Kind::Dir) if name.as_os_str().is_empty() => {
                Err(err(io::ErrorKind::InvalidInput, "the root stays"))
            }
            Some(Kind::Dir) if state.below(name).is_empty() => {
                state.unlink(name);
                Ok(())
            }
            Some(Kind::Dir) => Err(err(io::ErrorKind::DirectoryNotEmpty, "not empty")),
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a folder")),
        }
    }

    fn remove_tree(&self, name: &Path) -> io::Result<()> {
        let mut state = self.state();
        match state.reach(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        match state.kind(name) {
            None => Ok(()),
            Some(Kind::Dir) => {
                for inner in state.below(name) {
                    state.unlink(&inner);
                }
                state.unlink(name);
                Ok(())
            }
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a folder")),
        }
    }

    fn set_meta(
        &self,
        name: &Path,
        kind: Kind,
        mode: u32,
        mtime: FileTime,
    ) -> io::Result<Option<Stat>> {
        let mut state = self.state();
        if state.reach(name).is_err() || state.kind(name) != Some(kind) {
            return Ok(None);
        }
        let Some(ino) = state.names.get(name).copied() else {
            return Ok(None);
        };
        if let Some(node) = state.inodes.get_mut(&ino) {
            node.mode = mode;
            node.mtime = mtime;
        }
        Ok(state.stat(name))
    }

    fn barrier(&self) -> io::Result<()> {
        self.state().barriers += 1;
        Ok(())
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // The lock goes with the handle that took it, as a closed lock file's would.
        if self.holds_lock {
            self.state().locked = false;
        }
    }
}

/// A temp file or symlink in a memory store's temp folder.
struct MemoryTemp {
    /// A handle on the store that does not hold its lock.
    store: Memory,
    /// Its name while staged; `None` once installed.
    name: Option<PathBuf>,
}

impl MemoryTemp {
    fn staged_name(&self) -> io::Result<&Path> {
        self.name
            .as_deref()
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "already installed"))
    }
}

impl Staged for MemoryTemp {
    fn stat(&self) -> io::Result<Stat> {
        let name = self.staged_name()?;
        self.store
            .state()
            .stat(name)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "the temp file is gone"))
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        self.store.stat(name)
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        let staged = self.staged_name()?.to_path_buf();
        self.store.state().rename(&staged, name)?;
        self.name = None;
        Ok(())
    }
}

impl Write for MemoryTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let name = self.staged_name()?.to_path_buf();
        let mut state = self.store.state();
        let ino = *state
            .names
            .get(&name)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "the temp file is gone"))?;
        match state.inodes.get_mut(&ino) {
            Some(node) if node.kind == Kind::File => node.data.extend_from_slice(buf),
            _ => return Err(err(io::ErrorKind::InvalidInput, "a symlink holds no bytes")),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TempFile for MemoryTemp {
    fn set_meta(&mut self, mode: u32, mtime: FileTime) -> io::Result<()> {
        let name = self.staged_name()?.to_path_buf();
        let mut state = self.store.state();
        let ino = *state
            .names
            .get(&name)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "the temp file is gone"))?;
        if let Some(node) = state.inodes.get_mut(&ino) {
            node.mode = mode;
            node.mtime = mtime;
        }
        Ok(())
    }
}

impl Drop for MemoryTemp {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.store.state().unlink(&name);
        }
    }
}

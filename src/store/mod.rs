//! The destination seam: every byte that reaches a mirror, and every look at one, goes
//! through a store. [`Reader`] is what the read side (history, restore, verify,
//! versions, archive) and the engine's listing need; the write side builds on it.
//! [`Caps`] says what a store can do, so the engine picks a strategy and never guesses.
//! `local` is a folder on this machine, reached only through directory handles;
//! `layout` names datasafe's own state inside any store; `versions` is the naming
//! contract of kept versions.
//!
//! Names given to a store are plain relative paths (`a/b.txt.gz`), relative to the
//! mirror's root; the empty name is the root itself. A store never follows a symlink
//! inside the mirror: a link is a name like any other, never a way to somewhere else.

pub mod layout;
pub mod local;
pub mod versions;

use crate::model::{Kind, Meta, OnDisk};
use filetime::FileTime;
use std::io;
use std::path::{Path, PathBuf};

/// What a store can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// A second name for a file costs no bytes: versions are kept by hard link.
    pub hard_links: bool,
    /// A rename replaces its target in one step, so a final name is never missing.
    pub atomic_rename: bool,
    /// Permission bits and nanosecond mtimes are kept on the stored names themselves.
    pub posix_meta: bool,
    /// Symlinks are stored as symlinks.
    pub symlinks: bool,
    /// A file can be copied inside the store without its bytes passing through here.
    pub server_side_copy: bool,
    /// Writes can be made durable before the index records them.
    pub fsync: bool,
}

/// What a name in a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// File, folder, symlink or something else.
    pub kind: Kind,
    /// Bytes stored (the gzip stream's size for a gzipped file).
    pub size: u64,
    /// Modification time with nanoseconds.
    pub mtime: FileTime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Inode number, where the store has one (else 0).
    pub ino: u64,
}

impl Stat {
    /// Size, mtime and mode as the planner compares them.
    pub fn meta(&self) -> Meta {
        Meta {
            size: self.size,
            mtime: self.mtime,
            mode: self.mode,
        }
    }

    /// What the index records about a stored file right after writing it.
    pub fn on_disk(&self) -> OnDisk {
        OnDisk {
            size: self.size,
            ino: self.ino,
        }
    }
}

impl From<local::beneath::Status> for Stat {
    fn from(s: local::beneath::Status) -> Stat {
        Stat {
            kind: s.kind,
            size: s.size,
            mtime: s.mtime,
            mode: s.mode,
            ino: s.ino,
        }
    }
}

/// One name a listing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The name, relative to the store's root.
    pub name: PathBuf,
    /// What it is.
    pub kind: Kind,
}

/// A stored file open for reading.
pub trait ReadFile: io::Read + io::Seek + Send {
    /// What the open file is now.
    fn stat(&self) -> io::Result<Stat>;
}

impl ReadFile for std::fs::File {
    fn stat(&self) -> io::Result<Stat> {
        let meta = self.metadata()?;
        Ok(Stat {
            kind: Kind::of(meta.file_type()),
            size: meta.len(),
            mtime: FileTime::from_last_modification_time(&meta),
            mode: crate::platform::mode_of(&meta),
            ino: crate::platform::inode(&meta),
        })
    }
}

/// Reading a mirror. Nothing here changes the store.
pub trait Reader: Send + Sync {
    /// What this store can do.
    fn caps(&self) -> Caps;

    /// How `name` is shown to a user: DST's path (or URL) joined with it.
    fn display(&self, name: &Path) -> PathBuf;

    /// What `name` is, or `None` if there is nothing there: missing, or a folder on the
    /// way is not a real folder (a symlink is never passed through).
    fn stat(&self, name: &Path) -> io::Result<Option<Stat>>;

    /// The names directly inside the folder `dir`, with their kinds, in no particular
    /// order.
    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>>;

    /// Opens the regular file `name` for reading; a symlink, a folder or anything else
    /// there is an error, and so is a folder on the way that is not a real folder.
    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>>;

    /// The target of the symlink `name`, exactly as stored.
    fn read_link(&self, name: &Path) -> io::Result<PathBuf>;

    /// The local file that holds this mirror's index. For a folder on this machine it is
    /// inside the mirror (`layout::index`); a remote store keeps it in a local cache.
    fn index_file(&self) -> PathBuf;
}

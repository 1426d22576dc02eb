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
        Ok(Stat::of(&self.metadata()?))
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

    // -- The read side's looks and walks (history, restore, verify, versions, archive,
    // -- the engine's listing). Defaults are built on the calls above; a store overrides
    // -- them where it can do better (`Local` reaches a name's folder once, and walks
    // -- child folders from their parent's handle).

    /// What stands at `name`, looked at once and never followed: a regular file comes
    /// open, a symlink with its target. `None` if there is nothing there (missing, or a
    /// folder on the way is not a real folder).
    fn look(&self, name: &Path) -> io::Result<Option<Found>> {
        let Some(stat) = self.stat(name)? else {
            return Ok(None);
        };
        let found = match stat.kind {
            Kind::File => Found::File(self.open(name)?),
            Kind::Dir => Found::Dir,
            Kind::Symlink => Found::Symlink(self.read_link(name)?),
            Kind::Special => Found::Special,
        };
        Ok(Some(found))
    }

    /// Walks the tree below the folder `top` (not `top` itself): every name, a folder
    /// before what it holds, in no particular order within a folder, never through a
    /// symlink. With `detail` each name comes with its [`Stat`]. `visit` says whether to
    /// go on, to leave a folder unentered, or to stop. A folder below `top` that cannot
    /// be listed is passed over (its names stay unknown); `Err` only if `top` itself
    /// cannot be listed.
    fn walk(
        &self,
        top: &Path,
        detail: bool,
        visit: &mut dyn FnMut(Walked) -> Step,
    ) -> io::Result<()> {
        let mut folders = vec![top.to_path_buf()];
        let mut first = true;
        while let Some(dir) = folders.pop() {
            let listed = match self.list(&dir) {
                Ok(listed) => listed,
                Err(e) if first => return Err(e),
                Err(_) => continue,
            };
            first = false;
            for Listed { name, kind } in listed {
                let stat = match detail {
                    // Gone since the listing: left out, as a listing a moment later would.
                    true => match self.stat(&name) {
                        Ok(Some(stat)) => Some(stat),
                        _ => continue,
                    },
                    false => None,
                };
                let is_dir = kind == Kind::Dir;
                match visit(Walked {
                    name: name.clone(),
                    kind,
                    stat,
                }) {
                    Step::Go if is_dir => folders.push(name),
                    Step::Go | Step::Prune => {}
                    Step::Stop => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// [`Reader::stat`] of each of `names`, in order. Given sorted, names in one folder
    /// come together, and a store may reach that folder once for all of them.
    fn stat_each(&self, names: &[&Path]) -> Vec<io::Result<Option<Stat>>> {
        names.iter().map(|name| self.stat(name)).collect()
    }

    /// True if inode numbers and permission bits read back as they were written (not
    /// so on FAT, exFAT, some FUSE and SMB mounts): whether a check may compare them.
    fn keeps_unix_meta(&self) -> bool {
        self.caps().posix_meta
    }
}

/// What stands at a name ([`Reader::look`]).
pub enum Found {
    /// A regular file, open for reading.
    File(Box<dyn ReadFile>),
    /// A folder.
    Dir,
    /// A symlink, with its target exactly as stored (never followed).
    Symlink(PathBuf),
    /// A FIFO, socket or device node (never opened: a FIFO would block).
    Special,
}

impl Found {
    /// What kind of thing it is.
    pub fn kind(&self) -> Kind {
        match self {
            Found::File(_) => Kind::File,
            Found::Dir => Kind::Dir,
            Found::Symlink(_) => Kind::Symlink,
            Found::Special => Kind::Special,
        }
    }
}

/// One name a [`Reader::walk`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walked {
    /// The name, relative to the store's root.
    pub name: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Its [`Stat`], when the walk was asked for detail.
    pub stat: Option<Stat>,
}

/// What a walk does after a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on (into the name, if it is a folder).
    Go,
    /// Go on, but do not enter this folder.
    Prune,
    /// Stop the whole walk.
    Stop,
}

impl Stat {
    /// What `meta` (an `lstat` or `fstat`) says.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            kind: Kind::of(meta.file_type()),
            size: meta.len(),
            mtime: FileTime::from_last_modification_time(meta),
            mode: crate::platform::mode_of(meta),
            ino: crate::platform::inode(meta),
        }
    }
}

/// The uncompressed size a gzip file declares in its trailer (ISIZE, the size modulo
/// 4 GiB), or `None` if it does not start with gzip's magic. Reads 2 bytes at the start
/// and 4 at the end, nothing in between. The file is left at an unspecified position.
pub fn gzip_isize(file: &mut dyn ReadFile) -> io::Result<Option<u64>> {
    use std::io::SeekFrom;
    if !starts_like_gzip(file)? {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-4))?;
    let mut tail = [0u8; 4];
    file.read_exact(&mut tail)?;
    Ok(Some(u64::from(u32::from_le_bytes(tail))))
}

/// True if the file starts with gzip's magic (`1f 8b`); read from the start.
pub fn starts_like_gzip(file: &mut dyn ReadFile) -> io::Result<bool> {
    use std::io::SeekFrom;
    file.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 2];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

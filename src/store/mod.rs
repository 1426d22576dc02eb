//! The destination seam: every byte that reaches a mirror, and every look at one, goes
//! through a store. [`Reader`] is what the read side (history, restore, verify,
//! versions, archive) and the engine's listing need; the write side builds on it.
//! [`Caps`] says what a store can do, so the engine picks a strategy and never guesses.
//! [`Store`] is the write half: every change the engine makes to a mirror is one of its
//! primitives (the policy — what to keep, what to displace, when to retry — stays in the
//! engine). `local` is a folder on this machine, reached only through directory handles;
//! `memory` a deterministic store for the engine's own tests; `layout` names datasafe's
//! own state inside any store; `versions` is the naming contract of kept versions.
//!
//! Names given to a store are plain relative paths (`a/b.txt.gz`), relative to the
//! mirror's root; the empty name is the root itself. A store never follows a symlink
//! inside the mirror: a link is a name like any other, never a way to somewhere else.

pub mod layout;
pub mod local;
pub mod memory;
pub mod remote;
pub mod s3;
#[cfg(unix)]
pub mod sftp;
pub mod versions;

use crate::config::Dest;
use crate::model::{Kept, Kind, Meta, OnDisk, Owner, Xattrs};
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
    /// Mtimes are kept to the nanosecond (false: whole seconds, as SFTP version 3 sets
    /// them); see [`Caps::mtime_kept`].
    pub nanosecond_mtimes: bool,
    /// Listing the whole mirror costs little (a local disk): a pass with an index that
    /// describes DST still lists its names, to notice what changed behind datasafe's
    /// back. Where it is dear (a remote store), a pass trusts the index and lists
    /// nothing; `verify` and `--repair` look.
    pub cheap_listing: bool,
    /// Owners and groups can be set on stored names (by root), by number.
    pub owners: bool,
    /// Extended attributes and ACLs can be set on stored names.
    pub xattrs: bool,
}

impl Caps {
    /// True if `stored`, an mtime read back from the store, is what setting `source`
    /// leaves there: equal, or (where the store keeps whole seconds) `source` truncated
    /// to its second.
    pub fn mtime_kept(&self, stored: FileTime, source: FileTime) -> bool {
        stored == source
            || (!self.nanosecond_mtimes
                && stored.nanoseconds() == 0
                && stored.unix_seconds() == source.unix_seconds())
    }
}

/// Opens DST for reading: a local folder (which must exist) or a remote one.
pub fn open_reader(dst: &Dest) -> io::Result<Box<dyn Reader>> {
    match dst {
        Dest::Local(path) => Ok(Box::new(local::Local::open(path)?)),
        #[cfg(unix)]
        Dest::Sftp(remote) => Ok(Box::new(sftp::Sftp::open(remote)?)),
        Dest::S3(bucket) => Ok(Box::new(s3::S3::open(bucket)?)),
        #[cfg(not(unix))]
        Dest::Sftp(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SFTP destinations need a Unix system (they run the system's ssh)",
        )),
    }
}

/// Opens DST for writing, creating its folder if missing; not yet prepared
/// ([`Store::prepare`]).
pub fn create(dst: &Dest) -> Result<Box<dyn Store>, PrepareError> {
    match dst {
        Dest::Local(path) => Ok(Box::new(local::Local::create(path)?)),
        #[cfg(unix)]
        Dest::Sftp(remote) => Ok(Box::new(sftp::Sftp::create(remote)?)),
        Dest::S3(bucket) => Ok(Box::new(s3::S3::create(bucket)?)),
        #[cfg(not(unix))]
        Dest::Sftp(_) => Err(PrepareError::Unwritable(
            "SFTP destinations need a Unix system (they run the system's ssh)".to_string(),
        )),
    }
}

/// Whether a remote DST can be reached now: one connection made and closed (`Ok` at
/// once for a local folder). May take as long as ssh's connect timeout: callers that
/// must not stall run it on a thread of its own.
pub fn reachable(dst: &Dest) -> io::Result<()> {
    match dst {
        Dest::Local(_) => Ok(()),
        #[cfg(unix)]
        Dest::Sftp(remote) => sftp::conn::Conn::open(remote).map(drop),
        Dest::S3(bucket) => s3::S3::reachable(bucket),
        #[cfg(not(unix))]
        Dest::Sftp(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SFTP destinations need a Unix system (they run the system's ssh)",
        )),
    }
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
    /// Names this content has (hard links; 1 where the store has none): only a version
    /// that is the last name of its bytes frees space when it goes.
    pub links: u64,
    /// Owner and group, where the store keeps them (else `None`).
    pub owner: Option<Owner>,
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
            links: s.nlink,
            owner: cfg!(unix).then_some(Owner {
                uid: s.uid,
                gid: s.gid,
            }),
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

/// One name of a store's [`Reader::inventory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventoried {
    /// The name, relative to the store's root.
    pub name: PathBuf,
    /// [`Kind::Dir`] for a folder (a marker, or a prefix of the names below it),
    /// [`Kind::File`] for every object (a listing does not tell a symlink's object from
    /// a file's).
    pub kind: Kind,
    /// Bytes stored.
    pub size: u64,
    /// The object's stamp ([`Stat::ino`] as the store gives it; 0 for a folder).
    pub stamp: u64,
}

/// A stored file open for reading.
pub trait ReadFile: io::Read + io::Seek + Send {
    /// What the open file is now.
    fn stat(&self) -> io::Result<Stat>;

    /// The stretches of data in its first `size` bytes, in order; the rest reads as
    /// zeros and is a hole (`crate::sparse::data_segments`). A store that cannot tell
    /// says all of it is data. May move the read position: seek before reading.
    fn data_segments(&self, size: u64) -> io::Result<Vec<std::ops::Range<u64>>> {
        Ok(crate::sparse::all_data(size))
    }
}

impl ReadFile for std::fs::File {
    fn stat(&self) -> io::Result<Stat> {
        Ok(Stat::of(&self.metadata()?))
    }

    fn data_segments(&self, size: u64) -> io::Result<Vec<std::ops::Range<u64>>> {
        if crate::platform::may_have_holes(&self.metadata()?) {
            crate::sparse::data_segments(self, size)
        } else {
            Ok(crate::sparse::all_data(size))
        }
    }
}

#[cfg(unix)]
fn links_of(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(meta)
}

#[cfg(not(unix))]
fn links_of(_meta: &std::fs::Metadata) -> u64 {
    1
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

    /// The attributes of `name` (a file or folder) that `kept` keeps, as the store
    /// holds them (for `verify`); `Unsupported` where it keeps none.
    fn xattrs(&self, name: &Path, kept: &Kept) -> io::Result<Xattrs> {
        let _ = (name, kept);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Every name below the root but the state folder, with each object's size and
    /// stamp, from one listing — where the store gives that without a request per name
    /// (an object store's flat listing, with ETags). `None` where knowing a name's
    /// content means reading it.
    fn inventory(&self) -> Option<io::Result<Vec<Inventoried>>> {
        None
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
            links: links_of(meta),
            owner: crate::platform::owner_of(meta),
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

/// Why a store cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Another datasafe process writes this mirror (the message says which, and what to
    /// do).
    #[error("{0}")]
    Locked(String),
    /// DST (or its state folder) cannot be created or written.
    #[error("{0}")]
    Unwritable(String),
}

/// Something written under a temp name in the store's temp folder
/// ([`layout::tmp`]), not yet visible under any final name. Dropped before
/// [`Staged::install`] succeeded, it is removed: a failed or interrupted write leaves
/// nothing behind (a killed process leaves at most a temp name, which the next
/// [`Store::prepare`] sweeps).
pub trait Staged: Send {
    /// What the staged name is now (its inode is what the final name will have).
    fn stat(&self) -> io::Result<Stat>;

    /// What stands at `name` now, where it is about to be installed (`None`: nothing,
    /// or a folder on the way is not a real folder), as [`Reader::stat`] says. A store
    /// may keep the folder it reached for the [`Staged::install`] under the same name
    /// that follows, so the usual write resolves its folder once.
    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>>;

    /// Moves it to `name` in one step, replacing a file or symlink there (never a
    /// folder); the folder holding `name` must exist. After `Ok` dropping it removes
    /// nothing; after an error it is still staged and may be installed again.
    fn install(&mut self, name: &Path) -> io::Result<()>;
}

/// A private file being written in the store's temp folder: created exclusively (never
/// an existing name, never through a symlink) and readable by its owner only until its
/// mode is set.
pub trait TempFile: Staged + io::Write {
    /// Sets permission bits and mtime (atime too, to the same value) on the open file.
    fn set_meta(&mut self, mode: u32, mtime: FileTime) -> io::Result<()>;

    /// Makes the next `len` bytes zeros, as a hole where the store can leave one (a
    /// sparse source's holes, issue 16): the file then ends at least here, even if
    /// nothing is written after. A store that cannot make holes writes the zeros.
    fn skip_hole(&mut self, len: u64) -> io::Result<()> {
        for zeros in crate::sparse::zeros(len) {
            self.write_all(zeros)?;
        }
        Ok(())
    }

    /// Gives the open file to `owner` (before [`TempFile::set_meta`]: a change of
    /// owner clears set-user-id bits). Only called where [`Caps::owners`].
    fn set_owner(&mut self, owner: Owner) -> io::Result<()> {
        let _ = owner;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Sets these extended attributes on the open file (a new file has none). Only
    /// called where [`Caps::xattrs`].
    fn set_xattrs(&mut self, xattrs: &Xattrs) -> io::Result<()> {
        let _ = xattrs;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Writing a mirror: the primitives the engine's executor is built on, each one a single
/// step on one name. Names are resolved as by [`Reader`]: a folder on the way that is
/// not a real folder fails the call (`NotFound` or `NotADirectory`), a symlink is never
/// passed through, and the last component is never followed either.
///
/// The engine decides strategy from [`Reader::caps`] (a version by hard link, or by a
/// move where there are none); a store never guesses on the engine's behalf.
pub trait Store: Reader {
    /// Makes the store ready to be written, once, before anything else: creates the
    /// state folder and its temp folder (refusing a state folder that is not a folder),
    /// takes the one-writer lock (held until the store is dropped; released by the OS
    /// if the process dies) and removes the temp files a killed run left. Messages
    /// name the path and say what the user can do.
    fn prepare(&mut self) -> Result<(), PrepareError>;

    /// True while the store is still the one prepared: its root and temp folder are
    /// there (removing DST from under a long-lived writer takes the temp folder, the
    /// lock and the index with it; every write then fails until it is prepared again).
    fn ready(&self) -> bool;

    /// A new private temp file, empty and open for writing.
    fn temp_file(&self) -> io::Result<Box<dyn TempFile>>;

    /// A new symlink to `target` under a temp name, with `mtime` where the store can set
    /// a link's time (a failure to set it is not an error).
    fn temp_symlink(&self, target: &Path, mtime: FileTime) -> io::Result<Box<dyn Staged>>;

    /// Creates the folder `name` (one level: its parent must exist); `AlreadyExists` if
    /// something is there.
    fn mkdir(&self, name: &Path) -> io::Result<()>;

    /// As [`Store::mkdir`], for a folder whose mode, mtime and owner (where owners are
    /// given) are to be `mode`, `mtime` and `owner` once its content is in. A store whose
    /// folders keep their metadata while names are added under them (S3's markers) sets
    /// them now, so that setting them after the content ([`Store::set_meta`],
    /// [`Store::set_owner`]) finds nothing to do; the others make the folder as `mkdir`
    /// does.
    fn mkdir_as(
        &self,
        name: &Path,
        mode: u32,
        mtime: FileTime,
        owner: Option<Owner>,
    ) -> io::Result<()> {
        let _ = (mode, mtime, owner);
        self.mkdir(name)
    }

    /// Creates the symlink `name` to `target`, exclusively (`AlreadyExists` if the name
    /// is taken): how prefix markers are placed.
    fn symlink(&self, target: &Path, name: &Path) -> io::Result<()>;

    /// Gives the file `from` the second name `to` (a hard link; needs
    /// [`Caps::hard_links`]); `AlreadyExists` if `to` is taken.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Moves `from` (a folder with all it holds) to `to`, replacing a file, a symlink or
    /// an empty folder there.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file, symlink or other non-folder `name`.
    fn remove_file(&self, name: &Path) -> io::Result<()>;

    /// Removes the empty folder `name`.
    fn remove_dir(&self, name: &Path) -> io::Result<()>;

    /// Removes the folder `name` with everything it holds, walking it through the
    /// store (never following a symlink inside it). A name already gone on the way is
    /// not an error (another worker got there first).
    fn remove_tree(&self, name: &Path) -> io::Result<()>;

    /// Sets the permission bits and mtime of `name` if it is a `kind` (a file or a
    /// folder; the empty name is the root), never through a symlink. Returns what it is
    /// then, or `None` if no `kind` can be reached there (missing, another kind, or not
    /// openable).
    fn set_meta(
        &self,
        name: &Path,
        kind: Kind,
        mode: u32,
        mtime: FileTime,
    ) -> io::Result<Option<Stat>>;

    /// Gives `name`, if it is a `kind` (a symlink itself, never what it points to; the
    /// empty name is the root), to `owner`. `Ok(false)` if no `kind` is there. Only
    /// called where [`Caps::owners`].
    fn set_owner(&self, name: &Path, kind: Kind, owner: Owner) -> io::Result<bool> {
        let _ = (name, kind, owner);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Makes the attributes of `name` (a file or folder) that `kept` keeps exactly
    /// `xattrs`. `Ok(false)` if no `kind` is there. Only called where [`Caps::xattrs`].
    fn set_xattrs(
        &self,
        name: &Path,
        kind: Kind,
        xattrs: &Xattrs,
        kept: &Kept,
    ) -> io::Result<bool> {
        let _ = (name, kind, xattrs, kept);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Makes everything written so far durable, in one step for the whole store (one
    /// `syncfs` on a local disk), before the index records it.
    fn barrier(&self) -> io::Result<()>;

    /// The bytes this writer may still use in the store, if it can tell.
    fn free_bytes(&self) -> Option<u64>;

    /// How many times the store connected to where DST is: 1 for one that needs no
    /// connection. More after a lost connection was made again, when the writes in
    /// flight then failed: a pass after it writes them again.
    fn connections(&self) -> u64 {
        1
    }

    /// Called after each commit of the index ([`Reader::index_file`]): a store whose
    /// index lives outside the mirror (a remote one keeps it in a local cache) publishes
    /// a consistent copy into the mirror here, so the mirror describes itself. A folder
    /// on this machine holds its index inside the mirror already: nothing to do.
    fn index_committed(&self) -> io::Result<()> {
        Ok(())
    }

    /// Called now and then while nothing is committed (a watcher idles): a store that
    /// holds back publishing its index copy to spare the link publishes what is
    /// pending once it is due.
    fn index_idle(&self) -> io::Result<()> {
        Ok(())
    }
}

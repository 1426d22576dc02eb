//! Open folders as handles, reach names below them without ever following a symlink,
//! and change what is there relative to those handles (create, rename, link, remove,
//! chmod, utimes, symlink): the one primitive the local store (and every read of SRC)
//! is built on. A name is
//! reached from a folder handle, never by handing the kernel a whole path to resolve
//! again, so a folder swapped for a symlink between a check and a use cannot redirect a
//! write, a delete, a chmod or a read outside the tree (the class of rsync's
//! CVE-2024-12087/12088). It also reaches paths longer than `PATH_MAX`: each step is
//! resolved relative to the folder before it.
//!
//! On Linux a whole relative path is resolved in one `openat2` call with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (the kernel refuses any symlink or `..` on the
//! way); elsewhere, on kernels without `openat2` (or where a sandbox forbids it) and for
//! paths near `PATH_MAX`, folder by folder with `openat(O_DIRECTORY | O_NOFOLLOW)`.
//! Either way a symlink, a file or anything else that is not a real folder on the way
//! is reported as `ENOTDIR` ([`io::ErrorKind::NotADirectory`]).
//!
//! Only this file knows about file descriptors; on platforms without the `openat`
//! family the same API resolves whole paths after checking each folder with `lstat`,
//! which is as safe as datasafe was before it had handles (and no safer).

use crate::model::Kind;
use filetime::FileTime;
use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path};

/// What a name in a folder is, as `lstat` sees it (never through a symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// File, folder, symlink or something else.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time with nanoseconds.
    pub mtime: FileTime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Inode number (0 where there is none).
    pub ino: u64,
    /// Device (filesystem) the name lives on.
    pub dev: u64,
    /// Hard links to it.
    pub nlink: u64,
    /// Owner and group (0 where the platform has none).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// 512-byte blocks allocated (fewer than the size needs: a sparse file).
    pub blocks: u64,
}

/// The folder components of a plain relative path, refusing `..`, a root or a prefix
/// (a name from an index or an event could be tampered with).
pub fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ));
            }
        }
    }
    Ok(names)
}

/// Splits a name into the folder that holds it and its last component. An empty name
/// (the root) has no last component.
pub fn split(name: &Path) -> (&Path, Option<&OsStr>) {
    (name.parent().unwrap_or(Path::new("")), name.file_name())
}

#[cfg(unix)]
pub use unix::Dir;

#[cfg(unix)]
mod unix {
    use super::{Status, components};
    use crate::model::{Kept, Kind, Xattrs};
    use filetime::FileTime;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::ffi::{OsStr, OsString};
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    /// Bytes of path handed to one `openat2` call; `PATH_MAX` is 4096 with the NUL.
    const CHUNK_BYTES: usize = 3584;

    /// An owner as rustix's ids.
    fn ids(owner: crate::model::Owner) -> (rustix::fs::Uid, rustix::fs::Gid) {
        (
            rustix::fs::Uid::from_raw(owner.uid),
            rustix::fs::Gid::from_raw(owner.gid),
        )
    }

    /// Flags for opening a folder on the way: never through a symlink, never a
    /// controlling terminal, closed on exec.
    fn dir_flags() -> OFlags {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    /// An open folder.
    #[derive(Debug)]
    pub struct Dir {
        fd: OwnedFd,
    }

    impl AsFd for Dir {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    impl Dir {
        /// Opens the folder at `path`, following symlinks in `path` itself: it is the
        /// root the user named (`~/backup` may well be a link to another disk).
        pub fn open_root(path: &Path) -> io::Result<Dir> {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Dir { fd })
        }

        /// Another handle on the same folder.
        pub fn try_clone(&self) -> io::Result<Dir> {
            Ok(Dir {
                fd: self.fd.try_clone()?,
            })
        }

        /// The folder `rel` below this one (this one again for an empty `rel`); every
        /// component must be a real folder: a symlink, a file or a missing name on the
        /// way fails (`NotADirectory` or `NotFound`).
        pub fn dir(&self, rel: &Path) -> io::Result<Dir> {
            let names = components(rel)?;
            let mut dir: Option<Dir> = None;
            for chunk in chunks(&names) {
                let from = dir.as_ref().unwrap_or(self);
                dir = Some(from.dir_chunk(chunk)?);
            }
            match dir {
                Some(dir) => Ok(dir),
                None => self.try_clone(),
            }
        }

        /// Resolves a run of components short enough for one `openat2` call.
        fn dir_chunk(&self, names: &[&OsStr]) -> io::Result<Dir> {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if let Some(result) = self.dir_openat2(names) {
                return result.map_err(not_a_folder);
            }
            let mut dir: Option<Dir> = None;
            for name in names {
                let from = dir.as_ref().unwrap_or(self);
                let fd = rustix::fs::openat(from, *name, dir_flags(), Mode::empty())
                    .map_err(|e| not_a_folder(e.into()))?;
                dir = Some(Dir { fd });
            }
            match dir {
                Some(dir) => Ok(dir),
                None => self.try_clone(),
            }
        }

        /// One `openat2` for the whole run, or `None` when the kernel cannot (too old,
        /// or a sandbox refuses the call): then the caller walks folder by folder.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        fn dir_openat2(&self, names: &[&OsStr]) -> Option<io::Result<Dir>> {
            use rustix::fs::ResolveFlags;
            use std::sync::atomic::{AtomicBool, Ordering};
            static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
            if UNAVAILABLE.load(Ordering::Relaxed) {
                return None;
            }
            let mut path = Vec::new();
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    path.push(b'/');
                }
                path.extend_from_slice(name.as_bytes());
            }
            let path = OsStr::from_bytes(&path);
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename elsewhere raced the lookup; the kernel asks for a retry.
            for _ in 0..4 {
                match rustix::fs::openat2(self, path, dir_flags(), Mode::empty(), how) {
                    Ok(fd) => return Some(Ok(Dir { fd })),
                    Err(rustix::io::Errno::AGAIN) => continue,
                    Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)
                    | Err(rustix::io::Errno::INVAL) => {
                        UNAVAILABLE.store(true, Ordering::Relaxed);
                        return None;
                    }
                    Err(e) => return Some(Err(e.into())),
                }
            }
            None
        }

        /// Opens the regular file `name` in this folder for reading, never through a
        /// symlink (`O_NOFOLLOW`) and never blocking on a FIFO put in its place.
        pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(self, name, flags, Mode::empty())?;
            let file = File::from(fd);
            if !file.metadata()?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is not a regular file",
                ));
            }
            // O_NONBLOCK stays: local filesystems ignore it for regular files, and clearing
            // it would cost a syscall per file.
            Ok(file)
        }

        /// What `name` in this folder is, without following it.
        pub fn status(&self, name: &OsStr) -> io::Result<Status> {
            let st = rustix::fs::statat(self, name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(status_of(&st))
        }

        /// What this folder itself is.
        pub fn own_status(&self) -> io::Result<Status> {
            Ok(status_of(&rustix::fs::fstat(self)?))
        }

        /// The target of the symlink `name` in this folder, exactly as stored.
        pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
            let target = rustix::fs::readlinkat(self, name, Vec::new())?;
            Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
        }

        /// The names in this folder (not `.` and `..`) with their kind as `readdir`
        /// reports it (`None` where the filesystem does not say: ask [`Dir::status`]).
        pub fn entries(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
            let fd = rustix::fs::openat(self, c".", dir_flags(), Mode::empty())?;
            let mut dir = rustix::fs::Dir::new(fd)?;
            let mut out = Vec::new();
            while let Some(entry) = dir.read() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let kind = match entry.file_type() {
                    FileType::Unknown => None,
                    other => Some(kind_of(other)),
                };
                out.push((OsStr::from_bytes(name).to_owned(), kind));
            }
            Ok(out)
        }

        // Reading SRC (`engine::source`, `engine::scan`'s walk).

        /// The folder `name` directly in this one, in one `openat` (`O_NOFOLLOW`): a
        /// symlink or anything else that is not a real folder there is
        /// `NotADirectory`. The step of a walk, which has the name from a listing.
        pub fn child(&self, name: &OsStr) -> io::Result<Dir> {
            let fd = rustix::fs::openat(self, name, dir_flags(), Mode::empty())
                .map_err(|e| not_a_folder(e.into()))?;
            Ok(Dir { fd })
        }

        /// The names in this folder (not `.` and `..`), read through this handle itself
        /// (a `dup` of it, from the start): as `opendir` does, listing needs read
        /// permission on the folder only, and costs no second lookup. The read position
        /// is shared by every handle cloned from this one: not for two threads listing
        /// one folder at once.
        pub fn names(&self) -> io::Result<Vec<OsString>> {
            let mut dir = rustix::fs::Dir::new(rustix::io::dup(self)?)?;
            dir.rewind();
            let mut out = Vec::new();
            while let Some(entry) = dir.read() {
                let name = entry?.file_name().to_bytes().to_vec();
                if name != b"." && name != b".." {
                    out.push(OsString::from_vec(name));
                }
            }
            Ok(out)
        }

        /// As [`Dir::entries`], read through this very handle from where its read
        /// position stands: for a handle just opened (at the start) and listed once, as
        /// a walk's child folder is. It spares the second open (or the `dup` and
        /// `lseek`) and the `close` of the other listings, two or three system calls a
        /// folder.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        pub fn entries_once(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
            let mut buf = Vec::with_capacity(32 * 1024);
            let mut dir = rustix::fs::RawDir::new(self, buf.spare_capacity_mut());
            let mut out = Vec::new();
            while let Some(entry) = dir.next() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let kind = match entry.file_type() {
                    FileType::Unknown => None,
                    other => Some(kind_of(other)),
                };
                out.push((OsStr::from_bytes(name).to_owned(), kind));
            }
            Ok(out)
        }

        /// As [`Dir::entries`] (elsewhere than Linux).
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        pub fn entries_once(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
            self.entries()
        }
    }

    /// The write primitives: each one a single call relative to this folder's handle,
    /// never following a symlink at the name it acts on.
    impl Dir {
        /// Creates a new private file `name` here for writing: exclusive (an existing
        /// name, a planted symlink included, fails with `AlreadyExists`) and mode 0600.
        pub fn create_private(&self, name: &OsStr) -> io::Result<File> {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(self, name, flags, Mode::RUSR | Mode::WUSR)?;
            Ok(File::from(fd))
        }

        /// Opens (creating it if missing) the file `name` here for reading and writing,
        /// never through a symlink: the one-writer lock.
        pub fn open_lock(&self, name: &OsStr) -> io::Result<File> {
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mode = Mode::from_raw_mode(0o666);
            Ok(File::from(rustix::fs::openat(self, name, flags, mode)?))
        }

        /// Creates the folder `name` here (mode 0777 less the umask, as `mkdir`).
        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::mkdirat(self, name, Mode::from_raw_mode(0o777))?)
        }

        /// Creates the symlink `name` here, pointing to `target` exactly.
        pub fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::symlinkat(target, self, name)?)
        }

        /// Gives the file `name` here the second name `to_name` in `to`; a symlink at
        /// `name` is linked itself, never followed.
        pub fn link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::linkat(
                self,
                name,
                to,
                to_name,
                AtFlags::empty(),
            )?)
        }

        /// Moves `name` here to `to_name` in `to`, replacing what `rename(2)` replaces.
        pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::renameat(self, name, to, to_name)?)
        }

        /// Removes the non-folder `name` here.
        pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(self, name, AtFlags::empty())?)
        }

        /// Removes the empty folder `name` here.
        pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(self, name, AtFlags::REMOVEDIR)?)
        }

        /// Removes the folder `name` here with all it holds, each folder inside opened
        /// from its parent's handle (`O_NOFOLLOW`): a symlink inside is removed, never
        /// followed, and a folder swapped for one mid-walk cannot lead the removal
        /// elsewhere. Names already gone are skipped.
        pub fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
            let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
            let inner = match rustix::fs::openat(self, name, dir_flags(), Mode::empty()) {
                Ok(fd) => Dir { fd },
                Err(e) if gone(&e.into()) => return Ok(()),
                Err(e) => return Err(not_a_folder(e.into())),
            };
            for (child, kind) in inner.entries()? {
                let kind = match kind {
                    Some(kind) => kind,
                    None => match inner.status(&child) {
                        Ok(status) => status.kind,
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(e),
                    },
                };
                let result = if kind == Kind::Dir {
                    inner.remove_tree(&child)
                } else {
                    inner.remove_file(&child)
                };
                match result {
                    Err(e) if gone(&e) => {}
                    other => other?,
                }
            }
            match self.remove_dir(name) {
                Err(e) if gone(&e) => Ok(()),
                other => other,
            }
        }

        /// Sets the mtime (and atime, to the same value) of the symlink `name` here,
        /// not of what it points to.
        pub fn set_link_mtime(&self, name: &OsStr, mtime: FileTime) -> io::Result<()> {
            let at = timespec(mtime);
            let times = rustix::fs::Timestamps {
                last_access: at,
                last_modification: at,
            };
            Ok(rustix::fs::utimensat(
                self,
                name,
                &times,
                AtFlags::SYMLINK_NOFOLLOW,
            )?)
        }

        /// Gives the name `name` here (a symlink itself, never what it points to; this
        /// folder for the empty name) to `owner`.
        pub fn set_owner(&self, name: &OsStr, owner: crate::model::Owner) -> io::Result<()> {
            let (uid, gid) = ids(owner);
            if name.is_empty() {
                return Ok(rustix::fs::fchown(self, Some(uid), Some(gid))?);
            }
            Ok(rustix::fs::chownat(
                self,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )?)
        }

        /// The extended attributes of `name` here (never of what a symlink points to)
        /// that `kept` keeps, sorted by name.
        pub fn xattrs(&self, name: &OsStr, kept: &Kept) -> io::Result<Xattrs> {
            let path = self.proc_path(name)?;
            // This folder itself (the empty name): through the handle's own link.
            let own = name.is_empty();
            let names = match own {
                true => xattr::list_deref(&path)?,
                false => xattr::list(&path)?,
            };
            let mut out = Vec::new();
            for attr in names {
                if !kept.keeps(&attr) {
                    continue;
                }
                let value = match own {
                    true => xattr::get_deref(&path, &attr)?,
                    false => xattr::get(&path, &attr)?,
                };
                // Gone between the list and the read: not there.
                if let Some(value) = value {
                    out.push((attr, value));
                }
            }
            out.sort();
            Ok(Xattrs(out))
        }

        /// Makes the attributes of `name` here that `kept` keeps exactly `xattrs`:
        /// each one set, and any other kept one there removed (a symlink's own, never
        /// its target's).
        pub fn set_xattrs(&self, name: &OsStr, xattrs: &Xattrs, kept: &Kept) -> io::Result<()> {
            let path = self.proc_path(name)?;
            let own = name.is_empty();
            let there = match own {
                true => xattr::list_deref(&path)?,
                false => xattr::list(&path)?,
            };
            for attr in there {
                if kept.keeps(&attr) && !xattrs.0.iter().any(|(n, _)| *n == attr) {
                    let removed = match own {
                        true => xattr::remove_deref(&path, &attr),
                        false => xattr::remove(&path, &attr),
                    };
                    match removed {
                        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                        other => other?,
                    }
                }
            }
            for (attr, value) in &xattrs.0 {
                let now = match own {
                    true => xattr::get_deref(&path, attr)?,
                    false => xattr::get(&path, attr)?,
                };
                if now.as_deref() != Some(value.as_slice()) {
                    match own {
                        true => xattr::set_deref(&path, attr, value)?,
                        false => xattr::set(&path, attr, value)?,
                    }
                }
            }
            Ok(())
        }

        /// A path to `name` in this folder that the kernel resolves through this handle
        /// (`/proc/self/fd/N/name`; the last component is not followed by the `l*xattr`
        /// calls): the attribute calls take paths, and a path from the root could be
        /// redirected by a folder swapped for a symlink.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        fn proc_path(&self, name: &OsStr) -> io::Result<PathBuf> {
            use std::os::fd::AsRawFd;
            if name.as_bytes().contains(&b'/') {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            let mut path = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
            if !name.is_empty() {
                path.push(name);
            }
            Ok(path)
        }

        /// Elsewhere the attribute calls are not made yet (they would need the name
        /// opened first): extended attributes are kept on Linux only.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        fn proc_path(&self, _name: &OsStr) -> io::Result<PathBuf> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "extended attributes are kept on Linux only",
            ))
        }

        /// Sets this folder's own mode and mtime (its atime is left alone) through its
        /// handle.
        pub fn set_own_meta(&self, mode: u32, mtime: FileTime) -> io::Result<()> {
            rustix::fs::fchmod(self, Mode::from_raw_mode(mode as rustix::fs::RawMode))?;
            Ok(rustix::fs::futimens(self, &mtime_only(mtime))?)
        }

        /// Sets the mode and mtime of the folder `name` here, through a handle on it
        /// (never through a symlink). A folder this user may not read (mode `0311`, say)
        /// is opened with `O_PATH` instead, where the system has it.
        pub fn set_dir_meta(&self, name: &OsStr, mode: u32, mtime: FileTime) -> io::Result<()> {
            match rustix::fs::openat(self, name, dir_flags(), Mode::empty()) {
                Ok(fd) => Dir { fd }.set_own_meta(mode, mtime),
                #[cfg(any(target_os = "linux", target_os = "android"))]
                Err(rustix::io::Errno::ACCESS) => self.set_dir_meta_by_path_fd(name, mode, mtime),
                Err(e) => Err(not_a_folder(e.into())),
            }
        }

        /// [`Dir::set_dir_meta`] for a folder that cannot be opened for reading: an
        /// `O_PATH` handle pins the folder, its mode is set through `/proc/self/fd` (what
        /// the C library does for `fchmodat(AT_SYMLINK_NOFOLLOW)`) and its mtime on the
        /// name without following it.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        fn set_dir_meta_by_path_fd(
            &self,
            name: &OsStr,
            mode: u32,
            mtime: FileTime,
        ) -> io::Result<()> {
            use std::os::fd::AsRawFd;
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(self, name, flags, Mode::empty())
                .map_err(|e| not_a_folder(e.into()))?;
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            rustix::fs::chmod(
                proc.as_str(),
                Mode::from_raw_mode(mode as rustix::fs::RawMode),
            )?;
            Ok(rustix::fs::utimensat(
                self,
                name,
                &mtime_only(mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )?)
        }

        /// Makes everything written to this folder's filesystem durable: one `syncfs`
        /// on Linux, an `fsync` of the folder elsewhere.
        pub fn sync_filesystem(&self) -> io::Result<()> {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            return Ok(rustix::fs::syncfs(self)?);
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            return Ok(rustix::fs::fsync(self)?);
        }

        /// The bytes an unprivileged writer may still use on this folder's filesystem.
        // The casts are no-ops on Linux and needed elsewhere.
        #[allow(clippy::unnecessary_cast)]
        pub fn free_bytes(&self) -> io::Result<u64> {
            let st = rustix::fs::fstatvfs(self)?;
            Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
        }
    }

    /// A `FileTime` as the kernel takes it.
    // The casts are no-ops on 64-bit Linux and needed elsewhere.
    #[allow(clippy::unnecessary_cast)]
    fn timespec(t: FileTime) -> rustix::fs::Timespec {
        rustix::fs::Timespec {
            tv_sec: t.unix_seconds() as _,
            tv_nsec: t.nanoseconds() as _,
        }
    }

    /// Timestamps that set the mtime and leave the atime alone.
    fn mtime_only(mtime: FileTime) -> rustix::fs::Timestamps {
        rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: timespec(mtime),
        }
    }

    fn kind_of(ft: FileType) -> Kind {
        match ft {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        }
    }

    // The casts are no-ops on Linux and needed elsewhere (macOS's `stat` fields have
    // other widths).
    #[allow(clippy::unnecessary_cast)]
    fn status_of(st: &rustix::fs::Stat) -> Status {
        Status {
            kind: kind_of(FileType::from_raw_mode(st.st_mode as rustix::fs::RawMode)),
            size: st.st_size as u64,
            mtime: FileTime::from_unix_time(st.st_mtime as i64, st.st_mtime_nsec as u32),
            mode: st.st_mode as u32 & 0o7777,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            blocks: st.st_blocks as u64,
        }
    }

    /// A symlink met where a folder must be (`ELOOP` from `O_NOFOLLOW` or from
    /// `RESOLVE_NO_SYMLINKS`) is, to every caller, something that is not a folder.
    fn not_a_folder(err: io::Error) -> io::Error {
        if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error())
        } else {
            err
        }
    }

    /// Splits `names` into runs that each fit one `openat2` path.
    fn chunks<'a>(names: &'a [&'a OsStr]) -> impl Iterator<Item = &'a [&'a OsStr]> + 'a {
        let mut rest = names;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut bytes = 0;
            let mut n = 0;
            while n < rest.len() && (n == 0 || bytes + rest[n].len() < CHUNK_BYTES) {
                bytes += rest[n].len() + 1;
                n += 1;
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Some(head)
        })
    }
}

#[cfg(not(unix))]
pub use fallback::Dir;

/// Without the `openat` family: whole paths, each folder on the way checked with
/// `lstat` first (a check-then-use window remains; see the top of this file).
#[cfg(not(unix))]
mod fallback {
    use super::{Status, components};
    use crate::model::{Kind, Xattrs};
    use filetime::FileTime;
    use std::ffi::{OsStr, OsString};
    use std::fs::File;
    use std::io;
    use std::path::{Path, PathBuf};

    /// A folder, by path.
    #[derive(Debug)]
    pub struct Dir {
        path: PathBuf,
    }

    impl Dir {
        /// Opens the folder at `path`.
        pub fn open_root(path: &Path) -> io::Result<Dir> {
            if !std::fs::metadata(path)?.is_dir() {
                return Err(io::ErrorKind::NotADirectory.into());
            }
            Ok(Dir {
                path: path.to_path_buf(),
            })
        }

        /// Another handle on the same folder.
        pub fn try_clone(&self) -> io::Result<Dir> {
            Ok(Dir {
                path: self.path.clone(),
            })
        }

        /// The folder `rel` below this one, each folder on the way checked.
        pub fn dir(&self, rel: &Path) -> io::Result<Dir> {
            let mut path = self.path.clone();
            for name in components(rel)? {
                path.push(name);
                if !std::fs::symlink_metadata(&path)?.is_dir() {
                    return Err(io::ErrorKind::NotADirectory.into());
                }
            }
            Ok(Dir { path })
        }

        /// Opens the regular file `name` for reading.
        pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
            let path = self.path.join(name);
            if !std::fs::symlink_metadata(&path)?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is not a regular file",
                ));
            }
            File::open(path)
        }

        /// What `name` in this folder is, without following it.
        pub fn status(&self, name: &OsStr) -> io::Result<Status> {
            Ok(status_of(&std::fs::symlink_metadata(self.path.join(name))?))
        }

        /// What this folder itself is.
        pub fn own_status(&self) -> io::Result<Status> {
            Ok(status_of(&std::fs::symlink_metadata(&self.path)?))
        }

        /// The target of the symlink `name`.
        pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
            std::fs::read_link(self.path.join(name))
        }

        /// The names in this folder with their kind.
        pub fn entries(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&self.path)? {
                let entry = entry?;
                let kind = entry.file_type().ok().map(Kind::of);
                out.push((entry.file_name(), kind));
            }
            Ok(out)
        }

        // Reading SRC (`engine::source`, `engine::scan`'s walk).

        /// The folder `name` directly in this one.
        pub fn child(&self, name: &OsStr) -> io::Result<Dir> {
            self.dir(Path::new(name))
        }

        /// The names in this folder.
        pub fn names(&self) -> io::Result<Vec<OsString>> {
            Ok(self.entries()?.into_iter().map(|(name, _)| name).collect())
        }

        /// As [`Dir::entries`] (a folder by path has no read position to spare).
        pub fn entries_once(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
            self.entries()
        }
    }

    /// The write primitives, by path: the name's own kind is checked with `lstat`
    /// where following it would matter (see the top of this file for the window that
    /// remains).
    impl Dir {
        /// Creates a new private file `name` here for writing (exclusive).
        pub fn create_private(&self, name: &OsStr) -> io::Result<File> {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path.join(name))
        }

        /// Opens (creating it if missing) the file `name` here: the one-writer lock.
        pub fn open_lock(&self, name: &OsStr) -> io::Result<File> {
            let path = self.path.join(name);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        }

        /// Creates the folder `name` here.
        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            std::fs::create_dir(self.path.join(name))
        }

        /// Creates the symlink `name` here, pointing to `target` exactly.
        pub fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
            crate::platform::symlink(target, &self.path.join(name))
        }

        /// Gives the file `name` here the second name `to_name` in `to`.
        pub fn link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
            std::fs::hard_link(self.path.join(name), to.path.join(to_name))
        }

        /// Moves `name` here to `to_name` in `to`.
        pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
            std::fs::rename(self.path.join(name), to.path.join(to_name))
        }

        /// Removes the non-folder `name` here.
        pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            std::fs::remove_file(self.path.join(name))
        }

        /// Removes the empty folder `name` here.
        pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
            std::fs::remove_dir(self.path.join(name))
        }

        /// Removes the folder `name` here with all it holds (links inside are removed,
        /// not followed).
        pub fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
            let path = self.path.join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => match std::fs::remove_dir_all(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
                Ok(_) => Err(io::ErrorKind::NotADirectory.into()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        }

        /// Sets the mtime of the symlink `name` here, not of what it points to.
        pub fn set_link_mtime(&self, name: &OsStr, mtime: FileTime) -> io::Result<()> {
            filetime::set_symlink_file_times(self.path.join(name), mtime, mtime)
        }

        /// Sets this folder's own mode and mtime.
        pub fn set_own_meta(&self, mode: u32, mtime: FileTime) -> io::Result<()> {
            crate::platform::set_mode_path(&self.path, mode)?;
            filetime::set_file_mtime(&self.path, mtime)
        }

        /// Sets the mode and mtime of the folder `name` here.
        pub fn set_dir_meta(&self, name: &OsStr, mode: u32, mtime: FileTime) -> io::Result<()> {
            self.dir(Path::new(name))?.set_own_meta(mode, mtime)
        }

        /// Makes what was written to this folder's filesystem durable.
        pub fn sync_filesystem(&self) -> io::Result<()> {
            crate::platform::sync_filesystem(&self.path)
        }

        /// The bytes this writer may still use on this folder's filesystem.
        pub fn free_bytes(&self) -> io::Result<u64> {
            crate::platform::free_bytes(&self.path).ok_or_else(|| io::ErrorKind::Unsupported.into())
        }
    }

    fn status_of(meta: &std::fs::Metadata) -> Status {
        Status {
            kind: Kind::of(meta.file_type()),
            size: meta.len(),
            mtime: FileTime::from_last_modification_time(meta),
            mode: crate::platform::mode_of(meta),
            ino: 0,
            dev: 0,
            nlink: 1,
            uid: 0,
            gid: 0,
            blocks: meta.len().div_ceil(512),
        }
    }

    impl Dir {
        /// No owners here.
        pub fn set_owner(&self, _name: &OsStr, _owner: crate::model::Owner) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }

        /// No extended attributes read here.
        pub fn xattrs(&self, _name: &OsStr, _kept: &crate::model::Kept) -> io::Result<Xattrs> {
            Ok(Xattrs::default())
        }

        /// No extended attributes written here.
        pub fn set_xattrs(
            &self,
            _name: &OsStr,
            _xattrs: &Xattrs,
            _kept: &crate::model::Kept,
        ) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

/// A new entry (a temp file or symlink) under a fresh name in a folder, removed again
/// when dropped unless it was renamed into place: the one "remove unless installed"
/// guard, for the local store's temp files in `DST/.datasafe/tmp` and `restore`'s in
/// TARGET. `D` is how the folder is held (`Arc<Dir>`, `&Dir`).
#[derive(Debug)]
pub struct Temp<D: std::ops::Deref<Target = Dir>> {
    /// The folder it is in.
    dir: D,
    /// Its name there.
    name: std::ffi::OsString,
    /// Removed on drop (until renamed into place).
    armed: bool,
}

impl<D: std::ops::Deref<Target = Dir>> Temp<D> {
    /// Makes an entry with `make` in `dir` under the first name `names` gives that is
    /// not taken (`make` failing with `AlreadyExists` moves on to the next one).
    pub fn make<T>(
        dir: D,
        mut names: impl FnMut() -> std::ffi::OsString,
        make: impl Fn(&Dir, &OsStr) -> io::Result<T>,
    ) -> io::Result<(Temp<D>, T)> {
        loop {
            let name = names();
            match make(&dir, &name) {
                Ok(made) => {
                    let temp = Temp {
                        dir,
                        name,
                        armed: true,
                    };
                    return Ok((temp, made));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The folder it is in.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Its name in [`Temp::dir`].
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Renames it to `to_name` in `to` (replacing what stands there); from then on it
    /// is no longer removed on drop.
    pub fn rename_to(&mut self, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        self.dir.rename(&self.name, to, to_name)?;
        self.armed = false;
        Ok(())
    }

    /// [`Temp::rename_to`] `to_name` in its own folder.
    pub fn rename_beside(&mut self, to_name: &OsStr) -> io::Result<()> {
        self.dir.rename(&self.name, &self.dir, to_name)?;
        self.armed = false;
        Ok(())
    }
}

impl<D: std::ops::Deref<Target = Dir>> Drop for Temp<D> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    #[test]
    fn a_temp_is_removed_unless_renamed_into_place_and_skips_taken_names() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("t1"), "taken").unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let mut n = 0;
        let mut names = || {
            n += 1;
            OsString::from(format!("t{n}"))
        };
        let (temp, file) = Temp::make(&dir, &mut names, Dir::create_private).unwrap();
        assert_eq!(temp.name(), "t2");
        drop(file);
        drop(temp);
        assert!(!tmp.path().join("t2").exists());
        assert_eq!(std::fs::read(tmp.path().join("t1")).unwrap(), b"taken");
        let (mut temp, file) = Temp::make(&dir, &mut names, Dir::create_private).unwrap();
        drop(file);
        temp.rename_beside(OsStr::new("final")).unwrap();
        drop(temp);
        assert!(tmp.path().join("final").is_file());
        assert!(!tmp.path().join("t3").exists());
    }

    #[test]
    fn a_symlink_on_the_way_is_not_a_folder_whatever_the_path_length() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        symlink(root.join("outside"), root.join("a/link")).unwrap();
        let dir = Dir::open_root(root).unwrap();
        assert!(dir.dir(Path::new("a/b")).is_ok());
        for rel in ["a/link", "a/link/x", "../outside", "/etc"] {
            let err = dir.dir(Path::new(rel)).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput
                ),
                "{rel}: {err}"
            );
        }
        assert_eq!(
            dir.dir(Path::new("a/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let a = dir.dir(Path::new("a")).unwrap();
        assert_eq!(a.status(OsStr::new("link")).unwrap().kind, Kind::Symlink);
        assert_eq!(
            a.read_link(OsStr::new("link")).unwrap(),
            root.join("outside")
        );
        assert!(a.open_file(OsStr::new("link")).is_err());
        let mut names: Vec<_> = a.entries().unwrap();
        names.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            names,
            vec![
                (OsString::from("b"), Some(Kind::Dir)),
                (OsString::from("link"), Some(Kind::Symlink))
            ]
        );
    }

    #[test]
    fn a_tree_is_removed_through_handles_and_a_link_inside_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("dst/t/a/b")).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        std::fs::write(root.join("outside/keep"), "x").unwrap();
        std::fs::write(root.join("dst/t/a/b/f"), "f").unwrap();
        symlink(root.join("outside"), root.join("dst/t/a/link")).unwrap();
        let dst = Dir::open_root(&root.join("dst")).unwrap();
        dst.remove_tree(OsStr::new("t")).unwrap();
        assert!(!root.join("dst/t").exists());
        assert!(root.join("outside/keep").exists());
        // Already gone is not an error; a file where a folder is named is.
        dst.remove_tree(OsStr::new("t")).unwrap();
        std::fs::write(root.join("dst/file"), "f").unwrap();
        assert!(dst.remove_tree(OsStr::new("file")).is_err());
    }

    #[test]
    fn writes_never_follow_a_symlink_at_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("dst")).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        symlink(root.join("outside"), root.join("dst/link")).unwrap();
        let dst = Dir::open_root(&root.join("dst")).unwrap();
        // An exclusive create over a planted link fails rather than writing through it.
        let err = dst.create_private(OsStr::new("link")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // A folder's metadata is never set through a link to one.
        assert!(
            dst.set_dir_meta(OsStr::new("link"), 0o700, FileTime::zero())
                .is_err()
        );
        let outside = std::fs::metadata(root.join("outside")).unwrap();
        assert_ne!(
            FileTime::from_last_modification_time(&outside),
            FileTime::zero()
        );
        // Removing the link removes the link.
        dst.remove_file(OsStr::new("link")).unwrap();
        assert!(root.join("outside").is_dir());
        // A folder this user may not read still gets its mode and mtime.
        dst.mkdir(OsStr::new("d")).unwrap();
        let t = FileTime::from_unix_time(1_000_000_000, 7);
        dst.set_dir_meta(OsStr::new("d"), 0o311, t).unwrap();
        dst.set_dir_meta(OsStr::new("d"), 0o750, t).unwrap();
        let d = dst.status(OsStr::new("d")).unwrap();
        assert_eq!((d.mode, d.mtime), (0o750, t));
    }

    #[test]
    fn reaches_folders_deeper_than_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let name = "n".repeat(120);
        // 50 levels of 121 bytes: about 6,050 bytes, past PATH_MAX (4,096).
        let root = Dir::open_root(tmp.path()).unwrap();
        let mut rel = PathBuf::new();
        let mut here = root.try_clone().unwrap();
        for _ in 0..50 {
            rustix::fs::mkdirat(&here, name.as_str(), rustix::fs::Mode::RWXU).unwrap();
            here = here.dir(Path::new(&name)).unwrap();
            rel.push(&name);
        }
        assert!(rel.as_os_str().len() > 6000);
        let deep = root.dir(&rel).unwrap();
        assert_eq!(deep.own_status().unwrap().kind, Kind::Dir);
    }
}

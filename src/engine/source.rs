//! SRC as the engine reads it: the one way to reach a source path. A [`Source`] is the
//! root folder the user named, open as a directory handle ([`Dir`]); every look below it
//! (`status`, `read_link`, opening a file, listing a folder) starts from that handle and
//! reaches the name folder by folder without ever passing a symlink. So a source folder
//! swapped for a symlink while datasafe reads it makes the read fail (`ENOTDIR`, as if
//! the name were gone) instead of reading, and mirroring, what the link points to; and
//! paths longer than `PATH_MAX` are read like any other.
//!
//! The root itself may be a symlink (`~/data` → another disk): it is followed once, when
//! the source is opened. A `Source` is opened per pass (a reconcile, a batch of hints, a
//! copy, a `verify` or `archive` run) and dropped after it, so a long-lived watcher
//! never holds SRC's filesystem busy (it can still be unmounted) and a root that comes
//! back is opened afresh.
//!
//! Nothing here writes, plans or decides; the walk over a whole tree is `scan`'s.

use crate::model::{Attrs, Entry, Kept, Kind, LinkKey, Meta, Owner};
use crate::store::local::beneath::{self, Dir, Status};
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The source root, open. Cheap to clone: clones share the one handle.
#[derive(Clone, Debug)]
pub struct Source {
    /// SRC as the user named it (for messages).
    root: PathBuf,
    /// SRC's root folder.
    dir: Arc<Dir>,
}

impl Source {
    /// Opens the folder `root` (following it if it is a symlink: it is the user's).
    pub fn open(root: &Path) -> io::Result<Source> {
        Ok(Source {
            root: root.to_path_buf(),
            dir: Arc::new(Dir::open_root(root)?),
        })
    }

    /// SRC as the user named it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The open root folder.
    pub fn root_dir(&self) -> &Dir {
        &self.dir
    }

    /// How `rel` is shown to a user: SRC joined with it.
    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// `path` relative to the root, if it is [`Source::path`] of something.
    pub fn rel_of<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.root).ok()
    }

    /// The folder `rel` (the root for an empty `rel`), never through a symlink.
    pub fn dir(&self, rel: &Path) -> io::Result<Dir> {
        self.dir.dir(rel)
    }

    /// The folder holding `rel` and `rel`'s last name (`None` for the root itself).
    fn parent_of<'r>(&self, rel: &'r Path) -> io::Result<(Dir, Option<&'r std::ffi::OsStr>)> {
        let (parent, name) = beneath::split(rel);
        match name {
            Some(name) => Ok((self.dir.dir(parent)?, Some(name))),
            None => Ok((self.dir.try_clone()?, None)),
        }
    }

    /// The open folder holding the file or link `rel`, and `rel`'s last name: for
    /// several looks at one name (open it, then check it is still the file read).
    pub fn parent<'r>(&self, rel: &'r Path) -> io::Result<(Dir, &'r std::ffi::OsStr)> {
        match self.parent_of(rel)? {
            (parent, Some(name)) => Ok((parent, name)),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file",
            )),
        }
    }

    /// What `rel` is, without following it (the root is described as what it leads to).
    /// A folder on the way that is not a real folder fails with `NotADirectory`.
    pub fn status(&self, rel: &Path) -> io::Result<Status> {
        match self.parent_of(rel)? {
            (parent, Some(name)) => parent.status(name),
            (root, None) => root.own_status(),
        }
    }

    /// Opens the regular file `rel` for reading: never through a symlink, not even at
    /// `rel` itself; a FIFO, a folder or anything else there is an error.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        match self.parent_of(rel)? {
            (parent, Some(name)) => parent.open_file(name),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file",
            )),
        }
    }

    /// The target of the symlink `rel`, exactly as stored.
    pub fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        match self.parent_of(rel)? {
            (parent, Some(name)) => parent.read_link(name),
            (_, None) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    /// Describes `rel` as the scan would: kind, metadata, the attributes `kept` keeps
    /// and, for a symlink, its target.
    pub fn entry(&self, rel: &Path, kept: &Kept) -> io::Result<Entry> {
        match self.parent_of(rel)? {
            (parent, Some(name)) => {
                let status = parent.status(name)?;
                entry_in(&parent, name, rel.to_path_buf(), &status, kept)
            }
            (root, None) => {
                let mut entry = entry(PathBuf::new(), &root.own_status()?, None);
                if kept.any() {
                    entry.attrs.xattrs = root.xattrs(std::ffi::OsStr::new(""), kept)?.shared();
                }
                Ok(entry)
            }
        }
    }
}

/// The entry for `name` in the open folder `dir` (whose `lstat` is `status`), reading
/// the link target and the attributes `kept` keeps (of files and folders: a symlink's
/// own are not kept) through the same handle.
pub fn entry_in(
    dir: &Dir,
    name: &std::ffi::OsStr,
    rel: PathBuf,
    status: &Status,
    kept: &Kept,
) -> io::Result<Entry> {
    let target = match status.kind {
        Kind::Symlink => Some(dir.read_link(name)?),
        _ => None,
    };
    let mut entry = entry(rel, status, target);
    if kept.any() && matches!(status.kind, Kind::File | Kind::Dir) {
        entry.attrs.xattrs = dir.xattrs(name, kept)?.shared();
    }
    Ok(entry)
}

/// An entry from what `lstat` said of it (and the link target read for a symlink).
pub fn entry(rel: PathBuf, status: &Status, target: Option<PathBuf>) -> Entry {
    Entry {
        rel,
        kind: status.kind,
        meta: meta(status),
        target,
        attrs: Attrs {
            owner: cfg!(unix).then_some(Owner {
                uid: status.uid,
                gid: status.gid,
            }),
            xattrs: None,
        },
        link: (status.kind == Kind::File && status.nlink > 1).then_some(LinkKey {
            dev: status.dev,
            ino: status.ino,
        }),
    }
}

/// Size, mtime and mode as the planner compares them.
pub fn meta(status: &Status) -> Meta {
    Meta {
        size: status.size,
        mtime: status.mtime,
        mode: status.mode,
    }
}

/// True if `now` (a name's `lstat`) is the very file `before` (an open handle's `fstat`)
/// described, unchanged: same identity, size, mtime and mode.
pub fn same_file(before: &Metadata, now: &Status) -> bool {
    #[cfg(unix)]
    let same_id = {
        use std::os::unix::fs::MetadataExt;
        before.dev() == now.dev && before.ino() == now.ino
    };
    // Without a stable identity (see `platform::file_id`), size and times catch a
    // replacement.
    #[cfg(not(unix))]
    let same_id = true;
    same_id && Meta::of(before) == meta(now)
}

/// True if the file open as `file` is still what `before` (its `fstat` when it was
/// opened) described, and its name still leads to it: `now` is the name's `lstat`,
/// taken through the source's handles after the read.
pub fn unchanged(before: &Metadata, file: &File, now: io::Result<Status>) -> bool {
    let (Ok(after), Ok(now)) = (file.metadata(), now) else {
        return false;
    };
    Meta::of(before) == Meta::of(&after) && same_file(before, &now)
}

/// A file the scan found regular but is not any more (a folder, a FIFO or a device in
/// its place), said as a copy says it.
pub fn no_longer_a_file(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::InvalidInput {
        io::Error::other("it is no longer a regular file")
    } else {
        err
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn never_reads_through_a_symlinked_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, outside) = (tmp.path().join("src"), tmp.path().join("outside"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(src.join("d/f"), "in").unwrap();
        std::fs::write(outside.join("f"), "out").unwrap();
        symlink(&outside, src.join("l")).unwrap();
        let source = Source::open(&src).unwrap();
        assert_eq!(source.status(Path::new("d/f")).unwrap().kind, Kind::File);
        assert_eq!(source.status(Path::new("l")).unwrap().kind, Kind::Symlink);
        assert_eq!(source.status(Path::new("")).unwrap().kind, Kind::Dir);
        assert_eq!(
            source.read_link(Path::new("l")).unwrap(),
            outside.to_path_buf()
        );
        let entry = source.entry(Path::new("l"), &Default::default()).unwrap();
        assert_eq!(entry.target.as_deref(), Some(outside.as_path()));
        for rel in ["l/f", "l"] {
            assert!(source.open_file(Path::new(rel)).is_err(), "{rel}");
        }
        let err = source.status(Path::new("l/f")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        // The folder swapped for a link after the source was opened.
        std::fs::rename(src.join("d"), tmp.path().join("moved")).unwrap();
        symlink(&outside, src.join("d")).unwrap();
        assert_eq!(
            source.open_file(Path::new("d/f")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
    }
}

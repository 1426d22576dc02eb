//! A mirror in a folder on this machine. Every look and every change goes through an
//! open handle on DST's root and the folder handles reached from it
//! ([`beneath::Dir`]), never through a whole path resolved again: a folder in the
//! mirror swapped for a symlink cannot send a read or a write outside DST.

pub mod beneath;
mod write;

use super::{Caps, Listed, ReadFile, Reader, Stat, layout};
use beneath::Dir;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A folder on this machine as a store.
#[derive(Debug)]
pub struct Local {
    /// DST as the user named it (for messages).
    root: PathBuf,
    /// DST's root folder, open (shared with the temp files it hands out, which install
    /// themselves below it).
    dir: Arc<Dir>,
    /// What writing needs, once [`super::Store::prepare`] made the store ready.
    writing: Option<write::Writing>,
}

impl Local {
    /// Opens the folder `root` (which must exist) as a store.
    pub fn open(root: &Path) -> io::Result<Local> {
        Ok(Local {
            root: root.to_path_buf(),
            dir: Arc::new(Dir::open_root(root)?),
            writing: None,
        })
    }

    /// DST's path as the user named it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The open root folder.
    pub fn root_dir(&self) -> &Dir {
        &self.dir
    }

    /// The folder that holds `name`, and `name`'s last component (`None` for the root).
    pub fn parent_of<'n>(&self, name: &'n Path) -> io::Result<(Dir, Option<&'n std::ffi::OsStr>)> {
        let (parent, last) = beneath::split(name);
        Ok((self.dir.dir(parent)?, last))
    }
}

/// A name that cannot be there because a folder on the way is not a folder.
fn absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl Reader for Local {
    fn caps(&self) -> Caps {
        Caps {
            hard_links: cfg!(unix),
            atomic_rename: true,
            posix_meta: cfg!(unix),
            symlinks: true,
            server_side_copy: false,
            fsync: true,
        }
    }

    fn display(&self, name: &Path) -> PathBuf {
        if name.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        let found = self.parent_of(name).and_then(|(dir, last)| match last {
            Some(last) => dir.status(last),
            None => dir.own_status(),
        });
        match found {
            Ok(status) => Ok(Some(status.into())),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let folder = self.dir.dir(dir)?;
        let mut out = Vec::new();
        for (name, kind) in folder.entries()? {
            let kind = match kind {
                Some(kind) => kind,
                None => match folder.status(&name) {
                    Ok(status) => status.kind,
                    // Gone since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(Listed {
                name: dir.join(name),
                kind,
            });
        }
        Ok(out)
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        let (dir, last) = self.parent_of(name)?;
        let Some(last) = last else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is a folder, not a file",
            ));
        };
        Ok(Box::new(dir.open_file(last)?))
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        let (dir, last) = self.parent_of(name)?;
        match last {
            Some(last) => dir.read_link(last),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is a folder, not a symlink",
            )),
        }
    }

    fn index_file(&self) -> PathBuf {
        self.root.join(layout::index())
    }
}

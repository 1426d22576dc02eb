//! The single-path operations behind [`Executor::run`] that shape DST's tree: set
//! metadata, mkdir, symlink, delete, rename (copying content is in `copy`). Each one is
//! a few store primitives on names relative to DST (the store never passes through
//! anything in DST that is not a real folder); [`Executor::dest_dir`] makes the folders
//! on the way real folders, displacing what stands there.
use super::{Displaced, Done, Executor, OpError, Outcome};
use crate::engine::plan::Changed;
use crate::hash::Digest;
use crate::model::{Entry, Kind, Meta, Owner};
use crate::model::{Record, Stored};
use crate::store::{Stat, layout};
use std::io::{self};
use std::path::{Path, PathBuf};

/// How far [`Executor::dest_dir`] may change DST on its way to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// Create (or replace with) folders up to the name's parent.
    Parents,
    /// As `Parents`, and the name itself as a folder, made with the source folder's
    /// metadata where the store can set it at once ([`crate::store::Store::mkdir_as`]).
    Itself(Meta, Option<Owner>),
}

impl Executor {
    /// Sets mode and mtime on a stored file whose content is current.
    pub(super) fn set_meta(
        &self,
        entry: &Entry,
        stored: Stored,
        sha256: Option<Digest>,
        changed: Changed,
    ) -> Result<Outcome, OpError> {
        let name = stored.name_for(&entry.rel);
        // The stored file may be gone, or replaced by something else, behind the index's
        // back: then only a copy makes DST current. The store never sets them through a
        // planted symlink. Owner first: a change of owner clears set-user-id bits.
        let (there, attrs) = self.attrs_on_name(&name, Kind::File, &entry.attrs)?;
        if !there {
            return self.copy(entry, stored, None);
        }
        let set = self
            .store
            .set_meta(&name, Kind::File, entry.meta.mode, entry.meta.mtime)
            .map_err(OpError::io("setting mode and time on", &self.shown(&name)))?;
        let Some(now) = set else {
            return self.copy(entry, stored, None);
        };
        let record = Record {
            sha256,
            disk: Some(now.on_disk()),
            attrs,
            ..Record::of(entry, stored)
        };
        Ok(Outcome::Stored {
            done: Done::Updated(changed),
            name,
            record,
            bytes: 0,
        })
    }

    /// Creates a folder (replacing a file or symlink of that name). Its mode and mtime
    /// are set after its content, by [`Executor::finish_dir`].
    pub(super) fn mkdir(&self, entry: &Entry) -> Result<Outcome, OpError> {
        if !entry.rel.as_os_str().is_empty() {
            self.dest_dir(&entry.rel, Reach::Itself(entry.meta, entry.attrs.owner))?;
        }
        Ok(Outcome::Stored {
            done: Done::Mkdir,
            name: entry.rel.clone(),
            // Owner and attributes are set with mode and mtime, by `finish_dir`.
            record: Record {
                attrs: Default::default(),
                ..Record::of(entry, Stored::Plain)
            },
            bytes: 0,
        })
        .inspect(|_| log::trace!("folder ready: {}", self.shown(&entry.rel).display()))
    }

    /// Creates or replaces a symlink with the source's target and mtime.
    pub(super) fn symlink(&self, entry: &Entry) -> Result<Outcome, OpError> {
        let target = entry.target.as_deref().unwrap_or(Path::new(""));
        let mut temp = self
            .store
            .temp_symlink(target, entry.meta.mtime)
            .map_err(OpError::io("creating symlink", &self.shown(&entry.rel)))?;
        let disk = temp.stat().ok().map(|s| s.on_disk());
        self.install(temp.as_mut(), &entry.rel, None, None)?;
        let (_, attrs) = self.attrs_on_name(&entry.rel, Kind::Symlink, &entry.attrs)?;
        Ok(Outcome::Stored {
            done: Done::Linked,
            name: entry.rel.clone(),
            record: Record {
                disk,
                attrs,
                ..Record::of(entry, Stored::Plain)
            },
            bytes: 0,
        })
    }

    /// Removes a name from DST; a folder goes with everything in it.
    pub(super) fn delete(
        &self,
        name: &Path,
        kind: Kind,
        superseded: bool,
    ) -> Result<Outcome, OpError> {
        let gone = Outcome::Deleted {
            name: name.to_path_buf(),
            kind,
            files: 0,
            superseded,
        };
        // If a folder on the way is not a real folder any more, the name is not in DST.
        let path = self.shown(name);
        let meta = match self.store.stat(name) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(gone),
            Err(e) => return Err(OpError::io("deleting", &path)(e)),
        };
        // A conversion (plain to gzipped or back) keeps no version when the content lives
        // on under the other name; if the source changed too, the old copy is kept.
        let keep = self.keeping() && (!superseded || !self.same_as_source(name, &meta));
        let files = if meta.kind == Kind::Dir {
            let below = self.below(name).map_err(OpError::io("deleting", &path))?;
            let files = below.iter().filter(|(_, kind)| *kind != Kind::Dir).count() as u64;
            if keep {
                self.preserve_all(&below)?;
            }
            // Another worker may have deleted it (or a folder around it) meanwhile.
            self.store
                .remove_tree(name)
                .map_err(OpError::io("deleting", &path))?;
            files
        } else {
            if keep && meta.kind == Kind::File {
                self.preserve(name, false)?;
            } else {
                remove_if_there(self.store(), name).map_err(OpError::io("deleting", &path))?;
            }
            1
        };
        Ok(Outcome::Deleted {
            name: name.to_path_buf(),
            kind: meta.kind,
            files,
            superseded,
        })
    }

    /// True if the stored file `name` (with metadata `meta`) still has the source's
    /// mtime, to the nanosecond, under either form of its name: then a conversion
    /// loses nothing. Where the store keeps whole seconds, the second must match and so
    /// must the size of the content (a gzipped name's by its trailer): an edit within
    /// the same second that changed the size is told apart, one that kept it is not.
    fn same_as_source(&self, name: &Path, meta: &Stat) -> bool {
        let stored = meta.mtime;
        let caps = self.store.caps();
        let Ok(source) = self.source() else {
            return false;
        };
        let gz = crate::engine::plan::strip_gz(name);
        let content_size = || match &gz {
            None => Some(meta.size),
            Some(_) => self
                .store
                .open(name)
                .and_then(|mut f| crate::store::gzip_isize(&mut *f))
                .ok()
                .flatten(),
        };
        [Some(name.to_path_buf()), gz.clone()]
            .into_iter()
            .flatten()
            .filter_map(|rel| source.status(&rel).ok())
            .any(|s| {
                s.kind == Kind::File
                    && (s.mtime == stored
                        || (caps.mtime_kept(stored, s.mtime)
                            && content_size()
                                .is_some_and(|n| crate::index::isize_matches(n, s.size))))
            })
    }

    /// Moves `from` to `to` inside DST (a folder with all it holds, keeping inodes);
    /// whatever stood at `to` is replaced, as it was in the source.
    pub(super) fn rename(&self, from: &Path, to: &Path, kind: Kind) -> Result<Outcome, OpError> {
        let from_path = self.shown(from);
        let meta = match self.store.stat(from) {
            Ok(Some(meta)) => meta,
            Ok(None) => return Err(OpError::io("renaming", &from_path)(not_found())),
            Err(e) => return Err(OpError::io("renaming", &from_path)(e)),
        };
        if meta.kind != kind {
            return Err(OpError::Io {
                doing: "renaming",
                path: from_path,
                err: io::Error::other("it is not what the index recorded"),
            });
        }
        self.dest_dir(to, Reach::Parents)?;
        let there = self.store.stat(to).ok().flatten();
        if kind == Kind::File
            && let Some(there) = &there
            && there.kind == Kind::File
            && meta.ino != 0
            && there.ino == meta.ino
            && self.caps.hard_links
        {
            // Both names are one file already (`to` was linked to it: a new folder's
            // pass ran before the move's events): rename(2) would do nothing and leave
            // `from`. `to` holds it, so `from` only goes; nothing is replaced or kept.
            self.store
                .remove_file(from)
                .map_err(OpError::io("renaming", &from_path))?;
            return Ok(Outcome::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                kind,
            });
        }
        let onto_a_file = there.as_ref().is_some_and(|t| t.kind == Kind::File);
        match there.map(|m| m.kind) {
            // rename(2) replaces a file or an empty folder, not a full one.
            // What stood there is kept as versions and reported as deleted.
            Some(found) if found == Kind::Dir || kind == Kind::Dir => {
                if found == Kind::Dir {
                    self.displace_tree(to)?;
                } else {
                    self.displace(to)?;
                }
            }
            // The rename replaces a file: keep it first.
            Some(Kind::File) => self.preserve(to, true)?,
            _ => {}
        }
        // Where the store moves in steps, the index holds the intent first: a run that
        // dies between the copy and the delete is finished by the next one.
        self.intend_rename(from, to);
        if let Err(e) = self.store.rename(from, to) {
            self.rename_failed(from);
            return Err(OpError::io("renaming", &from_path)(e));
        }
        if kind == Kind::File
            && onto_a_file
            && meta.ino == 0
            && self.caps.hard_links
            && self
                .store
                .stat(from)
                .is_ok_and(|s| s.is_some_and(|s| s.kind == Kind::File))
        {
            // The same on a store without inode numbers (SFTP): a rename between two
            // names of one file did nothing, and `from` is still there.
            self.store
                .remove_file(from)
                .map_err(OpError::io("renaming", &from_path))?;
        }
        Ok(Outcome::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            kind,
        })
    }

    /// Sets a folder's mode and mtime (the root when `rel` is empty).
    pub(super) fn set_dir_meta(&self, rel: &Path, meta: &Meta) -> io::Result<()> {
        if self
            .store
            .set_meta(rel, Kind::Dir, meta.mode, meta.mtime)?
            .is_some()
        {
            return Ok(());
        }
        match self.store.stat(rel)? {
            None => Err(not_found()),
            Some(_) => Err(io::Error::other("it is not a folder")),
        }
    }

    /// Makes the folders that hold `name` (with [`Reach::Itself`], `name` itself too)
    /// real folders in DST: missing ones are created, and a file or link where the
    /// source now has a folder is replaced by one (kept as a version first). The store
    /// never passes through a symlink, so a planted one is displaced like a file, never
    /// followed.
    pub(super) fn dest_dir(&self, name: &Path, reach: Reach) -> Result<(), OpError> {
        let target = match reach {
            Reach::Parents => name.parent().unwrap_or(Path::new("")),
            Reach::Itself(..) => name,
        };
        if target.as_os_str().is_empty() {
            return Ok(());
        }
        // The usual case, in one look: the folder is there.
        if self
            .store
            .stat(target)
            .is_ok_and(|s| s.is_some_and(|s| s.kind == Kind::Dir))
        {
            return Ok(());
        }
        let mut dir = PathBuf::new();
        for part in target.components() {
            dir.push(part);
            match self.store.stat(&dir) {
                Ok(Some(m)) if m.kind == Kind::Dir => continue,
                Ok(Some(_)) => self.displace(&dir)?,
                Ok(None) => {}
                Err(e) => return Err(OpError::io("reading", &self.shown(&dir))(e)),
            }
            // A folder on a name's way is made as the source has it too: it is the same
            // folder its own mkdir would make (a worker with a file inside it got there
            // first), so a store that sets the metadata at once sets it once.
            let meta = match reach {
                Reach::Itself(meta, owner) if dir == target => Some((meta.mode, meta.mtime, owner)),
                _ => self.source_folder(&dir),
            };
            let made = match meta {
                Some((mode, mtime, owner)) => {
                    let owner = owner.filter(|_| self.sets_owners());
                    self.store.mkdir_as(&dir, mode, mtime, owner)
                }
                None => self.store.mkdir(&dir),
            };
            match made {
                Ok(()) => {}
                // Another worker made it first.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.is_dir(&dir) => {}
                Err(e) => return Err(OpError::io("creating folder", &self.shown(&dir))(e)),
            }
        }
        Ok(())
    }

    /// The mode and mtime of the folder `rel` in the source, if it is one there (never
    /// for datasafe's own state folder).
    fn source_folder(&self, rel: &Path) -> Option<(u32, filetime::FileTime, Option<Owner>)> {
        if rel.starts_with(layout::state()) {
            return None;
        }
        let status = self.source().ok()?.status(rel).ok()?;
        let owner = Owner {
            uid: status.uid,
            gid: status.gid,
        };
        (status.kind == Kind::Dir).then_some((status.mode, status.mtime, Some(owner)))
    }

    /// True if `name` in DST is a real folder (reached without a symlink).
    pub(super) fn is_dir(&self, name: &Path) -> bool {
        matches!(self.store.stat(name), Ok(Some(s)) if s.kind == Kind::Dir)
    }

    /// True if `name` in DST is a regular file (reached without a symlink).
    pub(super) fn is_file(&self, name: &Path) -> bool {
        matches!(self.store.stat(name), Ok(Some(s)) if s.kind == Kind::File)
    }

    /// Everything below the folder `name` in DST (not `name` itself), parents before
    /// what they hold, with their kinds; never through a symlink. Names that vanish
    /// meanwhile (another worker deleting a folder inside) are left out.
    pub(super) fn below(&self, name: &Path) -> io::Result<Vec<(PathBuf, Kind)>> {
        let mut found = Vec::new();
        let mut todo = vec![name.to_path_buf()];
        while let Some(dir) = todo.pop() {
            let listed = match self.store.list(&dir) {
                Ok(listed) => listed,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            for item in listed {
                if item.kind == Kind::Dir {
                    todo.push(item.name.clone());
                }
                found.push((item.name, item.kind));
            }
        }
        Ok(found)
    }

    /// Removes the file or symlink `name`, where a folder must now go. One of the
    /// mirror's files is kept as a version first; either is reported as deleted
    /// ([`Executor::take_displaced`]). Inside the state folder it is only removed.
    fn displace(&self, name: &Path) -> Result<(), OpError> {
        let path = self.shown(name);
        if name.starts_with(layout::state()) {
            return remove_if_there(self.store(), name).map_err(OpError::io("replacing", &path));
        }
        // Two workers may meet the same file on their way down: one removes it.
        let _one = self
            .displacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let meta = match self.store.stat(name) {
            Ok(Some(m)) if m.kind != Kind::Dir => m,
            Ok(_) => return Ok(()),
            Err(e) => return Err(OpError::io("replacing", &path)(e)),
        };
        if meta.kind == Kind::File && self.keeping() {
            self.preserve(name, false)?;
        } else {
            remove_if_there(self.store(), name).map_err(OpError::io("replacing", &path))?;
        }
        self.note_displaced(Displaced {
            name: name.to_path_buf(),
            kind: meta.kind,
            files: 1,
        });
        Ok(())
    }

    /// Removes the folder stored as `name` where a file or link must now go: its files
    /// are kept as versions first, and reported as deleted.
    pub(super) fn displace_tree(&self, name: &Path) -> Result<(), OpError> {
        let _one = self
            .displacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.is_dir(name) {
            return Ok(());
        }
        let path = self.shown(name);
        let below = self.below(name).map_err(OpError::io("replacing", &path))?;
        let files = below.iter().filter(|(_, kind)| *kind != Kind::Dir).count() as u64;
        if self.keeping() {
            self.preserve_all(&below)?;
        }
        self.store
            .remove_tree(name)
            .map_err(OpError::io("replacing", &path))?;
        self.note_displaced(Displaced {
            name: name.to_path_buf(),
            kind: Kind::Dir,
            files,
        });
        Ok(())
    }

    fn note_displaced(&self, displaced: Displaced) {
        self.displaced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(displaced);
    }
}

/// Removes the file or link `name`; already gone is fine (another worker got there
/// first).
fn remove_if_there(store: &dyn crate::store::Store, name: &Path) -> io::Result<()> {
    match store.remove_file(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The OS's "no such file or directory", as a path that is not there reports it.
fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

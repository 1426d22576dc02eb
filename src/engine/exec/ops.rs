//! The single-path operations behind [`Executor::run`]: copy (plain or gzip, hashing as
//! it goes), compare by content, set metadata, mkdir, symlink, delete, rename. Each one
//! is a few store primitives on names relative to DST (the store never passes through
//! anything in DST that is not a real folder); [`Executor::dest_dir`] makes the folders
//! on the way real folders, displacing what stands there.

use super::{COPY_RETRIES, Displaced, Done, Executor, OpError, Outcome};
use crate::engine::source::{self, Source};
use crate::hash::{self, CHUNK, Digest};
use crate::model::{Entry, Kind, Meta};
use crate::model::{Record, Stored};
use crate::platform;
use crate::store::{Staged, Stat, TempFile, layout};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// How far [`Executor::dest_dir`] may change DST on its way to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// Create (or replace with) folders up to the name's parent.
    Parents,
    /// As `Parents`, and the name itself as a folder.
    Itself,
}

/// Where copied bytes go: the temp file itself or a gzip encoder in front of it.
enum Sink<'f> {
    Plain(&'f mut dyn TempFile),
    Gzip(Box<GzEncoder<&'f mut dyn TempFile>>),
}

impl Sink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.write_all(buf),
            Sink::Gzip(g) => g.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(_) => Ok(()),
            Sink::Gzip(g) => g.finish().map(drop),
        }
    }
}

impl Executor {
    /// Copies (or gzips) a source file to its name in DST, copying again if the source
    /// changed meanwhile. `was` is what the index says DST holds now (size, SHA-256):
    /// when the new content only extends it, no version is kept.
    ///
    /// A file still being written after [`COPY_RETRIES`] more tries is installed only as
    /// a consistent prefix: at most the size it had when the copy began is read (a
    /// growing file is not chased), and those bytes, read again through the same handle
    /// afterwards, must still be what was copied. An append-only writer (a log, a
    /// download) leaves them alone; a rewrite or a truncation does not, and then nothing
    /// is installed. Either way the outcome is [`Outcome::Unsettled`], not a failure,
    /// and the record's size (the bytes copied) makes the next look copy it again. This
    /// is rsync's choice too (copy what was read, and redo the file when it changed),
    /// with the extra check that what lands under the real name is a prefix of the file.
    pub(super) fn copy(
        &self,
        entry: &Entry,
        stored: Stored,
        was: Option<(u64, Digest)>,
    ) -> Result<Outcome, OpError> {
        let src_path = self.src.join(&entry.rel);
        let name = stored.name_for(&entry.rel);
        // The source folder holding the file, reached from SRC's root without passing a
        // symlink: the file is opened, and checked afterwards, in that folder.
        let (folder, file_name) = Source::open(&self.src)
            .and_then(|source| source.parent(&entry.rel))
            .map_err(OpError::io("reading", &src_path))?;
        let mut attempt = 0;
        loop {
            let reading = OpError::io("reading", &src_path);
            let src = folder
                .open_file(file_name)
                .map_err(source::no_longer_a_file)
                .map_err(OpError::io("reading", &src_path))?;
            let before = src.metadata().map_err(reading)?;
            if !before.is_file() {
                return Err(OpError::Io {
                    doing: "reading",
                    path: src_path,
                    err: io::Error::other("it is no longer a regular file"),
                });
            }
            // Errors name the file being stored, not the temp file it goes through.
            let dst_path = self.shown(&name);
            let mut temp = self.temp_file(&dst_path)?;
            let read = self.stream(
                &src,
                temp.as_mut(),
                stored,
                (&src_path, &dst_path),
                before.len(),
                was.map(|(size, _)| size),
            )?;
            let meta = Meta::of(&before);
            temp.set_meta(meta.mode, meta.mtime)
                .map_err(OpError::io("setting mode and time on", &dst_path))?;
            // The install below keeps the inode: this is what DST will hold.
            let disk = temp.stat().ok().map(|s| s.on_disk());
            let settled = source::unchanged(&before, &src, folder.status(file_name));
            if !settled && attempt < COPY_RETRIES {
                attempt += 1;
                log::debug!(
                    "{} changed while being copied; copying again",
                    src_path.display()
                );
                continue;
            }
            let extends = was.filter(|(_, sha)| read.prefix == Some(*sha));
            let record = Record {
                kind: Kind::File,
                meta: Meta {
                    size: read.bytes,
                    ..meta
                },
                sha256: Some(read.sha),
                stored,
                target: None,
                disk,
            };
            if !settled {
                if !self.still_prefix(&src, &read, &src_path)? {
                    return Err(OpError::Unsettled { path: src_path });
                }
                self.install(
                    temp.as_mut(),
                    &name,
                    Some((&record.meta, stored, read.sha)),
                    extends,
                )?;
                return Ok(Outcome::Unsettled {
                    name,
                    path: src_path,
                    installed: Some((record, read.bytes)),
                });
            }
            self.install(
                temp.as_mut(),
                &name,
                Some((&meta, stored, read.sha)),
                extends,
            )?;
            let done = match stored {
                Stored::Plain => Done::Copied,
                Stored::Gzip => Done::Gzipped,
            };
            return Ok(Outcome::Stored {
                done,
                name,
                record,
                bytes: read.bytes,
            });
        }
    }

    /// True if the first `read.bytes` bytes of `src` (read again from the start, through
    /// the same handle) still hash to what was copied.
    fn still_prefix(&self, src: &File, read: &Streamed, src_path: &Path) -> Result<bool, OpError> {
        use std::io::{Seek, SeekFrom};
        let mut handle = src;
        handle
            .seek(SeekFrom::Start(0))
            .map_err(OpError::io("reading", src_path))?;
        let mut buf = vec![0u8; CHUNK];
        let (sha, counted) = hash::hash_reader_until(handle.take(read.bytes), &mut buf, &self.stop)
            .map_err(|e| self.read_error(e, src_path))?;
        Ok(counted == read.bytes && sha == read.sha)
    }

    /// Streams `src` into `file`, hashing the source bytes and gzipping them if asked,
    /// reading no more than `limit` bytes. Also hashes the first `prefix_at` bytes on
    /// the way, when the file has that many. Checks for Ctrl-C per chunk.
    fn stream(
        &self,
        mut src: &File,
        file: &mut dyn TempFile,
        stored: Stored,
        (src_path, dst_path): (&Path, &Path),
        limit: u64,
        prefix_at: Option<u64>,
    ) -> Result<Streamed, OpError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let mut prefix = None;
        if prefix_at == Some(0) {
            prefix = Some(Digest::from_hasher(hasher.clone()));
        }
        let mut sink = match stored {
            Stored::Plain => Sink::Plain(file),
            Stored::Gzip => Sink::Gzip(Box::new(GzEncoder::new(file, self.level))),
        };
        loop {
            if self.stopped() {
                return Err(OpError::Interrupted);
            }
            let want = (limit - total).min(buf.len() as u64) as usize;
            if want == 0 {
                break;
            }
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OpError::io("reading", src_path)(e)),
            };
            let chunk = &buf[..n];
            match prefix_at {
                Some(at) if prefix.is_none() && at > total && at <= total + n as u64 => {
                    let (head, tail) = chunk.split_at((at - total) as usize);
                    hasher.update(head);
                    prefix = Some(Digest::from_hasher(hasher.clone()));
                    hasher.update(tail);
                }
                _ => hasher.update(chunk),
            }
            sink.write_all(chunk)
                .map_err(OpError::io("writing", dst_path))?;
            total += n as u64;
        }
        sink.finish().map_err(OpError::io("writing", dst_path))?;
        Ok(Streamed {
            sha: Digest::from_hasher(hasher),
            bytes: total,
            prefix,
        })
    }

    /// `--checksum`: copies only if the content differs from what DST holds.
    pub(super) fn compare(
        &self,
        entry: &Entry,
        stored: Stored,
        known: &Record,
    ) -> Result<Outcome, OpError> {
        let src_path = self.src.join(&entry.rel);
        let name = stored.name_for(&entry.rel);
        // The index may hold a digest for a file since removed from DST: then copy.
        if !self.is_file(&name) {
            return self.copy(entry, stored, None);
        }
        let dst_path = self.shown(&name);
        let src = Source::open(&self.src)
            .and_then(|source| source.open_file(&entry.rel))
            .map_err(source::no_longer_a_file)
            .map_err(OpError::io("reading", &src_path))?;
        let src_sha =
            hash::hash_reader(StopReader(self, src)).map_err(|e| self.read_error(e, &src_path))?;
        // What DST really holds, not what the index says it should: a copy damaged
        // behind our back (bit rot, an edit in the mirror) is found and replaced, as
        // rsync --checksum would. Unreadable or corrupt gzip counts as different.
        let dst_sha = match self.stored_digest(&name, stored) {
            Ok(sha) => Some(sha),
            Err(e) if self.stopped() => return Err(self.read_error(e, &dst_path)),
            Err(e) => {
                log::warn!(
                    "{} cannot be read back ({}); copying it again",
                    crate::output::names::esc(&dst_path),
                    crate::output::names::io_message(&e)
                );
                None
            }
        };
        if dst_sha != Some(src_sha) {
            if known
                .sha256
                .is_some_and(|recorded| Some(recorded) != dst_sha)
            {
                log::warn!(
                    "{} did not hold what was mirrored; copying it again",
                    crate::output::names::esc(&dst_path)
                );
            }
            return self.copy(entry, stored, None);
        }
        if known.meta != entry.meta {
            return self.set_meta(entry, stored, Some(src_sha));
        }
        let record = Record {
            sha256: Some(src_sha),
            ..known.clone()
        };
        Ok(Outcome::Same { name, record })
    }

    /// Sets mode and mtime on a stored file whose content is current.
    pub(super) fn set_meta(
        &self,
        entry: &Entry,
        stored: Stored,
        sha256: Option<Digest>,
    ) -> Result<Outcome, OpError> {
        let name = stored.name_for(&entry.rel);
        // The stored file may be gone, or replaced by something else, behind the index's
        // back: then only a copy makes DST current. The store never sets them through a
        // planted symlink.
        let set = self
            .store
            .set_meta(&name, Kind::File, entry.meta.mode, entry.meta.mtime)
            .map_err(OpError::io("setting mode and time on", &self.shown(&name)))?;
        let Some(now) = set else {
            return self.copy(entry, stored, None);
        };
        let record = Record {
            kind: Kind::File,
            meta: entry.meta,
            sha256,
            stored,
            target: None,
            disk: Some(now.on_disk()),
        };
        Ok(Outcome::Stored {
            done: Done::Updated,
            name,
            record,
            bytes: 0,
        })
    }

    /// Creates a folder (replacing a file or symlink of that name). Its mode and mtime
    /// are set after its content, by [`Executor::finish_dir`].
    pub(super) fn mkdir(&self, entry: &Entry) -> Result<Outcome, OpError> {
        if !entry.rel.as_os_str().is_empty() {
            self.dest_dir(&entry.rel, Reach::Itself)?;
        }
        Ok(Outcome::Stored {
            done: Done::Mkdir,
            name: entry.rel.clone(),
            record: Record {
                kind: Kind::Dir,
                meta: entry.meta,
                sha256: None,
                stored: Stored::Plain,
                target: None,
                disk: None,
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
        Ok(Outcome::Stored {
            done: Done::Linked,
            name: entry.rel.clone(),
            record: Record {
                kind: Kind::Symlink,
                meta: entry.meta,
                sha256: None,
                stored: Stored::Plain,
                target: entry.target.clone(),
                disk,
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
    /// loses nothing.
    fn same_as_source(&self, name: &Path, meta: &Stat) -> bool {
        let stored = meta.mtime;
        let Ok(source) = Source::open(&self.src) else {
            return false;
        };
        [
            Some(name.to_path_buf()),
            crate::engine::plan::strip_gz(name),
        ]
        .into_iter()
        .flatten()
        .filter_map(|rel| source.status(&rel).ok())
        .any(|s| s.kind == Kind::File && s.mtime == stored)
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
        match self.store.stat(to).ok().flatten().map(|m| m.kind) {
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
        self.store
            .rename(from, to)
            .map_err(OpError::io("renaming", &from_path))?;
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
            Reach::Itself => name,
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
            match self.store.mkdir(&dir) {
                Ok(()) => {}
                // Another worker made it first.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.is_dir(&dir) => {}
                Err(e) => return Err(OpError::io("creating folder", &self.shown(&dir))(e)),
            }
        }
        Ok(())
    }

    /// True if `name` in DST is a real folder (reached without a symlink).
    fn is_dir(&self, name: &Path) -> bool {
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

    /// Renames a finished temp file (or link) to its final name in DST, replacing a
    /// folder that stands there (its files kept as versions first, and reported). The
    /// file it replaces is kept as a version unless it is the same source state as the
    /// new one (`new`: same mtime to the nanosecond, and for a plain copy the same
    /// size), as after a run killed before its index was saved: recopying that must not
    /// pile up identical versions. When the new content only extends it (`extends`: the
    /// old size and digest, which the new content's first bytes match), the new copy
    /// contains the old one: only a prefix marker is kept, no bytes.
    fn install(
        &self,
        temp: &mut dyn Staged,
        name: &Path,
        new: Option<(&Meta, Stored, Digest)>,
        extends: Option<(u64, Digest)>,
    ) -> Result<(), OpError> {
        let path = self.shown(name);
        // One look at what stands there now serves every check below. The folders on
        // the way are made real folders only when the install finds they are not (see
        // below): in the usual case they are, and a look less per file counts.
        let mut old = temp.look(name).ok().flatten();
        if old.is_some_and(|m| m.kind == Kind::Dir) {
            self.displace_tree(name)?;
            old = None;
        }
        let old = old.filter(|m| m.kind == Kind::File);
        // The same source state written again (a run killed before its index was
        // saved) keeps no version; size and mtime say so cheaply, the content makes sure
        // (a copy edited behind datasafe's back with its mtime put back is kept).
        let same = new.is_some_and(|(meta, stored, sha)| {
            old.is_some_and(|old| {
                old.mtime == meta.mtime && (stored == Stored::Gzip || old.size == meta.size)
            }) && self.stored_digest(name, stored).ok() == Some(sha)
        });
        // The index's digest is trusted only for the file it describes: for a plain
        // copy, the old file must have the recorded size.
        let grown = extends.filter(|(size, _)| {
            old.is_some_and(|old| {
                new.is_some_and(|(_, s, _)| s == Stored::Gzip) || old.size == *size
            })
        });
        match grown {
            _ if same || old.is_none() => {}
            Some(grown) => self.preserve_prefix(name, grown)?,
            None => self.preserve(name, true)?,
        }
        let mut placed = temp.install(name);
        if placed.as_ref().is_err_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            )
        }) {
            // A folder on the way is missing or is not a folder: then nothing stood at
            // the name to keep. Make them folders (displacing what is there) and go
            // again.
            self.dest_dir(name, Reach::Parents)?;
            placed = temp.install(name);
        }
        match placed {
            Ok(()) => Ok(()),
            Err(_) if self.is_dir(name) => {
                self.displace_tree(name)?;
                temp.install(name).map_err(OpError::io("writing", &path))
            }
            Err(e) => Err(OpError::io("writing", &path)(e)),
        }
    }

    /// The SHA-256 of the content of the file `name` in DST (un-gzipped if `stored`
    /// says so); never through a symlink, stopping on Ctrl-C.
    fn stored_digest(&self, name: &Path, stored: Stored) -> io::Result<Digest> {
        let reader = StopReader(self, self.store.open(name)?);
        match stored {
            Stored::Plain => hash::hash_reader(reader),
            Stored::Gzip => hash::hash_reader(MultiGzDecoder::new(reader)),
        }
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
    fn displace_tree(&self, name: &Path) -> Result<(), OpError> {
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

    /// A new private temp file in DST's temp folder.
    pub(super) fn temp_file(&self, for_path: &Path) -> Result<Box<dyn TempFile>, OpError> {
        self.store
            .temp_file()
            .map_err(OpError::io("writing", for_path))
    }

    fn read_error(&self, err: io::Error, path: &Path) -> OpError {
        if self.stopped() {
            OpError::Interrupted
        } else {
            OpError::io("reading", path)(err)
        }
    }
}

/// What [`Executor::stream`] read.
struct Streamed {
    /// SHA-256 of the bytes read.
    sha: Digest,
    /// How many.
    bytes: u64,
    /// SHA-256 of the first bytes, up to the size asked for, when there were that many.
    prefix: Option<Digest>,
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

/// A reader that fails once Ctrl-C was pressed, so hashing a big file stops promptly.
struct StopReader<'e, R>(&'e Executor, R);

impl<R: Read> Read for StopReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.stopped() {
            return Err(io::Error::other("interrupted"));
        }
        self.1.read(buf)
    }
}

/// True if the source still looks as it did when the copy started: same size and mtime
/// through the open handle, and the path still names the same file.
pub fn unchanged_since(before: &Metadata, src: &File, path: &Path) -> bool {
    let (Ok(after), Ok(now)) = (src.metadata(), fs::symlink_metadata(path)) else {
        return false;
    };
    Meta::of(before) == Meta::of(&after)
        && Meta::of(before) == Meta::of(&now)
        && platform::file_id(before) == platform::file_id(&now)
}

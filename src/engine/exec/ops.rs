//! The single-path operations behind [`Executor::run`]: copy (plain or gzip, hashing as
//! it goes), compare by content, set metadata, mkdir, symlink, delete. Each one reaches
//! DST only through [`Executor::dest_dir`], which refuses to pass through anything in
//! DST that is not a real folder.

use super::{COPY_RETRIES, Displaced, Done, Executor, OpError, Outcome};
use crate::engine::source::{self, Source};
use crate::hash::{self, CHUNK, Digest};
use crate::model::{Entry, Kind, Meta};
use crate::model::{OnDisk, Record, Stored};
use crate::platform;
use crate::store::layout::STATE_DIR;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// How far [`Executor::dest_dir`] may change DST on its way to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// Create nothing.
    Lookup,
    /// Create (or replace with) folders up to the name's parent.
    Parents,
    /// As `Parents`, and the name itself as a folder.
    Itself,
}

/// A temp file that is removed unless it was renamed into place.
pub(super) struct Temp {
    pub(super) path: PathBuf,
    armed: bool,
}

impl Temp {
    pub(super) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where copied bytes go: the temp file itself or a gzip encoder in front of it.
enum Sink<'f> {
    Plain(&'f File),
    Gzip(Box<GzEncoder<&'f File>>),
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
            let dst_path = self.dst.join(&name);
            let (temp, file) = self.temp_file(&dst_path)?;
            let read = self.stream(
                &src,
                &file,
                stored,
                (&src_path, &dst_path),
                before.len(),
                was.map(|(size, _)| size),
            )?;
            let meta = Meta::of(&before);
            set_file_meta(&file, &meta)
                .map_err(OpError::io("setting mode and time on", &dst_path))?;
            // The rename below keeps the inode: this is what DST will hold.
            let disk = file.metadata().ok().map(|m| OnDisk::of(&m));
            drop(file);
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
                    &temp.path,
                    &name,
                    Some((&record.meta, stored, read.sha)),
                    extends,
                )?;
                temp.keep();
                return Ok(Outcome::Unsettled {
                    name,
                    path: src_path,
                    installed: Some((record, read.bytes)),
                });
            }
            self.install(&temp.path, &name, Some((&meta, stored, read.sha)), extends)?;
            temp.keep();
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
        file: &File,
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
        let dst_path = match self.dest_path(&name, Reach::Lookup) {
            Ok(p) if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) => p,
            _ => return self.copy(entry, stored, None),
        };
        let src = Source::open(&self.src)
            .and_then(|source| source.open_file(&entry.rel))
            .map_err(source::no_longer_a_file)
            .map_err(OpError::io("reading", &src_path))?;
        let src_sha =
            hash::hash_reader(StopReader(self, src)).map_err(|e| self.read_error(e, &src_path))?;
        // What DST really holds, not what the index says it should: a copy damaged
        // behind our back (bit rot, an edit in the mirror) is found and replaced, as
        // rsync --checksum would. Unreadable or corrupt gzip counts as different.
        let dst_sha = match self.stored_digest(&dst_path, stored) {
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
        // back: then only a copy makes DST current. O_NOFOLLOW keeps a planted symlink
        // from leading out of DST.
        let opened = self
            .dest_path(&name, Reach::Lookup)
            .ok()
            .and_then(|p| platform::open_source(&p).ok().map(|f| (p, f)))
            .filter(|(_, f)| f.metadata().is_ok_and(|m| m.is_file()));
        let Some((path, file)) = opened else {
            return self.copy(entry, stored, None);
        };
        set_file_meta(&file, &entry.meta)
            .map_err(OpError::io("setting mode and time on", &path))?;
        let record = Record {
            kind: Kind::File,
            meta: entry.meta,
            sha256,
            stored,
            target: None,
            disk: file.metadata().ok().map(|m| OnDisk::of(&m)),
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
        let path = if entry.rel.as_os_str().is_empty() {
            self.dst.clone()
        } else {
            self.dest_dir(&entry.rel, Reach::Itself)?
        };
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
        .inspect(|_| log::trace!("folder ready: {}", path.display()))
    }

    /// Creates or replaces a symlink with the source's target and mtime.
    pub(super) fn symlink(&self, entry: &Entry) -> Result<Outcome, OpError> {
        let target = entry.target.as_deref().unwrap_or(Path::new(""));
        let temp_path = self.temp_name();
        platform::symlink(target, &temp_path)
            .map_err(OpError::io("creating symlink", &self.dst.join(&entry.rel)))?;
        let temp = Temp {
            path: temp_path,
            armed: true,
        };
        // Symlink mtimes are not supported everywhere; a failure here is not worth a
        // failed file.
        let _ = filetime::set_symlink_file_times(&temp.path, entry.meta.mtime, entry.meta.mtime);
        let disk = fs::symlink_metadata(&temp.path)
            .ok()
            .map(|m| OnDisk::of(&m));
        self.install(&temp.path, &entry.rel, None, None)?;
        temp.keep();
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
        let path = match self.dest_path(name, Reach::Lookup) {
            Ok(p) => p,
            Err(OpError::Io { err, .. }) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(gone);
            }
            Err(e) => return Err(e),
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(gone),
            Err(e) => return Err(OpError::io("deleting", &path)(e)),
        };
        // A conversion (plain to gzipped or back) keeps no version when the content lives
        // on under the other name; if the source changed too, the old copy is kept.
        let keep = self.keeping() && (!superseded || !self.same_as_source(name, &meta));
        let files = if meta.is_dir() {
            let files = walkdir::WalkDir::new(&path)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| !e.file_type().is_dir())
                .count() as u64;
            if keep {
                self.preserve_tree(name, &path)?;
            }
            match fs::remove_dir_all(&path) {
                // Another worker deleted it (or a folder around it) meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.map_err(OpError::io("deleting", &path))?,
            }
            files
        } else {
            if keep && meta.is_file() {
                self.preserve(name, &path, false)?;
            } else {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other.map_err(OpError::io("deleting", &path))?,
                }
            }
            1
        };
        Ok(Outcome::Deleted {
            name: name.to_path_buf(),
            kind: Kind::of(meta.file_type()),
            files,
            superseded,
        })
    }

    /// True if the stored file `name` (with metadata `meta`) still has the source's
    /// mtime, to the nanosecond, under either form of its name: then a conversion
    /// loses nothing.
    fn same_as_source(&self, name: &Path, meta: &Metadata) -> bool {
        let stored = filetime::FileTime::from_last_modification_time(meta);
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
        let from_path = self.dest_path(from, Reach::Lookup)?;
        let meta = fs::symlink_metadata(&from_path).map_err(OpError::io("renaming", &from_path))?;
        if Kind::of(meta.file_type()) != kind {
            return Err(OpError::Io {
                doing: "renaming",
                path: from_path,
                err: io::Error::other("it is not what the index recorded"),
            });
        }
        let to_path = self.dest_path(to, Reach::Parents)?;
        match fs::symlink_metadata(&to_path) {
            // rename(2) replaces a file or an empty folder, not a full one.
            // What stood there is kept as versions and reported as deleted.
            Ok(m) if m.is_dir() && kind == Kind::Dir || m.is_dir() != (kind == Kind::Dir) => {
                if m.is_dir() {
                    self.displace_tree(to, &to_path)?;
                } else {
                    self.displace(&to_path)?;
                }
            }
            // The rename replaces a file: keep it first.
            Ok(m) if m.is_file() => self.preserve(to, &to_path, true)?,
            _ => {}
        }
        fs::rename(&from_path, &to_path).map_err(OpError::io("renaming", &from_path))?;
        Ok(Outcome::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            kind,
        })
    }

    /// Sets a folder's mode and mtime (the root when `rel` is empty).
    pub(super) fn set_dir_meta(&self, rel: &Path, meta: &Meta) -> io::Result<()> {
        let path = if rel.as_os_str().is_empty() {
            self.dst.clone()
        } else {
            match self.dest_path(rel, Reach::Lookup) {
                Ok(path) => path,
                Err(OpError::Io { err, .. }) => return Err(err),
                Err(_) => return Ok(()),
            }
        };
        if !fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::Error::other("it is not a folder"));
        }
        platform::set_mode_path(&path, meta.mode)?;
        filetime::set_file_mtime(&path, meta.mtime)
    }

    /// The folder in DST that holds `name` (with [`Reach::Itself`], `name` itself as a
    /// folder), checked component by component so a symlink inside DST is never
    /// followed. With [`Reach::Lookup`] nothing is created and a missing folder, file or
    /// link on the way is `NotFound`; otherwise missing folders are created and a file or
    /// link where the source now has a folder is replaced by one.
    pub(super) fn dest_dir(&self, name: &Path, reach: Reach) -> Result<PathBuf, OpError> {
        let mut dir = self.dst.clone();
        let parent = name.parent().unwrap_or(Path::new(""));
        let itself = match reach {
            Reach::Itself => name.file_name(),
            _ => None,
        };
        for part in parent.components().map(|c| c.as_os_str()).chain(itself) {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) if reach == Reach::Lookup => {
                    return Err(OpError::io("reading", &dir)(io::ErrorKind::NotFound.into()));
                }
                Ok(_) => self.displace(&dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound && reach != Reach::Lookup => {}
                Err(e) => return Err(OpError::io("reading", &dir)(e)),
            }
            match fs::create_dir(&dir) {
                Ok(()) => {}
                // Another worker made it first.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(OpError::io("creating folder", &dir)(e)),
            }
        }
        Ok(dir)
    }

    /// The full path of `name` in DST, its folders checked as by [`Executor::dest_dir`].
    fn dest_path(&self, name: &Path, reach: Reach) -> Result<PathBuf, OpError> {
        Ok(self.dest_dir(name, reach)?.join(file_name(name)))
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
        temp: &Path,
        name: &Path,
        new: Option<(&Meta, Stored, Digest)>,
        extends: Option<(u64, Digest)>,
    ) -> Result<(), OpError> {
        let path = self.dest_path(name, Reach::Parents)?;
        // One look at what stands there now serves every check below.
        let mut old = fs::symlink_metadata(&path).ok();
        if old.as_ref().is_some_and(|m| m.is_dir()) {
            self.displace_tree(name, &path)?;
            old = None;
        }
        let old = old.filter(|m| m.is_file());
        // The same source state written again (a run killed before its index was
        // saved) keeps no version; size and mtime say so cheaply, the content makes sure
        // (a copy edited behind datasafe's back with its mtime put back is kept).
        let same = new.is_some_and(|(meta, stored, sha)| {
            old.as_ref().is_some_and(|old| {
                filetime::FileTime::from_last_modification_time(old) == meta.mtime
                    && (stored == Stored::Gzip || old.len() == meta.size)
            }) && self.stored_digest(&path, stored).ok() == Some(sha)
        });
        // The index's digest is trusted only for the file it describes: for a plain
        // copy, the old file must have the recorded size.
        let grown = extends.filter(|(size, _)| {
            old.as_ref().is_some_and(|old| {
                new.is_some_and(|(_, s, _)| s == Stored::Gzip) || old.len() == *size
            })
        });
        match grown {
            _ if same || old.is_none() => {}
            Some(grown) => self.preserve_prefix(name, &path, grown)?,
            None => self.preserve(name, &path, true)?,
        }
        match fs::rename(temp, &path) {
            Ok(()) => Ok(()),
            Err(_) if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {
                self.displace_tree(name, &path)?;
                fs::rename(temp, &path).map_err(OpError::io("writing", &path))
            }
            Err(e) => Err(OpError::io("writing", &path)(e)),
        }
    }

    /// The SHA-256 of the content of the file at `path` in DST (un-gzipped if `stored`
    /// says so); never through a symlink, stopping on Ctrl-C.
    fn stored_digest(&self, path: &Path, stored: Stored) -> io::Result<Digest> {
        let reader = StopReader(self, platform::open_source(path)?);
        match stored {
            Stored::Plain => hash::hash_reader(reader),
            Stored::Gzip => hash::hash_reader(MultiGzDecoder::new(reader)),
        }
    }

    /// Removes the file or symlink at `path`, where a folder must now go. One of the
    /// mirror's files is kept as a version first; either is reported as deleted
    /// ([`Executor::take_displaced`]). Inside the state folder it is only removed.
    fn displace(&self, path: &Path) -> Result<(), OpError> {
        let name = path.strip_prefix(&self.dst).unwrap_or(path).to_path_buf();
        if name.starts_with(STATE_DIR) {
            return remove_if_there(path, false).map_err(OpError::io("replacing", path));
        }
        // Two workers may meet the same file on their way down: one removes it.
        let _one = self
            .displacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let meta = match fs::symlink_metadata(path) {
            Ok(m) if !m.is_dir() => m,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(OpError::io("replacing", path)(e)),
        };
        if meta.is_file() && self.keeping() {
            self.preserve(&name, path, false)?;
        } else {
            remove_if_there(path, false).map_err(OpError::io("replacing", path))?;
        }
        self.note_displaced(Displaced {
            name,
            kind: Kind::of(meta.file_type()),
            files: 1,
        });
        Ok(())
    }

    /// Removes the folder stored as `name` (at `path`) where a file or link must now go:
    /// its files are kept as versions first, and reported as deleted.
    fn displace_tree(&self, name: &Path, path: &Path) -> Result<(), OpError> {
        let _one = self
            .displacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let files = walkdir::WalkDir::new(path)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| !e.file_type().is_dir())
            .count() as u64;
        self.preserve_tree(name, path)?;
        remove_if_there(path, true).map_err(OpError::io("replacing", path))?;
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

    fn temp_name(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.tmp", std::process::id()))
    }

    /// A new private temp file in DST's temp folder.
    pub(super) fn temp_file(&self, for_path: &Path) -> Result<(Temp, File), OpError> {
        loop {
            let path = self.temp_name();
            match platform::create_private(&path) {
                Ok(file) => return Ok((Temp { path, armed: true }, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(OpError::io("writing", for_path)(e)),
            }
        }
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

/// Removes a file (or, with `tree`, a folder and all in it); already gone is fine
/// (another worker got there first).
fn remove_if_there(path: &Path, tree: bool) -> io::Result<()> {
    let result = if tree {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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

fn set_file_meta(file: &File, meta: &Meta) -> io::Result<()> {
    platform::set_mode_file(file, meta.mode)?;
    filetime::set_file_handle_times(file, Some(meta.mtime), Some(meta.mtime))
}

fn file_name(name: &Path) -> &std::ffi::OsStr {
    name.file_name().unwrap_or(name.as_os_str())
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

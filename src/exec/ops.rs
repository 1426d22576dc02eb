//! The single-path operations behind [`Executor::run`]: copy (plain or gzip, hashing as
//! it goes), compare by content, set metadata, mkdir, symlink, delete. Each one reaches
//! DST only through [`Executor::dest_dir`], which refuses to pass through anything in
//! DST that is not a real folder.

use super::{COPY_RETRIES, Done, Executor, OpError, Outcome};
use crate::hash::{self, CHUNK, Digest};
use crate::index::{OnDisk, Record, Stored};
use crate::platform;
use crate::scan::{Entry, Kind, Meta};
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
struct Temp {
    path: PathBuf,
    armed: bool,
}

impl Temp {
    fn keep(mut self) {
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
    /// changed meanwhile.
    pub(super) fn copy(&self, entry: &Entry, stored: Stored) -> Result<Outcome, OpError> {
        let src_path = self.src.join(&entry.rel);
        let name = stored.name_for(&entry.rel);
        let mut attempt = 0;
        loop {
            let reading = OpError::io("reading", &src_path);
            let src =
                platform::open_source(&src_path).map_err(OpError::io("reading", &src_path))?;
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
            let (sha, bytes) = self.stream(&src, &file, stored, &src_path, &dst_path)?;
            let meta = Meta::of(&before);
            set_file_meta(&file, &meta)
                .map_err(OpError::io("setting mode and time on", &dst_path))?;
            // The rename below keeps the inode: this is what DST will hold.
            let disk = file.metadata().ok().map(|m| OnDisk::of(&m));
            drop(file);
            let settled = unchanged_since(&before, &src, &src_path);
            if !settled && attempt < COPY_RETRIES {
                attempt += 1;
                log::debug!(
                    "{} changed while being copied; copying again",
                    src_path.display()
                );
                continue;
            }
            // Even an unsettled copy is installed: it is a whole snapshot of what was read
            // (a growing log's prefix), better than the older copy, and the recorded size
            // below makes the next run copy it again.
            self.install(&temp.path, &name, Some((&meta, stored)))?;
            temp.keep();
            if !settled {
                return Err(OpError::Unsettled { path: src_path });
            }
            let record = Record {
                kind: Kind::File,
                meta: Meta {
                    size: bytes,
                    ..meta
                },
                sha256: Some(sha),
                stored,
                target: None,
                disk,
            };
            let done = match stored {
                Stored::Plain => Done::Copied,
                Stored::Gzip => Done::Gzipped,
            };
            return Ok(Outcome::Stored {
                done,
                name,
                record,
                bytes,
            });
        }
    }

    /// Streams `src` into `file`, hashing the source bytes and gzipping them if asked.
    /// Returns the digest and the number of source bytes. Checks for Ctrl-C per chunk.
    fn stream(
        &self,
        mut src: &File,
        file: &File,
        stored: Stored,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(Digest, u64), OpError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let mut sink = match stored {
            Stored::Plain => Sink::Plain(file),
            Stored::Gzip => Sink::Gzip(Box::new(GzEncoder::new(file, self.level))),
        };
        loop {
            if self.stopped() {
                return Err(OpError::Interrupted);
            }
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OpError::io("reading", src_path)(e)),
            };
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])
                .map_err(OpError::io("writing", dst_path))?;
            total += n as u64;
        }
        sink.finish().map_err(OpError::io("writing", dst_path))?;
        Ok((Digest::from_hasher(hasher), total))
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
            _ => return self.copy(entry, stored),
        };
        let src = platform::open_source(&src_path).map_err(OpError::io("reading", &src_path))?;
        let src_sha =
            hash::hash_reader(StopReader(self, src)).map_err(|e| self.read_error(e, &src_path))?;
        // What DST really holds, not what the index says it should: a copy damaged
        // behind our back (bit rot, an edit in the mirror) is found and replaced, as
        // rsync --checksum would. Unreadable or corrupt gzip counts as different.
        let file = platform::open_source(&dst_path).map_err(OpError::io("reading", &dst_path))?;
        let reader = StopReader(self, file);
        let dst_sha = match stored {
            Stored::Plain => hash::hash_reader(reader),
            Stored::Gzip => hash::hash_reader(MultiGzDecoder::new(reader)),
        };
        let dst_sha = match dst_sha {
            Ok(sha) => Some(sha),
            Err(e) if self.stopped() => return Err(self.read_error(e, &dst_path)),
            Err(e) => {
                log::warn!(
                    "{} cannot be read back ({}); copying it again",
                    crate::names::esc(&dst_path),
                    crate::names::io_message(&e)
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
                    crate::names::esc(&dst_path)
                );
            }
            return self.copy(entry, stored);
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
            return self.copy(entry, stored);
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
        self.install(&temp.path, &entry.rel, None)?;
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
        let keep = self.keep.keeps() && (!superseded || !self.same_as_source(name, &meta));
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
        [Some(name.to_path_buf()), crate::plan::strip_gz(name)]
            .into_iter()
            .flatten()
            .filter_map(|rel| fs::symlink_metadata(self.src.join(rel)).ok())
            .any(|m| m.is_file() && filetime::FileTime::from_last_modification_time(&m) == stored)
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
            Ok(m) if m.is_dir() && kind == Kind::Dir || m.is_dir() != (kind == Kind::Dir) => {
                if m.is_dir() {
                    self.preserve_tree(to, &to_path)?;
                    fs::remove_dir_all(&to_path)
                } else {
                    self.preserve(to, &to_path, true)?;
                    fs::remove_file(&to_path)
                }
                .map_err(OpError::io("replacing", &to_path))?;
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
                Ok(_) => match fs::remove_file(&dir) {
                    // Another worker replaced it first (removed it, or made it a folder).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) => {}
                    other => other.map_err(OpError::io("replacing", &dir))?,
                },
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
    /// folder that stands there. The file it replaces is kept as a version unless it is
    /// the same source state as the new one (`new`: same mtime to the nanosecond, and
    /// for a plain copy the same size), as after a run killed before its index was
    /// saved: recopying that must not pile up identical versions.
    fn install(
        &self,
        temp: &Path,
        name: &Path,
        new: Option<(&Meta, Stored)>,
    ) -> Result<(), OpError> {
        let path = self.dest_path(name, Reach::Parents)?;
        let same = new.is_some_and(|(meta, stored)| {
            fs::symlink_metadata(&path).is_ok_and(|old| {
                old.is_file()
                    && filetime::FileTime::from_last_modification_time(&old) == meta.mtime
                    && (stored == Stored::Gzip || old.len() == meta.size)
            })
        });
        if !same {
            self.preserve(name, &path, true)?;
        }
        match fs::rename(temp, &path) {
            Ok(()) => Ok(()),
            Err(_) if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {
                fs::remove_dir_all(&path).map_err(OpError::io("replacing", &path))?;
                fs::rename(temp, &path).map_err(OpError::io("writing", &path))
            }
            Err(e) => Err(OpError::io("writing", &path)(e)),
        }
    }

    fn temp_name(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.tmp", std::process::id()))
    }

    /// A new private temp file in DST's temp folder.
    fn temp_file(&self, for_path: &Path) -> Result<(Temp, File), OpError> {
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

//! Copying content into DST, behind [`Executor::run`]: copy (plain or gzip, hashing as
//! it goes, copying again while the source changes), compare by content, and installing
//! a finished temp file under its name (keeping the old copy as a version first).

use super::gzip::GzipWriter;
use super::ops::Reach;
use super::{COPY_RETRIES, Done, Executor, OpError, Outcome};
use crate::engine::source;
use crate::hash::{self, CHUNK, Digest};
use crate::model::{Entry, Kind, Meta};
use crate::model::{Record, Stored};
use crate::platform;
use crate::sparse;
use crate::store::{Staged, TempFile};
use filetime::FileTime;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where copied bytes go: the temp file itself or a gzip encoder in front of it.
enum Sink<'f> {
    Plain(&'f mut dyn TempFile),
    Gzip(Box<GzipWriter<&'f mut dyn TempFile>>),
}

impl Sink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.write_all(buf),
            Sink::Gzip(g) => g.write_all(buf),
        }
    }

    /// The next `len` bytes are zeros: a hole in a plain copy where the store can
    /// leave one; compressed as any bytes into a gzip stream (which has no holes).
    fn skip(&mut self, len: u64) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.skip_hole(len),
            Sink::Gzip(g) => sparse::zeros(len).try_for_each(|zeros| g.write_all(zeros)),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(_) => Ok(()),
            Sink::Gzip(g) => g.finish().map(drop),
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

/// The digests a copy computes as the content passes: the whole content's and, on the
/// way, that of its first `prefix_at` bytes (when there are that many).
struct Hashed {
    hasher: Sha256,
    total: u64,
    prefix_at: Option<u64>,
    prefix: Option<Digest>,
}

impl Hashed {
    fn new(prefix_at: Option<u64>) -> Hashed {
        let hasher = Sha256::new();
        let prefix = (prefix_at == Some(0)).then(|| Digest::from_hasher(hasher.clone()));
        Hashed {
            hasher,
            total: 0,
            prefix_at,
            prefix,
        }
    }

    /// Hashes the next bytes of the content.
    fn update(&mut self, chunk: &[u8]) {
        let n = chunk.len() as u64;
        match self.prefix_at {
            Some(at) if self.prefix.is_none() && at > self.total && at <= self.total + n => {
                let (head, tail) = chunk.split_at((at - self.total) as usize);
                self.hasher.update(head);
                self.prefix = Some(Digest::from_hasher(self.hasher.clone()));
                self.hasher.update(tail);
            }
            _ => self.hasher.update(chunk),
        }
        self.total += n;
    }

    fn finish(self) -> Streamed {
        Streamed {
            sha: Digest::from_hasher(self.hasher),
            bytes: self.total,
            prefix: self.prefix,
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
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let (folder, file_name) = match self.source().and_then(|s| s.parent(&entry.rel)) {
            Ok(found) => found,
            Err(e) if gone(&e) => return Ok(Outcome::Vanished { name }),
            Err(e) => return Err(OpError::io("reading", &src_path)(e)),
        };
        let mut attempt = 0;
        loop {
            let reading = OpError::io("reading", &src_path);
            let src = match folder.open_file(file_name) {
                Ok(src) => src,
                Err(e) if gone(&e) && attempt == 0 => return Ok(Outcome::Vanished { name }),
                Err(e) => {
                    Err(source::no_longer_a_file(e)).map_err(OpError::io("reading", &src_path))?
                }
            };
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
                platform::may_have_holes(&before),
            )?;
            let meta = Meta::of(&before);
            let wanted = crate::model::Attrs {
                owner: platform::owner_of(&before),
                xattrs: entry.attrs.xattrs.clone(),
            };
            let attrs = self.attrs_on_temp(temp.as_mut(), &wanted, &dst_path)?;
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
                attrs,
                link: entry.link,
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
    ///
    /// A source that `holes` (allocates less than its size) is read by its data
    /// segments only (`SEEK_DATA`/`SEEK_HOLE`): each hole is hashed as the zeros it
    /// reads as, so the digest is the whole content's, and becomes a hole in a plain
    /// copy ([`TempFile::skip_hole`]). A 2 GiB file with 1 MiB of data costs the hash
    /// of 2 GiB of zeros (about 1.2 s at sha2's 1.7 GB/s here), nothing else.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        mut src: &File,
        file: &mut dyn TempFile,
        stored: Stored,
        (src_path, dst_path): (&Path, &Path),
        limit: u64,
        prefix_at: Option<u64>,
        holes: bool,
    ) -> Result<Streamed, OpError> {
        let reading = |e| OpError::io("reading", src_path)(e);
        // No bigger than the file: zeroing a whole chunk per small file shows.
        let mut buf = vec![0u8; usize::try_from(limit).map_or(CHUNK, |n| n.min(CHUNK))];
        let mut hashed = Hashed::new(prefix_at);
        let mut sink = match stored {
            Stored::Plain => Sink::Plain(file),
            Stored::Gzip => Sink::Gzip(Box::new(GzipWriter::new(file, self.level, limit))),
        };
        let segments = match holes {
            true => Some(sparse::data_segments(src, limit).map_err(reading)?),
            false => None,
        };
        match segments {
            None => self.pump(
                src,
                &mut buf,
                limit,
                &mut hashed,
                &mut sink,
                src_path,
                dst_path,
            )?,
            Some(segments) => {
                for data in segments {
                    self.hole(data.start - hashed.total, &mut hashed, &mut sink, dst_path)?;
                    src.seek(SeekFrom::Start(data.start)).map_err(reading)?;
                    self.pump(
                        src,
                        &mut buf,
                        data.end,
                        &mut hashed,
                        &mut sink,
                        src_path,
                        dst_path,
                    )?;
                    if hashed.total < data.end {
                        // The file ended early: it shrank, and the copy's re-check
                        // will copy it again.
                        break;
                    }
                }
                // A hole up to the end, unless the file shrank below it meanwhile.
                let end = limit.min(src.metadata().map_err(reading)?.len());
                if end > hashed.total {
                    self.hole(end - hashed.total, &mut hashed, &mut sink, dst_path)?;
                }
            }
        }
        sink.finish().map_err(OpError::io("writing", dst_path))?;
        Ok(hashed.finish())
    }

    /// Copies `src` from where it is until the content reaches `until` bytes or the
    /// file ends.
    #[allow(clippy::too_many_arguments)]
    fn pump(
        &self,
        mut src: &File,
        buf: &mut [u8],
        until: u64,
        hashed: &mut Hashed,
        sink: &mut Sink<'_>,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), OpError> {
        loop {
            if self.stopped() {
                return Err(OpError::Interrupted);
            }
            let want = (until - hashed.total).min(buf.len() as u64) as usize;
            if want == 0 {
                return Ok(());
            }
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OpError::io("reading", src_path)(e)),
            };
            let chunk = &buf[..n];
            hashed.update(chunk);
            sink.write_all(chunk)
                .map_err(OpError::io("writing", dst_path))?;
        }
    }

    /// A hole of `len` bytes in the source: hashed as zeros, a hole in the copy.
    fn hole(
        &self,
        len: u64,
        hashed: &mut Hashed,
        sink: &mut Sink<'_>,
        dst_path: &Path,
    ) -> Result<(), OpError> {
        if len == 0 {
            return Ok(());
        }
        for zeros in sparse::zeros(len) {
            if self.stopped() {
                return Err(OpError::Interrupted);
            }
            hashed.update(zeros);
        }
        sink.skip(len).map_err(OpError::io("writing", dst_path))
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
        let src = self
            .source()
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
        if known.meta != entry.meta || known.attrs != entry.attrs || known.link != entry.link {
            let changed = crate::engine::plan::Changed::between(known, entry);
            return self.set_meta(entry, stored, Some(src_sha), changed);
        }
        let record = Record {
            sha256: Some(src_sha),
            ..known.clone()
        };
        Ok(Outcome::Same { name, record })
    }

    /// Renames a finished temp file (or link) to its final name in DST, replacing a
    /// folder that stands there (its files kept as versions first, and reported). The
    /// file it replaces is kept as a version unless it is the same source state as the
    /// new one (`new`: same mtime to the nanosecond, and for a plain copy the same
    /// size), as after a run killed before its index was saved: recopying that must not
    /// pile up identical versions. When the new content only extends it (`extends`: the
    /// old size and digest, which the new content's first bytes match), the new copy
    /// contains the old one: only a prefix marker is kept, no bytes.
    pub(super) fn install(
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
        // A store that keeps whole seconds (SFTP) holds the time cut to its second.
        let whole_seconds = !self.store.caps().nanosecond_mtimes;
        let same_time = |a: FileTime, b: FileTime| {
            a == b || (whole_seconds && a.unix_seconds() == b.unix_seconds())
        };
        let same = new.is_some_and(|(meta, stored, sha)| {
            old.is_some_and(|old| {
                same_time(old.mtime, meta.mtime)
                    && (stored == Stored::Gzip || old.size == meta.size)
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

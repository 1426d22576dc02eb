//! Writing a tar stream (plain, or into the gzip/zstd encoder the caller chose): one
//! GNU header per entry, with the mode, the mtime to the second and, when the mtime
//! has a fraction, a PAX `mtime` record that keeps its nanoseconds.
//!
//! Small files are read ahead on reader threads (whole, and read again while they
//! change, as `sync` copies); entries are written in order by this thread; compression
//! runs on the encoder's own threads (zstd's workers, gzp's). A tar header states the
//! size before the content, so a large file that changes while it is streamed cannot be
//! taken back: it is archived as read (cut or zero-filled to the size promised) and
//! reported.
//!
//! A plain file with holes (issue 16; a stored file of a local mirror, or a plain
//! folder's) becomes a GNU sparse entry, as `tar --sparse` writes: type `S`, the map of
//! its data in the header and in extension headers after it, then only the data. GNU
//! tar and bsdtar extract it with its holes. A gzip-stored file is written whole (its
//! holes are not known without reading it twice); zip has no holes.

use super::read::{self, Exact, Failure, FileAt, Got};
use super::source::{Entry, EntryKind};
use super::{Ctx, Stop, Tally};
use crate::hash::Stoppable;
use crate::model::Stored;
use crate::output::names::{esc, io_message};
use crate::read::restore::Content;
use crate::sparse;
use crossbeam_channel::{Receiver, Sender, bounded};
use filetime::FileTime;
use std::collections::VecDeque;
use std::io::{self, Read as _, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tar::{Builder, EntryType, GnuExtSparseHeader, Header};

/// Writes `entries` as a tar stream into `out` and returns `out`. Reader threads read
/// the small files ahead (a window of 4 × threads), so opening and reading overlap the
/// compression; this thread appends everything in order.
pub fn write<W: Write>(
    out: W,
    entries: &mut dyn Iterator<Item = Entry>,
    ctx: &Ctx<'_>,
) -> Result<(W, Tally), Stop> {
    // tar writes a header at a time (512 bytes); an encoder is far faster fed in large
    // blocks, each call to it costing a round through its (multithreaded) state.
    let mut tar = Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    tar.follow_symlinks(false);
    let mut tally = Tally::default();
    let window = ctx.jobs * 4;
    let (jobs_tx, jobs_rx) = bounded::<(FileAt, Stored, Sender<Read>)>(window);
    std::thread::scope(|scope| {
        for _ in 0..ctx.jobs {
            let jobs = jobs_rx.clone();
            scope.spawn(move || {
                for (path, stored, done) in jobs {
                    let _ = done.send(read::read_small(&path, stored, ctx.stop));
                }
            });
        }
        drop(jobs_rx);
        let mut pending: VecDeque<(Entry, String, Option<Receiver<Read>>)> = VecDeque::new();
        let run = || -> Result<(), Stop> {
            for entry in entries {
                if ctx.interrupted() {
                    return Err(Stop::Interrupted);
                }
                let name = ctx.name(&entry);
                let read = match &entry.kind {
                    EntryKind::File { path, stored } => {
                        let (done, read) = bounded(1);
                        jobs_tx
                            .send((path.clone(), *stored, done))
                            .map_err(|_| Stop::Fatal(anyhow::anyhow!("a reader thread died")))?;
                        Some(read)
                    }
                    _ => None,
                };
                pending.push_back((entry, name, read));
                while pending.len() > window {
                    if let Some((entry, name, read)) = pending.pop_front() {
                        put(&mut tar, &entry, name, read, ctx, &mut tally)?;
                    }
                }
            }
            while let Some((entry, name, read)) = pending.pop_front() {
                put(&mut tar, &entry, name, read, ctx, &mut tally)?;
            }
            Ok(())
        };
        let result = run();
        drop(jobs_tx);
        drop(pending);
        result
    })?;
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let out = tar.into_inner().map_err(fatal)?;
    let out = out.into_inner().map_err(|e| fatal(e.into_error()))?;
    Ok((out, tally))
}

/// What a reader thread hands back.
type Read = Result<Got, Failure>;

/// Appends one entry, in order (a file's content from its reader thread).
fn put<W: Write>(
    tar: &mut Builder<io::BufWriter<W>>,
    entry: &Entry,
    name: String,
    read: Option<Receiver<Read>>,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let name = PathBuf::from(name);
    match &entry.kind {
        EntryKind::Dir => {
            let mut header = header(EntryType::Directory, entry.mode, entry.mtime, 0);
            pax_mtime(tar, entry.mtime).map_err(fatal)?;
            // With a trailing slash, as GNU tar writes folders.
            let mut name = name.into_os_string();
            name.push("/");
            tar.append_data(&mut header, &name, io::empty())
                .map_err(fatal)?;
            ctx.done_dir(entry);
        }
        EntryKind::Link(target) => {
            let mut header = header(EntryType::Symlink, entry.mode, entry.mtime, 0);
            pax_mtime(tar, entry.mtime).map_err(fatal)?;
            tar.append_link(&mut header, &name, target).map_err(fatal)?;
            ctx.done_link(entry, target, tally);
        }
        EntryKind::File { path, stored } => {
            let got = match read {
                Some(read) => read.recv().unwrap_or_else(|_| {
                    Err(Failure::of(
                        path,
                        io::Error::other("its reader thread stopped"),
                        ctx.stop,
                    ))
                }),
                None => Ok(Got::Large),
            };
            match got {
                Ok(Got::Small {
                    data,
                    meta,
                    settled,
                }) => {
                    let mut header = header(EntryType::Regular, meta.mode, meta.mtime, meta.size);
                    pax_mtime(tar, meta.mtime).map_err(fatal)?;
                    tar.append_data(&mut header, &name, &data[..])
                        .map_err(fatal)?;
                    ctx.done_file(entry, &path.shown(), meta.size, settled, tally);
                }
                Ok(Got::Large) => stream(tar, &name, entry, path, *stored, ctx, tally)?,
                Err(Failure::Interrupted) => return Err(Stop::Interrupted),
                Err(failure) => ctx.failed(&failure, tally),
            }
        }
    }
    Ok(())
}

/// Streams a large file: its size first (a gzipped one is decoded once to count it),
/// then exactly that many bytes.
fn stream<W: Write>(
    tar: &mut Builder<io::BufWriter<W>>,
    name: &Path,
    entry: &Entry,
    path: &FileAt,
    stored: Stored,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let failed = |failure: Failure, tally: &mut Tally| match failure {
        Failure::Interrupted => Err(Stop::Interrupted),
        failure => {
            ctx.failed(&failure, tally);
            Ok(())
        }
    };
    let counted = match stored {
        Stored::Plain => None,
        Stored::Gzip => {
            let counting = read::open(path, stored, ctx.stop).and_then(|mut o| {
                io::copy(&mut o.reader, &mut io::sink()).map_err(|e| Failure::of(path, e, ctx.stop))
            });
            match counting {
                Ok(n) => Some(n),
                Err(failure) => return failed(failure, tally),
            }
        }
    };
    let opened = match read::open(path, stored, ctx.stop) {
        Ok(opened) => opened,
        Err(failure) => return failed(failure, tally),
    };
    let meta = opened.before.meta();
    let size = counted.unwrap_or(meta.size);
    let segments = match stored {
        Stored::Plain => opened.reader.inner.file().data_segments(size).ok(),
        Stored::Gzip => None,
    }
    .filter(|segments| sparse::has_holes(segments, size));
    pax_mtime(tar, meta.mtime).map_err(fatal)?;
    let before = opened.before;
    let (reader, exact) = match segments {
        None => {
            let mut header = header(EntryType::Regular, meta.mode, meta.mtime, size);
            let mut exact = Exact {
                inner: opened.reader,
                left: size,
                short: false,
                error: None,
            };
            tar.append_data(&mut header, name, &mut exact)
                .map_err(fatal)?;
            (exact.inner, (exact.short, exact.error))
        }
        Some(segments) => {
            let data: u64 = segments.iter().map(|s| s.end - s.start).sum();
            let mut header = header(EntryType::GNUSparse, meta.mode, meta.mtime, data);
            let extensions = sparse_map(&mut header, &segments, size);
            let mut exact = Exact {
                inner: Segments {
                    reader: opened.reader,
                    segments: segments.into_iter(),
                    left: 0,
                },
                left: data,
                short: false,
                error: None,
            };
            // The extension headers go between the header and the data; they are
            // whole blocks, so the padding after the data stays right.
            tar.append_data(&mut header, name, (&extensions[..]).chain(&mut exact))
                .map_err(fatal)?;
            (exact.inner.reader, (exact.short, exact.error))
        }
    };
    let (short, error) = exact;
    if let Some(err) = error {
        return failed(Failure::of(path, err, ctx.stop), tally);
    }
    let reopened = read::Opened { reader, before };
    let settled = !short && reopened.settled(path);
    if !settled {
        log::error!(
            "{} changed while being read; the archive holds it as read (run archive again for a clean copy)",
            esc(&path.shown())
        );
        tally.failed += 1;
    }
    ctx.done_file(entry, &path.shown(), size, true, tally);
    Ok(())
}

/// Makes `header` (a GNU one, type `S`) describe a file of `size` bytes whose data is
/// `segments` (GNU tar's old sparse format: the first four entries in the header, the
/// rest in extension headers of 21, and a last entry of no bytes at the end, as GNU tar
/// writes it); returns the extension headers to write after it.
fn sparse_map(header: &mut Header, segments: &[Range<u64>], size: u64) -> Vec<u8> {
    let mut entries = segments
        .iter()
        .map(|s| (s.start, s.end - s.start))
        .chain(std::iter::once((size, 0)));
    let Some(gnu) = header.as_gnu_mut() else {
        // Never: `header` makes GNU headers.
        return Vec::new();
    };
    gnu.set_real_size(size);
    for slot in gnu.sparse.iter_mut() {
        if let Some((offset, len)) = entries.next() {
            slot.set_offset(offset);
            slot.set_length(len);
        }
    }
    let mut entries = entries.peekable();
    gnu.set_is_extended(entries.peek().is_some());
    let mut out = Vec::new();
    while entries.peek().is_some() {
        let mut ext = GnuExtSparseHeader::new();
        for slot in ext.sparse.iter_mut() {
            if let Some((offset, len)) = entries.next() {
                slot.set_offset(offset);
                slot.set_length(len);
            }
        }
        ext.set_is_extended(entries.peek().is_some());
        out.extend_from_slice(ext.as_bytes());
    }
    out
}

/// The data segments of a plain file, one after the other (what a sparse entry holds).
struct Segments<'a> {
    reader: Stoppable<'a, Content>,
    segments: std::vec::IntoIter<Range<u64>>,
    /// Bytes left in the segment being read.
    left: u64,
}

impl io::Read for Segments<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some(next) = self.segments.next() else {
                return Ok(0);
            };
            let Content::Plain(file) = &mut self.reader.inner else {
                return Err(io::Error::other("a gzip stream has no holes to skip"));
            };
            file.seek(SeekFrom::Start(next.start))?;
            self.left = next.end - next.start;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.reader.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A GNU header of this type, mode, mtime and size (owner root, as `git archive`).
fn header(kind: EntryType, mode: u32, mtime: FileTime, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_mtime(u64::try_from(mtime.unix_seconds()).unwrap_or(0));
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A PAX record for the entry that follows, when its mtime has nanoseconds.
fn pax_mtime<W: Write>(tar: &mut Builder<W>, mtime: FileTime) -> io::Result<()> {
    if mtime.nanoseconds() == 0 {
        return Ok(());
    }
    let value = format!("{}.{:09}", mtime.unix_seconds(), mtime.nanoseconds());
    tar.append_pax_extensions([("mtime", value.as_bytes())])
}

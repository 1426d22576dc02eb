//! Writing a tar stream (plain, or into the gzip/zstd encoder the caller chose): one
//! GNU header per entry, with the mode, the mtime to the second and, when the mtime
//! has a fraction, a PAX `mtime` record that keeps its nanoseconds.
//!
//! Names of one file (`Entry::link`: a plain folder's device and inode, a mirror's
//! link key or stored file) are one file entry and hard-link entries to it, which carry
//! the file's mode, mtime and owner, as GNU tar writes them.
//!
//! Small files are read ahead on reader threads (whole, and read again while they
//! change, as `sync` copies); entries are written in order by this thread; compression
//! runs on the encoder's own threads (zstd's workers, gzp's). A tar header states the
//! size before the content, so a large file that changes while it is streamed cannot be
//! taken back: it is archived as read (cut or zero-filled to the size promised) and
//! reported.
//!
//! A plain file with holes (issue 16; a stored file of a local mirror, or a plain
//! folder's; whatever its size: GNU tar's rule, fewer blocks allocated than its size,
//! then `SEEK_DATA` finding a hole) becomes a GNU sparse entry, as `tar --sparse`
//! writes: type `S`, the map of
//! its data in the header and in extension headers after it, then only the data. GNU
//! tar and bsdtar extract it with its holes. A gzip-stored file is written whole (its
//! holes are not known without reading it twice); zip has no holes.

use super::read::{self, Exact, Failure, FileAt, Got};
use super::source::{Entry, EntryKind};
use super::{Ctx, Stop, Tally};
use crate::hash::Stoppable;
use crate::model::{Meta, Stored};
use crate::output::names::{esc, io_message};
use crate::read::links::Group;
use crate::read::restore::Content;
use crate::sparse;
use crossbeam_channel::{Receiver, Sender, bounded};
use filetime::FileTime;
use std::collections::{HashMap, HashSet, VecDeque};
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
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // Names of one file (`Entry::link`): the first is archived, the others are
        // hard-link entries to it.
        let mut firsts = Firsts::default();
        let mut queued: HashSet<Group> = HashSet::new();
        let run = || -> Result<(), Stop> {
            for entry in entries {
                if ctx.interrupted() {
                    return Err(Stop::Interrupted);
                }
                let name = ctx.name(&entry);
                let key = match &entry.kind {
                    EntryKind::File { .. } => entry.link,
                    _ => None,
                };
                // A later name is not read ahead: it is a link to the first (or, if the
                // first failed, streamed like a large file).
                let later = key.is_some_and(|key| !queued.insert(key));
                let read = match &entry.kind {
                    EntryKind::File { .. } if later => None,
                    EntryKind::File { path, stored } => {
                        let (done, read) = bounded(1);
                        jobs_tx
                            .send((path.clone(), *stored, done))
                            .map_err(|_| Stop::Fatal(anyhow::anyhow!("a reader thread died")))?;
                        Some(read)
                    }
                    _ => None,
                };
                pending.push_back((entry, name, read, key));
                while pending.len() > window {
                    if let Some(next) = pending.pop_front() {
                        put_named(&mut tar, next, &mut firsts, ctx, &mut tally)?;
                    }
                }
            }
            while let Some(next) = pending.pop_front() {
                put_named(&mut tar, next, &mut firsts, ctx, &mut tally)?;
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

/// An entry waiting for its turn: its name in the archive, its read-ahead and, for a
/// name of a file with several, which file it is.
type Pending = (Entry, String, Option<Receiver<Read>>, Option<Group>);

/// The files archived under a first name: where, and the mode and mtime their header
/// gave them (read when the file was), for the hard-link entries of later names.
#[derive(Default)]
struct Firsts {
    written: HashMap<Group, (PathBuf, Meta)>,
}

/// Appends one entry, in order: a later name of a file archived already as a hard-link
/// entry to the first name (with its mode, mtime and owner, as GNU tar writes one), anything
/// else by [`put`].
fn put_named<W: Write>(
    tar: &mut Builder<io::BufWriter<W>>,
    (entry, name, read, key): Pending,
    firsts: &mut Firsts,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let first = key.and_then(|key| firsts.written.get(&key));
    if let (Some((first, meta)), EntryKind::File { path, .. }) = (first, &entry.kind) {
        let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
        let mut header = header(EntryType::Link, meta.mode, meta.mtime, 0);
        owned(&mut header, &entry, ctx);
        tar.append_link(&mut header, &name, first).map_err(fatal)?;
        ctx.done_file(&entry, &path.shown(), 0, true, tally);
        return Ok(());
    }
    let failed = tally.failed;
    let wrote = put(tar, &entry, name.clone(), read, ctx, tally)?;
    if let (Some(key), Some(meta)) = (key, wrote)
        && tally.failed == failed
    {
        firsts
            .written
            .entry(key)
            .or_insert_with(|| (PathBuf::from(&name), meta));
    }
    Ok(())
}

/// Appends one entry, in order (a file's content from its reader thread); for a file
/// written, returns the mode and mtime its header gave it.
fn put<W: Write>(
    tar: &mut Builder<io::BufWriter<W>>,
    entry: &Entry,
    name: String,
    read: Option<Receiver<Read>>,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<Option<Meta>, Stop> {
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let name = PathBuf::from(name);
    match &entry.kind {
        EntryKind::Dir => {
            let mut header = header(EntryType::Directory, entry.mode, entry.mtime, 0);
            owned(&mut header, entry, ctx);
            pax(tar, entry.mtime, entry).map_err(fatal)?;
            // With a trailing slash, as GNU tar writes folders.
            let mut name = name.into_os_string();
            name.push("/");
            tar.append_data(&mut header, &name, io::empty())
                .map_err(fatal)?;
            ctx.done_dir(entry);
        }
        EntryKind::Link(target) => {
            let mut header = header(EntryType::Symlink, entry.mode, entry.mtime, 0);
            owned(&mut header, entry, ctx);
            pax(tar, entry.mtime, entry).map_err(fatal)?;
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
                    owned(&mut header, entry, ctx);
                    pax(tar, meta.mtime, entry).map_err(fatal)?;
                    tar.append_data(&mut header, &name, &data[..])
                        .map_err(fatal)?;
                    ctx.done_file(entry, &path.shown(), meta.size, settled, tally);
                    return Ok(Some(meta));
                }
                Ok(Got::Large) => return stream(tar, &name, entry, path, *stored, ctx, tally),
                Err(Failure::Interrupted) => return Err(Stop::Interrupted),
                Err(failure) => ctx.failed(&failure, tally),
            }
        }
    }
    Ok(None)
}

/// Streams a large file (or one with holes): its size first (a gzipped one is decoded
/// once to count it), then exactly that many bytes; returns the mode and mtime its
/// header gave it, if it was written.
fn stream<W: Write>(
    tar: &mut Builder<io::BufWriter<W>>,
    name: &Path,
    entry: &Entry,
    path: &FileAt,
    stored: Stored,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<Option<Meta>, Stop> {
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let failed = |failure: Failure, tally: &mut Tally| match failure {
        Failure::Interrupted => Err(Stop::Interrupted),
        failure => {
            ctx.failed(&failure, tally);
            Ok(None)
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
    pax(tar, meta.mtime, entry).map_err(fatal)?;
    let before = opened.before;
    let (reader, exact) = match segments {
        None => {
            let mut header = header(EntryType::Regular, meta.mode, meta.mtime, size);
            owned(&mut header, entry, ctx);
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
            owned(&mut header, entry, ctx);
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
    Ok(Some(meta))
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

/// A GNU header of this type, mode, mtime and size (owner root, as `git archive`, until
/// [`owned`] says otherwise).
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

/// Gives a header the entry's owner: the numbers, and the names (GNU tar and bsdtar
/// extract by name where this machine has it, as root). A name too long for the
/// header's 32 bytes is left out; the number stands.
fn owned(header: &mut Header, entry: &Entry, ctx: &Ctx<'_>) {
    let Some(owner) = entry.attrs.owner else {
        return;
    };
    header.set_uid(u64::from(owner.uid));
    header.set_gid(u64::from(owner.gid));
    let (user, group) = ctx.naming.names(owner);
    if let Some(user) = user {
        let _ = header.set_username(&user);
    }
    if let Some(group) = group {
        let _ = header.set_groupname(&group);
    }
}

/// One PAX record set for the entry that follows: its mtime when it has nanoseconds,
/// and its extended attributes and ACLs as `SCHILY.xattr.NAME` (what GNU tar's
/// `--xattrs` and bsdtar read; the ACLs' attributes byte for byte). Nothing when
/// neither is there.
fn pax<W: Write>(tar: &mut Builder<W>, mtime: FileTime, entry: &Entry) -> io::Result<()> {
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    if mtime.nanoseconds() != 0 {
        let value = format!("{}.{:09}", mtime.unix_seconds(), mtime.nanoseconds());
        records.push(("mtime".to_string(), value.into_bytes()));
    }
    if !matches!(entry.kind, EntryKind::Link(_)) {
        for (name, value) in &entry.attrs.xattrs().0 {
            // PAX keys are UTF-8; an attribute name that is not is left out.
            let Some(name) = name.to_str() else {
                log::warn!(
                    "the extended attribute {} of {} is not UTF-8; it is left out of the archive",
                    esc(Path::new(name)),
                    esc(&entry.rel)
                );
                continue;
            };
            // GNU tar restores ACLs (--acls) from their text form only.
            let acl = match name {
                "system.posix_acl_access" => Some("SCHILY.acl.access"),
                "system.posix_acl_default" => Some("SCHILY.acl.default"),
                _ => None,
            };
            if let Some(key) = acl
                && let Some(text) = crate::read::attrs::acl_text(value)
            {
                records.push((key.to_string(), text.into_bytes()));
            }
            records.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

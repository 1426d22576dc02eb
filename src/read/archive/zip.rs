//! Writing a zip: small files are deflated in parallel on worker threads (each into a
//! `zip::write::PreparedZipFile` held in memory) and stitched into the archive in
//! order by this thread; larger files are streamed by this thread straight into the
//! writer, so memory stays bounded by the window of small files in flight.
//!
//! Every entry carries its Unix mode and its mtime twice: as the DOS time (local, to
//! two seconds) every tool reads, and as an extended timestamp (UTC, to the second)
//! that `unzip` and 7-Zip prefer. Zip64 is used where sizes need it.

use super::read::{self, Failure, FileAt, Got};
use super::source::{Entry, EntryKind};
use super::{Ctx, Stop, Tally};
use crate::model::{Owner, Stored};
use chrono::{Datelike, Local, TimeZone, Timelike};
use crossbeam_channel::{Receiver, Sender, bounded};
use filetime::FileTime;
use std::collections::VecDeque;
use std::io::{Read, Seek, Write};
use zip::write::{FullFileOptions, PreparedZipFile, SimpleFileOptions};
use zip::{CompressionMethod, ZipWriter};

/// What a worker hands back for one file.
enum Prepared {
    /// Compressed in memory.
    Ready {
        /// The entry, ready to stitch.
        file: PreparedZipFile,
        /// Its uncompressed size.
        size: u64,
        /// False if it kept changing while being read.
        settled: bool,
    },
    /// Too large for memory: this thread streams it.
    Large,
}

/// One file for a worker.
struct Job {
    path: FileAt,
    stored: Stored,
    name: String,
    /// The entry's owner, for the header.
    owner: Option<Owner>,
    done: Sender<Result<Prepared, Failure>>,
}

/// One entry waiting its turn to be written, in archive order.
struct Slot {
    entry: Entry,
    name: String,
    /// A file's worker result.
    result: Option<Receiver<Result<Prepared, Failure>>>,
}

/// Writes `entries` (in archive order) into `zip` and finishes it.
pub fn write<W: Write + Seek>(
    mut zip: ZipWriter<W>,
    entries: &mut dyn Iterator<Item = Entry>,
    ctx: &Ctx<'_>,
) -> Result<(W, Tally), Stop> {
    let window = ctx.jobs * 4;
    let mut tally = Tally::default();
    let (jobs_tx, jobs_rx) = bounded::<Job>(window);
    std::thread::scope(|scope| {
        for _ in 0..ctx.jobs {
            let jobs = jobs_rx.clone();
            scope.spawn(move || {
                for job in jobs {
                    let prepared = prepare(&job, ctx);
                    let _ = job.done.send(prepared);
                }
            });
        }
        drop(jobs_rx);
        let mut pending: VecDeque<Slot> = VecDeque::new();
        let run = || -> Result<(), Stop> {
            for entry in entries {
                if ctx.interrupted() {
                    return Err(Stop::Interrupted);
                }
                let name = ctx.name(&entry);
                let result = match &entry.kind {
                    EntryKind::File { path, stored } => {
                        let (done, result) = bounded(1);
                        let job = Job {
                            path: path.clone(),
                            stored: *stored,
                            name: name.clone(),
                            owner: entry.attrs.owner,
                            done,
                        };
                        jobs_tx.send(job).map_err(|_| {
                            Stop::Fatal(anyhow::anyhow!("a compression worker died"))
                        })?;
                        Some(result)
                    }
                    _ => None,
                };
                pending.push_back(Slot {
                    entry,
                    name,
                    result,
                });
                while pending.len() > window {
                    if let Some(slot) = pending.pop_front() {
                        put(&mut zip, slot, ctx, &mut tally)?;
                    }
                }
            }
            while let Some(slot) = pending.pop_front() {
                put(&mut zip, slot, ctx, &mut tally)?;
            }
            Ok(())
        };
        let result = run();
        // Workers stop once the queue is closed; results nobody waits for are dropped.
        drop(jobs_tx);
        drop(pending);
        result
    })?;
    let out = zip.finish().map_err(|e| ctx.write_error(&e.to_string()))?;
    Ok((out, tally))
}

/// Reads and compresses one file on a worker thread.
fn prepare(job: &Job, ctx: &Ctx<'_>) -> Result<Prepared, Failure> {
    let (path, name) = (&job.path, &job.name);
    match read::read_small(path, job.stored, ctx.stop)? {
        Got::Large => Ok(Prepared::Large),
        Got::Small {
            data,
            meta,
            settled,
        } => {
            let options = options(meta.mode, meta.mtime, ctx.level, job.owner);
            let file =
                PreparedZipFile::from_data(name, options, &data).map_err(|e| Failure::Read {
                    path: path.shown().into_owned(),
                    err: std::io::Error::other(e.to_string()),
                })?;
            Ok(Prepared::Ready {
                file,
                size: meta.size,
                settled,
            })
        }
    }
}

/// Writes one entry, in order.
fn put<W: Write + Seek>(
    zip: &mut ZipWriter<W>,
    slot: Slot,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let entry = &slot.entry;
    let fatal = |e: zip::result::ZipError| ctx.write_error(&e.to_string());
    match &entry.kind {
        EntryKind::Dir => {
            zip.add_directory(
                slot.name,
                options(entry.mode, entry.mtime, ctx.level, entry.attrs.owner),
            )
            .map_err(fatal)?;
            ctx.done_dir(entry);
        }
        EntryKind::Link(target) => {
            zip.add_symlink(
                slot.name,
                target.to_string_lossy(),
                options(entry.mode, entry.mtime, ctx.level, entry.attrs.owner),
            )
            .map_err(fatal)?;
            ctx.done_link(entry, target, tally);
        }
        EntryKind::File { path, stored } => {
            let result = match slot.result {
                Some(result) => result
                    .recv()
                    .unwrap_or_else(|_| Err(Failure::of(path, io_gone(), ctx.stop))),
                None => Ok(Prepared::Large),
            };
            match result {
                Ok(Prepared::Ready {
                    file,
                    size,
                    settled,
                }) => {
                    zip.add_prepared_file(file).map_err(fatal)?;
                    ctx.done_file(entry, &path.shown(), size, settled, tally);
                }
                Ok(Prepared::Large) => stream(zip, &slot.name, entry, path, *stored, ctx, tally)?,
                Err(Failure::Interrupted) => return Err(Stop::Interrupted),
                Err(failure) => ctx.failed(&failure, tally),
            }
        }
    }
    Ok(())
}

fn io_gone() -> std::io::Error {
    std::io::Error::other("its compression worker stopped")
}

/// Streams a large file into the archive on this thread, reading it again (and
/// dropping the entry written) if it changed meanwhile; on stdout, where nothing can be
/// taken back, a changed file is kept as read and reported.
fn stream<W: Write + Seek>(
    zip: &mut ZipWriter<W>,
    name: &str,
    entry: &Entry,
    path: &FileAt,
    stored: Stored,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let fatal = |e: zip::result::ZipError| ctx.write_error(&e.to_string());
    let mut attempt = 0;
    loop {
        let mut opened = match read::open(path, stored, ctx.stop) {
            Ok(opened) => opened,
            Err(Failure::Interrupted) => return Err(Stop::Interrupted),
            Err(failure) => {
                ctx.failed(&failure, tally);
                return Ok(());
            }
        };
        let meta = opened.before.meta();
        // Zip64 fields cost 20 bytes and cover a file that grows past 4 GiB meanwhile.
        let options = options(meta.mode, meta.mtime, ctx.level, entry.attrs.owner).large_file(true);
        zip.start_file(name, options).map_err(fatal)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        let read_error = loop {
            let n = match opened.reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(e),
            };
            zip.write_all(&buf[..n])
                .map_err(|e| ctx.write_error(&e.to_string()))?;
            size += n as u64;
        };
        // On stdout nothing can be taken back: the entry stays as read.
        let rewindable = !ctx.to_stderr;
        if let Some(err) = read_error {
            if rewindable {
                zip.abort_file().map_err(fatal)?;
            }
            return match Failure::of(path, err, ctx.stop) {
                Failure::Interrupted => Err(Stop::Interrupted),
                failure => {
                    ctx.failed(&failure, tally);
                    Ok(())
                }
            };
        }
        let settled = opened.settled(path);
        if !settled && rewindable && attempt < read::RETRIES {
            attempt += 1;
            zip.abort_file().map_err(fatal)?;
            log::debug!(
                "{} changed while being read; reading again",
                path.shown().display()
            );
            continue;
        }
        ctx.done_file(entry, &path.shown(), size, settled, tally);
        return Ok(());
    }
}

/// The options of one entry: deflate at `level` (stored at 0), its mode, its mtime
/// as DOS time (local) and as an extended timestamp (UTC), and its owner's numbers in
/// Info-ZIP's Unix extra field (`0x7875`, which `unzip -X` restores; zip keeps no names).
fn options(
    mode: u32,
    mtime: FileTime,
    level: i32,
    owner: Option<Owner>,
) -> FullFileOptions<'static, 'static> {
    let mut full = timed(mode, mtime, level);
    if let Some(owner) = owner {
        // Version 1, then each id with its size.
        let mut field = vec![1u8, 4];
        field.extend_from_slice(&owner.uid.to_le_bytes());
        field.push(4);
        field.extend_from_slice(&owner.gid.to_le_bytes());
        // Only a field that would make the entry's extra data too long is refused: the
        // owner is then left out.
        let _ = full.add_extra_field(0x7875, field, false);
    }
    full
}

/// [`options`] without the owner.
fn timed(mode: u32, mtime: FileTime, level: i32) -> FullFileOptions<'static, 'static> {
    let dos = Local
        .timestamp_opt(mtime.unix_seconds(), 0)
        .single()
        .and_then(|t| {
            let year = u16::try_from(t.year()).ok()?;
            // Each part fits a u8 by its range (month, day, hour, minute, second).
            let part = |v: u32| u8::try_from(v).unwrap_or(0);
            zip::DateTime::from_date_and_time(
                year,
                part(t.month()),
                part(t.day()),
                part(t.hour()),
                part(t.minute()),
                part(t.second()),
            )
            .ok()
        })
        .unwrap_or_default();
    let (method, level) = match level {
        0 => (CompressionMethod::Stored, None),
        n => (CompressionMethod::Deflated, Some(i64::from(n))),
    };
    let simple = SimpleFileOptions::default()
        .compression_method(method)
        .compression_level(level)
        .unix_permissions(mode & 0o7777)
        .last_modified_time(dos);
    let seconds = u32::try_from(mtime.unix_seconds()).ok();
    match simple.with_extended_timestamp(seconds, None, None) {
        Ok(full) => full,
        Err(_) => simple.into_full_options(),
    }
}

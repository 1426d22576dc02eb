//! How far a full pass distrusts the index about what DST holds, and the look at DST
//! that backs it. The engine normally trusts the index: a no-op pass only lists DST's
//! names (readdir, no `stat`), so a name the index records that DST lacks, or that
//! stands there as another type (a folder where a file was), is all it can notice
//! ([`Check::Names`], handled as each entry is planned). Deeper checks run on each
//! folder's records before the scan plans in it and take the records they find wrong
//! out of what the planner sees ([`inspect_store`]), so the ordinary engine writes those names again (keeping a version of
//! what it replaces, as for any write):
//!
//! - [`Check::Stat`] (the watcher's fallback rescan): each name is `lstat`ed and a file
//!   whose size, mtime or inode differ from what was recorded when datasafe wrote it, or
//!   anything of another type, is written again.
//! - [`Check::Content`] (`sync --repair`): as `Stat`, and every file is read and hashed
//!   (un-gzipped) and compared with the SHA-256 the index recorded (or, with none
//!   recorded, with the source's), and each symlink's target with the recorded one.
//! - [`Check::Found`] (`verify --repair`): the names a verify found damaged; those whose
//!   content is intact but whose owner or attributes are not what was set keep their
//!   record, with DST's owner and attributes in it, so the planner sets them again (a
//!   metadata update, as for a mode).
//!
//! Nothing here writes anything; DST is read without following a symlink inside it.

use crate::engine::scan::DestItem;
use crate::hash::{self, Digest};
use crate::model::{Kept, Kind, Meta};
use crate::model::{MirrorState, Record, Stored};
use crate::output::names::{esc, io_message};
use crate::store::{Found, Reader, Stat};
use crossbeam_channel::bounded;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How a full pass checks what DST holds against the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Check {
    /// DST's names and their types from readdir (every full pass).
    #[default]
    Names,
    /// Also size, mtime and inode of every file (`lstat`), against what was recorded
    /// when it was written.
    Stat,
    /// Also the content of every file, against its recorded SHA-256.
    Content,
    /// The names found damaged by `verify`: `rewrite` are written again; `attrs` (content
    /// intact, owner or attributes not as set) get their owner and attributes again.
    Found {
        rewrite: Vec<PathBuf>,
        attrs: Vec<PathBuf>,
    },
}

impl Check {
    /// True if the check needs DST listed with `lstat` metadata.
    pub fn needs_detail(&self) -> bool {
        matches!(self, Check::Stat | Check::Content)
    }
}

/// What of owners and attributes the writer set in DST, so a check compares them with
/// the index: nothing where it never set them (a user's run, a store that refused).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrsSet {
    /// Owners were given.
    pub owners: bool,
    /// The attributes set (none where DST refused them).
    pub kept: Kept,
}

/// Why a record does not describe what DST holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// Something of another type stands there.
    Kind { found: Kind, want: Kind },
    /// A file's size, mtime or inode differ from what was written.
    Stat(&'static str),
    /// A file's content differs from the recorded SHA-256 (or from the source).
    Content,
    /// A symlink points elsewhere.
    Target,
    /// It cannot be read.
    Unreadable(String),
    /// `verify` found it damaged.
    Found,
}

impl std::fmt::Display for Wrong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wrong::Kind { found, want } => {
                write!(f, "{} stands where {} should be", what(*found), what(*want))
            }
            Wrong::Stat(which) => write!(f, "its {which} changed since datasafe wrote it"),
            Wrong::Content => f.write_str("its content is not what was mirrored"),
            Wrong::Target => f.write_str("the symlink points elsewhere"),
            Wrong::Unreadable(why) => write!(f, "it cannot be read: {why}"),
            Wrong::Found => f.write_str("verify found it damaged"),
        }
    }
}

/// "a file", "a folder"…
pub fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "a file",
        Kind::Dir => "a folder",
        Kind::Symlink => "a symlink",
        Kind::Special => "a special file",
    }
}

/// What the name in DST (its [`Stat`]) says about its record, without reading content:
/// `Err` if it is wrong; `Ok(Some(mode))` if only its permission bits differ (a
/// metadata update fixes that); `Ok(None)` if it matches.
/// `unix`: the store keeps inode numbers and permission bits (see
/// [`Reader::keeps_unix_meta`]); otherwise neither is compared.
pub fn judge_stat(record: &Record, stat: &Stat, unix: bool) -> Result<Option<u32>, Wrong> {
    let ino = unix.then_some(stat.ino);
    let judged = judge(record, stat.kind, &stat.meta(), ino);
    // A filesystem without permission bits shows the same mode for every file.
    judged.map(|mode| mode.filter(|_| unix))
}

/// How far apart two mtimes may be and still count as the same: FAT keeps 2 s, ext3 and
/// HFS+ 1 s, so a time set to the nanosecond may read back rounded. An edit made in DST
/// sets the time to "now", far from the source's.
const MTIME_SLACK_NS: i128 = 2_000_000_000;

/// [`judge_stat`] on plain values (pure, table-tested); `ino` `None`: not compared.
fn judge(
    record: &Record,
    found: Kind,
    disk: &Meta,
    ino: Option<u64>,
) -> Result<Option<u32>, Wrong> {
    if found != record.kind {
        return Err(Wrong::Kind {
            found,
            want: record.kind,
        });
    }
    if let (Some(recorded), Some(ino)) = (record.disk, ino)
        && record.kind != Kind::Dir
        && recorded.ino != ino
    {
        return Err(Wrong::Stat("inode"));
    }
    if record.kind == Kind::Dir {
        return Ok((disk.mode != record.meta.mode).then_some(disk.mode));
    }
    if record.kind != Kind::File {
        return Ok(None);
    }
    let size_differs = match (record.disk, record.stored) {
        (Some(recorded), _) => recorded.size != disk.size,
        (None, Stored::Plain) => record.meta.size != disk.size,
        // The gzip stream's size says nothing about the source's.
        (None, Stored::Gzip) => false,
    };
    if size_differs {
        return Err(Wrong::Stat("size"));
    }
    let ns = |t: filetime::FileTime| {
        i128::from(t.unix_seconds()) * 1_000_000_000 + i128::from(t.nanoseconds())
    };
    if (ns(disk.mtime) - ns(record.meta.mtime)).abs() >= MTIME_SLACK_NS {
        return Err(Wrong::Stat("modification time"));
    }
    Ok((disk.mode != record.meta.mode).then_some(disk.mode))
}

/// Applies `check` to `state` (the records of a full pass) given DST's `listing`:
/// records found wrong are taken out (with everything below a folder), so the planner
/// writes them again; a file whose mode alone differs keeps its record with DST's mode
/// (the planner then sets it). Each wrong name is logged with why. `src` is the source
/// root, for files with no recorded digest. Returns the names whose digest was learned
/// that way (DST holds what the source holds now), for the index.
#[allow(clippy::too_many_arguments)]
pub fn inspect_store(
    check: &Check,
    state: &mut MirrorState,
    listing: &[DestItem],
    src: &Path,
    dst: &dyn Reader,
    jobs: usize,
    stop: &AtomicBool,
    dry_run: bool,
    attrs_set: &AttrsSet,
) -> Vec<OsString> {
    let mut wrong: Vec<(OsString, Wrong)> = Vec::new();
    // Names whose owner or attributes DST holds otherwise: set again.
    let mut reset: Vec<OsString> = Vec::new();
    let mut learned = Vec::new();
    match check {
        Check::Names => return learned,
        Check::Found { rewrite, attrs } => {
            for name in rewrite {
                if state.contains_key(name.as_os_str()) {
                    wrong.push((name.clone().into_os_string(), Wrong::Found));
                }
            }
            let rewritten: HashSet<&PathBuf> = rewrite.iter().collect();
            for name in attrs.iter().filter(|n| !rewritten.contains(n)) {
                if let Some(record) = state.get_mut(name.as_os_str()) {
                    let stat = dst.stat(name).ok().flatten();
                    let mut differs = as_dst_holds(record, name, stat.as_ref(), dst, attrs_set);
                    if let Some(stat) = stat
                        && dst.keeps_unix_meta()
                        && record.kind != Kind::Symlink
                        && stat.mode != record.meta.mode
                    {
                        record.meta.mode = stat.mode;
                        differs = true;
                    }
                    if differs {
                        reset.push(name.clone().into_os_string());
                    }
                }
            }
        }
        Check::Stat | Check::Content => {
            let items: HashMap<&OsStr, &DestItem> =
                listing.iter().map(|i| (i.rel.as_os_str(), i)).collect();
            let mut to_read = Vec::new();
            let unix = dst.keeps_unix_meta();
            for (name, record) in state.iter_mut() {
                // A name DST lacks is copied when it is planned; the root is DST itself.
                let Some(meta) = items.get(name.as_os_str()).and_then(|i| i.meta.as_ref()) else {
                    continue;
                };
                match judge_stat(record, meta, unix) {
                    Err(why) => wrong.push((name.clone(), why)),
                    Ok(mode) => {
                        if let Some(mode) = mode {
                            record.meta.mode = mode;
                            reset.push(name.clone());
                        }
                        // Owners from the listing; attributes read only when content is.
                        let only_owners = AttrsSet {
                            kept: Kept::default(),
                            ..*attrs_set
                        };
                        let set = match check {
                            Check::Content => attrs_set,
                            _ => &only_owners,
                        };
                        if as_dst_holds(record, Path::new(name), Some(meta), dst, set)
                            && reset.last().is_none_or(|last| last != name)
                        {
                            reset.push(name.clone());
                        }
                        if *check == Check::Content && record.kind != Kind::Dir {
                            to_read.push((name.clone(), record.clone()));
                        }
                    }
                }
            }
            for (name, found) in read_all(to_read, src, dst, jobs, stop) {
                match found {
                    Ok(Some(digest)) => {
                        if let Some(record) = state.get_mut(&name) {
                            record.sha256 = Some(digest);
                            learned.push(name);
                        }
                    }
                    Ok(None) => {}
                    Err(why) => wrong.push((name, why)),
                }
            }
        }
    }
    if stop.load(Ordering::Relaxed) {
        return Vec::new();
    }
    wrong.sort_by(|a, b| a.0.cmp(&b.0));
    // A dry run writes nothing: it must not say it writes.
    let doing = if dry_run {
        "it would be written again"
    } else {
        "writing it again"
    };
    reset.sort();
    let setting = if dry_run {
        "they would be set again"
    } else {
        "setting them again"
    };
    let written: HashSet<&OsString> = wrong.iter().map(|(w, _)| w).collect();
    for name in reset.iter().filter(|n| !written.contains(n)) {
        log::warn!(
            "{} in the destination does not have the mode, owner or attributes datasafe set; \
             {setting}",
            esc(&dst.display(Path::new(name)))
        );
    }
    for (name, why) in wrong {
        log::warn!(
            "{} in the destination is not what datasafe wrote ({why}); {doing}",
            esc(&dst.display(Path::new(&name)))
        );
        forget_tree(state, Path::new(&name));
    }
    learned
}

/// Puts the owner and attributes DST holds for `name` (`stat`: its metadata) into its
/// `record` where they differ from what was set, so the planner, comparing them with
/// the source's, sets them again (a metadata update). Only what the writer set is
/// compared (`set`); what DST cannot say is left as recorded. True if they differed.
fn as_dst_holds(
    record: &mut Record,
    name: &Path,
    stat: Option<&Stat>,
    dst: &dyn Reader,
    set: &AttrsSet,
) -> bool {
    let mut differs = false;
    if set.owners
        && let Some(found) = stat.and_then(|s| s.owner)
        && record.attrs.owner.is_some_and(|o| o != found)
    {
        record.attrs.owner = Some(found);
        differs = true;
    }
    if set.kept.any()
        && record.kind != Kind::Symlink
        && let Ok(found) = dst.xattrs(name, &set.kept)
        && !record
            .attrs
            .xattrs()
            .differing(&found, &set.kept)
            .is_empty()
    {
        record.attrs.xattrs = found.shared();
        differs = true;
    }
    differs
}

/// Removes `name` and every record below it.
fn forget_tree(state: &mut MirrorState, name: &Path) {
    state.remove(name.as_os_str());
    let mut prefix = name.as_os_str().as_encoded_bytes().to_vec();
    prefix.push(b'/');
    state.retain(|k, _| !k.as_encoded_bytes().starts_with(&prefix));
}

/// Reads every record's content in DST through `jobs` threads. Per name: `Ok(None)` as
/// recorded; `Ok(Some(digest))` no digest was recorded, but DST holds what the source
/// holds now (the digest); `Err` why it is wrong.
fn read_all(
    records: Vec<(OsString, Record)>,
    src: &Path,
    dst: &dyn Reader,
    jobs: usize,
    stop: &AtomicBool,
) -> Vec<(OsString, Result<Option<Digest>, Wrong>)> {
    if records.is_empty() {
        return Vec::new();
    }
    // A pass reads a folder at a time: no more threads than it holds files.
    let jobs = jobs.clamp(1, records.len());
    let (job_tx, job_rx) = bounded::<(OsString, Record)>(256);
    let (done_tx, done_rx) = bounded(256);
    std::thread::scope(|s| {
        s.spawn(move || {
            for job in records {
                if stop.load(Ordering::Relaxed) || job_tx.send(job).is_err() {
                    break;
                }
            }
        });
        for _ in 0..jobs {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            s.spawn(move || {
                let mut buf = vec![0u8; hash::CHUNK];
                for (name, record) in rx {
                    let found = read_one(Path::new(&name), &record, src, dst, &mut buf, stop);
                    if tx.send((name, found)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        done_rx.into_iter().collect()
    })
}

/// Reads one record's content in DST (see [`read_all`]).
fn read_one(
    name: &Path,
    record: &Record,
    src: &Path,
    dst: &dyn Reader,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> Result<Option<Digest>, Wrong> {
    // Nothing there (gone, or a folder on the way is no folder now): the scan copies
    // what DST lacks.
    let found = dst
        .look(name)
        .map_err(|e| Wrong::Unreadable(io_message(&e)))?
        .ok_or_else(|| Wrong::Unreadable("no such file or directory".to_string()))?;
    let file = match (found, record.kind) {
        (Found::File(file), Kind::File) => file,
        (Found::Symlink(target), Kind::Symlink) => {
            return if record.target.as_deref() == Some(target.as_path()) {
                Ok(None)
            } else {
                Err(Wrong::Target)
            };
        }
        (Found::Dir, Kind::Dir) => return Ok(None),
        (found, want) => {
            return Err(Wrong::Kind {
                found: found.kind(),
                want,
            });
        }
    };
    let digest = match record.stored {
        Stored::Plain => hash::hash_reader_until(file, buf, stop),
        Stored::Gzip => hash::hash_reader_until(flate2::read::MultiGzDecoder::new(file), buf, stop),
    };
    let digest = match digest {
        Ok((digest, _)) => digest,
        // Interrupted: the caller drops everything found.
        Err(_) if stop.load(Ordering::Relaxed) => return Ok(None),
        Err(e) => return Err(Wrong::Unreadable(io_message(&e))),
    };
    match record.sha256 {
        Some(want) if want == digest => Ok(None),
        Some(_) => Err(Wrong::Content),
        None => {
            // Nothing recorded (an index rebuilt from a listing): compare with the source.
            let logical = record.stored.source_of(name);
            let theirs = crate::engine::source::Source::open(src)
                .and_then(|source| source.open_file(&logical))
                .and_then(|f| hash::hash_reader_until(f, buf, stop));
            match theirs {
                Ok((d, _)) if d == digest => Ok(Some(digest)),
                Ok(_) => Err(Wrong::Content),
                // The scan reports an unreadable or vanished source file.
                Err(_) => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OnDisk;
    use filetime::FileTime;

    fn meta(size: u64, secs: i64, mode: u32) -> Meta {
        Meta {
            size,
            mtime: FileTime::from_unix_time(secs, 7),
            mode,
        }
    }

    fn rec(kind: Kind, stored: Stored, disk: Option<OnDisk>) -> Record {
        Record {
            kind,
            meta: meta(10, 1000, 0o644),
            sha256: None,
            stored,
            target: None,
            disk,
            attrs: Default::default(),
            link: None,
        }
    }

    #[test]
    fn stat_judgements() {
        let disk = Some(OnDisk { size: 4, ino: 9 });
        let plain = rec(Kind::File, Stored::Plain, None);
        let gz = rec(Kind::File, Stored::Gzip, disk);
        let gz_old = rec(Kind::File, Stored::Gzip, None);
        let link = rec(Kind::Symlink, Stored::Plain, disk);
        let dir = rec(Kind::Dir, Stored::Plain, None);
        type Row<'a> = (&'a Record, Kind, Meta, u64, Result<Option<u32>, Wrong>);
        let table: [Row; 12] = [
            (&plain, Kind::File, meta(10, 1000, 0o644), 1, Ok(None)),
            (
                &plain,
                Kind::File,
                meta(11, 1000, 0o644),
                1,
                Err(Wrong::Stat("size")),
            ),
            (
                &plain,
                Kind::File,
                meta(10, 1002, 0o644),
                1,
                Err(Wrong::Stat("modification time")),
            ),
            // Rounded by a coarse filesystem: the same time.
            (&plain, Kind::File, meta(10, 1001, 0o644), 1, Ok(None)),
            (
                &plain,
                Kind::File,
                meta(10, 1000, 0o600),
                1,
                Ok(Some(0o600)),
            ),
            (
                &plain,
                Kind::Symlink,
                meta(10, 1000, 0o644),
                1,
                Err(Wrong::Kind {
                    found: Kind::Symlink,
                    want: Kind::File,
                }),
            ),
            // Gzipped: the recorded size on disk counts, not the source's.
            (&gz, Kind::File, meta(4, 1000, 0o644), 9, Ok(None)),
            (
                &gz,
                Kind::File,
                meta(5, 1000, 0o644),
                9,
                Err(Wrong::Stat("size")),
            ),
            (
                &gz,
                Kind::File,
                meta(4, 1000, 0o644),
                8,
                Err(Wrong::Stat("inode")),
            ),
            (&gz_old, Kind::File, meta(3, 1000, 0o644), 8, Ok(None)),
            (
                &link,
                Kind::Symlink,
                meta(0, 5, 0o777),
                8,
                Err(Wrong::Stat("inode")),
            ),
            (
                &dir,
                Kind::File,
                meta(0, 5, 0o777),
                8,
                Err(Wrong::Kind {
                    found: Kind::File,
                    want: Kind::Dir,
                }),
            ),
        ];
        for (i, (record, kind, disk, ino, want)) in table.into_iter().enumerate() {
            assert_eq!(judge(record, kind, &disk, Some(ino)), want, "row {i}");
        }
        // Where the filesystem does not keep inodes they are not compared.
        assert_eq!(
            judge(&gz, Kind::File, &meta(4, 1000, 0o644), None),
            Ok(None)
        );
    }

    #[test]
    fn a_wrong_folder_takes_its_records_with_it() {
        let mut state: MirrorState = ["d", "d/x", "d/y/z", "d0", "e"]
            .iter()
            .map(|n| (OsString::from(n), rec(Kind::File, Stored::Plain, None)))
            .collect();
        forget_tree(&mut state, Path::new("d"));
        let mut left: Vec<_> = state.into_keys().collect();
        left.sort();
        assert_eq!(left, ["d0", "e"]);
    }
}

//! `datasafe restore`: rebuilds files into TARGET as they were at a moment, from a
//! mirror's live files and its kept versions (`history`), un-gzipping them and giving
//! them back their mode and mtime to the nanosecond.
//!
//! Which content a path gets is decided by [`choose`], pure and table-tested: a version
//! stamped S held the content that was current until S, so for a moment T the earliest
//! version with S >= T is it, else the live file; and only if that content already
//! existed at T (its mtime is no later than T + 1 s). [`plan`] applies it to every path,
//! also pure. [`Writer`] then writes TARGET: every file goes through a private temp file
//! in its own folder and a rename, so no file is ever torn under its final name; folders
//! get their recorded mode and mtime last, deepest first.
//!
//! Names of one file come back as one file with several names (`read::links`): live
//! names the index groups, and names whose content at the moment is one stored file
//! in DST ([`Plan::inodes`]: the versions kept when a file with several names was
//! edited through one of them are links of its one old file).
//!
//! Restore only reads DST. TARGET may not be DST, lie inside it or contain it, and the
//! writer never passes through a symlink inside TARGET on its way to a name. Restoring is
//! one thread: it is bound by the disks far more than by gunzip.
//!
//! Holes stay holes (issue 16): a plain file whose store tells its holes (a local DST)
//! is read by its data segments only, and every file is written through
//! `sparse::HoleWriter`, which leaves runs of zeros covering whole 4 KiB blocks
//! unwritten, as `cp --sparse=always` does. So a file read from a gzip stream or a
//! remote store gets its holes back too (and a run of real zeros there becomes one).

use crate::config::{Dest, NotAFolder};
use crate::hash::{self, CHUNK, Stoppable};
use crate::model::Stored;
use crate::model::{Attrs, Kind, Meta};
use crate::output::TIME_FORMAT;
use crate::output::logging::{self, DETAIL, SUMMARY};
use crate::output::names::{esc, io_message};
use crate::platform;
use crate::read::Outcome;
use crate::read::attrs::{Giver, Owners};
use crate::read::history::{self, History, HistoryError, Kept, Live, in_scope, version_name};
use crate::read::links::{self, Firsts, Inode};
use crate::sparse::{self, HoleWriter};
use crate::store::local::beneath::{Dir, Temp};
use crate::store::{ReadFile, Reader, Stat};
use chrono::{Local, LocalResult, NaiveDateTime, TimeDelta, TimeZone};
use filetime::FileTime;
use flate2::bufread::MultiGzDecoder;
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How `--at` is written: [`TIME_FORMAT`], kept under this name for the engine, which
/// names a version's time with it.
pub const AT_FORMAT: &str = TIME_FORMAT;

/// A moment to restore, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// The local time, as version names stamp it.
    pub local: NaiveDateTime,
    /// The latest mtime content may have and still have existed at that time: the end
    /// of that second (T + 1 s), as a file time.
    pub limit: FileTime,
}

/// An `--at` that is not a local time as [`TIME_FORMAT`] writes it; the message quotes
/// the text as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --at {0:?}: write the local time as \"YYYY-MM-DD HH:MM:SS\", for example \
     --at \"2026-11-24 15:30:00\""
)]
pub struct MomentError(String);

impl Moment {
    /// Reads `--at`: `YYYY-MM-DD HH:MM:SS`, local time.
    pub fn parse(text: &str) -> Result<Moment, MomentError> {
        NaiveDateTime::parse_from_str(text.trim(), TIME_FORMAT)
            .map(Moment::at_local)
            .map_err(|_| MomentError(text.to_string()))
    }

    /// The moment a local wall-clock time stands for.
    pub fn at_local(local: NaiveDateTime) -> Moment {
        Moment {
            local,
            limit: FileTime::from_unix_time(unix_seconds(local) + 1, 0),
        }
    }
}

/// Seconds since the epoch of a local time. A time the clock showed twice (the hour
/// after summer time ends) is taken at its later instant, so nothing that existed then
/// is missed; a time it skipped (the hour summer time starts) as the offset before.
fn unix_seconds(local: NaiveDateTime) -> i64 {
    match Local.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp(),
        LocalResult::Ambiguous(_, later) => later.timestamp(),
        LocalResult::None => {
            let hour = TimeDelta::hours(1);
            Local
                .from_local_datetime(&(local - hour))
                .latest()
                .map_or(local.and_utc().timestamp(), |t| t.timestamp() + 3600)
        }
    }
}

/// One kept version of a path, as [`choose`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When it was replaced or deleted (local time, to the second).
    pub at: NaiveDateTime,
    /// Its order among versions of the same second.
    pub seq: u32,
    /// The mtime of its content.
    pub mtime: FileTime,
}

/// Which content of a path to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The version at this index of the slice given to [`choose`].
    Version(usize),
    /// The live mirror's file.
    Live,
    /// Nothing: the path did not exist then (or not as a file).
    Nothing,
}

/// Which content a path had at `at` (`None`: now, the live mirror only), given its
/// versions (any order) and the mtime of its live file, if the mirror holds one.
pub fn choose(versions: &[Stamp], live: Option<FileTime>, at: Option<&Moment>) -> Choice {
    let Some(at) = at else {
        return match live {
            Some(_) => Choice::Live,
            None => Choice::Nothing,
        };
    };
    // The content current at T is the one replaced first at or after T.
    let held = versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v.at >= at.local)
        .min_by_key(|(_, v)| (v.at, v.seq));
    let (choice, mtime) = match (held, live) {
        (Some((i, v)), _) => (Choice::Version(i), v.mtime),
        (None, Some(mtime)) => (Choice::Live, mtime),
        // Every version was replaced before T and nothing is live: deleted by then.
        (None, None) => return Choice::Nothing,
    };
    // Content written after T did not exist at T: neither did the file, then.
    if mtime <= at.limit {
        choice
    } else {
        Choice::Nothing
    }
}

/// Where one restored path's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file in DST (relative to DST: a live name or `.datasafe/versions/…`).
    File {
        /// Its path relative to DST.
        name: PathBuf,
        /// Plain or gzipped.
        stored: Stored,
        /// The mtime the live mirror gives it (`history::Live`: the index's exact time
        /// where the store keeps only whole seconds); used where the stored file agrees
        /// with it to the second.
        mtime: Option<FileTime>,
    },
    /// A live symlink.
    Link {
        /// Where it points.
        target: PathBuf,
        /// Its mtime.
        mtime: FileTime,
    },
    /// An empty live folder.
    Folder,
    /// The first `size` bytes of a file in DST (a later version, or the live file),
    /// for a prefix marker ([`crate::store::versions::Prefix`]): checked against `sha`, and
    /// given the marker's mode and mtime.
    Prefix {
        /// The file holding the bytes, relative to DST.
        name: PathBuf,
        /// Plain or gzipped.
        stored: Stored,
        /// How many bytes.
        size: u64,
        /// Their SHA-256.
        sha: crate::hash::Digest,
        /// The mode and mtime the old content had.
        meta: Meta,
    },
}

/// One path to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The source-relative path (where it goes under TARGET).
    pub rel: PathBuf,
    /// What to write there.
    pub origin: Origin,
    /// The owner and attributes to give it: the live record's when the content is the
    /// live one; none for a version's (its name records only mode and mtime).
    pub attrs: Attrs,
}

/// What a restore will write.
#[derive(Debug, Default)]
pub struct Plan {
    /// The paths to restore, sorted (parents before children).
    pub items: Vec<Item>,
    /// The recorded mode and mtime of every live folder (not only those in scope: the
    /// folders above a restored path get theirs too).
    pub folders: HashMap<PathBuf, Meta>,
    /// The recorded owner and attributes of every live folder that has any.
    pub folder_attrs: HashMap<PathBuf, Attrs>,
    /// Scopes that matched nothing in the mirror.
    pub unmatched: Vec<PathBuf>,
    /// The names in DST to be read (live or versions) that are one stored file with
    /// another such name, by that file: names of one file then (`read::links`).
    pub inodes: HashMap<PathBuf, Inode>,
}

/// Decides, for every source path in `scopes` (all, if empty), what to restore at `at`.
/// Live symlinks and empty live folders have no history: they are restored as they are,
/// unless a version of the same path was the content at `at`.
pub fn plan(live: &[Live], kept: &[Kept], scopes: &[PathBuf], at: Option<&Moment>) -> Plan {
    #[derive(Default)]
    struct Known<'a> {
        versions: Vec<&'a Kept>,
        live: Option<&'a Live>,
    }
    let mut paths: BTreeMap<&Path, Known<'_>> = BTreeMap::new();
    for l in live {
        paths.entry(&l.source).or_default().live = Some(l);
    }
    // Without --at only the live mirror is restored.
    if at.is_some() {
        for k in kept {
            paths.entry(&k.source).or_default().versions.push(k);
        }
    }
    // Whether a live folder is empty is a question about the live mirror alone.
    let live_paths: BTreeSet<&Path> = live.iter().map(|l| l.source.as_path()).collect();
    let folders = live
        .iter()
        .filter(|l| l.kind == Kind::Dir)
        .map(|l| (l.source.clone(), l.meta))
        .collect();
    let folder_attrs = live
        .iter()
        .filter(|l| l.kind == Kind::Dir && l.attrs != Attrs::default())
        .map(|l| (l.source.clone(), l.attrs.clone()))
        .collect();
    let unmatched = scopes
        .iter()
        .filter(|s| {
            let mut under =
                paths.range::<Path, _>((Bound::Included(s.as_path()), Bound::Unbounded));
            !under.next().is_some_and(|(p, _)| p.starts_with(s))
        })
        .cloned()
        .collect();
    let mut items = Vec::new();
    let mut stored: Vec<(PathBuf, Inode)> = Vec::new();
    for (&rel, path) in &paths {
        if !in_scope(rel, scopes) {
            continue;
        }
        let live_file = path.live.filter(|l| l.kind == Kind::File);
        let stamps: Vec<Stamp> = path
            .versions
            .iter()
            .map(|k| Stamp {
                at: k.version.at,
                seq: k.version.seq,
                mtime: k.meta.mtime,
            })
            .collect();
        let mut inode: Option<Inode> = None;
        let origin = match choose(&stamps, live_file.map(|l| l.meta.mtime), at) {
            Choice::Version(i) => match path.versions[i].version.prefix {
                Some(prefix) => prefix_origin(&path.versions, i, live_file, prefix),
                None => {
                    let kept = path.versions[i];
                    inode = stored_file(kept.ino, kept.meta.mtime);
                    Some(Origin::File {
                        name: version_name(&kept.version.path),
                        stored: kept.stored,
                        mtime: None,
                    })
                }
            },
            Choice::Live => live_file.map(|l| {
                inode = stored_file(l.ino, l.meta.mtime);
                Origin::File {
                    name: l.name.clone(),
                    stored: l.stored,
                    mtime: Some(l.meta.mtime),
                }
            }),
            Choice::Nothing => match path.live {
                Some(l) if l.kind == Kind::Symlink => Some(Origin::Link {
                    target: l.target.clone().unwrap_or_default(),
                    mtime: l.meta.mtime,
                }),
                Some(l) if l.kind == Kind::Dir && is_leaf(&live_paths, rel) => Some(Origin::Folder),
                _ => None,
            },
        };
        // A version's content gets no owner or attributes: only the live one's are
        // recorded (`Origin::File.mtime` is `Some` for the live file only).
        let attrs = match (&origin, path.live) {
            (Some(Origin::File { mtime: Some(_), .. }), Some(l))
            | (Some(Origin::Link { .. } | Origin::Folder), Some(l)) => l.attrs.clone(),
            _ => Attrs::default(),
        };
        if let (Some(Origin::File { name, .. }), Some(inode)) = (&origin, inode) {
            stored.push((name.clone(), inode));
        }
        match origin {
            Some(origin) => items.push(Item {
                rel: rel.to_path_buf(),
                origin,
                attrs,
            }),
            None => log::debug!("not restored: {} (it did not exist then)", esc(rel)),
        }
    }
    // A live symlink where a folder stood at `at` (a folder replaced by a link) would stop
    // that folder's files from being restored: the files win, the link is left out.
    let covers = |i: usize| {
        items.get(i + 1).is_some_and(|next: &Item| {
            matches!(items[i].origin, Origin::Link { .. }) && next.rel.starts_with(&items[i].rel)
        })
    };
    let shadowed: Vec<bool> = (0..items.len()).map(covers).collect();
    let items = items
        .into_iter()
        .zip(shadowed)
        .filter_map(|(item, shadowed)| {
            if shadowed {
                log::debug!("not restored: the link {} (a folder then)", esc(&item.rel));
            }
            (!shadowed).then_some(item)
        })
        .collect();
    // Only a stored file read under two names or more makes names one file.
    let mut names_of: HashMap<Inode, u32> = HashMap::new();
    for (_, inode) in &stored {
        *names_of.entry(*inode).or_default() += 1;
    }
    let inodes = stored
        .into_iter()
        .filter(|(_, inode)| names_of.get(inode).is_some_and(|&n| n > 1))
        .collect();
    Plan {
        items,
        folders,
        folder_attrs,
        unmatched,
        inodes,
    }
}

/// The stored file with inode number `ino` (0: the store has none) and this mtime.
fn stored_file(ino: u64, mtime: FileTime) -> Option<Inode> {
    (ino != 0).then_some(Inode { ino, mtime })
}

/// Where the bytes of the prefix marker `versions[i]` are: the first later version that
/// holds its content, else the live file (markers in between only extended it further).
fn prefix_origin(
    versions: &[&Kept],
    i: usize,
    live: Option<&Live>,
    prefix: crate::store::versions::Prefix,
) -> Option<Origin> {
    let key = |k: &Kept| (k.version.at, k.version.seq);
    let after = key(versions[i]);
    let next = versions
        .iter()
        .filter(|k| k.version.prefix.is_none() && key(k) > after)
        .min_by_key(|k| key(k));
    let (name, stored) = match (next, live) {
        (Some(k), _) => (version_name(&k.version.path), k.stored),
        (None, Some(l)) => (l.name.clone(), l.stored),
        (None, None) => {
            log::warn!(
                "cannot restore {}: its content was the start of a later copy that is gone",
                esc(&versions[i].source)
            );
            return None;
        }
    };
    Some(Origin::Prefix {
        name,
        stored,
        size: prefix.size,
        sha: prefix.sha,
        meta: versions[i].meta,
    })
}

/// True if nothing the mirror knows lies under `dir`. Paths order component by
/// component, so whatever lies under `dir` comes right after it.
fn is_leaf(paths: &BTreeSet<&Path>, dir: &Path) -> bool {
    !paths
        .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .next()
        .is_some_and(|p| p.starts_with(dir))
}

/// The content of one stored file, un-gzipped as it is read: what `restore` writes into
/// TARGET and `archive` into an archive.
pub enum Content {
    /// Stored as is.
    Plain(Box<dyn ReadFile>),
    /// Stored gzipped (possibly as several members, as `gzip` may append them).
    Gzip(Box<MultiGzDecoder<BufReader<Box<dyn ReadFile>>>>),
}

impl Content {
    /// Opens the stored file `name` of a mirror (a regular file, never through a
    /// symlink) for reading its content; also returns its `fstat` (mode and mtime are
    /// the source's).
    pub fn open(store: &dyn Reader, name: &Path, stored: Stored) -> io::Result<(Content, Stat)> {
        let file = store.open(name)?;
        let stat = file.stat()?;
        Ok((Content::of(file, stored), stat))
    }

    /// The content of an open file stored in the form `stored`.
    pub fn of(file: Box<dyn ReadFile>, stored: Stored) -> Content {
        match stored {
            Stored::Plain => Content::Plain(file),
            Stored::Gzip => Content::Gzip(Box::new(MultiGzDecoder::new(BufReader::with_capacity(
                CHUNK, file,
            )))),
        }
    }

    /// The open file, to check after reading that it did not change meanwhile.
    pub fn file(&self) -> &dyn ReadFile {
        match self {
            Content::Plain(file) => &**file,
            Content::Gzip(decoder) => &**decoder.get_ref().get_ref(),
        }
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Content::Plain(file) => file.read(buf),
            Content::Gzip(decoder) => decoder.read(buf),
        }
    }
}

/// True if a read error is the gzip decoder's word on a bad stream, as opposed to a
/// disk that failed to read.
pub fn is_damaged(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// What `datasafe restore` is asked to do: its command line, settled by the runner.
#[derive(Clone, Debug)]
pub struct Request {
    /// The mirror to restore from (a folder here, or on another machine).
    pub dst: Dest,
    /// Where the files go (created if missing; must be empty unless `force`).
    pub target: PathBuf,
    /// `--at`, as given: the local time to restore.
    pub at: Option<String>,
    /// Restore into a TARGET that is not empty.
    pub force: bool,
    /// Only these paths (relative to the mirror's root).
    pub paths: Vec<PathBuf>,
    /// Give owners the recorded numbers (as root), not those their names have here.
    pub numeric_ids: bool,
}

/// Why a restore (or `archive` of a mirror) cannot start: bad input, a mirror that
/// cannot be read, a TARGET that cannot be used. Nothing was restored; the runner
/// prints it as the one `error:` line (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// `--at` is no local time.
    #[error(transparent)]
    At(#[from] MomentError),
    /// The mirror cannot be read, or a PATH is not relative.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// DST has neither an index nor versions.
    #[error("{} has no index and no versions; give the DST folder of a sync or watch", esc(.0))]
    NoMirror(PathBuf),
    /// No PATH given matched anything in the mirror.
    #[error(
        "nothing in the mirror {} at or under {paths}; nothing was restored. Give paths \
         relative to the mirror's root",
        esc(.dst)
    )]
    Unmatched {
        /// The mirror.
        dst: PathBuf,
        /// The PATHs that matched nothing, escaped and joined.
        paths: String,
    },
    /// DST or TARGET cannot be resolved to compare them.
    #[error("{} cannot be resolved: {}", esc(.path), io_message(.source))]
    Resolve {
        /// DST or TARGET as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// TARGET lies inside DST.
    #[error(
        "target {} is inside the mirror {}; restore into a folder outside it",
        esc(.target),
        esc(.dst)
    )]
    TargetInMirror {
        /// TARGET as given.
        target: PathBuf,
        /// DST as given.
        dst: PathBuf,
    },
    /// DST lies inside TARGET.
    #[error(
        "the mirror {} is inside target {}; restore into a folder outside it",
        esc(.dst),
        esc(.target)
    )]
    MirrorInTarget {
        /// DST as given.
        dst: PathBuf,
        /// TARGET as given.
        target: PathBuf,
    },
    /// TARGET is a file.
    #[error(
        "target {} exists and is not a directory; give a folder to restore into",
        esc(.0)
    )]
    TargetNotADirectory(PathBuf),
    /// TARGET holds something and `--force` was not given.
    #[error(
        "target {} is not empty; restore into an empty folder, or add --force to overwrite the files restored",
        esc(.0)
    )]
    TargetNotEmpty(PathBuf),
    /// TARGET cannot be looked at.
    #[error("target {} cannot be read: {}", esc(.path), io_message(.source))]
    TargetUnreadable {
        /// TARGET as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// TARGET is missing and cannot be made.
    #[error(
        "target {} cannot be created: {}; check the path and its permissions",
        esc(.path),
        io_message(.source)
    )]
    TargetCreate {
        /// TARGET as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// TARGET cannot be opened to write into.
    #[error("target {} cannot be opened: {}", esc(.path), io_message(.source))]
    TargetOpen {
        /// TARGET as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// [`write_prefix`] was given an item that is no prefix marker (a bug).
    #[error("{} is no prefix of a later copy", esc(.0))]
    NotAPrefix(PathBuf),
    /// The one path [`write_prefix`] writes failed.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Why one path was not restored.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// DST's copy could not be read.
    #[error("cannot restore {}: reading {}: {}", esc(.rel), esc(.path), io_message(.err))]
    Read {
        rel: PathBuf,
        path: PathBuf,
        err: io::Error,
    },
    /// DST's copy is not valid gzip.
    #[error(
        "cannot restore {}: {} is damaged ({}); try --at with an earlier time for an older version",
        esc(.rel),
        esc(.path),
        io_message(.err)
    )]
    Corrupt {
        rel: PathBuf,
        path: PathBuf,
        err: io::Error,
    },
    /// TARGET could not be written.
    #[error("cannot restore {}: writing {}: {}", esc(.rel), esc(.path), io_message(.err))]
    Write {
        rel: PathBuf,
        path: PathBuf,
        err: io::Error,
    },
    /// Ctrl-C arrived mid-file; the temp file is gone.
    #[error("interrupted")]
    Interrupted,
}

impl Failure {
    /// True if DST's copy could not be read because the mirror's host is gone
    /// (`read::is_connection_lost`): every later read would wait for it as long again.
    fn is_lost(&self) -> bool {
        matches!(self, Failure::Read { err, .. } if crate::read::is_connection_lost(err))
    }

    /// True if the connection died under a read that could not be sent again (an open
    /// file's), so a new try may find a new connection; not if the store already
    /// waited for the host and gave up.
    fn may_reconnect(&self) -> bool {
        self.is_lost()
            && matches!(self, Failure::Read { err, .. } if !crate::read::is_unreachable(err))
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    /// Only when the digest is checked.
    hasher: Option<sha2::Sha256>,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes restored paths under TARGET. Every name is reached from an open handle on
/// TARGET, folder by folder and never through a symlink, so a restore reaches paths
/// longer than `PATH_MAX` and a folder swapped for a link cannot send a write outside.
struct Writer<'a> {
    /// Where files go (as messages show it).
    target: PathBuf,
    /// TARGET, open.
    root: Dir,
    /// The folder the last file went into, still open (items come sorted, so the next
    /// one is most likely in it too).
    last: Option<(PathBuf, Dir)>,
    /// Reads DST.
    history: &'a History,
    /// Ctrl-C.
    stop: &'a AtomicBool,
    /// Counter for temp names.
    next_tmp: u64,
    /// Folders under TARGET (relative) checked to be real folders, made if missing.
    ready: HashSet<PathBuf>,
    /// Folders that got content, so get their recorded metadata at the end.
    touched: BTreeSet<PathBuf>,
    /// Gives owners (as root) and attributes.
    giver: Giver,
}

impl<'a> Writer<'a> {
    /// A writer into the folder `target` (which exists), reading from `history`.
    fn new(
        target: &Path,
        history: &'a History,
        stop: &'a AtomicBool,
    ) -> Result<Self, RestoreError> {
        let root = Dir::open_root(target).map_err(|source| RestoreError::TargetOpen {
            path: target.to_path_buf(),
            source,
        })?;
        Ok(Writer {
            target: target.to_path_buf(),
            root,
            last: None,
            history,
            stop,
            next_tmp: 0,
            ready: HashSet::new(),
            touched: BTreeSet::new(),
            giver: Giver::new(Owners::default()),
        })
    }

    /// Restores one item; returns true if a file or link was written.
    fn restore(&mut self, item: &Item) -> Result<bool, Failure> {
        match &item.origin {
            Origin::File {
                name,
                stored,
                mtime,
            } => {
                self.file(&item.rel, name, *stored, None, *mtime, &item.attrs)?;
                log::info!("Restored file: {}", esc(&item.rel));
                log::info!(
                    target: DETAIL,
                    "Restored file: {} <- {}",
                    esc(&self.target.join(&item.rel)),
                    esc(&self.history.store().display(name))
                );
                Ok(true)
            }
            Origin::Prefix {
                name,
                stored,
                size,
                sha,
                meta,
            } => {
                let part = Some((*size, *sha, *meta));
                self.file(&item.rel, name, *stored, part, None, &item.attrs)?;
                log::info!("Restored file: {}", esc(&item.rel));
                log::info!(
                    target: DETAIL,
                    "Restored file: {} <- the first {size} bytes of {}",
                    esc(&self.target.join(&item.rel)),
                    esc(&self.history.store().display(name))
                );
                Ok(true)
            }
            Origin::Link { target, mtime } => {
                self.link(&item.rel, target, *mtime, &item.attrs)?;
                log::info!("Restored link: {} -> {}", esc(&item.rel), esc(target));
                Ok(true)
            }
            Origin::Folder => {
                self.folder(&item.rel)
                    .map_err(|(path, err)| Failure::Write {
                        rel: item.rel.clone(),
                        path,
                        err,
                    })?;
                log::debug!("restored folder {}/", esc(&item.rel));
                Ok(false)
            }
        }
    }

    /// Copies (un-gzipping) the stored file `name` to TARGET/`rel` with its mode and
    /// mtime; with `part`, only its first bytes, which must hash to the digest given,
    /// with the mode and mtime given.
    fn file(
        &mut self,
        rel: &Path,
        name: &Path,
        stored: Stored,
        part: Option<(u64, crate::hash::Digest, Meta)>,
        exact: Option<FileTime>,
        attrs: &Attrs,
    ) -> Result<(), Failure> {
        let store = self.history.store().clone();
        let from = store.display(name);
        let from = from.as_path();
        let read_err = |err| Failure::Read {
            rel: rel.to_path_buf(),
            path: from.to_path_buf(),
            err,
        };
        let (mut content, before) = Content::open(&*store, name, stored).map_err(read_err)?;
        let meta = match part {
            Some((_, _, meta)) => meta,
            None => {
                let mut meta = before.meta();
                if let Some(exact) = exact
                    && exact.unix_seconds() == meta.mtime.unix_seconds()
                {
                    meta.mtime = exact;
                }
                meta
            }
        };
        let (parent, dir) = self.parent(rel)?;
        let final_path = self.target.join(rel);
        let write_err = |err| Failure::Write {
            rel: rel.to_path_buf(),
            path: final_path.clone(),
            err,
        };
        let (temp, file) = self.temp_file(&dir).map_err(write_err)?;
        let mut out = HoleWriter::new(&file);
        // A whole plain file whose store knows its holes (a local DST) is read by its
        // data segments; whatever else is read whole, and its runs of zeros covering
        // whole blocks become holes all the same (`HoleWriter`).
        let segments = match (&content, part) {
            (Content::Plain(plain), None) => {
                Some(plain.data_segments(before.size).map_err(read_err)?)
                    .filter(|segments| sparse::has_holes(segments, before.size))
            }
            _ => None,
        };
        let mut hashing = None;
        match (segments, &mut content) {
            (Some(segments), Content::Plain(plain)) => {
                for data in segments {
                    out.skip(data.start.saturating_sub(out.pos()))
                        .map_err(write_err)?;
                    plain.seek(SeekFrom::Start(data.start)).map_err(read_err)?;
                    let stretch = (&mut **plain).take(data.end - data.start);
                    self.pump(stretch, &mut out, rel, from, &final_path)?;
                }
                out.skip(before.size.saturating_sub(out.pos()))
                    .map_err(write_err)?;
            }
            _ => {
                let limit = part.map_or(u64::MAX, |(size, _, _)| size);
                let mut reading = Hashing {
                    inner: (&mut content).take(limit),
                    hasher: part.map(|_| sha2::Sha256::new()),
                    count: 0,
                };
                self.pump(&mut reading, &mut out, rel, from, &final_path)?;
                hashing = Some((reading.hasher, reading.count));
            }
        }
        out.finish().map_err(write_err)?;
        if let (Some((size, sha, _)), Some((hasher, count))) = (part, hashing) {
            let got = hasher.map(crate::hash::Digest::from_hasher);
            if count != size || got != Some(sha) {
                return Err(Failure::Corrupt {
                    rel: rel.to_path_buf(),
                    path: from.to_path_buf(),
                    err: io::Error::other(
                        "it no longer starts with the older content this version stands for",
                    ),
                });
            }
        }
        // Owner and attributes before the mode: a change of owner clears set-user-id bits.
        self.giver.on_file(&file, attrs, &final_path);
        platform::set_mode_file(&file, meta.mode).map_err(write_err)?;
        filetime::set_file_handle_times(&file, Some(meta.mtime), Some(meta.mtime))
            .map_err(write_err)?;
        drop(file);
        let installed = self.install(temp, rel).map_err(write_err);
        self.last = Some((parent, dir));
        installed
    }

    /// Streams `reader` into `out`, checking for Ctrl-C per chunk.
    fn pump(
        &self,
        mut reader: impl Read,
        out: &mut HoleWriter<'_>,
        rel: &Path,
        from: &Path,
        to: &Path,
    ) -> Result<(), Failure> {
        let mut buf = vec![0u8; CHUNK];
        let mut reader = Stoppable {
            inner: &mut reader,
            stop: self.stop,
        };
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if hash::is_stopped(&e) => return Err(Failure::Interrupted),
                Err(err) if is_damaged(&err) => {
                    return Err(Failure::Corrupt {
                        rel: rel.to_path_buf(),
                        path: from.to_path_buf(),
                        err,
                    });
                }
                Err(err) => {
                    return Err(Failure::Read {
                        rel: rel.to_path_buf(),
                        path: from.to_path_buf(),
                        err,
                    });
                }
            };
            out.write(&buf[..n]).map_err(|err| Failure::Write {
                rel: rel.to_path_buf(),
                path: to.to_path_buf(),
                err,
            })?;
        }
    }

    /// Creates a symlink at TARGET/`rel` (through a temp name and a rename).
    fn link(
        &mut self,
        rel: &Path,
        target: &Path,
        mtime: FileTime,
        attrs: &Attrs,
    ) -> Result<(), Failure> {
        let (parent, dir) = self.parent(rel)?;
        let final_path = self.target.join(rel);
        let write_err = |err| Failure::Write {
            rel: rel.to_path_buf(),
            path: final_path.clone(),
            err,
        };
        let (temp, ()) = Temp::make(
            &dir,
            || self.temp_name(),
            |dir, name| dir.symlink(target, name),
        )
        .map_err(write_err)?;
        self.giver.on_link(&dir, temp.name(), attrs, &final_path);
        // Symlink mtimes are not supported everywhere; the link itself is what matters.
        let _ = dir.set_link_mtime(temp.name(), mtime);
        let installed = self.install(temp, rel).map_err(write_err);
        self.last = Some((parent, dir));
        installed
    }

    /// Gives TARGET/`first` (a file this restore wrote) the second name TARGET/`rel`:
    /// a hard link under a temp name, renamed into place as every write here.
    fn hard_link(&mut self, first: &Path, rel: &Path) -> Result<(), Failure> {
        let (parent, dir) = self.parent(rel)?;
        let final_path = self.target.join(rel);
        let write_err = |err| Failure::Write {
            rel: rel.to_path_buf(),
            path: final_path.clone(),
            err,
        };
        let (Some(first_name), first_dir) = (
            first.file_name(),
            self.root.dir(first.parent().unwrap_or(Path::new(""))),
        ) else {
            return Err(write_err(io::ErrorKind::InvalidInput.into()));
        };
        let first_dir = first_dir.map_err(write_err)?;
        let (temp, ()) = Temp::make(
            &dir,
            || self.temp_name(),
            |dir, name| first_dir.link(first_name, dir, name),
        )
        .map_err(write_err)?;
        let installed = self.install(temp, rel).map_err(write_err);
        self.last = Some((parent, dir));
        installed
    }

    /// Renames a finished temp file or link to its final name, `rel`'s last component
    /// in the same folder. A folder standing there is the user's: it is reported, never
    /// removed.
    fn install(&self, mut temp: Temp<&Dir>, rel: &Path) -> io::Result<()> {
        let Some(last) = rel.file_name() else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        if temp.dir().status(last).is_ok_and(|s| s.kind == Kind::Dir) {
            return Err(io::Error::other(
                "a folder stands there; move it away or restore into another TARGET",
            ));
        }
        temp.rename_beside(last)
    }

    /// The folder in TARGET that holds `rel` (its name, and open), made ready. Hand it
    /// back in `last` when done: the next item is most likely in the same folder.
    fn parent(&mut self, rel: &Path) -> Result<(PathBuf, Dir), Failure> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let write_err = |(path, err)| Failure::Write {
            rel: rel.to_path_buf(),
            path,
            err,
        };
        self.folder(parent).map_err(write_err)?;
        if let Some((last, dir)) = self.last.take()
            && last == parent
        {
            return Ok((last, dir));
        }
        let dir = self
            .root
            .dir(parent)
            .map_err(|err| write_err((self.target.join(parent), err)))?;
        Ok((parent.to_path_buf(), dir))
    }

    /// Makes TARGET/`rel` and the folders above it exist as real folders (never passing
    /// through a symlink or replacing a file the user has there). Every folder on the
    /// way is remembered, to get its recorded metadata at the end.
    fn folder(&mut self, rel: &Path) -> Result<(), (PathBuf, io::Error)> {
        let mut sub = PathBuf::new();
        // The folder `sub` open, while the walk holds it.
        let mut here: Option<Dir> = None;
        for part in rel.components() {
            let above = here.take();
            let name = part.as_os_str();
            let parent_rel = sub.clone();
            sub.push(part);
            self.touched.insert(sub.clone());
            if self.ready.contains(&sub) {
                continue;
            }
            let path = self.target.join(&sub);
            let parent = match above {
                Some(dir) => dir,
                None => self.root.dir(&parent_rel).map_err(|e| (path.clone(), e))?,
            };
            match parent.status(name) {
                Ok(s) if s.kind == Kind::Dir => {}
                Ok(_) => {
                    return Err((
                        path,
                        io::Error::other(
                            "something that is not a folder stands there; move it away or restore into another TARGET",
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    parent.mkdir(name).map_err(|e| (path.clone(), e))?;
                }
                Err(e) => return Err((path, e)),
            }
            here = Some(parent.dir(Path::new(name)).map_err(|e| (path, e))?);
            self.ready.insert(sub.clone());
        }
        Ok(())
    }

    fn temp_name(&mut self) -> OsString {
        self.next_tmp += 1;
        OsString::from(format!(
            ".datasafe-restore-{}-{}.tmp",
            std::process::id(),
            self.next_tmp
        ))
    }

    /// A new private temp file in `dir` (TARGET's folder for the file).
    fn temp_file<'d>(&mut self, dir: &'d Dir) -> io::Result<(Temp<&'d Dir>, File)> {
        Temp::make(dir, || self.temp_name(), Dir::create_private)
    }

    /// Gives every folder that got content its recorded owner and attributes, then its
    /// mode and mtime, deepest first (a folder's mtime changes while things are added
    /// to it, a read-only mode would stop them, and a default ACL would be inherited by
    /// them). Returns how many failed.
    fn finish_folders(
        &mut self,
        folders: &HashMap<PathBuf, Meta>,
        attrs: &HashMap<PathBuf, Attrs>,
    ) -> u64 {
        let mut order: Vec<&PathBuf> = self.touched.iter().collect();
        order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let mut failed = 0;
        for rel in order {
            let Some(meta) = folders.get(rel) else {
                continue;
            };
            let path = self.target.join(rel);
            // Never through a symlink that stands in TARGET (a folder replaced by a link
            // since it was written): that would change a folder outside TARGET.
            let Ok(dir) = self.root.dir(rel) else {
                failed += 1;
                log::error!(
                    "cannot set the mode and time of {}: it is not a folder (a symlink?); left alone",
                    esc(&path)
                );
                continue;
            };
            if let Some(attrs) = attrs.get(rel) {
                self.giver.on_folder(&dir, attrs, &path);
            }
            if let Err(e) = dir.set_own_meta(meta.mode, meta.mtime) {
                failed += 1;
                log::error!(
                    "cannot set the mode and time of {}: {}",
                    esc(&path),
                    io_message(&e)
                );
            }
        }
        failed
    }
}

/// Checks TARGET against DST and makes it ready: never DST, inside it or around it (a
/// DST on another machine is neither); empty unless `force`; created if missing. Errors
/// are usage errors (exit 2).
fn prepare_target(dst: &Dest, target: &Path, force: bool) -> Result<(), RestoreError> {
    let resolve = |path: &Path| {
        crate::config::canonical_even_if_missing(path).map_err(|source| RestoreError::Resolve {
            path: path.to_path_buf(),
            source,
        })
    };
    if let Dest::Local(dst) = dst {
        let (dst_canon, target_canon) = (resolve(dst)?, resolve(target)?);
        if target_canon.starts_with(&dst_canon) {
            return Err(RestoreError::TargetInMirror {
                target: target.to_path_buf(),
                dst: dst.to_path_buf(),
            });
        }
        if dst_canon.starts_with(&target_canon) {
            return Err(RestoreError::MirrorInTarget {
                dst: dst.to_path_buf(),
                target: target.to_path_buf(),
            });
        }
    }
    let unreadable = |source| RestoreError::TargetUnreadable {
        path: target.to_path_buf(),
        source,
    };
    match crate::config::check_dir(target) {
        Err(NotAFolder::NotADirectory) => {
            Err(RestoreError::TargetNotADirectory(target.to_path_buf()))
        }
        Ok(()) => {
            let mut entries = std::fs::read_dir(target).map_err(unreadable)?;
            if entries.next().is_some() && !force {
                return Err(RestoreError::TargetNotEmpty(target.to_path_buf()));
            }
            Ok(())
        }
        Err(NotAFolder::Missing(_)) => {
            std::fs::create_dir_all(target).map_err(|source| RestoreError::TargetCreate {
                path: target.to_path_buf(),
                source,
            })
        }
        Err(NotAFolder::Unreadable(e)) => Err(unreadable(e)),
    }
}

/// Runs `datasafe restore` (logging and the Ctrl-C handler are set up by the caller):
/// [`Outcome::Problems`] if any path failed. An error is bad input: nothing was
/// restored, and the runner prints it.
pub fn run(request: &Request, stop: &AtomicBool) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    let (history, plan) = prepare(request)?;
    execute(request, &history, &plan, stop, started)
}

/// Everything that can fail as bad input, before TARGET is touched (except to create it).
fn prepare(request: &Request) -> Result<(History, Plan), RestoreError> {
    let loaded = load(&request.dst, request.at.as_deref(), &request.paths)?;
    prepare_target(&request.dst, &request.target, request.force)?;
    Ok(loaded)
}

/// Opens the mirror at `dst` and plans what `restore --at` (`at`, if given) of `paths`
/// (all, if none) writes: `restore` and `archive` both start here, so an archive of a
/// mirror holds exactly what a restore would write. Errors are usage errors (exit 2).
pub fn load(
    dst: &Dest,
    at: Option<&str>,
    paths: &[PathBuf],
) -> Result<(History, Plan), RestoreError> {
    let at = at.map(Moment::parse).transpose()?;
    let scopes = scopes_of(paths)?;
    let history = History::open(dst)?;
    let kept = history.versions();
    history.reachable()?;
    if !history.has_index() && kept.is_empty() {
        return Err(RestoreError::NoMirror(dst.display()));
    }
    let live = history.live()?;
    let plan = plan(&live, &kept, &scopes, at.as_ref());
    if !plan.unmatched.is_empty() {
        // A typo in PATH must not look like a restore that worked.
        let paths: Vec<String> = plan.unmatched.iter().map(|p| esc(p).to_string()).collect();
        return Err(RestoreError::Unmatched {
            dst: dst.display(),
            paths: paths.join(", "),
        });
    }
    Ok((history, plan))
}

/// Writes what the prefix marker behind `item` stands for (the first bytes of a later
/// copy, checked against the marker's digest, with its mode and mtime) to
/// `scratch/REL`, through the same writer as a restore; returns that path. For
/// `archive`, whose writers read files, not parts of them.
pub fn write_prefix(
    history: &History,
    item: &Item,
    scratch: &Path,
    stop: &AtomicBool,
) -> Result<PathBuf, RestoreError> {
    let Origin::Prefix {
        name,
        stored,
        size,
        sha,
        meta,
    } = &item.origin
    else {
        return Err(RestoreError::NotAPrefix(item.rel.clone()));
    };
    let mut writer = Writer::new(scratch, history, stop)?;
    let part = Some((*size, *sha, *meta));
    writer.file(&item.rel, name, *stored, part, None, &Attrs::default())?;
    Ok(scratch.join(&item.rel))
}

/// PATH arguments as source-relative scopes; empty for the whole tree (no PATH, or one
/// that names the root).
pub fn scopes_of(paths: &[PathBuf]) -> Result<Vec<PathBuf>, HistoryError> {
    let mut scopes = Vec::new();
    for path in paths {
        let scope = history::source_path(path)?;
        if scope.as_os_str().is_empty() {
            scopes.clear();
            break;
        }
        scopes.push(scope);
    }
    Ok(scopes)
}

/// Writes `plan` into TARGET and prints the summary line.
fn execute(
    request: &Request,
    history: &History,
    plan: &Plan,
    stop: &AtomicBool,
    started: Instant,
) -> Result<Outcome, RestoreError> {
    let mut writer = Writer::new(&request.target, history, stop)?;
    writer.giver = Giver::new(Owners::new(history.owner_names(), request.numeric_ids));
    let (mut restored, mut failed) = (0u64, 0u64);
    // Live names of one file are restored as one file with several names.
    let mut firsts = Firsts::new(links::groups(
        links::keys_of(&**history.store()),
        &plan.inodes,
    ));
    for item in &plan.items {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = match &item.origin {
            Origin::File { name, .. } => firsts.key(name),
            _ => None,
        };
        if let Some(first) = key.and_then(|key| firsts.first(key)).map(Path::to_path_buf) {
            match writer.hard_link(&first, &item.rel) {
                Ok(()) => {
                    restored += 1;
                    log::info!(
                        "Restored file: {} (a name of {})",
                        esc(&item.rel),
                        esc(&first)
                    );
                    continue;
                }
                // Written as a file of its own instead (TARGET may take no links).
                Err(e) => log::debug!("{e}"),
            }
        }
        let mut result = writer.restore(item);
        if result.as_ref().is_err_and(Failure::may_reconnect) {
            // The connection died under this file: once more, which waits (within the
            // store's patience) for a new one.
            result = writer.restore(item);
        }
        match result {
            Ok(counted) => {
                restored += u64::from(counted);
                if let Some(key) = key {
                    firsts.wrote(key, &item.rel);
                }
            }
            Err(Failure::Interrupted) => break,
            Err(e) if e.is_lost() => {
                failed += 1;
                log::error!("{e}");
                log::error!(
                    "the restore stopped there: the rest of {} cannot be read until its \
                     host is back; then run it again (with --force: TARGET is no longer empty)",
                    esc(&request.dst.display())
                );
                break;
            }
            Err(e) => {
                failed += 1;
                log::error!("{e}");
            }
        }
    }
    failed += writer.finish_folders(&plan.folders, &plan.folder_attrs);
    if let Err(e) = platform::sync_filesystem(&request.target) {
        log::warn!(
            "cannot flush {} to disk: {}",
            esc(&request.target),
            io_message(&e)
        );
    }
    let interrupted = stop.load(Ordering::Relaxed);
    if failed > 0 {
        log::error!(
            "{} could not be restored; see the errors above",
            crate::output::names::count_of(failed, "path")
        );
    }
    let line = format!(
        "Restore {} at {}, Duration: {:.2} seconds, Files restored: {restored}",
        if interrupted {
            "interrupted"
        } else {
            "completed"
        },
        crate::output::now(),
        started.elapsed().as_secs_f64()
    );
    logging::print_line(false, &line);
    log::info!(target: SUMMARY, "{line}");
    Ok(if interrupted {
        Outcome::Interrupted
    } else if failed > 0 {
        Outcome::Problems
    } else {
        Outcome::Clean
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::versions::{Version, version_name as vname};
    use chrono::NaiveDate;

    fn t(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 24)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .unwrap()
    }

    /// File times in these tests count from an epoch where t(0, 0, 0) is 0 seconds,
    /// so the table reads in one clock whatever the machine's time zone.
    fn ft(h: u32, m: u32, s: u32, nanos: u32) -> FileTime {
        FileTime::from_unix_time(i64::from(h * 3600 + m * 60 + s), nanos)
    }

    fn moment(h: u32, m: u32, s: u32) -> Moment {
        Moment {
            local: t(h, m, s),
            limit: ft(h, m, s + 1, 0),
        }
    }

    fn stamp(at: NaiveDateTime, seq: u32, mtime: FileTime) -> Stamp {
        Stamp { at, seq, mtime }
    }

    #[test]
    fn choose_picks_the_content_current_at_the_moment() {
        // A file written at 09:00, replaced at 10:00 (by content written at 10:00),
        // replaced again at 11:00; the live copy was written at 11:00.
        let history = [
            stamp(t(10, 0, 0), 0, ft(9, 0, 0, 0)),
            stamp(t(11, 0, 0), 0, ft(10, 0, 0, 0)),
        ];
        let live = Some(ft(11, 0, 0, 0));
        let same_second = [
            stamp(t(10, 0, 0), 1, ft(9, 30, 0, 0)),
            stamp(t(10, 0, 0), 0, ft(9, 0, 0, 0)),
        ];
        let late = [stamp(t(10, 0, 0), 0, ft(10, 0, 0, 5))];
        /// What the case shows, the versions, the live file's mtime, `--at`, the answer.
        struct Case<'a>(
            &'a str,
            &'a [Stamp],
            Option<FileTime>,
            Option<Moment>,
            Choice,
        );
        use Choice::{Live, Nothing, Version};
        let at = |h, m, s| Some(moment(h, m, s));
        #[rustfmt::skip]
        let table = [
            Case("no --at: the live file", &history, live, None, Live),
            Case("no --at, nothing live", &history, None, None, Nothing),
            Case("before the first replacement", &history, live, at(9, 30, 0), Version(0)),
            Case("between the two versions", &history, live, at(10, 30, 0), Version(1)),
            Case("at a replacement's second", &history, live, at(10, 0, 0), Version(0)),
            Case("after the last replacement", &history, live, at(11, 30, 0), Live),
            Case("deleted at 11:00, asked after", &history, None, at(11, 30, 0), Nothing),
            Case("deleted at 11:00, asked before", &history, None, at(10, 59, 59), Version(1)),
            Case("before the file existed", &history, live, at(8, 0, 0), Nothing),
            Case("written within the second", &history, live, at(8, 59, 59), Version(0)),
            Case("no versions, live written later", &[], live, at(10, 0, 0), Nothing),
            Case("no versions, live written before", &[], live, at(12, 0, 0), Live),
            Case("two in one second: the first", &same_second, live, at(10, 0, 0), Version(1)),
            Case("mtime 1 ns past T + 1 s", &late, live, at(9, 59, 59), Nothing),
        ];
        for Case(what, versions, live, at, want) in table {
            assert_eq!(choose(versions, live, at.as_ref()), want, "{what}");
        }
    }

    fn live_file(source: &str, mtime: FileTime) -> Live {
        Live {
            source: source.into(),
            name: format!("{source}.gz").into(),
            kind: Kind::File,
            stored: Stored::Gzip,
            meta: Meta {
                size: 1,
                mtime,
                mode: 0o644,
            },
            target: None,
            attrs: Attrs::default(),
            ino: 0,
        }
    }

    fn live_other(source: &str, kind: Kind) -> Live {
        Live {
            source: source.into(),
            name: source.into(),
            kind,
            stored: Stored::Plain,
            meta: Meta {
                size: 0,
                mtime: ft(1, 0, 0, 0),
                mode: 0o755,
            },
            target: (kind == Kind::Symlink).then(|| PathBuf::from("elsewhere")),
            attrs: Attrs::default(),
            ino: 0,
        }
    }

    fn kept(source: &str, at: NaiveDateTime, mtime: FileTime) -> Kept {
        let stored = PathBuf::from(format!("{source}.gz"));
        Kept {
            source: source.into(),
            version: Version {
                path: vname(&stored, at, 0),
                stored,
                at,
                seq: 0,
                prefix: None,
            },
            stored: Stored::Gzip,
            meta: Meta {
                size: 1,
                mtime,
                mode: 0o600,
            },
            ino: 0,
        }
    }

    fn planned(plan: &Plan) -> Vec<(String, String)> {
        plan.items
            .iter()
            .map(|i| {
                let what = match &i.origin {
                    Origin::File { name, .. } => name.display().to_string(),
                    Origin::Link { target, .. } => format!("-> {}", target.display()),
                    Origin::Folder => "folder".to_string(),
                    Origin::Prefix { name, size, .. } => {
                        format!("{size} of {}", name.display())
                    }
                };
                (i.rel.display().to_string(), what)
            })
            .collect()
    }

    #[test]
    fn only_live_content_gets_the_recorded_owner_and_attributes() {
        let owned = Attrs {
            owner: Some(crate::model::Owner { uid: 7, gid: 8 }),
            xattrs: None,
        };
        let live = [
            Live {
                attrs: owned.clone(),
                ..live_file("a.txt", ft(11, 0, 0, 0))
            },
            Live {
                attrs: owned.clone(),
                ..live_other("d", Kind::Dir)
            },
        ];
        let kept = [kept("a.txt", t(11, 0, 0), ft(9, 0, 0, 0))];
        let now = plan(&live, &kept, &[], None);
        assert_eq!(now.items[0].attrs, owned, "the live file");
        assert_eq!(now.folder_attrs.get(Path::new("d")), Some(&owned));
        let then = plan(&live, &kept, &[], Some(&moment(10, 0, 0)));
        assert!(matches!(
            then.items[0].origin,
            Origin::File { mtime: None, .. }
        ));
        assert_eq!(then.items[0].attrs, Attrs::default(), "a version");
    }

    #[test]
    fn plan_restores_links_and_empty_folders_and_honours_scopes() {
        let live = [
            live_file("docs/a.txt", ft(11, 0, 0, 0)),
            live_other("docs", Kind::Dir),
            live_other("empty", Kind::Dir),
            live_other("empty/nested", Kind::Dir),
            live_other("link", Kind::Symlink),
            live_other("emptied", Kind::Dir),
            live_file("new.txt", ft(12, 0, 0, 0)),
        ];
        let kept = [
            kept("docs/a.txt", t(11, 0, 0), ft(9, 0, 0, 0)),
            kept("gone.txt", t(10, 0, 0), ft(9, 0, 0, 0)),
            kept("emptied/was.txt", t(10, 0, 0), ft(9, 0, 0, 0)),
        ];
        let at = moment(10, 30, 0);
        let all = plan(&live, &kept, &[], Some(&at));
        assert_eq!(
            planned(&all),
            [
                (
                    "docs/a.txt".into(),
                    ".datasafe/versions/docs/a_20261124_110000.txt.gz".into()
                ),
                // Emptied by a deletion before the moment: an empty live folder.
                ("emptied".into(), "folder".into()),
                ("empty/nested".into(), "folder".into()),
                ("link".into(), "-> elsewhere".into()),
            ]
        );
        assert_eq!(all.folders.len(), 4);

        let now = plan(&live, &kept, &[], None);
        let names: Vec<_> = planned(&now).into_iter().map(|(rel, _)| rel).collect();
        assert_eq!(
            names,
            ["docs/a.txt", "emptied", "empty/nested", "link", "new.txt"]
        );

        let scoped = plan(
            &live,
            &kept,
            &["docs".into(), "gone.txt".into(), "nope".into()],
            Some(&moment(9, 30, 0)),
        );
        let names: Vec<_> = planned(&scoped).into_iter().map(|(rel, _)| rel).collect();
        assert_eq!(names, ["docs/a.txt", "gone.txt"]);
        assert_eq!(scoped.unmatched, [PathBuf::from("nope")]);
    }
}
